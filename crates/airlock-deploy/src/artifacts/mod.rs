//! K3s artifacts on the control node: the `k3s` binary, its `sha256sum-<arch>.txt` and the
//! install script, fetched once into a local content-addressed cache and reused across runs.
//!
//! - The version is `k3s_version`, or the channel's latest: `update.k3s.io` answers
//!   `<channels>/<channel>` with a redirect to `…/releases/tag/<version>`.
//! - Each download goes direct first, with a short connect timeout; when the connection
//!   cannot be made (an HTTP error status is an answer, not a reason to switch), it and every
//!   later download go through the gateway's raw proxies, `<base>/k3s-releases/<version>/<asset>`
//!   and `<base>/k3s-install/`.
//! - The binary must match its line in the checksum file before anything enters the cache.
//!
//! The cache: `<cache>/sha256/<hex>` holds verified bytes under their sha256;
//! `<cache>/k3s/<version>/<arch>/index.json` names the three blobs of one release. Files are
//! written to `<cache>/tmp/`, synced, then renamed into place, so a blob is whole or absent.
//! A cached release is hashed again before use (70 MB hash in well under a second): the blob's
//! name says what was verified when it was written, not what is on the disk now.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use airlock_site::site::Site;
use airlock_upstream::SiteProxy;

mod cas;
mod http;

pub(crate) use cas::{Cas, persist};
pub(crate) use http::{Body, Fetched, Sink};
pub use http::{Http, outbound_proxy};

/// Where `update.k3s.io` publishes release channels.
pub const DEFAULT_CHANNELS: &str = "https://update.k3s.io/v1-release/channels";
/// How long a direct connection may take before the gateway is tried instead.
const DIRECT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The checksum file and the install script are small; anything larger is not them.
const SMALL_FILE_LIMIT: u64 = 4 * 1024 * 1024;

/// How the control node reaches the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAccess {
    /// `https://<gateway-hostname>/repository`.
    pub base: String,
    /// Connect here for the gateway's host name (the control node may not resolve it). The
    /// port is taken from `base`, not from this address.
    pub resolve: Option<SocketAddr>,
    /// A CA (PEM) to trust for the gateway, besides the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// Where K3s artifacts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// Release assets: `<direct_releases><version>/<asset>`.
    pub direct_releases: String,
    /// The install script.
    pub direct_install: String,
    /// Release channels: `<channels>/<channel>` redirects to the channel's latest release.
    pub channels: String,
    /// The gateway, tried when a direct connection cannot be made.
    pub gateway: Option<GatewayAccess>,
    /// The site's outbound proxy for direct downloads (`https_proxy`, `no_proxy`); the
    /// gateway is always reached directly.
    pub outbound: Option<SiteProxy>,
}

impl Sources {
    /// The site's `k3s-releases` and `k3s-install` upstreams (as `airlock_upstreams` may
    /// have changed them), the public channels, `gateway`, and the site's outbound proxy
    /// (its CA file read now).
    pub fn for_site(site: &Site, gateway: Option<GatewayAccess>) -> Result<Self, ArtifactError> {
        let upstream = |name: &str, default: &str| {
            site.packages
                .iter()
                .find(|p| p.name == name)
                .map_or_else(|| default.to_owned(), |p| p.upstream.clone())
        };
        Ok(Self {
            direct_releases: upstream(
                "k3s-releases",
                "https://github.com/k3s-io/k3s/releases/download/",
            ),
            direct_install: upstream("k3s-install", "https://get.k3s.io/"),
            channels: DEFAULT_CHANNELS.to_owned(),
            gateway,
            outbound: outbound_proxy(site)?,
        })
    }
}

/// How a release reached the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// Downloaded from the upstreams.
    Direct,
    /// At least one file came through the gateway's raw proxies.
    Gateway,
    /// Nothing downloaded: the cache had the release.
    Cache,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Direct => "direct",
            Self::Gateway => "through the gateway",
            Self::Cache => "from the local cache",
        })
    }
}

/// One verified file in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// `<cache>/sha256/<hex>`.
    pub path: PathBuf,
    pub sha256: String,
    /// Where it was downloaded from (by the run that cached it).
    pub url: String,
}

