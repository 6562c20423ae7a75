//! Blobs: served from the store when verified there, else fetched once upstream and
//! streamed to every client that asks meanwhile; single-range requests honoured.

use airlock_types::Digest;
use airlock_upstream::fetch::BlobBody;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use reqwest::Method;
use tokio::io::AsyncReadExt;

use crate::route::Resolved;
use crate::{CacheOutcome, Registry, RegistryError, mark, with_api_version};
use airlock_types::range::{self, ByteRange, RangeRequest, Spec};

impl Registry {
    pub(crate) async fn blob(
        &self,
        resolved: &Resolved,
        digest: &Digest,
        head: bool,
        headers: &HeaderMap,
    ) -> Result<Response, RegistryError> {
        let proxy = self.proxy(resolved);
        let name = proxy.config.name.clone();
        let spec = range::parse(headers.get(header::RANGE).and_then(|v| v.to_str().ok()));
        if let Some(size) = self.store.stat(digest).await.map_err(internal)? {
            self.index.touch(digest, size);
            return self.serve_stored(digest, size, spec, head, &name).await;
        }
        if proxy.config.offline {
            return Err(RegistryError::BlobUnknown(format!(
                "{digest} (proxy {name} is offline and does not hold it)"
            )));
        }
        let path = format!("v2/{}/blobs/{digest}", resolved.repo);
        let scope = format!("repository:{}:pull", resolved.repo);
        let not_found = || RegistryError::BlobUnknown(digest.to_string());
        if head {
            return self.head_upstream(resolved, digest, &path, &scope).await;
        }
        // Suffix ranges need the size first; they are rare on a miss, so serve the whole blob.
        let wanted = match spec {
            Some(Spec::From(start, end)) => Some((start, end)),
            _ => None,
        };
        let request = proxy.upstream.resumable_get(&path, &scope);
        let body = self
            .downloads
            .fetch(digest, wanted.map_or(0, |(start, _)| start), request)
            .await
            .map_err(|e| RegistryError::from_fetch(&name, e, not_found))?;
        // A known size means the stream starts at the range; an unknown one means it starts
        // at 0, and the client gets the whole blob as a plain 200.
        let response = if let (Some((start, end)), Some(rest)) = (wanted, body.size) {
            let size = start + rest;
            if rest == 0 {
                return Err(RegistryError::RangeNotSatisfiable { size });
            }
            let range = ByteRange {
                start,
                end: end.map_or(size - 1, |e| e.min(size - 1)),
            };
            partial_response_body(digest, range, size, limited(body, range.byte_count()))
        } else {
            debug_assert_eq!(body.start, 0, "a 200 carries the blob from its first byte");
            let mut out = Response::new(Body::from_stream(body.stream));
            set_blob_headers(out.headers_mut(), digest, body.size);
            with_api_version(StatusCode::OK, out)
        };
        Ok(mark(response, &name, CacheOutcome::Miss))
    }

    /// HEAD of a blob the cache does not hold: asked upstream, nothing cached.
    async fn head_upstream(
        &self,
        resolved: &Resolved,
        digest: &Digest,
        path: &str,
        scope: &str,
    ) -> Result<Response, RegistryError> {
        let proxy = self.proxy(resolved);
        let name = &proxy.config.name;
        let not_found = || RegistryError::BlobUnknown(digest.to_string());
        let response = proxy
            .upstream
            .send(Method::HEAD, path, HeaderMap::new(), scope)
            .await
            .map_err(|e| RegistryError::from_upstream(name, &e))?;
        if response.status() != StatusCode::OK {
            return Err(RegistryError::from_upstream_status(
                name,
                response.status(),
                None,
                not_found,
            ));
        }
        let mut out = Response::new(Body::empty());
        // reqwest reports a HEAD body's length (0), not the header: read the header.
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        set_blob_headers(out.headers_mut(), digest, length);
        Ok(mark(
            with_api_version(StatusCode::OK, out),
            name,
            CacheOutcome::Pass,
        ))
    }

    async fn serve_stored(
        &self,
        digest: &Digest,
        size: u64,
        spec: Option<Spec>,
        head: bool,
        proxy: &str,
    ) -> Result<Response, RegistryError> {
        let (offset, length, partial) = match range::resolve(spec, size) {
            RangeRequest::Unsatisfiable => return Err(RegistryError::RangeNotSatisfiable { size }),
            RangeRequest::Full => (0, size, None),
            RangeRequest::Partial(r) => (r.start, r.byte_count(), Some(r)),
        };
        let body = if head {
            Body::empty()
        } else {
            let reader = self.store.open(digest, offset).await.map_err(internal)?;
            let reader = reader.ok_or_else(|| RegistryError::BlobUnknown(digest.to_string()))?;
            Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
                reader.take(length),
                256 * 1024,
            ))
        };
        let response = if let Some(range) = partial {
            partial_response_body(digest, range, size, body)
        } else {
            let mut out = Response::new(body);
            set_blob_headers(out.headers_mut(), digest, Some(size));
            with_api_version(StatusCode::OK, out)
        };
        Ok(mark(response, proxy, CacheOutcome::Hit))
    }
}

fn limited(body: BlobBody, length: u64) -> Body {
    let stream = body.stream.scan(length, |remaining, chunk| {
        let item = match chunk {
            _ if *remaining == 0 => None,
            Ok(bytes) => {
                let take = (bytes.len() as u64).min(*remaining) as usize;
                *remaining -= take as u64;
                Some(Ok::<Bytes, _>(bytes.slice(..take)))
            }
            Err(e) => Some(Err(e)),
        };
        std::future::ready(item)
    });
    Body::from_stream(stream)
}

fn partial_response_body(digest: &Digest, range: ByteRange, size: u64, body: Body) -> Response {
    let mut out = Response::new(body);
    let headers = out.headers_mut();
    set_blob_headers(headers, digest, Some(range.byte_count()));
    let content_range = format!("bytes {}-{}/{size}", range.start, range.end);
    headers.insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&content_range).expect("ascii"),
    );
    with_api_version(StatusCode::PARTIAL_CONTENT, out)
}

fn set_blob_headers(headers: &mut HeaderMap, digest: &Digest, length: Option<u64>) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        "docker-content-digest",
        HeaderValue::from_str(&digest.to_string()).expect("ascii"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{digest}\"")).expect("ascii"),
    );
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
}

fn internal(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Internal(e.to_string())
}
