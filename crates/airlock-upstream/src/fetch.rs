//! One upstream fetch per missing blob, streamed to every client that asks meanwhile.
//!
//! The first request for a missing digest starts a download task that writes into the store
//! through a verifying [`BlobWriter`](airlock_store::BlobWriter); every request for the same
//! digest, first or late, reads what is already written and then follows the live tail
//! (pingora-cache's cache lock and uv's once-map work the same way). The task belongs to no
//! client: one that disconnects cancels nothing. If the download fails, every reader gets an
//! error — never short or unverified bytes — and the next request starts afresh.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use airlock_store::{BlobFile, BlobStore, MetaIndex, PartialSource, StoreError};
use airlock_types::Digest;
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::StatusCode;
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::UpstreamError;

/// Why a fetch failed. Cloned to every waiting reader.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Upstream(Arc<UpstreamError>),
    #[error("upstream answered {status}")]
    Status {
        status: StatusCode,
        retry_after: Option<String>,
    },
    #[error("upstream body ended after {got} of {expected} bytes")]
    Truncated { expected: u64, got: u64 },
    #[error("upstream connection failed mid-body: {0}")]
    Body(String),
    #[error("{0}")]
    Store(Arc<StoreError>),
    #[error("the download task stopped unexpectedly")]
    Abandoned,
}

impl From<StoreError> for FetchError {
    fn from(e: StoreError) -> Self {
        FetchError::Store(Arc::new(e))
    }
}

/// Where a download stands; readers watch it.
#[derive(Debug, Clone)]
enum State {
    Starting,
    Receiving { total: Option<u64>, written: u64 },
    Done { size: u64 },
    Failed(FetchError),
}

struct Download {
    state: watch::Sender<State>,
    partial: Mutex<Option<Arc<dyn PartialSource>>>,
}

/// A future that sends the upstream request for a blob.
pub type Request = Pin<Box<dyn Future<Output = Result<reqwest::Response, UpstreamError>> + Send>>;

/// Sends the upstream request for a blob; `Some(offset)` asks for the rest from `offset`
/// (`Range: bytes=offset-`) to resume after a dropped connection.
pub type RequestFn = Box<dyn Fn(Option<u64>) -> Request + Send + Sync>;

/// Free space a download leaves beside its blob, for the index and other writes under way.
const FREE_HEADROOM: u64 = 4 << 20;

/// How many times one download resumes after the upstream connection broke.
const MAX_RESUMES: u32 = 3;

/// Counters the gateway turns into metrics.
#[derive(Debug, Default)]
pub struct FetchStats {
    pub started: std::sync::atomic::AtomicU64,
    pub joined: std::sync::atomic::AtomicU64,
    pub bytes_fetched: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
}

/// The downloads under way, by digest.
pub struct Downloads {
    store: Arc<dyn BlobStore>,
    index: MetaIndex,
    inflight: Mutex<HashMap<Digest, Arc<Download>>>,
    stats: Arc<FetchStats>,
}

