//! Machines for tests, made of Linux namespaces (root only): named network namespaces joined
//! by veth pairs and bridges, and [`Machine`]s — a network namespace plus a private mount
//! namespace whose `/etc`, `/usr/local` and `/var` are overlays, so whatever the machine
//! writes there lands in its own directory and nothing reaches the real ones.
//!
//! Everything is named from [`unique_prefix`] (`alk<pid>-<n>`) and removed on drop
//! (processes first), also when the test panics; [`remove_stale`] clears what a killed test
//! run left behind.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A prefix for namespace and interface names no other test (in this process or another
/// running one) uses: `alk<pid>-<n>`, short enough for interface names (15 bytes) with a
/// two-letter suffix.
pub fn unique_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("alk{}-{n}", std::process::id())
}

/// Run `command`, panicking with its output when it fails.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn ip(args: &[&str]) -> Output {
    run(Command::new(crate::require_tool("ip", "iproute2")).args(args))
}

/// Remove namespaces and interfaces named by [`unique_prefix`] whose test process is gone.
pub fn remove_stale() {
    let stale = |name: &str| {
        let Some(rest) = name.strip_prefix("alk") else {
            return false;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        !digits.is_empty()
            && rest[digits.len()..].starts_with('-')
            && !Path::new("/proc").join(&digits).exists()
    };
    let listed = ip(&["netns", "list"]);
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if stale(name) {
            drop(Netns {
                name: name.to_owned(),
            });
        }
    }
    let links = ip(&["-o", "link", "show"]);
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        // "7: alk123-c@if6: <…"
        let name = line.split(": ").nth(1).unwrap_or_default();
        let name = name.split('@').next().unwrap_or_default();
        if stale(name) {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
}

/// Three free octets `a.b.c` for a `/24` under 10.64.0.0/10, for each of `count` subnets,
/// chosen from the process id and checked against the addresses and routes in use here.
pub fn free_subnets(count: usize) -> Vec<[u8; 3]> {
    let used = format!(
        "{}{}",
        String::from_utf8_lossy(&ip(&["-4", "route", "show", "table", "all"]).stdout),
        String::from_utf8_lossy(&ip(&["-4", "addr", "show"]).stdout)
    );
    let mut found = Vec::new();
    // Beds of one process differ by a counter; processes by their pid.
    static TAKEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let offset = TAKEN.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
    let start = std::process::id() as usize * 16 + offset;
    for n in start..start + 64 * 256 {
        let slot = n % (64 * 256);
        let octets = [10, 64 + (slot / 256) as u8, (slot % 256) as u8];
        let dotted = format!("{}.{}.{}.", octets[0], octets[1], octets[2]);
        if !used.contains(&dotted) {
            found.push(octets);
            if found.len() == count {
                return found;
            }
        }
    }
    panic!("no free /24 under 10.64.0.0/10");
}

/// A named network namespace with its loopback up. Dropping it kills every process in it
/// and deletes it (its interfaces go with it).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add <name>`.
    pub fn create(name: &str) -> Self {
        let name = name.to_owned();
        ip(&["netns", "add", &name]);
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <name> <args…>`.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `program` run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// A veth pair: `here` in this namespace with `here_cidr`, `there` in `other` with
    /// `there_cidr`; both up.
    pub fn link(&self, here: &str, here_cidr: &str, other: &Netns, there: &str, there_cidr: &str) {
        self.ip(&[
            "link",
            "add",
            here,
            "type",
            "veth",
            "peer",
            "name",
            there,
            "netns",
            &other.name,
        ]);
        self.ip(&["addr", "add", here_cidr, "dev", here]);
        self.ip(&["link", "set", here, "up"]);
        other.ip(&["addr", "add", there_cidr, "dev", there]);
        other.ip(&["link", "set", there, "up"]);
    }

    /// A bridge named `bridge` in this namespace (created by the first call), with a new
    /// interface `there` in `other` attached to it by `port`; `there` gets `cidr`.
    /// `other` = `None` attaches the test process's own namespace (pick a unique `there`).
    pub fn attach(&self, bridge: &str, port: &str, other: Option<&Netns>, there: &str, cidr: &str) {
        let listed = self.ip(&["-o", "link", "show"]);
        if !String::from_utf8_lossy(&listed.stdout).contains(&format!(": {bridge}:")) {
            self.ip(&["link", "add", bridge, "type", "bridge"]);
            self.ip(&["link", "set", bridge, "up"]);
        }
        if let Some(other) = other {
            self.ip(&[
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                there,
                "netns",
                &other.name,
            ]);
            other.ip(&["addr", "add", cidr, "dev", there]);
            other.ip(&["link", "set", there, "up"]);
        } else {
            // The root side: created here, then moved out, so its peer stays here.
            self.ip(&["link", "add", port, "type", "veth", "peer", "name", there]);
            let own = std::process::id().to_string();
            self.ip(&["link", "set", there, "netns", &own]);
            ip(&["addr", "add", cidr, "dev", there]);
            ip(&["link", "set", there, "up"]);
        }
        self.ip(&["link", "set", port, "master", bridge]);
        self.ip(&["link", "set", port, "up"]);
    }

    /// Kill every process in the namespace, a few rounds (processes may fork meanwhile).
    pub fn kill_all(&self) {
        for _ in 0..5 {
            let Ok(listed) = Command::new("ip")
                .args(["netns", "pids", &self.name])
                .output()
            else {
                return;
            };
            let pids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if pids.is_empty() {
                return;
            }
            let _ = Command::new("kill").arg("-KILL").args(&pids).output();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A route in the test process's own namespace (`ip route add <spec…>`), deleted on drop.
#[derive(Debug)]
pub struct RootRoute {
    spec: Vec<String>,
}

impl RootRoute {
    /// E.g. `["unreachable", "10.64.1.0/24"]`: the subnet fails fast instead of leaving
    /// the machine by its default route.
    pub fn add(spec: &[&str]) -> Self {
        let mut args = vec!["route", "add"];
        args.extend_from_slice(spec);
        ip(&args);
        Self {
            spec: spec.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

impl Drop for RootRoute {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["route", "del"])
            .args(&self.spec)
            .output();
    }
}

/// The directories a [`Machine`] has of its own: overlays on the real ones.
pub const OVERLAID: &[&str] = &["/etc", "/usr/local", "/var"];

/// A machine: a network namespace and a private mount namespace in which [`OVERLAID`]
/// directories are overlays whose upper layers live under `dir`. A `sleep` holds the
/// namespaces; [`Machine::command`] runs programs inside them. Dropping the machine kills
/// everything running in it.
#[derive(Debug)]
pub struct Machine {
    dir: PathBuf,
    anchor: Child,
    netns: Netns,
}

impl Machine {
    /// Start the machine in `netns`, keeping its layers in `dir`; `files` are written into
    /// it first (absolute paths under [`OVERLAID`] directories, with their modes).
    pub fn start(netns: Netns, dir: &Path, files: &[(&str, &[u8], u32)]) -> Self {
        let mut script = String::from("set -e\n");
        for target in OVERLAID {
            let layer = dir.join(layer_name(target));
            std::fs::create_dir_all(layer.join("upper")).unwrap();
            std::fs::create_dir_all(layer.join("work")).unwrap();
            let _ = writeln!(
                script,
                "mount -t overlay overlay -o lowerdir={target},upperdir={},workdir={} {target}",
                layer.join("upper").display(),
                layer.join("work").display()
            );
        }
        script.push_str("exec sleep 2147483647\n");
        let machine_dir = dir.to_owned();
        let stderr = std::fs::File::create(dir.join("anchor.log")).unwrap();
        let anchor = netns
            .command(crate::require_tool("unshare", "util-linux"))
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut machine = Self {
            dir: machine_dir,
            anchor,
            netns,
        };
        // `ip`, `unshare` and `sh` all exec: the same pid is `sleep` once the mounts are up.
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = machine.anchor.try_wait() {
                panic!(
                    "machine {} did not start ({status}): {}",
                    machine.netns.name,
                    std::fs::read_to_string(dir.join("anchor.log")).unwrap_or_default()
                );
            }
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", machine.pid()))
                .unwrap_or_default();
            if comm.trim() == "sleep" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "machine {} did not start in 10s",
                machine.netns.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for (path, contents, mode) in files {
            machine.write(path, contents, *mode);
        }
        machine
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The pid holding the machine's namespaces.
    pub fn pid(&self) -> u32 {
        self.anchor.id()
    }

    /// The command prefix that enters the machine (`nsenter` into its network and mount
    /// namespaces), for starters that take one, like `Sshd::start_with_prefix`.
    pub fn prefix(&self) -> Vec<String> {
        vec![
            crate::require_tool("nsenter", "util-linux")
                .display()
                .to_string(),
            format!("--target={}", self.pid()),
            "--net".to_owned(),
            "--mount".to_owned(),
            "--".to_owned(),
        ]
    }

    /// `program` run inside the machine.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let prefix = self.prefix();
        let mut command = Command::new(&prefix[0]);
        command.args(&prefix[1..]).arg(program);
        command
    }

    /// Write a file inside the machine (parents created), with `mode`.
    pub fn write(&self, path: &str, contents: &[u8], mode: u32) {
        let mut child = self
            .command("sh")
            .args([
                "-c",
                "mkdir -p \"$(dirname \"$1\")\" && cat > \"$1\" && chmod \"$2\" \"$1\"",
                "sh",
                path,
                &format!("{mode:o}"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(contents).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "writing {path} in {}: {}",
            self.netns.name,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A file's contents as the machine sees it; `None` when it does not exist.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        let output = self
            .command("sh")
            .args(["-c", "[ ! -e \"$1\" ] || cat \"$1\"", "sh", path])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "reading {path} in {}: {}",
            self.netns.name,
            String::from_utf8_lossy(&output.stderr)
        );
        let exists = self
            .command("test")
            .args(["-e", path])
            .status()
            .unwrap()
            .success();
        exists.then_some(output.stdout)
    }

    /// Where the machine's own copy of `path` is kept, when it wrote one (the overlay's
    /// upper layer): for reading what it wrote from outside.
    pub fn recorded(&self, path: &str) -> PathBuf {
        let target = OVERLAID
            .iter()
            .find(|t| path.starts_with(&format!("{t}/")))
            .unwrap_or_else(|| panic!("{path} is not under an overlaid directory"));
        self.dir
            .join(layer_name(target))
            .join("upper")
            .join(&path[target.len() + 1..])
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.netns.kill_all();
        let _ = self.anchor.kill();
        let _ = self.anchor.wait();
    }
}

fn layer_name(target: &str) -> String {
    target.trim_start_matches('/').replace('/', "-")
}
