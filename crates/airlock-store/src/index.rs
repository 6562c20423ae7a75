//! The metadata index: tag → digest, manifest media types, fetch times.
//!
//! An embedded redb database beside the store. Values are small JSON records so the
//! format is easy to inspect and to extend with fields.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use airlock_types::Digest;
use redb::{Database, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::StoreError;

const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags");
const MANIFESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("manifests");

/// Where a tag lives: which proxy, which repository, which tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagKey {
    pub proxy: String,
    pub repo: String,
    pub tag: String,
}

impl TagKey {
    // Repository names and tags cannot contain ':' (distribution grammar), proxy names
    // cannot contain '/', so this encoding is unambiguous.
    fn encode(&self) -> String {
        format!("{}/{}:{}", self.proxy, self.repo, self.tag)
    }
}

/// What a tag pointed at when it was last fetched or revalidated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: Digest,
    pub media_type: String,
    /// Unix seconds of the last successful contact with the upstream for this tag.
    pub checked_at: u64,
}

/// A manifest stored in the blob store, with the media type it was served with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
}

/// The metadata index. Cheap to clone.
#[derive(Clone)]
pub struct MetaIndex {
    db: Arc<Database>,
}

impl std::fmt::Debug for MetaIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetaIndex")
    }
}

fn index_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Index(e.to_string())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl MetaIndex {
    /// Opens or creates the index file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)
            .map_err(|e| StoreError::Index(format!("opening {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(index_err)?;
        txn.open_table(TAGS).map_err(index_err)?;
        txn.open_table(MANIFESTS).map_err(index_err)?;
        txn.commit().map_err(index_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// An index in a temporary file, for tests.
    pub fn temporary() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(index_err)?;
        let txn = db.begin_write().map_err(index_err)?;
        txn.open_table(TAGS).map_err(index_err)?;
        txn.open_table(MANIFESTS).map_err(index_err)?;
        txn.commit().map_err(index_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(index_err)?
    }

    async fn get<T: for<'de> Deserialize<'de> + Send + 'static>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: String,
    ) -> Result<Option<T>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(index_err)?;
            let table = txn.open_table(table).map_err(index_err)?;
            let Some(value) = table.get(key.as_str()).map_err(index_err)? else {
                return Ok(None);
            };
            serde_json::from_slice(value.value())
                .map(Some)
                .map_err(index_err)
        })
        .await
    }

    async fn put<T: Serialize>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: String,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(index_err)?;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(index_err)?;
            txn.open_table(table)
                .map_err(index_err)?
                .insert(key.as_str(), bytes.as_slice())
                .map_err(index_err)?;
            txn.commit().map_err(index_err)
        })
        .await
    }

    pub async fn tag(&self, key: &TagKey) -> Result<Option<TagRecord>, StoreError> {
        self.get(TAGS, key.encode()).await
    }

    pub async fn set_tag(&self, key: &TagKey, record: &TagRecord) -> Result<(), StoreError> {
        self.put(TAGS, key.encode(), record).await
    }

    pub async fn manifest(&self, digest: &Digest) -> Result<Option<ManifestRecord>, StoreError> {
        self.get(MANIFESTS, digest.to_string()).await
    }

    pub async fn set_manifest(
        &self,
        digest: &Digest,
        record: &ManifestRecord,
    ) -> Result<(), StoreError> {
        self.put(MANIFESTS, digest.to_string(), record).await
    }

    /// Counts of records, for the status page and tests.
    pub async fn counts(&self) -> Result<(u64, u64), StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(index_err)?;
            let tags = txn
                .open_table(TAGS)
                .map_err(index_err)?
                .len()
                .map_err(index_err)?;
            let manifests = txn
                .open_table(MANIFESTS)
                .map_err(index_err)?
                .len()
                .map_err(index_err)?;
            Ok((tags, manifests))
        })
        .await
    }
}
