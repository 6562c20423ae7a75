//! Warming a gateway with exactly what a spec's package sections name, by asking it as
//! the package clients would: [`warm`] requests through a running gateway's `pypi`, `yum`
//! and `helm` proxies (mounted at `/repository/<proxy name>/`), so the gateway fetches,
//! verifies and caches each index document and package file exactly as if pip, dnf or
//! helm had pulled it. `bundle create` runs a scratch gateway on loopback for this and
//! then exports what its store holds.
//!
//! - `python`: each pin's PEP 691 JSON page and its HTML page (pip may ask for either),
//!   then every file of the page whose sha256 the pin names (and its PEP 658 metadata when
//!   the page offers it), hashed again here.
//! - `rpms`: `repodata/repomd.xml` and every file it lists (primary, filelists, other, …,
//!   checked against repomd's sha256), the dependency closure resolved with
//!   [`airlock_deploy::rpms::resolve_closure`] through the gateway, and every package of
//!   it, checked against primary's sha256.
//! - `charts`: the proxy's `index.yaml`, then the chart at the URL the gateway rewrote it
//!   to, checked against the index's digest.
//! - `k3s`: through the raw proxies `airlock deploy` uses, each architecture's checksum
//!   file and binary (checked against it), the install script and the release's image
//!   list, whose images [`Warmed::images`] returns for `create` to carry.
//!
//! Only URLs on the gateway, below the proxy's path, are ever requested: a page or index
//! naming anything else is an error. Every request has a timeout, every document a size
//! bound, and every loop runs over the spec or the documents fetched.

mod charts;
mod k3s;
mod python;
mod rpms;

use std::fmt::Write as _;
use std::time::Duration;

use airlock_config::{Config, Format, ProxyConfig};
use airlock_types::Digest;
use sha2::Digest as _;
use url::Url;

use super::spec::{ImageSpec, Spec};

/// How long connecting to the gateway may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the gateway may stay silent mid-response. It answers a `repomd.xml` only once
/// every file it lists is verified in its store, which for a large repository means
/// downloading all of its metadata first.
const READ_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a whole document request may take.
const DOCUMENT_TIMEOUT: Duration = Duration::from_secs(900);

/// One response read through the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub proxy: String,
    /// Below `/repository/<proxy>/` (`simple/requests/`, `repodata/repomd.xml`, …).
    pub path: String,
    pub bytes: u64,
    pub sha256: Digest,
}

impl Fetched {
    /// The last segment of the path (a file name; empty for a page ending in `/`).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }
}

/// What one section warmed: index documents (pages, metadata) and package files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub documents: Vec<Fetched>,
    pub files: Vec<Fetched>,
}

impl Section {
    /// Bytes of every document and file.
    pub fn bytes(&self) -> u64 {
        self.documents
            .iter()
            .chain(&self.files)
            .map(|f| f.bytes)
            .sum()
    }
}

/// What [`warm`] fetched, per section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Warmed {
    pub python: Section,
    pub rpms: Section,
    pub charts: Section,
    /// The K3s release: checksum files and the image list (documents), binaries and the
    /// install script (files).
    pub k3s: Section,
    /// Images the warmed sections need besides the spec's own (the K3s release's system
    /// images, for its architectures): `create` carries them like spec images.
    pub images: Vec<ImageSpec>,
    /// RPM requirements no repository of the spec provides (`/bin/sh`, …), with the
    /// package that needs them: the isolated nodes' own repositories must.
    pub rpms_left_to_os: Vec<String>,
}

