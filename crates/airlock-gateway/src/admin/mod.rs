//! The admin API under `/api/v1/`, served only when `[admin]` names users: HTTP basic auth
//! against them ([`auth`]), and the bundle import into the running gateway ([`import`]).
//!
//! ```text
//! GET  /api/v1/session          who the credentials log in as (a cheap login check)
//! POST /api/v1/bundles/import   body: the bundle; ?trust_key=<NAME.pub text> | ?allow_unsigned=true
//! ```
//!
//! Errors are JSON `{"error": <reason>}` with the status saying which kind; they become
//! responses here, in [`ApiError`]'s `IntoResponse`, and nowhere else.

mod auth;
mod import;

use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};

use crate::AppState;
pub(crate) use auth::Logins;

/// The admin routes, or `None` when no admin user is configured (no admin API at all).
pub(crate) fn router(state: &Arc<AppState>) -> Option<Router> {
    state.logins.as_ref()?;
    Some(
        Router::new()
            .route("/api/v1/session", get(auth::session))
            .route("/api/v1/bundles/import", post(import::import))
            .with_state(state.clone()),
    )
}

/// Why an admin request was refused or failed.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// No or wrong credentials.
    Unauthorized(&'static str),
    /// Too many failed logins from this client; retry after this many seconds.
    TooManyFailures {
        retry_after: u64,
    },
    BadRequest(String),
    /// The bundle cannot be imported: its signature, bytes or entries are refused.
    Unprocessable(String),
    /// The bundle expects items this gateway lacks.
    Conflict(String),
    /// Not enough disk space for the upload.
    InsufficientStorage(String),
    Internal(String),
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
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
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
