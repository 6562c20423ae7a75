//! `airlock bundle import` into a stopped gateway's `data_dir`, then the real `airlock
//! serve` with every proxy `offline = true` (upstreams on a closed port) serving what was
//! imported to real clients: skopeo by tag and digest, curl for a raw file. And every
//! refusal (signature, damaged bytes, an expected item the store lacks, an unknown
//! registry or proxy, a running gateway) leaves the store as it was.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

mod bundles;

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use airlock_bundle::testing::{carry_image, carry_index};
use airlock_bundle::{BundleWriter, Entry, Kind};
use airlock_testkit::require_tool;
use airlock_types::Digest;
use bundles::gateway::*;
use bundles::*;

#[test]
fn an_imported_bundle_is_served_offline_to_skopeo_and_curl() {
    let skopeo = require_tool("skopeo", "skopeo");
    let curl = require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (secret, public) = keygen(dir, "site");
    let items = fixture();
    let bundle = dir.join("site.bundle");
    write_bundle(&items, &bundle, Some(&secret));
    let port = free_port();
    let config = gateway_config(dir, port, "");
    let data = dir.join("data");

    let out = succeeds(&[
        "bundle",
        "import",
        s(&bundle),
        "--config",
        s(&config),
        "--trust-key",
        s(&public),
    ]);
    // Image, config, layer; index, and per platform a manifest, config and layer; file.
    assert!(out.contains("imported 11 items"), "{out}");
    assert!(out.contains("0 items already present"), "{out}");
    assert!(out.contains("is valid"), "{out}");

    let before = shape(&data);
    let again = succeeds(&[
        "bundle",
        "import",
        s(&bundle),
        "--config",
        s(&config),
        "--trust-key",
        s(&public),
    ]);
    assert!(again.contains("nothing to import"), "{again}");
    assert!(again.contains("all 11 items"), "{again}");
    assert_eq!(shape(&data), before, "a second import wrote something");

    let _gateway = start_gateway(dir, &config, port);
    let store = listing(&data.join("store-v1"));
    let running = fails(&[
        "bundle",
        "import",
        s(&bundle),
        "--config",
        s(&config),
        "--allow-unsigned",
    ]);
    assert!(
        running
            .contains("is running, so the bundle must go through its admin API: give --user NAME"),
        "{running}"
    );
    assert_eq!(listing(&data.join("store-v1")), store);
    // Without [admin] users there is no admin API at all.
    let absent = run(Command::new(&curl).args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-u",
        "admin:pw",
        "-X",
        "POST",
        &format!("http://127.0.0.1:{port}/api/v1/bundles/import?allow_unsigned=true"),
    ]));
    assert_eq!(String::from_utf8_lossy(&absent), "404");

    // The single image by tag, as pulled: same manifest digest, every blob.
    let source = format!("docker://127.0.0.1:{port}/docker-hub/library/app:1");
    let raw = run(Command::new(&skopeo).args(["inspect", "--tls-verify=false", "--raw", &source]));
    assert_eq!(Digest::of(&raw), items.single.digest);
    let out = dir.join("single");
    run(Command::new(&skopeo).args([
        "copy",
        "--src-tls-verify=false",
        &source,
        &format!("dir:{}", s(&out)),
    ]));
    assert_eq!(
        Digest::of(&std::fs::read(out.join("manifest.json")).unwrap()),
        items.single.digest
    );
    let layer = Digest::of(&items.single.layers[0]);
    assert_eq!(
        std::fs::read(out.join(layer.hex())).unwrap(),
        items.single.layers[0]
    );

    // The two-platform index with every platform.
    let source = format!("docker://127.0.0.1:{port}/ghcr/org/multi:2");
    let out = dir.join("multi");
    run(Command::new(&skopeo).args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        &source,
        &format!("dir:{}", s(&out)),
    ]));
    assert_eq!(
        Digest::of(&std::fs::read(out.join("manifest.json")).unwrap()),
        items.multi.digest
    );
    for (_, image) in &items.multi.images {
        let layer = Digest::of(&image.layers[0]);
        assert_eq!(
            std::fs::read(out.join(layer.hex())).unwrap(),
            image.layers[0]
        );
    }

    // The raw file, byte for byte.
    let body = run(Command::new(&curl).args([
        "-sSf",
        &format!("http://127.0.0.1:{port}/repository/k3s-files/{FILE_PATH}"),
    ]));
    assert!(
        body == items.file,
        "the raw file differs ({} bytes)",
        body.len()
    );
}

/// Runs an import that must be refused; the whole `data_dir` must be byte-identical after.
fn refused(data: &Path, args: &[&str], expected: &str) {
    let before = listing(data);
    let error = fails(args);
    assert!(
        error.contains(expected),
        "no {expected:?} in the refusal:\n{error}"
    );
    assert_eq!(listing(data), before, "a refused import changed the store");
}

