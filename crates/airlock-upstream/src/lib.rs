//! Outbound HTTP to upstream registries: TLS roots and CA files, the site's own outbound
//! proxy (`[upstream_proxy]`, never the environment's), OCI token auth, redirects, redacted
//! URLs.
//!
//! One [`Upstream`] per configured proxy. It answers with the upstream's response; what a
//! status means for the client is decided by the protocol crates.

mod audit;
mod auth;
mod challenge;
pub mod fetch;
mod redact;
mod replicas;
mod site_proxy;
pub mod target;

use std::sync::Arc;

use airlock_config::ProxyConfig;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use tracing::Instrument as _;

pub use challenge::{Challenge, parse_challenges};
pub use redact::RedactedUrl;
pub use site_proxy::{SiteProxy, SiteProxyError, outbound};
pub use target::Target;

/// Why an upstream could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {url} is unreachable: {reason}")]
    Unreachable { url: RedactedUrl, reason: String },
    #[error("upstream {url} refused the credentials for {scope}: token endpoint answered {status}")]
    TokenRefused {
        url: RedactedUrl,
        scope: String,
        status: StatusCode,
    },
    #[error("upstream {url} sent an unusable auth challenge: {reason}")]
    BadChallenge { url: RedactedUrl, reason: String },
    #[error("cannot set up the client for proxy {proxy}: {reason}")]
    Setup { proxy: String, reason: String },
    /// A path that would leave the upstream (see [`target`]); never requested.
    #[error("path {path:?} is refused: {}", .reason.reason)]
    PathRefused {
        path: String,
        reason: target::Refused,
    },
    /// A URL an index listed that airlock will not fetch (see [`target`]).
    #[error("URL {url} is refused: {}", .reason.reason)]
    UrlRefused {
        url: String,
        reason: target::Refused,
    },
}

/// An HTTP client bound to one upstream registry, with its credentials and token cache.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    proxy: String,
    base: url::Url,
    client: reqwest::Client,
    auth: auth::Auth,
    site_proxy: Option<SiteProxy>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Upstream({} → {})",
            self.inner.proxy,
            RedactedUrl::new(&self.inner.base)
        )
    }
}

