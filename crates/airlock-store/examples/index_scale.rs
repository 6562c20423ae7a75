//! The metadata index at a real site's scale (issue 18, `bench/store`): N blobs, N/10
//! manifests (a config and 8 layers each) with a tag each, and N/10 package files, written
//! in batches; then the index file's size, the time to open it again (what `airlock serve`
//! does at start: every blob's size is summed), and the latency of the lookups a cache hit
//! makes (tag → manifest record → blob touch) from 8 concurrent tasks, p50 and p99; and the
//! time `MetaIndex::snapshot` takes to read every blob, manifest and tag record, which an
//! eviction pass does before it plans (`evict_plan` times the plan alone).
//!
//! `cargo run --release -p airlock-store --example index_scale -- 1000 1000000`

use std::time::{Duration, Instant};

use airlock_store::{Batch, FileRecord, ManifestRecord, MetaIndex, TagKey, TagRecord};
use airlock_types::Digest;

/// Records written per transaction while filling.
const BATCH: usize = 50_000;
/// Concurrent lookup tasks, and hits each makes.
const TASKS: usize = 8;
const HITS: usize = 5_000;

fn digest(kind: &str, n: usize) -> Digest {
    Digest::of(format!("{kind}{n}").as_bytes())
}

fn tag(m: usize) -> TagKey {
    TagKey {
        proxy: "hub".into(),
        repo: format!("team{}/app{m}", m % 97),
        tag: "1.0".into(),
        variant: String::new(),
    }
}

/// Fills `index` with `blobs` blobs, a tenth of them manifests of 8 layers and a config,
/// tagged, and a tenth as many package files.
async fn fill(index: &MetaIndex, blobs: usize) {
    let manifests = (blobs / 10).max(1);
    let mut batch = Batch::default();
    for n in 0..blobs {
        batch
            .blobs
            .push((digest("blob", n), 1_000 + n as u64 % 5_000_000));
        if n < manifests {
            let refs = (0..9)
                .map(|l| digest("blob", (n * 9 + l) % blobs))
                .collect();
            batch.manifests.push((
                digest("blob", n),
                ManifestRecord {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    size: 2_000,
                    refs,
                },
            ));
            batch.tags.push((
                tag(n),
                TagRecord {
                    digest: digest("blob", n),
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    checked_at: 0,
                },
            ));
            batch.files.push((
                "pypi".into(),
                format!("packages/p{n}/p{n}-1.0-py3-none-any.whl"),
                FileRecord {
                    digest: Some(digest("blob", n)),
                    content_type: None,
                    etag: None,
                    last_modified: None,
                    checked_at: 0,
                },
            ));
        }
        if batch.blobs.len() == BATCH {
            index.apply(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    index.apply(batch).await.unwrap();
}

/// The lookups of a cache hit, `HITS` times from each of `TASKS` tasks: latencies sorted.
async fn hits(index: &MetaIndex, manifests: usize) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let index = index.clone();
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::with_capacity(HITS);
            for h in 0..HITS {
                let m = (t * 7_919 + h * 104_729) % manifests;
                let started = Instant::now();
                let record = index.tag(&tag(m)).await.unwrap().expect("tagged");
                let manifest = index.manifest(&record.digest).await.unwrap().expect("held");
                index.touch(&manifest.refs[0], 1);
                took.push(started.elapsed());
            }
            took
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    all
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[at].as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are numbers of blobs"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 1_000_000]
    } else {
        sizes
    };
    println!(
        "{:>10} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "blobs",
        "manifests",
        "fill s",
        "index MiB",
        "open s",
        "hit p50 us",
        "hit p99 us",
        "snapshot s"
    );
    for blobs in sizes {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let started = Instant::now();
        {
            let index = MetaIndex::open(&path).unwrap();
            fill(&index, blobs).await;
        }
        let fill = started.elapsed().as_secs_f64();
        let size = std::fs::metadata(&path).unwrap().len() as f64 / f64::from(1 << 20);
        let started = Instant::now();
        let index = MetaIndex::open(&path).unwrap();
        let open = started.elapsed().as_secs_f64();
        let (tags, manifests) = index.counts().await.unwrap();
        assert_eq!(
            (tags, manifests),
            ((blobs / 10).max(1) as u64, (blobs / 10).max(1) as u64)
        );
        let latencies = hits(&index, (blobs / 10).max(1)).await;
        let started = Instant::now();
        let snapshot = index.snapshot().await.unwrap();
        let read = started.elapsed().as_secs_f64();
        assert_eq!(snapshot.blobs.len(), blobs);
        println!(
            "{blobs:>10} {:>10} {fill:>8.1} {size:>10.1} {open:>10.3} {:>10.1} {:>10.1} {read:>10.3}",
            (blobs / 10).max(1),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
        );
    }
}
