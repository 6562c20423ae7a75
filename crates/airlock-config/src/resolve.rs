//! Raw → resolved, once: defaults filled in, every check made, pins and the egress table
//! parsed; and back, for `airlock config check`. Each refusal is an [`Invalid`] naming the
//! key and what to write instead.

use std::collections::HashSet;
use std::path::Path;

use airlock_types::{ByteSize, Digest, HumanDuration, ImageRef};

use crate::raw;
use crate::{
    AdminUser, AuditConfig, CacheConfig, Config, EgressConfigError, Format, HostedConfig,
    MAX_HEADER_SIZE, MIN_HEADER_SIZE, ProxyConfig, ServerConfig, TlsConfig, TlsMode,
    UpstreamProxyError,
};

/// A configuration that parses but cannot be used: the key, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("[server] hostname must not be empty")]
    EmptyHostname,
    #[error("[server] {key} must be longer than zero (e.g. \"10s\")")]
    ZeroTimeout { key: &'static str },
    #[error("[server] max_connections and max_connections_per_client must be at least 1")]
    ZeroConnections,
    #[error(
        "[server] max_connections_per_client ({per_client}) is above max_connections ({total}); lower it or raise max_connections"
    )]
    PerClientAboveTotal { per_client: u32, total: u32 },
    #[error(
        "[server] max_header_size {size} is out of range: write {} to {}",
        ByteSize(MIN_HEADER_SIZE),
        ByteSize(MAX_HEADER_SIZE)
    )]
    HeaderSize { size: ByteSize },
    #[error("[server] default_proxy {name:?} is not an oci proxy")]
    DefaultProxyNotOci { name: String },
    #[error("[server] default_proxy {name:?} names no [[proxy]]")]
    DefaultProxyUnknown { name: String },
    #[error("[tls] mode = \"files\" needs both cert and key (PEM file paths)")]
    TlsFilesIncomplete,
    #[error("[tls] cert and key are only used with mode = \"files\"")]
    TlsFilesUnused,
    #[error(
        "[cache] pin {pin:?}: write <proxy or registry>/<repository>:<tag> or …@sha256:<digest>"
    )]
    Pin { pin: String },
    #[error(
        "[[proxy]] name {name:?} is invalid: use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
    )]
    ProxyName { name: String },
    #[error("[[proxy]] name {name:?} is used twice; names must be unique")]
    DuplicateName { name: String },
    #[error(
        "[[hosted]] name {name:?} is invalid: use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
    )]
    HostedName { name: String },
    #[error(
        "[[hosted]] name {name:?} is also a [[proxy]] or another [[hosted]] name; /v2/{name}/… must name one of them"
    )]
    HostedNameTaken { name: String },
    #[error("[[proxy]] host {host:?} is claimed by two proxies; containerd's ?ns= must map to one")]
    DuplicateHost { host: String },
    #[error("[[proxy]] {name}: upstream {upstream} must be an http(s) URL with a host")]
    UpstreamNotHttp { name: String, upstream: String },
    #[error("[[proxy]] {name}: put credentials in username/password_file, not in the upstream URL")]
    UpstreamCredentials { name: String },
    #[error("[[proxy]] {name}: upstream URL must not have a query or fragment")]
    UpstreamQuery { name: String },
    #[error("[[proxy]] {name}: host {host:?} is not a registry host name (e.g. \"docker.io\")")]
    RegistryHost { name: String, host: String },
    #[error("[[proxy]] {name}: {key} is only for format = \"{format}\"")]
    OnlyForFormat {
        name: String,
        key: &'static str,
        format: &'static str,
    },
    #[error("[[proxy]] {name}: sha256 for {path:?} is not 64 lowercase hex digits")]
    Sha256 { name: String, path: String },
    #[error("[[proxy]] {name}: password_file needs a username")]
    PasswordWithoutUsername { name: String },
    #[error("[egress] {0}")]
    Egress(EgressConfigError),
    #[error("[upstream_proxy] {0}")]
    UpstreamProxy(UpstreamProxyError),
    #[error(
        "[admin] user name {name:?} is invalid: it must be non-empty, without ':' or control characters"
    )]
    AdminName { name: String },
    #[error(transparent)]
    Policy(#[from] airlock_policy::RuleError),
    #[error("[admin] user {name:?} is listed twice; names must be unique")]
    AdminDuplicate { name: String },
    #[error(
        "[admin] user {user:?}: password_hash is refused: {reason}; make one with `airlock admin hash-password`"
    )]
    AdminHash { user: String, reason: String },
    #[error(
        "[[robot]] name {name:?} is invalid: it must be non-empty, without ':' or control characters"
    )]
    RobotName { name: String },
    #[error(
        "[[robot]] {name} is listed twice or shares its name with an [admin] user; names must be unique"
    )]
    RobotDuplicate { name: String },
    #[error(
        "[[robot]] {name}: secret_hash is refused: {reason}; make one with `airlock admin hash-password`"
    )]
    RobotHash { name: String, reason: String },
    #[error("[[robot]] {name}: scope {scope:?} is refused: {why}")]
    RobotScope {
        name: String,
        scope: String,
        why: String,
    },
    #[error("[admin] token_ttl must be between 1s and 1h (it is {0})")]
    TokenTtl(HumanDuration),
    #[error("[audit] max_size is {size} bytes; it must be at least 64KiB")]
    AuditMaxSize { size: u64 },
    #[error("[storage] {0}")]
    Storage(crate::StorageError),
}

