//! Blobs written and verified but not yet visible, made durable and visible as a batch:
//! what a bulk import uses instead of committing blob by blob.
//!
//! [`BlobWriter::stage`](crate::BlobWriter::stage) checks a blob's digest and leaves its
//! bytes in the store's temp dir; [`publish`] then syncs every staged file, renames each
//! into place and syncs each directory it renamed into once. Until a blob is renamed it is
//! invisible, and dropping a staged blob removes its temp file; temp files an interrupted
//! process leaves are removed by [`BlobStore::clean_temp`](crate::BlobStore::clean_temp).

use std::collections::BTreeSet;
use std::path::PathBuf;

use futures_util::future::try_join_all;

use crate::{Committed, StoreError};

/// Staged files synced (or directories synced) at once: enough for the disk to see a
/// queue, few enough to stay well inside tokio's blocking threads.
const IN_FLIGHT: usize = 16;

/// A blob whose bytes were written and whose digest was checked, not yet visible.
#[async_trait::async_trait]
pub trait Staged: Send + Sync {
    /// The blob's digest and size.
    fn committed(&self) -> &Committed;

    /// Makes the bytes durable (the blob stays invisible).
    async fn sync(&self) -> Result<(), StoreError>;

    /// Makes the blob visible. Returns the directory whose entry must be synced for that
    /// to be durable, if any.
    async fn publish(self: Box<Self>) -> Result<Option<PathBuf>, StoreError>;
}

/// A blob the backend made visible when it was staged (backends without a temp dir).
#[derive(Debug)]
pub(crate) struct Visible(pub(crate) Committed);

#[async_trait::async_trait]
impl Staged for Visible {
    fn committed(&self) -> &Committed {
        &self.0
    }

    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn publish(self: Box<Self>) -> Result<Option<PathBuf>, StoreError> {
        Ok(None)
    }
}

/// Makes `staged` durable and visible: every file synced, then renamed into place, then
/// each directory renamed into synced once. A failure before the renames leaves every
/// blob invisible (and their temp files removed); a failure during them leaves some
/// blobs visible, each whole and verified, as a commit would have.
pub async fn publish(staged: Vec<Box<dyn Staged>>) -> Result<Vec<Committed>, StoreError> {
    for window in staged.chunks(IN_FLIGHT) {
        try_join_all(window.iter().map(|s| s.sync())).await?;
    }
    let mut committed = Vec::with_capacity(staged.len());
    let mut dirs = BTreeSet::new();
    for blob in staged {
        committed.push(blob.committed().clone());
        if let Some(dir) = blob.publish().await? {
            dirs.insert(dir);
        }
    }
    let dirs: Vec<PathBuf> = dirs.into_iter().collect();
    for window in dirs.chunks(IN_FLIGHT) {
        try_join_all(window.iter().map(|dir| sync_dir(dir.clone()))).await?;
    }
    Ok(committed)
}

/// Syncs a directory's entries (a rename into it is durable only then).
pub(crate) async fn sync_dir(dir: PathBuf) -> Result<(), StoreError> {
    let context = || format!("syncing {}", dir.display());
    let file = tokio::fs::File::open(&dir)
        .await
        .map_err(StoreError::io(context()))?;
    file.sync_all().await.map_err(StoreError::io(context()))
}
