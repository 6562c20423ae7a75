//! The freshness rules and the ingest path of [`Origin`], against a loopback upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use airlock_config::{Config, ProxyConfig};
use airlock_store::{BlobStore, MemoryStore, MetaIndex};
use airlock_testkit::FakeFiles;
use airlock_types::{CacheOutcome, ClientRequest, Digest, ReadMethod};
use airlock_upstream::Upstream;
use airlock_upstream::fetch::Downloads;
use futures_util::future::BoxFuture;
use http::StatusCode;

use super::{Entry, Origin, Spec};
use crate::PackageError;
use crate::checksum::{Algorithm, Checksum};

/// An origin for `upstream` with the extra proxy settings in `settings`, on a memory store.
struct Fixture {
    origin: Origin,
    store: Arc<dyn BlobStore>,
    _dir: tempfile::TempDir,
}

fn fixture(upstream: &FakeFiles, settings: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[[proxy]]\nname = \"p\"\nformat = \"raw\"\nupstream = \"{}\"\n{settings}",
        dir.path().display().to_string(),
        upstream.url()
    );
    let config: ProxyConfig = Config::from_toml_str(&text, "test").unwrap().proxies[0].clone();
    let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::default());
    let index = MetaIndex::open(&dir.path().join("index.redb")).unwrap();
    let downloads = Arc::new(Downloads::new(store.clone(), index.clone()));
    let upstream = Upstream::new(&config, None).unwrap();
    let origin = Origin::new(config, upstream, store.clone(), index, downloads).unwrap();
    Fixture {
        origin,
        store,
        _dir: dir,
    }
}

async fn outcome(origin: &Origin, spec: Spec<'_>) -> Result<CacheOutcome, PackageError> {
    origin.entry(spec).await.map(|e| e.outcome)
}

#[tokio::test]
async fn a_ttl_file_is_fetched_once_while_fresh() {
    let upstream = FakeFiles::start().await;
    upstream.put("a.txt", "text/plain", b"one");
    let f = fixture(&upstream, "metadata_ttl = \"1h\"");
    let first = f.origin.entry(Spec::ttl("a.txt")).await.unwrap();
    assert_eq!(first.outcome, CacheOutcome::Miss);
    assert_eq!(first.content_type.as_deref(), Some("text/plain"));
    assert_eq!(first.digest, Digest::of(b"one"));
    assert_eq!(
        outcome(&f.origin, Spec::ttl("a.txt")).await.unwrap(),
        CacheOutcome::Hit
    );
    assert_eq!(upstream.count("a.txt"), 1);
}

#[tokio::test]
async fn an_expired_ttl_file_is_revalidated_then_served_stale_when_the_upstream_fails() {
    let upstream = FakeFiles::start().await;
    upstream.put("a.txt", "text/plain", b"one");
    let f = fixture(&upstream, "metadata_ttl = \"0s\"");
    let spec = || Spec::ttl("a.txt");
    assert_eq!(
        outcome(&f.origin, spec()).await.unwrap(),
        CacheOutcome::Miss
    );
    assert_eq!(
        outcome(&f.origin, spec()).await.unwrap(),
        CacheOutcome::Revalidated
    );
    upstream.fail_with(Some(503));
    let stale = f.origin.entry(spec()).await.unwrap();
    assert_eq!(stale.outcome, CacheOutcome::Stale);
    assert_eq!(stale.digest, Digest::of(b"one"));
    upstream.fail_with(None);
    upstream.put("a.txt", "text/plain", b"two");
    let changed = f.origin.entry(spec()).await.unwrap();
    assert_eq!(
        (changed.outcome, changed.digest),
        (CacheOutcome::Miss, Digest::of(b"two"))
    );
}

#[tokio::test]
async fn a_404_is_remembered_for_the_negative_ttl() {
    let upstream = FakeFiles::start().await;
    let f = fixture(&upstream, "negative_ttl = \"1h\"");
    for _ in 0..3 {
        let error = f.origin.entry(Spec::ttl("gone.txt")).await.unwrap_err();
        assert!(
            matches!(error, PackageError::NotFoundUpstream { .. }),
            "{error}"
        );
    }
    assert_eq!(upstream.count("gone.txt"), 1);
}

