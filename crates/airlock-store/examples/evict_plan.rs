//! Eviction planning at a real site's scale (issue 18, `bench/store`): a synthetic snapshot
//! of N manifests, each with a config and layers (a third of the layers shared with another
//! image), and as many orphan blobs; `evict::plan` must free 10% under `max_size`. Beside
//! it, the plan as first written (`evict::walks`, a closure walk per candidate dropped), up
//! to `WALKS_UP_TO` manifests (it grows with the square of the store). Prints one row per
//! size; `bench/store/run.sh` runs it in release mode. Beside the plan's wall time, the
//! time it spent on a CPU (Linux): on a machine shared with builds the two differ by
//! however long the plan waited for a core.
//!
//! `cargo run --release -p airlock-store --example evict_plan -- 1000 10000 100000`

use std::collections::HashSet;
use std::time::{Duration, Instant};

use airlock_store::evict::{Policy, plan, walks};
use airlock_store::{BlobRecord, ManifestRecord, Snapshot};
use airlock_types::Digest;

/// Above this many manifests the first plan is not run (minutes, then hours).
const WALKS_UP_TO: usize = 2_000;

/// Layers per image.
const LAYERS: usize = 8;

fn digest(kind: &str, n: usize) -> Digest {
    Digest::of(format!("{kind}{n}").as_bytes())
}

/// `manifests` images of `LAYERS` layers and a config, every third layer shared with the
/// previous image, plus `manifests` orphan blobs; last use spread over 30 days.
fn snapshot(manifests: usize) -> (Snapshot, u64) {
    let mut snapshot = Snapshot::default();
    let mut total = 0;
    let mut blob = |snapshot: &mut Snapshot, d: Digest, size: u64, last_used: u64| {
        if snapshot
            .blobs
            .insert(d, BlobRecord { size, last_used })
            .is_none()
        {
            total += size;
        }
    };
    for m in 0..manifests {
        let used = (m as u64 * 7919) % (30 * 86_400);
        let mut refs = vec![digest("config", m)];
        blob(&mut snapshot, digest("config", m), 1_000, used);
        for l in 0..LAYERS {
            let owner = if l % 3 == 0 && m > 0 { m - 1 } else { m };
            let layer = digest("layer", owner * LAYERS + l);
            blob(&mut snapshot, layer.clone(), 1_000_000 + l as u64, used);
            refs.push(layer);
        }
        blob(&mut snapshot, digest("manifest", m), 2_000, used);
        snapshot.manifests.insert(
            digest("manifest", m),
            ManifestRecord {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 2_000,
                refs,
            },
        );
        blob(&mut snapshot, digest("orphan", m), 50_000, used);
    }
    (snapshot, total)
}

/// Time this thread has spent on a CPU, from the scheduler's statistics (Linux).
fn on_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are numbers of manifests"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 2_000, 10_000, 100_000]
    } else {
        sizes
    };
    println!(
        "{:>10} {:>10} {:>10} {:>8} {:>10} {:>10} {:>12} {:>10}",
        "manifests", "blobs", "store GB", "freed %", "plan s", "cpu s", "first plan s", "ratio"
    );
    for manifests in sizes {
        let (snapshot, total) = snapshot(manifests);
        let policy = Policy {
            max_size: Some(total / 10 * 9),
            unused_for: None,
            grace: Duration::from_secs(600),
        };
        let cpu_before = on_cpu();
        let started = Instant::now();
        let doomed = plan(&snapshot, &policy, &HashSet::new(), 30 * 86_400);
        let took = started.elapsed();
        let cpu = match (cpu_before, on_cpu()) {
            (Some(before), Some(after)) => {
                format!("{:.3}", after.saturating_sub(before).as_secs_f64())
            }
            _ => "-".to_owned(),
        };
        let freed: u64 = doomed
            .iter()
            .map(|d| snapshot.blobs.get(d).map_or(0, |b| b.size))
            .sum();
        let (first, ratio) = if manifests <= WALKS_UP_TO {
            let started = Instant::now();
            let same = walks::plan(&snapshot, &policy, &HashSet::new(), 30 * 86_400);
            let first = started.elapsed().as_secs_f64();
            assert_eq!(same, doomed, "both plans delete the same blobs");
            (
                format!("{first:.3}"),
                format!("{:.0}x", first / took.as_secs_f64()),
            )
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        println!(
            "{manifests:>10} {:>10} {:>10.1} {:>8.1} {:>10.3} {cpu:>10} {first:>12} {ratio:>10}",
            snapshot.blobs.len(),
            total as f64 / 1e9,
            freed as f64 * 100.0 / total as f64,
            took.as_secs_f64(),
        );
        assert!(freed * 10 >= total, "the plan must free at least 10%");
    }
}