#[test]
fn refused_imports_leave_the_store_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (secret, public) = keygen(dir, "site");
    let (_, other) = keygen(dir, "other");
    let items = fixture();
    let port = free_port();
    let config = gateway_config(dir, port, "");
    let config = s(&config);
    let data = dir.join("data");

    // Something in the store first, so "unchanged" means something.
    let seed = dir.join("seed.bundle");
    let mut writer = BundleWriter::create(&seed, None, SystemTime::now()).unwrap();
    carry_image(&mut writer, "docker-hub", SINGLE, &items.single).unwrap();
    writer.finish(None).unwrap();
    let out = succeeds(&[
        "bundle",
        "import",
        s(&seed),
        "--config",
        config,
        "--allow-unsigned",
    ]);
    assert!(out.contains("imported 3 items"), "{out}");

    let unsigned = dir.join("unsigned.bundle");
    write_bundle(&items, &unsigned, None);
    let unsigned = s(&unsigned);
    refused(
        &data,
        &[
            "bundle",
            "import",
            unsigned,
            "--config",
            config,
            "--trust-key",
            s(&public),
        ],
        "not signed",
    );
    refused(
        &data,
        &["bundle", "import", unsigned, "--config", config],
        "--allow-unsigned",
    );

    let signed = dir.join("signed.bundle");
    write_bundle(&items, &signed, Some(&secret));
    refused(
        &data,
        &[
            "bundle",
            "import",
            s(&signed),
            "--config",
            config,
            "--trust-key",
            s(&other),
        ],
        "not by the trusted key",
    );

    // One byte of the carried file flipped, inside the archive.
    let damaged = dir.join("damaged.bundle");
    let mut bytes = std::fs::read(&signed).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w == &items.file[..64])
        .expect("the file's bytes are in the archive");
    bytes[at + 1000] ^= 0x01;
    std::fs::write(&damaged, bytes).unwrap();
    refused(
        &data,
        &[
            "bundle",
            "import",
            s(&damaged),
            "--config",
            config,
            "--trust-key",
            s(&public),
        ],
        "does not match its digest",
    );

    // Cut short in the middle of the carried file's bytes, as a copy interrupted on its
    // way to the site: refused in the byte pass after the blobs before it were staged,
    // and no temp file is left (the listing covers the store's temp dir).
    let cut = dir.join("cut.bundle");
    let bytes = std::fs::read(&signed).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w == &items.file[..64])
        .expect("the file's bytes are in the archive");
    std::fs::write(&cut, &bytes[..at + 1000]).unwrap();
    refused(
        &data,
        &[
            "bundle",
            "import",
            s(&cut),
            "--config",
            config,
            "--trust-key",
            s(&public),
        ],
        "ends before its end-of-archive marker",
    );

    // A file the bundle expects the gateway to hold, which it does not.
    let expecting = dir.join("expecting.bundle");
    let mut writer = BundleWriter::create(&expecting, None, SystemTime::now()).unwrap();
    carry_index(&mut writer, "ghcr", MULTI, &items.multi).unwrap();
    writer.expect(file_entry("k3s-files", &items.file)).unwrap();
    writer.finish(None).unwrap();
    refused(
        &data,
        &[
            "bundle",
            "import",
            s(&expecting),
            "--config",
            config,
            "--allow-unsigned",
        ],
        &format!("file {FILE_PATH} ({}", Digest::of(&items.file)),
    );

    // A registry no proxy serves, and a package proxy the gateway lacks.
    let quay = dir.join("quay.bundle");
    let mut writer = BundleWriter::create(&quay, None, SystemTime::now()).unwrap();
    carry_image(
        &mut writer,
        "docker-hub",
        "quay.io/org/app:1",
        &items.single,
    )
    .unwrap();
    writer.finish(None).unwrap();
    refused(
        &data,
        &[
            "bundle",
            "import",
            s(&quay),
            "--config",
            config,
            "--allow-unsigned",
        ],
        "no OCI proxy in the configuration serves registry quay.io",
    );
    let nameless = dir.join("nameless.bundle");
    let mut writer = BundleWriter::create(&nameless, None, SystemTime::now()).unwrap();
    writer
        .carry(
            file_entry("other-files", &items.file),
            items.file.as_slice(),
        )
        .unwrap();
    writer.finish(None).unwrap();
    refused(
        &data,
        &[
            "bundle",
            "import",
            s(&nameless),
            "--config",
            config,
            "--allow-unsigned",
        ],
        "proxy \"other-files\", which the configuration does not have",
    );

    // A gateway whose blobs live in an S3 bucket: a stopped import would write them where
    // it never looks.
    let s3_config = dir.join("airlock-s3.toml");
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(
        &s3_config,
        format!("{text}[storage]\nbackend = \"s3\"\nbucket = \"site-cache\"\n"),
    )
    .unwrap();
    refused(
        &data,
        &[
            "bundle",
            "import",
            s(&signed),
            "--config",
            s(&s3_config),
            "--trust-key",
            s(&public),
        ],
        "keeps its blobs in the S3 bucket \"site-cache\"",
    );

    // The seed again: already there. A temp file an interrupted import left (killed
    // mid-pass) is removed once an import holds the index's lock.
    let leftover = data.join("store-v1/tmp/0123456789abcdef.part");
    std::fs::write(&leftover, b"half a blob").unwrap();
    let out = succeeds(&[
        "bundle",
        "import",
        s(&seed),
        "--config",
        config,
        "--allow-unsigned",
    ]);
    assert!(out.contains("nothing to import"), "{out}");
    assert!(!leftover.exists(), "the leftover temp file is still there");

    // An expected item the store does hold (the seed's layer) is accepted.
    let layer = &items.single.layers[0];
    let since = dir.join("since.bundle");
    let mut writer = BundleWriter::create(&since, None, SystemTime::now()).unwrap();
    writer
        .expect(Entry::oci(
            Kind::Blob,
            "docker-hub",
            "docker.io/library/app",
            Digest::of(layer),
            layer.len() as u64,
            "application/vnd.oci.image.layer.v1.tar",
        ))
        .unwrap();
    writer
        .carry(file_entry("k3s-files", &items.file), items.file.as_slice())
        .unwrap();
    writer.finish(None).unwrap();
    let out = succeeds(&[
        "bundle",
        "import",
        s(&since),
        "--config",
        config,
        "--allow-unsigned",
    ]);
    assert!(out.contains("imported 1 items"), "{out}");
    assert!(out.contains("1 items already present (0 blobs"), "{out}");
}

