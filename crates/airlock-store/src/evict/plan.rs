//! The eviction plan over a snapshot, in time linear in the store: digests are numbered
//! once, references become lists of numbers, and the closure of what stays is kept with
//! reference counts, so dropping a unit costs what it frees rather than a walk of the whole
//! store (a million blobs plan in about half a second; `bench/store`).

use std::collections::HashSet;

use airlock_types::Digest;

use super::Policy;
use crate::index::{BlobRecord, Snapshot};

/// A digest's 256 bits, read once from its hex. Numbering sorts and compares these inline
/// instead of following each `Digest` to the text it keeps on the heap, a cache miss per
/// comparison at a million blobs.
///
/// The hex of a [`Digest`] is always 64 lowercase digits, so a key is the digest itself:
/// keys are equal exactly when digests are, and order as their text does.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key([u64; 4]);

impl Key {
    fn of(digest: &Digest) -> Self {
        let mut words = [0; 4];
        for (word, hex) in words
            .iter_mut()
            .zip(digest.hex().as_bytes().chunks_exact(16))
        {
            let (high, low) = hex.split_at(8);
            *word = u64::from(hex_value(high)) << 32 | u64::from(hex_value(low));
        }
        Self(words)
    }
}

/// The value of 8 lowercase hex digits, computed on all eight at once in one register:
/// a digit at a time makes a chain of dependent steps long enough that the processor stops
/// overlapping the cache misses of reading the next digests (3× slower at a million).
fn hex_value(hex: &[u8]) -> u32 {
    let text = u64::from_be_bytes(hex.try_into().expect("8 hex digits"));
    // '0'..='9' are 0x30..=0x39 and 'a'..='f' are 0x61..=0x66: each digit's value is its
    // low nibble, plus 9 for a letter (bit 6 set). No byte carries into the next.
    let digits = (text & 0x0f0f_0f0f_0f0f_0f0f) + ((text >> 6) & 0x0101_0101_0101_0101) * 9;
    // Pack the eight nibbles: pairs into bytes, bytes into 16-bit halves, halves into 32.
    let pairs = (digits | digits >> 4) & 0x00ff_00ff_00ff_00ff;
    let quads = (pairs | pairs >> 8) & 0x0000_ffff_0000_ffff;
    (quads | quads >> 16) as u32
}

/// Every place a digest occurs in what a plan reads, in one list: the store's blobs, then
/// the manifests' references (each manifest's together), then the manifests, then the
/// pinned roots. Where an occurrence sits in the list says what it is ([`Occurrence`]).
struct Occurrences<'a> {
    digests: Vec<&'a Digest>,
    /// The records of the blobs, the first `records.len()` occurrences.
    records: Vec<BlobRecord>,
    /// Where each manifest's references start and end, counted from the first reference.
    spans: Vec<(u32, u32)>,
    references: usize,
}

/// What an occurrence is, with its position among its kind.
enum Occurrence {
    Blob(usize),
    Manifest(usize),
    Reference(usize),
    Pin,
}

impl<'a> Occurrences<'a> {
    fn new(snapshot: &'a Snapshot, pinned_roots: &'a HashSet<Digest>) -> Self {
        let references: usize = snapshot.manifests.values().map(|m| m.refs.len()).sum();
        let total =
            snapshot.blobs.len() + snapshot.manifests.len() + references + pinned_roots.len();
        assert!(u32::try_from(total).is_ok(), "fewer than 2^32 digests");
        let mut digests = Vec::with_capacity(total);
        let mut records = Vec::with_capacity(snapshot.blobs.len());
        for (digest, record) in &snapshot.blobs {
            digests.push(digest);
            records.push(*record);
        }
        let mut manifests = Vec::with_capacity(snapshot.manifests.len());
        let mut spans = Vec::with_capacity(snapshot.manifests.len());
        let mut end = 0;
        for (digest, manifest) in &snapshot.manifests {
            manifests.push(digest);
            digests.extend(&manifest.refs);
            let start = end;
            end += manifest.refs.len() as u32;
            spans.push((start, end));
        }
        digests.extend(manifests);
        digests.extend(pinned_roots);
        Self {
            digests,
            records,
            spans,
            references,
        }
    }

    fn kind(&self, i: usize) -> Occurrence {
        let references_from = self.records.len();
        let manifests_from = references_from + self.references;
        let pins_from = manifests_from + self.spans.len();
        if i < references_from {
            Occurrence::Blob(i)
        } else if i < manifests_from {
            Occurrence::Reference(i - references_from)
        } else if i < pins_from {
            Occurrence::Manifest(i - manifests_from)
        } else {
            Occurrence::Pin
        }
    }

