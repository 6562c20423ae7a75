//! The gateway configuration: TOML → validated settings in one pass.
//!
//! This crate owns the configuration contract of PRODUCT.md (`airlock.toml`), the embedded
//! default that `airlock serve` runs without `--config`, and the checks that make a bad file
//! fail at load time with a message naming the key and what to write instead.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use airlock_types::{ByteSize, HumanDuration, ImageRef};
use serde::{Deserialize, Serialize};
use url::Url;

mod egress;

pub use egress::{Egress, EgressConfigError, EgressSettings, Limits};

/// The embedded default configuration (Scout's registries).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {problem}")]
    Invalid { origin: String, problem: String },
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Store, metadata index and generated TLS material live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default, rename = "proxy", skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<ProxyConfig>,
    /// The CONNECT egress proxy; absent means it does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Egress>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./airlock-data")
}

/// `[server]`: the registry, package and status listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The name clients use; goes into the self-signed certificate and generated URLs.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// More certificate names: DNS names or IP addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_names: Vec<String>,
    /// The OCI proxy that serves unprefixed paths (`/v2/library/nginx/...`), as Docker's
    /// `registry-mirrors` sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_proxy: Option<String>,
    /// How long shutdown waits for in-flight requests.
    #[serde(default = "default_grace")]
    pub shutdown_grace: HumanDuration,
    /// How long a client has to send a complete request head: from the end of the TLS
    /// handshake for the first request, from its first byte for later ones.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: HumanDuration,
    /// How long a connection with no request in flight stays open.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Open connections, all clients together; more are closed as they arrive.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Open connections from one client IP address.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: u32,
    /// The largest request head (request line and headers; on HTTP/2 the header list).
    #[serde(default = "default_max_header_size")]
    pub max_header_size: ByteSize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}

fn default_hostname() -> String {
    "localhost".to_owned()
}

fn default_grace() -> HumanDuration {
    HumanDuration::from_secs(10)
}

// Ten seconds is ample for any real client on the site network (a request head is one
// packet), and short enough that a slowloris client pins a slot only briefly.
fn default_header_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

// Sixty seconds keeps connections warm across the gaps between a pull's manifest and
// layer requests or pip's resolve and download phases, while an abandoned connection
// gives its slot back within a minute. Clients retry an idempotent request that races a
// close, so a server-side idle timeout below theirs (Go's is 90s) costs nothing.
fn default_idle_timeout() -> HumanDuration {
    HumanDuration::from_secs(60)
}

fn default_max_connections() -> u32 {
    4096
}

// A node pulling many images at once opens tens of connections; 256 leaves room for that
// and for a NAT gateway fronting a few nodes, yet one client cannot take all 4096 slots.
fn default_max_connections_per_client() -> u32 {
    256
}

fn default_max_header_size() -> ByteSize {
    ByteSize(64 << 10)
}

/// The smallest `max_header_size`: hyper's HTTP/1 read buffer cannot be smaller.
pub const MIN_HEADER_SIZE: u64 = 8 << 10;
/// The largest `max_header_size`: far above any real request head; beyond this a client
/// could make each connection hold megabytes.
pub const MAX_HEADER_SIZE: u64 = 1 << 20;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            hostname: default_hostname(),
            extra_names: Vec::new(),
            default_proxy: None,
            shutdown_grace: default_grace(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_connections_per_client(),
            max_header_size: default_max_header_size(),
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub mode: TlsMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// How the listener gets its certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// A CA and server certificate generated on first start and kept in `data_dir`.
    #[default]
    SelfSigned,
    /// `cert` and `key` PEM files.
    Files,
    /// Plain HTTP, for running behind an ingress that terminates TLS.
    Off,
}

/// `[cache]`: how much the store may hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused_for: Option<HumanDuration>,
    /// Images eviction never touches: `<proxy>/<repo>:<tag>`, `<registry host>/<repo>:<tag>`
    /// or `…@sha256:…`, with everything they reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pin: Vec<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_size: None,
            unused_for: Some(HumanDuration::from_secs(7 * 86400)),
            pin: Vec::new(),
        }
    }
}