impl Upstream {
    /// Builds the client for one `[[proxy]]`: reads `ca_file` and `password_file` now, so a
    /// missing file is a startup error rather than a failed pull at 3 a.m. Requests go
    /// through `site_proxy` (the `[upstream_proxy]`) when set, and never through a proxy
    /// named in the environment.
    pub fn new(
        config: &ProxyConfig,
        site_proxy: Option<&SiteProxy>,
    ) -> Result<Self, UpstreamError> {
        let setup = |reason: String| UpstreamError::Setup {
            proxy: config.name.clone(),
            reason,
        };
        let builder = reqwest::Client::builder()
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout.0)
            // No total timeout: a large blob may take longer than any bound; silence may not.
            .read_timeout(config.read_timeout.0)
            .redirect(redirect_policy());
        let mut builder = outbound(builder, site_proxy);
        if let Some(ca_file) = &config.ca_file {
            let pem = std::fs::read(ca_file)
                .map_err(|e| setup(format!("reading ca_file {}: {e}", ca_file.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| setup(format!("ca_file {} is not PEM: {e}", ca_file.display())))?;
            if certs.is_empty() {
                return Err(setup(format!(
                    "ca_file {} holds no certificate",
                    ca_file.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| setup(e.to_string()))?;
        let credentials = match (&config.username, &config.password_file) {
            (Some(user), Some(file)) => {
                let secret = std::fs::read_to_string(file)
                    .map_err(|e| setup(format!("reading password_file {}: {e}", file.display())))?;
                Some(auth::Credentials {
                    username: user.clone(),
                    password: secret.trim_end().to_owned(),
                })
            }
            (Some(user), None) => Some(auth::Credentials {
                username: user.clone(),
                password: String::new(),
            }),
            _ => None,
        };
        let mut base = config.upstream.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                proxy: config.name.clone(),
                base,
                client: client.clone(),
                auth: auth::Auth::new(config.name.clone(), client, credentials),
                site_proxy: site_proxy.cloned(),
            }),
        })
    }

    /// The proxy name this upstream belongs to.
    pub fn proxy(&self) -> &str {
        &self.inner.proxy
    }

    /// The upstream base URL (a directory: its path ends in `/`).
    pub fn base(&self) -> &url::Url {
        &self.inner.base
    }

    /// The URL `target` stands for, or why it is refused (see [`target`]).
    pub fn url(&self, target: &Target) -> Result<url::Url, UpstreamError> {
        match target {
            Target::Path(path) => {
                target::join(&self.inner.base, path).map_err(|reason| UpstreamError::PathRefused {
                    path: path.clone(),
                    reason,
                })
            }
            Target::Url(text) => {
                target::listed(&self.inner.base, text).map_err(|reason| UpstreamError::UrlRefused {
                    url: text.clone(),
                    reason,
                })
            }
        }
    }

    /// Sends a request for `target` with the given headers, answering an auth challenge
    /// once.
    ///
    /// `scope` is the OCI token scope the request needs (`repository:<name>:pull`).
    ///
    /// It runs in an `upstream` span (a child of the client request's span) that records the
    /// proxy, method and redacted URL, then the status, the announced length (`bytes`) and
    /// the time to the response head (`ms`).
    pub async fn send(
        &self,
        method: Method,
        target: impl Into<Target>,
        headers: HeaderMap,
        scope: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = self.url(&target.into())?;
        let span = tracing::info_span!(
            target: "airlock::upstream",
            "upstream",
            upstream = self.inner.proxy.as_str(),
            %method,
            url = %RedactedUrl::new(&url),
            status = tracing::field::Empty,
            bytes = tracing::field::Empty,
            ms = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = self
            .exchange(method, url, headers, scope)
            .instrument(span.clone())
            .await;
        if let Ok(response) = &result {
            span.record("status", response.status().as_u16());
            if let Some(length) = response.content_length() {
                span.record("bytes", length);
            }
        }
        span.record("ms", started.elapsed().as_millis() as u64);
        result
    }

    /// One request to `url`, answering an auth challenge once (see [`Upstream::send`]).
    async fn exchange(
        &self,
        method: Method,
        url: url::Url,
        headers: HeaderMap,
        scope: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        // Credentials and tokens go only to the configured upstream itself: an index may
        // point at files on other hosts, and those must never see them.
        if url.origin() != self.inner.base.origin() {
            return self.request(method, &url, headers).await;
        }
        let mut attempt_headers = headers.clone();
        if let Some(value) = self.inner.auth.cached(&url, scope) {
            attempt_headers.insert(header::AUTHORIZATION, value);
        }
        let response = self.request(method.clone(), &url, attempt_headers).await?;
        // A 401 is answered only when the upstream itself sent it: one from a host a
        // redirect led to (a CDN, object storage) goes back to the client as it is.
        if response.status() != StatusCode::UNAUTHORIZED
            || response.url().origin() != self.inner.base.origin()
        {
            return Ok(response);
        }
        let challenges: Vec<Challenge> = response
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let Some(value) = self
            .inner
            .auth
            .answer(&url, &self.inner.base, scope, &challenges)
            .await?
        else {
            // No challenge we can answer: the 401 goes back to the client as it is.
            return Ok(response);
        };
        let mut retry_headers = headers;
        retry_headers.insert(header::AUTHORIZATION, value);
        self.request(method, &url, retry_headers).await
    }

    /// The request for a download through [`fetch::Downloads`]: a GET of `path`, from
    /// `bytes=<offset>-` when the download resumes.
    pub fn resumable_get(&self, target: impl Into<Target>, scope: &str) -> fetch::RequestFn {
        let (upstream, target, scope) = (self.clone(), target.into(), scope.to_owned());
        Box::new(move |offset| {
            let (upstream, path, scope) = (upstream.clone(), target.clone(), scope.clone());
            let mut headers = HeaderMap::new();
            if let Some(offset) = offset {
                let range = HeaderValue::from_str(&format!("bytes={offset}-")).expect("ascii");
                headers.insert(header::RANGE, range);
            }
            Box::pin(async move { upstream.send(Method::GET, path, headers, &scope).await })
        })
    }

    /// Forgets cached tokens for `scope`, e.g. after one expired mid-download.
    pub fn forget_token(&self, scope: &str) {
        self.inner.auth.forget(scope);
    }

    async fn request(
        &self,
        method: Method,
        url: &url::Url,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        let started = std::time::Instant::now();
        let result = self
            .inner
            .client
            .request(method.clone(), url.clone())
            .headers(headers)
            .send()
            .await;
        match result {
            Ok(response) => {
                audit::fetch(&self.inner.proxy, &method, url, Ok(&response));
                tracing::debug!(
                    target: "airlock::upstream",
                    proxy = %self.inner.proxy,
                    %method,
                    url = %RedactedUrl::new(url),
                    status = response.status().as_u16(),
                    ms = started.elapsed().as_millis() as u64,
                    "upstream response"
                );
                Ok(response)
            }
            Err(error) => {
                let mut reason = error_chain(&error.without_url());
                // The operator must know whether to look at the upstream or the site's proxy.
                if let Some(site) = &self.inner.site_proxy {
                    if site.settings().proxies(url) {
                        reason = format!(
                            "{reason} (through the upstream proxy {})",
                            site.settings().url
                        );
                    }
                }
                audit::fetch(&self.inner.proxy, &method, url, Err(&reason));
                Err(UpstreamError::Unreachable {
                    url: RedactedUrl::new(url),
                    reason,
                })
            }
        }
    }
}

/// Redirects are followed (object storage, CDNs) up to ten times, but never to a scheme
/// other than http(s), from `https` down to `http`, or to a URL with credentials in it.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let next = attempt.url();
        let downgrade = next.scheme() == "http"
            && attempt
                .previous()
                .iter()
                .any(|previous| previous.scheme() == "https");
        if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else if !matches!(next.scheme(), "http" | "https") {
            attempt.error("a redirect to a scheme other than http(s)")
        } else if downgrade {
            attempt.error("a redirect from https down to http")
        } else if !next.username().is_empty() || next.password().is_some() {
            attempt.error("a redirect to a URL with credentials")
        } else {
            attempt.follow()
        }
    })
}

/// The error and its causes on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// Why a small upstream body (a manifest, an index page) could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("the connection broke mid-body: {0}")]
    Broken(String),
}

/// Reads a whole body into memory, refusing more than `max` bytes before reading them.
pub async fn read_body(response: reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    use futures_util::StreamExt;
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge { max });
    }
    let mut bytes = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| BodyError::Broken(error_chain(&e.without_url())))?;
        if bytes.len() + chunk.len() > max {
            return Err(BodyError::TooLarge { max });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// `Accept` header value for a list of media types.
pub fn accept_header(types: &[&str]) -> HeaderValue {
    HeaderValue::from_str(&types.join(", ")).expect("media types are header-safe")
}