    /// The node of the digest whose first occurrence in sorted order is `first`; none
    /// for a pinned root the store does not know (a pin sorts after anything else).
    fn node(&self, first: usize) -> Option<Node> {
        match self.kind(first) {
            Occurrence::Pin => None,
            Occurrence::Blob(i) => Some(Node {
                size: self.records[i].size,
                last_used: self.records[i].last_used,
                held: true,
                ..Node::default()
            }),
            Occurrence::Manifest(_) | Occurrence::Reference(_) => Some(Node::default()),
        }
    }

    /// Every occurrence's key and position, sorted: the occurrences of one digest are
    /// adjacent, a blob first if the store holds it (blobs come first in the list) and a
    /// pinned root last, and digests in order.
    fn sorted(&self) -> Vec<(Key, u32)> {
        let mut keys = Vec::with_capacity(self.digests.len());
        for (batch, digests) in self.digests.chunks(KEY_BATCH).enumerate() {
            warm(digests);
            let first = (batch * KEY_BATCH) as u32;
            keys.extend(digests.iter().zip(first..).map(|(d, i)| (Key::of(d), i)));
        }
        keys.sort_unstable();
        keys
    }
}

/// Digests [`warm`]ed, then read, at a time: their text (about 32 KiB) stays in cache in
/// between. 256 measured best; 4,096 is already slower.
const KEY_BATCH: usize = 256;

/// Reads a byte of each cache line of the digests' text and does nothing else with it, so
/// that the processor keeps many of these reads in flight at once: each is a cache miss
/// (the text of a million digests is scattered over the heap), and parsing a key between
/// two of them leaves room for only a few. Reading a key after this is 3–4× faster.
fn warm(digests: &[&Digest]) {
    let mut bytes = 0u8;
    for digest in digests {
        let hex = digest.hex().as_bytes();
        bytes ^= hex[0] ^ hex[hex.len() - 1];
    }
    // Keeps the reads: their result is otherwise unused.
    std::hint::black_box(bytes);
}

/// One digest of the graph.
#[derive(Clone, Copy, Default)]
struct Node {
    size: u64,
    last_used: u64,
    /// A manifest's distinct references are `edges[refs.0..refs.1]`; empty otherwise.
    refs: (u32, u32),
    /// Held in the store (has a blob record).
    held: bool,
    manifest: bool,
}

/// The snapshot as a graph of numbered digests: the store's blobs, the manifests, and
/// digests manifests name that the store does not hold (size 0, never used).
///
/// Digests are numbered by sorting every occurrence of one (as a blob, a manifest, a
/// reference, a pinned root) rather than by a map from digest to number: a million map
/// operations are a million cache misses (a map keyed by [`Key`] with a one-multiply hash
/// still took a second at a million blobs), while a sort walks memory in order. So numbers
/// follow the digests' order, which makes a plan's list come out sorted and lets numbers
/// break ties between candidates.
struct Graph<'a> {
    digests: Vec<&'a Digest>,
    nodes: Vec<Node>,
    /// Every manifest's distinct references, one after the other.
    edges: Vec<u32>,
    /// The pinned roots the graph holds.
    pinned: Vec<u32>,
}

impl<'a> Graph<'a> {
    fn new(snapshot: &'a Snapshot, pinned_roots: &'a HashSet<Digest>) -> Self {
        let occurrences = Occurrences::new(snapshot, pinned_roots);
        let capacity = snapshot.blobs.len() + snapshot.manifests.len();
        let mut graph = Self {
            digests: Vec::with_capacity(capacity),
            nodes: Vec::with_capacity(capacity),
            edges: Vec::with_capacity(occurrences.references),
            pinned: Vec::new(),
        };
        let mut manifests = vec![0; occurrences.spans.len()];
        let mut references = vec![0; occurrences.references];
        for run in occurrences.sorted().chunk_by(|a, b| a.0 == b.0) {
            let first = run[0].1 as usize;
            let Some(node) = occurrences.node(first) else {
                continue;
            };
            let n = graph.push(occurrences.digests[first], node);
            for &(_, i) in run {
                match occurrences.kind(i as usize) {
                    Occurrence::Blob(_) => {}
                    Occurrence::Manifest(k) => manifests[k] = n,
                    Occurrence::Reference(j) => references[j] = n,
                    Occurrence::Pin => graph.pinned.push(n),
                }
            }
        }
        graph.link(&manifests, &occurrences.spans, &references);
        graph
    }

    fn push(&mut self, digest: &'a Digest, node: Node) -> u32 {
        let n = self.nodes.len() as u32;
        self.digests.push(digest);
        self.nodes.push(node);
        n
    }

    /// Gives each manifest (numbered `manifests[k]`) its distinct references, which are
    /// `references[spans[k]]`.
    fn link(&mut self, manifests: &[u32], spans: &[(u32, u32)], references: &[u32]) {
        let mut refs = Vec::new();
        for (&n, &(start, end)) in manifests.iter().zip(spans) {
            refs.clear();
            refs.extend_from_slice(&references[start as usize..end as usize]);
            refs.sort_unstable();
            refs.dedup();
            let start = self.edges.len() as u32;
            self.edges.extend_from_slice(&refs);
            let node = &mut self.nodes[n as usize];
            node.refs = (start, self.edges.len() as u32);
            node.manifest = true;
        }
    }

