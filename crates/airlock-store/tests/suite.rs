//! The shared contract every `BlobStore` backend passes, run once per backend.

mod support;

use std::sync::Arc;

use airlock_store::{BlobStore, FsStore, MemoryStore, StoreError, put, read_all};
use airlock_types::Digest;
use tokio::io::AsyncReadExt;

async fn read(reader: airlock_store::BlobRead) -> Vec<u8> {
    let mut reader = reader;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await.unwrap();
    out
}

async fn verified_commit_and_read(store: Arc<dyn BlobStore>) {
    let bytes = b"hello, layer".to_vec();
    let digest = Digest::of(&bytes);
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    assert!(store.open(&digest, 0).await.unwrap().is_none());
    assert_eq!(
        put(store.as_ref(), &digest, &bytes).await.unwrap(),
        bytes.len() as u64
    );
    assert_eq!(store.stat(&digest).await.unwrap(), Some(bytes.len() as u64));
    assert_eq!(
        read_all(store.as_ref(), &digest).await.unwrap().unwrap(),
        bytes
    );
    assert_eq!(
        read(store.open(&digest, 7).await.unwrap().unwrap()).await,
        b"layer"
    );
    assert!(store.delete(&digest).await.unwrap());
    assert!(!store.delete(&digest).await.unwrap());
    assert_eq!(store.stat(&digest).await.unwrap(), None);
}

async fn mismatch_stores_nothing(store: Arc<dyn BlobStore>) {
    let claimed = Digest::of(b"what the index promised");
    let err = put(store.as_ref(), &claimed, b"what the upstream sent")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DigestMismatch { size: 22, .. }),
        "{err}"
    );
    assert_eq!(store.stat(&claimed).await.unwrap(), None);
    assert!(store.open(&claimed, 0).await.unwrap().is_none());
}

async fn partial_is_invisible_until_commit(store: Arc<dyn BlobStore>) {
    let bytes = vec![7u8; 100_000];
    let digest = Digest::of(&bytes);
    let mut writer = store.create(Some(&digest)).await.unwrap();
    writer.write(&bytes[..40_000]).await.unwrap();
    assert_eq!(writer.written(), 40_000);
    assert_eq!(
        store.stat(&digest).await.unwrap(),
        None,
        "a blob in progress is not visible"
    );
    let partial = writer.partial().open_file().await.unwrap();
    let (buf, n) = partial.read_at(vec![0; 50_000], 10_000).await.unwrap();
    assert_eq!(n, 30_000, "what was written, no more");
    assert_eq!(buf[..n], bytes[10_000..40_000]);
    writer.write(&bytes[40_000..]).await.unwrap();
    writer.commit().await.unwrap();
    assert_eq!(
        read_all(store.as_ref(), &digest).await.unwrap().unwrap(),
        bytes
    );
}

async fn unnamed_blobs_are_named_by_their_content(store: Arc<dyn BlobStore>) {
    let mut writer = store.create(None).await.unwrap();
    writer.write(b"published without a digest").await.unwrap();
    let committed = writer.commit().await.unwrap();
    assert_eq!(committed.digest, Digest::of(b"published without a digest"));
    assert_eq!(committed.size, 26);
    let stored = read_all(store.as_ref(), &committed.digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, b"published without a digest");
}

async fn dropped_writer_leaves_nothing(store: Arc<dyn BlobStore>) {
    let digest = Digest::of(b"never finished");
    let mut writer = store.create(Some(&digest)).await.unwrap();
    writer.write(b"never").await.unwrap();
    drop(writer);
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    assert_eq!(
        store.clean_temp().await.unwrap(),
        0,
        "a dropped writer cleans up after itself"
    );
}

