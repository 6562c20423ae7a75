//! The content-addressed store: the [`BlobStore`] trait, verified commits, the metadata index.
//!
//! Every blob is written through a [`BlobWriter`] that hashes the bytes as they arrive and
//! makes them visible under their digest only after the hash matched. Backends: [`FsStore`]
//! (a local directory, see [`layout`]), [`S3Store`] (a bucket on any S3-compatible store)
//! and [`MemoryStore`] (tests). Nothing outside the fs backend assumes blobs live in local
//! files.
//! [`serve`] answers an HTTP client from a stored blob.

mod body;
pub mod evict;
mod fs;
mod hot;
mod index;
pub mod k2v;
pub mod layout;
mod memory;
mod pread;
mod s3;
pub mod serve;
pub mod shared;
pub mod stage;

use std::pin::Pin;
use std::sync::Arc;

use airlock_types::Digest;
use tokio::io::AsyncRead;

pub use fs::FsStore;
pub use index::{
    Batch, BlobRecord, FileRecord, ManifestRecord, MetaIndex, Snapshot, TagKey, TagRecord, unix_now,
};
pub use memory::MemoryStore;
pub use s3::{S3Credentials, S3Settings, S3Store};

/// A stream of blob bytes.
pub type BlobRead = Pin<Box<dyn AsyncRead + Send>>;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "content does not match its digest: expected {expected}, got {actual} ({size} bytes); nothing was stored"
    )]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("blob {0} is not in the store")]
    NotFound(Digest),
    #[error("storage I/O failed at {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("storage is misconfigured: {0}")]
    Config(String),
    #[error("the object store is unavailable ({context}): {reason}")]
    Unavailable { context: String, reason: String },
    /// Not enough free space to store a blob: refused before a byte was written.
    #[error("the cache's disk is full: {needed} bytes to store, {free} free")]
    Full { needed: u64, free: u64 },
    #[error("metadata index failed: {0}")]
    Index(String),
    #[error(
        "the metadata index {} is open in another process (a running gateway holds it until it stops)", path.display()
    )]
    Locked { path: std::path::PathBuf },
}

/// Whether `error` is a [`StoreError::Unavailable`]: for the request handlers' catch-all
/// error conversions, which take any error and must answer 503 (not 500) for this one.
pub fn is_unavailable<E: 'static>(error: &E) -> bool {
    matches!(
        (error as &dyn std::any::Any).downcast_ref::<StoreError>(),
        Some(StoreError::Unavailable { .. })
    )
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Io { context, source }
    }
}

/// A store of immutable blobs addressed by digest.
#[async_trait::async_trait]
pub trait BlobStore: std::fmt::Debug + Send + Sync + 'static {
    /// The size of a committed blob, or `None` when it is absent.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError>;

    /// Bytes free where new blobs are written, or `None` when the store cannot tell.
    async fn free_space(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Reads a committed blob from `offset` to its end, or `None` when it is absent.
    async fn open(&self, digest: &Digest, offset: u64) -> Result<Option<BlobRead>, StoreError>;

    /// A committed blob opened for reads at any offset, or `None` when it is absent.
    /// [`serve`] reads responses through it, a chunk at a time into one buffer per body.
    async fn open_file(&self, digest: &Digest) -> Result<Option<Arc<dyn BlobFile>>, StoreError>;

    /// Starts writing a blob that must hash to `expected`; with `None`, the blob is named
    /// by whatever its content hashes to (a file whose digest nobody published).
    async fn create(&self, expected: Option<&Digest>) -> Result<Box<dyn BlobWriter>, StoreError>;

    /// Removes a committed blob; `false` when it was not there.
    async fn delete(&self, digest: &Digest) -> Result<bool, StoreError>;

    /// Removes the leftovers of writes interrupted by a crash; returns how many.
    /// Called once at startup; it looks only at the temporary area, never the whole store.
    async fn clean_temp(&self) -> Result<usize, StoreError>;

    /// The local read tier in front of a remote backend, for `/metrics`; `None` without one.
    fn tier_stats(&self) -> Option<TierStats> {
        None
    }
}

/// A local read tier's state (the s3 backend's hot tier).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Bytes of local copies held.
    pub held_bytes: u64,
    pub budget_bytes: u64,
    /// Reads the tier answered without asking the remote store.
    pub hits: u64,
    /// Objects copied into the tier.
    pub fills: u64,
}

/// A committed blob opened for positional reads. It stays readable when the blob is deleted
/// from the store meanwhile (an eviction does not cut off a response under way).
#[async_trait::async_trait]
pub trait BlobFile: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset` into `buf` and hands `buf` back with how
    /// many it read: fewer only where the blob ends, 0 at or past its end.
    async fn read_at(
        self: Arc<Self>,
        buf: Vec<u8>,
        offset: u64,
    ) -> std::io::Result<(Vec<u8>, usize)>;
}

/// Reads bytes of a write in progress, for clients that join a download under way.
#[async_trait::async_trait]
pub trait PartialSource: Send + Sync {
    /// The bytes written so far, for positional reads. Callers must not read past what the
    /// writer reported written; once the writer committed this may fail, and the committed
    /// blob is read instead.
    async fn open_file(&self) -> Result<Arc<dyn BlobFile>, StoreError>;
}

/// A blob being written. Dropping it without `commit` discards the bytes.
#[async_trait::async_trait]
pub trait BlobWriter: Send + Sync {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError>;

    /// Bytes written so far.
    fn written(&self) -> u64;

    /// A handle for reading the bytes written so far while the write goes on.
    fn partial(&self) -> Arc<dyn PartialSource>;

    /// Verifies the digest and makes the blob visible; on mismatch nothing is stored.
    async fn commit(self: Box<Self>) -> Result<Committed, StoreError>;

    /// Verifies the digest and keeps the bytes, neither durable nor visible yet:
    /// [`stage::publish`] makes a batch of staged blobs durable and visible together.
    /// On mismatch nothing is kept. The default commits at once.
    async fn stage(self: Box<Self>) -> Result<Box<dyn stage::Staged>, StoreError> {
        Ok(Box::new(stage::Visible(self.commit().await?)))
    }
}

/// A blob made visible: its digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub digest: Digest,
    pub size: u64,
}

/// Stores `bytes` under `expected` after checking them.
pub async fn put(
    store: &dyn BlobStore,
    expected: &Digest,
    bytes: &[u8],
) -> Result<u64, StoreError> {
    let mut writer = store.create(Some(expected)).await?;
    writer.write(bytes).await?;
    Ok(writer.commit().await?.size)
}

/// Reads a whole committed blob into memory (for small things such as manifests).
pub async fn read_all(
    store: &dyn BlobStore,
    digest: &Digest,
) -> Result<Option<Vec<u8>>, StoreError> {
    use tokio::io::AsyncReadExt;
    let Some(mut reader) = store.open(digest, 0).await? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .await
        .map_err(StoreError::io(format!("reading {digest}")))?;
    Ok(Some(bytes))
}