impl std::fmt::Debug for Downloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downloads")
            .field("inflight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// A blob ready to stream from `start`: how many bytes the stream carries when known, and
/// the bytes.
pub struct BlobBody {
    /// The blob offset of the first byte: the offset asked for when the size is known, else
    /// 0 (see [`Downloads::fetch`]).
    pub start: u64,
    pub size: Option<u64>,
    pub stream: futures_util::stream::BoxStream<'static, Result<Bytes, FetchError>>,
}

const CHUNK: usize = 64 * 1024;

impl Downloads {
    pub fn new(store: Arc<dyn BlobStore>, index: MetaIndex) -> Self {
        Self {
            store,
            index,
            inflight: Mutex::new(HashMap::new()),
            stats: Arc::new(FetchStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<FetchStats> {
        self.stats.clone()
    }

    /// Downloads under way now.
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().expect("inflight lock").len()
    }

    /// Joins the download of `digest` under way, or starts one with `request`, and waits
    /// until it is verified and in the store: its size, or why it failed. For callers that
    /// must not send a byte before the whole file is verified (package files pinned by a
    /// digest); they serve it from the store afterwards.
    pub async fn complete(
        self: &Arc<Self>,
        digest: &Digest,
        request: RequestFn,
    ) -> Result<u64, FetchError> {
        let download = self.join_or_start(digest, request);
        let mut rx = download.state.subscribe();
        loop {
            match rx.borrow_and_update().clone() {
                State::Starting | State::Receiving { .. } => {}
                State::Done { size } => return Ok(size),
                State::Failed(e) => return Err(e),
            }
            if rx.changed().await.is_err() {
                return Err(FetchError::Abandoned);
            }
        }
    }

    fn join_or_start(self: &Arc<Self>, digest: &Digest, request: RequestFn) -> Arc<Download> {
        let mut inflight = self.inflight.lock().expect("inflight lock");
        if let Some(existing) = inflight.get(digest) {
            self.stats
                .joined
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return existing.clone();
        }
        let download = Arc::new(Download {
            state: watch::channel(State::Starting).0,
            partial: Mutex::new(None),
        });
        inflight.insert(digest.clone(), download.clone());
        self.stats
            .started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // One download serves every waiter; its spans nest in the request that started it,
        // and its upstream requests are audited as that request's.
        tokio::spawn(airlock_audit::Context::carry(
            self.clone()
                .run(digest.clone(), download.clone(), request)
                .in_current_span(),
        ));
        download
    }

    /// The bytes of `digest` from `offset`: joins the download under way, or starts one with
    /// `request`. Returns once the upstream answered, so the caller knows status and size.
    ///
    /// When the upstream sent no `Content-Length` and the download is still running, the
    /// stream starts at byte 0 whatever `offset` was (`BlobBody::start` says so): nobody
    /// can tell yet whether `offset` lies inside the blob, and a caller that labelled bytes
    /// from `offset` as the whole blob would serve a shifted body.
    pub async fn fetch(
        self: &Arc<Self>,
        digest: &Digest,
        offset: u64,
        request: RequestFn,
    ) -> Result<BlobBody, FetchError> {
        let download = self.join_or_start(digest, request);
        let mut rx = download.state.subscribe();
        let total = loop {
            let state = rx.borrow_and_update().clone();
            match state {
                State::Starting => {}
                State::Receiving { total, .. } => break total,
                State::Done { size } => break Some(size),
                State::Failed(e) => return Err(e),
            }
            if rx.changed().await.is_err() {
                return Err(FetchError::Abandoned);
            }
        };
        let start = if total.is_some() { offset } else { 0 };
        let reader = LiveReader {
            store: self.store.clone(),
            digest: digest.clone(),
            download,
            rx,
            pos: start,
            reader: None,
            reading_partial: false,
        };
        let stream = futures_util::stream::unfold(reader, |mut r| async move {
            match r.next_chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), r)),
                Ok(None) => None,
                Err(e) => {
                    // End the stream after the error: the client sees a broken body.
                    r.pos = u64::MAX;
                    Some((Err(e), r))
                }
            }
        })
        .boxed();
        Ok(BlobBody {
            start,
            size: total.map(|t| t.saturating_sub(start)),
            stream,
        })
    }

    async fn run(self: Arc<Self>, digest: Digest, download: Arc<Download>, request: RequestFn) {
        let result = self.download(&digest, &download, request).await;
        let state = match result {
            Ok(size) => State::Done { size },
            Err(e) => {
                self.stats
                    .failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(target: "airlock::fetch", %digest, error = %e, "blob download failed");
                State::Failed(e)
            }
        };
        // Leave the table first: a request that arrives once a client holds the whole blob
        // then finds it in the store instead of joining a finished download.
        self.inflight.lock().expect("inflight lock").remove(&digest);
        download.state.send_replace(state);
    }

    async fn download(
        &self,
        digest: &Digest,
        download: &Download,
        request: RequestFn,
    ) -> Result<u64, FetchError> {
        // With other replicas on the bucket: fetch only in this replica's turn.
        // Content only a push brought is fetched from the upstream here, never taken as
        // landed: the object in the bucket proves nothing about what the upstream serves.
        let pushed = self.index.is_pushed(digest).await?;
        // A request that looked in the store just before the download before this one
        // committed, and reached the table just after it left: the blob is here now.
        if !pushed {
            if let Some(size) = self.store.stat(digest).await? {
                self.index.record_blob(digest, size).await?;
                return Ok(size);
            }
        }
        let _lease = match self.index.shared() {
            Some(shared) if !pushed => {
                match crate::replicas::take_turn(self.store.as_ref(), shared, digest).await? {
                    crate::replicas::Next::Fetch(lease) => Some(lease),
                    crate::replicas::Next::Landed(size) => {
                        self.index.record_blob(digest, size).await?;
                        return Ok(size);
                    }
                }
            }
            _ => None,
        };
        let response = request(None)
            .await
            .map_err(|e| FetchError::Upstream(Arc::new(e)))?;
        if response.status() != StatusCode::OK {
            return Err(status_error(&response));
        }
        let total = response.content_length();
        // A blob that cannot fit is refused before a byte is written: the clients get a
        // clear 503 instead of a body cut off where the disk filled.
        if let (Some(needed), Some(free)) = (total, self.store.free_space().await?) {
            if needed.saturating_add(FREE_HEADROOM) > free {
                return Err(StoreError::Full { needed, free }.into());
            }
        }
        let mut writer = self.store.create(Some(digest)).await?;
        *download.partial.lock().expect("partial lock") = Some(writer.partial());
        download
            .state
            .send_replace(State::Receiving { total, written: 0 });
        let mut body = response.bytes_stream().boxed();
        let mut resumes = 0;
        loop {
            let chunk = match body.next().await {
                None => break,
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    let reason = crate::error_chain(&e.without_url());
                    let written = writer.written();
                    if total.is_none() || resumes >= MAX_RESUMES {
                        return Err(FetchError::Body(reason));
                    }
                    resumes += 1;
                    tracing::info!(target: "airlock::fetch", %digest, written, %reason, "upstream connection broke; resuming with Range");
                    body = resume(&request, written).await?;
                    continue;
                }
            };
            writer.write(&chunk).await?;
            self.stats
                .bytes_fetched
                .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if total.is_some_and(|t| writer.written() > t) {
                return Err(FetchError::Body(
                    "upstream sent more bytes than Content-Length".into(),
                ));
            }
            download.state.send_replace(State::Receiving {
                total,
                written: writer.written(),
            });
        }
        if let Some(expected) = total {
            if writer.written() != expected {
                return Err(FetchError::Truncated {
                    expected,
                    got: writer.written(),
                });
            }
        }
        let size = writer.commit().await?.size;
        self.index.record_blob(digest, size).await?;
        Ok(size)
    }
}

