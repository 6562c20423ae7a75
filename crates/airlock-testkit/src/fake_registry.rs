//! An in-process registry on 127.0.0.1 that serves what a test pushes into it, with the
//! behaviours real registries have (token auth, CDN redirects) and the faults they show on
//! a bad day (status codes, truncated bodies, wrong bytes, malformed challenges).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use airlock_types::Digest;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderValue, Method, StatusCode, header};

use crate::{Image, Index};

/// How the fake registry wants clients to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    Anonymous,
    /// Docker Hub style: 401 with a Bearer challenge; the token endpoint is anonymous.
    Token,
    /// Token endpoint that requires these Basic credentials.
    TokenWithCredentials {
        username: String,
        password: String,
    },
    /// Plain Basic auth on the registry itself.
    Basic {
        username: String,
        password: String,
    },
    /// A Bearer challenge without a realm.
    MalformedChallenge,
}

/// Something going wrong on purpose for requests whose path ends with the given suffix.
#[derive(Debug, Clone)]
pub enum Fault {
    Status(u16),
    /// Send the headers and only this many body bytes, then close.
    Truncate(usize),
    /// Replace the body with other bytes of the same length.
    WrongBytes,
    /// Send this many body bytes, then go silent with the connection open.
    StallAfter(usize),
    /// Truncate the first response only (the connection drops mid-body); with
    /// `expire_tokens`, every token issued so far stops working at that moment.
    TruncateOnce {
        keep: usize,
        expire_tokens: bool,
    },
}

#[derive(Default)]
struct Inner {
    blobs: HashMap<Digest, Vec<u8>>,
    /// (repo, reference) → (media type, bytes)
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    /// (repo, subject digest) → the referrers index; a subject without one is a 404, as
    /// from a registry without the referrers API.
    referrers: HashMap<(String, String), Vec<u8>>,
    faults: Vec<(String, Fault)>,
}

struct Shared {
    inner: Mutex<Inner>,
    auth: Mutex<AuthMode>,
    redirect_blobs: Mutex<bool>,
    /// Send blob bodies chunked, without `Content-Length` (as some CDNs and proxies do).
    chunked_blobs: Mutex<bool>,
    /// Pause after every 64 KiB of a blob body, to make downloads take a while.
    throttle: Mutex<Option<std::time::Duration>>,
    requests: Mutex<HashMap<String, u64>>,
    tokens_issued: AtomicU64,
    /// Tokens numbered below this are expired.
    tokens_valid_from: AtomicU64,
    addr: SocketAddr,
}

/// A running fake registry. Stops when dropped.
pub struct FakeRegistry {
    shared: Arc<Shared>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for FakeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FakeRegistry({})", self.shared.addr)
    }
}

impl FakeRegistry {
    pub async fn start(auth: AuthMode) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake registry");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            auth: Mutex::new(auth),
            redirect_blobs: Mutex::new(false),
            chunked_blobs: Mutex::new(false),
            throttle: Mutex::new(None),
            requests: Mutex::new(HashMap::new()),
            tokens_issued: AtomicU64::new(0),
            tokens_valid_from: AtomicU64::new(0),
            addr,
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let tx = crate::serve::spawn(listener, app);
        Self {
            shared,
            _shutdown: tx,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    pub fn push_blob(&self, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        self.shared
            .inner
            .lock()
            .unwrap()
            .blobs
            .insert(digest.clone(), bytes.to_vec());
        digest
    }

    /// Serves `index` as the referrers of `subject` in `repo`.
    pub fn set_referrers(&self, repo: &str, subject: &Digest, index: &[u8]) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .referrers
            .insert((repo.to_owned(), subject.to_string()), index.to_vec());
    }

