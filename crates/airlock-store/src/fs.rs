//! The local-directory backend: temp file, fsync, verify, rename.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use airlock_types::{Digest, Sha256Verifier};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::layout::{TEMP_SUFFIX, blob_path, temp_dir};
use crate::stage::{Staged, sync_dir};
use crate::{BlobFile, BlobRead, BlobStore, BlobWriter, Committed, PartialSource, StoreError};

/// Blobs in a local directory laid out as [`crate::layout`] describes.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for dir in [root.join("blobs"), temp_dir(&root)] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(StoreError::io(format!("creating {}", dir.display())))?;
        }
        Ok(Self { root })
    }
}

impl FsStore {
    /// The directory the store lives in.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
}

/// Removes every file in `dir` (a temporary area); returns how many.
pub(crate) async fn empty_dir(dir: &Path) -> Result<usize, StoreError> {
    let listing = || StoreError::io(format!("listing {}", dir.display()));
    let mut entries = tokio::fs::read_dir(dir).await.map_err(listing())?;
    let mut removed = 0;
    while let Some(entry) = entries.next_entry().await.map_err(listing())? {
        tokio::fs::remove_file(entry.path())
            .await
            .map_err(StoreError::io(format!(
                "removing {}",
                entry.path().display()
            )))?;
        removed += 1;
    }
    Ok(removed)
}

async fn open_at(path: &Path, offset: u64) -> std::io::Result<BlobRead> {
    let mut file = tokio::fs::File::open(path).await?;
    if offset > 0 {
        file.seek(SeekFrom::Start(offset)).await?;
    }
    Ok(Box::pin(file))
}

/// A blob file read with positional reads straight into the caller's buffer
/// (`tokio::fs::File` would read into a buffer of its own and copy): see [`crate::pread`].
#[derive(Debug)]
pub(crate) struct FsFile(pub(crate) std::fs::File);

impl AsRef<std::fs::File> for FsFile {
    fn as_ref(&self) -> &std::fs::File {
        &self.0
    }
}

#[async_trait::async_trait]
impl BlobFile for FsFile {
    async fn read_at(
        self: Arc<Self>,
        buf: Vec<u8>,
        offset: u64,
    ) -> std::io::Result<(Vec<u8>, usize)> {
        crate::pread::read_at(self, buf, offset).await
    }
}

#[async_trait::async_trait]
impl BlobStore for FsStore {
    async fn free_space(&self) -> Result<Option<u64>, StoreError> {
        let root = self.root.clone();
        let stat = tokio::task::spawn_blocking(move || rustix::fs::statvfs(&root))
            .await
            .map_err(|e| StoreError::Io {
                context: "checking free space".to_owned(),
                source: std::io::Error::other(e),
            })?
            .map_err(|e| StoreError::Io {
                context: format!("checking free space under {}", self.root.display()),
                source: e.into(),
            })?;
        Ok(Some(stat.f_bavail.saturating_mul(stat.f_frsize)))
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match tokio::fs::metadata(blob_path(&self.root, digest)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io {
                context: format!("stat {digest}"),
                source: e,
            }),
        }
    }

    async fn open(&self, digest: &Digest, offset: u64) -> Result<Option<BlobRead>, StoreError> {
        match open_at(&blob_path(&self.root, digest), offset).await {
            Ok(reader) => Ok(Some(reader)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io {
                context: format!("opening {digest}"),
                source: e,
            }),
        }
    }

    async fn open_file(&self, digest: &Digest) -> Result<Option<Arc<dyn BlobFile>>, StoreError> {
        let path = blob_path(&self.root, digest);
        match tokio::task::spawn_blocking(move || std::fs::File::open(path)).await {
            Ok(Ok(file)) => Ok(Some(Arc::new(FsFile(file)))),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Ok(Err(e)) => Err(StoreError::Io {
                context: format!("opening {digest}"),
                source: e,
            }),
            Err(e) => Err(StoreError::Io {
                context: format!("opening {digest}"),
                source: std::io::Error::other(e),
            }),
        }
    }

    async fn create(&self, expected: Option<&Digest>) -> Result<Box<dyn BlobWriter>, StoreError> {
        let name = format!("{:032x}{TEMP_SUFFIX}", rand::random::<u128>());
        let path = temp_dir(&self.root).join(name);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(StoreError::io(format!("creating {}", path.display())))?;
        Ok(Box::new(FsWriter {
            file: Some(file),
            temp: Arc::new(TempFile { path }),
            root: self.root.clone(),
            expected: expected.cloned(),
            verifier: Sha256Verifier::new(),
        }))
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        match tokio::fs::remove_file(blob_path(&self.root, digest)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::Io {
                context: format!("deleting {digest}"),
                source: e,
            }),
        }
    }

    async fn clean_temp(&self) -> Result<usize, StoreError> {
        empty_dir(&temp_dir(&self.root)).await
    }
}