/// A K3s release ready to copy to the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sArtifacts {
    pub version: String,
    pub arch: String,
    pub route: Route,
    /// The `k3s` binary, verified against `checksums`.
    pub binary: Artifact,
    /// `sha256sum-<arch>.txt`.
    pub checksums: Artifact,
    /// The install script (`install.sh`).
    pub install_script: Artifact,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("unknown architecture `{0}`: K3s publishes amd64, arm64 and arm")]
    UnknownArch(String),
    #[error("`{0}` is not a K3s release name (e.g. `v1.31.4+k3s1`)")]
    BadVersion(String),
    #[error(
        "cannot ask {url} for the latest `{channel}` release ({detail}); the gateway cannot answer \
         this either: set `k3s_version` (e.g. `v1.31.4+k3s1`) in the inventory"
    )]
    ChannelUnreachable {
        channel: String,
        url: String,
        detail: String,
    },
    #[error("{url} did not name a release for channel `{channel}`: {detail}")]
    ChannelAnswer {
        channel: String,
        url: String,
        detail: String,
    },
    #[error("cannot connect to {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error(
        "{url} took longer than {seconds} s (`k3s_artifact_download_timeout`); raise it or check the network"
    )]
    Timeout { url: String, seconds: u64 },
    #[error("{url} answered {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: String,
    },
    #[error("downloading {url}: {detail}")]
    Http { url: String, detail: String },
    #[error("{url} is larger than {limit} bytes, which is not what it should be")]
    TooLarge { url: String, limit: u64 },
    #[error("{url} has no line for `{asset}`")]
    ChecksumMissing { url: String, asset: String },
    #[error(
        "{url} does not match its checksum file: expected sha256 {expected}, got {actual}; \
         nothing was cached and no node was touched"
    )]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url} is not a shell script (it does not start with `#!`)")]
    NotAScript { url: String },
    #[error("the gateway's CA is not a usable PEM certificate: {0}")]
    BadCa(String),
    #[error("the gateway base `{0}` is not an http(s) URL with a host")]
    BadGatewayBase(String),
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
    #[error("the site's outbound proxy cannot be used: {0}")]
    OutboundProxy(String),
    #[error("cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn cache_error(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Cache {
        path: path.to_owned(),
        source,
    }
}

/// `k3s`, `k3s-arm64`, `k3s-armhf`: the binary's release asset for `arch`.
pub fn asset_name(arch: &str) -> Result<&'static str, ArtifactError> {
    match arch {
        "amd64" => Ok("k3s"),
        "arm64" => Ok("k3s-arm64"),
        "arm" => Ok("k3s-armhf"),
        other => Err(ArtifactError::UnknownArch(other.to_owned())),
    }
}

/// `v1.31.4+k3s1`, `v1.32.0-rc1+k3s2`: safe in a URL path and a file name.
fn is_release_name(v: &str) -> bool {
    v.starts_with('v')
        && v.contains("+k3s")
        && v.len() < 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b))
}

/// `<cache>/k3s/<version>/<arch>/index.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Index {
    version: String,
    arch: String,
    binary: Entry,
    checksums: Entry,
    install_script: Entry,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    sha256: String,
    url: String,
}

/// The version `channel` points at: `<channels>/<channel>` redirects to
/// `…/releases/tag/<version>` (`+` written `%2B`). Direct only: the gateway has no route
/// for it.
pub fn resolve_channel(
    http: &Http,
    channels: &str,
    channel: &str,
) -> Result<String, ArtifactError> {
    let url = format!("{}/{channel}", channels.trim_end_matches('/'));
    let answer = |detail: String| ArtifactError::ChannelAnswer {
        channel: channel.to_owned(),
        url: url.clone(),
        detail,
    };
    let response = match http.send(&http.no_redirect, &url) {
        Ok(r) => r,
        Err(ArtifactError::Unreachable { detail, .. }) => {
            return Err(ArtifactError::ChannelUnreachable {
                channel: channel.to_owned(),
                url,
                detail,
            });
        }
        Err(e) => return Err(e),
    };
    let status = response.status();
    if !status.is_redirection() {
        return Err(answer(format!("expected a redirect, got {status}")));
    }
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| answer("the redirect has no Location".to_owned()))?;
    let last = location
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let version = percent_decode(last);
    if is_release_name(&version) {
        Ok(version)
    } else {
        Err(answer(format!(
            "the redirect to `{location}` does not end in a release name"
        )))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(b) = escaped {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The sha256 the checksum file gives `asset` (`<hex>  <asset>` or `<hex> *<asset>`).
pub fn expected_sha256(checksums: &str, asset: &str) -> Option<String> {
    checksums.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let hex = words.next()?;
        let name = words.next()?.trim_start_matches('*');
        (name == asset
            && words.next().is_none()
            && hex.len() == 64
            && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
    })
}

/// Which file of a release.
#[derive(Clone, Copy)]
enum File<'a> {
    Release(&'a str),
    Install,
}

/// Direct first; after one direct connection failed, the gateway for the rest.
struct Router<'a> {
    sources: &'a Sources,
    http: &'a Http,
    version: &'a str,
    via_gateway: bool,
}

