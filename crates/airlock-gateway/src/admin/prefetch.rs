//! Warming the cache ahead of need: `POST /api/v1/prefetch` starts a job that pulls images
//! and package files through the gateway's own proxies, `GET /api/v1/jobs/{id}` tells how
//! far it got.
//!
//! Each item goes through the same handlers a client's request reaches (in process, no
//! socket): an image's manifest, an index's child manifests, then every config and layer
//! blob, each body read to its end so the store holds it; a package URL's path under
//! `/repository/`. At most [`CONCURRENCY`] items run at once, all jobs together; the last
//! [`MAX_JOBS`] jobs are kept for their progress.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use airlock_registry::Pin;
use airlock_types::Digest;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};

use super::ApiError;
use super::items::check_item;
use super::pins::parse_reference;
use super::session::{Admin, Viewer};
use crate::AppState;

/// Items of one job fetched at once.
pub(crate) const CONCURRENCY: usize = 4;
/// Jobs kept; the oldest goes first.
const MAX_JOBS: usize = 64;
/// Items one job may name.
const MAX_ITEMS: usize = 500;
/// The largest manifest read while walking an image.
const MAX_MANIFEST: usize = 4 << 20;
/// The manifest kinds a prefetch asks for: every one, so an index reaches every platform.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// `POST /api/v1/prefetch`'s body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Request {
    /// Image references, as `[cache] pin` takes them.
    #[serde(default)]
    references: Vec<String>,
    /// Package URLs or paths under `/repository/<proxy>/`.
    #[serde(default)]
    urls: Vec<String>,
}

/// Where one item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Stage {
    Queued,
    Running,
    Done,
    Failed,
}

/// One item's progress.
#[derive(Debug, Clone, serde::Serialize)]
struct Progress {
    item: String,
    kind: &'static str,
    state: Stage,
    /// Bytes received so far (bodies read through the gateway, cached or fetched).
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct Job {
    id: u64,
    user: String,
    /// Unix seconds.
    created: u64,
    items: Vec<Progress>,
}

/// The jobs, newest last.
#[derive(Debug)]
pub(crate) struct Jobs {
    next: AtomicU64,
    table: Mutex<BTreeMap<u64, Arc<Mutex<Job>>>>,
    /// Items fetching at once, all jobs together.
    running: Arc<tokio::sync::Semaphore>,
}

impl Default for Jobs {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(0),
            table: Mutex::default(),
            running: Arc::new(tokio::sync::Semaphore::new(CONCURRENCY)),
        }
    }
}

/// One validated item.
#[derive(Debug, Clone)]
enum Target {
    Image(Pin),
    Path(Uri),
}

impl Jobs {
    fn start(&self, user: &str, items: &[(String, Target)]) -> (u64, Arc<Mutex<Job>>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Mutex::new(Job {
            id,
            user: user.to_owned(),
            created: airlock_store::unix_now(),
            items: items
                .iter()
                .map(|(item, target)| Progress {
                    item: item.clone(),
                    kind: match target {
                        Target::Image(_) => "image",
                        Target::Path(_) => "url",
                    },
                    state: Stage::Queued,
                    bytes: 0,
                    error: None,
                })
                .collect(),
        }));
        let mut jobs = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        while jobs.len() >= MAX_JOBS {
            jobs.pop_first();
        }
        jobs.insert(id, job.clone());
        (id, job)
    }

    fn get(&self, id: u64) -> Option<Arc<Mutex<Job>>> {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }
}

fn update(job: &Mutex<Job>, at: usize, f: impl FnOnce(&mut Progress)) {
    if let Some(item) = job
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .items
        .get_mut(at)
    {
        f(item);
    }
}

