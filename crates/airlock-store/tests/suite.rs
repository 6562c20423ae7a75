//! The shared contract every `BlobStore` backend passes, run once per backend.

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
    let mut writer = store.create(&digest).await.unwrap();
    writer.write(&bytes[..40_000]).await.unwrap();
    assert_eq!(writer.written(), 40_000);
    assert_eq!(
        store.stat(&digest).await.unwrap(),
        None,
        "a blob in progress is not visible"
    );
    let partial = writer.partial();
    assert_eq!(
        read(partial.open(10_000).await.unwrap()).await.len(),
        30_000
    );
    writer.write(&bytes[40_000..]).await.unwrap();
    writer.commit().await.unwrap();
    assert_eq!(
        read_all(store.as_ref(), &digest).await.unwrap().unwrap(),
        bytes
    );
}

async fn dropped_writer_leaves_nothing(store: Arc<dyn BlobStore>) {
    let digest = Digest::of(b"never finished");
    let mut writer = store.create(&digest).await.unwrap();
    writer.write(b"never").await.unwrap();
    drop(writer);
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    assert_eq!(
        store.clean_temp().await.unwrap(),
        0,
        "a dropped writer cleans up after itself"
    );
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
