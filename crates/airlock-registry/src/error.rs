//! Registry errors and the one place they become OCI JSON error responses.

use airlock_upstream::UpstreamError;
use airlock_upstream::fetch::FetchError;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::API_VERSION;

/// What went wrong serving a registry request.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("repository {name:?} is unknown: {why}")]
    NameUnknown { name: String, why: String },
    #[error("repository name {0:?} is invalid")]
    NameInvalid(String),
    #[error("manifest reference {0:?} is invalid")]
    ManifestInvalid(String),
    #[error("digest {0:?} is invalid")]
    DigestInvalid(String),
    #[error("manifest {0} is unknown upstream")]
    ManifestUnknown(String),
    #[error("blob {0} is unknown upstream")]
    BlobUnknown(String),
    #[error("upstream {proxy} refused the request ({status}); check the proxy's credentials")]
    Unauthorized { proxy: String, status: StatusCode },
    /// A `[[policy]]` rule refused the request.
    #[error("denied by policy rule {rule:?}: {reason}")]
    PolicyDenied { rule: String, reason: String },
    #[error("upstream {proxy} denied access")]
    Denied { proxy: String },
    #[error("upstream {proxy} is rate limiting pulls")]
    TooManyRequests {
        proxy: String,
        retry_after: Option<String>,
    },
    #[error("upstream {proxy} is unavailable: {detail}")]
    Unavailable { proxy: String, detail: String },
    #[error("upstream {proxy} sent content that failed verification: {detail}")]
    BadUpstreamContent { proxy: String, detail: String },
    #[error("requested range cannot be satisfied (blob has {size} bytes)")]
    RangeNotSatisfiable { size: u64 },
    /// The storage backend cannot be reached for now (an S3 bucket that is down).
    #[error("storage is unavailable for now; try again shortly")]
    StorageUnavailable,
    /// The blob does not fit on the cache's disk; cached content is still served.
    #[error("{0}; cached content is still served")]
    CacheFull(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A hosted project's write, or a pull from a project without `anonymous_pull`,
    /// without a token that allows it: 401 with a Bearer challenge.
    #[error("{why}")]
    LoginRequired {
        why: String,
        challenge: crate::Challenge,
    },
    /// Too many failed logins from this client.
    #[error("too many failed logins from this address; retry in {retry_after}s")]
    LoginThrottled { retry_after: u64 },
    #[error("{0}")]
    Unsupported(String),
    #[error("upload {0:?} is unknown: it was finished, cancelled or abandoned, or never started")]
    BlobUploadUnknown(String),
    #[error("upload is invalid: {0}")]
    BlobUploadInvalid(String),
    /// A chunk that does not start where the upload stands.
    #[error(
        "the chunk starts at byte {start}, the upload holds {written} bytes; send from {written}"
    )]
    UploadOutOfOrder { start: u64, written: u64 },
    #[error("{0}")]
    ContentDigestMismatch(String),
    #[error("manifest is invalid: {0}")]
    ManifestRejected(String),
    #[error("manifest is larger than {limit} bytes")]
    ManifestTooLarge { limit: usize },
    #[error("manifest references {0}, which this registry does not hold; push it first")]
    ManifestBlobUnknown(String),
    #[error("too many uploads in progress ({0}); finish or cancel some and retry")]
    TooManyUploads(usize),
    /// A chunk whose body is not as long as its `Content-Range` says.
    #[error(
        "the chunk's Content-Range names {said} bytes, its body had {got}; the upload is dropped, start it again"
    )]
    SizeInvalid { said: u64, got: u64 },
}

/// A failure of the gateway itself: a storage backend that cannot be reached is 503 (the
/// client retries, and the hot tier's content keeps being served), anything else 500.
pub(crate) fn internal<E: std::fmt::Display + 'static>(e: E) -> RegistryError {
    if airlock_store::is_unavailable(&e) {
        // Where the bucket is and how it failed is for the log, not for clients.
        tracing::warn!(target: "airlock::store", error = %e, "storage unavailable");
        return RegistryError::StorageUnavailable;
    }
    RegistryError::Internal(e.to_string())
}

impl RegistryError {
    /// Classifies an upstream status the client should hear about.
    pub fn from_upstream_status(
        proxy: &str,
        status: reqwest::StatusCode,
        retry_after: Option<String>,
        not_found: impl FnOnce() -> RegistryError,
    ) -> RegistryError {
        let proxy = proxy.to_owned();
        match status.as_u16() {
            404 => not_found(),
            401 => RegistryError::Unauthorized { proxy, status },
            403 => RegistryError::Denied { proxy },
            429 => RegistryError::TooManyRequests { proxy, retry_after },
            _ => RegistryError::Unavailable {
                proxy,
                detail: format!("answered {status}"),
            },
        }
    }

    pub fn from_upstream(proxy: &str, error: &UpstreamError) -> RegistryError {
        match error {
            UpstreamError::TokenRefused { .. } => RegistryError::Unauthorized {
                proxy: proxy.to_owned(),
                status: StatusCode::UNAUTHORIZED,
            },
            other => RegistryError::Unavailable {
                proxy: proxy.to_owned(),
                detail: other.to_string(),
            },
        }
    }

