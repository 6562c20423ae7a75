//! The s3 backend's own behaviour against a real bucket (a single-node Garage on
//! loopback): multipart uploads, the hot tier, a bucket that lies or goes away.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_store::{BlobStore, S3Credentials, S3Store, StoreError, put, read_all};
use airlock_testkit::{Garage, noise};
use airlock_types::Digest;
use object_store::{ObjectStoreExt, PutPayload};

async fn open(garage: &Garage, local: &Path, hot: u64) -> S3Store {
    S3Store::open(&support::s3_settings(garage), local, hot)
        .await
        .unwrap()
}

async fn read_file(store: &S3Store, digest: &Digest) -> Result<Vec<u8>, StoreError> {
    let file = store.open_file(digest).await?.expect("present");
    let mut out = Vec::new();
    loop {
        let (buf, n) = file
            .clone()
            .read_at(vec![0; 1 << 20], out.len() as u64)
            .await
            .unwrap();
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_large_blob_goes_up_in_parts_and_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(&dir.path().join("garage"));
    let store = open(&garage, &dir.path().join("local"), 0).await;
    let bytes = noise(20 << 20, 1);
    let digest = Digest::of(&bytes);
    let mut writer = store.create(Some(&digest)).await.unwrap();
    for chunk in bytes.chunks(1 << 20) {
        writer.write(chunk).await.unwrap();
    }
    writer.commit().await.unwrap();
    let head = store.bucket().head(&S3Store::key(&digest)).await.unwrap();
    assert_eq!(head.size, bytes.len() as u64);
    assert!(read_file(&store, &digest).await.unwrap() == bytes);
    assert!(read_all(&store, &digest).await.unwrap().unwrap() == bytes);
    assert_eq!(
        store.clean_temp().await.unwrap(),
        0,
        "no temp file is left behind"
    );
}

#[tokio::test]
async fn a_write_that_does_not_match_its_digest_never_reaches_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(&dir.path().join("garage"));
    let store = open(&garage, &dir.path().join("local"), 1 << 20).await;
    let claimed = Digest::of(b"what the manifest promised");
    let refused = put(&store, &claimed, b"what the upstream sent")
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::DigestMismatch { .. }),
        "{refused}"
    );
    let absent = store.bucket().head(&S3Store::key(&claimed)).await;
    assert!(
        matches!(absent, Err(object_store::Error::NotFound { .. })),
        "{absent:?}"
    );
    assert_eq!(store.stat(&claimed).await.unwrap(), None);
}

#[tokio::test]
async fn an_object_the_bucket_altered_is_refused_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(&dir.path().join("garage"));
    let bytes = noise(100_000, 2);
    let digest = Digest::of(&bytes);
    // Someone with write access to the bucket swaps the object's bytes.
    let writer = open(&garage, &dir.path().join("writer"), 0).await;
    put(&writer, &digest, &bytes).await.unwrap();
    let mut forged = bytes.clone();
    forged[500] ^= 1;
    writer
        .bucket()
        .put(&S3Store::key(&digest), PutPayload::from(forged))
        .await
        .unwrap();
    for hot in [0, 1 << 20] {
        let reader = open(&garage, &dir.path().join(format!("reader-{hot}")), hot).await;
        let refused = read_file(&reader, &digest).await.unwrap_err();
        assert!(
            matches!(refused, StoreError::DigestMismatch { .. }),
            "{refused}"
        );
    }
    let hot_reader = open(&garage, &dir.path().join("reader-1048576"), 1 << 20).await;
    let refused = hot_reader.open(&digest, 0).await.err().expect("refused");
    assert!(
        matches!(refused, StoreError::DigestMismatch { .. }),
        "{refused}"
    );
}

#[tokio::test]
async fn another_gateway_on_the_bucket_reads_what_one_wrote_and_warms_its_own_tier() {
    let dir = tempfile::tempdir().unwrap();
    let mut garage = Garage::start(&dir.path().join("garage"));
    let a = open(&garage, &dir.path().join("a"), 1 << 20).await;
    let bytes = noise(300_000, 3);
    let digest = Digest::of(&bytes);
    put(&a, &digest, &bytes).await.unwrap();
    let b = open(&garage, &dir.path().join("b"), 1 << 20).await;
    assert!(read_file(&b, &digest).await.unwrap() == bytes);
    // b's copy now serves without the bucket.
    garage.stop();
    assert!(read_file(&b, &digest).await.unwrap() == bytes);
    assert_eq!(b.stat(&digest).await.unwrap(), Some(bytes.len() as u64));
    // And survives b's restart.
    drop(b);
    let b = open(&garage, &dir.path().join("b"), 1 << 20).await;
    assert!(read_file(&b, &digest).await.unwrap() == bytes);
}

#[tokio::test]
async fn with_the_bucket_down_the_hot_tier_serves_and_the_rest_fails_fast_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut garage = Garage::start(&dir.path().join("garage"));
    let store = Arc::new(open(&garage, &dir.path().join("local"), 1 << 20).await);
    let small = noise(200_000, 4);
    let large = noise(2 << 20, 5); // larger than the tier: only in the bucket
    let (small_digest, large_digest) = (Digest::of(&small), Digest::of(&large));
    put(store.as_ref(), &small_digest, &small).await.unwrap();
    put(store.as_ref(), &large_digest, &large).await.unwrap();

    garage.stop();
    assert!(read_file(&store, &small_digest).await.unwrap() == small);
    let started = Instant::now();
    let refused = store
        .open_file(&large_digest)
        .await
        .err()
        .expect("bucket down");
    assert!(
        matches!(refused, StoreError::Unavailable { .. }),
        "{refused}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a bucket that is down is an error within seconds, took {:?}",
        started.elapsed()
    );
    let refused = put(store.as_ref(), &Digest::of(b"new"), b"new")
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::Unavailable { .. }),
        "{refused}"
    );

    garage.resume();
    assert!(read_file(&store, &large_digest).await.unwrap() == large);
    put(store.as_ref(), &Digest::of(b"new"), b"new")
        .await
        .unwrap();
}

#[test]
fn credentials_come_from_their_files_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (id, secret) = (dir.path().join("s3.id"), dir.path().join("s3.secret"));
    std::fs::write(&id, "GK0123\n").unwrap();
    std::fs::write(&secret, "  s3cr3t\n").unwrap();
    let loaded = S3Credentials::load(Some(&id), Some(&secret)).unwrap();
    assert_eq!(loaded.access_key_id, "GK0123");
    assert_eq!(loaded.secret_access_key, "s3cr3t");
    assert!(
        !format!("{loaded:?}").contains("s3cr3t"),
        "Debug hides the secret"
    );

    let missing = S3Credentials::load(Some(&id), Some(&dir.path().join("nope")))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope"), "{missing}");
    std::fs::write(&secret, "\n").unwrap();
    let empty = S3Credentials::load(Some(&id), Some(&secret))
        .unwrap_err()
        .to_string();
    assert!(
        empty.contains("empty") && empty.contains("s3.secret"),
        "{empty}"
    );
}
