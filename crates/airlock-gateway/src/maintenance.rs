//! Background upkeep of the store: last-use times written in batches, eviction by
//! retention and size with pinned images and hosted projects held, abandoned uploads
//! dropped.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use airlock_store::evict::{self, Policy};

use airlock_config::CacheConfig;

use crate::AppState;

/// How often touches are flushed and the size limit is checked.
const TICK: Duration = Duration::from_secs(60);
/// Retention (`unused_for`) is applied every this many ticks.
const RETENTION_EVERY: u32 = 10;

/// Runs until the task is dropped.
pub(crate) async fn run(state: Arc<AppState>) {
    let mut ticks = 0u32;
    let mut interval = tokio::time::interval(TICK);
    interval.tick().await;
    loop {
        interval.tick().await;
        ticks = ticks.wrapping_add(1);
        if let Some(egress) = &state.egress {
            let total = crate::console::history::egress_decisions(egress);
            state
                .history
                .sample_egress(total, std::time::SystemTime::now());
        }
        state.registry.drop_abandoned_uploads();
        if let Err(error) = tick(&state, ticks % RETENTION_EVERY == 0).await {
            tracing::warn!(target: "airlock::evict", %error, "store upkeep failed; will retry");
        }
    }
}

/// What one round should evict by, if anything: over `max_size`, retention due, or free
/// space on the data dir below `min_free` — then down to `min_free` with no grace (a rollout
/// can fill a disk within the grace period; pins still hold).
fn policy_for(
    cache: &CacheConfig,
    total: u64,
    free: Option<u64>,
    retention_due: bool,
) -> Option<Policy> {
    let over_size = cache.max_size.is_some_and(|max| total > max.0);
    let retention = retention_due && cache.unused_for.is_some();
    let short = match (cache.min_free, free) {
        (Some(min), Some(free)) if free < min.0 => Some(min.0 - free),
        _ => None,
    };
    if !(over_size || retention || short.is_some()) {
        return None;
    }
    let max_size = cache.max_size.map(|s| s.0);
    Some(match short {
        Some(short) => Policy {
            max_size: Some(max_size.unwrap_or(total).min(total.saturating_sub(short))),
            unused_for: cache.unused_for.map(|d| d.0),
            grace: Duration::ZERO,
        },
        None => Policy {
            max_size,
            unused_for: cache.unused_for.map(|d| d.0),
            grace: cache.grace.0,
        },
    })
}

/// One round: flush touches; evict when over size, short of free space, or when retention
/// is due.
pub(crate) async fn tick(
    state: &AppState,
    retention_due: bool,
) -> Result<(), airlock_store::StoreError> {
    let registry = &state.registry;
    if let Some(shared) = registry.index().shared() {
        return shared_tick(state, shared, retention_due).await;
    }
    registry.index().flush_touches().await?;
    let cache = &state.config.cache;
    let free = match cache.min_free {
        Some(_) => match evict::free_space(&state.config.data_dir) {
            Ok(free) => Some(free),
            Err(error) => {
                tracing::warn!(target: "airlock::evict", %error, "cannot read the data dir's free space");
                None
            }
        },
        None => None,
    };
    let total = registry.index().total_size();
    let Some(policy) = policy_for(cache, total, free, retention_due) else {
        return Ok(());
    };
    if policy.grace.is_zero() {
        tracing::warn!(
            target: "airlock::evict",
            free = free.unwrap_or_default(),
            min_free = cache.min_free.map_or(0, |m| m.0),
            "free space on the data dir is below min_free: evicting what is not pinned, however recently used"
        );
    }
    let pinned = pinned_roots(state).await?;
    let report = evict::evict(
        registry.store().as_ref(),
        registry.index(),
        &policy,
        &pinned,
    )
    .await?;
    count(state, &report);
    Ok(())
}

/// What `[cache] pin`, the run-time pins and the hosted projects hold now. `[cache] pin` entries were resolved
/// at startup, run-time pins when made; one that names nothing cached yet holds nothing.
async fn pinned_roots(
    state: &AppState,
) -> Result<HashSet<airlock_types::Digest>, airlock_store::StoreError> {
    let registry = &state.registry;
    let mut pinned = HashSet::new();
    let runtime = state.pins.resolved();
    for pin in registry.pins().iter().chain(&runtime) {
        if let Ok(Some(digest)) = registry.pinned_digest(pin).await {
            pinned.insert(digest);
        }
    }
    // Hosted projects' content is the only copy there is, never a cache entry: when it
    // cannot be listed, no pass runs.
    let hosted = registry
        .hosted_roots()
        .await
        .map_err(|e| airlock_store::StoreError::Index(format!("listing hosted manifests: {e}")))?;
    pinned.extend(hosted);
    Ok(pinned)
}

