//! Serving a stored blob to an HTTP client: the one place that answers `If-None-Match`
//! with 304, a single `Range` with 206 (or 416), HEAD without a body, and sets the `ETag`
//! (the quoted digest), `Content-Type`, `Content-Length` and `Accept-Ranges` of a cached
//! file. The registry and every package format call it; each adds its own protocol
//! headers and cache marks around what it returns.

use airlock_types::range::{self, RangeRequest};
use airlock_types::{ClientRequest, Digest};
use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::body::FileBody;
use crate::{BlobStore, StoreError};

/// A blob the store holds, and the media type to serve it as.
#[derive(Debug, Clone, Copy)]
pub struct StoredBlob<'a> {
    pub digest: &'a Digest,
    pub size: u64,
    pub content_type: &'a str,
}

/// Why a stored blob could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The range starts past the end of the blob; the response says how large it is.
    #[error("the requested range is outside the {size} bytes of the blob")]
    RangeNotSatisfiable { size: u64 },
    /// The blob was evicted between its lookup and its first read.
    #[error("{0} vanished from the store")]
    Vanished(Digest),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The response to `request` for `blob`: 304 when the client holds the digest's `ETag`
/// (or `*`), else 200 or 206 with the bytes streamed from the store (none for HEAD): one
/// buffer per body, and no chunk read before the connection has sent the one before.
pub async fn serve_blob(
    store: &dyn BlobStore,
    blob: StoredBlob<'_>,
    request: &ClientRequest,
) -> Result<Response, ServeError> {
    let etag = etag(blob.digest);
    if request.holds(&etag, true) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
            .headers_mut()
            .insert(header::ETAG, etag_value(&etag));
        return Ok(response);
    }
    let size = blob.size;
    let (offset, length, partial) = match range::resolve(request.range, size) {
        RangeRequest::Unsatisfiable => return Err(ServeError::RangeNotSatisfiable { size }),
        RangeRequest::Full => (0, size, None),
        RangeRequest::Partial(r) => (r.start, r.byte_count(), Some(r)),
    };
    let body = if request.is_head() {
        Body::empty()
    } else {
        let file = store
            .open_file(blob.digest)
            .await?
            .ok_or_else(|| ServeError::Vanished(blob.digest.clone()))?;
        Body::new(FileBody::new(file, offset, length))
    };
    let mut response = Response::new(body);
    set_blob_headers(
        response.headers_mut(),
        blob.digest,
        blob.content_type,
        Some(length),
    );
    if let Some(r) = partial {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = format!("bytes {}-{}/{size}", r.start, r.end);
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).expect("digits and ascii"),
        );
    }
    Ok(response)
}

/// The headers of a blob's (full or partial) representation: its media type, its digest
/// as the `ETag`, `Accept-Ranges`, and the length when known.
pub fn set_blob_headers(
    headers: &mut HeaderMap,
    digest: &Digest,
    content_type: &str,
    length: Option<u64>,
) {
    let content_type = HeaderValue::from_str(content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::ETAG, etag_value(&etag(digest)));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
}

/// The `ETag` of a blob: its digest, quoted.
#[must_use]
pub fn etag(digest: &Digest) -> String {
    format!("\"{digest}\"")
}

fn etag_value(etag: &str) -> HeaderValue {
    HeaderValue::from_str(etag).expect("a digest is ascii")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use airlock_types::ReadMethod;
    use airlock_types::range::Spec;

    async fn stored(bytes: &[u8]) -> (MemoryStore, Digest) {
        let store = MemoryStore::default();
        let mut writer = store.create(None).await.unwrap();
        writer.write(bytes).await.unwrap();
        let digest = writer.commit().await.unwrap().digest;
        (store, digest)
    }

    async fn body(response: Response) -> Vec<u8> {
        use http_body_util::BodyExt;
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn full_range_head_and_not_modified() {
        let (store, digest) = stored(b"0123456789").await;
        let blob = StoredBlob {
            digest: &digest,
            size: 10,
            content_type: "text/plain",
        };
        let full = serve_blob(&store, blob, &ClientRequest::get())
            .await
            .unwrap();
        assert_eq!(full.status(), StatusCode::OK);
        assert_eq!(full.headers()[header::ETAG], etag(&digest).as_str());
        assert_eq!(full.headers()[header::CONTENT_LENGTH], "10");
        assert_eq!(body(full).await, b"0123456789");

        let mut request = ClientRequest::get();
        request.range = Some(Spec::Suffix(3));
        let partial = serve_blob(&store, blob, &request).await.unwrap();
        assert_eq!(partial.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(partial.headers()[header::CONTENT_RANGE], "bytes 7-9/10");
        assert_eq!(body(partial).await, b"789");

        request.range = Some(Spec::From(10, None));
        assert!(matches!(
            serve_blob(&store, blob, &request).await,
            Err(ServeError::RangeNotSatisfiable { size: 10 })
        ));

        let mut head = ClientRequest::get();
        head.method = ReadMethod::Head;
        let head = serve_blob(&store, blob, &head).await.unwrap();
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "10");
        assert!(body(head).await.is_empty());

        let mut conditional = ClientRequest::get();
        conditional.if_none_match = Some(format!("\"x\", {}", etag(&digest)));
        let not_modified = serve_blob(&store, blob, &conditional).await.unwrap();
        assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
        assert!(body(not_modified).await.is_empty());
    }

    #[tokio::test]
    async fn an_evicted_blob_is_an_error_not_an_empty_body() {
        let (store, digest) = stored(b"x").await;
        store.delete(&digest).await.unwrap();
        let blob = StoredBlob {
            digest: &digest,
            size: 1,
            content_type: "text/plain",
        };
        assert!(matches!(
            serve_blob(&store, blob, &ClientRequest::get()).await,
            Err(ServeError::Vanished(_))
        ));
    }
}
