//! `POST /api/v1/bundles/import`: a bundle into the running gateway.
//!
//! login (a console session with its CSRF token, or HTTP basic auth not sent as a form) →
//! which key to trust → room on disk for the body (507 before a byte is read when
//! `Content-Length` exceeds the free space) → the body streamed to a temporary file under
//! `data_dir/uploads/` → the same verify-everything-then-write import as
//! `airlock bundle import` into a stopped gateway, here into the gateway's open store and
//! index, one import at a time → the summary as JSON. The temporary file is removed
//! whatever happens (a body that stops mid-way included); one left by a crash is removed
//! at the next start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use airlock_bundle::PublicKey;
use airlock_bundle::import::{ImportError, Imported, Trust};
use airlock_store::layout;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use http::{HeaderMap, header};
use tokio::io::AsyncWriteExt as _;

use super::ApiError;
use super::session::Admin;
use crate::AppState;

/// How the import checks the bundle's signature.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// The text of a `NAME.pub` file: the bundle must be signed by it.
    trust_key: Option<String>,
    /// `true`: import without checking a signature.
    #[serde(default)]
    allow_unsigned: bool,
}

/// The handler; see the module documentation for its steps.
pub(super) async fn import(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    params: Result<Query<Params>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match run(&state, admin.user, peer, params, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn run(
    state: &Arc<AppState>,
    user: String,
    peer: SocketAddr,
    params: Result<Query<Params>, QueryRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| {
        ApiError::BadRequest(format!(
            "the query must be trust_key=<the NAME.pub text> or allow_unsigned=true: {e}"
        ))
    })?;
    let key = trusted_key(&params)?;
    let uploads = layout::uploads_dir(&state.config.data_dir);
    check_room(&uploads, headers)?;
    let (upload, received) = receive(&uploads, body, peer).await?;
    tracing::info!(target: "airlock::admin", %user, client = %peer.ip(), bytes = received, "bundle received: verifying and importing");

    let _one_at_a_time = state.imports.lock().await;
    let task_state = state.clone();
    let imported = tokio::task::spawn_blocking(move || {
        let trust = match &key {
            Some(key) => Trust::Key(key),
            None => Trust::AllowUnsigned,
        };
        let state = task_state;
        let result = airlock_bundle::import::import_into(
            &tokio::runtime::Handle::current(),
            &upload,
            &state.config,
            trust,
            state.store.as_ref(),
            &state.index,
        );
        drop(upload);
        result
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the import task failed: {e}")))?;
    let imported = imported.map_err(|e| {
        tracing::warn!(target: "airlock::admin", %user, client = %peer.ip(), error = %e, "bundle import refused");
        refusal(&e)
    })?;
    // A path that was missing upstream may be held now.
    state.packages.forget_missing();
    tracing::info!(
        target: "airlock::admin",
        %user,
        client = %peer.ip(),
        new_items = imported.new_items,
        present_items = imported.present_items,
        new_blobs = imported.new_blobs,
        new_bytes = imported.new_bytes,
        "bundle imported"
    );
    state.audit_admin(
        &user,
        peer,
        "import",
        &format!(
            "{} new items, {} new bytes",
            imported.new_items, imported.new_bytes
        ),
    );
    Ok(axum::Json(summary(&imported, received)).into_response())
}

fn trusted_key(params: &Params) -> Result<Option<PublicKey>, ApiError> {
    match (&params.trust_key, params.allow_unsigned) {
        (Some(text), false) => PublicKey::from_text(text, Path::new("trust_key"))
            .map(Some)
            .map_err(|e| ApiError::BadRequest(e.to_string())),
        (None, true) => Ok(None),
        _ => Err(ApiError::BadRequest(
            "give exactly one of trust_key=<the NAME.pub text> and allow_unsigned=true".to_owned(),
        )),
    }
}

/// Refuses a body whose announced size the disk under `uploads` cannot hold.
fn check_room(uploads: &Path, headers: &HeaderMap) -> Result<(), ApiError> {
    std::fs::create_dir_all(uploads)
        .map_err(|e| ApiError::Internal(format!("cannot create {}: {e}", uploads.display())))?;
    let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return Ok(());
    };
    let free = free_space(uploads).map_err(|e| {
        ApiError::Internal(format!(
            "cannot read the free space of {}: {e}",
            uploads.display()
        ))
    })?;
    if length > free {
        return Err(ApiError::InsufficientStorage(format!(
            "the bundle is {length} bytes, and the gateway's data_dir has {free} bytes free: free space or import it in smaller bundles"
        )));
    }
    Ok(())
}

/// Bytes an unprivileged writer may still put on the file system holding `path`.
fn free_space(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Streams `body` into a fresh temporary file under `uploads`, removed when dropped.
async fn receive(
    uploads: &Path,
    body: Body,
    peer: SocketAddr,
) -> Result<(tempfile::TempPath, u64), ApiError> {
    let temp = tempfile::Builder::new()
        .prefix("import-")
        .suffix(".bundle")
        .tempfile_in(uploads)
        .map_err(|e| {
            ApiError::Internal(format!(
                "cannot create a file in {}: {e}",
                uploads.display()
            ))
        })?;
    let (file, path) = temp.into_parts();
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
    let mut stream = body.into_data_stream();
    let mut received: u64 = 0;
    let written = |e: std::io::Error, path: &Path, received: u64| {
        if e.kind() == std::io::ErrorKind::StorageFull {
            ApiError::InsufficientStorage(format!(
                "the gateway's data_dir ran out of space after {received} bytes of the bundle: nothing was imported"
            ))
        } else {
            ApiError::Internal(format!("writing {}: {e}", path.display()))
        }
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            tracing::warn!(target: "airlock::admin", client = %peer.ip(), received, error = %e, "bundle upload ended early");
            ApiError::BadRequest(format!(
                "the upload ended after {received} bytes, before the whole body arrived ({e}): nothing was imported"
            ))
        })?;
        file.write_all(&chunk)
            .await
            .map_err(|e| written(e, &path, received))?;
        received += chunk.len() as u64;
    }
    file.flush()
        .await
        .map_err(|e| written(e, &path, received))?;
    Ok((path, received))
}

/// The status an import refusal is answered with.
fn refusal(error: &ImportError) -> ApiError {
    let message = error.to_string();
    match error {
        ImportError::Bundle(airlock_bundle::BundleError::Io { .. })
        | ImportError::Store { .. }
        | ImportError::GatewayRunning { .. } => ApiError::Internal(message),
        ImportError::Missing { .. } => ApiError::Conflict(message),
        _ => ApiError::Unprocessable(message),
    }
}

fn summary(imported: &Imported, received: u64) -> serde_json::Value {
    serde_json::json!({
        "received_bytes": received,
        "trusted_key": imported.trusted_key.as_ref().map(ToString::to_string),
        "new_items": imported.new_items,
        "present_items": imported.present_items,
        "new_blobs": imported.new_blobs,
        "new_bytes": imported.new_bytes,
        "present_blobs": imported.present_blobs,
        "present_bytes": imported.present_bytes,
    })
}
