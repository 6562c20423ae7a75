//! The metadata index: tag → digest, manifest media types and references, blob sizes and
//! last use, fetch times.
//!
//! An embedded redb database beside the store. Values are small JSON records so the
//! format is easy to inspect and to extend with fields. Last-use times are collected in
//! memory and written in batches: a cache hit costs no disk write.
//!
//! The format of keys and records is versioned by [`SCHEMA`], kept in the `meta` table;
//! opening an older index upgrades it in place (see `upgrade`), and an index written by a
//! newer airlock is refused rather than misread.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use airlock_types::Digest;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::shared::Shared;

mod batch;
mod pushed;
#[cfg(test)]
mod tests;
mod upgrade;

pub use batch::Batch;

use upgrade::upgrade;

const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags");
const MANIFESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("manifests");
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Which file rows name a blob: `<digest> <file key>`. Digests hold no space.
const FILE_BLOBS: TableDefinition<&str, ()> = TableDefinition::new("file_blobs");

/// The version of the index's key and record formats this build reads and writes.
pub const SCHEMA: u64 = 4;

/// Where a tag lives: which proxy, which repository, which tag, and for which kind of
/// client: upstreams answer a tag by the client's `Accept`, so one tag can name an index for
/// one client and a single-platform manifest for another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagKey {
    pub proxy: String,
    pub repo: String,
    pub tag: String,
    /// The registry's name for the class of `Accept` the tag was fetched under; empty for
    /// clients that accept every manifest kind. At most a few distinct values per tag.
    pub variant: String,
}

impl TagKey {
    // Repository names and tags cannot contain ':' or '#' (distribution grammar), proxy
    // names cannot contain '/', so this encoding is unambiguous. The empty variant keeps
    // the schema-1 form.
    pub(crate) fn encode(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}:{}", self.proxy, self.repo, self.tag)
        } else {
            format!("{}/{}:{}#{}", self.proxy, self.repo, self.tag, self.variant)
        }
    }

    pub(crate) fn decode(key: &str) -> Option<Self> {
        let (proxy, rest) = key.split_once('/')?;
        let (rest, variant) = rest.split_once('#').unwrap_or((rest, ""));
        let (repo, tag) = rest.rsplit_once(':')?;
        Some(Self {
            proxy: proxy.to_owned(),
            repo: repo.to_owned(),
            tag: tag.to_owned(),
            variant: variant.to_owned(),
        })
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
    /// What the manifest references: config and layers, or an index's child manifests.
    #[serde(default)]
    pub refs: Vec<Digest>,
}

/// A package proxy's file under a path (an index page, a metadata file): what it held when
/// last fetched, so it can be served and revalidated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The content, or `None` when the upstream said 404 (a negative cache entry).
    pub digest: Option<Digest>,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Unix seconds of the last successful contact with the upstream for this path.
    pub checked_at: u64,
}

/// A committed blob: its size and when a client last received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    pub last_used: u64,
}

/// Everything eviction needs to decide, read in one transaction.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub blobs: HashMap<Digest, BlobRecord>,
    pub manifests: HashMap<Digest, ManifestRecord>,
    pub tags: Vec<(TagKey, Digest)>,
}

/// The metadata index. Cheap to clone.
#[derive(Clone)]
pub struct MetaIndex {
    db: Arc<Database>,
    /// digest → (when, size): the size lets a flush adopt a blob whose record a crash lost.
    touches: Arc<Mutex<HashMap<Digest, (u64, u64)>>>,
    total: Arc<AtomicU64>,
    /// Whether the `pushed` table may hold a mark: while it is empty (a site without
    /// hosted projects) a proxy's hit skips the lookup.
    any_pushed: Arc<std::sync::atomic::AtomicBool>,
    /// The records replicas on one bucket share; the local tables are a cache of them.
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for MetaIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetaIndex")
    }
}

fn index_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Index(e.to_string())
}

/// Calls `f` with every record of `table` that decodes; a record that does not (written by
/// a newer version, say) is skipped rather than failing the whole read.
fn for_each<T: for<'de> Deserialize<'de>>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<'static, &'static str, &'static [u8]>,
    f: impl FnMut(&str, T),
) -> Result<(), StoreError> {
    each_record(&txn.open_table(table).map_err(index_err)?, f)
}

