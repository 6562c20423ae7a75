//! One package proxy's upstream and cache. A format asks for a file with a [`Spec`]: the
//! upstream target, the cache key and its [`Freshness`] — immutable (named by a digest an
//! index published), pinned (a release artifact checked against a published checksum), or
//! refreshed after `metadata_ttl` (index pages, metadata, raw files without a digest).
//! [`Origin::get`] answers a client's [`ClientRequest`] with it; [`Origin::entry`] and
//! [`Origin::document`] hand the cached content to a format that derives from it.
//!
//! Upstream 404s are remembered for `negative_ttl` in a bounded in-memory map (a client must
//! not be able to grow the durable index by asking for paths that do not exist); refreshed
//! files are revalidated with conditional requests and served stale when the upstream
//! cannot answer; documents are bounded in size and checked before they are cached.
//! Every upstream request names a [`Target`]: a path under the upstream, or a URL a parsed
//! index listed; `airlock_upstream::target` decides what either may reach. Bytes reach the
//! store only verified ([`ingest`]), and a stored blob goes out through
//! [`airlock_store::serve`].

mod ingest;
mod refresh;
mod spec;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use airlock_config::ProxyConfig;
use airlock_store::serve::{ServeError, StoredBlob, serve_blob, set_blob_headers};
use airlock_store::{BlobStore, MetaIndex, StoreError};
use airlock_types::{CacheOutcome, ClientRequest, Digest};
use airlock_upstream::fetch::{Downloads, FetchError, KeyedLocks};
use airlock_upstream::{Target, Upstream, UpstreamError};
use axum::body::Body;
use axum::response::Response;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};
use tokio::io::AsyncReadExt;

use crate::PackageError;
use crate::offline::Held;
use spec::OCTETS;
pub use spec::{Check, Document, Entry, Expected, Freshness, Spec, Variant};