/// What a proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Oci,
    Pypi,
    Conda,
    Maven,
    Yum,
    Helm,
    Raw,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Oci => "oci",
            Format::Pypi => "pypi",
            Format::Conda => "conda",
            Format::Maven => "maven",
            Format::Yum => "yum",
            Format::Helm => "helm",
            Format::Raw => "raw",
        }
    }
}

/// `[[proxy]]`: one upstream, one format, one name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub name: String,
    pub format: Format,
    pub upstream: Url,
    /// OCI only: the public registry name that containerd sends as `?ns=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the upstream password or token (never the secret itself in TOML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for this upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// OCI: how long a cached tag is served before it is revalidated upstream.
    #[serde(default = "default_tag_ttl")]
    pub tag_ttl: HumanDuration,
    /// Packages: how long index and metadata files are served before revalidation.
    #[serde(default = "default_metadata_ttl")]
    pub metadata_ttl: HumanDuration,
    /// How long connecting to the upstream may take.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// How long the upstream may stay silent mid-response before the request fails.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: HumanDuration,
    /// Packages: how long an upstream 404 is remembered before asking again.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: HumanDuration,
    /// Raw: files that must hash to these sha256 values (path under the upstream → hex);
    /// they are cached for good once verified. Other files are refreshed by `metadata_ttl`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sha256: std::collections::BTreeMap<String, String>,
    /// Never contact the upstream: serve only what the cache holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration::from_secs(15)
}

fn default_read_timeout() -> HumanDuration {
    HumanDuration::from_secs(60)
}

fn default_negative_ttl() -> HumanDuration {
    HumanDuration::from_secs(60)
}

fn default_tag_ttl() -> HumanDuration {
    HumanDuration::from_secs(300)
}

fn default_metadata_ttl() -> HumanDuration {
    HumanDuration::from_secs(3600)
}

