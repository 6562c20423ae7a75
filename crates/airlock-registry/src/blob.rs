//! Blobs: served from the store when verified there, else fetched once upstream and
//! streamed to every client that asks meanwhile; single-range requests honoured.

use airlock_store::serve::{ServeError, StoredBlob, serve_blob};
use airlock_types::{ClientRequest, Digest, ReadMethod};
use airlock_upstream::fetch::BlobBody;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use reqwest::Method;

use crate::error::internal;
use crate::route::Resolved;
use crate::{CacheOutcome, Registry, RegistryError, mark, with_api_version};
use airlock_types::range::{self, ByteRange, Spec};

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
        // Content only a push brought is not served here: it is asked of the upstream,
        // which proves it public or answers 404 (no closed project is read by digest).
        let stored = match self.store.stat(digest).await.map_err(internal)? {
            Some(_) if self.index.is_pushed(digest).await.map_err(internal)? => None,
            stored => stored,
        };
        if let Some(size) = stored {
            self.index.touch(digest, size);
            if let Some(response) = self.serve_stored(digest, size, spec, head, &name).await? {
                return Ok(response);
            }
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

    /// A blob the store holds, through the gateway's one stored-blob server; `None` when the
    /// stored copy turned out damaged (a bucket object whose bytes no longer match its
    /// digest): it is removed, and the caller fetches the blob again like any miss. The
    /// Distribution API has no conditional blob requests: `If-None-Match` is not consulted.
    pub(crate) async fn serve_stored(
        &self,
        digest: &Digest,
        size: u64,
        spec: Option<Spec>,
        head: bool,
        proxy: &str,
    ) -> Result<Option<Response>, RegistryError> {
        let request = ClientRequest {
            method: if head {
                ReadMethod::Head
            } else {
                ReadMethod::Get
            },
            if_none_match: None,
            range: spec,
            accept: None,
        };
        let blob = StoredBlob {
            digest,
            size,
            content_type: OCTETS,
        };
        let mut response = match serve_blob(self.store.as_ref(), blob, &request).await {
            Ok(response) => response,
            Err(ServeError::RangeNotSatisfiable { size }) => {
                return Err(RegistryError::RangeNotSatisfiable { size });
            }
            Err(ServeError::Vanished(_)) => {
                return Err(RegistryError::BlobUnknown(digest.to_string()));
            }
            Err(ServeError::Store(error @ airlock_store::StoreError::DigestMismatch { .. })) => {
                tracing::warn!(target: "airlock::store", %digest, %error, "the stored copy is damaged; removing it and fetching the blob again");
                self.store.delete(digest).await.map_err(internal)?;
                return Ok(None);
            }
            Err(ServeError::Store(e)) => return Err(internal(e)),
        };
        response.headers_mut().insert(
            "docker-content-digest",
            HeaderValue::from_str(&digest.to_string()).expect("ascii"),
        );
        let status = response.status();
        Ok(Some(mark(
            with_api_version(status, response),
            proxy,
            CacheOutcome::Hit,
        )))
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

/// A blob's headers on a response that does not come from the store (a miss streamed as it
/// downloads, a HEAD asked upstream): the store's, plus `Docker-Content-Digest`.
fn set_blob_headers(headers: &mut HeaderMap, digest: &Digest, length: Option<u64>) {
    airlock_store::serve::set_blob_headers(headers, digest, OCTETS, length);
    headers.insert(
        "docker-content-digest",
        HeaderValue::from_str(&digest.to_string()).expect("ascii"),
    );
}

/// Blobs are opaque bytes to the registry.
const OCTETS: &str = "application/octet-stream";
