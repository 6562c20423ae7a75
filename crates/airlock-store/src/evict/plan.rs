//! The eviction plan over a snapshot, in time linear in the store: digests are numbered
//! once, references become lists of numbers, and the closure of what stays is kept with
//! reference counts, so dropping a unit costs what it frees rather than a walk of the whole
//! store (a million blobs plan in about a second; `bench/store`).

use std::collections::{HashMap, HashSet};

use airlock_types::Digest;

use super::Policy;
use crate::index::{BlobRecord, Snapshot};

/// The snapshot as a graph of numbered digests: the store's blobs, the manifests, and
/// digests manifests name that the store does not hold (size 0, never used).
struct Graph<'a> {
    digests: Vec<&'a Digest>,
    size: Vec<u64>,
    last_used: Vec<u64>,
    /// Held in the store (has a blob record).
    held: Vec<bool>,
    /// A manifest's distinct references; empty for anything else.
    refs: Vec<Vec<u32>>,
    manifest: Vec<bool>,
    ids: HashMap<&'a Digest, u32>,
}

impl<'a> Graph<'a> {
    fn new(snapshot: &'a Snapshot) -> Self {
        let capacity = snapshot.blobs.len() + snapshot.manifests.len();
        let mut graph = Self {
            digests: Vec::with_capacity(capacity),
            size: Vec::with_capacity(capacity),
            last_used: Vec::with_capacity(capacity),
            held: Vec::with_capacity(capacity),
            refs: Vec::with_capacity(capacity),
            manifest: Vec::with_capacity(capacity),
            ids: HashMap::with_capacity(capacity),
        };
        for (digest, record) in &snapshot.blobs {
            graph.push(digest, Some(record));
        }
        // A digest the store does not hold (a manifest without a blob record, a reference
        // to something never fetched) gets a number too.
        let id = |graph: &mut Self, digest: &'a Digest| match graph.ids.get(digest) {
            Some(&n) => n,
            None => graph.push(digest, snapshot.blobs.get(digest)),
        };
        for (digest, manifest) in &snapshot.manifests {
            let n = id(&mut graph, digest) as usize;
            let mut refs: Vec<u32> = manifest.refs.iter().map(|r| id(&mut graph, r)).collect();
            refs.sort_unstable();
            refs.dedup();
            graph.refs[n] = refs;
            graph.manifest[n] = true;
        }
        graph
    }

    fn push(&mut self, digest: &'a Digest, record: Option<&BlobRecord>) -> u32 {
        let n = u32::try_from(self.digests.len()).expect("fewer than 2^32 digests");
        self.ids.insert(digest, n);
        self.digests.push(digest);
        self.size.push(record.map_or(0, |r| r.size));
        self.last_used.push(record.map_or(0, |r| r.last_used));
        self.held.push(record.is_some());
        self.refs.push(Vec::new());
        self.manifest.push(false);
        n
    }

    fn len(&self) -> usize {
        self.digests.len()
    }

    /// Marks everything reachable from `roots`.
    fn closure(&self, roots: impl IntoIterator<Item = u32>) -> Vec<bool> {
        let mut seen = vec![false; self.len()];
        let mut stack: Vec<u32> = roots.into_iter().collect();
        while let Some(n) = stack.pop() {
            let n = n as usize;
            if !std::mem::replace(&mut seen[n], true) {
                stack.extend(&self.refs[n]);
            }
        }
        seen
    }
}

/// The closure of the kept units with reference counts: a digest's count is 1 when it is a
/// kept unit plus one per live manifest that references it. Content addressing keeps
/// references acyclic, so a count reaches 0 exactly when the digest leaves the closure.
struct Live<'g, 'a> {
    graph: &'g Graph<'a>,
    counts: Vec<u32>,
    /// Bytes of every digest in the closure.
    size: u64,
}

impl<'g, 'a> Live<'g, 'a> {
    fn new(graph: &'g Graph<'a>, kept: &[u32]) -> Self {
        let mut counts = vec![0u32; graph.len()];
        let mut seen = vec![false; graph.len()];
        let mut size = 0;
        let mut stack: Vec<u32> = Vec::with_capacity(kept.len());
        for &unit in kept {
            counts[unit as usize] += 1;
            stack.push(unit);
        }
        // Each digest's references are counted once, when it is first reached.
        while let Some(n) = stack.pop() {
            let n = n as usize;
            if std::mem::replace(&mut seen[n], true) {
                continue;
            }
            size += graph.size[n];
            for &child in &graph.refs[n] {
                counts[child as usize] += 1;
                stack.push(child);
            }
        }
        Self {
            graph,
            counts,
            size,
        }
    }

    fn holds(&self, n: usize) -> bool {
        self.counts[n] > 0
    }

    /// `unit` is no longer kept: what only it held leaves the closure.
    fn drop_unit(&mut self, unit: u32) {
        let mut stack = vec![unit];
        while let Some(n) = stack.pop() {
            let n = n as usize;
            self.counts[n] -= 1;
            if self.counts[n] == 0 {
                self.size -= self.graph.size[n];
                stack.extend(&self.graph.refs[n]);
            }
        }
    }
}

/// Decides what to delete. Pure: the tests drive it with hand-made snapshots.
pub fn plan(
    snapshot: &Snapshot,
    policy: &Policy,
    pinned_roots: &HashSet<Digest>,
    now: u64,
) -> Vec<Digest> {
    let graph = Graph::new(snapshot);
    let pinned = graph.closure(
        pinned_roots
            .iter()
            .filter_map(|d| graph.ids.get(d).copied()),
    );
    let grace = policy.grace.as_secs();
    let protected = |n: usize| pinned[n] || now.saturating_sub(graph.last_used[n]) < grace;
    let expired = |n: usize| {
        policy
            .unused_for
            .is_some_and(|keep| now.saturating_sub(graph.last_used[n]) >= keep.as_secs())
    };
    let mut referenced = vec![false; graph.len()];
    for refs in &graph.refs {
        for &r in refs {
            referenced[r as usize] = true;
        }
    }

    // Units of eviction: every manifest, and every blob no manifest references (orphans,
    // e.g. a layer pulled by digest alone). Index children are units too: their own last
    // use decides, and an index that stays keeps them alive through its references.
    let kept: Vec<u32> = (0..graph.len())
        .filter(|&n| graph.manifest[n] || (graph.held[n] && !referenced[n]))
        .filter(|&n| protected(n) || !expired(n))
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .collect();
    let mut live = Live::new(&graph, &kept);
    if let Some(max) = policy.max_size {
        // Least recently used first; the digest breaks ties so a plan is reproducible.
        let mut candidates: Vec<(u64, &Digest, u32)> = kept
            .iter()
            .filter(|&&n| !protected(n as usize))
            .map(|&n| (graph.last_used[n as usize], graph.digests[n as usize], n))
            .collect();
        candidates.sort_unstable();
        for (_, _, candidate) in candidates {
            if live.size <= max {
                break;
            }
            live.drop_unit(candidate);
        }
    }
    let mut doomed: Vec<Digest> = (0..graph.len())
        .filter(|&n| graph.held[n] && !live.holds(n) && !protected(n))
        .map(|n| graph.digests[n].clone())
        .collect();
    doomed.sort();
    doomed
}