async fn positional_reads_outlive_a_delete(store: Arc<dyn BlobStore>) {
    let bytes: Vec<u8> = (0..=255).collect();
    let digest = Digest::of(&bytes);
    assert!(store.open_file(&digest).await.unwrap().is_none());
    put(store.as_ref(), &digest, &bytes).await.unwrap();
    let file = store.open_file(&digest).await.unwrap().unwrap();
    let (buf, n) = file.clone().read_at(vec![0; 16], 100).await.unwrap();
    assert_eq!((&buf[..n], n), (&bytes[100..116], 16));
    // An eviction meanwhile does not cut off a reader that holds the file.
    store.delete(&digest).await.unwrap();
    assert!(store.open_file(&digest).await.unwrap().is_none());
    let (buf, n) = file.clone().read_at(vec![0; 16], 250).await.unwrap();
    assert_eq!(
        &buf[..n],
        &bytes[250..],
        "a read where the blob ends is short"
    );
    assert_eq!(file.read_at(vec![0; 16], 256).await.unwrap().1, 0);
}

macro_rules! backend_suite {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;
            #[tokio::test]
            async fn verified_commit_and_read() {
                let (_guard, store) = $make;
                super::verified_commit_and_read(store).await;
            }
            #[tokio::test]
            async fn mismatch_stores_nothing() {
                let (_guard, store) = $make;
                super::mismatch_stores_nothing(store).await;
            }
            #[tokio::test]
            async fn partial_is_invisible_until_commit() {
                let (_guard, store) = $make;
                super::partial_is_invisible_until_commit(store).await;
            }
            #[tokio::test]
            async fn unnamed_blobs_are_named_by_their_content() {
                let (_guard, store) = $make;
                super::unnamed_blobs_are_named_by_their_content(store).await;
            }
            #[tokio::test]
            async fn positional_reads_outlive_a_delete() {
                let (_guard, store) = $make;
                super::positional_reads_outlive_a_delete(store).await;
            }
            #[tokio::test]
            async fn dropped_writer_leaves_nothing() {
                let (_guard, store) = $make;
                super::dropped_writer_leaves_nothing(store).await;
            }
        }
    };
}

backend_suite!(
    memory,
    ((), Arc::new(MemoryStore::new()) as Arc<dyn BlobStore>)
);
backend_suite!(fs, {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path().join("store-v1")).await.unwrap();
    (dir, Arc::new(store) as Arc<dyn BlobStore>)
});

// The s3 backend against a real bucket: a single-node Garage started for each test.
backend_suite!(s3, {
    let dir = tempfile::tempdir().unwrap();
    let garage = airlock_testkit::Garage::start(&dir.path().join("garage"));
    let store =
        airlock_store::S3Store::open(&support::s3_settings(&garage), &dir.path().join("local"), 0)
            .await
            .unwrap();
    ((garage, dir), Arc::new(store) as Arc<dyn BlobStore>)
});

#[tokio::test]
async fn fs_startup_removes_leftovers_of_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store-v1");
    FsStore::open(&root).await.unwrap();
    std::fs::write(root.join("tmp/0123.part"), b"half a layer").unwrap();
    let store = FsStore::open(&root).await.unwrap();
    assert_eq!(store.clean_temp().await.unwrap(), 1);
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn index_round_trip_survives_reopen() {
    use airlock_store::{ManifestRecord, MetaIndex, TagKey, TagRecord};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index-v1.redb");
    let key = TagKey {
        proxy: "dockerhub-proxy".into(),
        repo: "library/nginx".into(),
        tag: "1.27".into(),
        variant: String::new(),
    };
    let record = TagRecord {
        digest: Digest::of(b"m"),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        checked_at: 42,
    };
    {
        let index = MetaIndex::open(&path).unwrap();
        assert_eq!(index.tag(&key).await.unwrap(), None);
        index.set_tag(&key, &record).await.unwrap();
        index
            .set_manifest(
                &record.digest,
                &ManifestRecord {
                    media_type: record.media_type.clone(),
                    size: 1,
                    refs: vec![],
                },
            )
            .await
            .unwrap();
    }
    let index = MetaIndex::open(&path).unwrap();
    assert_eq!(index.tag(&key).await.unwrap(), Some(record.clone()));
    assert_eq!(
        index.manifest(&record.digest).await.unwrap().unwrap().size,
        1
    );
    assert_eq!(index.counts().await.unwrap(), (1, 1));
}

