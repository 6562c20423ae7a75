//! An in-process static file server on 127.0.0.1: the upstream of package-proxy tests.
//! It answers conditional requests (`ETag`), counts requests and fails on demand.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

#[derive(Default)]
struct Inner {
    files: HashMap<String, (String, Vec<u8>)>,
    failing: Option<u16>,
    requests: HashMap<String, u64>,
    authorized: u64,
}

/// A running file server. Stops when dropped.
pub struct FakeFiles {
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for FakeFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FakeFiles({})", self.addr)
    }
}

impl FakeFiles {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake files");
        let addr = listener.local_addr().expect("addr");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(serve).with_state(inner.clone());
        let tx = crate::serve::spawn(listener, app);
        Self {
            inner,
            addr,
            _shutdown: tx,
        }
    }

    /// The base URL, ending in `/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Serves `bytes` at `/path` with `content_type`.
    pub fn put(&self, path: &str, content_type: &str, bytes: &[u8]) {
        self.inner.lock().unwrap().files.insert(
            format!("/{path}"),
            (content_type.to_owned(), bytes.to_vec()),
        );
    }

    /// Serves every file below `dir` at `/<prefix><relative path>` (`prefix` empty or
    /// ending in `/`), as `application/octet-stream`; returns how many files it loaded.
    pub fn put_dir(&self, prefix: &str, dir: &std::path::Path) -> usize {
        let mut pending = vec![dir.to_path_buf()];
        let mut loaded = 0;
        while let Some(current) = pending.pop() {
            for entry in std::fs::read_dir(&current).expect("read fixture directory") {
                let path = entry.expect("fixture directory entry").path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(dir).expect("below dir");
                let relative = relative.to_str().expect("UTF-8 fixture path");
                let bytes = std::fs::read(&path).expect("read fixture file");
                self.put(
                    &format!("{prefix}{relative}"),
                    "application/octet-stream",
                    &bytes,
                );
                loaded += 1;
            }
        }
        loaded
    }

    /// Answers every request with `status` (e.g. 503) until called with `None`.
    pub fn fail_with(&self, status: Option<u16>) {
        self.inner.lock().unwrap().failing = status;
    }

    /// Requests that carried an `Authorization` header.
    pub fn authorized_requests(&self) -> u64 {
        self.inner.lock().unwrap().authorized
    }

    /// Every request that arrived, any path and method: the access log of a stand-in for an
    /// internal service that nothing should reach.
    pub fn total_requests(&self) -> u64 {
        self.inner.lock().unwrap().requests.values().sum()
    }

    /// The distinct paths requests arrived for, as sent (not decoded).
    pub fn requested_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .inner
            .lock()
            .unwrap()
            .requests
            .keys()
            .cloned()
            .collect();
        paths.sort();
        paths
    }

    /// Requests that arrived for `/path` (any method).
    pub fn count(&self, path: &str) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .requests
            .get(&format!("/{path}"))
            .copied()
            .unwrap_or(0)
    }
}

async fn serve(State(inner): State<Arc<Mutex<Inner>>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let mut inner = inner.lock().unwrap();
    *inner.requests.entry(path.clone()).or_default() += 1;
    if request.headers().contains_key(header::AUTHORIZATION) {
        inner.authorized += 1;
    }
    if let Some(status) = inner.failing {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    let Some((content_type, bytes)) = inner.files.get(&path).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{}\"", airlock_types::Digest::of(&bytes).hex());
    let matches = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
    };
    response
        .headers_mut()
        .insert(header::ETAG, HeaderValue::from_str(&etag).unwrap());
    response
}
