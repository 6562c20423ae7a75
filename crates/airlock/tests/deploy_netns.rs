//! `airlock deploy` end to end on a test bed of network namespaces (needs root):
//!
//! - `inet`: the upstreams — Debian's `docker-registry` with a test image, and a file server
//!   with a stand-in K3s release (a `k3s` that records its calls, its real
//!   `sha256sum-amd64.txt`, a second release whose `k3s` was tampered with) and a stand-in
//!   install script that records how it ran and refuses to download; and NVIDIA's toolkit
//!   repository with stand-in packages (built with `rpmbuild` + `createrepo_c`, signed);
//! - `staging`: linked to `inet` and to the site LAN, forwarding nothing;
//! - `node1` (server) and `node2` (a GPU worker agent, with rpm and dnf set up as on EL 9):
//!   on the site LAN only, default route via staging;
//! - the control node: the test process's own namespace, on the site LAN, with the `inet`
//!   subnet unreachable.
//!
//! staging and the nodes are [`Machine`]s (own mount namespace, overlays on `/etc`,
//! `/usr/local`, `/var`) running a real `sshd`, with a stand-in `systemctl`. After deploy,
//! a real containerd inside node2, configured from the rendered site, pulls the test image
//! through the gateway: node2 has no other way to reach the registry.

mod bed;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_testkit::require_tool;
use bed::*;

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