#[tokio::test]
async fn sizes_and_last_use_survive_reopen_and_eviction_deletes_files_then_records() {
    use airlock_store::evict::{Policy, evict};
    use airlock_store::{ManifestRecord, MetaIndex, TagKey, TagRecord};
    use std::collections::HashSet;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path().join("store-v1")).await.unwrap();
    let path = dir.path().join("index-v1.redb");
    let index = MetaIndex::open(&path).unwrap();
    let layer = vec![1u8; 4096];
    let layer_digest = Digest::of(&layer);
    put(&store, &layer_digest, &layer).await.unwrap();
    index.record_blob(&layer_digest, 4096).await.unwrap();
    let manifest = format!(r#"{{"layers":[{{"digest":"{layer_digest}"}}]}}"#).into_bytes();
    let manifest_digest = Digest::of(&manifest);
    put(&store, &manifest_digest, &manifest).await.unwrap();
    index
        .record_blob(&manifest_digest, manifest.len() as u64)
        .await
        .unwrap();
    index
        .set_manifest(
            &manifest_digest,
            &ManifestRecord {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: manifest.len() as u64,
                refs: airlock_store::evict::manifest_refs(&manifest),
            },
        )
        .await
        .unwrap();
    let tag = TagKey {
        proxy: "p".into(),
        repo: "r".into(),
        tag: "t".into(),
        variant: String::new(),
    };
    index
        .set_tag(
            &tag,
            &TagRecord {
                digest: manifest_digest.clone(),
                media_type: "m".into(),
                checked_at: 0,
            },
        )
        .await
        .unwrap();
    index.record_blob(&layer_digest, 4096).await.unwrap();
    assert_eq!(
        index.total_size(),
        4096 + manifest.len() as u64,
        "re-recording a blob does not count it twice"
    );
    index.touch(&layer_digest, 4096);
    assert_eq!(index.flush_touches().await.unwrap(), 1);
    drop(index);

    let index = MetaIndex::open(&path).unwrap();
    assert_eq!(
        index.total_size(),
        4096 + manifest.len() as u64,
        "size comes back from the index"
    );
    let keep_all = Policy {
        max_size: Some(1 << 20),
        unused_for: None,
        grace: Duration::ZERO,
    };
    assert_eq!(
        evict(&store, &index, &keep_all, &HashSet::new())
            .await
            .unwrap()
            .blobs_removed,
        0
    );
    let pinned: HashSet<Digest> = [manifest_digest.clone()].into();
    let tiny = Policy {
        max_size: Some(1),
        unused_for: None,
        grace: Duration::ZERO,
    };
    assert_eq!(
        evict(&store, &index, &tiny, &pinned)
            .await
            .unwrap()
            .blobs_removed,
        0,
        "pins hold"
    );
    let report = evict(&store, &index, &tiny, &HashSet::new()).await.unwrap();
    assert_eq!(report.blobs_removed, 2);
    assert_eq!(report.size_after, 0);
    assert_eq!(store.stat(&layer_digest).await.unwrap(), None);
    assert_eq!(
        index.tag(&tag).await.unwrap(),
        None,
        "the tag went with its manifest"
    );
    assert!(index.manifest(&manifest_digest).await.unwrap().is_none());
}

/// Writes rows straight into an index file the way a schema-1 airlock left them: no `meta`
/// table, tags keyed `proxy/repo:tag`.
fn write_schema_1(path: &std::path::Path, tags: &[(&str, &airlock_store::TagRecord)]) {
    let tables: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("tags");
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(tables).unwrap();
        for (key, record) in tags {
            table
                .insert(*key, serde_json::to_vec(record).unwrap().as_slice())
                .unwrap();
        }
    }
    txn.commit().unwrap();
}

