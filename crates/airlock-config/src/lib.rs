//! The gateway configuration: TOML → validated settings in one pass.
//!
//! This crate owns the configuration contract of PRODUCT.md (`airlock.toml`), the embedded
//! default that `airlock serve` runs without `--config`, and the checks that make a bad file
//! fail at load time with a message naming the key and what to write instead.
//!
//! [`raw`] is the file as written; [`Config`] is what it resolves to, once: defaults filled
//! in, pins parsed into image references, the egress allowlist and networks parsed. The
//! servers take the resolved values and parse nothing again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use airlock_types::{ByteSize, Digest, HumanDuration, ImageRef};
use serde::{Deserialize, Serialize};
use url::Url;

mod admin;
mod egress;
pub mod raw;
mod resolve;
mod robot;
mod storage;
mod upstream_proxy;

pub use admin::{AdminUser, HashError, hash_password, hash_password_stable};
pub use egress::{Egress, EgressConfigError, EgressSettings, Limits};
pub use resolve::Invalid;
pub use robot::{Action, Robot};
pub use storage::{Backend, S3Config, StorageConfig, StorageError};
pub use upstream_proxy::{NoProxyEntry, UpstreamProxy, UpstreamProxyError, UpstreamProxySettings};

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
    Invalid { origin: String, problem: Invalid },
}

/// The whole gateway configuration, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// Store, metadata index and generated TLS material live here.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub cache: CacheConfig,
    pub proxies: Vec<ProxyConfig>,
    /// `[[hosted]]`: the projects clients push to.
    pub hosted: Vec<HostedConfig>,
    /// The CONNECT egress proxy; `None` means it does not run.
    pub egress: Option<EgressSettings>,
    /// The site's outbound proxy for every upstream; `None`: upstreams are reached directly.
    pub upstream_proxy: Option<UpstreamProxySettings>,
    /// `[admin] users`: who may use the admin API; empty, the gateway serves no admin API.
    pub admin_users: Vec<AdminUser>,
    /// `[admin] token_ttl`: how long a token from `/service/token` lasts.
    pub token_ttl: HumanDuration,
    /// `[[robot]]`: accounts for machines, scoped to hosted repositories.
    pub robots: Vec<Robot>,
    /// `[[policy]]`: what the registry and package proxies refuse; empty, everything passes.
    pub policy: airlock_policy::Policy,
    pub ui: UiConfig,
    pub audit: AuditConfig,
    /// `[storage]`: where blobs and package files live.
    pub storage: StorageConfig,
}

/// `[ui]`: who may read the console and the admin API without a login.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UiConfig {
    /// `true`: the read-only pages and `GET` endpoints under `/ui/` and `/api/v1/` are
    /// public; mutations always need an admin login. Default `false`.
    pub anonymous_read: bool,
}

/// `[audit]`: the trail of upstream fetches, egress and policy decisions, logins and admin
/// actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Default: `audit.jsonl` under `data_dir`.
    pub path: PathBuf,
    /// Rotated before a line would take it past this size.
    pub max_size: ByteSize,
    /// Rotated files kept.
    pub keep: u32,
}

impl AuditConfig {
    pub const DEFAULT_MAX_SIZE: ByteSize = ByteSize(100 << 20);
    pub const DEFAULT_KEEP: u32 = 5;
    /// The smallest `max_size`: room for a few hundred lines.
    pub const MIN_MAX_SIZE: ByteSize = ByteSize(64 << 10);
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./airlock-data")
}

const DEFAULT_UNUSED_FOR: HumanDuration = HumanDuration::from_secs(7 * 86400);
const DEFAULT_GRACE: HumanDuration = HumanDuration::from_secs(600);
/// How long a registry token lasts unless `[admin] token_ttl` says otherwise (Docker's
/// token servers use the same five minutes).
pub const DEFAULT_TOKEN_TTL: HumanDuration = HumanDuration::from_secs(300);

