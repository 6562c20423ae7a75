//! Reading a bundle: its indexes alone (seeking over the blobs), or every member in order
//! with every blob hashed as it streams past.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use airlock_types::{Digest, Sha256Verifier};

use crate::error::{BundleError, from_io};
use crate::index::BundleIndex;
use crate::layout::{self, Member};
use crate::progress::Progress;
use crate::sign::Signature;
use crate::volume::{JoinedReader, Volumes};

/// Largest index, OCI index or signature read into memory (an index of a million entries
/// is about 300 MiB; nothing real comes near this).
const MAX_DOCUMENT: u64 = 512 << 20;

/// Bytes read past the end-of-archive marker to check it (tar pads to 10 KiB records).
const MAX_TRAILER: u64 = 64 << 10;

/// What [`Bundle::scan`] hands each blob's bytes to.
pub type OnBlob<'a> = dyn FnMut(&Digest, u64, &mut BlobBytes<'_>) -> Result<(), BundleError> + 'a;

/// One blob's bytes as [`Bundle::scan`] reads them, hashed against the blob's digest as they
/// go unless the caller checks them itself ([`BlobBytes::checked_by_caller`]).
pub struct BlobBytes<'a> {
    inner: &'a mut dyn Read,
    /// `None` once the caller took over the digest check.
    verifier: Option<Sha256Verifier>,
    read: u64,
    progress: &'a dyn Progress,
}

impl BlobBytes<'_> {
    /// Says that every byte the caller reads goes through a writer that checks it against
    /// the blob's digest (a store's verified writer), so the scan does not hash it a second
    /// time. Only before the first read; afterwards it does nothing. The caller then answers
    /// for the digest: its callback returns `Ok` only when it read all the blob's bytes and
    /// its check passed, and [`BundleError::DigestMismatch`] when the check failed. Anything
    /// less (the caller stopped early) is refused by the scan even if the rest reads fine.
    pub fn checked_by_caller(&mut self) {
        if self.read == 0 {
            self.verifier = None;
        }
    }
}

impl Read for BlobBytes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if let Some(verifier) = &mut self.verifier {
            verifier.update(&buf[..read]);
        }
        self.read += read as u64;
        self.progress.advance(read as u64);
        Ok(read)
    }
}

/// A bundle on disk (one file, or its volumes).
pub struct Bundle {
    volumes: Volumes,
    /// Set when the current pass read to the end of the last volume: an error then means
    /// the archive is cut short, whatever the tar reader calls it.
    ended: Arc<AtomicBool>,
    /// Told about every blob byte a [`Bundle::scan`] hashes.
    progress: Arc<dyn Progress>,
}

/// A bundle's documents: airlock's index (parsed, and its exact bytes, which a signature
/// covers), its signature if any, and the OCI `index.json`.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub index: BundleIndex,
    pub index_bytes: Vec<u8>,
    pub signature: Option<Signature>,
    pub oci_index: Vec<u8>,
}

/// What a full pass over the archive saw.
#[derive(Debug)]
pub struct Scan {
    pub catalog: Catalog,
    /// Every blob in the archive (each verified against its digest), with its size.
    pub blobs: BTreeMap<Digest, u64>,
}

impl Bundle {
    /// Opens `path` and the volumes after it.
    pub fn open(path: &Path) -> Result<Self, BundleError> {
        Ok(Self {
            volumes: Volumes::open(path)?,
            ended: Arc::default(),
            progress: crate::progress::silent(),
        })
    }

    /// Reports the blob bytes each [`Bundle::scan`] hashes to `progress` (the total is the
    /// caller's to give: the carried blobs' sizes in the index).
    pub fn set_progress(&mut self, progress: Arc<dyn Progress>) {
        self.progress = progress;
    }

    /// Where this bundle reports progress.
    pub fn progress(&self) -> &dyn Progress {
        &*self.progress
    }

    pub fn volumes(&self) -> &Volumes {
        &self.volumes
    }