/// [`for_each`] over a table already open.
fn each_record<T: for<'de> Deserialize<'de>>(
    table: &redb::ReadOnlyTable<&'static str, &'static [u8]>,
    mut f: impl FnMut(&str, T),
) -> Result<(), StoreError> {
    for entry in table.iter().map_err(index_err)? {
        let (key, value) = entry.map_err(index_err)?;
        if let Ok(record) = serde_json::from_slice(value.value()) {
            f(key.value(), record);
        }
    }
    Ok(())
}

/// How many records `table` holds, to size what a scan fills.
fn room(table: &redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<usize, StoreError> {
    let len = table.len().map_err(index_err)?;
    Ok(usize::try_from(len).unwrap_or(usize::MAX))
}

/// An empty map with room for every record of `table`.
fn with_room<V>(
    table: &redb::ReadOnlyTable<&'static str, &'static [u8]>,
) -> Result<HashMap<Digest, V>, StoreError> {
    Ok(HashMap::with_capacity(room(table)?))
}

/// Just the digest of a [`FileRecord`], for scans that need nothing else.
#[derive(Deserialize)]
struct FileDigest {
    digest: Option<Digest>,
}

fn file_key(proxy: &str, path: &str) -> String {
    format!("{proxy}/{path}")
}

fn file_blob_key(digest: &Digest, file_key: &str) -> String {
    format!("{digest} {file_key}")
}

/// Writes a file row and keeps `file_blobs` in step with the digest it names now.
fn write_file(
    txn: &redb::WriteTransaction,
    key: &str,
    record: &[u8],
    digest: Option<&Digest>,
) -> Result<(), StoreError> {
    let previous = txn
        .open_table(FILES)
        .map_err(index_err)?
        .insert(key, record)
        .map_err(index_err)?
        .and_then(|old| serde_json::from_slice::<FileDigest>(old.value()).ok())
        .and_then(|old| old.digest);
    let mut by_blob = txn.open_table(FILE_BLOBS).map_err(index_err)?;
    if let Some(previous) = previous.as_ref().filter(|p| Some(*p) != digest) {
        by_blob
            .remove(file_blob_key(previous, key).as_str())
            .map_err(index_err)?;
    }
    if let Some(digest) = digest {
        by_blob
            .insert(file_blob_key(digest, key).as_str(), ())
            .map_err(index_err)?;
    }
    Ok(())
}

/// Removes the file rows naming `digest`; returns how many.
fn remove_files_of(txn: &redb::WriteTransaction, digest: &Digest) -> Result<usize, StoreError> {
    let mut by_blob = txn.open_table(FILE_BLOBS).map_err(index_err)?;
    // Every entry of `digest` starts with `<digest> `; ' ' + 1 is '!'.
    let start = format!("{digest} ");
    let end = format!("{digest}!");
    let mut keys = Vec::new();
    for entry in by_blob
        .range(start.as_str()..end.as_str())
        .map_err(index_err)?
    {
        keys.push(entry.map_err(index_err)?.0.value().to_owned());
    }
    let mut files = txn.open_table(FILES).map_err(index_err)?;
    for key in &keys {
        by_blob.remove(key.as_str()).map_err(index_err)?;
        files.remove(&key[start.len()..]).map_err(index_err)?;
    }
    Ok(keys.len())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl MetaIndex {
    /// Opens or creates the index file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                path: path.to_owned(),
            },
            e => StoreError::Index(format!("opening {}: {e}", path.display())),
        })?;
        Self::init(db)
    }

    /// Whether another process (a running gateway) holds the index file at `path`, found
    /// from redb's `flock` without opening the database (which may rewrite its header).
    /// `false` when there is no file.
    pub fn is_held(path: &Path) -> Result<bool, StoreError> {
        let io = |source| StoreError::Io {
            context: format!("checking the lock of {}", path.display()),
            source,
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        // A shared lock conflicts with redb's exclusive one; closing the file releases it.
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared) {
            Ok(()) => Ok(false),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(true),
            Err(e) => Err(io(e.into())),
        }
    }

    /// An index held in memory, for tests.
    pub fn temporary() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(index_err)?;
        Self::init(db)
    }

    fn init(db: Database) -> Result<Self, StoreError> {
        let txn = db.begin_write().map_err(index_err)?;
        txn.open_table(TAGS).map_err(index_err)?;
        txn.open_table(MANIFESTS).map_err(index_err)?;
        txn.open_table(BLOBS).map_err(index_err)?;
        txn.open_table(FILES).map_err(index_err)?;
        txn.open_table(FILE_BLOBS).map_err(index_err)?;
        txn.open_table(pushed::PUSHED).map_err(index_err)?;
        upgrade(&txn)?;
        txn.commit().map_err(index_err)?;
        // The stored size is summed from the index, never from a scan of the store.
        let txn = db.begin_read().map_err(index_err)?;
        let mut total = 0;
        for_each(&txn, BLOBS, |_, record: BlobRecord| total += record.size)?;
        let any_pushed = !txn
            .open_table(pushed::PUSHED)
            .map_err(index_err)?
            .is_empty()
            .map_err(index_err)?;
        drop(txn);
        Ok(Self {
            db: Arc::new(db),
            touches: Arc::new(Mutex::new(HashMap::new())),
            total: Arc::new(AtomicU64::new(total)),
            any_pushed: Arc::new(any_pushed.into()),
            shared: None,
        })
    }

    /// Makes tags, manifest records and file records shared with the other replicas on
    /// the bucket: written through to `shared`, and looked up there on a local miss.
    #[must_use]
    pub fn sharing(mut self, shared: Arc<Shared>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The records shared with other replicas, when there are any.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
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
        self.local_or_shared(TAGS, key.encode(), |shared, key| async move {
            shared.tag(&key).await
        })
        .await
    }

    /// The record under `key` in `table`, else what `ask` finds among the records shared
    /// with other replicas (kept locally from then on).
    async fn local_or_shared<T, F>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: String,
        ask: impl FnOnce(Arc<Shared>, String) -> F,
    ) -> Result<Option<T>, StoreError>
    where
        T: Serialize + for<'de> Deserialize<'de> + Send + 'static,
        F: std::future::Future<Output = Option<T>>,
    {
        let local = self.get(table, key.clone()).await?;
        let Some(shared) = self.shared.clone().filter(|_| local.is_none()) else {
            return Ok(local);
        };
        let found = ask(shared, key.clone()).await;
        if let Some(record) = &found {
            self.put(table, key, record).await?;
        }
        Ok(found)
    }

    /// What another replica recorded for the tag `key` when it checked it after `than` was
    /// checked, kept locally; `None` without sharing or without a later check. A replica
    /// whose copy went stale asks this before asking the upstream.
    pub async fn fresher_tag(
        &self,
        key: &TagKey,
        than: &TagRecord,
    ) -> Result<Option<TagRecord>, StoreError> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        match shared.tag(&key.encode()).await {
            Some(record) if record.checked_at > than.checked_at => {
                self.put(TAGS, key.encode(), &record).await?;
                Ok(Some(record))
            }
            _ => Ok(None),
        }
    }

    pub async fn set_tag(&self, key: &TagKey, record: &TagRecord) -> Result<(), StoreError> {
        self.put(TAGS, key.encode(), record).await?;
        if let Some(shared) = &self.shared {
            shared.set_tag(&key.encode(), record).await;
        }
        Ok(())
    }

    /// Every variant of the tag `key` names (its own `variant` is ignored), the variant of
    /// clients that accept every manifest kind first.
    pub async fn tag_variants(&self, key: &TagKey) -> Result<Vec<(TagKey, TagRecord)>, StoreError> {
        let base = TagKey {
            variant: String::new(),
            ..key.clone()
        }
        .encode();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(index_err)?;
            let table = txn.open_table(TAGS).map_err(index_err)?;
            // Tags are made of `[A-Za-z0-9_.-]`, all above '$': between `base` and
            // `base$` lie exactly `base` and `base#…`.
            let end = format!("{base}$");
            let mut found = Vec::new();
            for entry in table
                .range(base.as_str()..end.as_str())
                .map_err(index_err)?
            {
                let (key, value) = entry.map_err(index_err)?;
                if let (Some(tag), Ok(record)) = (
                    TagKey::decode(key.value()),
                    serde_json::from_slice(value.value()),
                ) {
                    found.push((tag, record));
                }
            }
            Ok(found)
        })
        .await
    }

    /// The tags this replica recorded under `proxy` (a hosted project), every variant, in
    /// key order; with `repo`, that repository's only. Local records only: hosted projects
    /// are not shared between replicas yet.
    pub async fn tags_under(
        &self,
        proxy: &str,
        repo: Option<&str>,
    ) -> Result<Vec<(TagKey, TagRecord)>, StoreError> {
        let start = match repo {
            Some(repo) => format!("{proxy}/{repo}:"),
            None => format!("{proxy}/"),
        };
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(index_err)?;
            let table = txn.open_table(TAGS).map_err(index_err)?;
            let mut found = Vec::new();
            for entry in table.range(start.as_str()..).map_err(index_err)? {
                let (key, value) = entry.map_err(index_err)?;
                if !key.value().starts_with(start.as_str()) {
                    break;
                }
                if let (Some(tag), Ok(record)) = (
                    TagKey::decode(key.value()),
                    serde_json::from_slice(value.value()),
                ) {
                    found.push((tag, record));
                }
            }
            Ok(found)
        })
        .await
    }

    pub async fn manifest(&self, digest: &Digest) -> Result<Option<ManifestRecord>, StoreError> {
        let digest = digest.clone();
        self.local_or_shared(MANIFESTS, digest.to_string(), |shared, _| async move {
            shared.manifest(&digest).await
        })
        .await
    }

    pub async fn set_manifest(
        &self,
        digest: &Digest,
        record: &ManifestRecord,
    ) -> Result<(), StoreError> {
        self.put(MANIFESTS, digest.to_string(), record).await?;
        if let Some(shared) = &self.shared {
            shared.set_manifest(digest, record).await;
        }
        Ok(())
    }

    /// A package proxy's record for `path`.
    pub async fn file(&self, proxy: &str, path: &str) -> Result<Option<FileRecord>, StoreError> {
        let local = self.get(FILES, file_key(proxy, path)).await?;
        let Some(shared) = self.shared.as_ref().filter(|_| local.is_none()) else {
            return Ok(local);
        };
        let found = shared.file(&file_key(proxy, path)).await;
        if let Some(record) = &found {
            self.write_file_locally(file_key(proxy, path), record)
                .await?;
        }
        Ok(found)
    }

    pub async fn set_file(
        &self,
        proxy: &str,
        path: &str,
        record: &FileRecord,
    ) -> Result<(), StoreError> {
        let key = file_key(proxy, path);
        self.write_file_locally(key.clone(), record).await?;
        if let Some(shared) = &self.shared {
            shared.set_file(&key, record).await;
        }
        Ok(())
    }

    async fn write_file_locally(&self, key: String, record: &FileRecord) -> Result<(), StoreError> {
        let digest = record.digest.clone();
        let bytes = serde_json::to_vec(record).map_err(index_err)?;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(index_err)?;
            write_file(&txn, &key, &bytes, digest.as_ref())?;
            txn.commit().map_err(index_err)
        })
        .await
    }

    /// A package proxy's records whose path starts with `prefix`, in path order, with the
    /// paths (what an offline proxy enumerates to list what it holds).
    pub async fn files_under(
        &self,
        proxy: &str,
        prefix: &str,
    ) -> Result<Vec<(String, FileRecord)>, StoreError> {
        let start = file_key(proxy, prefix);
        let skip = proxy.len() + 1;
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(index_err)?;
            let table = txn.open_table(FILES).map_err(index_err)?;
            let mut out = Vec::new();
            for entry in table.range(start.as_str()..).map_err(index_err)? {
                let (key, value) = entry.map_err(index_err)?;
                let key = key.value();
                if !key.starts_with(start.as_str()) {
                    break;
                }
                if let Ok(record) = serde_json::from_slice(value.value()) {
                    out.push((key[skip..].to_owned(), record));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Which of `digests` have a blob record, in one read transaction however many are
    /// asked (an offline package proxy checks every file an index lists).
    pub async fn recorded_blobs(&self, digests: Vec<Digest>) -> Result<Vec<Digest>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(index_err)?;
            let table = txn.open_table(BLOBS).map_err(index_err)?;
            let mut out = Vec::new();
            for digest in digests {
                if table
                    .get(digest.to_string().as_str())
                    .map_err(index_err)?
                    .is_some()
                {
                    out.push(digest);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Removes a package proxy's record for `path`; `false` when there was none.
    pub async fn forget_file(&self, proxy: &str, path: &str) -> Result<bool, StoreError> {
        let key = file_key(proxy, path);
        if let Some(shared) = &self.shared {
            shared.forget_file(&key).await;
        }
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(index_err)?;
            let removed = txn
                .open_table(FILES)
                .map_err(index_err)?
                .remove(key.as_str())
                .map_err(index_err)?
                .map(|old| serde_json::from_slice::<FileDigest>(old.value()).ok());
            if let Some(Some(FileDigest {
                digest: Some(digest),
            })) = &removed
            {
                txn.open_table(FILE_BLOBS)
                    .map_err(index_err)?
                    .remove(file_blob_key(digest, &key).as_str())
                    .map_err(index_err)?;
            }
            txn.commit().map_err(index_err)?;
            Ok(removed.is_some())
        })
        .await
    }

    /// Records a committed blob (new or again) as used now: content an upstream served,
    /// so a push's mark on it ([`Self::record_pushed`]) goes.
    pub async fn record_blob(&self, digest: &Digest, size: u64) -> Result<(), StoreError> {
        self.record_blob_and_file(digest, size, None).await
    }

    /// [`Self::record_blob`] and [`Self::set_file`] in one transaction (one durable commit
    /// on a package proxy's miss instead of two).
    pub async fn record_file_blob(
        &self,
        digest: &Digest,
        size: u64,
        proxy: &str,
        path: &str,
        record: &FileRecord,
    ) -> Result<(), StoreError> {
        let file = serde_json::to_vec(record).map_err(index_err)?;
        self.record_blob_and_file(
            digest,
            size,
            Some((file_key(proxy, path), file, record.digest.clone())),
        )
        .await?;
        if let Some(shared) = &self.shared {
            shared.set_file(&file_key(proxy, path), record).await;
        }
        Ok(())
    }

    async fn record_blob_and_file(
        &self,
        digest: &Digest,
        size: u64,
        file: Option<(String, Vec<u8>, Option<Digest>)>,
    ) -> Result<(), StoreError> {
        self.record_blob_from(digest, size, file, pushed::Origin::Upstream)
            .await
    }

    /// Records a committed blob (and a file row naming it) as used now, and keeps its
    /// `pushed` mark as `origin` says.
    async fn record_blob_from(
        &self,
        digest: &Digest,
        size: u64,
        file: Option<(String, Vec<u8>, Option<Digest>)>,
        origin: pushed::Origin,
    ) -> Result<(), StoreError> {
        let key = digest.to_string();
        let record = BlobRecord {
            size,
            last_used: unix_now(),
        };
        let bytes = serde_json::to_vec(&record).map_err(index_err)?;
        let total = self.total.clone();
        let any_pushed = self.any_pushed.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(index_err)?;
            let previous = txn
                .open_table(BLOBS)
                .map_err(index_err)?
                .insert(key.as_str(), bytes.as_slice())
                .map_err(index_err)?
                .and_then(|old| serde_json::from_slice::<BlobRecord>(old.value()).ok());
            if let Some((key, file, names)) = &file {
                write_file(&txn, key, file, names.as_ref())?;
            }
            pushed::mark(&txn, &key, origin, previous.is_none(), &any_pushed)?;
            txn.commit().map_err(index_err)?;
            if previous.is_none() {
                total.fetch_add(size, Ordering::Relaxed);
            }
            Ok(())
        })
        .await?;
        if let Some(shared) = &self.shared {
            shared.record_blobs(&[(digest.clone(), record)]).await;
        }
        Ok(())
    }

    /// Notes that a client received the blob `digest` of `size` bytes now; written at the
    /// next [`Self::flush_touches`]. A committed blob without a record (a crash between the
    /// rename and the record) gets one then.
    pub fn touch(&self, digest: &Digest, size: u64) {
        self.touches
            .lock()
            .expect("touch lock")
            .insert(digest.clone(), (unix_now(), size));
    }

    /// Writes collected last-use times in one transaction.
    pub async fn flush_touches(&self) -> Result<usize, StoreError> {
        let touches = std::mem::take(&mut *self.touches.lock().expect("touch lock"));
        if touches.is_empty() {
            return Ok(0);
        }
        if let Some(shared) = &self.shared {
            let hints: Vec<(Digest, BlobRecord)> = touches
                .iter()
                .map(|(digest, (when, size))| {
                    let record = BlobRecord {
                        size: *size,
                        last_used: *when,
                    };
                    (digest.clone(), record)
                })
                .collect();
            shared.record_blobs(&hints).await;
        }
        let total = self.total.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(index_err)?;
            let mut adopted = 0;
            let written = touches.len();
            {
                let mut table = txn.open_table(BLOBS).map_err(index_err)?;
                for (digest, (when, size)) in touches {
                    let key = digest.to_string();
                    let current = table
                        .get(key.as_str())
                        .map_err(index_err)?
                        .and_then(|v| serde_json::from_slice::<BlobRecord>(v.value()).ok());
                    let record = if let Some(record) = current {
                        BlobRecord {
                            last_used: record.last_used.max(when),
                            ..record
                        }
                    } else {
                        adopted += size;
                        BlobRecord {
                            size,
                            last_used: when,
                        }
                    };
                    let bytes = serde_json::to_vec(&record).map_err(index_err)?;
                    table
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(index_err)?;
                }
            }
            txn.commit().map_err(index_err)?;
            total.fetch_add(adopted, Ordering::Relaxed);
            Ok(written)
        })
        .await
    }

    /// Bytes of committed blobs the index knows about.
    pub fn total_size(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Reads blobs, manifests and tags in one consistent view.
    ///
    /// Blob records are decoded on one thread while manifests and tags are on another: at a
    /// million blobs the read is most of an eviction pass (`bench/store`).
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(index_err)?;
            let blobs = txn.open_table(BLOBS).map_err(index_err)?;
            let manifests = txn.open_table(MANIFESTS).map_err(index_err)?;
            let tags = txn.open_table(TAGS).map_err(index_err)?;
            std::thread::scope(|scope| {
                let others = scope.spawn(|| {
                    let mut records = with_room(&manifests)?;
                    each_record(&manifests, |key, record| {
                        if let Ok(digest) = key.parse() {
                            records.insert(digest, record);
                        }
                    })?;
                    let mut tagged = Vec::with_capacity(room(&tags)?);
                    each_record(&tags, |key, record: TagRecord| {
                        if let Some(tag) = TagKey::decode(key) {
                            tagged.push((tag, record.digest));
                        }
                    })?;
                    Ok::<_, StoreError>((records, tagged))
                });
                let mut records = with_room(&blobs)?;
                each_record(&blobs, |key, record| {
                    if let Ok(digest) = key.parse() {
                        records.insert(digest, record);
                    }
                })?;
                let (manifests, tags) = others.join().map_err(|_| {
                    StoreError::Index("reading manifest records panicked".to_owned())
                })??;
                Ok(Snapshot {
                    blobs: records,
                    manifests,
                    tags,
                })
            })
        })
        .await
    }

    /// Removes the records of deleted blobs (and manifests), of tags that pointed at them and
    /// of package proxies' files whose content they were, in one transaction. Returns how
    /// many file rows went.
    ///
    /// File rows are found through `file_blobs`, so the write lock is held for what goes,
    /// not for a scan of every file row (about a second per million rows).
    pub async fn forget(
        &self,
        digests: Vec<Digest>,
        tags: Vec<TagKey>,
    ) -> Result<usize, StoreError> {
        let total = self.total.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(index_err)?;
            let mut freed = 0;
            let mut files = 0;
            for digest in &digests {
                files += remove_files_of(&txn, digest)?;
            }
            {
                let mut blobs = txn.open_table(BLOBS).map_err(index_err)?;
                let mut manifests = txn.open_table(MANIFESTS).map_err(index_err)?;
                for digest in &digests {
                    let key = digest.to_string();
                    if let Some(old) = blobs.remove(key.as_str()).map_err(index_err)? {
                        if let Ok(record) = serde_json::from_slice::<BlobRecord>(old.value()) {
                            freed += record.size;
                        }
                    }
                    manifests.remove(key.as_str()).map_err(index_err)?;
                    pushed::unmark(&txn, &key)?;
                }
                let mut tag_table = txn.open_table(TAGS).map_err(index_err)?;
                for tag in &tags {
                    tag_table.remove(tag.encode().as_str()).map_err(index_err)?;
                }
            }
            txn.commit().map_err(index_err)?;
            total.fetch_sub(freed.min(total.load(Ordering::Relaxed)), Ordering::Relaxed);
            Ok(files)
        })
        .await
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

    /// How many package-proxy file rows the index holds.
    pub async fn file_count(&self) -> Result<u64, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(index_err)?;
            txn.open_table(FILES)
                .map_err(index_err)?
                .len()
                .map_err(index_err)
        })
        .await
    }
}
