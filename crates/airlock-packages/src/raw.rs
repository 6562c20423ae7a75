//! `format = "raw"`: any path under the upstream. Files listed in the proxy's `sha256`
//! table are immutable and verified before the first byte goes out; the rest are refreshed
//! after `metadata_ttl`.

use airlock_types::ClientRequest;
use airlock_upstream::Target;
use axum::response::Response;

use crate::{Origin, PackageError, Spec};

pub(crate) async fn serve(
    origin: &Origin,
    path: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    // The empty path is the upstream itself (`get.k3s.io` serves its install script at
    // `/`); other directory paths have no file to serve.
    if path.ends_with('/') {
        return Err(PackageError::NotFound);
    }
    if path.is_empty() {
        // The upstream URL as configured (not the directory form requests under it use).
        let url = Target::Url(origin.config().upstream.to_string());
        return origin.get(Spec::ttl_from(url, ""), request).await;
    }
    match origin.pin(path) {
        Some(digest) => {
            let digest = digest.clone();
            origin
                .get(
                    Spec::immutable(path, &digest, "application/octet-stream"),
                    request,
                )
                .await
        }
        None => origin.get(Spec::ttl(path), request).await,
    }
}
