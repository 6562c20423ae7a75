//! An in-process Python package (simple)  index on 127.0.0.1 (PEP 503 HTML and PEP 691 JSON by
//! `Accept`, PEP 592 yanking, PEP 658 metadata files, PEP 700 fields): the upstream of the
//! pypi proxy tests. It counts requests, records `Accept` headers, and can serve tampered
//! files or hand-written pages.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use airlock_types::Digest;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

/// One distribution file of a project.
#[derive(Debug, Clone, Default)]
pub struct Dist {
    pub filename: String,
    pub bytes: Vec<u8>,
    pub requires_python: Option<String>,
    /// `Some("")`: yanked without a reason.
    pub yanked: Option<String>,
    /// The PEP 658 metadata file, advertised with its sha256 when present.
    pub metadata: Option<Vec<u8>>,
}

impl Dist {
    pub fn new(filename: &str, bytes: &[u8]) -> Self {
        Self {
            filename: filename.to_owned(),
            bytes: bytes.to_vec(),
            ..Self::default()
        }
    }
}

#[derive(Default)]
struct Inner {
    projects: BTreeMap<String, Vec<Dist>>,
    /// Bytes served for a file instead of the ones its page hashes.
    tampered: HashMap<String, Vec<u8>>,
    /// Hand-written pages: path → (content type, body).
    pages: HashMap<String, (String, Vec<u8>)>,
    html_only: bool,
    requests: HashMap<String, u64>,
    accepts: Vec<(String, String)>,
}

/// A running index. Stops when dropped.
pub struct FakePypi {
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for FakePypi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FakePypi({})", self.addr)
    }
}

impl FakePypi {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake pypi");
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

    /// The base URL, ending in `/` (the index is at `simple/`).
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Adds a file to `project` (a normalized name).
    pub fn add(&self, project: &str, dist: Dist) {
        self.inner
            .lock()
            .unwrap()
            .projects
            .entry(project.to_owned())
            .or_default()
            .push(dist);
    }

    /// Serves `bytes` for `filename` while its page keeps the hash of the real ones.
    pub fn tamper(&self, filename: &str, bytes: &[u8]) {
        self.inner
            .lock()
            .unwrap()
            .tampered
            .insert(filename.to_owned(), bytes.to_vec());
    }

    /// Serves `body` at `/path` instead of a generated page.
    pub fn put_page(&self, path: &str, content_type: &str, body: &[u8]) {
        self.inner
            .lock()
            .unwrap()
            .pages
            .insert(format!("/{path}"), (content_type.to_owned(), body.to_vec()));
    }

    /// Answers only in HTML, like an index that predates PEP 691.
    pub fn html_only(&self, yes: bool) {
        self.inner.lock().unwrap().html_only = yes;
    }

    /// Requests that arrived for `/path`.
    pub fn count(&self, path: &str) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .requests
            .get(&format!("/{path}"))
            .copied()
            .unwrap_or(0)
    }

    /// The `Accept` headers requests for `/path` carried, in order.
    pub fn accepts(&self, path: &str) -> Vec<String> {
        let path = format!("/{path}");
        self.inner
            .lock()
            .unwrap()
            .accepts
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, a)| a.clone())
            .collect()
    }
}

