//! What several gateways on one bucket share, kept in K2V beside the bucket: tags, manifest
//! records and package file records (so every replica serves what any replica cached), and
//! download leases (so a miss seen by several replicas at once is normally fetched once).
//!
//! Each replica's local index stays the fast path and becomes a cache of these records: a
//! local miss asks K2V and keeps the answer. Records are written read-then-write with the
//! read's causality token, so a write replaces only what its writer saw; records written
//! concurrently come back as siblings and are merged by the newest `checked_at`.
//!
//! Sharing is an optimisation, never a condition of serving: when K2V cannot be reached a
//! replica works alone (logged), as a single gateway would.

use std::sync::Arc;
use std::time::Duration;

use airlock_types::Digest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use std::collections::HashSet;

use crate::StoreError;
use crate::index::{BlobRecord, FileRecord, ManifestRecord, Snapshot, TagKey, TagRecord, unix_now};
use crate::k2v::{Item, K2v, Write};

const TAGS: &str = "tags";
const MANIFESTS: &str = "manifests";
const FILES: &str = "files";
const LEASES: &str = "leases";
/// Blob sizes and last use, the LRU hints eviction reads.
const BLOBS: &str = "blobs";
/// Each replica's run-time pins, by replica.
const PINS: &str = "pins";
/// The lease of the replica running an eviction pass.
const EVICTION: &str = "eviction";

/// How long a replica's published pins count after it last published them.
pub const PINS_TTL: Duration = Duration::from_secs(15 * 60);

/// How long a download lease lasts unless its holder renews it: a replica killed mid-fetch
/// holds the others back at most this long.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How long a claimant waits between writing its claim and reading the claims back: claims
/// written at about the same time are all visible by then, so the read settles who fetches.
const SETTLE: Duration = Duration::from_millis(50);

/// The shared records of one bucket, seen from one replica.
#[derive(Debug)]
pub struct Shared {
    k2v: K2v,
    replica: String,
}

/// A record that can be merged with the ones other replicas wrote at the same time.
trait Merge: Serialize + DeserializeOwned {
    /// The newer of two concurrent values.
    fn newer(self, other: Self) -> Self;
}

impl Merge for TagRecord {
    fn newer(self, other: Self) -> Self {
        if other.checked_at > self.checked_at {
            other
        } else {
            self
        }
    }
}

impl Merge for FileRecord {
    fn newer(self, other: Self) -> Self {
        if other.checked_at > self.checked_at {
            other
        } else {
            self
        }
    }
}

impl Merge for BlobRecord {
    fn newer(self, other: Self) -> Self {
        if other.last_used > self.last_used {
            other
        } else {
            self
        }
    }
}

impl Merge for ManifestRecord {
    // Content-addressed: every replica writes the same record for a digest.
    fn newer(self, _other: Self) -> Self {
        self
    }
}

/// A replica's published pins.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pins {
    until: u64,
    digests: Vec<Digest>,
}

/// A download lease's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    holder: String,
    /// Unix seconds after which the claim is void.
    until: u64,
}

/// Who fetches a blob.
#[derive(Debug)]
pub enum Turn {
    /// This replica: fetch, and drop the lease when done.
    Mine(Lease),
    /// Another replica holds a live lease: wait for the object to land.
    Theirs { holder: String },
}

/// This replica's lease on a download, renewed in the background until dropped; dropping
/// it releases the lease.
#[derive(Debug)]
pub struct Lease {
    renewer: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
    digest: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
        let (shared, digest) = (self.shared.clone(), std::mem::take(&mut self.digest));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { shared.release(&digest).await });
        }
    }
}

fn merged<T: Merge>(item: &Item) -> Option<T> {
    item.values
        .iter()
        .flatten()
        .filter_map(|bytes| serde_json::from_slice::<T>(bytes).ok())
        .reduce(Merge::newer)
}

