//! Interop with real components: Debian's `docker-registry` (distribution) as the upstream,
//! the real `airlock serve` binary with self-signed TLS in front of it, and real clients —
//! skopeo and containerd's `ctr` with a generated `hosts.toml` — pulling through it.
//!
//! Every tool is required: a missing one fails the test with the package to install.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use airlock_testkit::{
    Containerd, DockerRegistry, Image, Index, Killed as Running, Platform, free_port, port_open,
    require_tool, tar_layer, wait_until,
};
use airlock_types::Digest;

fn run(cmd: &mut Command) -> String {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn start_airlock(dir: &Path, upstream_port: u16, port: u16) -> (Running, PathBuf) {
    let config = dir.join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\nhostname = \"localhost\"\n[tls]\nmode = \"self-signed\"\n\
             [[proxy]]\nname = \"dockerhub-proxy\"\nformat = \"oci\"\nupstream = \"http://127.0.0.1:{upstream_port}\"\nhost = \"docker.io\"\ntag_ttl = \"0s\"\n",
            dir.join("airlock-data")
        ),
    )
    .unwrap();
    let log_path = dir.join("airlock.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let running = Running(child);
    wait_until("airlock", Duration::from_secs(30), || port_open(port));
    (running, log_path)
}

/// skopeo's cert dir: every `*.crt` in it is a trusted CA.
fn cert_dir(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(dir.join("airlock-data/tls/ca.crt"), certs.join("ca.crt")).unwrap();
    certs
}

fn push(layout: &Path, tag: &str, registry_port: u16, repo: &str, all: bool) {
    let mut cmd = Command::new(require_tool("skopeo", "skopeo"));
    cmd.args(["copy", "--dest-tls-verify=false", "--preserve-digests"]);
    if all {
        cmd.arg("--all");
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://127.0.0.1:{registry_port}/{repo}:{tag}"));
    run(&mut cmd);
}

/// The manifest digest the upstream serves for `repo:tag`.
fn upstream_digest(registry_port: u16, repo: &str, tag: &str) -> Digest {
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://127.0.0.1:{registry_port}/{repo}:{tag}"),
    ]));
    Digest::of(raw.as_bytes())
}

fn hosts_dir(dir: &Path, gateway_port: u16) -> PathBuf {
    let hosts = dir.join("certs.d");
    std::fs::create_dir_all(hosts.join("docker.io")).unwrap();
    // `server` points at a closed loopback port: if the mirror failed, containerd's
    // fallback would fail too instead of leaving this machine.
    std::fs::write(
        hosts.join("docker.io/hosts.toml"),
        format!(
            "server = \"https://127.0.0.1:9\"\n\n[host.\"https://localhost:{gateway_port}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = {:?}\n",
            dir.join("airlock-data/tls/ca.crt")
        ),
    )
    .unwrap();
    hosts
}

#[test]
fn skopeo_and_containerd_pull_through_the_gateway_and_from_cache_when_upstream_is_gone() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (registry_port, gateway_port) = (free_port(), free_port());
    let registry = DockerRegistry::start_on(dir, registry_port);

    let image = Image::from_layers(
        vec![
            tar_layer("hello.txt", b"hello from the air-gapped side\n"),
            tar_layer("etc/motd", b"airlock\n"),
        ],
        Platform {
            os: "linux",
            arch: "amd64",
        },
    );
    image
        .write_oci_layout(&dir.join("layout-hello"), "1")
        .unwrap();
    push(
        &dir.join("layout-hello"),
        "1",
        registry_port,
        "library/hello",
        false,
    );
    let amd = Image::from_layers(
        vec![tar_layer("arch", b"amd64\n")],
        Platform {
            os: "linux",
            arch: "amd64",
        },
    );
    let arm = Image::from_layers(
        vec![tar_layer("arch", b"arm64\n")],
        Platform {
            os: "linux",
            arch: "arm64",
        },
    );
    let index = Index::new(vec![
        (
            Platform {
                os: "linux",
                arch: "amd64",
            },
            amd,
        ),
        (
            Platform {
                os: "linux",
                arch: "arm64",
            },
            arm.clone(),
        ),
    ]);
    index
        .write_oci_layout(&dir.join("layout-multi"), "1")
        .unwrap();
    push(
        &dir.join("layout-multi"),
        "1",
        registry_port,
        "library/multi",
        true,
    );
    let hello_digest = upstream_digest(registry_port, "library/hello", "1");
    assert_eq!(
        hello_digest, image.digest,
        "the upstream holds our manifest byte for byte"
    );

    let (gateway, log) = start_airlock(dir, registry_port, gateway_port);
    let certs = cert_dir(dir);

    // skopeo through the Harbor project path: digest identical, every layer verified by skopeo.
    let out = dir.join("skopeo-out");
    run(Command::new("skopeo")
        .args(["copy", "--src-cert-dir"])
        .arg(&certs)
        .arg(format!(
            "docker://localhost:{gateway_port}/dockerhub-proxy/library/hello:1"
        ))
        .arg(format!("dir:{}", out.display())));
    let copied = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(Digest::of(&copied), hello_digest);
    for layer in &image.layers {
        assert_eq!(
            &std::fs::read(out.join(Digest::of(layer).hex())).unwrap(),
            layer
        );
    }

    // One platform of a multi-arch index, by digest.
    let out = dir.join("skopeo-arm");
    run(Command::new("skopeo")
        .args(["copy", "--src-cert-dir"])
        .arg(&certs)
        .arg(format!(
            "docker://localhost:{gateway_port}/dockerhub-proxy/library/multi@{}",
            arm.digest
        ))
        .arg(format!("dir:{}", out.display())));
    assert_eq!(
        std::fs::read(out.join("manifest.json")).unwrap(),
        arm.manifest
    );

    // containerd with a hosts.toml mirror for docker.io: requests carry ?ns=docker.io.
    let hosts = hosts_dir(dir, gateway_port);
    let containerd = Containerd::start(&dir.join("containerd-1"));
    let output = containerd.pull(&hosts, "docker.io/library/hello:1");
    assert!(output.contains("unpacking linux/amd64"), "{output}");
    assert!(output.contains(&hello_digest.to_string()), "{output}");
    let output = containerd.pull(&hosts, "docker.io/library/multi:1");
    assert!(output.contains("unpacking linux/amd64"), "{output}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("ns=docker.io"),
        "containerd's mirror requests carry ?ns=: {logged}"
    );
    drop(containerd);

    // The upstream goes away; a fresh containerd pulls the same image from the cache.
    drop(registry);
    wait_until("docker-registry to stop", Duration::from_secs(10), || {
        !port_open(registry_port)
    });
    let containerd = Containerd::start(&dir.join("containerd-2"));
    let output = containerd.pull(&hosts, "docker.io/library/hello:1");
    assert!(output.contains("unpacking linux/amd64"), "{output}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("serving cached tag stale"),
        "the offline pull was served stale from cache"
    );
    drop(containerd);
    drop(gateway);
}
