//! `airlock.toml` as written: every table and key as serde reads it, nothing defaulted and
//! nothing checked yet. Keys left out stay `None` and are not written back, so a file
//! built from these types (the control node renders one) says only what it sets.
//!
//! [`crate::Config::from_raw`] resolves a file; [`crate::Config::to_raw`] writes a resolved
//! configuration back with every default filled in, as `airlock config check` prints it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use airlock_types::{ByteSize, HumanDuration};
use serde::{Deserialize, Serialize};
use url::Url;

pub use crate::egress::Egress;
pub use crate::storage::Storage;
pub use crate::upstream_proxy::UpstreamProxy;
use crate::{Format, TlsMode};
pub use airlock_policy::RuleTable as Policy;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Store, metadata index and generated TLS material live here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub tls: Tls,
    /// Absent: the default retention. Present: exactly what it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
    #[serde(default, rename = "proxy", skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<Proxy>,
    /// `[[hosted]]` projects clients push to, served at `/v2/<name>/…` beside the proxies.
    #[serde(default, rename = "hosted", skip_serializing_if = "Vec::is_empty")]
    pub hosted: Vec<Hosted>,
    /// `[[robot]]` accounts that pull from and push to hosted projects.
    #[serde(default, rename = "robot", skip_serializing_if = "Vec::is_empty")]
    pub robots: Vec<Robot>,
    /// The CONNECT egress proxy; absent means it does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Egress>,
    /// The site's outbound proxy for every upstream; absent means upstreams are reached
    /// directly (never through a proxy named in the environment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_proxy: Option<UpstreamProxy>,
    /// The admin API's accounts; absent or without users, there is no admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    /// `[[policy]]` rules, in order: the first that matches a request decides.
    #[serde(default, rename = "policy", skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
    /// The console and admin API's read access; absent: everything needs a login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<Ui>,
    /// The audit trail; absent: `audit.jsonl` under `data_dir` with the default rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
    /// Where blobs and package files live; absent: under `data_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
}

/// `[ui]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ui {
    /// `true`: the read-only pages and `GET` endpoints need no login (mutations still do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_read: Option<bool>,
}

/// `[audit]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Written<ByteSize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
}

/// `[admin]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default)]
    pub users: Vec<AdminUser>,
    /// How long a registry token from `/service/token` lasts; default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl: Option<HumanDuration>,
}

/// `[[robot]]`: an account for machines, scoped to hosted repositories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Robot {
    pub name: String,
    /// A PHC argon2id string, from `airlock admin hash-password`.
    pub secret_hash: String,
    /// `<project>/<repository glob>`s it may pull from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull: Vec<String>,
    /// `<project>/<repository glob>`s it may push to (and pull from).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub push: Vec<String>,
}

/// One `[admin] users` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    pub name: String,
    /// A PHC argon2id string, from `airlock admin hash-password`.
    pub password_hash: String,
}

/// `[server]`: the registry, package and status listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The name clients use; goes into the self-signed certificate and generated URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// More certificate names: DNS names or IP addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_names: Vec<String>,
    /// The OCI proxy that serves unprefixed paths (`/v2/library/nginx/...`), as Docker's
    /// `registry-mirrors` sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_proxy: Option<String>,
    /// How long shutdown waits for in-flight requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<HumanDuration>,
    /// How long a client has to send a complete request head: from the end of the TLS
    /// handshake for the first request, from its first byte for later ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<HumanDuration>,
    /// How long a connection with no request in flight stays open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<HumanDuration>,
    /// Open connections, all clients together; more are closed as they arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Open connections from one client IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Option<u32>,
    /// The largest request head (request line and headers; on HTTP/2 the header list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_size: Option<ByteSize>,
}

