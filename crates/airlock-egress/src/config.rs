//! `[egress]` configuration as operators write it, and the resolved [`EgressPolicy`] the
//! server runs with. Raw → resolved happens once, in [`EgressConfig::resolve`]; every
//! refusal names the key and the value and says what to write instead.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use airlock_types::HumanDuration;
use serde::{Deserialize, Serialize};

use crate::address::{Cidr, CidrError, non_public_class};
use crate::allowlist::{Allowlist, AllowlistError};
use crate::decision::Reason;
use crate::host::HostName;
use crate::metrics::EgressMetrics;
use crate::resolve::{Resolver, SystemResolver};

/// The `[egress]` table. Every key is optional.
///
/// ```toml
/// [egress]
/// listen = "0.0.0.0:3128"
/// allow = ["login.microsoftonline.com", "*.github.com"]
/// ports = [443]
/// clients = ["10.20.0.0/16"]          # who may use the proxy; empty = anyone
/// allow_internal = ["10.1.0.0/16"]    # non-public networks an allowed name may resolve to
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Names that may be reached: `host.example.com` exactly, or `*.example.com` for the
    /// names below it (never the apex itself).
    pub allow: Vec<String>,
    /// Destination ports that may be reached.
    pub ports: Vec<u16>,
    /// Networks (CIDR or single addresses) allowed to use the proxy; empty means any client.
    pub clients: Vec<String>,
    /// Non-public networks that allowed names may resolve to. By default, names that
    /// resolve to loopback, private, link-local, CGNAT and other special addresses are
    /// refused; list a network here only for a site that really needs it. A network listed
    /// here is reachable on the listed `ports` even where it holds the gateway's own
    /// addresses; only the proxy's own listening socket stays refused.
    pub allow_internal: Vec<String>,
    /// Time allowed for the whole request header to arrive.
    pub header_timeout: HumanDuration,
    /// Time allowed to resolve the name and connect upstream.
    pub connect_timeout: HumanDuration,
    /// A tunnel with no bytes in either direction for this long is closed.
    pub idle_timeout: HumanDuration,
    /// A tunnel is closed after this long, busy or not.
    pub max_lifetime: HumanDuration,
    /// After shutdown starts, how long open tunnels may keep going before they are closed.
    pub drain_timeout: HumanDuration,
    /// Open connections (tunnels and requests being read), all clients together.
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_connections_per_client: usize,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 3128)),
            allow: Vec::new(),
            ports: vec![443],
            clients: Vec::new(),
            allow_internal: Vec::new(),
            header_timeout: HumanDuration::from_secs(10),
            connect_timeout: HumanDuration::from_secs(10),
            idle_timeout: HumanDuration::from_secs(300),
            max_lifetime: HumanDuration::from_secs(4 * 3600),
            drain_timeout: HumanDuration::from_secs(10),
            max_connections: 4096,
            max_connections_per_client: 512,
        }
    }
}