impl Config {
    /// Resolves a file: defaults filled in, every check made, pins and `[egress]` parsed.
    pub fn from_raw(raw: &raw::Config) -> Result<Self, Invalid> {
        let server = resolve_server(&raw.server)?;
        let tls = resolve_tls(&raw.tls)?;
        let cache = match &raw.cache {
            None => CacheConfig::default(),
            Some(cache) => CacheConfig {
                max_size: cache.max_size.as_ref().map(raw::Written::value),
                unused_for: cache.unused_for.as_ref().map(raw::Written::value),
                grace: cache
                    .grace
                    .as_ref()
                    .map_or(CacheConfig::default().grace, raw::Written::value),
                min_free: cache.min_free.as_ref().map(raw::Written::value),
                pin: cache
                    .pin
                    .iter()
                    .map(|pin| parse_pin(pin).ok_or_else(|| Invalid::Pin { pin: pin.clone() }))
                    .collect::<Result<_, _>>()?,
            },
        };
        let mut names = HashSet::new();
        let mut hosts = HashSet::new();
        let mut proxies = Vec::with_capacity(raw.proxies.len());
        for proxy in &raw.proxies {
            let proxy = resolve_proxy(proxy)?;
            if !names.insert(proxy.name.clone()) {
                return Err(Invalid::DuplicateName { name: proxy.name });
            }
            if let Some(host) = &proxy.host {
                if !hosts.insert(host.clone()) {
                    return Err(Invalid::DuplicateHost { host: host.clone() });
                }
            }
            proxies.push(proxy);
        }
        let hosted = resolve_hosted(&raw.hosted, &mut names)?;
        let egress = match &raw.egress {
            Some(egress) => Some(egress.resolve().map_err(Invalid::Egress)?),
            None => None,
        };
        let upstream_proxy = match &raw.upstream_proxy {
            Some(table) => Some(table.resolve().map_err(Invalid::UpstreamProxy)?),
            None => None,
        };
        if let Some(default) = &server.default_proxy {
            match proxies.iter().find(|p| &p.name == default) {
                Some(p) if p.format == Format::Oci => {}
                Some(_) => {
                    return Err(Invalid::DefaultProxyNotOci {
                        name: default.clone(),
                    });
                }
                None => {
                    return Err(Invalid::DefaultProxyUnknown {
                        name: default.clone(),
                    });
                }
            }
        }
        let policy = airlock_policy::Policy::resolve(&raw.policies, |name| {
            proxies
                .iter()
                .find(|p| p.name == name)
                .map(|p| match p.format {
                    Format::Oci => airlock_policy::Family::Oci,
                    Format::Pypi => airlock_policy::Family::Pypi,
                    _ => airlock_policy::Family::Files,
                })
        })?;
        let data_dir = raw.data_dir.clone().unwrap_or_else(crate::default_data_dir);
        let admin_users = crate::admin::resolve(raw.admin.as_ref())?;
        let robots = crate::robot::resolve(&raw.robots, &admin_users, |name| {
            hosted.iter().any(|h| h.name == name)
        })?;
        let audit = resolve_audit(raw.audit.as_ref(), &data_dir)?;
        Ok(Self {
            data_dir,
            server,
            tls,
            cache,
            proxies,
            hosted,
            egress,
            upstream_proxy,
            robots,
            admin_users,
            token_ttl: resolve_token_ttl(raw.admin.as_ref())?,
            policy,
            ui: crate::UiConfig {
                anonymous_read: raw
                    .ui
                    .as_ref()
                    .and_then(|ui| ui.anonymous_read)
                    .unwrap_or(false),
            },
            audit,
            storage: match &raw.storage {
                Some(table) => table.resolve().map_err(Invalid::Storage)?,
                None => crate::StorageConfig::Fs,
            },
        })
    }