/// Schema 2 keys tags by the kind of client; schema-1 rows must read as the variant of
/// clients that take every manifest kind, the ones that may hold a single-platform
/// manifest a client refusing indexes put there marked for revalidation, and an index of a
/// newer schema refused rather than misread.
#[tokio::test]
async fn tag_cache_is_not_keyed_by_the_kind_of_manifest_schema_1_rows_upgrade_cleanly() {
    use airlock_store::{MetaIndex, TagKey, TagRecord};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index-v1.redb");
    let index_record = TagRecord {
        digest: Digest::of(b"index"),
        media_type: airlock_types::media::OCI_INDEX.into(),
        checked_at: 1000,
    };
    let single_record = TagRecord {
        digest: Digest::of(b"amd64 manifest"),
        media_type: airlock_types::media::DOCKER_MANIFEST_V2.into(),
        checked_at: 1000,
    };
    write_schema_1(
        &path,
        &[
            ("hub/library/multi:1", &index_record),
            ("hub/library/single:1", &single_record),
        ],
    );
    let key = |repo: &str, variant: &str| TagKey {
        proxy: "hub".into(),
        repo: repo.into(),
        tag: "1".into(),
        variant: variant.into(),
    };
    for round in 0..2 {
        let index = MetaIndex::open(&path).unwrap();
        assert_eq!(
            index.tag(&key("library/multi", "")).await.unwrap(),
            Some(index_record.clone()),
            "round {round}: an index is what every-kind clients get: kept as it was"
        );
        assert_eq!(
            index.tag(&key("library/single", "")).await.unwrap(),
            Some(TagRecord {
                checked_at: 0,
                ..single_record.clone()
            }),
            "round {round}: a single manifest is kept but revalidated on next use"
        );
        assert_eq!(
            index
                .tag(&key("library/single", "docker-manifest"))
                .await
                .unwrap(),
            None
        );
    }

    let index = MetaIndex::open(&path).unwrap();
    index
        .set_tag(&key("library/single", ""), &single_record)
        .await
        .unwrap();
    drop(index);
    let index = MetaIndex::open(&path).unwrap();
    assert_eq!(
        index.tag(&key("library/single", "")).await.unwrap(),
        Some(single_record.clone()),
        "the upgrade runs once"
    );
    drop(index);

    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
        .unwrap()
        .insert("schema", 99)
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    let error = MetaIndex::open(&path).unwrap_err().to_string();
    assert!(error.contains("schema 99"), "{error}");
}

#[tokio::test]
async fn tag_variants_are_separate_records_and_all_go_with_their_manifests() {
    use airlock_store::evict::{Policy, evict};
    use airlock_store::{MetaIndex, TagKey, TagRecord};
    use std::collections::HashSet;
    use std::time::Duration;

    let store = MemoryStore::new();
    let index = MetaIndex::temporary().unwrap();
    let key = |variant: &str| TagKey {
        proxy: "hub".into(),
        repo: "library/multi".into(),
        tag: "1".into(),
        variant: variant.into(),
    };
    let mut records = Vec::new();
    for (variant, bytes) in [("", &b"index"[..]), ("docker-manifest", b"amd64")] {
        let digest = Digest::of(bytes);
        put(&store, &digest, bytes).await.unwrap();
        index
            .record_blob(&digest, bytes.len() as u64)
            .await
            .unwrap();
        let record = TagRecord {
            digest,
            media_type: "m".into(),
            checked_at: 1,
        };
        index.set_tag(&key(variant), &record).await.unwrap();
        records.push((key(variant), record));
    }
    // A neighbour whose name extends the tag's is no variant of it.
    index
        .set_tag(
            &TagKey {
                tag: "1.1".into(),
                ..key("")
            },
            &records[0].1,
        )
        .await
        .unwrap();
    assert_eq!(
        index.tag(&key("")).await.unwrap(),
        Some(records[0].1.clone())
    );
    assert_eq!(
        index.tag(&key("docker-manifest")).await.unwrap(),
        Some(records[1].1.clone())
    );
    assert_eq!(
        index.tag_variants(&key("oci-manifest")).await.unwrap(),
        records,
        "every variant, the every-kind one first"
    );
    let everything = Policy {
        max_size: Some(0),
        unused_for: None,
        grace: Duration::ZERO,
    };
    evict(&store, &index, &everything, &HashSet::new())
        .await
        .unwrap();
    assert_eq!(
        index.counts().await.unwrap(),
        (0, 0),
        "no tag outlives its blob"
    );
}

