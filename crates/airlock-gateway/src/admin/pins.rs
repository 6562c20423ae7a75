//! Pins made at run time through the admin API, held against eviction like `[cache] pin`.
//!
//! They live in `data_dir/pins-v1.json` (`{"pins": ["docker.io/library/postgres:15", …]}`),
//! rewritten whole through a temporary file and a rename on every change, so a crash leaves
//! the old list or the new one, never half of either. At start each entry is resolved to its
//! proxy again; one no proxy serves any more is kept in the file and logged, and holds
//! nothing.
//!
//! ```text
//! GET    /api/v1/pins               the configuration's pins and the run-time ones
//! POST   /api/v1/pins  {"reference": "docker.io/library/postgres:15"}
//! DELETE /api/v1/pins/{reference}
//! ```

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use airlock_registry::{Pin, Registry};
use airlock_types::ImageRef;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use super::ApiError;
use super::session::{Admin, Viewer};
use crate::AppState;

/// The file's name under `data_dir`.
pub(crate) const FILE: &str = "pins-v1.json";

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PinFile {
    pins: Vec<String>,
}

/// The run-time pins: each as written, and resolved when a proxy serves it.
#[derive(Debug)]
pub(crate) struct RuntimePins {
    path: PathBuf,
    pins: Mutex<Vec<(String, Option<Pin>)>>,
}

/// Why the pin file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the run-time pins in {path}: {reason}; fix or remove the file")]
pub struct PinFileError {
    path: String,
    reason: String,
}

/// Parses a pin as `[cache] pin` takes it: below a registry or project, with exactly one
/// of a tag and a digest.
pub(crate) fn parse_reference(text: &str) -> Result<ImageRef, ApiError> {
    let image: ImageRef = text
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("{text:?} is not an image reference: {e}")))?;
    if image.domain().is_none() && !image.path().as_str().contains('/') {
        return Err(ApiError::BadRequest(format!(
            "{text:?} names no registry or proxy: write it as docker.io/library/NAME:TAG or PROXY/REPO:TAG"
        )));
    }
    if image.tag().is_some() == image.digest().is_some() {
        return Err(ApiError::BadRequest(format!(
            "{text:?} needs exactly one of a tag and a digest"
        )));
    }
    Ok(image)
}

impl RuntimePins {
    /// Reads the file under `data_dir`, if there is one.
    pub(crate) fn load(data_dir: &Path, registry: &Registry) -> Result<Self, PinFileError> {
        let path = data_dir.join(FILE);
        let error = |reason: String| PinFileError {
            path: path.display().to_string(),
            reason,
        };
        let file: PinFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| error(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PinFile::default(),
            Err(e) => return Err(error(e.to_string())),
        };
        let pins = file
            .pins
            .into_iter()
            .map(|text| {
                let resolved = parse_reference(&text)
                    .and_then(|image| {
                        registry
                            .resolve_image(&image)
                            .map_err(|e| ApiError::BadRequest(e.to_string()))
                    })
                    .inspect_err(|e| {
                        tracing::warn!(target: "airlock::admin", pin = text, error = ?e, "a run-time pin names no proxy of this configuration: it holds nothing");
                    })
                    .ok();
                (text, resolved)
            })
            .collect();
        Ok(Self {
            path,
            pins: Mutex::new(pins),
        })
    }

