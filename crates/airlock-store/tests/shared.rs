//! Records and leases several gateways share through Garage's K2V API (a single-node
//! Garage on loopback): the client signs what Garage checks, concurrent writes come back as
//! siblings and are merged, one replica's records reach another's index, and download
//! leases give one replica the fetch; one replica at a time evicts, on every replica's
//! records and pins.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use airlock_store::evict::{Policy, Report, evict_shared};
use airlock_store::k2v::{K2v, K2vSettings};
use airlock_store::shared::{Shared, Turn};
use airlock_store::{
    BlobStore, FileRecord, ManifestRecord, MetaIndex, S3Credentials, S3Store, StoreError, TagKey,
    TagRecord, put,
};
use airlock_testkit::Garage;
use airlock_types::Digest;

fn k2v(garage: &Garage, secret: &str) -> K2v {
    K2v::new(K2vSettings {
        endpoint: garage.k2v_endpoint.clone(),
        bucket: garage.bucket.clone(),
        region: garage.region.clone(),
        credentials: S3Credentials {
            secret_access_key: secret.to_owned(),
            ..support::credentials(garage)
        },
    })
    .unwrap()
}

fn replica(garage: &Garage, name: &str) -> Arc<Shared> {
    Arc::new(Shared::new(k2v(garage, &garage.secret), name.to_owned()))
}

#[tokio::test]
async fn k2v_items_keep_concurrent_writes_as_siblings_until_a_write_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(&dir.path().join("garage"));
    let client = k2v(&garage, &garage.secret);
    // A sort key with characters that need escaping in the query string.
    let key = "hub/library/alpine:3.20#oci-index+docker-list &=?%";
    assert_eq!(client.read("tags", key).await.unwrap(), None);

    client
        .insert("tags", key, None, b"one".to_vec())
        .await
        .unwrap();
    let first = client.read("tags", key).await.unwrap().unwrap();
    assert_eq!(first.values, vec![Some(b"one".to_vec())]);

    // Two writers that both saw "one": both values are kept.
    client
        .insert("tags", key, Some(&first.token), b"two".to_vec())
        .await
        .unwrap();
    client
        .insert("tags", key, Some(&first.token), b"three".to_vec())
        .await
        .unwrap();
    let both = client.read("tags", key).await.unwrap().unwrap();
    let mut values: Vec<_> = both.values.iter().flatten().cloned().collect();
    values.sort();
    assert_eq!(values, vec![b"three".to_vec(), b"two".to_vec()]);

    // A write carrying the token of a read that saw both replaces both.
    client
        .insert("tags", key, Some(&both.token), b"four".to_vec())
        .await
        .unwrap();
    let merged = client.read("tags", key).await.unwrap().unwrap();
    assert_eq!(merged.values, vec![Some(b"four".to_vec())]);

    let listed = client.read_prefix("tags", "hub/library/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, key);

    // A deletion leaves a marker (with a token for the next write), and no listed item.
    client.delete("tags", key, &merged.token).await.unwrap();
    let deleted = client.read("tags", key).await.unwrap().unwrap();
    assert_eq!(deleted.values, vec![None]);
    assert!(client.read_prefix("tags", "hub/").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_secret_is_a_configuration_error_and_a_dead_store_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut garage = Garage::start(&dir.path().join("garage"));
    let wrong = k2v(
        &garage,
        "0000000000000000000000000000000000000000000000000000000000000000",
    );
    let error = wrong.read("tags", "x").await.unwrap_err();
    assert!(matches!(error, StoreError::Config(_)), "{error}");

    garage.stop();
    let client = k2v(&garage, &garage.secret);
    let error = client.read("tags", "x").await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error}");
    // Cut off, the next calls fail at once instead of each waiting for a timeout, and a
    // clone (each replica's records share one client) knows it too.
    let started = std::time::Instant::now();
    let error = client.clone().read("tags", "y").await.unwrap_err();
    assert!(error.to_string().contains("moments ago"), "{error}");
    assert!(started.elapsed() < Duration::from_millis(50));
}