fn file_record(digest: Option<Digest>) -> airlock_store::FileRecord {
    airlock_store::FileRecord {
        digest,
        content_type: Some("text/html".into()),
        etag: Some("\"e\"".into()),
        last_modified: None,
        checked_at: 1,
    }
}

/// Eviction deleted a package file's blob but left its row (proxy, path) → digest behind:
/// one row per distinct path ever cached, forever.
#[tokio::test]
async fn index_rows_removed_with_their_blobs_and_growth_stays_bounded() {
    use airlock_store::MetaIndex;
    use airlock_store::evict::{Policy, evict};
    use std::collections::HashSet;
    use std::time::Duration;

    let store = MemoryStore::new();
    let index = MetaIndex::temporary().unwrap();
    let everything = Policy {
        max_size: Some(0),
        unused_for: None,
        grace: Duration::ZERO,
    };
    for round in 0..5 {
        for i in 0..100 {
            let body = format!("round {round} page {i}");
            let digest = Digest::of(body.as_bytes());
            put(&store, &digest, body.as_bytes()).await.unwrap();
            let path = format!("simple/project-{round}-{i}/");
            index
                .record_file_blob(
                    &digest,
                    body.len() as u64,
                    "pypi",
                    &path,
                    &file_record(Some(digest.clone())),
                )
                .await
                .unwrap();
            // The same content under a second path: both rows name the blob.
            if i % 10 == 0 {
                index
                    .set_file(
                        "pypi",
                        &format!("{path}index.html"),
                        &file_record(Some(digest)),
                    )
                    .await
                    .unwrap();
            }
        }
        assert_eq!(index.file_count().await.unwrap(), 110);
        let report = evict(&store, &index, &everything, &HashSet::new())
            .await
            .unwrap();
        assert_eq!(report.blobs_removed, 100);
        assert_eq!(report.file_rows_removed, 110, "round {round}");
        assert_eq!(
            index.file_count().await.unwrap(),
            0,
            "round {round}: no row outlives its blob"
        );
        assert!(store.is_empty());
    }

    // A row whose blob stays is kept; so is the blob of a row that is not evicted.
    let kept = Digest::of(b"kept");
    put(&store, &kept, b"kept").await.unwrap();
    index
        .record_file_blob(
            &kept,
            4,
            "pypi",
            "simple/kept/",
            &file_record(Some(kept.clone())),
        )
        .await
        .unwrap();
    let nothing = Policy {
        max_size: None,
        unused_for: None,
        grace: Duration::ZERO,
    };
    let report = evict(&store, &index, &nothing, &HashSet::new())
        .await
        .unwrap();
    assert_eq!((report.blobs_removed, report.file_rows_removed), (0, 0));
    assert!(index.file("pypi", "simple/kept/").await.unwrap().is_some());
}