    /// Serves `bytes` as the manifest `reference` (a tag or a digest) of `repo`.
    pub fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        self.shared.inner.lock().unwrap().manifests.insert(
            (repo.to_owned(), reference.to_owned()),
            (media_type.to_owned(), bytes.to_vec()),
        );
    }

    /// Pushes an image's blobs and manifest, under `tag` and under its digest.
    pub fn push_image(&self, repo: &str, tag: &str, image: &Image) {
        for blob in image.blobs() {
            self.push_blob(blob);
        }
        self.push_manifest(repo, tag, image.media_type, &image.manifest);
        self.push_manifest(
            repo,
            &image.digest.to_string(),
            image.media_type,
            &image.manifest,
        );
    }

    /// Pushes every child image by digest and the index under `tag`.
    pub fn push_index(&self, repo: &str, tag: &str, index: &Index) {
        for (_, image) in &index.images {
            for blob in image.blobs() {
                self.push_blob(blob);
            }
            self.push_manifest(
                repo,
                &image.digest.to_string(),
                image.media_type,
                &image.manifest,
            );
        }
        self.push_manifest(repo, tag, index.media_type, &index.manifest);
        self.push_manifest(
            repo,
            &index.digest.to_string(),
            index.media_type,
            &index.manifest,
        );
    }

    pub fn fault(&self, path_suffix: &str, fault: Fault) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .faults
            .push((path_suffix.to_owned(), fault));
    }

    /// Slows blob bodies down: a pause after every 64 KiB.
    pub fn throttle(&self, pause: Option<std::time::Duration>) {
        *self.shared.throttle.lock().unwrap() = pause;
    }

    pub fn clear_faults(&self) {
        self.shared.inner.lock().unwrap().faults.clear();
    }

    pub fn set_auth(&self, auth: AuthMode) {
        *self.shared.auth.lock().unwrap() = auth;
    }

    /// Serve blobs as 307 redirects to `/cdn/<digest>`, like Docker Hub's CDN.
    pub fn redirect_blobs(&self, on: bool) {
        *self.shared.redirect_blobs.lock().unwrap() = on;
    }

    /// Send blob bodies chunked, with no `Content-Length`: the size is unknown until the end.
    pub fn chunked_blobs(&self, on: bool) {
        *self.shared.chunked_blobs.lock().unwrap() = on;
    }

    /// How many `METHOD path` requests arrived (path without query).
    pub fn count(&self, method: &str, path: &str) -> u64 {
        self.shared
            .requests
            .lock()
            .unwrap()
            .get(&format!("{method} {path}"))
            .copied()
            .unwrap_or(0)
    }

    /// Requests that reached the registry API (not the token endpoint), any method.
    pub fn total_requests(&self) -> u64 {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| !k.contains("/token"))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn tokens_issued(&self) -> u64 {
        self.shared.tokens_issued.load(Ordering::Relaxed)
    }
}

fn basic_ok(request: &Request, username: &str, password: &str) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    );
    request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes())
}