/// A round on a bucket shared with other replicas: publish this replica's pins, and
/// evict if this replica holds the eviction lease, judging the bucket's total size against
/// `max_size` (the data dir's free space concerns only the hot tier, which keeps its own
/// budget).
async fn shared_tick(
    state: &AppState,
    shared: &std::sync::Arc<airlock_store::shared::Shared>,
    retention_due: bool,
) -> Result<(), airlock_store::StoreError> {
    let registry = &state.registry;
    let pinned = pinned_roots(state).await?;
    shared.publish_pins(&pinned).await?;
    let cache = &state.config.cache;
    let report = evict::evict_shared(
        registry.store().as_ref(),
        registry.index(),
        shared,
        &pinned,
        |total| policy_for(cache, total, None, retention_due),
    )
    .await?;
    count(state, &report);
    Ok(())
}

fn count(state: &AppState, report: &evict::Report) {
    state
        .metrics
        .evicted_blobs
        .fetch_add(report.blobs_removed as u64, Ordering::Relaxed);
    state
        .metrics
        .evicted_bytes
        .fetch_add(report.bytes_freed, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_types::{ByteSize, HumanDuration};

    fn cache(max: Option<u64>, min_free: Option<u64>) -> CacheConfig {
        CacheConfig {
            max_size: max.map(ByteSize),
            min_free: min_free.map(ByteSize),
            grace: HumanDuration::from_secs(300),
            ..CacheConfig::default()
        }
    }

    #[test]
    fn size_retention_and_free_space_each_start_a_pass() {
        // Under every limit, retention not due: nothing to do.
        assert!(policy_for(&cache(Some(100), Some(10)), 50, Some(20), false).is_none());
        // Over max_size: evict down to it, recent use protected by the grace.
        let over = policy_for(&cache(Some(100), None), 150, None, false).unwrap();
        assert_eq!(over.max_size, Some(100));
        assert_eq!(over.grace, Duration::from_secs(300));
        // Retention due: the configured grace holds.
        let retention = policy_for(&cache(None, None), 50, None, true).unwrap();
        assert_eq!(retention.max_size, None);
        assert_eq!(retention.grace, Duration::from_secs(300));
        // Free space short by 30: free 30 below the store's size, grace or not.
        let short = policy_for(&cache(None, Some(40)), 500, Some(10), false).unwrap();
        assert_eq!(short.max_size, Some(470));
        assert_eq!(short.grace, Duration::ZERO);
        // Both: the tighter bound.
        let both = policy_for(&cache(Some(400), Some(40)), 500, Some(10), false).unwrap();
        assert_eq!(both.max_size, Some(400));
        let both = policy_for(&cache(Some(490), Some(40)), 500, Some(10), false).unwrap();
        assert_eq!(both.max_size, Some(470));
        // More short than the store holds: evict everything not pinned.
        let all = policy_for(&cache(None, Some(1000)), 50, Some(0), false).unwrap();
        assert_eq!(all.max_size, Some(0));
        // Free space unknown: min_free cannot act, the rest still does.
        assert!(policy_for(&cache(None, Some(40)), 500, None, false).is_none());
    }

    /// A blob used a moment ago is kept by the grace when only `max_size` is exceeded, and
    /// evicted when the disk is short of `min_free` (here more than any disk has).
    #[tokio::test]
    async fn a_disk_short_of_min_free_overrides_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let text = |min_free: &str| {
            format!(
                "data_dir = {:?}\n[tls]\nmode = \"off\"\n[cache]\nmax_size = \"1B\"\n{min_free}",
                dir.path().join("data").display().to_string()
            )
        };
        let blob = b"used a moment ago";
        let digest = airlock_types::Digest::of(blob);
        for (min_free, evicted) in [("", false), ("min_free = \"1000000TB\"\n", true)] {
            let config = airlock_config::Config::from_toml_str(&text(min_free), "test").unwrap();
            let (state, _) = crate::build(config).await.unwrap();
            let registry = &state.registry;
            if registry.store().stat(&digest).await.unwrap().is_none() {
                airlock_store::put(registry.store().as_ref(), &digest, blob)
                    .await
                    .unwrap();
                registry
                    .index()
                    .record_blob(&digest, blob.len() as u64)
                    .await
                    .unwrap();
            }
            registry.index().touch(&digest, blob.len() as u64);
            tick(&state, false).await.unwrap();
            assert_eq!(
                registry.store().stat(&digest).await.unwrap().is_none(),
                evicted,
                "{min_free:?}"
            );
            drop(state);
        }
    }
}

#[cfg(test)]
mod pin_tests {
    use super::*;
    use airlock_testkit::{AuthMode, FakeRegistry, Image};
    use axum::extract::State;
    use http::{HeaderMap, HeaderValue, Method, header};

