//! Rendered node configs read by the real tools that consume them, each resolving images to
//! exactly the request `explain-image` predicts:
//! - skopeo (the containers-image library podman and CRI-O share) with `registries.conf`;
//! - containerd 1.6 (`ctr images pull --hosts-dir`) with the `certs.d` tree, against a
//!   private containerd daemon this test starts (as root, like the rest of the test bed).
//!
//! Needs the Debian packages `skopeo` and `containerd`; a machine without them fails.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock_site::check::check;
use airlock_site::explain::explain;
use airlock_site::render::render;

fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()));
    assert!(
        found,
        "`{tool}` is not installed: install the Debian package `{package}`"
    );
}

/// The first line of `child`'s stderr that `pick` accepts; the child is killed then, before
/// it waits on any network. Without a match, the whole stderr is the error.
fn first_match(mut child: Child, pick: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut found = None;
    for line in stderr.lines() {
        let line = line.unwrap();
        if let Some(hit) = pick(&line) {
            found = Some(hit);
            break;
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let _ = child.kill();
    let _ = child.wait();
    found.ok_or(seen)
}

/// The first location skopeo tries for `image` under `registries_conf`.
fn first_attempt(registries_conf: &Path, image: &str) -> String {
    require("skopeo", "skopeo");
    let child = Command::new("skopeo")
        .arg("--debug")
        .arg("--registries-conf")
        .arg(registries_conf)
        .args(["inspect", "--retry-times", "0"])
        .arg(format!("docker://{image}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    first_match(child, |line| {
        let rest = line.split("Trying to access \\\"").nth(1)?;
        Some(rest.split("\\\"").next().unwrap().to_owned())
    })
    .unwrap_or_else(|stderr| panic!("skopeo never tried a location for {image}:\n{stderr}"))
}

#[test]
fn skopeo_pulls_through_the_rendered_mirrors() {
    let report = check(&common::example(), Some(&common::secret()));
    let rendered = render(&report.site).unwrap();
    let dir = tempfile::tempdir().unwrap();
    rendered.write_to(dir.path()).unwrap();
    let conf = dir.path().join("nodes/registries.conf");
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    for image in [
        "postgres:15".to_owned(),
        "bitnami/redis:7.2".to_owned(),
        "ghcr.io/org/app:1.0".to_owned(),
        format!("quay.io/org/tool@{digest}"),
        "registry.k8s.io/pause:3.9".to_owned(),
        "apachesuperset.docker.scarf.sh/apache/superset:4.1.1".to_owned(),
    ] {
        let explained = explain(&report.site, &image).unwrap();
        let mirror = explained.mirror.as_ref().unwrap();
        let sep = if explained.image.digest().is_some() {
            '@'
        } else {
            ':'
        };
        let expected = format!(
            "{}/{}/{}{sep}{}",
            explained.registry_host,
            mirror.project,
            explained.image.repository(),
            explained.image.reference()
        );
        assert_eq!(first_attempt(&conf, &image), expected, "{image}");
    }
    // A registry with no mirror is tried directly.
    assert_eq!(
        first_attempt(&conf, "registry.example.com/team/tool:1"),
        "registry.example.com/team/tool:1"
    );
}

/// A containerd daemon of the test's own: own root, state and socket; no CRI plugin.
struct Containerd {
    child: Child,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Self {
        require("containerd", "containerd");
        require("ctr", "containerd");
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        let quoted = |path: &Path| toml::Value::String(path.display().to_string()).to_string();
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = {}\nstate = {}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = {}\n",
                quoted(&dir.path().join("root")),
                quoted(&dir.path().join("state")),
                quoted(&socket)
            ),
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut daemon = Self {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !daemon.socket.exists() {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("containerd exited with {status}: it runs as root in this test bed");
            }
            assert!(Instant::now() < deadline, "containerd did not start in 20s");
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    /// The first registry request `ctr images pull --hosts-dir` makes for `image`.
    fn first_request(&self, hosts_dir: &Path, image: &str) -> String {
        let child = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--debug", "images", "pull", "--hosts-dir"])
            .arg(hosts_dir)
            .arg(image)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        first_match(child, |line| {
            if !line.contains("do request") {
                return None;
            }
            let rest = line.split(" url=\"").nth(1)?;
            Some(rest.split('"').next().unwrap().to_owned())
        })
        .unwrap_or_else(|stderr| panic!("ctr made no request for {image}:\n{stderr}"))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn containerd_pulls_through_the_rendered_hosts_dir_with_ns() {
    let dir = tempfile::tempdir().unwrap();
    // containerd loads the CA file named in hosts.toml; give it a real certificate.
    let ca = dir.path().join("ca.crt");
    let cert =
        rcgen::generate_simple_self_signed(vec!["harbor.gw.example.org".to_owned()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let text = common::site("", &format!("    airlock_ca_file: {}\n", ca.display()));
    let report = check(&common::parse(&text), None);
    let rendered = render(&report.site).unwrap();
    rendered.write_to(dir.path()).unwrap();
    let hosts_dir = dir.path().join("nodes/certs.d");
    let daemon = Containerd::start();
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    for image in [
        "docker.io/library/postgres:15".to_owned(),
        "ghcr.io/org/app:1.0".to_owned(),
        format!("quay.io/org/tool@{digest}"),
        "registry.k8s.io/pause:3.9".to_owned(),
    ] {
        let explained = explain(&report.site, &image).unwrap();
        let expected = format!(
            "https://{}/v2/{}/manifests/{}?ns={}",
            explained.registry_host,
            explained.image.repository(),
            explained.image.reference(),
            explained.image.registry()
        );
        assert_eq!(
            daemon.first_request(&hosts_dir, &image),
            expected,
            "{image}"
        );
        assert!(
            explained
                .to_string()
                .contains(&format!("containerd  GET {expected}")),
            "{explained}"
        );
    }
}

/// skopeo (the containers-image library podman and buildah share) reads each robot's
/// rendered `config.json` as a login for the registry name nodes use, as that robot.
#[test]
fn skopeo_reads_the_rendered_robot_logins() {
    require("skopeo", "skopeo");
    let inventory =
        airlock_ansible::inventory::Inventory::load(&common::fixtures().join("hosted.yaml"), None)
            .unwrap();
    let report = check(&inventory, Some(&common::secret()));
    let rendered = render(&report.site).unwrap();
    let dir = tempfile::tempdir().unwrap();
    rendered.write_to(dir.path()).unwrap();
    for robot in ["ci", "reader"] {
        let output = Command::new("skopeo")
            .args(["login", "--get-login", "--authfile"])
            .arg(dir.path().join(format!("ci/{robot}/config.json")))
            .arg("harbor.staging.example.edu")
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), robot);
    }
}
