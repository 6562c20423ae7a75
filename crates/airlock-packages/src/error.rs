//! Package proxy errors and the one place they become HTTP responses (plain text: pip,
//! conda, mvn, helm and dnf show the body to the user).

use axum::response::{IntoResponse, Response};
use http::StatusCode;

/// What went wrong serving a package request.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("no repository named {0:?} is configured")]
    UnknownRepository(String),
    /// A path the gateway will not map to the upstream, with the reason in parentheses.
    #[error("path {0} is refused")]
    BadPath(String),
    #[error("not found")]
    NotFound,
    #[error("{path}: not found upstream")]
    NotFoundUpstream { path: String },
    #[error("{path}: not listed in the repository's {index}, so it is not fetched")]
    NotListed { path: String, index: &'static str },
    #[error("{path}: not cached, and repository {proxy} is offline")]
    Offline { proxy: String, path: String },
    /// A `[[policy]]` rule refused the download.
    #[error("denied by policy rule {rule:?}: {reason}")]
    PolicyDenied { rule: String, reason: String },
    #[error("only GET and HEAD are supported")]
    MethodNotAllowed,
    #[error("upstream of {proxy} failed for {path}: {detail}")]
    Upstream {
        proxy: String,
        path: String,
        detail: String,
    },
    #[error("upstream of {proxy} sent {path} with the wrong content: {detail}; nothing was cached")]
    Verification {
        proxy: String,
        path: String,
        detail: String,
    },
    #[error("none of the representations in Accept: {0} is served here")]
    NotAcceptable(String),
    /// The storage backend cannot be reached for now (an S3 bucket that is down).
    #[error("storage is unavailable for now; try again shortly")]
    StorageUnavailable,
    /// The file does not fit on the cache's disk; cached content is still served.
    #[error("{0}; cached content is still served")]
    CacheFull(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for PackageError {
    fn into_response(self) -> Response {
        let status = match &self {
            PackageError::UnknownRepository(_)
            | PackageError::NotFound
            | PackageError::NotFoundUpstream { .. }
            | PackageError::NotListed { .. }
            | PackageError::Offline { .. } => StatusCode::NOT_FOUND,
            PackageError::BadPath(_) => StatusCode::BAD_REQUEST,
            PackageError::PolicyDenied { .. } => StatusCode::FORBIDDEN,
            PackageError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            PackageError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            PackageError::Upstream { .. } | PackageError::Verification { .. } => {
                StatusCode::BAD_GATEWAY
            }
            PackageError::StorageUnavailable | PackageError::CacheFull(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            PackageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(target: "airlock::packages", error = %self, "request failed");
        }
        let failed_upstream = match &self {
            PackageError::Upstream { proxy, .. } | PackageError::Verification { proxy, .. } => {
                Some(proxy.clone())
            }
            _ => None,
        };
        let mut response = (status, format!("{self}\n")).into_response();
        if let Some(proxy) = failed_upstream {
            response
                .extensions_mut()
                .insert(airlock_types::UpstreamFailure { proxy });
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_cannot_fit_is_a_503_that_says_so() {
        let full = airlock_store::StoreError::Full {
            needed: 6 << 20,
            free: 5 << 20,
        };
        let response = PackageError::CacheFull(full.to_string()).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            response
                .extensions()
                .get::<airlock_types::UpstreamFailure>()
                .is_none()
        );
    }
}
