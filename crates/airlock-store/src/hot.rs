//! The hot tier: a bounded, least-recently-used copy of bucket objects on local disk, so
//! warm reads of an S3-backed store go at local-disk speed and keep working while the
//! bucket is unreachable.
//!
//! It is an [`FsStore`] of its own: every file in it was verified against its digest when
//! it was written (filled from the bucket through a verifying writer, or adopted from a
//! write that was verified and synced before its upload), so a bucket that returns wrong
//! bytes can make a read fail but never puts them here. Its contents survive a restart.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use airlock_types::Digest;

use crate::layout::blob_path;
use crate::{BlobFile, BlobRead, BlobStore, FsStore, StoreError, TierStats};

/// Local copies of bucket objects, at most `budget` bytes of them.
#[derive(Debug)]
pub(crate) struct HotTier {
    store: FsStore,
    budget: u64,
    lru: Mutex<Lru>,
    hits: AtomicU64,
    fills: AtomicU64,
}

/// Which copies are held, how big, and in which order they were last used.
#[derive(Debug, Default)]
struct Lru {
    held: HashMap<Digest, (u64, u64)>,
    by_use: BTreeMap<u64, Digest>,
    total: u64,
    clock: u64,
}

impl Lru {
    fn touch(&mut self, digest: &Digest) -> bool {
        self.clock += 1;
        let clock = self.clock;
        let Some((_, used)) = self.held.get_mut(digest) else {
            return false;
        };
        self.by_use.remove(used);
        *used = clock;
        self.by_use.insert(clock, digest.clone());
        true
    }

    fn insert(&mut self, digest: Digest, size: u64) {
        if self.touch(&digest) {
            return;
        }
        self.held.insert(digest.clone(), (size, self.clock));
        self.by_use.insert(self.clock, digest);
        self.total += size;
    }

    fn remove(&mut self, digest: &Digest) {
        if let Some((size, used)) = self.held.remove(digest) {
            self.by_use.remove(&used);
            self.total -= size;
        }
    }

    /// The least recently used copies to drop so that `total` fits `budget`.
    fn over(&mut self, budget: u64) -> Vec<Digest> {
        let mut dropped = Vec::new();
        while self.total > budget {
            let Some((_, digest)) = self.by_use.pop_first() else {
                break;
            };
            if let Some((size, _)) = self.held.remove(&digest) {
                self.total -= size;
            }
            dropped.push(digest);
        }
        dropped
    }
}

impl HotTier {
    /// Opens the tier under `dir`, keeping what a previous run left (oldest first by
    /// modification time) and dropping what no longer fits.
    pub(crate) async fn start(dir: &Path, budget: u64) -> Result<Self, StoreError> {
        let store = FsStore::open(dir).await?;
        store.clean_temp().await?;
        let mut found = list_blobs(dir)?;
        found.sort_by_key(|(_, _, modified)| *modified);
        let mut lru = Lru::default();
        for (digest, size, _) in found {
            lru.insert(digest, size);
        }
        let tier = Self {
            store,
            budget,
            lru: Mutex::new(lru),
            hits: AtomicU64::new(0),
            fills: AtomicU64::new(0),
        };
        tier.shrink().await?;
        Ok(tier)
    }

    /// Whether an object of `size` bytes may be held at all.
    pub(crate) fn fits(&self, size: u64) -> bool {
        size <= self.budget
    }

    fn lru(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn held(&self, digest: &Digest) -> bool {
        self.lru().touch(digest)
    }

    pub(crate) async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        if !self.held(digest) {
            return Ok(None);
        }
        self.store.stat(digest).await
    }

    pub(crate) async fn open(
        &self,
        digest: &Digest,
        offset: u64,
    ) -> Result<Option<BlobRead>, StoreError> {
        if !self.held(digest) {
            return Ok(None);
        }
        let read = self.store.open(digest, offset).await?;
        self.count_hit(read.is_some());
        Ok(read)
    }

    pub(crate) async fn open_file(
        &self,
        digest: &Digest,
    ) -> Result<Option<Arc<dyn BlobFile>>, StoreError> {
        if !self.held(digest) {
            return Ok(None);
        }
        let file = self.store.open_file(digest).await?;
        self.count_hit(file.is_some());
        Ok(file)
    }

