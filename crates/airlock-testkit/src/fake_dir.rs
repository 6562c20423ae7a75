//! An in-process static server of a directory tree on 127.0.0.1 (following symlinks, as
//! Debian's Maven repository needs), with files laid over it, request counts and failures
//! on demand: the upstream of the Maven interop tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

struct Inner {
    root: PathBuf,
    overlay: HashMap<String, Vec<u8>>,
    failing: Option<u16>,
    requests: HashMap<String, u64>,
}

/// A running directory server. Stops when dropped.
pub struct FakeDir {
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for FakeDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FakeDir({})", self.addr)
    }
}

impl FakeDir {
    /// Serves the files below `root` at their relative paths.
    pub async fn start(root: impl Into<PathBuf>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake dir");
        let addr = listener.local_addr().expect("addr");
        let inner = Arc::new(Mutex::new(Inner {
            root: root.into(),
            overlay: HashMap::new(),
            failing: None,
            requests: HashMap::new(),
        }));
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

    /// Serves `bytes` at `/path`, in place of any file there.
    pub fn put(&self, path: &str, bytes: &[u8]) {
        self.inner
            .lock()
            .unwrap()
            .overlay
            .insert(format!("/{path}"), bytes.to_vec());
    }

    /// Answers every request with `status` (e.g. 503) until called with `None`.
    pub fn fail_with(&self, status: Option<u16>) {
        self.inner.lock().unwrap().failing = status;
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

    /// Every request so far, by path.
    pub fn requests(&self) -> HashMap<String, u64> {
        self.inner.lock().unwrap().requests.clone()
    }
}

async fn serve(State(inner): State<Arc<Mutex<Inner>>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let (root, overlay) = {
        let mut inner = inner.lock().unwrap();
        *inner.requests.entry(path.clone()).or_default() += 1;
        if let Some(status) = inner.failing {
            return StatusCode::from_u16(status).unwrap().into_response();
        }
        (inner.root.clone(), inner.overlay.get(&path).cloned())
    };
    let content_type = [(header::CONTENT_TYPE, "application/octet-stream")];
    if let Some(bytes) = overlay {
        return (content_type, bytes).into_response();
    }
    let relative = path.trim_start_matches('/');
    if relative
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('\\'))
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    match tokio::fs::read(root.join(relative)).await {
        Ok(bytes) => (content_type, bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
