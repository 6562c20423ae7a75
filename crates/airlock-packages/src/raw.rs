//! `format = "raw"`: any path under the upstream. Files listed in the proxy's `sha256`
//! table are immutable and verified; the rest are refreshed after `metadata_ttl`.

use airlock_types::Digest;
use axum::response::Response;
use http::HeaderMap;

use crate::{Origin, PackageError};

pub(crate) async fn serve(
    origin: &Origin,
    path: &str,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, PackageError> {
    if path.is_empty() || path.ends_with('/') {
        return Err(PackageError::NotFound);
    }
    match origin.config().sha256.get(path) {
        Some(hex) => {
            let digest: Digest = format!("sha256:{hex}")
                .parse()
                .map_err(|e| PackageError::Internal(format!("{e}")))?;
            origin
                .immutable(path, &digest, "application/octet-stream", head, headers)
                .await
        }
        None => origin.refreshed(path, head, headers).await,
    }
}
