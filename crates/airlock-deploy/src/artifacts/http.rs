//! HTTP for the control node: direct upstreams (through the site's outbound proxy when it
//! has one, never through one named in the environment), or the gateway with its name
//! pinned and its CA trusted; downloads streamed into the cache or memory, bounded and
//! hashed.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use sha2::{Digest, Sha256};

use airlock_site::site::Site;
use airlock_upstream::SiteProxy;

use super::{ArtifactError, Cas, DIRECT_CONNECT_TIMEOUT, GatewayAccess, cache_error};

/// The site's outbound proxy (`https_proxy`, `no_proxy`, `airlock_upstream_proxy_ca_file`)
/// for the control node's own downloads, checked as the gateway checks `[upstream_proxy]`.
pub fn outbound_proxy(site: &Site) -> Result<Option<SiteProxy>, ArtifactError> {
    let Some(proxy) = &site.upstream_proxy else {
        return Ok(None);
    };
    let settings = proxy
        .table()
        .resolve()
        .map_err(|e| ArtifactError::OutboundProxy(e.to_string()))?;
    let password = proxy.password.as_ref().map(|p| p.expose().to_owned());
    SiteProxy::with_password(&settings, password)
        .map(Some)
        .map_err(|e| ArtifactError::OutboundProxy(e.to_string()))
}

/// HTTP for the control node: direct upstreams and the gateway (its host name pinned to
/// [`GatewayAccess::resolve`], its CA trusted), each request bounded by `timeout`.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client,
    pub(crate) no_redirect: Client,
    timeout: Option<Duration>,
    progress: bool,
}

impl Http {
    /// Direct downloads go through `outbound` unless its `no_proxy` says otherwise; the
    /// gateway is always reached directly. `progress` draws bars on stderr when it is a
    /// terminal.
    pub fn new(
        gateway: Option<&GatewayAccess>,
        outbound: Option<&SiteProxy>,
        timeout: Option<Duration>,
        progress: bool,
    ) -> Result<Self, ArtifactError> {
        let gateway_host = gateway
            .and_then(|g| reqwest::Url::parse(&g.base).ok())
            .and_then(|url| url.host_str().map(str::to_owned));
        let build = |redirects: reqwest::redirect::Policy| {
            let mut builder = Client::builder()
                .connect_timeout(DIRECT_CONNECT_TIMEOUT)
                .timeout(None)
                .redirect(redirects)
                .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
                .no_proxy();
            if let Some(outbound) = outbound {
                // Proxies may close a connection right after a response (tinyproxy does), and
                // a pooled one can then fail on reuse; the control node makes a few large
                // downloads, so each gets a connection of its own.
                builder = builder
                    .proxy(outbound.proxy_bypassing(gateway_host.iter().cloned().collect()))
                    .pool_max_idle_per_host(0);
                for cert in outbound.root_certificates() {
                    builder = builder.add_root_certificate(cert.clone());
                }
            }
            if let Some(gateway) = gateway {
                if let Some(addr) = gateway.resolve {
                    let url = reqwest::Url::parse(&gateway.base)
                        .map_err(|_| ArtifactError::BadGatewayBase(gateway.base.clone()))?;
                    let host = url
                        .host_str()
                        .ok_or_else(|| ArtifactError::BadGatewayBase(gateway.base.clone()))?;
                    builder = builder.resolve(host, addr);
                }
                if let Some(pem) = &gateway.ca_pem {
                    let certs = reqwest::Certificate::from_pem_bundle(pem)
                        .map_err(|e| ArtifactError::BadCa(e.to_string()))?;
                    if certs.is_empty() {
                        return Err(ArtifactError::BadCa("no certificate in it".to_owned()));
                    }
                    for cert in certs {
                        builder = builder.add_root_certificate(cert);
                    }
                }
            }
            builder
                .build()
                .map_err(|e| ArtifactError::Client(e.to_string()))
        };
        Ok(Self {
            client: build(reqwest::redirect::Policy::limited(10))?,
            no_redirect: build(reqwest::redirect::Policy::none())?,
            timeout,
            progress,
        })
    }