    /// The file this configuration is, every default written out.
    pub fn to_raw(&self) -> raw::Config {
        let server = &self.server;
        raw::Config {
            data_dir: Some(self.data_dir.clone()),
            server: raw::Server {
                listen: Some(server.listen),
                hostname: Some(server.hostname.clone()),
                extra_names: server.extra_names.clone(),
                default_proxy: server.default_proxy.clone(),
                shutdown_grace: Some(server.shutdown_grace),
                header_timeout: Some(server.header_timeout),
                idle_timeout: Some(server.idle_timeout),
                max_connections: Some(server.max_connections),
                max_connections_per_client: Some(server.max_connections_per_client),
                max_header_size: Some(server.max_header_size),
            },
            tls: raw::Tls {
                mode: Some(self.tls.mode),
                cert: self.tls.cert.clone(),
                key: self.tls.key.clone(),
            },
            cache: Some(raw::Cache {
                max_size: self.cache.max_size.map(raw::Written::new),
                unused_for: self.cache.unused_for.map(raw::Written::new),
                grace: Some(raw::Written::new(self.cache.grace)),
                min_free: self.cache.min_free.map(raw::Written::new),
                pin: self.cache.pin.iter().map(ToString::to_string).collect(),
            }),
            proxies: self
                .proxies
                .iter()
                .map(|p| raw::Proxy {
                    host: p.host.clone(),
                    username: p.username.clone(),
                    password_file: p.password_file.clone(),
                    ca_file: p.ca_file.clone(),
                    tag_ttl: Some(p.tag_ttl),
                    metadata_ttl: Some(p.metadata_ttl),
                    connect_timeout: Some(p.connect_timeout),
                    read_timeout: Some(p.read_timeout),
                    negative_ttl: Some(p.negative_ttl),
                    sha256: p
                        .sha256
                        .iter()
                        .map(|(path, digest)| (path.clone(), digest.hex().to_owned()))
                        .collect(),
                    offline: p.offline,
                    ..raw::Proxy::new(&p.name, p.format, p.upstream.clone().into())
                })
                .collect(),
            hosted: self
                .hosted
                .iter()
                .map(|h| raw::Hosted {
                    name: h.name.clone(),
                    anonymous_pull: Some(h.anonymous_pull),
                    delete: Some(h.delete),
                })
                .collect(),
            egress: self.egress.as_ref().map(|e| e.table.clone()),
            upstream_proxy: self.upstream_proxy.as_ref().map(|p| p.table.clone()),
            admin: (!self.admin_users.is_empty() || self.token_ttl != crate::DEFAULT_TOKEN_TTL)
                .then(|| raw::Admin {
                    users: self.admin_users.iter().map(AdminUser::to_raw).collect(),
                    token_ttl: Some(self.token_ttl),
                }),
            robots: self.robots.iter().map(crate::Robot::to_raw).collect(),
            policies: self
                .policy
                .rules()
                .iter()
                .map(|rule| rule.table.clone())
                .collect(),
            ui: Some(raw::Ui {
                anonymous_read: Some(self.ui.anonymous_read),
            }),
            audit: Some(raw::Audit {
                path: Some(self.audit.path.clone()),
                max_size: Some(raw::Written::new(self.audit.max_size)),
                keep: Some(self.audit.keep),
            }),
            storage: Some(self.storage.to_raw()),
        }
    }
}