/// How many upstream 404s a proxy remembers; the oldest are forgotten first.
const MISSING_KEPT: usize = 8192;
/// Store checks an offline view runs at once.
const HELD_CHECKS: usize = 16;

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
        for (path, digest) in &config.sha256 {
            let setup = |reason: String| UpstreamError::Setup {
                proxy: config.name.clone(),
                reason,
            };
            let canonical = airlock_upstream::target::client_path(path)
                .map_err(|e| setup(format!("sha256 path {path:?} is refused: {e}")))?;
            pins.insert(canonical, digest.clone());
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

    /// Whether the proxy is `offline = true`: it fetches nothing and lists only what it
    /// holds.
    pub fn is_offline(&self) -> bool {
        self.config.offline
    }

    /// Which of `digests` the store holds: those the metadata index records (one read
    /// however many an index lists), each confirmed in the store. A blob whose record a
    /// crash lost is not counted: an offline view then lists less, never more.
    pub(crate) async fn held(
        &self,
        digests: impl IntoIterator<Item = Digest>,
    ) -> Result<Held, PackageError> {
        let recorded = self
            .index
            .recorded_blobs(digests.into_iter().collect())
            .await
            .map_err(internal)?;
        let store = &self.store;
        let checked: Vec<Result<Option<Digest>, PackageError>> =
            futures_util::stream::iter(recorded)
                .map(|digest| async move {
                    let size = store.stat(&digest).await.map_err(internal)?;
                    Ok(size.map(|_| digest))
                })
                .buffer_unordered(HELD_CHECKS)
                .collect()
                .await;
        let digests = checked
            .into_iter()
            .filter_map(Result::transpose)
            .collect::<Result<HashSet<_>, _>>()?;
        Ok(Held::new(digests))
    }

    /// Cached files of this proxy whose cache key starts with `prefix`, by key.
    pub(crate) async fn cached_under(&self, prefix: &str) -> Result<Vec<String>, PackageError> {
        let records = self
            .index
            .files_under(&self.config.name, prefix)
            .await
            .map_err(internal)?;
        Ok(records
            .into_iter()
            .filter(|(_, record)| record.digest.is_some())
            .map(|(key, _)| key)
            .collect())
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

    /// Forgets every remembered 404 (see [`Packages::forget_missing`](crate::Packages::forget_missing)).
    pub(crate) fn forget_missing(&self) {
        self.missing.lock().expect("missing map").clear();
    }

    /// Remembers that the upstream answered 404 for `key`.
    fn remember_missing(&self, key: &str) {
        self.missing
            .lock()
            .expect("missing map")
            .insert(key.to_owned(), Instant::now());
    }

    /// The response to `request` for the file `spec` names, fetched, verified and cached
    /// as its freshness says.
    pub async fn get(
        &self,
        spec: Spec<'_>,
        request: &ClientRequest,
    ) -> Result<Response, PackageError> {
        let entry = match spec.freshness {
            Freshness::Immutable(digest) if request.is_head() => {
                match self.stored(digest, spec.content_type).await? {
                    Some(entry) => {
                        self.index.touch(&entry.digest, entry.size);
                        entry
                    }
                    None => return self.announce(&spec.source, digest, spec.content_type).await,
                }
            }
            _ => self.entry(spec).await?,
        };
        self.serve(&entry, request).await
    }

    /// The cached content of the file `spec` names (fetched, verified and cached first
    /// when it has to be), for a format that derives something from it.
    pub async fn entry(&self, spec: Spec<'_>) -> Result<Entry, PackageError> {
        let entry = match spec.freshness {
            Freshness::Immutable(digest) => match self.stored(digest, spec.content_type).await? {
                Some(entry) => entry,
                None => {
                    self.download(&spec.source, digest, spec.content_type)
                        .await?
                }
            },
            Freshness::Pinned(expected) => self.pinned(&spec.source, &spec.key, expected).await?,
            Freshness::Ttl => {
                let entry = self.refresh(&spec).await?;
                if let Some((max, _)) = spec.checked.filter(|(max, _)| entry.size > *max as u64) {
                    return Err(self.upstream_error(
                        spec.path(),
                        format!("the page is larger than {max} bytes"),
                    ));
                }
                entry
            }
        };
        self.index.touch(&entry.digest, entry.size);
        Ok(entry)
    }

    /// A document `spec` names (refreshed by TTL, bounded and checked), read whole for a
    /// format to rewrite.
    pub async fn document(&self, spec: Spec<'_>) -> Result<Document, PackageError> {
        let max = spec.checked.map_or(u64::MAX, |(max, _)| max as u64);
        let entry = self.entry(spec).await?;
        let bytes = self.read_stored(&entry.digest, max).await?;
        Ok(Document {
            bytes,
            content_type: entry.content_type,
            cache: entry.outcome,
        })
    }

    /// An immutable file the store holds, as a hit.
    async fn stored(
        &self,
        digest: &Digest,
        content_type: &str,
    ) -> Result<Option<Entry>, PackageError> {
        let size = self.store.stat(digest).await.map_err(internal)?;
        Ok(size.map(|size| Entry {
            digest: digest.clone(),
            size,
            content_type: Some(content_type.to_owned()),
            outcome: CacheOutcome::Hit,
        }))
    }

    /// Fetches an immutable file once (concurrent requests share the download) and returns
    /// when the whole of it matched `digest`: a package pinned by a digest is never partly
    /// delivered (`curl … | sh` must not run a tampered script's first line), and a
    /// mismatch is an error status, not a broken body.
    async fn download(
        &self,
        source: &Target,
        digest: &Digest,
        content_type: &str,
    ) -> Result<Entry, PackageError> {
        let request = self.download_request(source)?;
        let size = self
            .downloads
            .complete(digest, request)
            .await
            .map_err(|e| self.fetch_error(source.as_str(), e))?;
        Ok(Entry {
            digest: digest.clone(),
            size,
            content_type: Some(content_type.to_owned()),
            outcome: CacheOutcome::Miss,
        })
    }

    /// HEAD of an immutable file the store does not hold: no body goes out, so nothing
    /// unverified can; answered as soon as the upstream does, the download goes on.
    async fn announce(
        &self,
        source: &Target,
        digest: &Digest,
        content_type: &str,
    ) -> Result<Response, PackageError> {
        let request = self.download_request(source)?;
        let body = self
            .downloads
            .fetch(digest, 0, request)
            .await
            .map_err(|e| self.fetch_error(source.as_str(), e))?;
        let mut response = Response::new(Body::empty());
        set_blob_headers(response.headers_mut(), digest, content_type, body.size);
        mark(&mut response, CacheOutcome::Miss);
        Ok(response)
    }

    fn download_request(
        &self,
        source: &Target,
    ) -> Result<airlock_upstream::fetch::RequestFn, PackageError> {
        let path = source.as_str();
        if self.config.offline {
            return Err(self.offline(path));
        }
        // Refused targets fail here, before a download task exists.
        self.upstream
            .url(source)
            .map_err(|e| self.request_error(path, e))?;
        Ok(self.upstream.resumable_get(source.clone(), ""))
    }

    fn fetch_error(&self, path: &str, error: FetchError) -> PackageError {
        match error {
            FetchError::Status { status, .. } if status == StatusCode::NOT_FOUND => {
                PackageError::NotFoundUpstream {
                    path: path.to_owned(),
                }
            }
            FetchError::Store(store) if matches!(*store, StoreError::Full { .. }) => {
                PackageError::CacheFull(store.to_string())
            }
            FetchError::Store(store) => self.verification_error(path, store.to_string()),
            other => self.upstream_error(path, other),
        }
    }

    /// A stored blob read whole; one larger than `max` bytes is refused.
    pub async fn read_stored(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, PackageError> {
        let vanished = || PackageError::Internal(format!("{digest} vanished from the store"));
        let size = self
            .store
            .stat(digest)
            .await
            .map_err(internal)?
            .ok_or_else(vanished)?;
        if size > max {
            return Err(PackageError::Internal(format!(
                "{digest} is {size} bytes, more than the {max} allowed"
            )));
        }
        let reader = self.store.open(digest, 0).await.map_err(internal)?;
        let mut reader = reader.ok_or_else(vanished)?;
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader.read_to_end(&mut bytes).await.map_err(internal)?;
        // Whatever is derived from a document (and offline, all there is to list) rests on
        // these bytes: a blob damaged on disk is an error, never a listing.
        let (bytes, actual) = crate::derived::blocking(move || {
            let actual = Digest::of(&bytes);
            (bytes, actual)
        })
        .await?;
        if actual != *digest {
            return Err(PackageError::Internal(format!(
                "the stored copy of {digest} is damaged (its bytes hash to {actual}); \
                 delete the blob so it is fetched or imported again"
            )));
        }
        Ok(bytes)
    }

    /// Serves a cached file through the store's one blob server, marked with how the
    /// cache answered.
    pub async fn serve(
        &self,
        entry: &Entry,
        request: &ClientRequest,
    ) -> Result<Response, PackageError> {
        let blob = StoredBlob {
            digest: &entry.digest,
            size: entry.size,
            content_type: entry.content_type.as_deref().unwrap_or(OCTETS),
        };
        let mut response = match serve_blob(self.store.as_ref(), blob, request).await {
            Ok(response) => response,
            Err(ServeError::RangeNotSatisfiable { size }) => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
                );
                response
            }
            Err(ServeError::Vanished(digest)) => {
                return Err(PackageError::Internal(format!(
                    "{digest} vanished from the store"
                )));
            }
            Err(ServeError::Store(e)) => return Err(internal(e)),
        };
        mark(&mut response, entry.outcome);
        Ok(response)
    }

    /// Serves bytes a format derived from cached content, with `If-None-Match` support.
    pub fn serve_derived(
        bytes: Vec<u8>,
        content_type: &str,
        request: &ClientRequest,
        cache: CacheOutcome,
    ) -> Response {
        let digest = Digest::of(&bytes);
        let matches = request.holds(&airlock_store::serve::etag(&digest), true);
        let size = bytes.len() as u64;
        let mut response = if matches {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else if request.is_head() {
            Response::new(Body::empty())
        } else {
            Response::new(Body::from(bytes))
        };
        set_blob_headers(
            response.headers_mut(),
            &digest,
            content_type,
            (!matches).then_some(size),
        );
        mark(&mut response, cache);
        response
    }

    fn offline(&self, path: &str) -> PackageError {
        PackageError::Offline {
            proxy: self.config.name.clone(),
            path: path.to_owned(),
        }
    }

    fn verification_error(&self, path: &str, detail: impl std::fmt::Display) -> PackageError {
        PackageError::Verification {
            proxy: self.config.name.clone(),
            path: path.to_owned(),
            detail: detail.to_string(),
        }
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

/// A failure of the gateway itself: a storage backend that cannot be reached is 503 (the
/// client retries, and the hot tier's content keeps being served), anything else 500.
pub(crate) fn internal<E: std::fmt::Display + 'static>(e: E) -> PackageError {
    if airlock_store::is_unavailable(&e) {
        // Where the bucket is and how it failed is for the log, not for clients.
        tracing::warn!(target: "airlock::store", error = %e, "storage unavailable");
        return PackageError::StorageUnavailable;
    }
    PackageError::Internal(e.to_string())
}
