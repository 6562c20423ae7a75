//! The eviction plan as it was first written, kept as the reference the refcounted
//! [`super::plan`] must agree with (the property tests) and is measured against
//! (`bench/store`): after every candidate it drops, it walks the whole closure again, so
//! a pass costs O(candidates × store).

use std::collections::HashSet;

use airlock_types::Digest;

use super::Policy;
use crate::index::Snapshot;

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