async fn serve(State(inner): State<Arc<Mutex<Inner>>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut inner = inner.lock().unwrap();
    *inner.requests.entry(path.clone()).or_default() += 1;
    inner.accepts.push((path.clone(), accept.clone()));
    if let Some((content_type, body)) = inner.pages.get(&path) {
        return ([(header::CONTENT_TYPE, content_type.clone())], body.clone()).into_response();
    }
    let json = !inner.html_only
        && accept
            .split(',')
            .next()
            .is_some_and(|first| first.contains("vnd.pypi.simple.v1+json"));
    if path == "/simple/" {
        let names: Vec<&String> = inner.projects.keys().collect();
        return if json {
            let projects: Vec<_> = names
                .iter()
                .map(|n| serde_json::json!({ "name": n }))
                .collect();
            page_response(
                true,
                serde_json::json!({"meta": {"api-version": "1.0"}, "projects": projects})
                    .to_string(),
            )
        } else {
            let mut html = String::from("<!DOCTYPE html><html><body>\n");
            for n in names {
                let _ = writeln!(html, "<a href=\"/simple/{n}/\">{n}</a>");
            }
            page_response(false, html + "</body></html>\n")
        };
    }
    if let Some(project) = path
        .strip_prefix("/simple/")
        .and_then(|p| p.strip_suffix('/'))
    {
        let Some(dists) = inner.projects.get(project) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let base = format!(
            "http://{}",
            request.headers()[header::HOST].to_str().unwrap()
        );
        return page_response(json, project_page(project, dists, json, &base));
    }
    if let Some(name) = path.strip_prefix("/files/") {
        let (filename, metadata) = match name.strip_suffix(".metadata") {
            Some(f) => (f, true),
            None => (name, false),
        };
        for dist in inner.projects.values().flatten() {
            if dist.filename != filename {
                continue;
            }
            let bytes = match (metadata, &dist.metadata) {
                (false, _) => inner
                    .tampered
                    .get(filename)
                    .cloned()
                    .unwrap_or_else(|| dist.bytes.clone()),
                (true, Some(m)) => m.clone(),
                (true, None) => break,
            };
            return ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response();
        }
    }
    StatusCode::NOT_FOUND.into_response()
}

fn page_response(json: bool, body: String) -> Response {
    let content_type = if json {
        "application/vnd.pypi.simple.v1+json"
    } else {
        "text/html; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// JSON file URLs are absolute; HTML ones relative, as real indexes differ.
fn project_page(project: &str, dists: &[Dist], json: bool, base: &str) -> String {
    if json {
        let mut versions: Vec<String> = dists
            .iter()
            .filter_map(|d| d.filename.split('-').nth(1))
            .map(|v| v.trim_end_matches(".tar.gz").to_owned())
            .collect();
        versions.dedup();
        let files: Vec<_> = dists
            .iter()
            .map(|d| {
                let mut file = serde_json::json!({
                    "filename": d.filename,
                    "url": format!("{base}/files/{}", d.filename),
                    "hashes": {"sha256": Digest::of(&d.bytes).hex()},
                    "size": d.bytes.len(),
                    "upload-time": "2024-05-01T12:00:00.000000Z",
                });
                if let Some(r) = &d.requires_python {
                    file["requires-python"] = r.clone().into();
                }
                if let Some(y) = &d.yanked {
                    file["yanked"] = if y.is_empty() {
                        true.into()
                    } else {
                        y.clone().into()
                    };
                }
                if let Some(m) = &d.metadata {
                    file["core-metadata"] = serde_json::json!({"sha256": Digest::of(m).hex()});
                }
                file
            })
            .collect();
        return serde_json::json!({
            "meta": {"api-version": "1.1"},
            "name": project,
            "versions": versions,
            "files": files,
        })
        .to_string();
    }
    let mut html = format!("<!DOCTYPE html>\n<html><body><h1>Links for {project}</h1>\n");
    for d in dists {
        let _ = write!(
            html,
            "<a href=\"../../files/{}#sha256={}\"",
            d.filename,
            Digest::of(&d.bytes).hex()
        );
        if let Some(r) = &d.requires_python {
            let escaped = r
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            let _ = write!(html, " data-requires-python=\"{escaped}\"");
        }
        if let Some(y) = &d.yanked {
            let _ = write!(html, " data-yanked=\"{y}\"");
        }
        if let Some(m) = &d.metadata {
            let _ = write!(
                html,
                " data-dist-info-metadata=\"sha256={}\"",
                Digest::of(m).hex()
            );
        }
        let _ = writeln!(html, ">{}</a><br/>", d.filename);
    }
    html + "</body></html>\n"
}