/// Why warming stopped.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("{section}: {message}")]
    NoProxy {
        section: &'static str,
        message: String,
    },
    #[error("{url}: {message}")]
    Request { url: String, message: String },
    #[error("{url}: the gateway answered {status}{detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url}: {message}")]
    Malformed { url: String, message: String },
    #[error("{url}: larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: the bytes hash to sha256:{actual}, not the expected sha256:{expected}")]
    Mismatch {
        url: String,
        expected: String,
        actual: String,
    },
    /// `pin` is `NAME==VERSION`; `detail` says where it is written and what the page has.
    #[error("no file of {pin} has the pinned hash {detail}")]
    NoPinnedFile { pin: String, detail: String },
    #[error(
        "chart {name} version {version} is not in the index of helm proxy `{proxy}` ({available})"
    )]
    ChartAbsent {
        proxy: String,
        name: String,
        version: String,
        available: String,
    },
    #[error("no package named {names} in the repositories of yum proxy `{proxy}` ({repos})")]
    RpmAbsent {
        proxy: String,
        names: String,
        repos: String,
    },
    #[error("RPMs through yum proxy `{proxy}`: {message}")]
    Rpm { proxy: String, message: String },
    #[error("K3s {version}: {message}")]
    K3s { version: String, message: String },
}

/// Requests everything `spec`'s `python`, `rpms`, `charts` and `k3s` sections name through the
/// gateway at `gateway` (its base URL; plain HTTP on loopback), whose proxies are
/// `config`'s. Images and files are not warmed here.
pub async fn warm(gateway: &Url, config: &Config, spec: &Spec) -> Result<Warmed, WarmError> {
    let client = Client::new(gateway)?;
    let mut warmed = Warmed::default();
    for section in &spec.python {
        let proxy = proxy(config, section.proxy.as_deref(), Format::Pypi, "python")?;
        python::warm(&client, &proxy.name, section, &mut warmed.python).await?;
    }
    for section in &spec.rpms {
        let proxy = proxy(config, section.proxy.as_deref(), Format::Yum, "rpms")?;
        rpms::warm(&client, &proxy.name, section, &mut warmed).await?;
    }
    for chart in &spec.charts {
        proxy(config, Some(&chart.proxy), Format::Helm, "charts")?;
    }
    charts::warm(&client, &spec.charts, &mut warmed.charts).await?;
    if let Some(section) = &spec.k3s {
        proxy(config, Some(&section.proxy), Format::Raw, "k3s")?;
        proxy(config, Some(&section.install_proxy), Format::Raw, "k3s")?;
        k3s::warm(&client, section, &mut warmed).await?;
    }
    Ok(warmed)
}

/// The proxy named `name` (which must be of `format`), else the first of `format`.
fn proxy<'a>(
    config: &'a Config,
    name: Option<&str>,
    format: Format,
    section: &'static str,
) -> Result<&'a ProxyConfig, WarmError> {
    let fail = |message: String| WarmError::NoProxy { section, message };
    let kind = format.as_str();
    match name {
        Some(name) => {
            let proxy = config
                .proxies
                .iter()
                .find(|p| p.name == name)
                .ok_or_else(|| {
                    fail(format!(
                        "the configuration has no proxy named `{name}` (add a [[proxy]] with format = \"{kind}\", or pass the --config that has one)"
                    ))
                })?;
            if proxy.format != format {
                return Err(fail(format!(
                    "proxy `{name}` is a {} proxy, not a {kind} one",
                    proxy.format.as_str()
                )));
            }
            Ok(proxy)
        }
        None => config
            .proxies
            .iter()
            .find(|p| p.format == format)
            .ok_or_else(|| {
                fail(format!(
                    "the configuration has no {kind} proxy (add a [[proxy]] with format = \"{kind}\", or name one with `proxy:`)"
                ))
            }),
    }
}

/// HTTP to the gateway, confined to its proxies' paths.
struct Client {
    http: reqwest::Client,
    /// The gateway's base URL, ending in `/`.
    base: Url,
}