    /// The resolved pins, for eviction.
    pub(crate) fn resolved(&self) -> Vec<Pin> {
        self.lock().iter().filter_map(|(_, p)| p.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Option<Pin>)>> {
        self.pins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a pin; `false` when it was there already.
    pub(crate) fn add(&self, text: &str, pin: Pin) -> Result<bool, ApiError> {
        let mut pins = self.lock();
        if pins.iter().any(|(t, _)| t == text) {
            return Ok(false);
        }
        pins.push((text.to_owned(), Some(pin)));
        if let Err(e) = self.save(&pins) {
            pins.pop();
            return Err(e);
        }
        Ok(true)
    }

    /// Removes a pin; `false` when there was none.
    pub(crate) fn remove(&self, text: &str) -> Result<bool, ApiError> {
        let mut pins = self.lock();
        let Some(at) = pins.iter().position(|(t, _)| t == text) else {
            return Ok(false);
        };
        let removed = pins.remove(at);
        if let Err(e) = self.save(&pins) {
            pins.insert(at, removed);
            return Err(e);
        }
        Ok(true)
    }

    /// Writes the whole list through a synced temporary file and a rename.
    fn save(&self, pins: &[(String, Option<Pin>)]) -> Result<(), ApiError> {
        let file = PinFile {
            pins: pins.iter().map(|(t, _)| t.clone()).collect(),
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let failed = |e: std::io::Error| {
            ApiError::Internal(format!("cannot write {}: {e}", self.path.display()))
        };
        let mut temp = tempfile::Builder::new()
            .prefix(".pins-")
            .tempfile_in(dir)
            .map_err(failed)?;
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| ApiError::Internal(format!("encoding the pins: {e}")))?;
        temp.write_all(&bytes).map_err(failed)?;
        temp.as_file().sync_all().map_err(failed)?;
        temp.persist(&self.path).map_err(|e| failed(e.error))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(failed)?;
        Ok(())
    }

    fn texts(&self) -> Vec<String> {
        self.lock().iter().map(|(t, _)| t.clone()).collect()
    }
}

/// `POST /api/v1/pins`'s body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewPin {
    reference: String,
}

/// `GET /api/v1/pins`.
pub(super) async fn list(_viewer: Viewer, State(state): State<Arc<AppState>>) -> Response {
    let config: Vec<String> = state
        .config
        .cache
        .pin
        .iter()
        .map(ToString::to_string)
        .collect();
    axum::Json(serde_json::json!({
        "config": config,
        "runtime": state.pins.texts(),
    }))
    .into_response()
}

/// Pins `reference` for `user` (logged and audited): the pin, and whether it is new.
pub(crate) fn add_pin(
    state: &AppState,
    user: &str,
    peer: SocketAddr,
    reference: &str,
) -> Result<(Pin, bool), ApiError> {
    let image = parse_reference(reference)?;
    let pin = state
        .registry
        .resolve_image(&image)
        .map_err(|e| ApiError::NotFound(format!("{reference}: {e}")))?;
    let created = state.pins.add(reference, pin.clone())?;
    tracing::info!(target: "airlock::admin", user, client = %peer.ip(), pin = reference, created, "pinned");
    state.audit_admin(user, peer, "pin", reference);
    Ok((pin, created))
}

/// Removes the run-time pin `reference` for `user` (logged and audited); a pin of the
/// configuration cannot be removed here.
pub(crate) fn remove_pin(
    state: &AppState,
    user: &str,
    peer: SocketAddr,
    reference: &str,
) -> Result<(), ApiError> {
    if state
        .config
        .cache
        .pin
        .iter()
        .any(|p| p.to_string() == reference)
    {
        return Err(ApiError::Conflict(format!(
            "{reference} is pinned by [cache] pin in the configuration: remove it there"
        )));
    }
    if !state.pins.remove(reference)? {
        return Err(ApiError::NotFound(format!(
            "{reference} is not pinned (GET /api/v1/pins lists the pins)"
        )));
    }
    tracing::info!(target: "airlock::admin", user, client = %peer.ip(), pin = reference, "unpinned");
    state.audit_admin(user, peer, "unpin", reference);
    Ok(())
}

/// `POST /api/v1/pins`.
pub(super) async fn pin(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<axum::Json<NewPin>, JsonRejection>,
) -> Result<Response, ApiError> {
    let axum::Json(body) = body.map_err(ApiError::from)?;
    let (pin, created) = add_pin(&state, &admin.user, peer, &body.reference)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(serde_json::json!({
            "reference": body.reference,
            "proxy": pin.proxy,
            "repository": pin.repo.to_string(),
            "created": created,
        })),
    )
        .into_response())
}

/// `DELETE /api/v1/pins/{reference}`.
pub(super) async fn unpin(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(reference): UrlPath<String>,
) -> Result<Response, ApiError> {
    remove_pin(&state, &admin.user, peer, &reference)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
