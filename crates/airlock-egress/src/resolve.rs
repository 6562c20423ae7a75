//! Name resolution behind a trait: the system resolver in production, a fixed map in tests.
//!
//! The proxy resolves each name exactly once, checks every answer, and dials only the
//! addresses it checked, so the resolver is the single source of addresses.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;

/// A boxed resolution future.
pub type Resolution<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Turns a canonical host name into addresses.
pub trait Resolver: Send + Sync + std::fmt::Debug {
    fn resolve<'a>(&'a self, host: &'a str) -> Resolution<'a>;
}

/// The operating system's resolver (`getaddrinfo` through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> Resolution<'a> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, 0)).await?;
            let mut ips: Vec<IpAddr> = Vec::new();
            for addr in addrs {
                if !ips.contains(&addr.ip()) {
                    ips.push(addr.ip());
                }
            }
            Ok(ips)
        })
    }
}

/// A fixed name → addresses map; names not in it do not resolve. Tests use it to point
/// allowed names at loopback servers without touching DNS.
#[derive(Debug, Default, Clone)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn with(mut self, name: &str, ips: &[IpAddr]) -> Self {
        self.names.insert(name.to_ascii_lowercase(), ips.to_vec());
        self
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> Resolution<'a> {
        let found = self.names.get(host).cloned();
        Box::pin(async move {
            found.ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{host}: no such name"))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn system_resolver_answers_localhost_without_the_network() {
        let lookup = SystemResolver.resolve("localhost");
        let ips = tokio::time::timeout(std::time::Duration::from_secs(10), lookup)
            .await
            .expect("localhost resolves in time")
            .unwrap();
        assert!(
            !ips.is_empty() && ips.iter().all(IpAddr::is_loopback),
            "{ips:?}"
        );
    }

    #[tokio::test]
    async fn static_resolver_knows_only_its_names() {
        let r = StaticResolver::new().with("Allowed.Test", &["127.0.0.1".parse().unwrap()]);
        assert_eq!(r.resolve("allowed.test").await.unwrap().len(), 1);
        let err = r.resolve("other.test").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