    fn count_hit(&self, hit: bool) {
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn stats(&self) -> TierStats {
        TierStats {
            held_bytes: self.lru().total,
            budget_bytes: self.budget,
            hits: self.hits.load(Ordering::Relaxed),
            fills: self.fills.load(Ordering::Relaxed),
        }
    }

    /// Copies an object into the tier through a writer that checks it against `digest`.
    pub(crate) async fn fill(&self, digest: &Digest, mut from: BlobRead) -> Result<(), StoreError> {
        use tokio::io::AsyncReadExt;
        let mut writer = self.store.create(Some(digest)).await?;
        let mut buf = vec![0; 256 << 10];
        loop {
            let n = from
                .read(&mut buf)
                .await
                .map_err(StoreError::io(format!("reading {digest} from the bucket")))?;
            if n == 0 {
                break;
            }
            if !self.fits(writer.written() + n as u64) {
                // Larger than the whole tier: not kept (the caller reads the bucket).
                return Ok(());
            }
            writer.write(&buf[..n]).await?;
        }
        let committed = writer.commit().await?;
        self.lru().insert(committed.digest, committed.size);
        self.fills.fetch_add(1, Ordering::Relaxed);
        self.shrink().await
    }

    /// Takes a file already verified as `digest` and synced to disk (a write on its way to
    /// the bucket) by renaming it into the tier.
    pub(crate) async fn adopt(
        &self,
        digest: &Digest,
        size: u64,
        verified: &Path,
    ) -> Result<(), StoreError> {
        if !self.fits(size) {
            return Ok(());
        }
        let target = blob_path(self.store.root(), digest);
        let context = || format!("moving {} to {}", verified.display(), target.display());
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(StoreError::io(context()))?;
        }
        tokio::fs::rename(verified, &target)
            .await
            .map_err(StoreError::io(context()))?;
        self.lru().insert(digest.clone(), size);
        self.fills.fetch_add(1, Ordering::Relaxed);
        self.shrink().await
    }

    pub(crate) async fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.lru().remove(digest);
        self.store.delete(digest).await
    }

    /// Drops least recently used copies until the tier fits its budget.
    async fn shrink(&self) -> Result<(), StoreError> {
        let dropped = self.lru().over(self.budget);
        for digest in dropped {
            self.store.delete(&digest).await?;
        }
        Ok(())
    }

    /// Bytes held.
    #[cfg(test)]
    fn total(&self) -> u64 {
        self.stats().held_bytes
    }
}

/// Every committed blob under a store root: digest, size and modification time.
fn list_blobs(root: &Path) -> Result<Vec<(Digest, u64, std::time::SystemTime)>, StoreError> {
    let mut found = Vec::new();
    let blobs = root.join("blobs").join("sha256");
    let read = |dir: &Path| {
        std::fs::read_dir(dir).map_err(StoreError::io(format!("listing {}", dir.display())))
    };
    if !blobs.exists() {
        return Ok(found);
    }
    for fan in read(&blobs)? {
        let fan = fan.map_err(StoreError::io(format!("listing {}", blobs.display())))?;
        for entry in read(&fan.path())? {
            let entry = entry.map_err(StoreError::io(format!("listing {}", blobs.display())))?;
            let name = entry.file_name();
            let Some(digest) = name
                .to_str()
                .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
            else {
                continue;
            };
            let meta = entry.metadata().map_err(StoreError::io(format!(
                "reading {}",
                entry.path().display()
            )))?;
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            found.push((digest, meta.len(), modified));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(seed)).collect()
    }

    #[tokio::test]
    async fn keeps_the_most_recently_used_within_its_budget_and_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let tier = HotTier::start(dir.path(), 2500).await.unwrap();
        let blobs: Vec<Vec<u8>> = (1..=3).map(|seed| bytes(1000, seed)).collect();
        let digests: Vec<Digest> = blobs.iter().map(|b| Digest::of(b)).collect();
        for (blob, digest) in blobs.iter().zip(&digests).take(2) {
            tier.fill(digest, Box::pin(std::io::Cursor::new(blob.clone())))
                .await
                .unwrap();
        }
        // Use the first again, so the second is the least recently used.
        assert_eq!(tier.stat(&digests[0]).await.unwrap(), Some(1000));
        tier.fill(
            &digests[2],
            Box::pin(std::io::Cursor::new(blobs[2].clone())),
        )
        .await
        .unwrap();
        assert_eq!(tier.total(), 2000);
        let stats = tier.stats();
        assert_eq!((stats.fills, stats.budget_bytes), (3, 2500));
        assert!(tier.stat(&digests[1]).await.unwrap().is_none(), "evicted");
        assert!(tier.stat(&digests[0]).await.unwrap().is_some());
        drop(tier);

        let again = HotTier::start(dir.path(), 1500).await.unwrap();
        assert_eq!(
            again.total(),
            1000,
            "what no longer fits is dropped at open"
        );
        let left = list_blobs(dir.path()).unwrap();
        assert_eq!(left.len(), 1);
    }

    #[tokio::test]
    async fn wrong_bytes_from_the_bucket_are_never_kept() {
        let dir = tempfile::tempdir().unwrap();
        let tier = HotTier::start(dir.path(), 1 << 20).await.unwrap();
        let digest = Digest::of(b"the real thing");
        let refused = tier
            .fill(
                &digest,
                Box::pin(std::io::Cursor::new(b"a forgery".to_vec())),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::DigestMismatch { .. }),
            "{refused}"
        );
        assert!(tier.open(&digest, 0).await.unwrap().is_none());
        assert!(list_blobs(dir.path()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_object_larger_than_the_tier_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let tier = HotTier::start(dir.path(), 100).await.unwrap();
        let blob = bytes(1000, 7);
        let digest = Digest::of(&blob);
        tier.fill(&digest, Box::pin(std::io::Cursor::new(blob)))
            .await
            .unwrap();
        assert!(tier.stat(&digest).await.unwrap().is_none());
        assert_eq!(tier.total(), 0);
    }
}
