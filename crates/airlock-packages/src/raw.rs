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
    // The empty path is the upstream itself (`get.k3s.io` serves its install script at
    // `/`); other directory paths have no file to serve.
    if path.ends_with('/') {
        return Err(PackageError::NotFound);
    }
    if path.is_empty() {
        // The upstream URL as configured (not the directory form requests under it use).
        let url = origin.config().upstream.to_string();
        return origin.refreshed_from(&url, "", head, headers).await;
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