fn oci_error(status: StatusCode, code: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": code.to_lowercase(), "detail": null}]});
    (status, axum::Json(body)).into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    *shared
        .requests
        .lock()
        .unwrap()
        .entry(format!("{method} {path}"))
        .or_default() += 1;

    if path == "/token" {
        let auth = shared.auth.lock().unwrap().clone();
        if let AuthMode::TokenWithCredentials { username, password } = &auth {
            if !basic_ok(&request, username, password) {
                return StatusCode::UNAUTHORIZED.into_response();
            }
        }
        let n = shared.tokens_issued.fetch_add(1, Ordering::Relaxed);
        return axum::Json(serde_json::json!({"token": format!("tok-{n}"), "expires_in": 300}))
            .into_response();
    }

    let authorized = match shared.auth.lock().unwrap().clone() {
        AuthMode::Anonymous => true,
        AuthMode::Token | AuthMode::TokenWithCredentials { .. } => request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer tok-"))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= shared.tokens_valid_from.load(Ordering::Relaxed)),
        AuthMode::Basic { username, password } => basic_ok(&request, &username, &password),
        AuthMode::MalformedChallenge => false,
    };
    if !authorized && path.starts_with("/v2") {
        let challenge = match shared.auth.lock().unwrap().clone() {
            AuthMode::Basic { .. } => "Basic realm=\"fake\"".to_owned(),
            AuthMode::MalformedChallenge => "Bearer service=\"fake\",scope=\"x\"".to_owned(),
            _ => format!(
                "Bearer realm=\"http://{}/token\",service=\"fake-registry\",scope=\"repository:x:pull\"",
                shared.addr
            ),
        };
        let mut response = oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).unwrap(),
        );
        return response;
    }

    let fault = {
        let inner = shared.inner.lock().unwrap();
        inner
            .faults
            .iter()
            .find(|(suffix, _)| path.ends_with(suffix.as_str()))
            .map(|(_, f)| f.clone())
    };
    if let Some(Fault::Status(code)) = fault {
        let status = StatusCode::from_u16(code).unwrap();
        let mut response = oci_error(status, "FAULT");
        if code == 429 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        }
        return response;
    }

    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let accept: Vec<String> = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or("").trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    let response = route(&shared, &method, &path, range.as_deref(), &accept);
    match fault {
        Some(Fault::Truncate(keep)) => truncate(response, keep).await,
        Some(Fault::StallAfter(keep)) => stall(response, keep).await,
        Some(Fault::TruncateOnce {
            keep,
            expire_tokens,
        }) => {
            shared
                .inner
                .lock()
                .unwrap()
                .faults
                .retain(|(suffix, _)| !path.ends_with(suffix.as_str()));
            if expire_tokens {
                let issued = shared.tokens_issued.load(Ordering::Relaxed);
                shared.tokens_valid_from.store(issued, Ordering::Relaxed);
            }
            truncate(response, keep).await
        }
        Some(Fault::WrongBytes) => wrong_bytes(response).await,
        _ => response,
    }
}

fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    range: Option<&str>,
    accept: &[String],
) -> Response {
    if path == "/v2/" {
        return axum::Json(serde_json::json!({})).into_response();
    }
    if let Some(hex) = path.strip_prefix("/cdn/") {
        let digest = Digest::sha256_hex(hex).unwrap();
        return blob_response(shared, method, &digest, range);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        let inner = shared.inner.lock().unwrap();
        let mut tags: Vec<&str> = inner
            .manifests
            .keys()
            .filter(|(r, reference)| r == repo && !reference.contains(':'))
            .map(|(_, t)| t.as_str())
            .collect();
        if tags.is_empty() {
            return oci_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
        }
        tags.sort_unstable();
        return axum::Json(serde_json::json!({"name": repo, "tags": tags})).into_response();
    }
    let Some((head, last)) = rest.rsplit_once('/') else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some((repo, kind)) = head.rsplit_once('/') else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match kind {
        "referrers" => {
            let found = shared
                .inner
                .lock()
                .unwrap()
                .referrers
                .get(&(repo.to_owned(), last.to_owned()))
                .cloned();
            match found {
                Some(index) => {
                    let mut response = Response::new(Body::from(index));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
                    );
                    response
                }
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        "manifests" => {
            let found = shared
                .inner
                .lock()
                .unwrap()
                .manifests
                .get(&(repo.to_owned(), last.to_owned()))
                .cloned();
            let Some((media_type, bytes)) = found else {
                return oci_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
            };
            let Some((media_type, bytes)) = negotiate(shared, repo, media_type, bytes, accept)
            else {
                return oci_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
            };
            let digest = Digest::of(&bytes).to_string();
            let len = bytes.len();
            let body = if method == Method::HEAD {
                Body::empty()
            } else {
                Body::from(bytes)
            };
            let mut response = Response::new(body);
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(&media_type).unwrap(),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            headers.insert(
                "docker-content-digest",
                HeaderValue::from_str(&digest).unwrap(),
            );
            response
        }
        "blobs" => {
            let Ok(digest) = last.parse::<Digest>() else {
                return oci_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
            };
            if *shared.redirect_blobs.lock().unwrap() {
                let location = format!(
                    "http://{}/cdn/{}?X-Signature=secret",
                    shared.addr,
                    digest.hex()
                );
                return (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, location)],
                )
                    .into_response();
            }
            blob_response(shared, method, &digest, range)
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// What a registry answers for a manifest under the client's `Accept`: an index to a client
/// that does not take indexes becomes its linux/amd64 child when the client takes that
/// (distribution rewrites Docker manifest lists so; the fake does it for OCI indexes too),
/// else nothing. Everything else is served as stored.
fn negotiate(
    shared: &Shared,
    repo: &str,
    media_type: String,
    bytes: Vec<u8>,
    accept: &[String],
) -> Option<(String, Vec<u8>)> {
    let takes = |t: &str| accept.is_empty() || accept.iter().any(|a| a == "*/*" || a == t);
    if !airlock_types::media::is_index(&media_type) || takes(&media_type) {
        return Some((media_type, bytes));
    }
    let index: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let child = index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64")?;
    let digest = child["digest"].as_str()?;
    let (child_type, child_bytes) = shared
        .inner
        .lock()
        .unwrap()
        .manifests
        .get(&(repo.to_owned(), digest.to_owned()))
        .cloned()?;
    takes(&child_type).then_some((child_type, child_bytes))
}

fn blob_response(
    shared: &Shared,
    method: &Method,
    digest: &Digest,
    range: Option<&str>,
) -> Response {
    let Some(bytes) = shared.inner.lock().unwrap().blobs.get(digest).cloned() else {
        return oci_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    };
    // Open-ended ranges only (`bytes=N-`): what a resuming client sends.
    let start = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    if let Some(start) = start.filter(|&s| s < bytes.len()) {
        let total = bytes.len();
        let rest = bytes[start..].to_vec();
        let mut response = Response::new(Body::from(rest));
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total - start));
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{total}", total - 1)).unwrap(),
        );
        return response;
    }
    let len = bytes.len();
    let throttle = *shared.throttle.lock().unwrap();
    let chunked = *shared.chunked_blobs.lock().unwrap();
    let body = match (method == Method::HEAD, throttle) {
        (true, _) => Body::empty(),
        (false, None) if !chunked => Body::from(bytes),
        (false, None) => {
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = bytes
                .chunks(64 * 1024)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect();
            Body::from_stream(futures_util::stream::iter(chunks))
        }
        (false, Some(pause)) => {
            let chunks: Vec<bytes::Bytes> = bytes
                .chunks(64 * 1024)
                .map(bytes::Bytes::copy_from_slice)
                .collect();
            let slow = futures_util::StreamExt::then(
                futures_util::stream::iter(chunks),
                move |chunk| async move {
                    tokio::time::sleep(pause).await;
                    Ok::<_, std::io::Error>(chunk)
                },
            );
            Body::from_stream(slow)
        }
    };
    let mut response = Response::new(body);
    if !chunked {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

async fn collect(response: Response) -> (http::response::Parts, Vec<u8>) {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    (parts, bytes.to_vec())
}

async fn truncate(response: Response, keep: usize) -> Response {
    let (parts, bytes) = collect(response).await;
    let kept = bytes::Bytes::from(bytes[..keep.min(bytes.len())].to_vec());
    // Announce the full length, send less, then fail the stream: the connection breaks.
    let stream = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(kept),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fault: truncated",
        )),
    ]);
    Response::from_parts(parts, Body::from_stream(stream))
}

async fn stall(response: Response, keep: usize) -> Response {
    let (parts, bytes) = collect(response).await;
    let kept = bytes::Bytes::from(bytes[..keep.min(bytes.len())].to_vec());
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(kept)]),
        futures_util::stream::pending(),
    );
    Response::from_parts(parts, Body::from_stream(stream))
}

async fn wrong_bytes(response: Response) -> Response {
    let (parts, mut bytes) = collect(response).await;
    for b in &mut bytes {
        *b = b.wrapping_add(1);
    }
    Response::from_parts(parts, Body::from(bytes))
}