/// A package URL or path as a path under `/repository/<a package proxy>/`.
fn package_path(state: &AppState, text: &str) -> Result<Uri, ApiError> {
    let bad = |why: &str| ApiError::BadRequest(format!("the URL {text:?} is refused: {why}"));
    let path = if text.starts_with('/') {
        text.to_owned()
    } else {
        let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("it is not http or https"));
        }
        url.path().to_owned()
    };
    if path.contains(['?', '#']) {
        return Err(bad("it has a query or fragment"));
    }
    let rest = path
        .strip_prefix("/repository/")
        .ok_or_else(|| bad("its path is not under /repository/<proxy>/"))?;
    let (proxy, file) = rest
        .split_once('/')
        .ok_or_else(|| bad("it names no file of the proxy"))?;
    let known = state
        .config
        .proxies
        .iter()
        .any(|p| p.name == proxy && p.format != airlock_config::Format::Oci);
    if !known {
        return Err(bad(&format!("no package proxy is named {proxy:?}")));
    }
    check_item(file)?;
    path.parse().map_err(|_| bad("it is not a valid path"))
}

fn validate(state: &AppState, request: Request) -> Result<Vec<(String, Target)>, ApiError> {
    let count = request.references.len() + request.urls.len();
    if count == 0 || count > MAX_ITEMS {
        return Err(ApiError::BadRequest(format!(
            "a prefetch names 1 to {MAX_ITEMS} references and urls; this one names {count}"
        )));
    }
    let mut items = Vec::with_capacity(count);
    for text in request.references {
        let image = parse_reference(&text)?;
        let pin = state
            .registry
            .resolve_image(&image)
            .map_err(|e| ApiError::BadRequest(format!("{text}: {e}")))?;
        items.push((text, Target::Image(pin)));
    }
    for text in request.urls {
        let path = package_path(state, &text)?;
        items.push((text, Target::Path(path)));
    }
    Ok(items)
}

/// Starts a prefetch of `references` and `urls` for `user` (logged and audited); returns
/// the job's id. The upstream fetches are audited as the current request's, from its client.
pub(crate) fn start_job(
    state: &Arc<AppState>,
    user: &str,
    peer: SocketAddr,
    references: Vec<String>,
    urls: Vec<String>,
) -> Result<u64, ApiError> {
    let items = validate(state, Request { references, urls })?;
    let (id, job) = state.jobs.start(user, &items);
    tracing::info!(target: "airlock::admin", user, client = %peer.ip(), job = id, items = items.len(), "prefetch started");
    let names: Vec<&str> = items.iter().map(|(n, _)| n.as_str()).collect();
    state.audit_admin(user, peer, "prefetch", &names.join(" "));
    tokio::spawn(airlock_audit::Context::carry(run(
        state.clone(),
        job,
        items,
    )));
    Ok(id)
}

/// `POST /api/v1/prefetch`.
pub(super) async fn start(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<axum::Json<Request>, JsonRejection>,
) -> Result<Response, ApiError> {
    let axum::Json(request) = body.map_err(ApiError::from)?;
    let id = start_job(&state, &admin.user, peer, request.references, request.urls)?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/v1/jobs/{id}"))],
        axum::Json(serde_json::json!({ "job": id })),
    )
        .into_response())
}

/// Where job `id` stands, as `GET /api/v1/jobs/{id}` answers it.
pub(crate) fn job_status(state: &AppState, id: &str) -> Result<serde_json::Value, ApiError> {
    let job = id
        .parse()
        .ok()
        .and_then(|id| state.jobs.get(id))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no job {id:?} (jobs are kept while the gateway runs, the last {MAX_JOBS})"
            ))
        })?;
    let job = job.lock().unwrap_or_else(PoisonError::into_inner);
    let count = |s: Stage| job.items.iter().filter(|i| i.state == s).count();
    let done = count(Stage::Done);
    let failed = count(Stage::Failed);
    let state = if done + failed < job.items.len() {
        "running"
    } else if failed > 0 {
        "failed"
    } else {
        "done"
    };
    Ok(serde_json::json!({
        "id": job.id,
        "user": job.user,
        "created": job.created,
        "state": state,
        "done": done,
        "failed": failed,
        "bytes": job.items.iter().map(|i| i.bytes).sum::<u64>(),
        "items": job.items,
    }))
}

/// `GET /api/v1/jobs/{id}`.
pub(super) async fn status(
    _viewer: Viewer,
    State(state): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(job_status(&state, &id)?).into_response())
}

