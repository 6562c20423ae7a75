//! An in-memory backend for tests: the same contract as the fs backend, no disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use airlock_types::{Digest, Sha256Verifier};

use crate::{BlobFile, BlobRead, BlobStore, BlobWriter, Committed, PartialSource, StoreError};

/// Blobs held in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    blobs: Arc<RwLock<HashMap<Digest, Arc<Vec<u8>>>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many blobs are committed.
    pub fn len(&self) -> usize {
        self.blobs.read().expect("lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn reader(bytes: &[u8], offset: u64) -> BlobRead {
    let start = (offset as usize).min(bytes.len());
    Box::pin(std::io::Cursor::new(bytes[start..].to_vec()))
}

/// A committed blob's bytes; they outlive a delete as an open file does.
struct MemoryFile(Arc<Vec<u8>>);

#[async_trait::async_trait]
impl BlobFile for MemoryFile {
    async fn read_at(
        self: Arc<Self>,
        mut buf: Vec<u8>,
        offset: u64,
    ) -> std::io::Result<(Vec<u8>, usize)> {
        let start = usize::try_from(offset).map_or(self.0.len(), |o| o.min(self.0.len()));
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok((buf, n))
    }
}

#[async_trait::async_trait]
impl BlobStore for MemoryStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        Ok(self
            .blobs
            .read()
            .expect("lock")
            .get(digest)
            .map(|b| b.len() as u64))
    }

    async fn open(&self, digest: &Digest, offset: u64) -> Result<Option<BlobRead>, StoreError> {
        Ok(self
            .blobs
            .read()
            .expect("lock")
            .get(digest)
            .map(|b| reader(b, offset)))
    }

    async fn open_file(&self, digest: &Digest) -> Result<Option<Arc<dyn BlobFile>>, StoreError> {
        let bytes = self.blobs.read().expect("lock").get(digest).cloned();
        Ok(bytes.map(|b| Arc::new(MemoryFile(b)) as Arc<dyn BlobFile>))
    }

    async fn create(&self, expected: Option<&Digest>) -> Result<Box<dyn BlobWriter>, StoreError> {
        Ok(Box::new(MemoryWriter {
            store: self.clone(),
            expected: expected.cloned(),
            buffer: Arc::new(Buffer::default()),
            verifier: Sha256Verifier::new(),
        }))
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.blobs.write().expect("lock").remove(digest).is_some())
    }

    async fn clean_temp(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}

#[derive(Debug, Default)]
struct Buffer(Mutex<Vec<u8>>);

#[async_trait::async_trait]
impl PartialSource for Buffer {
    async fn open_file(&self) -> Result<Arc<dyn BlobFile>, StoreError> {
        let bytes = self.0.lock().expect("lock").clone();
        Ok(Arc::new(MemoryFile(Arc::new(bytes))))
    }
}

struct MemoryWriter {
    store: MemoryStore,
    expected: Option<Digest>,
    buffer: Arc<Buffer>,
    verifier: Sha256Verifier,
}

#[async_trait::async_trait]
impl BlobWriter for MemoryWriter {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.buffer.0.lock().expect("lock").extend_from_slice(chunk);
        self.verifier.update(chunk);
        Ok(())
    }

    fn written(&self) -> u64 {
        self.verifier.len()
    }

    fn partial(&self) -> Arc<dyn PartialSource> {
        self.buffer.clone()
    }

    async fn commit(self: Box<Self>) -> Result<Committed, StoreError> {
        let size = self.verifier.len();
        let actual = self.verifier.finish();
        if let Some(expected) = self.expected {
            if actual != expected {
                return Err(StoreError::DigestMismatch {
                    expected,
                    actual,
                    size,
                });
            }
        }
        let bytes = self.buffer.0.lock().expect("lock").clone();
        self.store
            .blobs
            .write()
            .expect("lock")
            .insert(actual.clone(), Arc::new(bytes));
        Ok(Committed {
            digest: actual,
            size,
        })
    }
}
