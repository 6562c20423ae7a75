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
use std::time::Duration;

use airlock_types::Digest;

use crate::index::{MetaIndex, Snapshot, unix_now};
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

/// Everything reachable from `roots` through manifest references.
fn closure(roots: impl IntoIterator<Item = Digest>, snapshot: &Snapshot) -> HashSet<Digest> {
    let mut seen = HashSet::new();
    let mut stack: Vec<Digest> = roots.into_iter().collect();
    while let Some(digest) = stack.pop() {
        if !seen.insert(digest.clone()) {
            continue;
        }
        if let Some(manifest) = snapshot.manifests.get(&digest) {
            stack.extend(manifest.refs.iter().cloned());
        }
    }
    seen
}

/// Decides what to delete. Pure: the tests drive it with hand-made snapshots.
pub fn plan(
    snapshot: &Snapshot,
    policy: &Policy,
    pinned_roots: &HashSet<Digest>,
    now: u64,
) -> Vec<Digest> {
    let last_used = |d: &Digest| snapshot.blobs.get(d).map_or(0, |b| b.last_used);
    let size_of = |d: &Digest| snapshot.blobs.get(d).map_or(0, |b| b.size);
    let pinned = closure(pinned_roots.iter().cloned(), snapshot);
    let protected = |d: &Digest| {
        pinned.contains(d) || now.saturating_sub(last_used(d)) < policy.grace.as_secs()
    };
    let referenced: HashSet<&Digest> = snapshot
        .manifests
        .values()
        .flat_map(|m| m.refs.iter())
        .collect();
    let expired = |d: &Digest| {
        policy
            .unused_for
            .is_some_and(|keep| now.saturating_sub(last_used(d)) >= keep.as_secs())
    };

    // Units of eviction: every manifest, and every blob no manifest references (orphans,
    // e.g. a layer pulled by digest alone). Index children are units too: their own last
    // use decides, and an index that stays keeps them alive through its references.
    let mut units: Vec<Digest> = snapshot.manifests.keys().cloned().collect();
    units.extend(
        snapshot
            .blobs
            .keys()
            .filter(|d| !snapshot.manifests.contains_key(*d) && !referenced.contains(d))
            .cloned(),
    );
    let mut kept: HashSet<Digest> = units
        .iter()
        .filter(|d| protected(d) || !expired(d))
        .cloned()
        .collect();

    let live_size = |kept: &HashSet<Digest>| {
        closure(kept.iter().cloned(), snapshot)
            .iter()
            .map(size_of)
            .sum::<u64>()
    };
    if let Some(max) = policy.max_size {
        let mut candidates: Vec<Digest> = kept.iter().filter(|d| !protected(d)).cloned().collect();
        candidates.sort_by_key(|d| (last_used(d), d.clone()));
        let mut size = live_size(&kept);
        for candidate in candidates {
            if size <= max {
                break;
            }
            kept.remove(&candidate);
            size = live_size(&kept);
        }
    }
    let live = closure(kept.iter().cloned(), snapshot);
    let mut doomed: Vec<Digest> = snapshot
        .blobs
        .keys()
        .filter(|d| !live.contains(*d) && !protected(d))
        .cloned()
        .collect();
    doomed.sort();
    doomed
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
    let mut report = Report::default();
    for digest in &doomed {
        store.delete(digest).await?;
        report.blobs_removed += 1;
        report.bytes_freed += snapshot.blobs.get(digest).map_or(0, |b| b.size);
    }
    let gone: HashSet<&Digest> = doomed.iter().collect();
    let tags = snapshot
        .tags
        .iter()
        .filter(|(_, d)| gone.contains(d))
        .map(|(t, _)| t.clone())
        .collect();
    report.file_rows_removed = index.forget(doomed.clone(), tags).await?;
    report.size_after = index.total_size();
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
    Ok(report)
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
    use crate::index::{BlobRecord, ManifestRecord, TagKey};

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
}
