//! Eviction: retention (`unused_for`) and size (`max_size`, least recently used first),
//! aware of references.
//!
//! Manifests are the unit: a manifest that goes takes with it every blob no remaining
//! manifest references, so a layer shared with an image of another repository stays as
//! long as that image does (distribution#2367 deletes it). Pinned images and anything used
//! within the grace period are never candidates. Files are deleted before their records: a
//! crash in between leaves records of missing blobs, which read as misses and are fetched
//! again, never a file nobody tracks.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use airlock_types::Digest;

use crate::index::{MetaIndex, Snapshot, unix_now};
use crate::shared::Shared;
use crate::{BlobStore, StoreError};

/// What eviction may do.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_size: Option<u64>,
    pub unused_for: Option<Duration>,
    /// Anything used this recently is kept: a pull in progress reads manifest then blobs.
    pub grace: Duration,
}

/// What one eviction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    /// Package proxies' file rows that named a removed blob.
    pub file_rows_removed: usize,
    pub size_after: u64,
}

mod plan;
#[doc(hidden)]
pub mod walks;

pub use plan::plan;

/// Bytes an unprivileged writer can still use on the filesystem holding `dir`.
pub fn free_space(dir: &std::path::Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Runs one eviction pass over the store.
pub async fn evict(
    store: &dyn BlobStore,
    index: &MetaIndex,
    policy: &Policy,
    pinned_roots: &HashSet<Digest>,
) -> Result<Report, StoreError> {
    index.flush_touches().await?;
    let snapshot = index.snapshot().await?;
    let doomed = plan(&snapshot, policy, pinned_roots, unix_now());
    let mut report = delete_blobs(store, &snapshot, &doomed).await?;
    let gone: HashSet<&Digest> = doomed.iter().collect();
    let tags = snapshot
        .tags
        .iter()
        .filter(|(_, d)| gone.contains(d))
        .map(|(t, _)| t.clone())
        .collect();
    report.file_rows_removed = index.forget(doomed.clone(), tags).await?;
    report.size_after = index.total_size();
    log(&report);
    Ok(report)
}

/// One eviction pass over a bucket other replicas share, run by whichever replica holds
/// the eviction lease (the others return at once). It decides on what every replica
/// recorded in K2V — blob sizes and last use, manifests, tags — keeping what any replica
/// pinned as well as `pinned_roots`; `policy_for` gets the bucket's total size and says
/// whether and how to evict. The bucket's objects go first, then the shared records, then
/// this replica's own; the other replicas find the records gone, or a record whose blob
/// is gone, which reads as a miss.
pub async fn evict_shared(
    store: &dyn BlobStore,
    index: &MetaIndex,
    shared: &Arc<Shared>,
    pinned_roots: &HashSet<Digest>,
    policy_for: impl FnOnce(u64) -> Option<Policy>,
) -> Result<Report, StoreError> {
    index.flush_touches().await?;
    let Some(_lease) = shared.lead().await else {
        return Ok(Report::default());
    };
    let snapshot = shared.snapshot().await?;
    let total: u64 = snapshot.blobs.values().map(|b| b.size).sum();
    let Some(policy) = policy_for(total) else {
        return Ok(Report {
            size_after: total,
            ..Report::default()
        });
    };
    let mut pinned = shared.pins().await?;
    pinned.extend(pinned_roots.iter().cloned());
    let doomed = plan(&snapshot, &policy, &pinned, unix_now());
    let mut report = delete_blobs(store, &snapshot, &doomed).await?;
    let gone: HashSet<Digest> = doomed.iter().cloned().collect();
    let tags: Vec<_> = snapshot
        .tags
        .iter()
        .filter(|(_, d)| gone.contains(d))
        .map(|(t, _)| t.clone())
        .collect();
    report.file_rows_removed = shared.forget(&gone, &tags).await?;
    index.forget(doomed, tags).await?;
    report.size_after = total.saturating_sub(report.bytes_freed);
    log(&report);
    Ok(report)
}

async fn delete_blobs(
    store: &dyn BlobStore,
    snapshot: &Snapshot,
    doomed: &[Digest],
) -> Result<Report, StoreError> {
    let mut report = Report::default();
    for digest in doomed {
        store.delete(digest).await?;
        report.blobs_removed += 1;
        report.bytes_freed += snapshot.blobs.get(digest).map_or(0, |b| b.size);
    }
    Ok(report)
}

fn log(report: &Report) {
    if report.blobs_removed > 0 {
        tracing::info!(
            target: "airlock::evict",
            blobs = report.blobs_removed,
            bytes = report.bytes_freed,
            file_rows = report.file_rows_removed,
            size_after = report.size_after,
            "evicted"
        );
    }
}

/// The references a manifest makes: config, layers, index children, subject.
pub fn manifest_refs(bytes: &[u8]) -> Vec<Digest> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    let mut refs = Vec::new();
    let mut push = |v: &serde_json::Value| {
        if let Some(d) = v
            .get("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| d.parse().ok())
        {
            refs.push(d);
        }
    };
    for key in ["config", "subject"] {
        if let Some(v) = value.get(key) {
            push(v);
        }
    }
    for key in ["layers", "manifests", "blobs"] {
        for v in value
            .get(key)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            push(v);
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{BlobRecord, ManifestRecord, Snapshot, TagKey};

    const DAY: u64 = 86_400;

    fn d(name: &str) -> Digest {
        Digest::of(name.as_bytes())
    }

    struct Builder(Snapshot);

    impl Builder {
        fn blob(mut self, name: &str, size: u64, last_used: u64) -> Self {
            self.0.blobs.insert(d(name), BlobRecord { size, last_used });
            self
        }
        fn manifest(mut self, name: &str, last_used: u64, refs: &[&str]) -> Self {
            self.0
                .blobs
                .insert(d(name), BlobRecord { size: 1, last_used });
            self.0.manifests.insert(
                d(name),
                ManifestRecord {
                    media_type: "m".into(),
                    size: 1,
                    refs: refs.iter().map(|r| d(r)).collect(),
                },
            );
            self.0.tags.push((
                TagKey {
                    proxy: "p".into(),
                    repo: name.into(),
                    tag: "t".into(),
                    variant: String::new(),
                },
                d(name),
            ));
            self
        }
    }

    fn policy(max_size: Option<u64>, unused_days: Option<u64>) -> Policy {
        Policy {
            max_size,
            unused_for: unused_days.map(|n| Duration::from_secs(n * DAY)),
            grace: Duration::from_secs(60),
        }
    }

    const NOW: u64 = 100 * DAY;

    #[test]
    fn retention_removes_unused_images_but_keeps_shared_layers() {
        let s = Builder(Snapshot::default())
            .blob("shared", 100, NOW - 30 * DAY)
            .blob("old-only", 100, NOW - 30 * DAY)
            .blob("new-only", 100, NOW - DAY)
            .manifest("old", NOW - 30 * DAY, &["shared", "old-only"])
            .manifest("new", NOW - DAY, &["shared", "new-only"])
            .0;
        let doomed = plan(&s, &policy(None, Some(7)), &HashSet::new(), NOW);
        let mut expected = vec![d("old"), d("old-only")];
        expected.sort();
        assert_eq!(
            doomed, expected,
            "the shared layer stays while the new image does"
        );
    }

    #[test]
    fn size_limit_evicts_least_recently_used_first() {
        let s = Builder(Snapshot::default())
            .blob("a1", 500, NOW - 3 * DAY)
            .blob("b1", 500, NOW - 2 * DAY)
            .blob("c1", 500, NOW - DAY)
            .manifest("a", NOW - 3 * DAY, &["a1"])
            .manifest("b", NOW - 2 * DAY, &["b1"])
            .manifest("c", NOW - DAY, &["c1"])
            .0;
        let doomed = plan(&s, &policy(Some(1100), None), &HashSet::new(), NOW);
        let mut expected = vec![d("a"), d("a1")];
        expected.sort();
        assert_eq!(doomed, expected);
    }

    #[test]
    fn pins_and_recent_use_are_never_evicted() {
        let s = Builder(Snapshot::default())
            .blob("p1", 1000, NOW - 90 * DAY)
            .blob("child1", 1000, NOW - 90 * DAY)
            .blob("r1", 1000, NOW - 10)
            .manifest("child", NOW - 90 * DAY, &["child1"])
            .manifest("pinned-index", NOW - 90 * DAY, &["child", "p1"])
            .manifest("recent", NOW - 10, &["r1"])
            .0;
        let pins: HashSet<Digest> = [d("pinned-index")].into();
        assert!(plan(&s, &policy(Some(1), Some(1)), &pins, NOW).is_empty());
    }

    #[test]
    fn index_children_live_as_long_as_their_index() {
        let s = Builder(Snapshot::default())
            .blob("l1", 10, NOW - 30 * DAY)
            .manifest("child", NOW - 30 * DAY, &["l1"])
            .manifest("index", NOW - DAY, &["child"])
            .0;
        assert!(plan(&s, &policy(None, Some(7)), &HashSet::new(), NOW).is_empty());
    }

    #[test]
    fn orphan_blobs_expire_too() {
        let s = Builder(Snapshot::default())
            .blob("orphan", 10, NOW - 30 * DAY)
            .blob("fresh", 10, NOW - DAY)
            .0;
        assert_eq!(
            plan(&s, &policy(None, Some(7)), &HashSet::new(), NOW),
            vec![d("orphan")]
        );
    }

    #[test]
    fn free_space_is_read_from_the_filesystem() {
        let dir = std::env::temp_dir();
        assert!(free_space(&dir).unwrap() > 0);
        assert!(free_space(&dir.join("airlock-no-such-dir")).is_err());
    }

    #[test]
    fn refs_of_manifests_and_indexes() {
        let m = serde_json::json!({
            "config": {"digest": d("c").to_string()},
            "layers": [{"digest": d("l1").to_string()}, {"digest": "not a digest"}],
            "manifests": [{"digest": d("m1").to_string()}],
        });
        assert_eq!(
            manifest_refs(m.to_string().as_bytes()),
            vec![d("c"), d("l1"), d("m1")]
        );
        assert!(manifest_refs(b"{not json").is_empty());
    }

    use proptest::prelude::*;

    /// Blobs `(size, last used)`; manifests `(last used, refs)` where a ref below the blob
    /// count is a blob, above it an earlier manifest (references are acyclic, as content
    /// addressing makes them), and past both a digest the store does not hold.
    type Shape = (Vec<(u64, u64)>, Vec<(u64, Vec<usize>)>);

    fn shapes() -> impl Strategy<Value = Shape> {
        (
            prop::collection::vec((1u64..100, 0u64..100), 0..24),
            prop::collection::vec((0u64..100, prop::collection::vec(0usize..48, 0..6)), 0..12),
        )
    }

    fn snapshot_of((blobs, manifests): &Shape, d: fn(&str) -> Digest) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for (i, (size, last_used)) in blobs.iter().enumerate() {
            snapshot.blobs.insert(
                d(&format!("b{i}")),
                BlobRecord {
                    size: *size,
                    last_used: *last_used,
                },
            );
        }
        for (i, (last_used, refs)) in manifests.iter().enumerate() {
            let refs = refs
                .iter()
                .map(|&r| {
                    if r < blobs.len() {
                        d(&format!("b{r}"))
                    } else if r - blobs.len() < i {
                        d(&format!("m{}", r - blobs.len()))
                    } else {
                        d(&format!("missing{r}"))
                    }
                })
                .collect();
            let name = d(&format!("m{i}"));
            snapshot.blobs.insert(
                name.clone(),
                BlobRecord {
                    size: 2,
                    last_used: *last_used,
                },
            );
            snapshot.manifests.insert(
                name,
                ManifestRecord {
                    media_type: "m".into(),
                    size: 2,
                    refs,
                },
            );
        }
        snapshot
    }

    /// Digests that share their first 224 bits: the plan must still tell them apart, and
    /// order them as their text orders, with only the last word of each to go on.
    fn sharing_a_prefix(name: &str) -> Digest {
        let hex = Digest::of(name.as_bytes()).hex()[56..].to_owned();
        Digest::sha256_hex(&format!("{}{hex}", "0".repeat(56))).unwrap()
    }

    /// Both plans on the store `shape` describes, its digests made by `d`.
    fn plans_agree(
        shape: &Shape,
        policy: &Policy,
        pins: &[usize],
        d: fn(&str) -> Digest,
    ) -> Result<(), TestCaseError> {
        let snapshot = snapshot_of(shape, d);
        let pinned: HashSet<Digest> = pins.iter().map(|i| d(&format!("m{i}"))).collect();
        prop_assert_eq!(
            plan(&snapshot, policy, &pinned, 100),
            walks::plan(&snapshot, policy, &pinned, 100)
        );
        Ok(())
    }

    fn policy_of(max_size: Option<u64>, unused_for: Option<u64>, grace: u64) -> Policy {
        Policy {
            max_size,
            unused_for: unused_for.map(Duration::from_secs),
            grace: Duration::from_secs(grace),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn the_refcounted_plan_agrees_with_a_walk_per_candidate(
            shape in shapes(),
            max_size in prop::option::of(0u64..1500),
            unused_for in prop::option::of(0u64..100),
            grace in 0u64..60,
            pins in prop::collection::vec(0usize..12, 0..3),
        ) {
            plans_agree(&shape, &policy_of(max_size, unused_for, grace), &pins, d)?;
        }

        #[test]
        fn the_plans_agree_when_digests_share_a_long_prefix(
            shape in shapes(),
            max_size in prop::option::of(0u64..1500),
            unused_for in prop::option::of(0u64..100),
            grace in 0u64..60,
            pins in prop::collection::vec(0usize..12, 0..3),
        ) {
            let policy = policy_of(max_size, unused_for, grace);
            plans_agree(&shape, &policy, &pins, sharing_a_prefix)?;
        }
    }
}