async fn run(state: Arc<AppState>, job: Arc<Mutex<Job>>, items: Vec<(String, Target)>) {
    futures_util::stream::iter(items.into_iter().enumerate())
        .for_each_concurrent(CONCURRENCY, |(at, (name, target))| {
            let state = state.clone();
            let job = job.clone();
            async move {
                let Ok(_permit) = state.jobs.running.clone().acquire_owned().await else {
                    return;
                };
                update(&job, at, |p| p.state = Stage::Running);
                let counted = |n: u64| update(&job, at, |p| p.bytes += n);
                let result = match &target {
                    Target::Image(pin) => image(&state, pin, &counted).await,
                    Target::Path(uri) => fetch(&state, uri.clone(), None, &counted).await.map(drop),
                };
                match result {
                    Ok(()) => update(&job, at, |p| p.state = Stage::Done),
                    Err(error) => {
                        tracing::warn!(target: "airlock::admin", item = name, %error, "prefetch item failed");
                        update(&job, at, |p| {
                            p.state = Stage::Failed;
                            p.error = Some(error);
                        });
                    }
                }
            }
        })
        .await;
}

/// Pulls `pin` as a client would: manifest, child manifests, blobs.
async fn image(state: &AppState, pin: &Pin, counted: &impl Fn(u64)) -> Result<(), String> {
    let base = format!("/v2/{}/{}", pin.proxy, pin.repo);
    let uri = |tail: String| -> Result<Uri, String> {
        format!("{base}/{tail}")
            .parse()
            .map_err(|e| format!("{base}/{tail}: {e}"))
    };
    let top = fetch(
        state,
        uri(format!("manifests/{}", pin.reference))?,
        Some(ACCEPT),
        counted,
    )
    .await?;
    let mut manifests = Vec::new();
    let top: serde_json::Value =
        serde_json::from_slice(&top).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    match top.get("manifests").and_then(|m| m.as_array()) {
        Some(children) => {
            for child in children {
                let digest = digest_of(child)?;
                let bytes = fetch(
                    state,
                    uri(format!("manifests/{digest}"))?,
                    Some(ACCEPT),
                    counted,
                )
                .await?;
                manifests.push(
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .map_err(|e| format!("the manifest {digest} is not JSON: {e}"))?,
                );
            }
        }
        None => manifests.push(top),
    }
    for manifest in &manifests {
        let config = manifest.get("config").into_iter();
        let layers = manifest
            .get("layers")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten();
        for blob in config.chain(layers) {
            let digest = digest_of(blob)?;
            fetch(state, uri(format!("blobs/{digest}"))?, None, counted).await?;
        }
    }
    Ok(())
}

fn digest_of(descriptor: &serde_json::Value) -> Result<Digest, String> {
    descriptor
        .get("digest")
        .and_then(|d| d.as_str())
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| "a manifest names a descriptor without a valid digest".to_owned())
}

/// `GET uri` through the registry or package handlers, the body read to its end; returns
/// the body when it is small enough to be a manifest (else an empty vector).
async fn fetch(
    state: &AppState,
    uri: Uri,
    accept: Option<&'static str>,
    counted: &impl Fn(u64),
) -> Result<Vec<u8>, String> {
    let mut headers = HeaderMap::new();
    if let Some(accept) = accept {
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
    }
    let path = uri.path().to_owned();
    let response = if path.starts_with("/v2/") {
        airlock_registry::handle(
            axum::extract::State(state.registry.clone()),
            Method::GET,
            uri,
            headers,
        )
        .await
    } else {
        airlock_packages::handle(
            axum::extract::State(state.packages.clone()),
            Method::GET,
            uri,
            headers,
        )
        .await
    };
    let status = response.status();
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    state.metrics.record(
        &path,
        status.as_u16(),
        response.extensions().get(),
        response.extensions().get(),
        length,
    );
    // A manifest's body is parsed and an error's quoted; a blob's is only counted.
    let keep = accept.is_some() || !status.is_success();
    let mut stream = Body::into_data_stream(response.into_body());
    let mut kept = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("{path}: the body broke off: {e}"))?;
        counted(chunk.len() as u64);
        if keep && kept.len() + chunk.len() <= MAX_MANIFEST {
            kept.extend_from_slice(&chunk);
        }
    }
    if !status.is_success() {
        let detail = String::from_utf8_lossy(&kept[..kept.len().min(300)]).into_owned();
        return Err(format!("{path}: {status}: {detail}"));
    }
    Ok(kept)
}