impl Config {
    /// The embedded default.
    pub fn embedded_default() -> Self {
        Self::from_toml_str(DEFAULT_TOML, "embedded default")
            .expect("the embedded default config is valid")
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in error messages.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|problem| ConfigError::Invalid {
            origin: origin.to_owned(),
            problem,
        })?;
        Ok(config)
    }

    /// The resolved form, as `airlock config check` prints it.
    pub fn to_toml(&self) -> String {
        let mut filled = self.clone();
        filled.egress = self.egress.as_ref().map(Egress::filled);
        toml::to_string(&filled).expect("configuration serializes")
    }

    pub fn proxy(&self, name: &str) -> Option<&ProxyConfig> {
        self.proxies.iter().find(|p| p.name == name)
    }

    fn validate(&self) -> Result<(), String> {
        self.server.validate()?;
        match (self.tls.mode, &self.tls.cert, &self.tls.key) {
            (TlsMode::Files, Some(_), Some(_))
            | (TlsMode::SelfSigned | TlsMode::Off, None, None) => {}
            (TlsMode::Files, _, _) => {
                return Err(
                    "[tls] mode = \"files\" needs both cert and key (PEM file paths)".into(),
                );
            }
            (_, _, _) => {
                return Err("[tls] cert and key are only used with mode = \"files\"".into());
            }
        }
        for pin in &self.cache.pin {
            if parse_pin(pin).is_none() {
                return Err(format!(
                    "[cache] pin {pin:?}: write <proxy or registry>/<repository>:<tag> or …@sha256:<digest>"
                ));
            }
        }
        let mut names = HashSet::new();
        let mut hosts = HashSet::new();
        for proxy in &self.proxies {
            proxy.validate()?;
            if !names.insert(proxy.name.as_str()) {
                return Err(format!(
                    "[[proxy]] name {:?} is used twice; names must be unique",
                    proxy.name
                ));
            }
            if let Some(host) = &proxy.host {
                if !hosts.insert(host.as_str()) {
                    return Err(format!(
                        "[[proxy]] host {host:?} is claimed by two proxies; containerd's ?ns= must map to one"
                    ));
                }
            }
        }
        if let Some(egress) = &self.egress {
            egress.resolve().map_err(|e| format!("[egress] {e}"))?;
        }
        if let Some(default) = &self.server.default_proxy {
            match self.proxy(default) {
                Some(p) if p.format == Format::Oci => {}
                Some(_) => {
                    return Err(format!(
                        "[server] default_proxy {default:?} is not an oci proxy"
                    ));
                }
                None => {
                    return Err(format!(
                        "[server] default_proxy {default:?} names no [[proxy]]"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), String> {
        if self.hostname.is_empty() {
            return Err("[server] hostname must not be empty".into());
        }
        for (key, value) in [
            ("header_timeout", self.header_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.0.is_zero() {
                return Err(format!(
                    "[server] {key} must be longer than zero (e.g. \"10s\")"
                ));
            }
        }
        if self.max_connections == 0 || self.max_connections_per_client == 0 {
            return Err(
                "[server] max_connections and max_connections_per_client must be at least 1".into(),
            );
        }
        if self.max_connections_per_client > self.max_connections {
            return Err(format!(
                "[server] max_connections_per_client ({}) is above max_connections ({}); lower it or raise max_connections",
                self.max_connections_per_client, self.max_connections
            ));
        }
        if !(MIN_HEADER_SIZE..=MAX_HEADER_SIZE).contains(&self.max_header_size.0) {
            return Err(format!(
                "[server] max_header_size {} is out of range: write {} to {}",
                self.max_header_size,
                ByteSize(MIN_HEADER_SIZE),
                ByteSize(MAX_HEADER_SIZE)
            ));
        }
        Ok(())
    }
}

impl ProxyConfig {
    fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
            })
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && !name.contains("..");
        if !valid_name {
            return Err(format!(
                "[[proxy]] name {name:?} is invalid: use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
            ));
        }
        if !matches!(self.upstream.scheme(), "http" | "https") || self.upstream.host_str().is_none()
        {
            return Err(format!(
                "[[proxy]] {name}: upstream {} must be an http(s) URL with a host",
                self.upstream
            ));
        }
        if !self.upstream.username().is_empty() || self.upstream.password().is_some() {
            return Err(format!(
                "[[proxy]] {name}: put credentials in username/password_file, not in the upstream URL"
            ));
        }
        if self.upstream.query().is_some() || self.upstream.fragment().is_some() {
            return Err(format!(
                "[[proxy]] {name}: upstream URL must not have a query or fragment"
            ));
        }
        match (self.format, &self.host) {
            (Format::Oci, Some(host)) if !valid_host(host) => {
                return Err(format!(
                    "[[proxy]] {name}: host {host:?} is not a registry host name (e.g. \"docker.io\")"
                ));
            }
            (Format::Oci, _) | (_, None) => {}
            (_, Some(_)) => {
                return Err(format!(
                    "[[proxy]] {name}: host is only for format = \"oci\""
                ));
            }
        }
        if !self.sha256.is_empty() && self.format != Format::Raw {
            return Err(format!(
                "[[proxy]] {name}: sha256 is only for format = \"raw\""
            ));
        }
        for (path, hex) in &self.sha256 {
            if airlock_types::Digest::sha256_hex(hex).is_err() {
                return Err(format!(
                    "[[proxy]] {name}: sha256 for {path:?} is not 64 lowercase hex digits"
                ));
            }
        }
        if self.password_file.is_some() && self.username.is_none() {
            return Err(format!("[[proxy]] {name}: password_file needs a username"));
        }
        Ok(())
    }
}

/// A pin names a repository below a proxy or registry, and exactly one tag or digest.
fn parse_pin(pin: &str) -> Option<ImageRef> {
    let image: ImageRef = pin.parse().ok()?;
    let below = image.domain().is_some() || image.path().as_str().contains('/');
    (below && image.tag().is_some() != image.digest().is_some()).then_some(image)
}

fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok
        && !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests;