impl Shared {
    /// `replica` names this gateway in leases; it must differ between replicas.
    pub fn new(k2v: K2v, replica: String) -> Self {
        Self { k2v, replica }
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub(crate) async fn tag(&self, key: &str) -> Option<TagRecord> {
        self.get(TAGS, key).await
    }

    pub(crate) async fn set_tag(&self, key: &str, record: &TagRecord) {
        self.set(TAGS, key, record).await;
    }

    pub(crate) async fn manifest(&self, digest: &Digest) -> Option<ManifestRecord> {
        self.get(MANIFESTS, &digest.to_string()).await
    }

    pub(crate) async fn set_manifest(&self, digest: &Digest, record: &ManifestRecord) {
        self.set(MANIFESTS, &digest.to_string(), record).await;
    }

    pub(crate) async fn file(&self, key: &str) -> Option<FileRecord> {
        self.get(FILES, key).await
    }

    pub(crate) async fn set_file(&self, key: &str, record: &FileRecord) {
        self.set(FILES, key, record).await;
    }

    pub(crate) async fn forget_file(&self, key: &str) {
        let result = async {
            match self.k2v.read(FILES, key).await? {
                Some(item) => self.k2v.delete(FILES, key, &item.token).await,
                None => Ok(()),
            }
        };
        if let Err(error) = result.await {
            warn(FILES, key, &error);
        }
    }

    async fn get<T: Merge>(&self, partition: &str, key: &str) -> Option<T> {
        match self.k2v.read(partition, key).await {
            Ok(item) => item.as_ref().and_then(merged),
            Err(error) => {
                warn(partition, key, &error);
                None
            }
        }
    }

    async fn set<T: Merge>(&self, partition: &str, key: &str, record: &T) {
        let result = async {
            let token = self.k2v.read(partition, key).await?.map(|item| item.token);
            let bytes = serde_json::to_vec(record).map_err(index_error)?;
            self.k2v
                .insert(partition, key, token.as_deref(), bytes)
                .await
        };
        if let Err(error) = result.await {
            warn(partition, key, &error);
        }
    }

    /// Decides who fetches `digest`: this replica unless another holds a live lease. Two
    /// replicas that claim at the same instant both see both claims, and the smaller name
    /// wins; a claim that lands after the other's check can still make both fetch (at
    /// most one fetch per replica, never more). When K2V cannot be reached, this replica
    /// fetches.
    pub async fn lease(self: &Arc<Self>, digest: &Digest) -> Turn {
        self.lease_on(digest.to_string()).await
    }

    async fn lease_on(self: &Arc<Self>, key: String) -> Turn {
        match self.claim(&key).await {
            Ok(None) => Turn::Mine(self.hold(key)),
            Ok(Some(holder)) => Turn::Theirs { holder },
            Err(error) => {
                warn(LEASES, &key, &error);
                Turn::Mine(self.hold(key))
            }
        }
    }

    /// `None` when this replica holds the lease now, else the holder.
    async fn claim(&self, key: &str) -> Result<Option<String>, StoreError> {
        let seen = self.k2v.read(LEASES, key).await?;
        if let Some(other) = live(seen.as_ref())
            .into_iter()
            .find(|c| c.holder != self.replica)
        {
            return Ok(Some(other.holder));
        }
        self.write_claim(key, seen.map(|item| item.token)).await?;
        tokio::time::sleep(SETTLE).await;
        let Some(after) = self.k2v.read(LEASES, key).await? else {
            return Ok(None);
        };
        match live(Some(&after)).into_iter().next() {
            Some(winner) if winner.holder != self.replica => {
                // Withdraw: leave the winner's claim alone in the item, so its release
                // clears it and nobody waits on a claim that nobody holds.
                let holder = winner.holder.clone();
                let bytes = serde_json::to_vec(&winner).map_err(index_error)?;
                self.k2v
                    .insert(LEASES, key, Some(&after.token), bytes)
                    .await?;
                Ok(Some(holder))
            }
            _ => Ok(None),
        }
    }

    async fn write_claim(&self, key: &str, token: Option<String>) -> Result<(), StoreError> {
        let claim = Claim {
            holder: self.replica.clone(),
            until: unix_now() + LEASE_TTL.as_secs(),
        };
        let bytes = serde_json::to_vec(&claim).map_err(index_error)?;
        self.k2v.insert(LEASES, key, token.as_deref(), bytes).await
    }

    fn hold(self: &Arc<Self>, key: String) -> Lease {
        let shared = self.clone();
        let digest = key.clone();
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_TTL / 3).await;
                let renewed = async {
                    let token = shared.k2v.read(LEASES, &key).await?.map(|item| item.token);
                    shared.write_claim(&key, token).await
                };
                if let Err(error) = renewed.await {
                    warn(LEASES, &key, &error);
                }
            }
        });
        Lease {
            renewer,
            shared: self.clone(),
            digest,
        }
    }

    /// Removes this replica's claim; a live claim another replica wrote concurrently stays.
    async fn release(&self, key: &str) {
        let result = async {
            let Some(item) = self.k2v.read(LEASES, key).await? else {
                return Ok(());
            };
            let other = live(Some(&item))
                .into_iter()
                .find(|c| c.holder != self.replica);
            match other {
                None => self.k2v.delete(LEASES, key, &item.token).await,
                Some(other) => {
                    let bytes = serde_json::to_vec(&other).map_err(index_error)?;
                    self.k2v.insert(LEASES, key, Some(&item.token), bytes).await
                }
            }
        };
        if let Err(error) = result.await {
            warn(LEASES, key, &error);
        }
    }

    /// Whether another replica holds a live lease on `digest` (for a waiter deciding to
    /// keep waiting).
    pub async fn held_by_other(&self, digest: &Digest) -> bool {
        let key = digest.to_string();
        match self.k2v.read(LEASES, &key).await {
            Ok(item) => live(item.as_ref()).iter().any(|c| c.holder != self.replica),
            Err(error) => {
                warn(LEASES, &key, &error);
                false
            }
        }
    }
}

