//! `[egress]`: the table as operators write it ([`Egress`]) and what it resolves to
//! ([`EgressSettings`]): the parsed allowlist, ports, networks and limits the egress proxy
//! runs with. Raw → resolved happens once, in [`Egress::resolve`]; every refusal names the
//! key and the value and says what to write instead.

use std::net::SocketAddr;
use std::time::Duration;

use airlock_types::HumanDuration;
use airlock_types::allowlist::{Allowlist, AllowlistError};
use airlock_types::{Cidr, CidrError};
use serde::{Deserialize, Serialize};

/// The `[egress]` table. Every key is optional; [`Egress::filled`] shows the defaults.
///
/// ```toml
/// [egress]
/// listen = "0.0.0.0:3128"
/// allow = ["login.microsoftonline.com", "*.github.com"]
/// ports = [443]
/// clients = ["10.20.0.0/16"]          # who may use the proxy; empty = anyone
/// allow_internal = ["10.1.0.0/16"]    # non-public networks an allowed name may resolve to
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    /// Address and port to listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Names that may be reached: `host.example.com` exactly, or `*.example.com` for the
    /// names below it (never the apex itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Destination ports that may be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    /// Networks (CIDR or single addresses) allowed to use the proxy; empty means any client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<String>>,
    /// Non-public networks that allowed names may resolve to. By default, names that
    /// resolve to loopback, private, link-local, CGNAT and other special addresses are
    /// refused; list a network here only for a site that really needs it. A network listed
    /// here is reachable on the listed `ports` even where it holds the gateway's own
    /// addresses; only the proxy's own listening socket stays refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_internal: Option<Vec<String>>,
    /// Time allowed for the whole request header to arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<HumanDuration>,
    /// Time allowed to resolve the name and connect upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<HumanDuration>,
    /// A tunnel with no bytes in either direction for this long is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<HumanDuration>,
    /// A tunnel is closed after this long, busy or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<HumanDuration>,
    /// After shutdown starts, how long open tunnels may keep going before they are closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<HumanDuration>,
    /// Open connections (tunnels and requests being read), all clients together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Open connections from one client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Option<usize>,
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

/// Timeouts and caps, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
}

/// A resolved `[egress]` table: what may be reached, by whom, and how long tunnels live.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    pub listen: SocketAddr,
    pub allow: Allowlist,
    /// Sorted, without duplicates, never empty, never 0.
    pub ports: Vec<u16>,
    pub clients: Vec<Cidr>,
    pub allow_internal: Vec<Cidr>,
    pub limits: Limits,
    /// The table these were resolved from, defaults filled in (what `config check` prints).
    pub table: Egress,
}

const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 3128);
const DEFAULT_HEADER_TIMEOUT: HumanDuration = HumanDuration::from_secs(10);
const DEFAULT_CONNECT_TIMEOUT: HumanDuration = HumanDuration::from_secs(10);
const DEFAULT_IDLE_TIMEOUT: HumanDuration = HumanDuration::from_secs(300);
const DEFAULT_MAX_LIFETIME: HumanDuration = HumanDuration::from_secs(4 * 3600);
const DEFAULT_DRAIN_TIMEOUT: HumanDuration = HumanDuration::from_secs(10);
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 512;

