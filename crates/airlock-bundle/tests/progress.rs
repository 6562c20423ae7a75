//! Progress reporting of the passes over a bundle's bytes: what `verify` and `import`
//! read and what the writer writes, counted for the CLI to draw.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use airlock_bundle::testing::carry_image;
use airlock_bundle::{Bundle, BundleWriter, Entry, Progress, verify};
use airlock_testkit::Image;
use airlock_types::Digest;

/// Everything a pass reported.
#[derive(Default)]
struct Recorded {
    starts: Vec<Option<u64>>,
    blobs: Vec<(Digest, u64)>,
    /// The running total after each advance.
    done: Vec<u64>,
}

#[derive(Default)]
struct Recorder(Mutex<Recorded>);

impl Progress for Recorder {
    fn start(&self, total: Option<u64>) {
        self.0.lock().unwrap().starts.push(total);
    }
    fn blob(&self, digest: &Digest, size: u64) {
        self.0.lock().unwrap().blobs.push((digest.clone(), size));
    }
    fn advance(&self, bytes: u64) {
        let mut recorded = self.0.lock().unwrap();
        let done = recorded.done.last().copied().unwrap_or(0) + bytes;
        recorded.done.push(done);
    }
}

fn write_bundle(path: &std::path::Path, progress: Arc<Recorder>) -> u64 {
    let image = Image::random(&[300_000, 70_000]);
    let file: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = BundleWriter::create(path, None, SystemTime::now()).unwrap();
    writer.set_progress(progress);
    carry_image(&mut writer, "docker-hub", "docker.io/library/app:1", &image).unwrap();
    // The same file twice: its bytes are written (and counted) once.
    for name in ["a", "b"] {
        let entry = Entry::file(
            "files",
            &format!("dist/{name}"),
            Digest::of(&file),
            file.len() as u64,
            "application/octet-stream",
        );
        writer.carry(entry, file.as_slice()).unwrap();
    }
    let written = writer.finish(None).unwrap();
    written.index.carried().values().sum()
}

/// The done count never goes down and ends at `total`; each blob is announced once.
fn check(recorded: &Recorded, total: u64, blobs: usize) {
    assert!(
        recorded.done.windows(2).all(|w| w[0] <= w[1]),
        "the count went down"
    );
    assert_eq!(recorded.done.last().copied(), Some(total));
    assert_eq!(recorded.blobs.len(), blobs);
    assert_eq!(
        recorded.blobs.iter().map(|(_, size)| size).sum::<u64>(),
        total
    );
}

#[test]
fn writing_and_verifying_report_every_blob_byte_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.bundle");
    let writing = Arc::new(Recorder::default());
    let total = write_bundle(&path, writing.clone());
    assert!(total > 2_800_000, "{total}");
    let recorded = writing.0.lock().unwrap();
    assert_eq!(
        recorded.starts,
        vec![None],
        "the writer knows no total up front"
    );
    // Layers, config, manifest and the file (once).
    check(&recorded, total, 5);

    let verifying = Arc::new(Recorder::default());
    let mut bundle = Bundle::open(&path).unwrap();
    bundle.set_progress(verifying.clone());
    let verified = verify(&bundle, None).unwrap();
    assert_eq!(verified.blob_bytes, total);
    let recorded = verifying.0.lock().unwrap();
    assert_eq!(recorded.starts, vec![Some(total)]);
    check(&recorded, total, 5);
}

#[test]
fn a_refused_bundle_reports_no_more_than_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.bundle");
    let total = write_bundle(&path, Arc::new(Recorder::default()));
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.bundle");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();

    let verifying = Arc::new(Recorder::default());
    let mut bundle = Bundle::open(&cut).unwrap();
    bundle.set_progress(verifying.clone());
    verify(&bundle, None).expect_err("a cut bundle is refused");
    let recorded = verifying.0.lock().unwrap();
    let done = recorded.done.last().copied().unwrap_or(0);
    assert!(done < total, "{done} of {total} reported for half a bundle");
    assert!(recorded.done.windows(2).all(|w| w[0] <= w[1]));
}