/// The claims of a lease item that have not expired, the winner (smallest name) first.
fn live(item: Option<&Item>) -> Vec<Claim> {
    let now = unix_now();
    let mut claims: Vec<Claim> = item
        .iter()
        .flat_map(|item| item.values.iter().flatten())
        .filter_map(|bytes| serde_json::from_slice::<Claim>(bytes).ok())
        .filter(|claim| claim.until > now)
        .collect();
    claims.sort_by(|a, b| a.holder.cmp(&b.holder));
    claims
}

impl Shared {
    /// Notes blobs' sizes and last use for whichever replica evicts: each record is merged
    /// with what the others noted (the latest use wins). Best effort.
    pub(crate) async fn record_blobs(&self, records: &[(Digest, BlobRecord)]) {
        let keys: Vec<String> = records.iter().map(|(d, _)| d.to_string()).collect();
        let result = async {
            let seen = self.k2v.read_many(BLOBS, &keys).await?;
            let mut writes = Vec::with_capacity(records.len());
            for ((key, (_, record)), item) in keys.iter().zip(records).zip(seen) {
                let merged = match item.as_ref().and_then(merged::<BlobRecord>) {
                    Some(theirs) => theirs.newer(*record),
                    None => *record,
                };
                writes.push(Write {
                    sort: key.clone(),
                    token: item.map(|i| i.token),
                    value: Some(serde_json::to_vec(&merged).map_err(index_error)?),
                });
            }
            self.k2v.insert_many(BLOBS, &writes).await
        };
        if let Err(error) = result.await {
            warn(BLOBS, "(batch)", &error);
        }
    }

    /// Publishes this replica's run-time pins so the replica that evicts keeps them.
    pub async fn publish_pins(&self, digests: &HashSet<Digest>) -> Result<(), StoreError> {
        let pins = Pins {
            until: unix_now() + PINS_TTL.as_secs(),
            digests: digests.iter().cloned().collect(),
        };
        let token = self.k2v.read(PINS, &self.replica).await?.map(|i| i.token);
        let bytes = serde_json::to_vec(&pins).map_err(index_error)?;
        self.k2v
            .insert(PINS, &self.replica, token.as_deref(), bytes)
            .await
    }