    fn len(&self) -> usize {
        self.nodes.len()
    }

    /// A manifest's distinct references.
    fn refs(&self, n: usize) -> &[u32] {
        let (start, end) = self.nodes[n].refs;
        &self.edges[start as usize..end as usize]
    }

    /// Marks everything reachable from `roots`.
    fn closure(&self, roots: &[u32]) -> Vec<bool> {
        let mut seen = vec![false; self.len()];
        let mut stack = roots.to_vec();
        while let Some(n) = stack.pop() {
            let n = n as usize;
            if !std::mem::replace(&mut seen[n], true) {
                stack.extend(self.refs(n));
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
    /// `drop_unit`'s work list, kept between calls.
    stack: Vec<u32>,
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
            size += graph.nodes[n].size;
            for &child in graph.refs(n) {
                counts[child as usize] += 1;
                stack.push(child);
            }
        }
        Self {
            graph,
            counts,
            size,
            stack,
        }
    }

    fn holds(&self, n: usize) -> bool {
        self.counts[n] > 0
    }

    /// `unit` is no longer kept: what only it held leaves the closure.
    fn drop_unit(&mut self, unit: u32) {
        self.stack.push(unit);
        while let Some(n) = self.stack.pop() {
            let n = n as usize;
            self.counts[n] -= 1;
            if self.counts[n] == 0 {
                self.size -= self.graph.nodes[n].size;
                self.stack.extend(self.graph.refs(n));
            }
        }
    }
}

/// Decides what to delete, sorted. Pure: the tests drive it with hand-made snapshots.
pub fn plan(
    snapshot: &Snapshot,
    policy: &Policy,
    pinned_roots: &HashSet<Digest>,
    now: u64,
) -> Vec<Digest> {
    let graph = Graph::new(snapshot, pinned_roots);
    let pinned = graph.closure(&graph.pinned);
    let grace = policy.grace.as_secs();
    let last_used = |n: usize| graph.nodes[n].last_used;
    let protected = |n: usize| pinned[n] || now.saturating_sub(last_used(n)) < grace;
    let expired = |n: usize| {
        policy
            .unused_for
            .is_some_and(|keep| now.saturating_sub(last_used(n)) >= keep.as_secs())
    };
    let mut referenced = vec![false; graph.len()];
    for &r in &graph.edges {
        referenced[r as usize] = true;
    }

    // Units of eviction: every manifest, and every blob no manifest references (orphans,
    // e.g. a layer pulled by digest alone). Index children are units too: their own last
    // use decides, and an index that stays keeps them alive through its references.
    let kept: Vec<u32> = (0..graph.len())
        .filter(|&n| graph.nodes[n].manifest || (graph.nodes[n].held && !referenced[n]))
        .filter(|&n| protected(n) || !expired(n))
        .map(|n| n as u32)
        .collect();
    let mut live = Live::new(&graph, &kept);
    if let Some(max) = policy.max_size {
        // Least recently used first; the digest (numbers follow digests' order) breaks
        // ties so a plan is reproducible.
        let mut candidates: Vec<(u64, u32)> = kept
            .iter()
            .filter(|&&n| !protected(n as usize))
            .map(|&n| (last_used(n as usize), n))
            .collect();
        candidates.sort_unstable();
        for (_, candidate) in candidates {
            if live.size <= max {
                break;
            }
            live.drop_unit(candidate);
        }
    }
    // In the digests' order, as numbers are.
    (0..graph.len())
        .filter(|&n| graph.nodes[n].held && !live.holds(n) && !protected(n))
        .map(|n| graph.digests[n].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_every_hex_digit() {
        let digest = Digest::sha256_hex(&"0123456789abcdef".repeat(4)).unwrap();
        assert_eq!(Key::of(&digest).0, [0x0123_4567_89ab_cdef; 4]);
    }

    #[test]
    fn keys_are_equal_and_ordered_as_digests_are() {
        // Every digit in every place of a digest that is otherwise all eights, and some
        // unrelated digests: neighbours that differ in one digit anywhere.
        let mut digests: Vec<Digest> = (0u8..32).map(|i| Digest::of(&[i])).collect();
        for place in 0..64 {
            for digit in "0123456789abcdef".chars() {
                let mut hex = "8".repeat(64);
                hex.replace_range(place..=place, &digit.to_string());
                digests.push(Digest::sha256_hex(&hex).unwrap());
            }
        }
        let mut by_text = digests.clone();
        by_text.sort();
        let mut by_key = digests;
        by_key.sort_by_key(Key::of);
        assert_eq!(by_key, by_text);
        by_text.dedup();
        by_key.dedup_by_key(|d| Key::of(d));
        assert_eq!(by_key, by_text, "equal keys are equal digests");
    }
}
