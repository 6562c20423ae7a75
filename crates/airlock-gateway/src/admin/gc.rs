//! `POST /api/v1/gc {"dry_run": true, "grace": "1h"}`: garbage collection of the hosted
//! projects (the registry's mark and sweep), what `airlock gc` asks of a running gateway.
//! The answer lists what went (or would go); a real run is audited.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_types::HumanDuration;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::session::Admin;
use crate::AppState;

/// How long an unreferenced upload or mount is kept by default: a push between its blobs
/// and its manifest is safe for this long.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// The request's body.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Request {
    #[serde(default)]
    dry_run: bool,
    grace: Option<HumanDuration>,
}

pub(super) async fn collect(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<axum::Json<Request>, JsonRejection>,
) -> Result<Response, ApiError> {
    let axum::Json(body) = body.map_err(ApiError::from)?;
    let grace = body.grace.map_or(DEFAULT_GRACE, |g| g.0);
    let report = state
        .registry
        .collect_garbage(grace, body.dry_run)
        .await
        .map_err(|e| ApiError::Internal(format!("garbage collection failed: {e}")))?;
    if !report.dry_run {
        let what = format!(
            "{} blobs, {} bytes, {} links",
            report.removed.len(),
            report.bytes_freed,
            report.links_removed
        );
        state.audit_admin(&admin.user, peer, "gc", &what);
    }
    Ok(axum::Json(report).into_response())
}