/// An `[egress]` table that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum EgressConfigError {
    #[error(transparent)]
    Allow(#[from] AllowlistError),
    #[error("egress.ports: {0}")]
    Ports(&'static str),
    #[error("egress.clients: {0}")]
    Clients(CidrError),
    #[error("egress.allow_internal: {0}")]
    AllowInternal(CidrError),
    #[error("egress.{key}: must be greater than zero")]
    Zero { key: &'static str },
}

impl EgressConfig {
    /// Validate and resolve into the policy the server runs with.
    pub fn resolve(&self) -> Result<EgressPolicy, EgressConfigError> {
        let allow = Allowlist::parse(&self.allow)?;
        if self.ports.is_empty() {
            return Err(EgressConfigError::Ports(
                "empty; every request would be refused (remove the key for the default [443])",
            ));
        }
        if self.ports.contains(&0) {
            return Err(EgressConfigError::Ports("0 is not a port"));
        }
        let mut ports = self.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        let clients = parse_cidrs(&self.clients).map_err(EgressConfigError::Clients)?;
        let allow_internal =
            parse_cidrs(&self.allow_internal).map_err(EgressConfigError::AllowInternal)?;
        for (key, value) in [
            ("header_timeout", self.header_timeout.0),
            ("connect_timeout", self.connect_timeout.0),
            ("idle_timeout", self.idle_timeout.0),
            ("max_lifetime", self.max_lifetime.0),
        ] {
            if value.is_zero() {
                return Err(EgressConfigError::Zero { key });
            }
        }
        for (key, value) in [
            ("max_connections", self.max_connections),
            (
                "max_connections_per_client",
                self.max_connections_per_client,
            ),
        ] {
            if value == 0 {
                return Err(EgressConfigError::Zero { key });
            }
        }
        Ok(EgressPolicy {
            listen: self.listen,
            allow,
            ports,
            clients,
            allow_internal,
            limits: Limits {
                header_timeout: self.header_timeout.0,
                connect_timeout: self.connect_timeout.0,
                idle_timeout: self.idle_timeout.0,
                max_lifetime: self.max_lifetime.0,
                drain_timeout: self.drain_timeout.0,
                max_connections: self.max_connections,
                max_connections_per_client: self.max_connections_per_client,
            },
            resolver: Arc::new(SystemResolver),
            metrics: Arc::new(EgressMetrics::default()),
        })
    }
}

fn parse_cidrs(values: &[String]) -> Result<Vec<Cidr>, CidrError> {
    values.iter().map(|v| v.parse()).collect()
}

/// Timeouts and caps, resolved.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
}

/// The resolved egress policy: what may be reached, by whom, and how long tunnels live.
#[derive(Debug)]
pub struct EgressPolicy {
    listen: SocketAddr,
    allow: Allowlist,
    ports: Vec<u16>,
    clients: Vec<Cidr>,
    allow_internal: Vec<Cidr>,
    limits: Limits,
    resolver: Arc<dyn Resolver>,
    metrics: Arc<EgressMetrics>,
}

impl EgressPolicy {
    /// Replace the resolver. Only for tests: the production binary is built without the
    /// `test-resolver` feature, so nothing an operator writes can bypass real DNS.
    #[cfg(any(test, feature = "test-resolver"))]
    #[must_use]
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = resolver;
        self
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn metrics(&self) -> &Arc<EgressMetrics> {
        &self.metrics
    }

    pub fn allowlist(&self) -> &Allowlist {
        &self.allow
    }

    /// The allowlist digest, for the start-up log line and `config check`.
    pub fn allowlist_digest(&self) -> String {
        self.allow.digest()
    }

    pub(crate) fn resolver(&self) -> &dyn Resolver {
        self.resolver.as_ref()
    }

    pub(crate) fn check_client(&self, ip: IpAddr) -> Result<(), Reason> {
        let ip = ip.to_canonical();
        if self.clients.is_empty() || self.clients.iter().any(|net| net.contains(ip)) {
            Ok(())
        } else {
            Err(Reason::ClientNotAllowed)
        }
    }

    pub(crate) fn check_target(&self, host: &HostName, port: u16) -> Result<(), Reason> {
        if !self.allow.allows(host) {
            return Err(Reason::NotAllowlisted);
        }
        if !self.ports.contains(&port) {
            return Err(Reason::PortNotAllowed);
        }
        Ok(())
    }

    /// Check one resolved address. `own` are the addresses this proxy is reached on.
    pub(crate) fn check_address(
        &self,
        ip: IpAddr,
        port: u16,
        own: &[SocketAddr],
    ) -> Result<(), Reason> {
        let loops = |a: &SocketAddr| {
            a.port() == port
                && (a.ip() == ip || (a.ip().is_unspecified() && ip.to_canonical().is_loopback()))
        };
        if own.iter().any(loops) {
            return Err(Reason::ProxyLoop);
        }
        if self.allow_internal.iter().any(|net| net.contains(ip)) {
            return Ok(());
        }
        if non_public_class(ip).is_some() {
            return Err(Reason::ForbiddenAddress);
        }
        // A public address of this very host: dialing it would reach the gateway itself.
        if own.iter().any(|a| a.ip() == ip) {
            return Err(Reason::ProxyLoop);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::canonicalize;

    #[test]
    fn defaults_and_minimal_table() {
        let cfg: EgressConfig =
            toml::from_str("listen = \"127.0.0.1:3128\"\nallow = [\"a.example.com\"]").unwrap();
        assert_eq!(cfg.ports, [443]);
        let policy = cfg.resolve().unwrap();
        assert!(
            policy
                .check_target(&canonicalize("a.example.com").unwrap(), 443)
                .is_ok()
        );
        assert_eq!(
            policy.check_target(&canonicalize("a.example.com").unwrap(), 8443),
            Err(Reason::PortNotAllowed)
        );
        let default = EgressConfig::default().resolve().unwrap();
        assert!(default.allowlist().is_empty());
        assert_eq!(default.listen().to_string(), "0.0.0.0:3128");
    }

    #[test]
    fn round_trips_through_toml() {
        let cfg = EgressConfig {
            allow: vec!["a.example.com".into(), "*.b.example.org".into()],
            clients: vec!["10.0.0.0/8".into()],
            ..EgressConfig::default()
        };
        let text = toml::to_string(&cfg).unwrap();
        let back: EgressConfig = toml::from_str(&text).unwrap();
        assert_eq!(toml::to_string(&back).unwrap(), text);
        assert!(text.contains("idle_timeout = \"5m\""), "{text}");
    }

    #[test]
    fn refuses_bad_tables() {
        assert!(toml::from_str::<EgressConfig>("allowed = []").is_err());
        let bad = |f: fn(&mut EgressConfig)| {
            let mut cfg = EgressConfig::default();
            f(&mut cfg);
            cfg.resolve().unwrap_err().to_string()
        };
        assert!(bad(|c| c.allow = vec!["*.com".into()]).contains("top-level"));
        assert!(bad(|c| c.ports = vec![]).contains("egress.ports"));
        assert!(bad(|c| c.ports = vec![0]).contains("egress.ports"));
        assert!(bad(|c| c.clients = vec!["10.0.0.1/8".into()]).contains("10.0.0.0/8"));
        assert!(bad(|c| c.allow_internal = vec!["nope".into()]).contains("allow_internal"));
        assert!(bad(|c| c.max_connections = 0).contains("max_connections"));
        assert!(bad(|c| c.idle_timeout = HumanDuration::from_secs(0)).contains("idle_timeout"));
    }

    #[test]
    fn address_checks() {
        let own = [
            SocketAddr::from(([10, 0, 0, 5], 3128)),
            SocketAddr::from(([198, 199, 0, 5], 3128)),
        ];
        let strict = EgressConfig::default().resolve().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            strict.check_address(ip("127.0.0.1"), 443, &own),
            Err(Reason::ForbiddenAddress)
        );
        assert_eq!(
            strict.check_address(ip("10.0.0.5"), 443, &own),
            Err(Reason::ForbiddenAddress)
        );
        assert_eq!(
            strict.check_address(ip("198.199.0.5"), 443, &own),
            Err(Reason::ProxyLoop)
        );
        assert_eq!(strict.check_address(ip("8.8.8.8"), 443, &own), Ok(()));
        let cfg = EgressConfig {
            allow_internal: vec!["10.0.0.0/8".into()],
            ..EgressConfig::default()
        };
        let site = cfg.resolve().unwrap();
        assert_eq!(site.check_address(ip("10.1.2.3"), 443, &own), Ok(()));
        assert_eq!(
            site.check_address(ip("10.0.0.5"), 3128, &own),
            Err(Reason::ProxyLoop)
        );
        let wildcard = [SocketAddr::from(([0, 0, 0, 0], 3128))];
        let open = EgressConfig {
            allow_internal: vec!["127.0.0.0/8".into()],
            ..EgressConfig::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            open.check_address(ip("127.0.0.2"), 3128, &wildcard),
            Err(Reason::ProxyLoop)
        );
        assert_eq!(open.check_address(ip("127.0.0.2"), 443, &wildcard), Ok(()));
        assert_eq!(
            site.check_address(ip("169.254.169.254"), 443, &own),
            Err(Reason::ForbiddenAddress)
        );
    }

    #[test]
    fn client_networks() {
        let cfg = EgressConfig {
            clients: vec!["10.20.0.0/16".into()],
            ..EgressConfig::default()
        };
        let policy = cfg.resolve().unwrap();
        assert_eq!(policy.check_client("10.20.3.4".parse().unwrap()), Ok(()));
        assert_eq!(
            policy.check_client("::ffff:10.20.3.4".parse().unwrap()),
            Ok(())
        );
        assert_eq!(
            policy.check_client("10.21.0.1".parse().unwrap()),
            Err(Reason::ClientNotAllowed)
        );
    }
}
