//! Upgrades of the metadata index's schema, run in the transaction that opens it.
//!
//! | schema | change |
//! |---|---|
//! | 1 | tags keyed `proxy/repo:tag` (no `meta` table) |
//! | 2 | tags keyed per `Accept` variant: `proxy/repo:tag` for clients that take every manifest kind, `proxy/repo:tag#variant` otherwise; schema-1 tags that are not an index are marked for revalidation, since a client that refused indexes may have put a single-platform manifest there |
//! | 3 | `file_blobs`: `<digest> <proxy>/<path>` for every file row naming a blob, so eviction finds a blob's file rows without a scan; built from the file rows on upgrade |
//! | 4 | `pushed`: digests whose content only a push to a hosted project brought, which proxies do not serve; empty on upgrade (no older index holds pushed content: hosted projects arrived with it) |

use redb::ReadableTable;

use super::{
    FILE_BLOBS, FILES, FileDigest, META, SCHEMA, TAGS, TagRecord, file_blob_key, index_err,
};
use crate::StoreError;

/// Brings an index of an older schema to [`SCHEMA`] inside `txn`; refuses a newer one.
pub(super) fn upgrade(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(index_err)?;
    // An index without a version predates versioning: schema 1 (or new and empty, for
    // which the upgrade has nothing to do).
    let found = meta
        .get("schema")
        .map_err(index_err)?
        .map_or(1, |v| v.value());
    if found > SCHEMA {
        return Err(StoreError::Index(format!(
            "the index has schema {found}, newer than this airlock reads ({SCHEMA}); \
             run the airlock version that wrote it, or move the index file aside to start \
             an empty one"
        )));
    }
    if found < 2 {
        let stale = stale_single_manifest_tags(txn)?;
        if stale > 0 {
            tracing::info!(
                target: "airlock::index",
                tags = stale,
                "index upgraded to schema 2: tags not naming an index are revalidated on next use"
            );
        }
    }
    if found < 3 {
        // Schema 3 arrives with 404s kept in memory: rows of older ones go, once.
        let negative = drop_negative_files(txn)?;
        if negative > 0 {
            tracing::info!(
                target: "airlock::index",
                rows = negative,
                "dropped file rows of negative results (404s are no longer kept in the index)"
            );
        }
        let indexed = index_file_blobs(txn)?;
        if indexed > 0 {
            tracing::info!(
                target: "airlock::index",
                rows = indexed,
                "index upgraded to schema 3: file rows indexed by blob"
            );
        }
    }
    if found != SCHEMA {
        meta.insert("schema", SCHEMA).map_err(index_err)?;
    }
    Ok(())
}

/// Schema 1 → 2: every schema-1 tag now reads as the variant of clients that accept every
/// manifest kind. One naming an index is that; one naming a single manifest may be what a
/// client that refused indexes got, so it is marked unchecked and revalidated on next use
/// (an offline proxy keeps serving it: it has nothing better).
fn stale_single_manifest_tags(txn: &redb::WriteTransaction) -> Result<usize, StoreError> {
    let mut tags = txn.open_table(TAGS).map_err(index_err)?;
    let mut rewrite = Vec::new();
    for entry in tags.iter().map_err(index_err)? {
        let (key, value) = entry.map_err(index_err)?;
        let Ok(record) = serde_json::from_slice::<TagRecord>(value.value()) else {
            continue;
        };
        if !airlock_types::media::is_index(&record.media_type) && record.checked_at != 0 {
            rewrite.push((key.value().to_owned(), record));
        }
    }
    for (key, record) in &rewrite {
        let record = TagRecord {
            checked_at: 0,
            ..record.clone()
        };
        let bytes = serde_json::to_vec(&record).map_err(index_err)?;
        tags.insert(key.as_str(), bytes.as_slice())
            .map_err(index_err)?;
    }
    Ok(rewrite.len())
}

/// Removes file rows whose digest is `None`: negative results, which older versions kept in
/// the index (one row per path that ever answered 404). Runs once, in the upgrade to
/// schema 3: no start after that scans the file rows.
fn drop_negative_files(txn: &redb::WriteTransaction) -> Result<usize, StoreError> {
    let mut files = txn.open_table(FILES).map_err(index_err)?;
    let mut negative = Vec::new();
    for entry in files.iter().map_err(index_err)? {
        let (key, value) = entry.map_err(index_err)?;
        // A row that does not decode is left alone, like everywhere else in this module.
        if let Ok(FileDigest { digest: None }) = serde_json::from_slice(value.value()) {
            negative.push(key.value().to_owned());
        }
    }
    for key in &negative {
        files.remove(key.as_str()).map_err(index_err)?;
    }
    Ok(negative.len())
}

/// Schema 2 → 3: a `file_blobs` entry for every file row that names a blob.
fn index_file_blobs(txn: &redb::WriteTransaction) -> Result<usize, StoreError> {
    let files = txn.open_table(FILES).map_err(index_err)?;
    let mut by_blob = txn.open_table(FILE_BLOBS).map_err(index_err)?;
    let mut indexed = 0;
    for entry in files.iter().map_err(index_err)? {
        let (key, value) = entry.map_err(index_err)?;
        if let Ok(FileDigest {
            digest: Some(digest),
        }) = serde_json::from_slice(value.value())
        {
            by_blob
                .insert(file_blob_key(&digest, key.value()).as_str(), ())
                .map_err(index_err)?;
            indexed += 1;
        }
    }
    Ok(indexed)
}