    pub fn from_fetch(
        proxy: &str,
        error: FetchError,
        not_found: impl FnOnce() -> RegistryError,
    ) -> RegistryError {
        match error {
            FetchError::Status {
                status,
                retry_after,
            } => Self::from_upstream_status(proxy, status, retry_after, not_found),
            FetchError::Upstream(e) => Self::from_upstream(proxy, &e),
            FetchError::Store(e)
                if matches!(*e, airlock_store::StoreError::DigestMismatch { .. }) =>
            {
                RegistryError::BadUpstreamContent {
                    proxy: proxy.to_owned(),
                    detail: e.to_string(),
                }
            }
            // The bucket failed, not the upstream: the same 503 as any storage outage.
            FetchError::Store(e) if matches!(*e, airlock_store::StoreError::Full { .. }) => {
                tracing::warn!(target: "airlock::store", error = %e, "blob refused");
                RegistryError::CacheFull(e.to_string())
            }
            FetchError::Store(e) if matches!(*e, airlock_store::StoreError::Unavailable { .. }) => {
                tracing::warn!(target: "airlock::store", error = %e, "storage unavailable");
                RegistryError::StorageUnavailable
            }
            other => RegistryError::Unavailable {
                proxy: proxy.to_owned(),
                detail: other.to_string(),
            },
        }
    }

    /// A small upstream body that could not be read whole.
    pub fn body(proxy: &str, what: &str, error: &airlock_upstream::BodyError) -> RegistryError {
        let proxy = proxy.to_owned();
        match error {
            airlock_upstream::BodyError::TooLarge { .. } => RegistryError::BadUpstreamContent {
                proxy,
                detail: format!("{what}: {error}"),
            },
            airlock_upstream::BodyError::Broken(_) => RegistryError::Unavailable {
                proxy,
                detail: format!("{what}: {error}"),
            },
        }
    }

    /// The proxy whose upstream caused this error, if one did.
    fn upstream_proxy(&self) -> Option<&str> {
        match self {
            RegistryError::Unauthorized { proxy, .. }
            | RegistryError::Denied { proxy }
            | RegistryError::TooManyRequests { proxy, .. }
            | RegistryError::Unavailable { proxy, .. }
            | RegistryError::BadUpstreamContent { proxy, .. } => Some(proxy),
            _ => None,
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            RegistryError::NameUnknown { .. } => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            RegistryError::NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            RegistryError::ManifestInvalid(_) | RegistryError::ManifestRejected(_) => {
                (StatusCode::BAD_REQUEST, "MANIFEST_INVALID")
            }
            RegistryError::DigestInvalid(_) | RegistryError::ContentDigestMismatch(_) => {
                (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
            }
            RegistryError::ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            RegistryError::BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            RegistryError::Unauthorized { .. } | RegistryError::LoginRequired { .. } => {
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
            }
            RegistryError::Denied { .. } | RegistryError::PolicyDenied { .. } => {
                (StatusCode::FORBIDDEN, "DENIED")
            }
            RegistryError::TooManyRequests { .. }
            | RegistryError::LoginThrottled { .. }
            | RegistryError::TooManyUploads(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS")
            }
            RegistryError::Unavailable { .. } | RegistryError::BadUpstreamContent { .. } => {
                (StatusCode::BAD_GATEWAY, "UNAVAILABLE")
            }
            RegistryError::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UNKNOWN")
            }
            RegistryError::StorageUnavailable | RegistryError::CacheFull(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            RegistryError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            RegistryError::Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            RegistryError::BlobUploadUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            RegistryError::BlobUploadInvalid(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            RegistryError::UploadOutOfOrder { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID")
            }
            RegistryError::SizeInvalid { .. } => (StatusCode::BAD_REQUEST, "SIZE_INVALID"),
            RegistryError::ManifestTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID")
            }
            // distribution answers 400 for a manifest naming what it does not hold.
            RegistryError::ManifestBlobUnknown(_) => {
                (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
            }
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() || status == StatusCode::BAD_GATEWAY {
            tracing::warn!(target: "airlock::registry", code, error = %self, "request failed");
        }
        let body = serde_json::json!({ "errors": [{ "code": code, "message": self.to_string(), "detail": null }] });
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(proxy) = self.upstream_proxy() {
            response.extensions_mut().insert(crate::UpstreamFailure {
                proxy: proxy.to_owned(),
            });
        }
        let headers = response.headers_mut();
        headers.insert(
            "docker-distribution-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        match &self {
            RegistryError::TooManyRequests {
                retry_after: Some(value),
                ..
            } => {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(header::RETRY_AFTER, value);
                }
            }
            RegistryError::LoginRequired { challenge, .. } => {
                if let Ok(value) = HeaderValue::from_str(&challenge.header()) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            RegistryError::LoginThrottled { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            RegistryError::UploadOutOfOrder { written, .. } => {
                headers.insert(header::RANGE, crate::hosted::upload_range(*written));
            }
            RegistryError::RangeNotSatisfiable { size } => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_outage_during_a_download_is_storage_unavailable_not_the_upstream() {
        let outage = airlock_store::StoreError::Unavailable {
            context: "uploading".into(),
            reason: "connection refused to the bucket".into(),
        };
        let error = RegistryError::from_fetch(
            "hub",
            FetchError::Store(std::sync::Arc::new(outage)),
            || RegistryError::BlobUnknown("x".into()),
        );
        assert!(
            matches!(error, RegistryError::StorageUnavailable),
            "{error:?}"
        );
        let full = airlock_store::StoreError::Io {
            context: "writing".into(),
            source: std::io::Error::other("disk full"),
        };
        let error =
            RegistryError::from_fetch("hub", FetchError::Store(std::sync::Arc::new(full)), || {
                RegistryError::BlobUnknown("x".into())
            });
        assert!(
            matches!(error, RegistryError::Unavailable { .. }),
            "{error:?}"
        );
    }
}
