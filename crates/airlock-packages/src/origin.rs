//! One package proxy's upstream and cache: immutable files verified against the digest an
//! index published, and files refreshed by TTL (index pages, metadata, raw files without a
//! published digest) that are revalidated with conditional requests, remembered as missing
//! for `negative_ttl` after a 404 (in a bounded in-memory map: a client must not be able to
//! grow the durable index by asking for paths that do not exist), and served stale when the
//! upstream cannot answer. Documents (index pages a format rewrites) are refreshed files
//! too, cached once per representation, bounded in size and checked before they are cached.
//!
//! Every upstream request names a [`Target`]: a path under the upstream, or a URL a parsed
//! index listed; `airlock_upstream::target` decides what either may reach.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_config::ProxyConfig;
use airlock_store::{BlobStore, FileRecord, MetaIndex, unix_now};
use airlock_types::range::{self, RangeRequest};
use airlock_types::{CacheOutcome, Digest};
use airlock_upstream::fetch::{Downloads, FetchError, KeyedLocks};
use airlock_upstream::{Target, Upstream, UpstreamError};
use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use reqwest::Method;
use tokio::io::AsyncReadExt;

use crate::PackageError;
use crate::checksum::{Algorithm, Checksum, Hasher};

/// How many upstream 404s a proxy remembers; the oldest are forgotten first.
const MISSING_KEPT: usize = 8192;

/// A package proxy: its configuration, upstream client, and the shared store.
pub struct Origin {
    config: ProxyConfig,
    upstream: Upstream,
    store: Arc<dyn BlobStore>,
    index: MetaIndex,
    downloads: Arc<Downloads>,
    locks: KeyedLocks,
    /// Keys the upstream answered 404 for, and when.
    missing: Mutex<hashlink::LruCache<String, Instant>>,
    /// The config's `sha256` table by canonical path (`%2B` and `+` are one file).
    pins: std::collections::HashMap<String, Digest>,
    /// What the format derived from this proxy's cached documents.
    pub(crate) derived: crate::derived::Derived,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Origin({})", self.config.name)
    }
}

/// Checks a document's bytes (and upstream `Content-Type`) before they are cached.
pub type Check<'a> = dyn Fn(&[u8], Option<&str>) -> Result<(), String> + Send + Sync + 'a;

/// One representation of a document: cached under its own key, asked for with `accept`.
#[derive(Debug, Clone, Copy)]
pub struct Variant<'a> {
    /// Distinguishes the cache entry (`<path>#<name>`; `#` never occurs in a request path).
    pub name: &'a str,
    pub accept: &'a str,
}

/// A document's cached bytes, for a format to rewrite.
#[derive(Debug)]
pub struct Document {
    pub bytes: Vec<u8>,
    /// The upstream's `Content-Type`.
    pub content_type: Option<String>,
    /// `X-Airlock-Cache`: hit, miss, revalidated or stale.
    pub cache: &'static str,
}

/// Where a document's cached bytes are, for a format that derives something from them.
#[derive(Debug)]
pub struct DocumentEntry {
    pub digest: Digest,
    /// The upstream's `Content-Type`.
    pub content_type: Option<String>,
    /// `X-Airlock-Cache`: hit, miss, revalidated or stale.
    pub cache: &'static str,
}

/// What [`Origin::refresh`] looks up: the upstream target, its cache key, and for
/// documents the `Accept` sent and the bound and check applied before caching.
struct Refresh<'a> {
    target: Target,
    key: &'a str,
    accept: Option<&'a str>,
    checked: Option<(usize, &'a Check<'a>)>,
}

impl<'a> Refresh<'a> {
    fn plain(path: &'a str) -> Self {
        Self {
            target: Target::from(path),
            key: path,
            accept: None,
            checked: None,
        }
    }

    fn path(&self) -> &str {
        self.target.as_str()
    }
}

/// A cache entry with content, and how it was obtained.
struct Found {
    record: FileRecord,
    digest: Digest,
    size: u64,
    outcome: CacheOutcome,
}