fn resolve_audit(raw: Option<&raw::Audit>, data_dir: &Path) -> Result<AuditConfig, Invalid> {
    let raw = raw.cloned().unwrap_or_default();
    let max_size = raw
        .max_size
        .as_ref()
        .map_or(AuditConfig::DEFAULT_MAX_SIZE, raw::Written::value);
    if max_size < AuditConfig::MIN_MAX_SIZE {
        return Err(Invalid::AuditMaxSize { size: max_size.0 });
    }
    Ok(AuditConfig {
        path: raw.path.unwrap_or_else(|| data_dir.join("audit.jsonl")),
        max_size,
        keep: raw.keep.unwrap_or(AuditConfig::DEFAULT_KEEP),
    })
}

fn resolve_server(raw: &raw::Server) -> Result<ServerConfig, Invalid> {
    let defaults = ServerConfig::default();
    let server = ServerConfig {
        listen: raw.listen.unwrap_or(defaults.listen),
        hostname: raw.hostname.clone().unwrap_or(defaults.hostname),
        extra_names: raw.extra_names.clone(),
        default_proxy: raw.default_proxy.clone(),
        shutdown_grace: raw.shutdown_grace.unwrap_or(defaults.shutdown_grace),
        header_timeout: raw.header_timeout.unwrap_or(defaults.header_timeout),
        idle_timeout: raw.idle_timeout.unwrap_or(defaults.idle_timeout),
        max_connections: raw.max_connections.unwrap_or(defaults.max_connections),
        max_connections_per_client: raw
            .max_connections_per_client
            .unwrap_or(defaults.max_connections_per_client),
        max_header_size: raw.max_header_size.unwrap_or(defaults.max_header_size),
    };
    if server.hostname.is_empty() {
        return Err(Invalid::EmptyHostname);
    }
    for (key, value) in [
        ("header_timeout", server.header_timeout),
        ("idle_timeout", server.idle_timeout),
    ] {
        if value.0.is_zero() {
            return Err(Invalid::ZeroTimeout { key });
        }
    }
    if server.max_connections == 0 || server.max_connections_per_client == 0 {
        return Err(Invalid::ZeroConnections);
    }
    if server.max_connections_per_client > server.max_connections {
        return Err(Invalid::PerClientAboveTotal {
            per_client: server.max_connections_per_client,
            total: server.max_connections,
        });
    }
    if !(MIN_HEADER_SIZE..=MAX_HEADER_SIZE).contains(&server.max_header_size.0) {
        return Err(Invalid::HeaderSize {
            size: server.max_header_size,
        });
    }
    Ok(server)
}

fn resolve_tls(raw: &raw::Tls) -> Result<TlsConfig, Invalid> {
    let tls = TlsConfig {
        mode: raw.mode.unwrap_or_default(),
        cert: raw.cert.clone(),
        key: raw.key.clone(),
    };
    match (tls.mode, &tls.cert, &tls.key) {
        (TlsMode::Files, Some(_), Some(_)) | (TlsMode::SelfSigned | TlsMode::Off, None, None) => {
            Ok(tls)
        }
        (TlsMode::Files, _, _) => Err(Invalid::TlsFilesIncomplete),
        (_, _, _) => Err(Invalid::TlsFilesUnused),
    }
}

/// A pin names a repository below a proxy or registry, and exactly one tag or digest.
fn parse_pin(pin: &str) -> Option<ImageRef> {
    let image: ImageRef = pin.parse().ok()?;
    let below = image.domain().is_some() || image.path().as_str().contains('/');
    (below && image.tag().is_some() != image.digest().is_some()).then_some(image)
}