#[tokio::test]
async fn a_document_the_check_refuses_is_never_cached_and_the_previous_one_stands_in() {
    let upstream = FakeFiles::start().await;
    upstream.put("index", "text/plain", b"good");
    let f = fixture(&upstream, "metadata_ttl = \"0s\"");
    let check: &super::Check<'_> = &|bytes, _| {
        (bytes.starts_with(b"good"))
            .then_some(())
            .ok_or_else(|| "not good".to_owned())
    };
    let first = f
        .origin
        .document(Spec::ttl("index").checked(64, check))
        .await
        .unwrap();
    assert_eq!(first.bytes, b"good");
    for bad in [b"evil".to_vec(), vec![b'g'; 65]] {
        upstream.put("index", "text/plain", &bad);
        let stale = f
            .origin
            .document(Spec::ttl("index").checked(64, check))
            .await
            .unwrap();
        assert_eq!(
            (stale.cache, stale.bytes),
            (CacheOutcome::Stale, b"good".to_vec())
        );
        assert_eq!(f.store.stat(&Digest::of(&bad)).await.unwrap(), None);
    }
    // Without a previous copy the refusal is the upstream's failure.
    upstream.put("other", "text/plain", b"evil");
    let error = f
        .origin
        .entry(Spec::ttl("other").checked(64, check))
        .await
        .unwrap_err();
    assert!(matches!(error, PackageError::Upstream { .. }), "{error}");
}

#[tokio::test]
async fn an_immutable_file_is_verified_before_it_is_served_or_kept() {
    let upstream = FakeFiles::start().await;
    upstream.put("f.bin", "application/x-evil", b"tampered");
    let f = fixture(&upstream, "");
    let digest = Digest::of(b"expected");
    let spec = || Spec::immutable("f.bin", &digest, "application/octet-stream");
    let error = f
        .origin
        .get(spec(), &ClientRequest::get())
        .await
        .unwrap_err();
    assert!(
        matches!(error, PackageError::Verification { .. }),
        "{error}"
    );
    assert_eq!(f.store.stat(&Digest::of(b"tampered")).await.unwrap(), None);

    upstream.put("f.bin", "application/x-evil", b"expected");
    let miss = f.origin.get(spec(), &ClientRequest::get()).await.unwrap();
    assert_eq!(miss.status(), StatusCode::OK);
    assert_eq!(miss.headers()["x-airlock-cache"], "miss");
    assert_eq!(
        miss.headers()["content-type"],
        "application/octet-stream",
        "the format's media type, not the upstream's"
    );
    let mut head = ClientRequest::get();
    head.method = ReadMethod::Head;
    let hit = f.origin.get(spec(), &head).await.unwrap();
    assert_eq!(hit.headers()["x-airlock-cache"], "hit");
    assert_eq!(hit.headers()["content-length"], "8");
    assert_eq!(upstream.count("f.bin"), 2);
}

#[tokio::test]
async fn a_pinned_file_asks_for_its_checksum_only_on_a_miss_and_keeps_only_a_match() {
    let upstream = FakeFiles::start().await;
    upstream.put("r-1.0.jar", "application/java-archive", b"jar");
    let f = fixture(&upstream, "");
    let asked = AtomicUsize::new(0);
    let wrong = || -> BoxFuture<'_, _> {
        asked.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(Ok(Some(Checksum {
            algorithm: Algorithm::Sha1,
            hex: "00".repeat(20),
        }))))
    };
    let error = f
        .origin
        .entry(Spec::pinned("r-1.0.jar", "r#release", &wrong))
        .await
        .unwrap_err();
    assert!(
        matches!(error, PackageError::Verification { .. }),
        "{error}"
    );
    assert_eq!(f.store.stat(&Digest::of(b"jar")).await.unwrap(), None);

    let right = || -> BoxFuture<'_, _> {
        asked.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(Ok(Some(Checksum {
            algorithm: Algorithm::Sha256,
            hex: Digest::of(b"jar").hex().to_owned(),
        }))))
    };
    let spec = || Spec::pinned("r-1.0.jar", "r#release", &right);
    let Entry { outcome, .. } = f.origin.entry(spec()).await.unwrap();
    assert_eq!(outcome, CacheOutcome::Miss);
    assert_eq!(outcome_of_hit(&f.origin, spec()).await, CacheOutcome::Hit);
    assert_eq!(asked.load(Ordering::SeqCst), 2, "not asked for the hit");
    assert_eq!(upstream.count("r-1.0.jar"), 2);
}

async fn outcome_of_hit(origin: &Origin, spec: Spec<'_>) -> CacheOutcome {
    outcome(origin, spec).await.unwrap()
}

#[tokio::test]
async fn an_offline_proxy_fetches_nothing() {
    let upstream = FakeFiles::start().await;
    upstream.put("a.txt", "text/plain", b"one");
    let offline = fixture(&upstream, "offline = true");
    let error = offline.origin.entry(Spec::ttl("a.txt")).await.unwrap_err();
    assert!(matches!(error, PackageError::Offline { .. }), "{error}");
    assert_eq!(upstream.count("a.txt"), 0);
}