#[tokio::test]
async fn forget_file_and_negative_rows_dropped_at_startup() {
    use airlock_store::MetaIndex;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index-v1.redb");
    let content = Digest::of(b"page");
    {
        let index = MetaIndex::open(&path).unwrap();
        for i in 0..3 {
            index
                .set_file("pypi", &format!("simple/missing-{i}/"), &file_record(None))
                .await
                .unwrap();
        }
        index
            .set_file(
                "pypi",
                "simple/present/",
                &file_record(Some(content.clone())),
            )
            .await
            .unwrap();
        index
            .set_file("pypi", "simple/other/", &file_record(Some(content.clone())))
            .await
            .unwrap();
        assert!(index.forget_file("pypi", "simple/other/").await.unwrap());
        assert!(!index.forget_file("pypi", "simple/other/").await.unwrap());
        assert!(index.file("pypi", "simple/other/").await.unwrap().is_none());
        assert_eq!(index.file_count().await.unwrap(), 4);
    }
    // As an index written by a version that kept 404s (schema 2) would be.
    {
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(meta).unwrap().insert("schema", 2).unwrap();
        txn.commit().unwrap();
    }
    let index = MetaIndex::open(&path).unwrap();
    assert_eq!(
        index.file_count().await.unwrap(),
        1,
        "negative rows of older versions are dropped in the upgrade"
    );
    assert_eq!(
        index
            .file("pypi", "simple/present/")
            .await
            .unwrap()
            .unwrap()
            .digest,
        Some(content)
    );
}

/// File rows written before `file_blobs` existed are found by eviction too: the upgrade to
/// schema 3 indexes them.
#[tokio::test]
async fn index_rows_removed_with_their_blobs_after_upgrade_from_schema_2() {
    use airlock_store::MetaIndex;
    use airlock_store::evict::{Policy, evict};
    use std::collections::HashSet;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index-v1.redb");
    let store = MemoryStore::new();
    let body = b"<html>old page</html>";
    let digest = Digest::of(body);
    put(&store, &digest, body).await.unwrap();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .unwrap()
            .insert("schema", 2)
            .unwrap();
        let mut files = txn
            .open_table(redb::TableDefinition::<&str, &[u8]>::new("files"))
            .unwrap();
        let record = serde_json::to_vec(&file_record(Some(digest.clone()))).unwrap();
        files.insert("pypi/simple/old/", record.as_slice()).unwrap();
        drop(files);
        txn.commit().unwrap();
    }
    let index = MetaIndex::open(&path).unwrap();
    index.record_blob(&digest, body.len() as u64).await.unwrap();
    let everything = Policy {
        max_size: Some(0),
        unused_for: None,
        grace: Duration::ZERO,
    };
    let report = evict(&store, &index, &everything, &HashSet::new())
        .await
        .unwrap();
    assert_eq!((report.blobs_removed, report.file_rows_removed), (1, 1));
    assert_eq!(index.file_count().await.unwrap(), 0);
}

/// A path whose content changed names the new blob only: evicting the old blob leaves it.
#[tokio::test]
async fn a_file_row_moves_with_its_content() {
    use airlock_store::MetaIndex;
    let index = MetaIndex::temporary().unwrap();
    let (old, new) = (Digest::of(b"v1"), Digest::of(b"v2"));
    index
        .record_file_blob(
            &old,
            2,
            "helm",
            "index.yaml",
            &file_record(Some(old.clone())),
        )
        .await
        .unwrap();
    index
        .set_file("helm", "index.yaml", &file_record(Some(new.clone())))
        .await
        .unwrap();
    assert_eq!(index.forget(vec![old], vec![]).await.unwrap(), 0);
    assert_eq!(index.file_count().await.unwrap(), 1);
    assert_eq!(index.forget(vec![new], vec![]).await.unwrap(), 1);
    assert_eq!(index.file_count().await.unwrap(), 0);
}

// The same bucket behind a hot tier small enough that some blobs stay out of it.
backend_suite!(s3_hot, {
    let dir = tempfile::tempdir().unwrap();
    let garage = airlock_testkit::Garage::start(&dir.path().join("garage"));
    let store = airlock_store::S3Store::open(
        &support::s3_settings(&garage),
        &dir.path().join("local"),
        64 << 10,
    )
    .await
    .unwrap();
    ((garage, dir), Arc::new(store) as Arc<dyn BlobStore>)
});