fn status_error(response: &reqwest::Response) -> FetchError {
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    FetchError::Status {
        status: response.status(),
        retry_after,
    }
}

type ByteStream = futures_util::stream::BoxStream<'static, Result<Bytes, reqwest::Error>>;

/// Asks for the rest of the blob from `offset`; only a matching 206 continues the download.
async fn resume(request: &RequestFn, offset: u64) -> Result<ByteStream, FetchError> {
    let response = request(Some(offset))
        .await
        .map_err(|e| FetchError::Upstream(Arc::new(e)))?;
    if response.status() != StatusCode::PARTIAL_CONTENT {
        return Err(FetchError::Body(format!(
            "upstream answered {} to a resume from byte {offset}; starting over on the next request",
            response.status()
        )));
    }
    let starts_at = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.parse::<u64>().ok());
    if starts_at != Some(offset) {
        return Err(FetchError::Body(format!(
            "upstream resumed at {starts_at:?}, not at byte {offset}"
        )));
    }
    Ok(response.bytes_stream().boxed())
}

/// Follows one download for one reader.
struct LiveReader {
    store: Arc<dyn BlobStore>,
    digest: Digest,
    download: Arc<Download>,
    rx: watch::Receiver<State>,
    pos: u64,
    /// Read with positional reads (from the page cache where it can), no buffer of its own.
    reader: Option<Arc<dyn BlobFile>>,
    reading_partial: bool,
}