#[tokio::test]
async fn a_tag_and_a_file_one_replica_records_are_found_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(&dir.path().join("garage"));
    let a = MetaIndex::temporary()
        .unwrap()
        .sharing(replica(&garage, "a"));
    let b = MetaIndex::temporary()
        .unwrap()
        .sharing(replica(&garage, "b"));
    let key = TagKey {
        proxy: "hub".into(),
        repo: "library/alpine".into(),
        tag: "3.20".into(),
        variant: String::new(),
    };
    let record = TagRecord {
        digest: Digest::of(b"manifest"),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        checked_at: 100,
    };
    a.set_tag(&key, &record).await.unwrap();
    assert_eq!(b.tag(&key).await.unwrap(), Some(record.clone()));

    // B revalidates later; A's own copy stays A's until A asks the shared record.
    let newer = TagRecord {
        checked_at: 200,
        ..record.clone()
    };
    b.set_tag(&key, &newer).await.unwrap();
    assert_eq!(a.tag(&key).await.unwrap(), Some(record.clone()));
    assert_eq!(
        a.fresher_tag(&key, &record).await.unwrap(),
        Some(newer.clone())
    );
    assert_eq!(
        a.tag(&key).await.unwrap(),
        Some(newer.clone()),
        "kept locally"
    );
    assert_eq!(a.fresher_tag(&key, &newer).await.unwrap(), None);
    let fresh = MetaIndex::temporary()
        .unwrap()
        .sharing(replica(&garage, "c"));
    assert_eq!(fresh.tag(&key).await.unwrap(), Some(newer));

    let file = FileRecord {
        digest: Some(Digest::of(b"wheel")),
        content_type: Some("application/zip".into()),
        etag: None,
        last_modified: None,
        checked_at: 5,
    };
    a.set_file("pypi", "packages/x.whl", &file).await.unwrap();
    assert_eq!(b.file("pypi", "packages/x.whl").await.unwrap(), Some(file));
    // B's copy is in B's own index now: its listing sees it.
    assert_eq!(b.files_under("pypi", "packages/").await.unwrap().len(), 1);

    // A purge through A removes the shared record: a replica that never saw it finds nothing.
    assert!(a.forget_file("pypi", "packages/x.whl").await.unwrap());
    let late = MetaIndex::temporary()
        .unwrap()
        .sharing(replica(&garage, "d"));
    assert_eq!(late.file("pypi", "packages/x.whl").await.unwrap(), None);
}

#[tokio::test]
async fn one_replica_holds_a_download_lease_and_the_others_see_it_until_it_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(&dir.path().join("garage"));
    let replicas: Vec<_> = ["r1", "r2", "r3"]
        .iter()
        .map(|name| replica(&garage, name))
        .collect();
    let digest = Digest::of(b"layer");

    // Three claims at once: exactly one replica gets the turn (the claim protocol can let
    // two through only when one claim lands after the other's check, which a settle delay
    // makes rare; it is never more than one per replica).
    let turns = futures_util::future::join_all(replicas.iter().map(|r| r.lease(&digest))).await;
    let mine: Vec<usize> = turns
        .iter()
        .enumerate()
        .filter_map(|(i, t)| matches!(t, Turn::Mine(_)).then_some(i))
        .collect();
    assert_eq!(mine.len(), 1, "{turns:?}");
    let holder = mine[0];
    for (i, replica) in replicas.iter().enumerate() {
        assert_eq!(replica.held_by_other(&digest).await, i != holder);
    }

    // Dropping the lease releases it: the next claim gets the turn.
    drop(turns);
    let released = async {
        for _ in 0..50 {
            if !replicas[(holder + 1) % 3].held_by_other(&digest).await {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    };
    assert!(released.await, "the lease was released");
    assert!(matches!(
        replicas[(holder + 1) % 3].lease(&digest).await,
        Turn::Mine(_)
    ));
}

#[tokio::test]
async fn with_k2v_down_a_replica_works_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut garage = Garage::start(&dir.path().join("garage"));
    let index = MetaIndex::temporary()
        .unwrap()
        .sharing(replica(&garage, "a"));
    garage.stop();
    let key = TagKey {
        proxy: "hub".into(),
        repo: "library/alpine".into(),
        tag: "3.20".into(),
        variant: String::new(),
    };
    assert_eq!(index.tag(&key).await.unwrap(), None);
    let record = TagRecord {
        digest: Digest::of(b"m"),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        checked_at: 1,
    };
    // The local index takes the write; the shared one is skipped (logged).
    index.set_tag(&key, &record).await.unwrap();
    assert_eq!(index.tag(&key).await.unwrap(), Some(record));
    let shared = index.shared().unwrap();
    assert!(matches!(
        shared.lease(&Digest::of(b"x")).await,
        Turn::Mine(_)
    ));
}

