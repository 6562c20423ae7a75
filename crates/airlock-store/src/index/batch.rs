//! Many records in one transaction: what `airlock bundle import` writes once every blob is
//! committed, so an interrupted import leaves either all of its records or none.

use std::sync::atomic::Ordering;

use airlock_types::Digest;

use super::{
    BLOBS, BlobRecord, FileRecord, MANIFESTS, ManifestRecord, MetaIndex, TAGS, TagKey, TagRecord,
    file_key, index_err, unix_now, write_file,
};
use crate::StoreError;

/// Records to write together. Blobs are recorded as used now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Committed blobs (manifests included) and their sizes.
    pub blobs: Vec<(Digest, u64)>,
    pub manifests: Vec<(Digest, ManifestRecord)>,
    pub tags: Vec<(TagKey, TagRecord)>,
    /// A package proxy's files: proxy, path, record.
    pub files: Vec<(String, String, FileRecord)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
            && self.manifests.is_empty()
            && self.tags.is_empty()
            && self.files.is_empty()
    }
}

impl MetaIndex {
    /// Writes every record of `batch` in one transaction: all become visible at once, or,
    /// on any failure, none does.
    pub async fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let now = unix_now();
        let total = self.total.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(index_err)?;
            let mut added = 0;
            {
                let mut blobs = txn.open_table(BLOBS).map_err(index_err)?;
                for (digest, size) in &batch.blobs {
                    let record = BlobRecord {
                        size: *size,
                        last_used: now,
                    };
                    let bytes = serde_json::to_vec(&record).map_err(index_err)?;
                    let previous = blobs
                        .insert(digest.to_string().as_str(), bytes.as_slice())
                        .map_err(index_err)?;
                    if previous.is_none() {
                        added += size;
                    }
                }
                // A bundle's content came from an upstream: public.
                for (digest, _) in &batch.blobs {
                    super::pushed::unmark(&txn, &digest.to_string())?;
                }
                let mut manifests = txn.open_table(MANIFESTS).map_err(index_err)?;
                for (digest, record) in &batch.manifests {
                    let bytes = serde_json::to_vec(record).map_err(index_err)?;
                    manifests
                        .insert(digest.to_string().as_str(), bytes.as_slice())
                        .map_err(index_err)?;
                }
                let mut tags = txn.open_table(TAGS).map_err(index_err)?;
                for (key, record) in &batch.tags {
                    let bytes = serde_json::to_vec(record).map_err(index_err)?;
                    tags.insert(key.encode().as_str(), bytes.as_slice())
                        .map_err(index_err)?;
                }
            }
            for (proxy, path, record) in &batch.files {
                let bytes = serde_json::to_vec(record).map_err(index_err)?;
                write_file(&txn, &file_key(proxy, path), &bytes, record.digest.as_ref())?;
            }
            txn.commit().map_err(index_err)?;
            total.fetch_add(added, Ordering::Relaxed);
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        let layer = Digest::of(b"layer");
        let manifest = Digest::of(b"manifest");
        let file = Digest::of(b"file");
        Batch {
            blobs: vec![(layer.clone(), 5), (manifest.clone(), 8), (file.clone(), 4)],
            manifests: vec![(
                manifest.clone(),
                ManifestRecord {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    size: 8,
                    refs: vec![layer],
                },
            )],
            tags: vec![(
                TagKey {
                    proxy: "hub".into(),
                    repo: "library/app".into(),
                    tag: "1".into(),
                    variant: String::new(),
                },
                TagRecord {
                    digest: manifest,
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    checked_at: 7,
                },
            )],
            files: vec![(
                "files".into(),
                "a/b".into(),
                FileRecord {
                    digest: Some(file),
                    content_type: Some("application/octet-stream".into()),
                    etag: None,
                    last_modified: None,
                    checked_at: 7,
                },
            )],
        }
    }

    #[tokio::test]
    async fn a_batch_writes_every_record_and_counts_new_blobs_once() {
        let index = MetaIndex::temporary().unwrap();
        let batch = batch();
        index.apply(batch.clone()).await.unwrap();
        assert_eq!(index.total_size(), 17);
        let (key, tag) = &batch.tags[0];
        assert_eq!(index.tag(key).await.unwrap().as_ref(), Some(tag));
        let (digest, manifest) = &batch.manifests[0];
        assert_eq!(
            index.manifest(digest).await.unwrap().as_ref(),
            Some(manifest)
        );
        let (proxy, path, file) = &batch.files[0];
        assert_eq!(index.file(proxy, path).await.unwrap().as_ref(), Some(file));
        let digests = batch.blobs.iter().map(|(d, _)| d.clone()).collect();
        assert_eq!(index.recorded_blobs(digests).await.unwrap().len(), 3);
        // The file row is found through its blob, as eviction finds it.
        let files = index
            .forget(vec![file.digest.clone().unwrap()], vec![])
            .await;
        assert_eq!(files.unwrap(), 1);
        assert_eq!(index.file(proxy, path).await.unwrap(), None);

        // Again: the blobs already have records, so the total does not grow.
        index.apply(batch).await.unwrap();
        assert_eq!(index.total_size(), 17);
        assert!(Batch::default().is_empty());
    }
}
