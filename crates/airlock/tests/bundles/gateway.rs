//! A gateway for the import tests: its configuration (every proxy offline), running the
//! real `airlock serve`, and listings of its `data_dir` to compare before and after.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use airlock_bundle::testing::{carry_image, carry_index};
use airlock_bundle::{BundleWriter, Entry, SecretKey};
use airlock_types::Digest;

use super::*;

pub use airlock_testkit::{Killed as Running, free_port};

pub fn file_entry(proxy: &str, bytes: &[u8]) -> Entry {
    Entry::file(
        proxy,
        FILE_PATH,
        Digest::of(bytes),
        bytes.len() as u64,
        "application/octet-stream",
    )
}

/// The two images and the raw file, signed with `key` when given.
pub fn write_bundle(items: &Fixture, path: &Path, key: Option<&Path>) {
    let key = key.map(|k| SecretKey::read(k).unwrap());
    let mut writer = BundleWriter::create(path, None, SystemTime::now()).unwrap();
    carry_image(&mut writer, "docker-hub", SINGLE, &items.single).unwrap();
    carry_index(&mut writer, "ghcr", MULTI, &items.multi).unwrap();
    writer
        .carry(file_entry("k3s-files", &items.file), items.file.as_slice())
        .unwrap();
    writer.finish(key.as_ref()).unwrap();
}

pub fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let base = dir.join(name);
    succeeds(&["bundle", "keygen", "--out", s(&base)]);
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// A gateway whose proxies are all offline, with upstreams on a closed port; `extra` is
/// appended (an `[admin]` table).
pub fn gateway_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
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
            "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\nhostname = \"localhost\"\n[tls]\nmode = \"off\"\n{}{}{}{extra}",
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
pub fn listing(dir: &Path) -> Vec<(PathBuf, u64, Digest)> {
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
pub fn shape(dir: &Path) -> Vec<(PathBuf, u64)> {
    listing(dir).into_iter().map(|(p, n, _)| (p, n)).collect()
}

pub fn start_gateway(dir: &Path, config: &Path, port: u16) -> Running {
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
