//! Blobs written and verified but not yet visible, made durable and visible as a batch:
//! what a bulk import uses instead of committing blob by blob.
//!
//! [`BlobWriter::stage`](crate::BlobWriter::stage) checks a blob's digest and leaves its
//! bytes in the store's temp dir (the local backend starts the file's fsync right then);
//! [`publish`] then waits until every staged file is synced, renames each into place and
//! syncs each directory it renamed into once. Until a blob is renamed it is
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

    /// Makes the bytes durable, or waits for the sync started at staging (the blob stays
    /// invisible).
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

#[cfg(test)]
mod tests {
    use airlock_types::Digest;

    use super::publish;
    use crate::layout::{blob_path, temp_dir};
    use crate::{BlobStore, FsStore, StoreError};

    async fn staged(store: &FsStore, bytes: &[u8]) -> Box<dyn super::Staged> {
        let mut writer = store.create(Some(&Digest::of(bytes))).await.unwrap();
        writer.write(bytes).await.unwrap();
        writer.stage().await.unwrap()
    }

    fn temp_files(root: &std::path::Path) -> usize {
        std::fs::read_dir(temp_dir(root)).unwrap().count()
    }

    #[tokio::test]
    async fn staged_blobs_are_invisible_until_published_and_gone_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let a = staged(&store, b"first").await;
        let b = staged(&store, b"second").await;
        assert_eq!(temp_files(dir.path()), 2);
        assert_eq!(store.stat(&Digest::of(b"first")).await.unwrap(), None);
        drop(a);
        drop(b);
        assert_eq!(
            temp_files(dir.path()),
            0,
            "dropped staged blobs leave temp files"
        );

        let blobs = vec![
            staged(&store, b"first").await,
            staged(&store, b"second").await,
        ];
        let committed = publish(blobs).await.unwrap();
        assert_eq!(committed.len(), 2);
        assert_eq!(committed[1].digest, Digest::of(b"second"));
        assert_eq!(store.stat(&Digest::of(b"first")).await.unwrap(), Some(5));
        assert!(blob_path(dir.path(), &Digest::of(b"second")).is_file());
        assert_eq!(temp_files(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_wrong_digest_is_refused_at_staging_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let mut writer = store.create(Some(&Digest::of(b"expected"))).await.unwrap();
        writer.write(b"something else").await.unwrap();
        let refused = writer.stage().await.err().expect("a mismatch is refused");
        assert!(
            matches!(refused, StoreError::DigestMismatch { .. }),
            "{refused}"
        );
        assert_eq!(temp_files(dir.path()), 0);
    }
}
