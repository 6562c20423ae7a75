//! The resolved [`EgressPolicy`] the server runs with, built from the `[egress]` settings
//! that `airlock-config` parsed and validated: no entry is parsed twice.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use airlock_config::{Egress, EgressConfigError, EgressSettings, Limits};
use airlock_types::Cidr;
use airlock_types::allowlist::Allowlist;

use crate::address::non_public_class;
use crate::chain::UpstreamChain;
use crate::decision::Reason;
use crate::host::HostName;
use crate::metrics::EgressMetrics;
use crate::resolve::{Resolver, SystemResolver};

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
    chain: Option<UpstreamChain>,
    /// Every decision also goes to the audit trail.
    audit: airlock_audit::Audit,
}

impl EgressPolicy {
    /// The policy for resolved settings, with the system resolver and fresh metrics.
    pub fn new(settings: EgressSettings) -> Self {
        let EgressSettings {
            listen,
            allow,
            ports,
            clients,
            allow_internal,
            limits,
            table: _,
        } = settings;
        Self {
            listen,
            allow,
            ports,
            clients,
            allow_internal,
            limits,
            resolver: Arc::new(SystemResolver),
            metrics: Arc::new(EgressMetrics::default()),
            chain: None,
            audit: airlock_audit::Audit::disabled(),
        }
    }

    /// Decisions are also written to `audit`.
    #[must_use]
    pub fn with_audit(mut self, audit: airlock_audit::Audit) -> Self {
        self.audit = audit;
        self
    }

    pub(crate) fn audit(&self) -> &airlock_audit::Audit {
        &self.audit
    }

    /// Tunnels to hosts outside `no_proxy` go through the site's outbound proxy.
    #[must_use]
    pub fn with_upstream_chain(mut self, chain: UpstreamChain) -> Self {
        self.chain = Some(chain);
        self
    }

    /// The site proxy, when a tunnel to `host` goes through it.
    pub(crate) fn chain_for(&self, host: &HostName) -> Option<&UpstreamChain> {
        self.chain.as_ref().filter(|chain| chain.applies(host))
    }

    /// Resolves a raw `[egress]` table and builds the policy for it.
    pub fn from_config(config: &Egress) -> Result<Self, EgressConfigError> {
        config.resolve().map(Self::new)
    }

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

    fn policy_for(config: &Egress) -> EgressPolicy {
        EgressPolicy::from_config(config).unwrap()
    }

    #[test]
    fn defaults_and_minimal_table() {
        let cfg: Egress =
            toml::from_str("listen = \"127.0.0.1:3128\"\nallow = [\"a.example.com\"]").unwrap();
        let policy = policy_for(&cfg);
        assert!(
            policy
                .check_target(&canonicalize("a.example.com").unwrap(), 443)
                .is_ok()
        );
        assert_eq!(
            policy.check_target(&canonicalize("a.example.com").unwrap(), 8443),
            Err(Reason::PortNotAllowed)
        );
        let default = policy_for(&Egress::default());
        assert!(default.allowlist().is_empty());
        assert_eq!(default.listen().to_string(), "0.0.0.0:3128");
    }

    #[test]
    fn address_checks() {
        let own = [
            SocketAddr::from(([10, 0, 0, 5], 3128)),
            SocketAddr::from(([198, 199, 0, 5], 3128)),
        ];
        let strict = policy_for(&Egress::default());
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
        let site = policy_for(&Egress {
            allow_internal: Some(vec!["10.0.0.0/8".into()]),
            ..Egress::default()
        });
        assert_eq!(site.check_address(ip("10.1.2.3"), 443, &own), Ok(()));
        assert_eq!(
            site.check_address(ip("10.0.0.5"), 3128, &own),
            Err(Reason::ProxyLoop)
        );
        let wildcard = [SocketAddr::from(([0, 0, 0, 0], 3128))];
        let open = policy_for(&Egress {
            allow_internal: Some(vec!["127.0.0.0/8".into()]),
            ..Egress::default()
        });
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
        let policy = policy_for(&Egress {
            clients: Some(vec!["10.20.0.0/16".into()]),
            ..Egress::default()
        });
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