impl LiveReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        loop {
            if self.pos == u64::MAX {
                return Ok(None);
            }
            let state = self.rx.borrow_and_update().clone();
            let available = match state {
                State::Failed(e) => return Err(e),
                State::Starting => None,
                State::Receiving { written, total } => {
                    // The last byte waits for the verified commit: a client never holds a
                    // complete body whose digest did not match.
                    let releasable = total.map_or(written, |t| written.min(t.saturating_sub(1)));
                    (releasable > self.pos).then_some(releasable)
                }
                State::Done { size } => {
                    if self.pos >= size {
                        return Ok(None);
                    }
                    if self.reading_partial {
                        self.reader = None;
                        self.reading_partial = false;
                    }
                    if self.reader.is_none() {
                        let reader = self.store.open_file(&self.digest).await?;
                        self.reader =
                            Some(reader.ok_or_else(|| StoreError::NotFound(self.digest.clone()))?);
                    }
                    Some(size)
                }
            };
            if let Some(limit) = available {
                if self.reader.is_none() {
                    let partial = self.download.partial.lock().expect("partial lock").clone();
                    let Some(partial) = partial else { continue };
                    match partial.open_file().await {
                        Ok(reader) => {
                            self.reader = Some(reader);
                            self.reading_partial = true;
                        }
                        // Committed between our look at the state and the open: read the blob.
                        Err(e) => match self.store.open_file(&self.digest).await? {
                            Some(reader) => self.reader = Some(reader),
                            None => return Err(e.into()),
                        },
                    }
                }
                let want = (limit - self.pos).min(CHUNK as u64) as usize;
                let reader = self.reader.clone().expect("reader opened above");
                let (mut buf, n) =
                    reader
                        .read_at(vec![0u8; want], self.pos)
                        .await
                        .map_err(|e| StoreError::Io {
                            context: format!("reading {}", self.digest),
                            source: e,
                        })?;
                if n == 0 {
                    // The partial view ended (a snapshot of a write in memory): reopen.
                    self.reader = None;
                    tokio::task::yield_now().await;
                    continue;
                }
                buf.truncate(n);
                self.pos += n as u64;
                return Ok(Some(Bytes::from(buf)));
            }
            if self.rx.changed().await.is_err() {
                return Err(FetchError::Abandoned);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use airlock_store::MemoryStore;

    use super::*;

    /// The finding: at 1,000 nodes one blob of nine was fetched from the upstream twice.
    /// A request saw the store without it, the download committed and left the table, and
    /// the request then started a second download of a blob the store already held.
    #[tokio::test]
    async fn a_request_that_missed_the_commit_does_not_fetch_again() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::new());
        let index = MetaIndex::open(&dir.path().join("index.redb")).unwrap();
        let downloads = Arc::new(Downloads::new(store.clone(), index));
        let bytes = Bytes::from(vec![9u8; 300_000]);
        let digest = Digest::of(&bytes);
        let asked = Arc::new(AtomicUsize::new(0));
        let request = || -> RequestFn {
            let (asked, bytes) = (asked.clone(), bytes.clone());
            Box::new(move |_| {
                asked.fetch_add(1, Ordering::SeqCst);
                let bytes = bytes.clone();
                Box::pin(async move {
                    Ok(reqwest::Response::from(
                        http::Response::builder()
                            .header("content-length", bytes.len())
                            .body(bytes)
                            .unwrap(),
                    ))
                })
            })
        };
        assert_eq!(
            downloads.complete(&digest, request()).await.unwrap(),
            300_000
        );
        assert_eq!(downloads.in_flight(), 0, "the download left the table");

        // A request whose look at the store came before that commit.
        let body = downloads.fetch(&digest, 0, request()).await.unwrap();
        let got: Vec<Bytes> = body.stream.map(Result::unwrap).collect().await;
        assert_eq!(got.concat(), bytes);
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "one upstream request in all"
        );
    }
}

/// Takes turns per key: work on one key (a tag being fetched or revalidated) happens once
/// at a time while other keys go on. Entries vanish when nobody holds or waits for them.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().expect("keyed locks");
            locks.retain(|_, weak| weak.strong_count() > 0);
            if let Some(lock) = locks.get(key).and_then(std::sync::Weak::upgrade) {
                lock
            } else {
                let lock = Arc::new(tokio::sync::Mutex::new(()));
                locks.insert(key.to_owned(), Arc::downgrade(&lock));
                lock
            }
        };
        lock.lock_owned().await
    }
}