impl Router<'_> {
    fn direct_url(&self, file: File<'_>) -> String {
        match file {
            File::Release(name) => format!(
                "{}/{}/{name}",
                self.sources.direct_releases.trim_end_matches('/'),
                self.version
            ),
            File::Install => self.sources.direct_install.clone(),
        }
    }

    fn gateway_url(base: &str, version: &str, file: File<'_>) -> String {
        let base = base.trim_end_matches('/');
        match file {
            File::Release(name) => format!("{base}/k3s-releases/{version}/{name}"),
            File::Install => format!("{base}/k3s-install/"),
        }
    }

    fn fetch(
        &mut self,
        file: File<'_>,
        sink: Sink<'_>,
    ) -> Result<(String, Fetched), ArtifactError> {
        if !self.via_gateway {
            let url = self.direct_url(file);
            match self.http.fetch(&url, sink) {
                Err(ArtifactError::Unreachable { url, detail }) => {
                    if self.sources.gateway.is_none() {
                        return Err(ArtifactError::Unreachable { url, detail });
                    }
                    tracing::info!("{url} is unreachable ({detail}); using the gateway");
                    self.via_gateway = true;
                }
                other => return other.map(|f| (url, f)),
            }
        }
        let gateway = self
            .sources
            .gateway
            .as_ref()
            .expect("only switched to the gateway when there is one");
        let url = Self::gateway_url(&gateway.base, self.version, file);
        match self.http.fetch(&url, sink) {
            Err(ArtifactError::Status { url, status, .. }) => {
                let hint = match (file, status) {
                    (File::Install, 404) => {
                        "; the gateway's raw proxy `k3s-install` does not serve the upstream's root \
                         path, so the install script cannot come through the gateway"
                    }
                    (_, 404) => {
                        "; is `k3s-releases` among the gateway's package proxies, and the version right?"
                    }
                    _ => "",
                };
                Err(ArtifactError::Status {
                    url,
                    status,
                    hint: hint.to_owned(),
                })
            }
            other => other.map(|f| (url, f)),
        }
    }
}

/// Fetches (or finds in `cache_dir`) K3s `version` (or `channel`'s latest) for `arch`
/// (`amd64`, `arm64`, `arm`): the binary, verified against `sha256sum-<arch>.txt`, and the
/// install script. `timeout` bounds each download; `progress` draws bars on a terminal.
pub fn fetch_k3s(
    sources: &Sources,
    version: Option<&str>,
    channel: &str,
    arch: &str,
    cache_dir: &Path,
    timeout: Option<Duration>,
    progress: bool,
) -> Result<K3sArtifacts, ArtifactError> {
    let asset = asset_name(arch)?;
    let http = Http::new(
        sources.gateway.as_ref(),
        sources.outbound.as_ref(),
        timeout,
        progress,
    )?;
    let version = match version {
        Some(v) if is_release_name(v) => v.to_owned(),
        Some(v) => return Err(ArtifactError::BadVersion(v.to_owned())),
        None => resolve_channel(&http, &sources.channels, channel)?,
    };
    let cas = Cas::open(cache_dir)?;
    let index_dir = cache_dir.join("k3s").join(&version).join(arch);
    let index_path = index_dir.join("index.json");
    if let Some(found) = cached(&cas, &index_path, &version, arch, asset) {
        return Ok(found);
    }

    let mut router = Router {
        sources,
        http: &http,
        version: &version,
        via_gateway: false,
    };
    let checksum_name = format!("sha256sum-{arch}.txt");
    let (checksums_url, checksums) = router.fetch(
        File::Release(&checksum_name),
        Sink::Memory {
            limit: SMALL_FILE_LIMIT,
        },
    )?;
    let expected =
        expected_sha256(&String::from_utf8_lossy(checksums.bytes()), asset).ok_or_else(|| {
            ArtifactError::ChecksumMissing {
                url: checksums_url.clone(),
                asset: asset.to_owned(),
            }
        })?;
    let (binary_url, binary) = router.fetch(File::Release(asset), Sink::Cache(&cas))?;
    if binary.sha256 != expected {
        // Dropping `binary` removes its temporary file.
        return Err(ArtifactError::ChecksumMismatch {
            url: binary_url,
            expected,
            actual: binary.sha256,
        });
    }
    let (script_url, script) = router.fetch(
        File::Install,
        Sink::Memory {
            limit: SMALL_FILE_LIMIT,
        },
    )?;
    if !script.bytes().starts_with(b"#!") {
        return Err(ArtifactError::NotAScript { url: script_url });
    }
    let route = if router.via_gateway {
        Route::Gateway
    } else {
        Route::Direct
    };

    let artifact = |fetched: Fetched, url: String| -> Result<Artifact, ArtifactError> {
        let sha256 = fetched.sha256.clone();
        let path = cas.commit(fetched)?;
        Ok(Artifact { path, sha256, url })
    };
    let binary = artifact(binary, binary_url)?;
    let checksums = artifact(checksums, checksums_url)?;
    let install_script = artifact(script, script_url)?;
    let index = Index {
        version: version.clone(),
        arch: arch.to_owned(),
        binary: Entry {
            sha256: binary.sha256.clone(),
            url: binary.url.clone(),
        },
        checksums: Entry {
            sha256: checksums.sha256.clone(),
            url: checksums.url.clone(),
        },
        install_script: Entry {
            sha256: install_script.sha256.clone(),
            url: install_script.url.clone(),
        },
    };
    std::fs::create_dir_all(&index_dir).map_err(cache_error(&index_dir))?;
    let mut file = tempfile::Builder::new()
        .prefix(".index-")
        .tempfile_in(&index_dir)
        .map_err(cache_error(&index_dir))?;
    let json = serde_json::to_vec_pretty(&index).expect("the index serializes");
    file.write_all(&json).map_err(cache_error(&index_path))?;
    persist(file, &index_path)?;
    Ok(K3sArtifacts {
        version,
        arch: arch.to_owned(),
        route,
        binary,
        checksums,
        install_script,
    })
}