/// The temp file of a write; removed when the last handle goes unless it was renamed.
#[derive(Debug)]
struct TempFile {
    path: PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // After a successful commit the path no longer exists; NotFound is the normal case.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[async_trait::async_trait]
impl PartialSource for TempFile {
    async fn open_file(&self) -> Result<Arc<dyn BlobFile>, StoreError> {
        open_temp(&self.path).await
    }
}

/// A write's temp file opened for positional reads ([`PartialSource::open_file`]).
pub(crate) async fn open_temp(path: &Path) -> Result<Arc<dyn BlobFile>, StoreError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(StoreError::io(format!("reading {}", path.display())))?;
    Ok(Arc::new(FsFile(file.into_std().await)))
}

struct FsWriter {
    file: Option<tokio::fs::File>,
    temp: Arc<TempFile>,
    root: PathBuf,
    expected: Option<Digest>,
    verifier: Sha256Verifier,
}

#[async_trait::async_trait]
impl BlobWriter for FsWriter {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let file = self.file.as_mut().expect("writer is open until commit");
        let context = || format!("writing {}", self.temp.path.display());
        file.write_all(chunk)
            .await
            .map_err(StoreError::io(context()))?;
        // tokio hands writes to a blocking thread; flushing waits until the bytes are in the
        // file, so readers following the download never see `written` run ahead of it.
        file.flush().await.map_err(StoreError::io(context()))?;
        self.verifier.update(chunk);
        Ok(())
    }

    fn written(&self) -> u64 {
        self.verifier.len()
    }

    fn partial(&self) -> Arc<dyn PartialSource> {
        self.temp.clone()
    }

    async fn commit(self: Box<Self>) -> Result<Committed, StoreError> {
        let staged = self.stage_file().await?;
        staged.sync().await?;
        let committed = staged.committed.clone();
        if let Some(dir) = Box::new(staged).publish().await? {
            sync_dir(dir).await?;
        }
        Ok(committed)
    }

    async fn stage(self: Box<Self>) -> Result<Box<dyn Staged>, StoreError> {
        Ok(Box::new(self.stage_file().await?))
    }
}

impl FsWriter {
    /// Checks the digest and closes the temp file, which stays where it is.
    async fn stage_file(mut self: Box<Self>) -> Result<FsStaged, StoreError> {
        let mut file = self.file.take().expect("commit happens once");
        let context = || format!("committing {}", self.temp.path.display());
        file.flush().await.map_err(StoreError::io(context()))?;
        let size = self.verifier.len();
        let actual = self.verifier.clone().finish();
        if let Some(expected) = &self.expected {
            if &actual != expected {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                    size,
                });
            }
        }
        // Start making the bytes durable now, while the caller goes on (an import reads
        // and hashes the next blob meanwhile); `sync` waits for it. Nothing becomes
        // visible by this, and a staged blob dropped early still has its file removed.
        let file = file.into_std().await;
        let syncing = tokio::task::spawn_blocking(move || file.sync_all());
        Ok(FsStaged {
            syncing: Mutex::new(Some(syncing)),
            final_path: blob_path(&self.root, &actual),
            committed: Committed {
                digest: actual,
                size,
            },
            temp: self.temp,
        })
    }
}

/// A verified blob in the temp dir (removed when dropped unless published).
struct FsStaged {
    /// The fsync started at staging, until `sync` has waited for it.
    syncing: Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
    temp: Arc<TempFile>,
    final_path: PathBuf,
    committed: Committed,
}

#[async_trait::async_trait]
impl Staged for FsStaged {
    fn committed(&self) -> &Committed {
        &self.committed
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let context = || format!("syncing {}", self.temp.path.display());
        let syncing = self.syncing.lock().expect("not poisoned").take();
        match syncing {
            Some(syncing) => syncing
                .await
                .map_err(|e| StoreError::io(context())(std::io::Error::other(e)))?
                .map_err(StoreError::io(context())),
            None => Ok(()),
        }
    }

    async fn publish(self: Box<Self>) -> Result<Option<PathBuf>, StoreError> {
        let context = || format!("committing {}", self.temp.path.display());
        let parent = self
            .final_path
            .parent()
            .expect("blob paths have a parent")
            .to_owned();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(StoreError::io(context()))?;
        tokio::fs::rename(&self.temp.path, &self.final_path)
            .await
            .map_err(StoreError::io(context()))?;
        // The rename is durable only once the directory entry is on disk.
        Ok(Some(parent))
    }
}