/// A proxy or hosted project name: one path component under `/v2/`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && !name.contains("..")
}

/// `[admin] token_ttl`: how long a registry token lasts.
fn resolve_token_ttl(admin: Option<&raw::Admin>) -> Result<HumanDuration, Invalid> {
    let ttl = admin
        .and_then(|a| a.token_ttl)
        .unwrap_or(crate::DEFAULT_TOKEN_TTL);
    if ttl.0 < std::time::Duration::from_secs(1) || ttl.0 > std::time::Duration::from_secs(3600) {
        return Err(Invalid::TokenTtl(ttl));
    }
    Ok(ttl)
}

/// `[[hosted]]` projects; `names` holds the proxy names, which a project must not reuse
/// (the first path component picks one of them).
fn resolve_hosted(
    raw: &[raw::Hosted],
    names: &mut HashSet<String>,
) -> Result<Vec<HostedConfig>, Invalid> {
    raw.iter()
        .map(|hosted| {
            let name = hosted.name.clone();
            if !valid_name(&name) {
                return Err(Invalid::HostedName { name });
            }
            if !names.insert(name.clone()) {
                return Err(Invalid::HostedNameTaken { name });
            }
            Ok(HostedConfig {
                name,
                anonymous_pull: hosted.anonymous_pull.unwrap_or(false),
                delete: hosted.delete.unwrap_or(false),
            })
        })
        .collect()
}

fn resolve_proxy(raw: &raw::Proxy) -> Result<ProxyConfig, Invalid> {
    let name = &raw.name;
    let named = || name.clone();
    if !valid_name(name) {
        return Err(Invalid::ProxyName { name: named() });
    }
    let upstream = raw.upstream.url();
    if !matches!(upstream.scheme(), "http" | "https") || upstream.host_str().is_none() {
        return Err(Invalid::UpstreamNotHttp {
            name: named(),
            upstream: upstream.to_string(),
        });
    }
    if !upstream.username().is_empty() || upstream.password().is_some() {
        return Err(Invalid::UpstreamCredentials { name: named() });
    }
    if upstream.query().is_some() || upstream.fragment().is_some() {
        return Err(Invalid::UpstreamQuery { name: named() });
    }
    match (raw.format, &raw.host) {
        (Format::Oci, Some(host)) if !valid_host(host) => {
            return Err(Invalid::RegistryHost {
                name: named(),
                host: host.clone(),
            });
        }
        (Format::Oci, _) | (_, None) => {}
        (_, Some(_)) => {
            return Err(Invalid::OnlyForFormat {
                name: named(),
                key: "host",
                format: "oci",
            });
        }
    }
    if !raw.sha256.is_empty() && raw.format != Format::Raw {
        return Err(Invalid::OnlyForFormat {
            name: named(),
            key: "sha256",
            format: "raw",
        });
    }
    let mut sha256 = std::collections::BTreeMap::new();
    for (path, hex) in &raw.sha256 {
        let digest = Digest::sha256_hex(hex).map_err(|_| Invalid::Sha256 {
            name: named(),
            path: path.clone(),
        })?;
        sha256.insert(path.clone(), digest);
    }
    if raw.password_file.is_some() && raw.username.is_none() {
        return Err(Invalid::PasswordWithoutUsername { name: named() });
    }
    Ok(ProxyConfig {
        name: named(),
        format: raw.format,
        upstream: upstream.clone(),
        host: raw.host.clone(),
        username: raw.username.clone(),
        password_file: raw.password_file.clone(),
        ca_file: raw.ca_file.clone(),
        tag_ttl: raw.tag_ttl.unwrap_or_else(crate::default_tag_ttl),
        metadata_ttl: raw.metadata_ttl.unwrap_or_else(crate::default_metadata_ttl),
        connect_timeout: raw
            .connect_timeout
            .unwrap_or_else(crate::default_connect_timeout),
        read_timeout: raw.read_timeout.unwrap_or_else(crate::default_read_timeout),
        negative_ttl: raw.negative_ttl.unwrap_or_else(crate::default_negative_ttl),
        sha256,
        offline: raw.offline,
    })
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