/// deploy's copy of the server's kubeconfig on the control node, where Scout keeps it: the
/// server's CA and credentials, the server's own address, the user's alone; and
/// `airlock kubeconfig`, which refuses to write it when TLS does not verify (the stand-in
/// serves no API) unless told.
fn check_kubeconfig(bed: &Bed) {
    use std::os::unix::fs::PermissionsExt as _;
    let server = &bed.node1;
    let original =
        String::from_utf8(server.machine.read("/etc/rancher/k3s/k3s.yaml").unwrap()).unwrap();
    let copy_path = bed
        .inventory
        .parent()
        .unwrap()
        .join(format!(".kube/scout/{}/config", server.address));
    let copy = std::fs::read_to_string(&copy_path)
        .unwrap_or_else(|e| panic!("deploy wrote {}: {e}", copy_path.display()));
    let expected = original.replace(
        "server: https://127.0.0.1:6443",
        &format!("server: https://{}:6443", server.address),
    );
    assert_ne!(expected, original);
    assert_eq!(copy, expected);
    let mode = std::fs::metadata(&copy_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let out = bed.dir.path().join("kubeconfig-cli");
    let out_arg = out.to_str().unwrap();
    let (ok, output) = bed.airlock(&["kubeconfig", "--out", out_arg], Duration::from_secs(120));
    assert!(!ok, "{output}");
    assert!(output.contains("does not verify"), "{output}");
    assert!(!out.exists(), "nothing written when TLS does not verify");
    let (ok, output) = bed.airlock(
        &["kubeconfig", "--no-verify", "--out", out_arg],
        Duration::from_secs(120),
    );
    assert!(ok, "{output}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);
}

/// What Scout's `k3s` role set up besides the installer: the kubeconfig's mode and group,
/// the storage directory and the `CoreDNS` manifest on the server, the NVIDIA runtime and
/// toolkit (through the gateway's yum proxy, verified with `nvidia-ctk`) on the GPU worker.
/// How many times deploy restarted `CoreDNS` through the server's kubectl.
fn coredns_restarts(server: &Node) -> usize {
    let log = server
        .machine
        .read("/var/lib/standin/k3s.log")
        .unwrap_or_default();
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| l.contains("kubectl rollout restart deployment/coredns"))
        .count()
}

fn check_cluster_setup(bed: &Bed, output: &str) {
    let (server, gpu) = (&bed.node1, &bed.node2);
    assert_eq!(mode(server, "/etc/rancher/k3s/k3s.yaml"), "640");
    assert_eq!(
        owner(server, "/etc/rancher/k3s/k3s.yaml"),
        "root:users",
        "deploy set kubeconfig_group, which the installer ignores"
    );
    assert_eq!(mode(server, BASE_DIR), "755", "base_dir is created");
    check_kubeconfig(bed);
    assert_eq!(
        coredns_restarts(server),
        1,
        "CoreDNS restarted once, after K3s applied coredns-custom:\n{output}"
    );
    let manifest = String::from_utf8(
        server
            .machine
            .read("/var/lib/rancher/k3s/server/manifests/airlock-coredns-custom.yaml")
            .expect("the coredns-custom manifest on the server"),
    )
    .unwrap();
    for part in [
        "name: coredns-custom",
        "airgap.override: |",
        "rcode NXDOMAIN",
        "forward-domains.server: |",
        "example.edu:53 {",
        "forward . /etc/resolv.conf",
    ] {
        assert!(manifest.contains(part), "{part}:\n{manifest}");
    }
    assert!(
        gpu.machine
            .read("/var/lib/rancher/k3s/server/manifests/airlock-coredns-custom.yaml")
            .is_none()
    );
    assert_eq!(
        gpu.machine.read("/etc/rancher/k3s/config.yaml").as_deref(),
        Some(&b"default-runtime: nvidia\n"[..]),
        "the GPU worker runs containers with the nvidia runtime"
    );
    assert_eq!(mode(gpu, "/etc/rancher/k3s/config.yaml"), "644");
    assert!(
        server
            .machine
            .read("/etc/rancher/k3s/config.yaml")
            .is_none()
    );
    let repo = String::from_utf8(
        gpu.machine
            .read("/etc/yum.repos.d/airlock-nvidia-container-toolkit.repo")
            .expect("the toolkit's .repo"),
    )
    .unwrap();
    assert!(
        repo.contains("baseurl=https://staging.example.test/repository/nvidia-container-toolkit/stable/rpm/$basearch"),
        "{repo}"
    );
    let installed = bed.ssh(gpu, &format!("rpm -q {}", TOOLKIT.join(" ")));
    let listed = String::from_utf8_lossy(&installed.stdout);
    assert!(
        installed.status.success()
            && TOOLKIT
                .iter()
                .all(|p| listed.contains(&format!("{p}-1.17.8-1"))),
        "the toolkit packages are installed on the GPU worker: {listed}{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    assert!(
        output.contains(&format!("nvidia-ctk --version: {NVIDIA_CTK_VERSION}")),
        "deploy verified the toolkit with nvidia-ctk:\n{output}"
    );
    let served = bed
        .staging
        .machine
        .read("/var/lib/standin/systemd/airlock.log")
        .expect("the gateway's log on staging");
    assert!(
        String::from_utf8_lossy(&served).contains("nvidia-container-toolkit"),
        "dnf reached the toolkit through the gateway's yum proxy"
    );
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
    for shown in [
        "would change: node2.example.test: /etc/rancher/k3s/config.yaml",
        "+default-runtime: nvidia",
        "would change: node1.example.test: /var/lib/rancher/k3s/server/manifests/airlock-coredns-custom.yaml",
        "+    template ANY ANY {",
        "would change: node2.example.test: install nvidia-container-toolkit",
        "would change: node1.example.test: /var/lib/rancher/k3s/bed-storage/",
        "+flags=--default-local-storage-path=/var/lib/rancher/k3s/bed-storage",
        "--node-taint=nvidia.com/gpu=present:NoSchedule",
    ] {
        assert!(
            output.contains(shown),
            "deploy --check on a fresh site shows `{shown}`:\n{output}"
        );
    }
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
    assert_eq!(
        server["args"],
        format!(
            "server --node-name node1.example.test --default-local-storage-path={BASE_DIR} \
             --tls-san={} --tls-san=node1.example.test --disable-default-registry-endpoint \
             --node-taint=node-role.kubernetes.io/control-plane:PreferNoSchedule",
            bed.node1.address
        )
    );
    assert_eq!(
        agent["args"],
        "agent --node-name node2.example.test --disable-default-registry-endpoint \
         --node-taint=nvidia.com/gpu=present:NoSchedule"
    );
    assert_eq!(server["K3S_KUBECONFIG_MODE"], "0640", "{server:?}");
    assert_eq!(server["K3S_KUBECONFIG_GROUP"], "users", "{server:?}");
    assert_eq!(
        server["K3S_KUBECONFIG_OUTPUT"], "/etc/rancher/k3s/k3s.yaml",
        "{server:?}"
    );
    assert_eq!(agent["K3S_KUBECONFIG_MODE"], "unset", "{agent:?}");
    check_cluster_setup(&bed, &output);
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

    assert_eq!(
        coredns_restarts(&bed.node1),
        1,
        "the second deploy restarts no CoreDNS"
    );

    // A new forwarding rule: the manifest changes, K3s applies it, CoreDNS restarts once.
    let forward = "coredns_forward_map={/etc/resolv.conf: [example.edu, example.org]}";
    let (ok, output) = bed.airlock(&["deploy", "--check", "-e", forward], step);
    assert!(
        ok,
        "deploy --check of a forwarding change succeeds:\n{output}"
    );
    assert!(
        output.contains("would change: node1.example.test: restart CoreDNS"),
        "--check says CoreDNS would restart:\n{output}"
    );
    let (ok, output) = bed.airlock(&["deploy", "-e", forward], step);
    assert!(ok, "deploy of a forwarding change succeeds:\n{output}");
    assert_eq!(coredns_restarts(&bed.node1), 2, "{output}");
    assert!(
        String::from_utf8(
            bed.node1
                .machine
                .read("/var/lib/rancher/k3s/server/manifests/airlock-coredns-custom.yaml")
                .unwrap()
        )
        .unwrap()
        .contains("example.org:53 {"),
        "the manifest forwards example.org"
    );
    let (ok, output) = bed.airlock(&["deploy"], step);
    assert!(
        ok,
        "deploy back to the inventory's forwarding succeeds:\n{output}"
    );
    assert_eq!(coredns_restarts(&bed.node1), 3, "{output}");

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