/// `[server]`: the registry, package and status listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The name clients use; goes into the self-signed certificate and generated URLs.
    pub hostname: String,
    /// More certificate names: DNS names or IP addresses.
    pub extra_names: Vec<String>,
    /// The OCI proxy that serves unprefixed paths (`/v2/library/nginx/...`), as Docker's
    /// `registry-mirrors` sends them.
    pub default_proxy: Option<String>,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: HumanDuration,
    /// How long a client has to send a complete request head: from the end of the TLS
    /// handshake for the first request, from its first byte for later ones.
    pub header_timeout: HumanDuration,
    /// How long a connection with no request in flight stays open.
    pub idle_timeout: HumanDuration,
    /// Open connections, all clients together; more are closed as they arrive.
    pub max_connections: u32,
    /// Open connections from one client IP address.
    pub max_connections_per_client: u32,
    /// The largest request head (request line and headers; on HTTP/2 the header list).
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub mode: TlsMode,
    pub cert: Option<PathBuf>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub max_size: Option<ByteSize>,
    pub unused_for: Option<HumanDuration>,
    /// What was used this recently is not evicted (a pull reads its manifest, then its
    /// blobs)…
    pub grace: HumanDuration,
    /// …unless free space on the data dir's filesystem is below this: then eviction frees
    /// down to it, grace or not (pins still hold).
    pub min_free: Option<ByteSize>,
    /// Images eviction never touches: `<proxy>/<repo>:<tag>`, `<registry host>/<repo>:<tag>`
    /// or `…@sha256:…`, with everything they reference. Each names a repository below a
    /// proxy or registry and exactly one tag or digest.
    pub pin: Vec<ImageRef>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_size: None,
            unused_for: Some(DEFAULT_UNUSED_FOR),
            grace: DEFAULT_GRACE,
            min_free: None,
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

/// `[[hosted]]`: a project at `/v2/<name>/<repo>/…` that clients push to and pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedConfig {
    pub name: String,
    /// Pulls need no login; pushes always do.
    pub anonymous_pull: bool,
    /// Manifests and tags may be deleted (`DELETE /v2/<name>/<repo>/manifests/…`).
    pub delete: bool,
}

/// `[[proxy]]`: one upstream, one format, one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    pub name: String,
    pub format: Format,
    pub upstream: Url,
    /// OCI only: the public registry name that containerd sends as `?ns=`.
    pub host: Option<String>,
    pub username: Option<String>,
    /// A file holding the upstream password or token (never the secret itself in TOML).
    pub password_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for this upstream.
    pub ca_file: Option<PathBuf>,
    /// OCI: how long a cached tag is served before it is revalidated upstream.
    pub tag_ttl: HumanDuration,
    /// Packages: how long index and metadata files are served before revalidation.
    pub metadata_ttl: HumanDuration,
    /// How long connecting to the upstream may take.
    pub connect_timeout: HumanDuration,
    /// How long the upstream may stay silent mid-response before the request fails.
    pub read_timeout: HumanDuration,
    /// Packages: how long an upstream 404 is remembered before asking again.
    pub negative_ttl: HumanDuration,
    /// Raw: files that must hash to these digests (path under the upstream → the digest of
    /// the 64 lowercase hex digits written); cached for good once verified.
    pub sha256: std::collections::BTreeMap<String, Digest>,
    /// Never contact the upstream: serve only what the cache holds. A package proxy's
    /// indexes (`PyPI` pages, conda repodata, yum metadata, Helm's index) then list only that.
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

    /// Parses and resolves TOML text; `origin` names it in error messages.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let raw: raw::Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        Self::from_raw(&raw).map_err(|problem| ConfigError::Invalid {
            origin: origin.to_owned(),
            problem,
        })
    }

    /// The resolved form, as `airlock config check` prints it.
    pub fn to_toml(&self) -> String {
        self.to_raw().to_toml()
    }

    pub fn proxy(&self, name: &str) -> Option<&ProxyConfig> {
        self.proxies.iter().find(|p| p.name == name)
    }

    pub fn hosted(&self, name: &str) -> Option<&HostedConfig> {
        self.hosted.iter().find(|h| h.name == name)
    }
}

#[cfg(test)]
mod tests;
