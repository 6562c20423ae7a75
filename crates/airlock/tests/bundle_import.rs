//! `airlock bundle import` into a stopped gateway's `data_dir`, then the real `airlock
//! serve` with every proxy `offline = true` (upstreams on a closed port) serving what was
//! imported to real clients: skopeo by tag and digest, curl for a raw file. And every
//! refusal (signature, damaged bytes, an expected item the store lacks, an unknown
//! registry or proxy, a running gateway) leaves the store as it was.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

mod bundles;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use airlock_bundle::testing::{carry_image, carry_index};
use airlock_bundle::{BundleWriter, Entry, Kind, SecretKey};
use airlock_testkit::require_tool;
use airlock_types::Digest;
use bundles::*;

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn file_entry(proxy: &str, bytes: &[u8]) -> Entry {
    Entry::file(
        proxy,
        FILE_PATH,
        Digest::of(bytes),
        bytes.len() as u64,
        "application/octet-stream",
    )
}

/// The two images and the raw file, signed with `key` when given.
fn write_bundle(items: &Fixture, path: &Path, key: Option<&Path>) {
    let key = key.map(|k| SecretKey::read(k).unwrap());
    let mut writer = BundleWriter::create(path, None, SystemTime::now()).unwrap();
    carry_image(&mut writer, "docker-hub", SINGLE, &items.single).unwrap();
    carry_index(&mut writer, "ghcr", MULTI, &items.multi).unwrap();
    writer
        .carry(file_entry("k3s-files", &items.file), items.file.as_slice())
        .unwrap();
    writer.finish(key.as_ref()).unwrap();
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let base = dir.join(name);
    succeeds(&["bundle", "keygen", "--out", s(&base)]);
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// A gateway whose proxies are all offline, with upstreams on a closed port.
fn gateway_config(dir: &Path, port: u16) -> PathBuf {
    let closed = free_port();
    let config = dir.join("airlock.toml");
    let proxy = |name: &str, format: &str, host: &str| {
        let host = if host.is_empty() {
            String::new()
        } else {
            format!("host = \"{host}\"\n")
        };
        format!(
            "[[proxy]]\nname = \"{name}\"\nformat = \"{format}\"\nupstream = \"http://127.0.0.1:{closed}/\"\n{host}offline = true\n"
        )
    };
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\nhostname = \"localhost\"\n[tls]\nmode = \"off\"\n{}{}{}",
            dir.join("data"),
            proxy("docker-hub", "oci", "docker.io"),
            proxy("ghcr", "oci", "ghcr.io"),
            proxy("k3s-files", "raw", ""),
        ),
    )
    .unwrap();
    config
}

/// Every file under `dir` with its size and content digest, in path order.
fn listing(dir: &Path) -> Vec<(PathBuf, u64, Digest)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64, Digest)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes.len() as u64, Digest::of(&bytes)));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// Paths and sizes only (opening the index may rewrite its header).
fn shape(dir: &Path) -> Vec<(PathBuf, u64)> {
    listing(dir).into_iter().map(|(p, n, _)| (p, n)).collect()
}

fn start_gateway(dir: &Path, config: &Path, port: u16) -> Running {
    let log = std::fs::File::create(dir.join("airlock.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--config", s(config)])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let running = Running(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "airlock serve did not listen:\n{}",
            std::fs::read_to_string(dir.join("airlock.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    running
}

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
    let config = gateway_config(dir, port);
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
    assert!(running.contains("is running: stop it"), "{running}");
    assert!(running.contains("admin API is not built yet"), "{running}");
    assert_eq!(listing(&data.join("store-v1")), store);

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
    let config = gateway_config(dir, port);
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

    // The seed again: already there.
    let out = succeeds(&[
        "bundle",
        "import",
        s(&seed),
        "--config",
        config,
        "--allow-unsigned",
    ]);
    assert!(out.contains("nothing to import"), "{out}");

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