    /// Reads the documents only, seeking over every blob.
    pub fn catalog(&self) -> Result<Catalog, BundleError> {
        let mut archive = self.archive()?;
        let entries = archive
            .entries_with_seek()
            .map_err(|e| self.read_error(e))?;
        let (documents, _) = self.walk(entries, None)?;
        self.check_end(archive)?;
        Self::assemble(documents)
    }

    /// Reads every member in order. Each blob's bytes are handed to `on_blob` as they
    /// stream, then checked against the blob's digest (by the scan, or by `on_blob` when
    /// it says so: [`BlobBytes::checked_by_caller`]): `on_blob` must not trust them before
    /// `scan` returns `Ok` (or discard what it made of them on any error).
    pub fn scan(
        &self,
        mut on_blob: impl FnMut(&Digest, u64, &mut BlobBytes<'_>) -> Result<(), BundleError>,
    ) -> Result<Scan, BundleError> {
        let mut archive = self.archive()?;
        let entries = archive.entries().map_err(|e| self.read_error(e))?;
        let (documents, blobs) = self.walk(entries, Some(&mut on_blob))?;
        self.check_end(archive)?;
        Ok(Scan {
            catalog: Self::assemble(documents)?,
            blobs,
        })
    }

    fn archive(&self) -> Result<tar::Archive<BufReader<JoinedReader>>, BundleError> {
        self.ended.store(false, Ordering::Relaxed);
        Ok(tar::Archive::new(BufReader::with_capacity(
            1 << 20,
            self.volumes.reader(Arc::clone(&self.ended))?,
        )))
    }

    fn read_error(&self, error: io::Error) -> BundleError {
        from_io(error, |error| {
            if self.ended.load(Ordering::Relaxed) {
                self.truncated()
            } else {
                BundleError::Read {
                    path: self.volumes.first().to_owned(),
                    volumes: self.volumes.count(),
                    error,
                }
            }
        })
    }

    /// Reads the members; blobs are hashed when `on_blob` is given, skipped otherwise.
    fn walk(
        &self,
        entries: tar::Entries<'_, BufReader<JoinedReader>>,
        mut on_blob: Option<&mut OnBlob<'_>>,
    ) -> Result<(Documents, BTreeMap<Digest, u64>), BundleError> {
        let mut documents = Documents::default();
        let mut blobs = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for entry in entries {
            let mut entry = entry.map_err(|e| self.read_error(e))?;
            let raw_path = entry.path_bytes();
            let path = String::from_utf8_lossy(&raw_path).into_owned();
            let member = Member::from_path(&path)
                .ok_or_else(|| BundleError::UnexpectedMember { path: path.clone() })?;
            let kind = entry.header().entry_type();
            let expected_kind = if member == Member::Directory {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            };
            if kind != expected_kind
                && !(kind == tar::EntryType::Continuous && member != Member::Directory)
            {
                return Err(BundleError::BadMember {
                    path,
                    reason: format!("it is a {kind:?} entry, not a {expected_kind:?} one"),
                });
            }
            if member == Member::Directory {
                continue;
            }
            if !seen.insert(path.trim_start_matches("./").to_owned()) {
                return Err(BundleError::DuplicateMember { path });
            }
            let size = entry.size();
            let slot = match member {
                Member::Blob(digest) => {
                    if let Some(on_blob) = on_blob.as_deref_mut() {
                        self.check_blob(&digest, size, &mut entry, on_blob)?;
                    }
                    blobs.insert(digest, size);
                    continue;
                }
                Member::OciLayout => &mut documents.oci_layout,
                Member::OciIndex => &mut documents.oci_index,
                Member::Index => &mut documents.index,
                Member::Signature => &mut documents.signature,
                Member::Directory => unreachable!("skipped above"),
            };
            *slot = Some(self.read_document(&path, size, &mut entry)?);
        }
        Ok((documents, blobs))
    }

    fn check_blob(
        &self,
        digest: &Digest,
        size: u64,
        entry: &mut impl Read,
        on_blob: &mut OnBlob<'_>,
    ) -> Result<(), BundleError> {
        self.progress.blob(digest, size);
        let mut bytes = BlobBytes {
            inner: entry,
            verifier: Some(Sha256Verifier::new()),
            read: 0,
            progress: &*self.progress,
        };
        on_blob(digest, size, &mut bytes)?;
        let read_by_caller = bytes.read;
        io::copy(&mut bytes, &mut io::sink()).map_err(|e| self.read_error(e))?;
        if bytes.read != size {
            // The tar header promised `size` bytes and the stream ended first.
            return Err(self.truncated());
        }
        match bytes.verifier {
            Some(verifier) => {
                let actual = verifier.finish();
                if actual != *digest {
                    return Err(BundleError::DigestMismatch {
                        expected: digest.clone(),
                        actual,
                    });
                }
            }
            // The caller checked the digest, but only of what it read: a caller that stopped
            // early (a read that failed once) checked nothing.
            None if read_by_caller != size => {
                return Err(BundleError::Read {
                    path: self.volumes.first().to_owned(),
                    volumes: self.volumes.count(),
                    error: io::Error::other(format!(
                        "blob {digest} could not be read through in one go"
                    )),
                });
            }
            None => {}
        }
        Ok(())
    }

    fn read_document(
        &self,
        path: &str,
        size: u64,
        entry: &mut impl Read,
    ) -> Result<Vec<u8>, BundleError> {
        if size > MAX_DOCUMENT {
            return Err(BundleError::BadMember {
                path: path.to_owned(),
                reason: format!(
                    "it is {size} bytes, more than the {MAX_DOCUMENT} a bundle document may have"
                ),
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| self.read_error(e))?;
        if bytes.len() as u64 != size {
            return Err(self.truncated());
        }
        Ok(bytes)
    }

    fn truncated(&self) -> BundleError {
        BundleError::Truncated {
            path: self.volumes.first().to_owned(),
            next: self.volumes.next_path(),
        }
    }

    /// A complete archive ends with tar's end-of-archive marker: zero blocks and nothing
    /// else. The tar reader has consumed the first zero block, if there was one.
    fn check_end(&self, archive: tar::Archive<BufReader<JoinedReader>>) -> Result<(), BundleError> {
        let mut rest = Vec::new();
        archive
            .into_inner()
            .take(MAX_TRAILER + 1)
            .read_to_end(&mut rest)
            .map_err(|e| self.read_error(e))?;
        if rest.is_empty() {
            return Err(self.truncated());
        }
        if rest.len() as u64 > MAX_TRAILER || rest.iter().any(|&b| b != 0) {
            return Err(BundleError::TrailingData {
                path: self.volumes.first().to_owned(),
            });
        }
        Ok(())
    }

    fn assemble(documents: Documents) -> Result<Catalog, BundleError> {
        let oci_layout = documents.oci_layout.ok_or(BundleError::MissingMember {
            path: layout::OCI_LAYOUT,
        })?;
        let layout_version = serde_json::from_slice::<serde_json::Value>(&oci_layout)
            .ok()
            .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_owned));
        if layout_version.as_deref() != Some("1.0.0") {
            return Err(BundleError::BadMember {
                path: layout::OCI_LAYOUT.to_owned(),
                reason: "it does not say imageLayoutVersion 1.0.0".to_owned(),
            });
        }
        let index_bytes = documents.index.ok_or(BundleError::MissingMember {
            path: layout::INDEX,
        })?;
        let oci_index = documents.oci_index.ok_or(BundleError::MissingMember {
            path: layout::OCI_INDEX,
        })?;
        let signature = documents
            .signature
            .map(|bytes| Signature::parse(&bytes))
            .transpose()?;
        Ok(Catalog {
            index: BundleIndex::parse(&index_bytes)?,
            index_bytes,
            signature,
            oci_index,
        })
    }
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("volumes", &self.volumes)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Documents {
    oci_layout: Option<Vec<u8>>,
    oci_index: Option<Vec<u8>>,
    index: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
}
