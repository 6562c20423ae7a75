//! Real daemons the interop tests run as children, stopped when dropped: Debian's
//! `docker-registry` (distribution) as an upstream, and a private containerd whose `ctr`
//! pulls through a `hosts.toml` mirror.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::tools::{ContainerdFiles, containerd_config, require_tool};

/// A child process killed when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `ready`, polling every 100 ms; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether something accepts connections on loopback `port`.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `airlock serve --config config` (the test's binary), logging to `log`; returns once
/// `port` listens.
pub fn serve_airlock(binary: &Path, config: &Path, log: &Path, port: u16) -> Killed {
    serve_airlock_with_env(binary, config, log, port, &[])
}

/// [`serve_airlock`] with more variables in the gateway's environment.
pub fn serve_airlock_with_env(
    binary: &Path,
    config: &Path,
    log: &Path,
    port: u16,
    env: &[(&str, &str)],
) -> Killed {
    let gateway = Killed(
        Command::new(binary)
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("airlock", Duration::from_secs(30), || port_open(port));
    gateway
}

/// Python's `http.server` serving `root` on loopback, its request log (one line per
/// request) in `log`; killed on drop.
pub struct StaticFiles {
    _process: Killed,
    pub port: u16,
}

impl StaticFiles {
    pub fn start(root: &Path, log: &Path) -> Self {
        let port = free_port();
        let process = Killed(
            Command::new(require_tool("python3", "python3"))
                .args([
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .arg("--directory")
                .arg(root)
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        );
        wait_until("http.server", Duration::from_secs(20), || port_open(port));
        Self {
            _process: process,
            port,
        }
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

/// `len` bytes that do not compress and differ per `seed` (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    // Odd and non-zero for every seed, and a different state for each (`seed | 1` made
    // 42 and 43 the same noise, which once hid a test's two "different" layers).
    let mut state = seed.wrapping_mul(2).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A size as the console writes it: `812 B`, `1.5 KiB`, `3.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else if n < 1 << 20 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
    }
}

/// `docker-registry serve` on loopback, storing under `dir/registry-data` (deletes
/// enabled), logging to `dir/registry.log`, its access log (one line per request, combined
/// format) to `dir/registry-access.log`.
pub struct DockerRegistry {
    _process: Killed,
    pub port: u16,
    access_log: PathBuf,
}

impl DockerRegistry {
    /// Starts it on a free port and waits until it listens.
    pub fn start(dir: &Path) -> Self {
        Self::start_on(dir, free_port())
    }

    pub fn start_on(dir: &Path, port: u16) -> Self {
        let binary = require_tool("docker-registry", "docker-registry");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("registry-data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let access_log = dir.join("registry-access.log");
        let process = Killed(
            Command::new(binary)
                .arg("serve")
                .arg(&config)
                .stdout(std::fs::File::create(&access_log).unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        wait_until("docker-registry", Duration::from_secs(30), || {
            port_open(port)
        });
        Self {
            _process: process,
            port,
            access_log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Pushes `image` as `repo:tag` with skopeo, digests preserved, through an OCI layout
    /// written under `dir`.
    pub fn push(&self, image: &crate::Image, dir: &Path, repo: &str, tag: &str) {
        let skopeo = require_tool("skopeo", "skopeo");
        let layout = dir.join(format!("push-{}-{tag}", repo.replace('/', "_")));
        image.write_oci_layout(&layout, tag).unwrap();
        crate::run(
            Command::new(skopeo)
                .args(["copy", "--dest-tls-verify=false", "--preserve-digests"])
                .arg(format!("oci:{}:{tag}", layout.display()))
                .arg(format!("docker://127.0.0.1:{}/{repo}:{tag}", self.port)),
        );
    }

    /// The requests it answered so far, one access-log line each.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains("\"GET ")
                    || l.contains("\"HEAD ")
                    || l.contains("\"PUT ")
                    || l.contains("\"POST ")
                    || l.contains("\"PATCH ")
                    || l.contains("\"DELETE ")
            })
            .map(str::to_owned)
            .collect()
    }
}

/// A private containerd (root, state and sockets under its directory; the system's is
/// never touched), logging to `<dir>/containerd.log`.
pub struct Containerd {
    _process: Killed,
    pub socket: PathBuf,
}

impl Containerd {
    /// Starts it and waits until `ctr version` answers.
    pub fn start(dir: &Path) -> Self {
        let binary = require_tool("containerd", "containerd");
        let ContainerdFiles { config, socket } = containerd_config(dir);
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let process = Killed(
            Command::new(binary)
                .arg("--config")
                .arg(&config)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let ctr = require_tool("ctr", "containerd");
        wait_until("containerd", Duration::from_secs(30), || {
            Command::new(&ctr)
                .arg("--address")
                .arg(&socket)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        Self {
            _process: process,
            socket,
        }
    }

    /// `ctr` with `args` against this containerd, in the tests' namespace; its output,
    /// whether it worked or not.
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new(require_tool("ctr", "containerd"))
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "airlock-test"])
            .args(args)
            .output()
            .expect("run ctr")
    }

    /// `ctr images pull` of `reference` with the mirrors in `hosts` (a `certs.d`-style
    /// directory); returns ctr's output, panicking with it when the pull fails.
    pub fn pull(&self, hosts: &Path, reference: &str) -> String {
        let output = Command::new(require_tool("ctr", "containerd"))
            .arg("--address")
            .arg(&self.socket)
            .args([
                "--namespace",
                "airlock-test",
                "images",
                "pull",
                "--snapshotter",
                "native",
                "--hosts-dir",
            ])
            .arg(hosts)
            .arg(reference)
            .output()
            .expect("run ctr");
        assert!(
            output.status.success(),
            "ctr pull {reference} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// A `certs.d`-style directory (`<dir>/certs.d`) whose docker.io `hosts.toml` lists the
/// gateways on `ports` in order, as `airlock render` lists a site's replicas; `server` is a
/// closed port, so nothing bypasses them.
pub fn mirror_hosts(dir: &Path, ports: &[u16]) -> PathBuf {
    let hosts = dir.join("certs.d");
    std::fs::create_dir_all(hosts.join("docker.io")).unwrap();
    let server = format!("server = \"http://127.0.0.1:{}\"\n", free_port());
    let text: String = std::iter::once(server)
        .chain(ports.iter().map(|port| {
            format!(
                "\n[host.\"http://127.0.0.1:{port}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            )
        }))
        .collect();
    std::fs::write(hosts.join("docker.io/hosts.toml"), text).unwrap();
    hosts
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_seed_makes_its_own_noise() {
        let all: std::collections::HashSet<Vec<u8>> =
            (0..512).map(|seed| super::noise(64, seed)).collect();
        assert_eq!(all.len(), 512);
    }
}