    /// GETs `path` through the registry handler, reading the body to its end.
    async fn pull(state: &AppState, path: &str) {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
        );
        let response = airlock_registry::handle(
            State(state.registry.clone()),
            Method::GET,
            path.parse().unwrap(),
            headers,
        )
        .await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
    }

    async fn held(state: &AppState, image: &Image) -> Vec<bool> {
        let mut held = Vec::new();
        for blob in image.blobs() {
            let digest = airlock_types::Digest::of(blob);
            held.push(state.store.stat(&digest).await.unwrap().is_some());
        }
        held
    }

    /// A run-time pin holds an image's manifest and blobs against a `max_size` of one byte
    /// with no grace, across a restart (it is read back from the pin file), and once
    /// removed, the image goes at the next round.
    #[tokio::test]
    async fn runtime_pins_hold_against_eviction_across_a_restart() {
        let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
        let image = Image::random(&[1000, 2000]);
        upstream.push_image("library/alpine", "3.19", &image);
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "data_dir = {:?}\n[tls]\nmode = \"off\"\n[cache]\nmax_size = \"1B\"\ngrace = \"0s\"\n[[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{}\"\n",
            dir.path().join("data").display().to_string(),
            upstream.url()
        );
        let config = airlock_config::Config::from_toml_str(&text, "test").unwrap();
        let (state, _) = crate::build(config.clone()).await.unwrap();
        pull(&state, "/v2/hub/library/alpine/manifests/3.19").await;
        for blob in image.blobs() {
            let digest = airlock_types::Digest::of(blob);
            pull(&state, &format!("/v2/hub/library/alpine/blobs/{digest}")).await;
        }
        let reference = "hub/library/alpine:3.19";
        let pin = state
            .registry
            .resolve_image(&reference.parse().unwrap())
            .unwrap();
        assert!(state.pins.add(reference, pin).unwrap());
        tick(&state, false).await.unwrap();
        assert_eq!(held(&state, &image).await, [true, true, true]);
        drop(state);

        let (state, _) = crate::build(config.clone()).await.unwrap();
        assert_eq!(state.pins.resolved().len(), 1);
        tick(&state, false).await.unwrap();
        assert_eq!(held(&state, &image).await, [true, true, true]);
        assert!(state.pins.remove(reference).unwrap());
        tick(&state, false).await.unwrap();
        assert_eq!(held(&state, &image).await, [false, false, false]);
    }

    /// `method` of `path` through the registry as the `[admin]` user `admin`: the status.
    async fn as_admin(
        state: &AppState,
        method: Method,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> http::StatusCode {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(body.to_vec()))
            .unwrap();
        request
            .extensions_mut()
            .insert(airlock_registry::Caller::Admin("admin".into()));
        airlock_registry::serve(State(state.registry.clone()), request)
            .await
            .status()
    }

    /// A hosted image is the only copy there is: a `max_size` of one byte with no grace
    /// takes a cached blob nothing references, never the image, nor a blob pushed and not
    /// referenced yet (garbage collection decides about that one).
    #[tokio::test]
    async fn hosted_images_are_never_evicted() {
        let image = Image::random(&[1000, 2000]);
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "data_dir = {:?}\n[tls]\nmode = \"off\"\n[cache]\nmax_size = \"1B\"\ngrace = \"0s\"\n[[hosted]]\nname = \"lab\"\n",
            dir.path().join("data").display().to_string(),
        );
        let config = airlock_config::Config::from_toml_str(&text, "test").unwrap();
        let (state, _) = crate::build(config).await.unwrap();
        let orphan = b"pushed, never referenced";
        for blob in image.blobs().into_iter().chain([&orphan[..]]) {
            let digest = airlock_types::Digest::of(blob);
            let path = format!("/v2/lab/app/blobs/uploads/?digest={digest}");
            let status = as_admin(
                &state,
                Method::POST,
                &path,
                "application/octet-stream",
                blob,
            );
            assert_eq!(status.await, http::StatusCode::CREATED);
        }
        let path = "/v2/lab/app/manifests/v1";
        let status = as_admin(&state, Method::PUT, path, image.media_type, &image.manifest);
        assert_eq!(status.await, http::StatusCode::CREATED);

        let proxied = b"fetched by a proxy once";
        let cached = airlock_types::Digest::of(proxied);
        airlock_store::put(state.store.as_ref(), &cached, proxied)
            .await
            .unwrap();
        state
            .index
            .record_blob(&cached, proxied.len() as u64)
            .await
            .unwrap();

        tick(&state, false).await.unwrap();
        assert_eq!(held(&state, &image).await, [true, true, true]);
        assert!(state.store.stat(&image.digest).await.unwrap().is_some());
        let orphan = airlock_types::Digest::of(orphan);
        assert!(state.store.stat(&orphan).await.unwrap().is_some());
        assert!(
            state.store.stat(&cached).await.unwrap().is_none(),
            "the pass ran"
        );
    }
}