    /// Every digest a replica pinned and published within [`PINS_TTL`].
    pub async fn pins(&self) -> Result<HashSet<Digest>, StoreError> {
        let now = unix_now();
        Ok(self
            .k2v
            .read_prefix(PINS, "")
            .await?
            .iter()
            .flat_map(|(_, item)| item.values.iter().flatten())
            .filter_map(|bytes| serde_json::from_slice::<Pins>(bytes).ok())
            .filter(|pins| pins.until > now)
            .flat_map(|pins| pins.digests)
            .collect())
    }

    /// The eviction lease: `Some` when this replica is the one to run a pass now.
    pub async fn lead(self: &Arc<Self>) -> Option<Lease> {
        match self.lease_on(EVICTION.to_owned()).await {
            Turn::Mine(lease) => Some(lease),
            Turn::Theirs { holder } => {
                tracing::debug!(target: "airlock::evict", %holder, "another replica runs the eviction pass");
                None
            }
        }
    }

    /// What every replica recorded: blob sizes and last use, manifests, tags.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut snapshot = Snapshot::default();
        for (key, item) in self.k2v.read_prefix(BLOBS, "").await? {
            if let (Ok(digest), Some(record)) = (key.parse(), merged::<BlobRecord>(&item)) {
                snapshot.blobs.insert(digest, record);
            }
        }
        for (key, item) in self.k2v.read_prefix(MANIFESTS, "").await? {
            if let (Ok(digest), Some(record)) = (key.parse(), merged::<ManifestRecord>(&item)) {
                snapshot.manifests.insert(digest, record);
            }
        }
        for (key, item) in self.k2v.read_prefix(TAGS, "").await? {
            if let (Some(tag), Some(record)) = (TagKey::decode(&key), merged::<TagRecord>(&item)) {
                snapshot.tags.push((tag, record.digest));
            }
        }
        Ok(snapshot)
    }

    /// Removes the shared records of evicted blobs: their hints and manifest records, the
    /// tags that named them and the file records whose content they were. Returns how
    /// many file records went.
    pub async fn forget(
        &self,
        gone: &HashSet<Digest>,
        tags: &[TagKey],
    ) -> Result<usize, StoreError> {
        let digests: Vec<String> = gone.iter().map(ToString::to_string).collect();
        self.delete_all(BLOBS, &digests).await?;
        self.delete_all(MANIFESTS, &digests).await?;
        let tag_keys: Vec<String> = tags.iter().map(TagKey::encode).collect();
        self.delete_all(TAGS, &tag_keys).await?;
        let files: Vec<String> = self
            .k2v
            .read_prefix(FILES, "")
            .await?
            .into_iter()
            .filter(|(_, item)| {
                merged::<FileRecord>(item)
                    .and_then(|record| record.digest)
                    .is_some_and(|digest| gone.contains(&digest))
            })
            .map(|(key, _)| key)
            .collect();
        self.delete_all(FILES, &files).await?;
        Ok(files.len())
    }

    async fn delete_all(&self, partition: &str, keys: &[String]) -> Result<(), StoreError> {
        let items = self.k2v.read_many(partition, keys).await?;
        let writes: Vec<Write> = keys
            .iter()
            .zip(items)
            .filter_map(|(key, item)| {
                item.map(|item| Write {
                    sort: key.clone(),
                    token: Some(item.token),
                    value: None,
                })
            })
            .collect();
        self.k2v.insert_many(partition, &writes).await
    }
}

fn index_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Index(e.to_string())
}

fn warn(partition: &str, key: &str, error: &StoreError) {
    tracing::warn!(target: "airlock::store", partition, key, %error, "shared records (K2V) could not be used; this replica works alone for it");
}