impl Egress {
    /// Every key set: what was written, and the default for what was not.
    #[must_use]
    pub fn filled(&self) -> Self {
        Self {
            listen: Some(self.listen.unwrap_or(DEFAULT_LISTEN)),
            allow: Some(self.allow.clone().unwrap_or_default()),
            ports: Some(self.ports.clone().unwrap_or_else(|| vec![443])),
            clients: Some(self.clients.clone().unwrap_or_default()),
            allow_internal: Some(self.allow_internal.clone().unwrap_or_default()),
            header_timeout: Some(self.header_timeout.unwrap_or(DEFAULT_HEADER_TIMEOUT)),
            connect_timeout: Some(self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)),
            idle_timeout: Some(self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT)),
            max_lifetime: Some(self.max_lifetime.unwrap_or(DEFAULT_MAX_LIFETIME)),
            drain_timeout: Some(self.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT)),
            max_connections: Some(self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)),
            max_connections_per_client: Some(
                self.max_connections_per_client
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_CLIENT),
            ),
        }
    }

    /// Validate and resolve, defaults filled in.
    pub fn resolve(&self) -> Result<EgressSettings, EgressConfigError> {
        let allow = Allowlist::parse(self.allow.as_deref().unwrap_or_default())?;
        let mut ports = self.ports.clone().unwrap_or_else(|| vec![443]);
        if ports.is_empty() {
            return Err(EgressConfigError::Ports(
                "empty; every request would be refused (remove the key for the default [443])",
            ));
        }
        if ports.contains(&0) {
            return Err(EgressConfigError::Ports("0 is not a port"));
        }
        ports.sort_unstable();
        ports.dedup();
        let clients = parse_cidrs(self.clients.as_deref().unwrap_or_default())
            .map_err(EgressConfigError::Clients)?;
        let allow_internal = parse_cidrs(self.allow_internal.as_deref().unwrap_or_default())
            .map_err(EgressConfigError::AllowInternal)?;
        let limits = Limits {
            header_timeout: self.header_timeout.unwrap_or(DEFAULT_HEADER_TIMEOUT).0,
            connect_timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT).0,
            idle_timeout: self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT).0,
            max_lifetime: self.max_lifetime.unwrap_or(DEFAULT_MAX_LIFETIME).0,
            drain_timeout: self.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT).0,
            max_connections: self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_connections_per_client: self
                .max_connections_per_client
                .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_CLIENT),
        };
        for (key, value) in [
            ("header_timeout", limits.header_timeout),
            ("connect_timeout", limits.connect_timeout),
            ("idle_timeout", limits.idle_timeout),
            ("max_lifetime", limits.max_lifetime),
        ] {
            if value.is_zero() {
                return Err(EgressConfigError::Zero { key });
            }
        }
        for (key, value) in [
            ("max_connections", limits.max_connections),
            (
                "max_connections_per_client",
                limits.max_connections_per_client,
            ),
        ] {
            if value == 0 {
                return Err(EgressConfigError::Zero { key });
            }
        }
        Ok(EgressSettings {
            listen: self.listen.unwrap_or(DEFAULT_LISTEN),
            allow,
            ports,
            clients,
            allow_internal,
            limits,
            table: self.filled(),
        })
    }
}

fn parse_cidrs(values: &[String]) -> Result<Vec<Cidr>, CidrError> {
    values.iter().map(|v| v.parse()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_minimal_table() {
        let cfg: Egress =
            toml::from_str("listen = \"127.0.0.1:3128\"\nallow = [\"a.example.com\"]").unwrap();
        let settings = cfg.resolve().unwrap();
        assert_eq!(settings.ports, [443]);
        assert_eq!(settings.allow.entries(), ["a.example.com"]);
        let default = Egress::default().resolve().unwrap();
        assert!(default.allow.is_empty());
        assert_eq!(default.listen.to_string(), "0.0.0.0:3128");
    }

    #[test]
    fn round_trips_through_toml() {
        let cfg = Egress {
            allow: Some(vec!["a.example.com".into(), "*.b.example.org".into()]),
            clients: Some(vec!["10.0.0.0/8".into()]),
            ..Egress::default()
        }
        .filled();
        let text = toml::to_string(&cfg).unwrap();
        let back: Egress = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
        assert!(text.contains("idle_timeout = \"5m\""), "{text}");
        let sparse = toml::to_string(&Egress {
            ports: Some(vec![443]),
            ..Egress::default()
        })
        .unwrap();
        assert_eq!(sparse, "ports = [443]\n", "unset keys are not written");
    }

    #[test]
    fn refuses_bad_tables() {
        assert!(toml::from_str::<Egress>("allowed = []").is_err());
        let bad = |f: fn(&mut Egress)| {
            let mut cfg = Egress::default();
            f(&mut cfg);
            cfg.resolve().unwrap_err().to_string()
        };
        assert!(bad(|c| c.allow = Some(vec!["*.com".into()])).contains("top-level"));
        assert!(bad(|c| c.ports = Some(vec![])).contains("egress.ports"));
        assert!(bad(|c| c.ports = Some(vec![0])).contains("egress.ports"));
        assert!(bad(|c| c.clients = Some(vec!["10.0.0.1/8".into()])).contains("10.0.0.0/8"));
        assert!(bad(|c| c.allow_internal = Some(vec!["nope".into()])).contains("allow_internal"));
        assert!(bad(|c| c.max_connections = Some(0)).contains("max_connections"));
        assert!(
            bad(|c| c.idle_timeout = Some(HumanDuration::from_secs(0))).contains("idle_timeout")
        );
    }
}