impl Origin {
    /// Fails when a `sha256` path of the config is not a plain path below the upstream.
    pub fn new(
        config: ProxyConfig,
        upstream: Upstream,
        store: Arc<dyn BlobStore>,
        index: MetaIndex,
        downloads: Arc<Downloads>,
    ) -> Result<Self, UpstreamError> {
        let mut pins = std::collections::HashMap::new();
        for (path, hex) in &config.sha256 {
            let setup = |reason: String| UpstreamError::Setup {
                proxy: config.name.clone(),
                reason,
            };
            let canonical = airlock_upstream::target::client_path(path)
                .map_err(|e| setup(format!("sha256 path {path:?} is refused: {e}")))?;
            let digest =
                Digest::sha256_hex(hex).map_err(|e| setup(format!("sha256 for {path:?}: {e}")))?;
            pins.insert(canonical, digest);
        }
        Ok(Self {
            config,
            upstream,
            store,
            index,
            downloads,
            locks: KeyedLocks::default(),
            derived: crate::derived::Derived::default(),
            missing: Mutex::new(hashlink::LruCache::new(MISSING_KEPT)),
            pins,
        })
    }

    /// The digest the config pins the file at canonical `path` to.
    pub fn pin(&self, path: &str) -> Option<&Digest> {
        self.pins.get(path)
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// The upstream base URL (a directory), for resolving what an index lists.
    pub fn upstream_base(&self) -> &reqwest::Url {
        self.upstream.base()
    }

    fn upstream_error(&self, path: &str, detail: impl std::fmt::Display) -> PackageError {
        PackageError::Upstream {
            proxy: self.config.name.clone(),
            path: path.to_owned(),
            detail: detail.to_string(),
        }
    }

    /// An upstream request that failed or was refused, as the client should see it: a path
    /// that would leave the upstream is the client's error, anything else the upstream's.
    fn request_error(&self, path: &str, error: UpstreamError) -> PackageError {
        match error {
            UpstreamError::PathRefused { path, reason } => {
                PackageError::BadPath(format!("{path} ({})", reason.reason))
            }
            other => self.upstream_error(path, other),
        }
    }

    /// Whether the upstream answered 404 for `key` less than `negative_ttl` ago.
    fn known_missing(&self, key: &str) -> bool {
        let mut missing = self.missing.lock().expect("missing map");
        match missing.get(key) {
            Some(at) if at.elapsed() < self.config.negative_ttl.0 => true,
            Some(_) => {
                missing.remove(key);
                false
            }
            None => false,
        }
    }

    /// Remembers that the upstream answered 404 for `key`.
    fn remember_missing(&self, key: &str) {
        self.missing
            .lock()
            .expect("missing map")
            .insert(key.to_owned(), Instant::now());
    }

    /// A file that must hash to `digest`: from the store, or fetched once from `source`
    /// (concurrent requests share the download) and verified before the first byte goes
    /// out. A client of a missing file waits for the whole download: a package pinned by
    /// a digest is never partly delivered (`curl … | sh` must not run a tampered script's
    /// first line), and a mismatch is an error status, not a broken body.
    pub async fn immutable(
        &self,
        source: impl Into<Target>,
        digest: &Digest,
        content_type: &str,
        head: bool,
        headers: &HeaderMap,
    ) -> Result<Response, PackageError> {
        let source = source.into();
        let path = source.as_str();
        if let Some(size) = self.store.stat(digest).await.map_err(internal)? {
            self.index.touch(digest, size);
            return self
                .serve_stored(digest, size, content_type, head, headers, CacheOutcome::Hit)
                .await;
        }
        if self.config.offline {
            return Err(PackageError::Offline {
                proxy: self.config.name.clone(),
                path: path.to_owned(),
            });
        }
        // Refused targets fail here, before a download task exists.
        self.upstream
            .url(&source)
            .map_err(|e| self.request_error(path, e))?;
        let request = self.upstream.resumable_get(source.clone(), "");
        let fetch_error = |e: FetchError| match e {
            FetchError::Status { status, .. } if status == StatusCode::NOT_FOUND => {
                PackageError::NotFoundUpstream {
                    path: path.to_owned(),
                }
            }
            FetchError::Store(store) => PackageError::Verification {
                proxy: self.config.name.clone(),
                path: path.to_owned(),
                detail: store.to_string(),
            },
            other => self.upstream_error(path, other),
        };
        if head {
            // No body goes out, so nothing unverified can: answer now, the download goes on.
            let body = self
                .downloads
                .fetch(digest, 0, request)
                .await
                .map_err(fetch_error)?;
            let mut response = Response::new(Body::empty());
            set_headers(response.headers_mut(), digest, content_type, body.size);
            mark(&mut response, CacheOutcome::Miss);
            return Ok(response);
        }
        let size = self
            .downloads
            .complete(digest, request)
            .await
            .map_err(fetch_error)?;
        self.index.touch(digest, size);
        self.serve_stored(
            digest,
            size,
            content_type,
            false,
            headers,
            CacheOutcome::Miss,
        )
        .await
    }

    /// A file refreshed after `metadata_ttl`.
    pub async fn refreshed(
        &self,
        path: &str,
        head: bool,
        headers: &HeaderMap,
    ) -> Result<Response, PackageError> {
        let found = self.refresh(&Refresh::plain(path)).await?;
        self.serve_found(&found, head, headers).await
    }

    /// A file refreshed after `metadata_ttl`, fetched from `source` (the configured
    /// upstream URL, or a URL an index listed) and cached under `key`.
    pub async fn refreshed_from(
        &self,
        source: Target,
        key: &str,
        head: bool,
        headers: &HeaderMap,
    ) -> Result<Response, PackageError> {
        let found = self
            .refresh(&Refresh {
                target: source,
                key,
                accept: None,
                checked: None,
            })
            .await?;
        self.serve_found(&found, head, headers).await
    }

    /// A file that never changes once cached (a release artifact), kept under `key`: served
    /// from the store when it was cached before, `Ok(None)` when it has to be fetched with
    /// [`Origin::fetch_pinned`]. A 404 remembered for `negative_ttl` is an error here.
    pub async fn pinned(
        &self,
        path: &str,
        key: &str,
        head: bool,
        headers: &HeaderMap,
    ) -> Result<Option<Response>, PackageError> {
        if self.known_missing(key) {
            return Err(PackageError::NotFoundUpstream {
                path: path.to_owned(),
            });
        }
        let Some(record) = self
            .index
            .file(&self.config.name, key)
            .await
            .map_err(internal)?
        else {
            return Ok(None);
        };
        let Some(digest) = record.digest.clone() else {
            return Ok(None);
        };
        let Some(size) = self.store.stat(&digest).await.map_err(internal)? else {
            return Ok(None);
        };
        self.serve_record(&record, &digest, size, head, headers, CacheOutcome::Hit)
            .await
            .map(Some)
    }

    /// Fetches a file that never changes once cached and keeps it under `key`, after its
    /// bytes matched `expected` (with `None`, the upstream published no checksum and the
    /// bytes are kept as they came). One upstream download per key: concurrent requests
    /// wait for it, then read the store. Bytes that do not match are never stored.
    pub async fn fetch_pinned(
        &self,
        source: impl Into<Target>,
        key: &str,
        expected: Option<&Checksum>,
        head: bool,
        headers: &HeaderMap,
    ) -> Result<Response, PackageError> {
        let source = source.into();
        let path = source.as_str();
        let _turn = self.locks.lock(key).await;
        if let Some(response) = self.pinned(path, key, head, headers).await? {
            return Ok(response);
        }
        if self.config.offline {
            return Err(PackageError::Offline {
                proxy: self.config.name.clone(),
                path: path.to_owned(),
            });
        }
        let response = self
            .upstream
            .send(Method::GET, source.clone(), HeaderMap::new(), "")
            .await
            .map_err(|e| self.request_error(path, e))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            self.remember_missing(key);
            return Err(PackageError::NotFoundUpstream {
                path: path.to_owned(),
            });
        }
        if status != StatusCode::OK {
            return Err(self.upstream_error(path, format!("upstream answered {status}")));
        }
        let text = |name: header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = text(header::CONTENT_TYPE);
        let etag = text(header::ETAG);
        let last_modified = text(header::LAST_MODIFIED);
        let declared = response.content_length();
        // A sha256 is checked by the store itself; other algorithms alongside it.
        let sha256 = match expected {
            Some(c) if c.algorithm == Algorithm::Sha256 => {
                Some(Digest::sha256_hex(&c.hex).map_err(internal)?)
            }
            _ => None,
        };
        let mut hasher = expected.map(|c| Hasher::new(c.algorithm));
        let mut writer = self.store.create(sha256.as_ref()).await.map_err(internal)?;
        let mut body = response.bytes_stream();
        use futures_util::StreamExt;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                self.upstream_error(path, airlock_upstream::error_chain(&e.without_url()))
            })?;
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&chunk);
            }
            writer.write(&chunk).await.map_err(internal)?;
        }
        if let Some(declared) = declared.filter(|n| *n != writer.written()) {
            return Err(self.upstream_error(
                path,
                format!("body ended after {} of {declared} bytes", writer.written()),
            ));
        }
        if let (Some(expected), Some(hasher)) = (expected, hasher) {
            let actual = hasher.finish();
            if actual != expected.hex {
                // Dropping the writer discards the bytes: nothing was stored.
                return Err(PackageError::Verification {
                    proxy: self.config.name.clone(),
                    path: path.to_owned(),
                    detail: format!(
                        "its {} is {actual}, the upstream's .{} file says {}",
                        expected.algorithm.extension(),
                        expected.algorithm.extension(),
                        expected.hex
                    ),
                });
            }
        }
        let committed = writer.commit().await.map_err(|e| match e {
            airlock_store::StoreError::DigestMismatch { .. } => PackageError::Verification {
                proxy: self.config.name.clone(),
                path: path.to_owned(),
                detail: e.to_string(),
            },
            other => internal(other),
        })?;
        let record = self
            .remember(key, &committed, content_type, etag, last_modified)
            .await?;
        self.serve_record(
            &record,
            &committed.digest,
            committed.size,
            head,
            headers,
            CacheOutcome::Miss,
        )
        .await
    }

    /// A small document refreshed after `metadata_ttl` and handed back whole, for a format
    /// to rewrite (index pages). Each `variant` of `path` (one per `Accept` sent upstream)
    /// is cached on its own; a body larger than `max` bytes, or one `check` rejects, is
    /// never cached and counts as an upstream failure (the previous copy is served stale).
    pub async fn document(
        &self,
        path: &str,
        variant: &Variant<'_>,
        max: usize,
        check: &Check<'_>,
    ) -> Result<Document, PackageError> {
        let entry = self.document_entry(path, variant, max, check).await?;
        let bytes = self.read_stored(&entry.digest, max as u64).await?;
        Ok(Document {
            bytes,
            content_type: entry.content_type,
            cache: entry.cache,
        })
    }

    /// [`Origin::document`] without reading it: the digest of the cached bytes, for a
    /// format that keeps what it derives from them by digest.
    pub async fn document_entry(
        &self,
        path: &str,
        variant: &Variant<'_>,
        max: usize,
        check: &Check<'_>,
    ) -> Result<DocumentEntry, PackageError> {
        let key = format!("{path}#{}", variant.name);
        let found = self
            .refresh(&Refresh {
                target: Target::from(path),
                key: &key,
                accept: Some(variant.accept),
                checked: Some((max, check)),
            })
            .await?;
        self.index.touch(&found.digest, found.size);
        if found.size > max as u64 {
            return Err(self.upstream_error(path, format!("the page is larger than {max} bytes")));
        }
        Ok(DocumentEntry {
            digest: found.digest,
            content_type: found.record.content_type,
            cache: found.outcome.as_str(),
        })
    }

    /// A file refreshed after `metadata_ttl`, as the digest and size of its cached content
    /// and how it was obtained, for a format that derives something from it and keeps that
    /// by digest. With `checked`, a body larger than the bound or one the check rejects is
    /// never cached (as for [`Origin::document`]).
    pub async fn refreshed_digest(
        &self,
        path: &str,
        checked: Option<(usize, &Check<'_>)>,
    ) -> Result<(Digest, u64, &'static str), PackageError> {
        let found = self
            .refresh(&Refresh {
                target: Target::from(path),
                key: path,
                accept: None,
                checked,
            })
            .await?;
        self.index.touch(&found.digest, found.size);
        Ok((found.digest, found.size, found.outcome.as_str()))
    }

    /// A file refreshed after `metadata_ttl`, served as cached, that `check` must accept (and
    /// be at most `max` bytes) before it is cached.
    pub async fn refreshed_checked(
        &self,
        path: &str,
        max: usize,
        check: &Check<'_>,
        head: bool,
        headers: &HeaderMap,
    ) -> Result<Response, PackageError> {
        let found = self
            .refresh(&Refresh {
                target: Target::from(path),
                key: path,
                accept: None,
                checked: Some((max, check)),
            })
            .await?;
        self.serve_found(&found, head, headers).await
    }

    /// The size of a blob that must be in the store.
    async fn stored_size(&self, digest: &Digest) -> Result<u64, PackageError> {
        self.store
            .stat(digest)
            .await
            .map_err(internal)?
            .ok_or_else(|| PackageError::Internal(format!("{digest} vanished from the store")))
    }

    /// A stored blob read whole; one larger than `max` bytes is refused.
    pub async fn read_stored(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, PackageError> {
        let size = self.stored_size(digest).await?;
        if size > max {
            return Err(PackageError::Internal(format!(
                "{digest} is {size} bytes, more than the {max} allowed"
            )));
        }
        let reader = self.store.open(digest, 0).await.map_err(internal)?;
        let mut reader = reader
            .ok_or_else(|| PackageError::Internal(format!("{digest} vanished from the store")))?;
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader.read_to_end(&mut bytes).await.map_err(internal)?;
        Ok(bytes)
    }

    /// Serves bytes a format derived from cached content, with `If-None-Match` support.
    pub fn serve_derived(
        bytes: Vec<u8>,
        content_type: &str,
        head: bool,
        headers: &HeaderMap,
        cache: &'static str,
    ) -> Response {
        let digest = Digest::of(&bytes);
        let etag = format!("\"{digest}\"");
        let matches = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        let size = bytes.len() as u64;
        let mut response = if matches {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else if head {
            Response::new(Body::empty())
        } else {
            Response::new(Body::from(bytes))
        };
        let outcome = CacheOutcome::parse(cache).unwrap_or(CacheOutcome::Miss);
        set_headers(
            response.headers_mut(),
            &digest,
            content_type,
            (!matches).then_some(size),
        );
        mark(&mut response, outcome);
        response
    }

    /// The cache entry of `spec.key`: fresh from the cache, revalidated, fetched, or stale.
    async fn refresh(&self, spec: &Refresh<'_>) -> Result<Found, PackageError> {
        let path = spec.path();
        if let Some(found) = self.fresh(spec).await? {
            return Ok(found);
        }
        // One upstream conversation per key: concurrent requests wait, then find the result.
        let _turn = self.locks.lock(spec.key).await;
        if let Some(found) = self.fresh(spec).await? {
            return Ok(found);
        }
        let cached = self
            .index
            .file(&self.config.name, spec.key)
            .await
            .map_err(internal)?;
        let cached_content = match &cached {
            Some(FileRecord {
                digest: Some(digest),
                ..
            }) => self
                .store
                .stat(digest)
                .await
                .map_err(internal)?
                .map(|size| (digest.clone(), size)),
            _ => None,
        };
        if self.config.offline {
            return match (cached, cached_content) {
                (Some(record), Some((digest, size))) => Ok(Found {
                    record,
                    digest,
                    size,
                    outcome: CacheOutcome::Hit,
                }),
                _ => Err(PackageError::Offline {
                    proxy: self.config.name.clone(),
                    path: path.to_owned(),
                }),
            };
        }
        let mut conditional = HeaderMap::new();
        if let Some(accept) = spec.accept.and_then(|v| HeaderValue::from_str(v).ok()) {
            conditional.insert(header::ACCEPT, accept);
        }
        if let (Some(record), Some(_)) = (&cached, &cached_content) {
            if let Some(etag) = record
                .etag
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                conditional.insert(header::IF_NONE_MATCH, etag);
            }
            if let Some(date) = record
                .last_modified
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                conditional.insert(header::IF_MODIFIED_SINCE, date);
            }
        }
        let stale = |why: String| self.stale(path, cached.clone(), cached_content.clone(), why);
        let response = match self
            .upstream
            .send(Method::GET, spec.target.clone(), conditional, "")
            .await
        {
            Ok(response) => response,
            Err(e @ (UpstreamError::PathRefused { .. } | UpstreamError::UrlRefused { .. })) => {
                return Err(self.request_error(path, e));
            }
            Err(e) => return stale(e.to_string()),
        };
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            if let (Some(record), Some((digest, size))) = (&cached, &cached_content) {
                let refreshed = FileRecord {
                    checked_at: unix_now(),
                    ..record.clone()
                };
                self.index
                    .set_file(&self.config.name, spec.key, &refreshed)
                    .await
                    .map_err(internal)?;
                return Ok(Found {
                    record: refreshed,
                    digest: digest.clone(),
                    size: *size,
                    outcome: CacheOutcome::Revalidated,
                });
            }
        }
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            self.remember_missing(spec.key);
            return Err(PackageError::NotFoundUpstream {
                path: path.to_owned(),
            });
        }
        if status != StatusCode::OK {
            return stale(format!("upstream answered {status}"));
        }
        let text = |name: header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = text(header::CONTENT_TYPE);
        let etag = text(header::ETAG);
        let last_modified = text(header::LAST_MODIFIED);
        let committed = match spec.checked {
            None => {
                let expected = response.content_length();
                let committed = self.store_body(path, response).await?;
                if expected.is_some_and(|n| n != committed.size) {
                    return Err(self.upstream_error(
                        path,
                        format!(
                            "body ended after {} of {} bytes",
                            committed.size,
                            expected.unwrap_or(0)
                        ),
                    ));
                }
                committed
            }
            Some((max, check)) => {
                let bytes = match airlock_upstream::read_body(response, max).await {
                    Ok(bytes) => bytes,
                    Err(e) => return stale(e.to_string()),
                };
                if let Err(why) = check(&bytes, content_type.as_deref()) {
                    return stale(why);
                }
                let mut writer = self.store.create(None).await.map_err(internal)?;
                writer.write(&bytes).await.map_err(internal)?;
                writer.commit().await.map_err(internal)?
            }
        };
        let record = self
            .remember(spec.key, &committed, content_type, etag, last_modified)
            .await?;
        Ok(Found {
            record,
            digest: committed.digest,
            size: committed.size,
            outcome: CacheOutcome::Miss,
        })
    }

    /// Records a verified, committed file under `key` (with the blob it is, in one index
    /// transaction) as fetched now.
    async fn remember(
        &self,
        key: &str,
        committed: &airlock_store::Committed,
        content_type: Option<String>,
        etag: Option<String>,
        last_modified: Option<String>,
    ) -> Result<FileRecord, PackageError> {
        let record = FileRecord {
            digest: Some(committed.digest.clone()),
            content_type,
            etag,
            last_modified,
            checked_at: unix_now(),
        };
        self.index
            .record_file_blob(
                &committed.digest,
                committed.size,
                &self.config.name,
                key,
                &record,
            )
            .await
            .map_err(internal)?;
        Ok(record)
    }

    /// The cached copy when the upstream could not answer, or the upstream's failure.
    fn stale(
        &self,
        path: &str,
        record: Option<FileRecord>,
        content: Option<(Digest, u64)>,
        why: String,
    ) -> Result<Found, PackageError> {
        let (Some(record), Some((digest, size))) = (record, content) else {
            return Err(self.upstream_error(path, why));
        };
        tracing::warn!(
            target: "airlock::packages",
            proxy = %self.config.name,
            path,
            reason = why,
            "serving cached file stale: upstream could not revalidate it"
        );
        Ok(Found {
            record,
            digest,
            size,
            outcome: CacheOutcome::Stale,
        })
    }

    /// The cache entry of `spec.key` if it is within its TTL (or remembered missing).
    async fn fresh(&self, spec: &Refresh<'_>) -> Result<Option<Found>, PackageError> {
        if self.known_missing(spec.key) {
            return Err(PackageError::NotFoundUpstream {
                path: spec.path().to_owned(),
            });
        }
        let Some(record) = self
            .index
            .file(&self.config.name, spec.key)
            .await
            .map_err(internal)?
        else {
            return Ok(None);
        };
        let age = Duration::from_secs(unix_now().saturating_sub(record.checked_at));
        let Some(digest) = record.digest.clone() else {
            return Ok(None);
        };
        // Fetch times are whole seconds: an age equal to the TTL may be a moment old, so a
        // file is fresh for at least `metadata_ttl`, up to a second more (0 is never fresh).
        let ttl = self.config.metadata_ttl.0;
        if (age > ttl || ttl.is_zero()) && !self.config.offline {
            return Ok(None);
        }
        let Some(size) = self.store.stat(&digest).await.map_err(internal)? else {
            return Ok(None);
        };
        Ok(Some(Found {
            record,
            digest,
            size,
            outcome: CacheOutcome::Hit,
        }))
    }

    /// Streams an upstream body into the store, named by what it hashes to.
    async fn store_body(
        &self,
        path: &str,
        response: reqwest::Response,
    ) -> Result<airlock_store::Committed, PackageError> {
        use futures_util::StreamExt;
        let mut writer = self.store.create(None).await.map_err(internal)?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                self.upstream_error(path, airlock_upstream::error_chain(&e.without_url()))
            })?;
            writer.write(&chunk).await.map_err(internal)?;
        }
        writer.commit().await.map_err(internal)
    }

    /// Serves what [`Origin::refresh`] found.
    async fn serve_found(
        &self,
        found: &Found,
        head: bool,
        headers: &HeaderMap,
    ) -> Result<Response, PackageError> {
        self.serve_record(
            &found.record,
            &found.digest,
            found.size,
            head,
            headers,
            found.outcome,
        )
        .await
    }

    async fn serve_record(
        &self,
        record: &FileRecord,
        digest: &Digest,
        size: u64,
        head: bool,
        headers: &HeaderMap,
        outcome: CacheOutcome,
    ) -> Result<Response, PackageError> {
        self.index.touch(digest, size);
        let content_type = record
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        self.serve_stored(digest, size, content_type, head, headers, outcome)
            .await
    }

    /// Serves a stored blob with `Range` and `If-None-Match` support.
    async fn serve_stored(
        &self,
        digest: &Digest,
        size: u64,
        content_type: &str,
        head: bool,
        headers: &HeaderMap,
        outcome: CacheOutcome,
    ) -> Result<Response, PackageError> {
        let etag = format!("\"{digest}\"");
        let matches = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        if matches {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
                .headers_mut()
                .insert(header::ETAG, HeaderValue::from_str(&etag).expect("ascii"));
            mark(&mut response, outcome);
            return Ok(response);
        }
        let spec = range::parse(headers.get(header::RANGE).and_then(|v| v.to_str().ok()));
        let (offset, length, partial) = match range::resolve(spec, size) {
            RangeRequest::Unsatisfiable => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
                );
                mark(&mut response, outcome);
                return Ok(response);
            }
            RangeRequest::Full => (0, size, None),
            RangeRequest::Partial(r) => (r.start, r.byte_count(), Some(r)),
        };
        let body = if head {
            Body::empty()
        } else {
            let reader = self.store.open(digest, offset).await.map_err(internal)?;
            let reader = reader.ok_or_else(|| {
                PackageError::Internal(format!("{digest} vanished from the store"))
            })?;
            Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
                reader.take(length),
                256 * 1024,
            ))
        };
        let mut response = Response::new(body);
        set_headers(response.headers_mut(), digest, content_type, Some(length));
        mark(&mut response, outcome);
        if let Some(r) = partial {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let value = format!("bytes {}-{}/{size}", r.start, r.end);
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&value).expect("ascii"),
            );
        }
        Ok(response)
    }
}

fn set_headers(headers: &mut HeaderMap, digest: &Digest, content_type: &str, length: Option<u64>) {
    let content_type = HeaderValue::from_str(content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{digest}\"")).expect("ascii"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
}

/// Tells the client (`X-Airlock-Cache`) and the access log (the typed outcome, in the
/// response extensions) how the response relates to the cache.
fn mark(response: &mut Response, outcome: CacheOutcome) {
    response.headers_mut().insert(
        "x-airlock-cache",
        HeaderValue::from_static(outcome.as_str()),
    );
    response.extensions_mut().insert(outcome);
}

fn internal(e: impl std::fmt::Display) -> PackageError {
    PackageError::Internal(e.to_string())
}