/// An import killed with SIGKILL partway leaves no blob that is not what its name says and
/// no tag pointing at what is missing; importing again completes, and skopeo pulls the
/// image byte for byte.
#[test]
fn an_import_killed_midway_is_completed_by_the_next_one() {
    let skopeo = require_tool("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // Large enough that the import is still reading when it is killed.
    let layers: Vec<Vec<u8>> = (0..4u8)
        .map(|n| {
            let mut bytes = vec![0u8; 48 << 20];
            let mut x = u64::from(n) + 1;
            for chunk in bytes.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            bytes
        })
        .collect();
    let image = airlock_testkit::Image::from_layers(layers, AMD64);
    let bundle = dir.join("big.bundle");
    let mut writer = BundleWriter::create(&bundle, None, SystemTime::now()).unwrap();
    carry_image(&mut writer, "docker-hub", SINGLE, &image).unwrap();
    writer.finish(None).unwrap();
    let port = free_port();
    let config = gateway_config(dir, port, "");
    let data = dir.join("data");
    let import = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_airlock"));
        command.args([
            "bundle",
            "import",
            s(&bundle),
            "--config",
            s(&config),
            "--allow-unsigned",
        ]);
        command
    };

    let mut first = import()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once it has written into the store's temp area.
    let temp = data.join("store-v1/tmp");
    airlock_testkit::wait_until(
        "the import's first bytes",
        std::time::Duration::from_secs(30),
        || std::fs::read_dir(&temp).is_ok_and(|mut d| d.next().is_some()),
    );
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert!(
        first.try_wait().unwrap().is_none(),
        "the import finished before it could be killed: make the bundle larger"
    );
    first.kill().unwrap();
    first.wait().unwrap();

    // Whatever is visible is what its name says.
    let blobs = data.join("store-v1/blobs");
    let mut visible = 0;
    for (path, _, digest) in listing(&data.join("store-v1")) {
        if path.starts_with(&blobs) {
            visible += 1;
            assert_eq!(
                path.file_name().unwrap().to_str().unwrap(),
                digest.hex(),
                "{} does not hold what its name says",
                path.display()
            );
        }
    }

    assert!(
        visible < 6,
        "the killed import had not finished ({visible} blobs visible)"
    );

    let out = succeeds(&[
        "bundle",
        "import",
        s(&bundle),
        "--config",
        s(&config),
        "--allow-unsigned",
    ]);
    assert!(out.contains("imported"), "{out}");
    let _gateway = start_gateway(dir, &config, port);
    // The gateway removes what the killed import left in the temp area when it starts.
    assert!(
        !temp.exists() || std::fs::read_dir(&temp).unwrap().next().is_none(),
        "the killed import's temp files are gone"
    );
    let out = dir.join("pulled");
    run(Command::new(&skopeo).args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://127.0.0.1:{port}/docker-hub/library/app:1"),
        &format!("dir:{}", s(&out)),
    ]));
    assert_eq!(
        Digest::of(&std::fs::read(out.join("manifest.json")).unwrap()),
        image.digest
    );
    for layer in &image.layers {
        let digest = Digest::of(layer);
        assert_eq!(std::fs::read(out.join(digest.hex())).unwrap(), *layer);
    }
}