impl Client {
    fn new(gateway: &Url) -> Result<Self, WarmError> {
        let mut base = gateway.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        base.set_query(None);
        base.set_fragment(None);
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("airlock-bundle/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WarmError::Request {
                url: base.to_string(),
                message: e.to_string(),
            })?;
        Ok(Self { http, base })
    }

    /// `/repository/<proxy>/` on the gateway.
    fn proxy_root(&self, proxy: &str) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http URL has path segments")
            .pop_if_empty()
            .extend(["repository", proxy, ""]);
        url
    }

    /// `path` (relative) below the proxy's root.
    fn proxy_url(&self, proxy: &str, path: &str) -> Result<Url, WarmError> {
        let root = self.proxy_root(proxy);
        let url = root.join(path).map_err(|e| WarmError::Malformed {
            url: root.to_string(),
            message: format!("{path:?} does not make a URL: {e}"),
        })?;
        self.below(proxy, url)
    }

    /// `url` when it is on the gateway below `proxy`'s root; an error otherwise (a page
    /// naming another host is never followed).
    fn below(&self, proxy: &str, mut url: Url) -> Result<Url, WarmError> {
        url.set_fragment(None);
        let root = self.proxy_root(proxy);
        if url.origin() != root.origin() || !url.path().starts_with(root.path()) {
            return Err(WarmError::Malformed {
                url: url.to_string(),
                message: format!("not below {root}: airlock fetches only through the proxy"),
            });
        }
        Ok(url)
    }

    /// What [`Fetched::path`] says for `url` below `proxy`.
    fn fetched(&self, proxy: &str, url: &Url, bytes: u64, sha256: Digest) -> Fetched {
        let root = self.proxy_root(proxy);
        let path = url.path().strip_prefix(root.path()).unwrap_or(url.path());
        Fetched {
            proxy: proxy.to_owned(),
            path: path.to_owned(),
            bytes,
            sha256,
        }
    }

    async fn get(
        &self,
        url: &Url,
        accept: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, WarmError> {
        let mut request = self.http.get(url.clone());
        if let Some(accept) = accept {
            request = request.header(http::header::ACCEPT, accept);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|e| transport(url, &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        // The gateway says why in a short body; a bounded read of it goes in the error.
        let detail = match tokio::time::timeout(Duration::from_secs(10), response.bytes()).await {
            Ok(Ok(body)) if !body.is_empty() => {
                let text = String::from_utf8_lossy(&body[..body.len().min(500)]);
                format!(": {}", text.trim())
            }
            _ => String::new(),
        };
        Err(WarmError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            detail,
        })
    }

    /// A document of at most `limit` bytes, whole.
    async fn document(
        &self,
        proxy: &str,
        url: &Url,
        accept: Option<&str>,
        limit: u64,
    ) -> Result<(Vec<u8>, Fetched), WarmError> {
        let mut response = self.get(url, accept, Some(DOCUMENT_TIMEOUT)).await?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(url, &e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(WarmError::TooLarge {
                    url: url.to_string(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        let fetched = self.fetched(proxy, url, body.len() as u64, Digest::of(&body));
        Ok((body, fetched))
    }

    /// A file, hashed as it streams (its bytes are kept by the gateway, not here), checked
    /// against `expected` when given.
    async fn file(
        &self,
        proxy: &str,
        url: &Url,
        expected: Option<&Digest>,
    ) -> Result<Fetched, WarmError> {
        let mut response = self.get(url, None, None).await?;
        let mut hasher = sha2::Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(url, &e))? {
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
        }
        let actual = Digest::from_sha256(hasher.finalize().into());
        if let Some(expected) = expected.filter(|e| **e != actual) {
            return Err(WarmError::Mismatch {
                url: url.to_string(),
                expected: expected.hex().to_owned(),
                actual: actual.hex().to_owned(),
            });
        }
        Ok(self.fetched(proxy, url, bytes, actual))
    }
}

fn transport(url: &Url, error: &reqwest::Error) -> WarmError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_timeout() {
        message.push_str(" (timed out)");
    }
    WarmError::Request {
        url: url.to_string(),
        message,
    }
}

/// Items of a list, at most `limit` of them, for messages.
fn listed(items: &[String], limit: usize) -> String {
    let mut text = items
        .iter()
        .take(limit)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > limit {
        let _ = write!(text, ", … ({} in all)", items.len());
    }
    text
}