/// Stores `bytes` in the bucket and records them through `index` as a manifest referencing
/// `refs` (when given) or a plain blob; returns the digest.
async fn cache(
    store: &S3Store,
    index: &MetaIndex,
    bytes: &[u8],
    manifest_of: Option<Vec<Digest>>,
) -> Digest {
    let digest = Digest::of(bytes);
    put(store, &digest, bytes).await.unwrap();
    index
        .record_blob(&digest, bytes.len() as u64)
        .await
        .unwrap();
    if let Some(refs) = manifest_of {
        let record = ManifestRecord {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: bytes.len() as u64,
            refs,
        };
        index.set_manifest(&digest, &record).await.unwrap();
    }
    digest
}

fn tag(name: &str) -> TagKey {
    TagKey {
        proxy: "hub".into(),
        repo: format!("library/{name}"),
        tag: "1".into(),
        variant: String::new(),
    }
}

#[tokio::test]
async fn one_replica_evicts_what_any_replica_cached_and_keeps_what_any_replica_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(&dir.path().join("garage"));
    let store = S3Store::open(&support::s3_settings(&garage), &dir.path().join("local"), 0)
        .await
        .unwrap();
    let (shared_a, shared_b) = (replica(&garage, "a"), replica(&garage, "b"));
    let a = MetaIndex::temporary().unwrap().sharing(shared_a.clone());
    let b = MetaIndex::temporary().unwrap().sharing(shared_b.clone());

    // Through A: an image (manifest and layer) under a tag. Through B: another image that
    // shares A's layer, pinned on B only, and a package file.
    let shared_layer = cache(&store, &a, b"layer both images use", None).await;
    let own_layer = cache(&store, &a, b"layer of the first image", None).await;
    let first = cache(
        &store,
        &a,
        b"first manifest",
        Some(vec![shared_layer.clone(), own_layer.clone()]),
    )
    .await;
    let record = |digest: &Digest| TagRecord {
        digest: digest.clone(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        checked_at: 1,
    };
    a.set_tag(&tag("first"), &record(&first)).await.unwrap();
    let second = cache(
        &store,
        &b,
        b"second manifest",
        Some(vec![shared_layer.clone()]),
    )
    .await;
    b.set_tag(&tag("second"), &record(&second)).await.unwrap();
    let file = cache(&store, &b, b"a wheel", None).await;
    let file_record = FileRecord {
        digest: Some(file.clone()),
        content_type: None,
        etag: None,
        last_modified: None,
        checked_at: 1,
    };
    b.set_file("pypi", "packages/x.whl", &file_record)
        .await
        .unwrap();
    shared_b
        .publish_pins(&[second.clone()].into_iter().collect())
        .await
        .unwrap();

    // While B holds the eviction lease, A's pass does nothing.
    let held = shared_b.lead().await.expect("B leads");
    let everything = Policy {
        max_size: None,
        unused_for: Some(Duration::ZERO),
        grace: Duration::ZERO,
    };
    let report = evict_shared(&store, &a, &shared_a, &HashSet::new(), |_| Some(everything))
        .await
        .unwrap();
    assert_eq!(report, Report::default());
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A's pass sees B's records: B's pinned image and the layer it shares stay; the rest
    // goes from the bucket and from the shared records.
    let report = evict_shared(&store, &a, &shared_a, &HashSet::new(), |total| {
        assert!(
            total > 0,
            "the bucket's total comes from every replica's records"
        );
        Some(everything)
    })
    .await
    .unwrap();
    assert_eq!(report.blobs_removed, 3, "{report:?}");
    assert_eq!(report.file_rows_removed, 1);
    for kept in [&second, &shared_layer] {
        assert!(store.stat(kept).await.unwrap().is_some(), "{kept} was kept");
    }
    for gone in [&first, &own_layer, &file] {
        assert!(
            store.stat(gone).await.unwrap().is_none(),
            "{gone} was evicted"
        );
    }
    let late = MetaIndex::temporary()
        .unwrap()
        .sharing(replica(&garage, "c"));
    assert_eq!(late.tag(&tag("first")).await.unwrap(), None);
    assert_eq!(
        late.tag(&tag("second")).await.unwrap(),
        Some(record(&second))
    );
    assert_eq!(late.file("pypi", "packages/x.whl").await.unwrap(), None);
    assert_eq!(late.manifest(&first).await.unwrap(), None);
}
