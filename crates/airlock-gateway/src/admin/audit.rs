//! The admin side of the audit trail: logins and admin actions are written to it, and
//! `GET /api/v1/audit` reads it back.
//!
//! ```text
//! GET /api/v1/audit?since=&proxy=&client=&kind=&user=&item=&limit=
//! ```
//!
//! `since` is a duration back from now (`30m`, `2h`, `7d`) or an RFC 3339 time; the newest
//! `limit` records that match (default 100, at most 10000) come oldest first, with the lines
//! of the file that are not records (`bad_lines`, at most 100). The trail names clients and
//! users, so it needs a login even when `[ui] anonymous_read` opens the other reads.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use airlock_audit::{Filter, Kind, Record};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::session::Viewer;
use crate::AppState;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

impl AppState {
    /// Records an admin action (logout, pin, unpin, purge, prefetch, import) by `user`.
    pub(crate) fn audit_admin(&self, user: &str, peer: SocketAddr, action: &str, item: &str) {
        let mut record = Record::new(Kind::Admin, "ok").in_context();
        record.client = Some(peer.ip().to_string());
        record.user = Some(user.to_owned());
        record.action = Some(action.to_owned());
        record.item = (!item.is_empty()).then(|| item.to_owned());
        self.audit.record(record);
    }

    /// Records a login attempt: accepted, or refused with `reason`.
    pub(crate) fn audit_login(&self, user: &str, client: IpAddr, refused: Option<&str>) {
        let mut record = Record::new(
            Kind::Login,
            if refused.is_some() { "refused" } else { "ok" },
        )
        .in_context();
        record.client = Some(client.to_string());
        record.user = Some(user.to_owned());
        record.reason = refused.map(str::to_owned);
        self.audit.record(record);
    }
}

/// `GET /api/v1/audit`'s query.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    since: Option<String>,
    proxy: Option<String>,
    client: Option<String>,
    kind: Option<String>,
    user: Option<String>,
    item: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/audit`.
pub(super) async fn read(
    viewer: Viewer,
    State(state): State<Arc<AppState>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    if viewer.user.is_none() {
        return Err(ApiError::Unauthorized(
            "the audit trail needs an admin login, whatever [ui] anonymous_read says",
        ));
    }
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let since = query
        .since
        .as_deref()
        .map(|s| Filter::parse_since(s, std::time::SystemTime::now()))
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string().replace("--since", "since")))?;
    let kind = query
        .kind
        .as_deref()
        .map(str::parse::<Kind>)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let filter = Filter {
        since,
        kind,
        proxy: query.proxy,
        client: query.client,
        item: query.item,
        user: query.user,
    };
    let Some(path) = state.audit.path() else {
        return Err(ApiError::NotFound(
            "this gateway writes no audit trail".to_owned(),
        ));
    };
    let (records, bad) =
        tokio::task::spawn_blocking(move || airlock_audit::read_last(&path, &filter, limit))
            .await
            .map_err(|e| ApiError::Internal(format!("reading the audit trail failed: {e}")))?
            .map_err(|e| ApiError::Internal(format!("cannot read the audit trail: {e}")))?;
    let bad: Vec<String> = bad.iter().map(ToString::to_string).collect();
    Ok(axum::Json(serde_json::json!({ "records": records, "bad_lines": bad })).into_response())
}