    pub(crate) fn error(&self, url: &str, e: &reqwest::Error) -> ArtifactError {
        if e.is_connect() {
            ArtifactError::Unreachable {
                url: url.to_owned(),
                detail: chain(e),
            }
        } else if e.is_timeout() {
            ArtifactError::Timeout {
                url: url.to_owned(),
                seconds: self.timeout.map_or(0, |t| t.as_secs()),
            }
        } else {
            ArtifactError::Http {
                url: url.to_owned(),
                detail: chain(e),
            }
        }
    }

    pub(crate) fn send(&self, client: &Client, url: &str) -> Result<Response, ArtifactError> {
        let mut request = client.get(url);
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        request.send().map_err(|e| self.error(url, &e))
    }

    /// GETs `url` into `sink`, hashing as it streams; an error status is an error.
    pub(crate) fn fetch(&self, url: &str, sink: Sink<'_>) -> Result<Fetched, ArtifactError> {
        let response = self.send(&self.client, url)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ArtifactError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
                hint: String::new(),
            });
        }
        let length = response.content_length();
        let bar = self.bar(url, length);
        let mut reader: Box<dyn Read> = match &bar {
            Some(bar) => Box::new(bar.wrap_read(response)),
            None => Box::new(response),
        };
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut body = match sink {
            Sink::Memory { limit } => Body::Memory(Vec::new(), limit),
            Sink::Cache(cas) => Body::File(cas.temp()?, 0),
        };
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(url, &e)),
            };
            let chunk = &buffer[..n];
            hasher.update(chunk);
            match &mut body {
                Body::Memory(bytes, limit) => {
                    bytes.extend_from_slice(chunk);
                    if bytes.len() as u64 > *limit {
                        return Err(ArtifactError::TooLarge {
                            url: url.to_owned(),
                            limit: *limit,
                        });
                    }
                }
                Body::File(file, written) => {
                    file.write_all(chunk).map_err(cache_error(file.path()))?;
                    *written += n as u64;
                }
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        Ok(Fetched {
            sha256: hex::encode(hasher.finalize()),
            body,
        })
    }

    pub(crate) fn read_error(&self, url: &str, e: &std::io::Error) -> ArtifactError {
        let inner = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<reqwest::Error>());
        match inner {
            Some(re) => self.error(url, re),
            None if e.kind() == std::io::ErrorKind::TimedOut => ArtifactError::Timeout {
                url: url.to_owned(),
                seconds: self.timeout.map_or(0, |t| t.as_secs()),
            },
            None => ArtifactError::Http {
                url: url.to_owned(),
                detail: e.to_string(),
            },
        }
    }

    pub(crate) fn bar(&self, url: &str, length: Option<u64>) -> Option<indicatif::ProgressBar> {
        if !self.progress || !std::io::stderr().is_terminal() {
            return None;
        }
        let name = url.rsplit('/').find(|s| !s.is_empty()).unwrap_or(url);
        let bar = match length {
            Some(length) => indicatif::ProgressBar::new(length).with_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => indicatif::ProgressBar::new_spinner().with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg:24} {bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            ),
        };
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_message(name.to_owned());
        Some(bar)
    }
}

/// An error and its sources, on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Where a download goes.
#[derive(Clone, Copy)]
pub(crate) enum Sink<'a> {
    /// Into memory, refusing more than `limit` bytes.
    Memory { limit: u64 },
    /// Into a temporary file of the cache.
    Cache(&'a Cas),
}

pub(crate) enum Body {
    Memory(Vec<u8>, u64),
    File(tempfile::NamedTempFile, u64),
}

pub(crate) struct Fetched {
    pub sha256: String,
    pub body: Body,
}

impl Fetched {
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.body {
            Body::Memory(bytes, _) => bytes,
            Body::File(..) => &[],
        }
    }
}
