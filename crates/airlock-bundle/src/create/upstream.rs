//! The upstream requests `create` makes, through `airlock_upstream::Upstream` (one client
//! per proxy, with its credentials, CA file, token auth and the site's outbound proxy), and
//! a blocking reader over a response body so the bundle writer can pull bytes as they come.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Mutex;

use airlock_config::{Config, ProxyConfig};
use airlock_types::{Digest, media};
use airlock_upstream::{SiteProxy, Upstream, accept_header, error_chain, read_body};
use http::{HeaderMap, Method, header};
use tokio::runtime::Handle;

use super::CreateError;

/// Largest manifest accepted (as the registry proxy allows).
const MAX_MANIFEST: usize = 4 << 20;

pub struct Clients<'a> {
    handle: &'a Handle,
    config: &'a Config,
    site_proxy: Option<SiteProxy>,
    upstreams: Mutex<BTreeMap<String, Upstream>>,
}

impl<'a> Clients<'a> {
    pub fn new(handle: &'a Handle, config: &'a Config) -> Result<Self, CreateError> {
        let site_proxy = config
            .upstream_proxy
            .as_ref()
            .map(SiteProxy::load)
            .transpose()
            .map_err(|e| CreateError::Upstream {
                what: "[upstream_proxy]".to_owned(),
                message: e.to_string(),
            })?;
        Ok(Self {
            handle,
            config,
            site_proxy,
            upstreams: Mutex::default(),
        })
    }

    pub fn config(&self) -> &Config {
        self.config
    }

    fn upstream(&self, proxy: &ProxyConfig) -> Result<Upstream, CreateError> {
        let mut upstreams = self.upstreams.lock().expect("not poisoned");
        if let Some(upstream) = upstreams.get(&proxy.name) {
            return Ok(upstream.clone());
        }
        let upstream =
            Upstream::new(proxy, self.site_proxy.as_ref()).map_err(|e| CreateError::Upstream {
                what: format!("proxy {}", proxy.name),
                message: e.to_string(),
            })?;
        upstreams.insert(proxy.name.clone(), upstream.clone());
        Ok(upstream)
    }

    /// A GET whose response is anything but a success is an error naming its status.
    fn get(
        &self,
        proxy: &ProxyConfig,
        path: &str,
        headers: HeaderMap,
        scope: &str,
        what: &str,
    ) -> Result<reqwest::Response, CreateError> {
        let response = self.send(proxy, path, headers, scope, what)?;
        check_status(proxy, response, what)
    }

    /// A GET, whatever its status.
    fn send(
        &self,
        proxy: &ProxyConfig,
        path: &str,
        headers: HeaderMap,
        scope: &str,
        what: &str,
    ) -> Result<reqwest::Response, CreateError> {
        let upstream = self.upstream(proxy)?;
        let fail = |message: String| CreateError::Upstream {
            what: what.to_owned(),
            message,
        };
        self.handle
            .block_on(upstream.send(Method::GET, path, headers, scope))
            .map_err(|e| {
                fail(format!(
                    "upstream of proxy {}: {}",
                    proxy.name,
                    error_chain(&e)
                ))
            })
    }

    /// A manifest's bytes and media type.
    pub fn manifest(
        &self,
        proxy: &ProxyConfig,
        repo: &str,
        reference: &str,
        what: &str,
    ) -> Result<(Vec<u8>, String), CreateError> {
        let response = self.send_manifest(proxy, repo, reference, what)?;
        let response = check_status(proxy, response, what)?;
        self.read_manifest(response, what)
    }

    /// [`Self::manifest`], or `None` when the registry answers 404 (no such tag).
    pub fn manifest_if_present(
        &self,
        proxy: &ProxyConfig,
        repo: &str,
        reference: &str,
        what: &str,
    ) -> Result<Option<(Vec<u8>, String)>, CreateError> {
        let response = self.send_manifest(proxy, repo, reference, what)?;
        if response.status() == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = check_status(proxy, response, what)?;
        self.read_manifest(response, what).map(Some)
    }

    fn send_manifest(
        &self,
        proxy: &ProxyConfig,
        repo: &str,
        reference: &str,
        what: &str,
    ) -> Result<reqwest::Response, CreateError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, accept_header(media::ALL_MANIFESTS));
        let scope = format!("repository:{repo}:pull");
        self.send(
            proxy,
            &format!("v2/{repo}/manifests/{reference}"),
            headers,
            &scope,
            what,
        )
    }

    fn read_manifest(
        &self,
        response: reqwest::Response,
        what: &str,
    ) -> Result<(Vec<u8>, String), CreateError> {
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned());
        let bytes = self
            .handle
            .block_on(read_body(response, MAX_MANIFEST))
            .map_err(|e| CreateError::Upstream {
                what: what.to_owned(),
                message: e.to_string(),
            })?;
        let declared = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_owned));
        let media_type = declared
            .or(content_type)
            .filter(|t| media::ALL_MANIFESTS.contains(&t.as_str()))
            .ok_or_else(|| CreateError::BadManifest {
                what: what.to_owned(),
                message: "neither its mediaType nor its Content-Type is a manifest type".to_owned(),
            })?;
        Ok((bytes, media_type))
    }

    /// A blob's body, to be read as it arrives.
    pub fn blob(
        &self,
        proxy: &ProxyConfig,
        repo: &str,
        digest: &Digest,
        what: &str,
    ) -> Result<Body<'a>, CreateError> {
        let scope = format!("repository:{repo}:pull");
        let what = format!("blob {digest} of {what}");
        let response = self.get(
            proxy,
            &format!("v2/{repo}/blobs/{digest}"),
            HeaderMap::new(),
            &scope,
            &what,
        )?;
        Ok(Body::new(self.handle, response, what))
    }

    /// A file's size (from `Content-Length`, which the tar header needs before the bytes),
    /// media type and body.
    pub fn file(
        &self,
        proxy: &ProxyConfig,
        path: &str,
        what: &str,
    ) -> Result<(u64, String, Body<'a>), CreateError> {
        let response = self.get(proxy, path, HeaderMap::new(), "", what)?;
        let size = response
            .content_length()
            .ok_or_else(|| CreateError::Upstream {
                what: what.to_owned(),
                message:
                    "the upstream sent no Content-Length, which a bundle needs before the bytes"
                        .to_owned(),
            })?;
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        Ok((
            size,
            media_type,
            Body::new(self.handle, response, what.to_owned()),
        ))
    }
}

fn check_status(
    proxy: &ProxyConfig,
    response: reqwest::Response,
    what: &str,
) -> Result<reqwest::Response, CreateError> {
    if response.status().is_success() {
        return Ok(response);
    }
    Err(CreateError::Upstream {
        what: what.to_owned(),
        message: format!(
            "upstream of proxy {} answered {}",
            proxy.name,
            response.status()
        ),
    })
}

/// A response body read in blocking style, chunk by chunk as the network delivers it.
pub struct Body<'a> {
    handle: &'a Handle,
    response: reqwest::Response,
    chunk: bytes::Bytes,
    what: String,
}

impl<'a> Body<'a> {
    fn new(handle: &'a Handle, response: reqwest::Response, what: String) -> Self {
        Self {
            handle,
            response,
            chunk: bytes::Bytes::new(),
            what,
        }
    }
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.response.chunk()) {
                Ok(Some(chunk)) => self.chunk = chunk,
                Ok(None) => return Ok(0),
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "{}: the connection broke mid-body: {}",
                        self.what,
                        error_chain(&e.without_url())
                    )));
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}
