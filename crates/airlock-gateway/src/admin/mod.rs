//! The console's login and the admin API under `/api/v1/`, served only when `[admin]` names
//! users. Who a request acts as is decided in [`session`] (console sessions with CSRF
//! tokens, or HTTP basic auth, rate-limited in [`auth`]); the handlers are grouped by what
//! they touch.
//!
//! ```text
//! GET    /ui/login, POST /ui/login, POST /ui/logout     the console's login (login)
//! GET    /api/v1/session                     who the request is logged in as (login)
//! GET    /api/v1/proxies                     each proxy: health, size, hit ratio (items)
//! GET    /api/v1/proxies/{name}/items?q=     cached tags or package files (items)
//! DELETE /api/v1/proxies/{name}/items/{item} purge one (items)
//! GET    /api/v1/pins, POST /api/v1/pins, DELETE /api/v1/pins/{reference}   (pins)
//! POST   /api/v1/prefetch, GET /api/v1/jobs/{id}                           (prefetch)
//! POST   /api/v1/bundles/import              body: the bundle (import)
//! GET    /api/v1/audit?since=&proxy=&client=  the audit trail (audit)
//! ```
//!
//! Reads need a login unless `[ui] anonymous_read = true` (the audit trail always does);
//! changes always need one, and logins and changes are written to the audit trail. Errors
//! are JSON `{"error": <reason>}` with the status saying which kind; they become responses
//! here, in [`ApiError`]'s `IntoResponse`, and nowhere else.

mod audit;
mod auth;
pub(crate) mod gc;
mod import;
pub(crate) mod items;
mod login;
pub(crate) mod pins;
pub(crate) mod prefetch;
pub(crate) mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http::{HeaderValue, StatusCode, header};

use crate::AppState;
pub(crate) use auth::{Failures, Logins, basic_credentials};
pub(crate) use prefetch::Jobs;

/// The largest JSON body the admin API reads (a prefetch list included).
const MAX_JSON: usize = 256 * 1024;

/// The console and admin routes, or `None` when no admin user is configured (no admin API
/// at all).
pub(crate) fn router(state: &Arc<AppState>) -> Option<Router> {
    state.logins.as_ref()?;
    let json = Router::new()
        .route("/ui/login", get(login::show).post(login::login))
        .route("/ui/logout", post(login::logout))
        .route("/api/v1/session", get(login::session))
        .route("/api/v1/proxies", get(items::proxies))
        .route("/api/v1/proxies/{name}/items", get(items::items))
        .route("/api/v1/proxies/{name}/items/{*item}", delete(items::purge))
        .route("/api/v1/pins", get(pins::list).post(pins::pin))
        .route("/api/v1/pins/{*reference}", delete(pins::unpin))
        .route("/api/v1/prefetch", post(prefetch::start))
        .route("/api/v1/jobs/{id}", get(prefetch::status))
        .route("/api/v1/audit", get(audit::read))
        .route("/api/v1/gc", post(gc::collect))
        .layer(axum::middleware::from_fn(read_whole_body))
        .layer(DefaultBodyLimit::max(MAX_JSON));
    Some(
        json.route("/api/v1/bundles/import", post(import::import))
            .with_state(state.clone()),
    )
}

/// Why an admin request was refused or failed.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// No or wrong credentials.
    Unauthorized(&'static str),
    /// Logged in, but the request may not do this (CSRF, cross-site, form post).
    Forbidden(String),
    /// Too many failed logins from this client; retry after this many seconds.
    TooManyFailures {
        retry_after: u64,
    },
    BadRequest(String),
    NotFound(String),
    /// The body is larger than the endpoint reads.
    TooLarge(String),
    /// The body is not JSON.
    UnsupportedMediaType(String),
    /// The bundle cannot be imported: its signature, bytes or entries are refused.
    Unprocessable(String),
    /// The bundle expects items this gateway lacks; a pin the configuration holds.
    Conflict(String),
    /// Not enough disk space for the upload.
    InsufficientStorage(String),
    Internal(String),
}

/// Reads a JSON or form body whole before the handler runs: a refusal (401, 403) then
/// comes after the request is complete, so an HTTP/2 client is not left with a reset
/// stream mid-upload (curl reports that as a framing error rather than the status).
async fn read_whole_body(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_JSON).await {
        Ok(bytes) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
        Err(e) => ApiError::TooLarge(format!(
            "the body is over {MAX_JSON} bytes or broke off: {e}"
        ))
        .into_response(),
    }
}

impl ApiError {
    /// The message, for the audit trail.
    pub(crate) fn reason(&self) -> String {
        match self {
            ApiError::Unauthorized(m) => (*m).to_owned(),
            ApiError::TooManyFailures { retry_after } => {
                format!("too many failed logins from this address; retry in {retry_after}s")
            }
            ApiError::Forbidden(m)
            | ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::TooLarge(m)
            | ApiError::UnsupportedMediaType(m)
            | ApiError::Unprocessable(m)
            | ApiError::Conflict(m)
            | ApiError::InsufficientStorage(m)
            | ApiError::Internal(m) => m.clone(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = rejection.body_text();
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::TooLarge(format!("the body is over {MAX_JSON} bytes: {text}"))
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(format!(
                "{text}: send the body as JSON with Content-Type: application/json"
            )),
            _ => ApiError::BadRequest(text),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Unauthorized(why) => (StatusCode::UNAUTHORIZED, why.to_owned()),
            ApiError::TooManyFailures { retry_after } => {
                let mut response = json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "too many failed logins from this address: try again in {retry_after}s"
                    ),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                return response;
            }
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            ApiError::UnsupportedMediaType(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
            ApiError::Unprocessable(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::InsufficientStorage(m) => (StatusCode::INSUFFICIENT_STORAGE, m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        let mut response = json_error(status, &message);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"airlock\""),
            );
        }
        response
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}