/// The release from the cache, every blob hashed again and the binary checked against the
/// cached checksum file; anything missing or changed means downloading again.
fn cached(
    cas: &Cas,
    index_path: &Path,
    version: &str,
    arch: &str,
    asset: &str,
) -> Option<K3sArtifacts> {
    let bytes = std::fs::read(index_path).ok()?;
    let Ok(index) = serde_json::from_slice::<Index>(&bytes) else {
        tracing::warn!(
            "{} is not a release index: downloading again",
            index_path.display()
        );
        return None;
    };
    if index.version != version || index.arch != arch {
        return None;
    }
    let artifact = |entry: &Entry| {
        cas.verified(&entry.sha256).map(|path| Artifact {
            path,
            sha256: entry.sha256.clone(),
            url: entry.url.clone(),
        })
    };
    let binary = artifact(&index.binary)?;
    let checksums = artifact(&index.checksums)?;
    let install_script = artifact(&index.install_script)?;
    let text = std::fs::read_to_string(&checksums.path).ok()?;
    if expected_sha256(&text, asset).as_deref() != Some(binary.sha256.as_str()) {
        return None;
    }
    Some(K3sArtifacts {
        version: version.to_owned(),
        arch: arch.to_owned(),
        route: Route::Cache,
        binary,
        checksums,
        install_script,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_lines() {
        let text = format!(
            "{a}  k3s\n{b}  k3s-airgap-images-amd64.tar\n{c} *k3s-arm64\nbogus\n",
            a = "a".repeat(64),
            b = "b".repeat(64),
            c = "C".repeat(64)
        );
        assert_eq!(expected_sha256(&text, "k3s"), Some("a".repeat(64)));
        assert_eq!(expected_sha256(&text, "k3s-arm64"), Some("c".repeat(64)));
        assert_eq!(expected_sha256(&text, "k3s-armhf"), None);
        assert_eq!(expected_sha256("abc  k3s\n", "k3s"), None);
    }

    #[test]
    fn release_names() {
        assert!(is_release_name("v1.31.4+k3s1"));
        assert!(is_release_name("v1.32.0-rc1+k3s2"));
        assert!(!is_release_name("v1.31.4+k3s1/../x"));
        assert!(!is_release_name("1.31.4"));
        assert_eq!(percent_decode("v1.31.4%2Bk3s1"), "v1.31.4+k3s1");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn assets() {
        assert_eq!(asset_name("amd64").unwrap(), "k3s");
        assert_eq!(asset_name("arm64").unwrap(), "k3s-arm64");
        assert_eq!(asset_name("arm").unwrap(), "k3s-armhf");
        assert!(matches!(
            asset_name("s390x"),
            Err(ArtifactError::UnknownArch(_))
        ));
    }
}