/// `[tls]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// `[cache]`: how much the store may hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Written<ByteSize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused_for: Option<Written<HumanDuration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<Written<HumanDuration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_free: Option<Written<ByteSize>>,
    /// Images eviction never touches: `<proxy>/<repo>:<tag>`, `<registry host>/<repo>:<tag>`
    /// or `…@sha256:…`, with everything they reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pin: Vec<String>,
}

/// `[[hosted]]`: a project clients push images to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hosted {
    pub name: String,
    /// `true`: pulls need no login (pushes always do). Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_pull: Option<bool>,
    /// `true`: manifests and tags may be deleted. Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<bool>,
}

/// `[[proxy]]`: one upstream, one format, one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    pub name: String,
    pub format: Format,
    pub upstream: UpstreamUrl,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_ttl: Option<HumanDuration>,
    /// Packages: how long index and metadata files are served before revalidation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_ttl: Option<HumanDuration>,
    /// How long connecting to the upstream may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<HumanDuration>,
    /// How long the upstream may stay silent mid-response before the request fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<HumanDuration>,
    /// Packages: how long an upstream 404 is remembered before asking again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_ttl: Option<HumanDuration>,
    /// Raw: files that must hash to these sha256 values (path under the upstream → hex);
    /// they are cached for good once verified. Other files are refreshed by `metadata_ttl`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256: BTreeMap<String, String>,
    /// Never contact the upstream: serve only what the cache holds. A package proxy's
    /// indexes (`PyPI` pages, conda repodata, yum metadata, Helm's index) then list only that.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
}

impl Proxy {
    /// A proxy with only its name, format and upstream set.
    pub fn new(name: &str, format: Format, upstream: UpstreamUrl) -> Self {
        Self {
            name: name.to_owned(),
            format,
            upstream,
            host: None,
            username: None,
            password_file: None,
            ca_file: None,
            tag_ttl: None,
            metadata_ttl: None,
            connect_timeout: None,
            read_timeout: None,
            negative_ttl: None,
            sha256: BTreeMap::new(),
            offline: false,
        }
    }
}

/// A value kept in the spelling it was written in (`"30d"` stays `"30d"`, not the
/// `"30days"` its canonical form would print), parsed when the file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<T> {
    value: T,
    spelling: Option<String>,
}

impl<T: Copy> Written<T> {
    /// A value written in its canonical form.
    pub fn new(value: T) -> Self {
        Self {
            value,
            spelling: None,
        }
    }

    /// A value with the spelling to write it in; the spelling must parse to the value.
    pub fn spelled(value: T, spelling: &str) -> Self {
        Self {
            value,
            spelling: Some(spelling.to_owned()),
        }
    }

    pub fn value(&self) -> T {
        self.value
    }
}

impl<T: std::fmt::Display> Serialize for Written<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.spelling {
            Some(spelling) => serializer.serialize_str(spelling),
            None => serializer.collect_str(&self.value),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Written<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(|value| Self {
            value,
            spelling: None,
        })
    }
}

/// An upstream URL: parsed when the file is read (an unparsable one is a syntax error like
/// any other), written back exactly as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    written: String,
    url: Url,
}

impl UpstreamUrl {
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.written
    }
}

impl std::str::FromStr for UpstreamUrl {
    type Err = url::ParseError;
    fn from_str(written: &str) -> Result<Self, Self::Err> {
        Ok(Self {
            url: Url::parse(written)?,
            written: written.to_owned(),
        })
    }
}

impl From<Url> for UpstreamUrl {
    fn from(url: Url) -> Self {
        Self {
            written: url.to_string(),
            url,
        }
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.written)
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let written = String::deserialize(deserializer)?;
        written
            .parse()
            .map_err(|e| serde::de::Error::custom(format!("{e}: {written:?}")))
    }
}

impl Config {
    /// The embedded default as written ([`crate::DEFAULT_TOML`]).
    pub fn embedded_default() -> Self {
        toml::from_str(crate::DEFAULT_TOML).expect("the embedded default config parses")
    }

    /// The file as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("configuration serializes")
    }
}
