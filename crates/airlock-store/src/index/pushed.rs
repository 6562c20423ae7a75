//! Content that only a push brought: blobs and manifests that reached the store through a
//! hosted project and that no upstream has served. A proxy must not serve them by digest
//! (`/v2/<proxy>/<repo>/blobs/<digest>` would otherwise read a closed project's layer);
//! it treats them as a miss and asks its upstream, and once an upstream served the same
//! bytes they are public and the mark goes.

use std::sync::atomic::{AtomicBool, Ordering};

use airlock_types::Digest;
use redb::{ReadableTable, TableDefinition};

use super::{BLOBS, BlobRecord, MetaIndex, index_err};
use crate::StoreError;

/// Digests whose content only a push brought (schema 4).
pub(super) const PUSHED: TableDefinition<&str, ()> = TableDefinition::new("pushed");

impl MetaIndex {
    /// Records a blob (or manifest) pushed to a hosted project as used now, and marks it
    /// pushed unless the store already held it as content an upstream served: a layer
    /// pushed on top of a cached base image stays public, a new one is private.
    pub async fn record_pushed(&self, digest: &Digest, size: u64) -> Result<(), StoreError> {
        self.record_blob_from(digest, size, None, Origin::Push)
            .await
    }

    /// Whether `digest` is content only a push brought.
    pub async fn is_pushed(&self, digest: &Digest) -> Result<bool, StoreError> {
        if !self.any_pushed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let key = digest.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(index_err)?;
            let table = txn.open_table(PUSHED).map_err(index_err)?;
            Ok(table.get(key.as_str()).map_err(index_err)?.is_some())
        })
        .await
    }

    /// Every digest only a push brought, with its blob record (size, last use): what
    /// garbage collection of hosted projects may delete.
    pub async fn pushed(&self) -> Result<Vec<(Digest, BlobRecord)>, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(index_err)?;
            let marks = txn.open_table(PUSHED).map_err(index_err)?;
            let blobs = txn.open_table(BLOBS).map_err(index_err)?;
            let mut out = Vec::new();
            for entry in marks.iter().map_err(index_err)? {
                let (key, _) = entry.map_err(index_err)?;
                let key = key.value();
                let (Ok(digest), Some(record)) = (key.parse(), blobs.get(key).map_err(index_err)?)
                else {
                    continue;
                };
                if let Ok(record) = serde_json::from_slice(record.value()) {
                    out.push((digest, record));
                }
            }
            Ok(out)
        })
        .await
    }
}

/// Where recorded content came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// An upstream served it (or a bundle made from one): public.
    Upstream,
    /// A client pushed it to a hosted project.
    Push,
}

/// Keeps `key`'s mark as `origin` says, inside the transaction that records it: an
/// upstream's copy clears it; a push sets it when the blob is `new` to the store (a push of
/// what the store already held changes nothing: public stays public, private private).
pub(super) fn mark(
    txn: &redb::WriteTransaction,
    key: &str,
    origin: Origin,
    new: bool,
    any_pushed: &AtomicBool,
) -> Result<(), StoreError> {
    match origin {
        Origin::Upstream => unmark(txn, key),
        Origin::Push if new => {
            any_pushed.store(true, Ordering::Relaxed);
            txn.open_table(PUSHED)
                .map_err(index_err)?
                .insert(key, ())
                .map_err(index_err)?;
            Ok(())
        }
        Origin::Push => Ok(()),
    }
}

/// Clears the mark of content an upstream (or a bundle made from one) has now served.
pub(super) fn unmark(txn: &redb::WriteTransaction, key: &str) -> Result<(), StoreError> {
    txn.open_table(PUSHED)
        .map_err(index_err)?
        .remove(key)
        .map_err(index_err)?;
    Ok(())
}
