//! Writing a bundle as its items stream in.
//!
//! Each carried item's bytes go straight into the archive while they are hashed; an item
//! whose bytes do not match its digest or size stops the bundle (its partial volumes are
//! removed), so a finished bundle never holds a byte its index does not vouch for.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use airlock_types::{Digest, Sha256Verifier};

use crate::error::{BundleError, from_io, into_io};
use crate::index::{BundleIndex, Entry};
use crate::layout;
use crate::progress::Progress;
use crate::sign::SecretKey;
use crate::volume::VolumeWriter;

/// A bundle being written.
pub struct BundleWriter {
    path: PathBuf,
    tar: tar::Builder<VolumeWriter>,
    index: BundleIndex,
    /// Digests whose bytes are in the archive, with their sizes.
    written: BTreeMap<Digest, u64>,
    mtime: u64,
    failed: bool,
    /// Told about every blob byte written.
    progress: Arc<dyn Progress>,
}

/// A finished bundle.
#[derive(Debug)]
pub struct Written {
    pub index: BundleIndex,
    pub volumes: Vec<PathBuf>,
}

impl BundleWriter {
    /// Starts a bundle at `path`, split into volumes of `split` bytes if given.
    pub fn create(
        path: &Path,
        split: Option<u64>,
        created: SystemTime,
    ) -> Result<Self, BundleError> {
        let volumes = VolumeWriter::create(path, split)?;
        let mut tar = tar::Builder::new(volumes);
        tar.mode(tar::HeaderMode::Deterministic);
        let mut writer = Self {
            path: path.to_owned(),
            tar,
            index: BundleIndex::new(created),
            written: BTreeMap::new(),
            mtime: created
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            failed: false,
            progress: crate::progress::silent(),
        };
        writer.append(layout::OCI_LAYOUT, layout::OCI_LAYOUT_CONTENT)?;
        Ok(writer)
    }

    /// Reports every blob written from now on to `progress` (started with no total: what
    /// a bundle will carry is known only as it is written).
    pub fn set_progress(&mut self, progress: Arc<dyn Progress>) {
        progress.start(None);
        self.progress = progress;
    }

    /// Whether the bundle already holds `digest`'s bytes (so [`Self::carry`] will not read
    /// them again, and a caller need not fetch them).
    pub fn holds(&self, digest: &Digest) -> bool {
        self.written.contains_key(digest)
    }

    /// Records `entry` and writes its bytes from `bytes`, unless the bundle already holds
    /// them. The bytes must be exactly `entry.size` long and hash to `entry.digest`.
    pub fn carry(&mut self, entry: Entry, bytes: impl Read) -> Result<(), BundleError> {
        self.check_entry(&entry)?;
        match self.written.get(&entry.digest) {
            None => self.write_blob(&entry.digest, entry.size, bytes)?,
            Some(&held) if held != entry.size => {
                return Err(BundleError::SizeMismatch {
                    digest: entry.digest,
                    expected: held,
                    actual: entry.size,
                });
            }
            Some(_) => {}
        }
        self.index.entries.push(entry);
        Ok(())
    }

    /// [`Self::carry`] for bytes already in memory (manifests).
    pub fn carry_bytes(&mut self, entry: Entry, bytes: &[u8]) -> Result<(), BundleError> {
        self.carry(entry, bytes)
    }

    /// Records `entry` without its bytes: the target is expected to hold them already.
    pub fn expect(&mut self, entry: Entry) -> Result<(), BundleError> {
        self.check_entry(&entry)?;
        self.index.entries.push(entry);
        Ok(())
    }

    fn check_entry(&self, entry: &Entry) -> Result<(), BundleError> {
        if self.failed {
            return Err(BundleError::WriterFailed);
        }
        entry
            .validate()
            .map_err(|reason| crate::index::IndexError::BadEntry {
                number: self.index.entries.len() + 1,
                kind: entry.kind,
                subject: entry.subject().to_owned(),
                reason,
            })?;
        Ok(())
    }

    fn write_blob(
        &mut self,
        digest: &Digest,
        size: u64,
        bytes: impl Read,
    ) -> Result<(), BundleError> {
        let mut header = self.header(size);
        self.progress.blob(digest, size);
        let checked = Checked {
            inner: bytes,
            digest,
            size,
            verifier: Sha256Verifier::new(),
            progress: &*self.progress,
        };
        let path = layout::blob_path(digest);
        let result = self.tar.append_data(&mut header, &path, checked);
        if let Err(error) = result {
            self.failed = true;
            return Err(from_io(error, |e| {
                BundleError::io("writing the bundle", &self.path, e)
            }));
        }
        self.written.insert(digest.clone(), size);
        Ok(())
    }

    fn header(&self, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        header
    }

    fn append(&mut self, path: &str, bytes: &[u8]) -> Result<(), BundleError> {
        let mut header = self.header(bytes.len() as u64);
        self.tar
            .append_data(&mut header, path, bytes)
            .map_err(|e| from_io(e, |e| BundleError::io("writing the bundle", &self.path, e)))
    }

    /// Writes the indexes (and the signature, with `key`) and closes the bundle. Whether
    /// each entry is carried is decided here: by whether the archive holds its digest.
    pub fn finish(mut self, key: Option<&SecretKey>) -> Result<Written, BundleError> {
        if self.failed {
            return Err(BundleError::WriterFailed);
        }
        let mut index =
            std::mem::replace(&mut self.index, BundleIndex::new(SystemTime::UNIX_EPOCH));
        index.created = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(self.mtime);
        for entry in &mut index.entries {
            entry.carried = self.written.contains_key(&entry.digest);
        }
        index.validate()?;
        let index_bytes = index.to_bytes();
        self.append(layout::OCI_INDEX, &layout::oci_index_bytes(&index))?;
        if let Some(key) = key {
            self.append(layout::SIGNATURE, &key.sign(&index_bytes).to_bytes())?;
        }
        self.append(layout::INDEX, &index_bytes)?;
        let volumes = self
            .tar
            .into_inner()
            .map_err(|e| from_io(e, |e| BundleError::io("writing the bundle", &self.path, e)))?
            .finish()?;
        Ok(Written { index, volumes })
    }
}

/// Passes exactly `size` bytes through, then checks their digest; fewer or more bytes, or
/// other bytes, end the copy with the matching [`BundleError`].
struct Checked<'a, R> {
    inner: R,
    digest: &'a Digest,
    size: u64,
    verifier: Sha256Verifier,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.size - self.verifier.len();
        if left == 0 {
            // The end: nothing more may come, and what came must hash right.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? > 0 {
                return Err(into_io(BundleError::SizeMismatch {
                    digest: self.digest.clone(),
                    expected: self.size,
                    actual: self.size + 1,
                }));
            }
            let actual = self.verifier.clone().finish();
            if actual != *self.digest {
                return Err(into_io(BundleError::DigestMismatch {
                    expected: self.digest.clone(),
                    actual,
                }));
            }
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..want])?;
        if read == 0 && want > 0 {
            return Err(into_io(BundleError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                actual: self.verifier.len(),
            }));
        }
        self.verifier.update(&buf[..read]);
        self.progress.advance(read as u64);
        Ok(read)
    }
}
