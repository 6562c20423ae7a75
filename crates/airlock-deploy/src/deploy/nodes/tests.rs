//! The stage on fake nodes: what is written, when the installer runs, what restarts.

use super::*;
use airlock_remote::fake::Fake;

fn with_inputs<R>(f: impl FnOnce(&Inputs<'_>) -> R) -> R {
    let dir = tempfile::tempdir().unwrap();
    let (bin, script) = (dir.path().join("k3s"), dir.path().join("install.sh"));
    std::fs::write(&bin, b"k3s").unwrap();
    std::fs::write(&script, b"#!/bin/sh\n").unwrap();
    let bin_sha = hex::encode(Sha256::digest(b"k3s"));
    let script_sha = hex::encode(Sha256::digest(b"#!/bin/sh\n"));
    let inputs = Inputs {
        version: "v1.31.4+k3s1",
        binary: (&bin, &bin_sha),
        script: (&script, &script_sha),
        ca: Some(("/etc/rancher/k3s/staging-ca.crt", "PEM\n")),
        registries: "mirrors: {}\n",
        token: "s3cret",
        server_url: "https://10.0.0.1:6443",
        install: &NodeInstall::default(),
        base_dir: "/var/lib/rancher/k3s/storage",
        coredns: None,
    };
    f(&inputs)
}

fn quiet() -> Report {
    Report::new(Box::new(std::io::sink()), Mode::Apply)
}

#[test]
fn installer_gets_air_gapped_environment_on_stdin() {
    with_inputs(|inputs| {
        let agent = installer_script("w1", Role::Agent, inputs);
        assert!(agent.contains("INSTALL_K3S_SKIP_DOWNLOAD=true"));
        assert!(agent.contains("INSTALL_K3S_SKIP_SELINUX_RPM=true"));
        assert!(agent.contains("export K3S_URL=https://10.0.0.1:6443"));
        assert!(agent.contains("agent --node-name w1"));
        let server = installer_script("s1", Role::FirstServer, inputs);
        assert!(!server.contains("K3S_URL"));
        assert!(server.contains("server --node-name s1"));
        let salt = salt_of(None);
        let written = marker("s1", Role::FirstServer, inputs, &salt);
        assert!(!written.contains("s3cret"));
        assert!(!written.contains(&hex::encode(Sha256::digest(b"s3cret"))));
    });
}

#[test]
fn first_run_installs_second_run_changes_nothing() {
    with_inputs(|inputs| {
        let node = Fake::new("w1");
        let report = quiet();
        run(&node, Role::Agent, inputs, Mode::Apply, &report).unwrap();
        let installs = |n: &Fake| n.commands().iter().filter(|c| *c == "sh -s").count();
        assert_eq!(installs(&node), 1);
        assert_eq!(node.file(K3S_BINARY).unwrap(), b"k3s");
        assert!(node.file(MARKER).is_some());
        let again = quiet();
        run(&node, Role::Agent, inputs, Mode::Apply, &again).unwrap();
        assert_eq!(installs(&node), 1);
        assert_eq!(again.counts()["w1"].changed, 0);
    });
}

/// Regression: the marker held the bare sha256 of the K3s token, world-readable (0644),
/// so anyone on the node could test token guesses offline against it.
#[test]
fn marker_holds_a_salted_hmac_of_the_token_and_is_root_only() {
    with_inputs(|inputs| {
        let node = Fake::new("w1");
        run(&node, Role::Agent, inputs, Mode::Apply, &quiet()).unwrap();
        let text = String::from_utf8(node.file(MARKER).unwrap()).unwrap();
        assert!(
            !text.contains(&hex::encode(Sha256::digest(b"s3cret"))),
            "{text}"
        );
        let salt = text
            .lines()
            .find_map(|l| l.strip_prefix("token_salt="))
            .unwrap();
        assert_eq!(salt.len(), 32);
        assert!(text.contains(&format!("token_hmac_sha256={}", token_hmac(salt, "s3cret"))));
        assert_eq!(node.mode(MARKER), Some(airlock_remote::Mode(0o600)));
        assert_eq!(node.owner(MARKER).unwrap(), "root:root");

        let other = Fake::new("w1");
        run(&other, Role::Agent, inputs, Mode::Apply, &quiet()).unwrap();
        assert_ne!(other.file(MARKER), node.file(MARKER), "salts are per node");

        let new_token = Inputs {
            token: "rotated",
            ..inputs.clone()
        };
        run(&node, Role::Agent, &new_token, Mode::Apply, &quiet()).unwrap();
        let installs = node.commands().iter().filter(|c| *c == "sh -s").count();
        assert_eq!(installs, 2, "a new token reinstalls");
    });
}

#[test]
fn legacy_markers_are_replaced_without_reinstalling() {
    with_inputs(|inputs| {
        let node = Fake::new("w1");
        node.put(MARKER, legacy_marker("w1", Role::Agent, inputs));
        let report = quiet();
        run(&node, Role::Agent, inputs, Mode::Apply, &report).unwrap();
        // The other files are new on this fake node; no installer run is what matters.
        assert!(
            !node.commands().iter().any(|c| c == "sh -s"),
            "{:?}",
            node.commands()
        );
        let text = String::from_utf8(node.file(MARKER).unwrap()).unwrap();
        assert!(text.contains("token_hmac_sha256="), "{text}");
        assert!(!text.contains("token_sha256="), "{text}");
        assert_eq!(node.mode(MARKER), Some(airlock_remote::Mode(0o600)));
        let again = quiet();
        run(&node, Role::Agent, inputs, Mode::Apply, &again).unwrap();
        assert_eq!(again.counts()["w1"].changed, 0);
    });
}

#[test]
fn registry_change_restarts_without_reinstalling() {
    with_inputs(|inputs| {
        let node = Fake::new("w1");
        run(&node, Role::Agent, inputs, Mode::Apply, &quiet()).unwrap();
        let changed = Inputs {
            registries: "mirrors: {docker.io: {}}\n",
            ..inputs.clone()
        };
        run(&node, Role::Agent, &changed, Mode::Apply, &quiet()).unwrap();
        let commands = node.commands();
        assert_eq!(
            commands.iter().filter(|c| *c == "sh -s").count(),
            1,
            "{commands:?}"
        );
        assert!(
            commands.contains(&"systemctl restart k3s-agent".to_owned()),
            "{commands:?}"
        );
    });
}

#[test]
fn failed_installer_stops_and_runs_again_next_time() {
    with_inputs(|inputs| {
        let node = Fake::new("w1");
        node.answer("sh -s", 1, "[ERROR] Failed to find memory cgroup");
        let err = run(&node, Role::Agent, inputs, Mode::Apply, &quiet()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("w1") && text.contains("status 1") && text.contains("memory cgroup"),
            "{text}"
        );
        assert!(
            node.file(MARKER).is_none(),
            "a failed install leaves no marker"
        );
    });
}

#[test]
fn ready_nodes_parses_kubectl() {
    let listing = "s1   Ready    control-plane,master   5m   v1.31.4+k3s1\n\
w1   NotReady   <none>   1m   v1.31.4+k3s1\n\
w2   Ready,SchedulingDisabled   <none>   1m   v1.31.4+k3s1\n";
    let at = |n: &str| (n.to_owned(), "v1.31.4+k3s1".to_owned());
    assert_eq!(ready_nodes(listing), [at("s1"), at("w2")]);
    assert!(
        ready_nodes("s1 Ready\n\n").is_empty(),
        "a short line is no node"
    );
}

#[test]
fn an_upgrade_shows_both_versions_and_reinstalls() {
    with_inputs(|inputs| {
        let node = Fake::new("w1");
        run(&node, Role::Agent, inputs, Mode::Apply, &quiet()).unwrap();
        assert_eq!(
            installed_version(&node).unwrap().as_deref(),
            Some("v1.31.4+k3s1")
        );
        let newer = Inputs {
            version: "v1.32.0+k3s1",
            ..inputs.clone()
        };
        let (sink, report) = captured(Mode::Check);
        run(&node, Role::Agent, &newer, Mode::Check, &report).unwrap();
        let shown = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
        assert!(
            shown.contains("k3s v1.31.4+k3s1 → v1.32.0+k3s1"),
            "check mode shows the upgrade:\n{shown}"
        );
        run(&node, Role::Agent, &newer, Mode::Apply, &quiet()).unwrap();
        assert_eq!(
            installed_version(&node).unwrap().as_deref(),
            Some("v1.32.0+k3s1")
        );
    });
    assert_eq!(installed_version(&Fake::new("fresh")).unwrap(), None);
}

fn server_install() -> NodeInstall {
    NodeInstall {
        flags: vec![
            "--default-local-storage-path=/data/k3s".to_owned(),
            "--tls-san=10.0.0.1".to_owned(),
            "--node-label".to_owned(),
            "zone=a b".to_owned(),
        ],
        env: vec![
            ("K3S_KUBECONFIG_MODE", "0640".to_owned()),
            ("K3S_KUBECONFIG_GROUP", "k3s admins".to_owned()),
        ],
        gpu: false,
    }
}

#[test]
fn flags_and_environment_reach_the_installer_quoted() {
    with_inputs(|inputs| {
        let install = server_install();
        let inputs = Inputs {
            install: &install,
            ..inputs.clone()
        };
        let script = installer_script("s1", Role::FirstServer, &inputs);
        assert!(
            script.contains("export K3S_KUBECONFIG_MODE=0640\n"),
            "{script}"
        );
        assert!(
            script.contains("export K3S_KUBECONFIG_GROUP='k3s admins'\n"),
            "{script}"
        );
        assert!(
            script.ends_with(
                "server --node-name s1 --default-local-storage-path=/data/k3s --tls-san=10.0.0.1 --node-label 'zone=a b'\n"
            ),
            "{script}"
        );
        let marker = marker_fields("s1", Role::FirstServer, &inputs);
        assert!(
            marker.contains("flags=--default-local-storage-path=/data/k3s --tls-san=10.0.0.1 --node-label 'zone=a b'\n"),
            "{marker}"
        );
        assert!(
            marker.contains("env=K3S_KUBECONFIG_MODE=0640 K3S_KUBECONFIG_GROUP='k3s admins'\n"),
            "{marker}"
        );
    });
}

#[test]
fn a_flag_change_reinstalls_and_check_mode_shows_it() {
    with_inputs(|inputs| {
        let node = Fake::new("s1");
        run(&node, Role::FirstServer, inputs, Mode::Apply, &quiet()).unwrap();
        let install = server_install();
        let changed = Inputs {
            install: &install,
            ..inputs.clone()
        };
        let (sink, check) = captured(Mode::Check);
        run(&node, Role::FirstServer, &changed, Mode::Check, &check).unwrap();
        let shown = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
        assert!(shown.contains("run the K3s installer"), "{shown}");
        assert!(
            shown.contains("+flags=--default-local-storage-path=/data/k3s"),
            "{shown}"
        );
        assert!(!shown.contains("token_"), "{shown}");
        let installs = |n: &Fake| n.commands().iter().filter(|c| *c == "sh -s").count();
        assert_eq!(installs(&node), 1, "--check installs nothing");
        run(&node, Role::FirstServer, &changed, Mode::Apply, &quiet()).unwrap();
        assert_eq!(installs(&node), 2, "new flags reinstall");
        let again = quiet();
        run(&node, Role::FirstServer, &changed, Mode::Apply, &again).unwrap();
        assert_eq!(installs(&node), 2);
    });
}

#[test]
fn gpu_workers_get_the_nvidia_runtime_and_a_change_restarts() {
    with_inputs(|inputs| {
        let node = Fake::new("g1");
        run(&node, Role::Agent, inputs, Mode::Apply, &quiet()).unwrap();
        assert!(
            node.file(K3S_CONFIG).is_none(),
            "only GPU workers get config.yaml"
        );
        let gpu = NodeInstall {
            gpu: true,
            ..NodeInstall::default()
        };
        let inputs = Inputs {
            install: &gpu,
            ..inputs.clone()
        };
        run(&node, Role::Agent, &inputs, Mode::Apply, &quiet()).unwrap();
        assert_eq!(node.file(K3S_CONFIG).unwrap(), b"default-runtime: nvidia\n");
        assert_eq!(node.mode(K3S_CONFIG), Some(airlock_remote::Mode(0o644)));
        assert!(
            node.commands()
                .contains(&"systemctl restart k3s-agent".to_owned()),
            "{:?}",
            node.commands()
        );
    });
}

#[test]
fn servers_get_the_storage_directory_and_the_coredns_manifest() {
    with_inputs(|inputs| {
        let node = Fake::new("s1");
        node.answer("[ -d /var/lib/rancher/k3s/storage ]", 0, "absent\n");
        let inputs = Inputs {
            coredns: Some("kind: ConfigMap\n"),
            ..inputs.clone()
        };
        run(&node, Role::FirstServer, &inputs, Mode::Apply, &quiet()).unwrap();
        assert!(
            node.commands().contains(
                &"mkdir -p /var/lib/rancher/k3s/storage && chmod 0755 /var/lib/rancher/k3s/storage"
                    .to_owned()
            ),
            "{:?}",
            node.commands()
        );
        assert_eq!(node.file(COREDNS_MANIFEST).unwrap(), b"kind: ConfigMap\n");
        assert!(
            !node.commands().iter().any(|c| c.contains("restart")),
            "K3s watches its manifests: no restart"
        );

        let agent = Fake::new("w1");
        run(&agent, Role::Agent, &inputs, Mode::Apply, &quiet()).unwrap();
        assert!(agent.file(COREDNS_MANIFEST).is_none());
        assert!(!agent.commands().iter().any(|c| c.contains("mkdir")));
    });
}

#[test]
fn a_coredns_manifest_no_longer_needed_is_deleted_with_its_configmap() {
    with_inputs(|inputs| {
        let node = Fake::new("s1");
        node.put(COREDNS_MANIFEST, "kind: ConfigMap\n");
        let (sink, check) = captured(Mode::Check);
        run(&node, Role::FirstServer, inputs, Mode::Check, &check).unwrap();
        let shown = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
        assert!(
            shown.contains(COREDNS_MANIFEST) && shown.contains("removed"),
            "{shown}"
        );
        assert!(!node.commands().iter().any(|c| c.contains("rm -f")));
        run(&node, Role::FirstServer, inputs, Mode::Apply, &quiet()).unwrap();
        let commands = node.commands();
        let delete = commands
            .iter()
            .position(|c| {
                c.contains("kubectl delete configmap coredns-custom --namespace kube-system")
            })
            .expect("the ConfigMap is deleted");
        let rm = commands
            .iter()
            .position(|c| c.starts_with("rm -f") && c.contains("airlock-coredns-custom.yaml"))
            .expect("the manifest is removed");
        assert!(delete < rm, "{commands:?}");

        let clean = Fake::new("s2");
        run(&clean, Role::FirstServer, inputs, Mode::Apply, &quiet()).unwrap();
        assert!(
            !clean
                .commands()
                .iter()
                .any(|c| c.contains("kubectl delete"))
        );
    });
}

#[test]
fn kubeconfig_gets_mode_0640_and_the_group() {
    let node = Fake::new("s1");
    let path = "/etc/rancher/k3s/k3s.yaml";
    let err = kubeconfig_perms(&node, path, "wheel", true, Mode::Apply, &quiet()).unwrap_err();
    assert!(
        err.to_string().contains("has not written its kubeconfig"),
        "{err}"
    );
    kubeconfig_perms(&node, path, "wheel", false, Mode::Check, &quiet()).unwrap();

    node.put_with(path, "apiVersion: v1\n", 0o600, "root:root");
    let (sink, check) = captured(Mode::Check);
    kubeconfig_perms(&node, path, "wheel", false, Mode::Check, &check).unwrap();
    let shown = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
    assert!(
        shown.contains("mode 0600 -> 0640, group root -> wheel"),
        "{shown}"
    );
    assert!(node.commands().iter().all(|c| !c.contains("chgrp")));
    kubeconfig_perms(&node, path, "wheel", true, Mode::Apply, &quiet()).unwrap();
    assert!(
        node.commands()
            .contains(&format!("chgrp wheel {path} && chmod 0640 {path}")),
        "{:?}",
        node.commands()
    );

    node.put_with(path, "apiVersion: v1\n", 0o640, "root:wheel");
    let fine = quiet();
    kubeconfig_perms(&node, path, "wheel", true, Mode::Apply, &fine).unwrap();
    assert_eq!(fine.counts()["s1"].changed, 0);
}

type Sink = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

/// A report whose output the test can read.
fn captured(mode: Mode) -> (Sink, Report) {
    struct W(Sink);
    impl std::io::Write for W {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    (sink.clone(), Report::new(Box::new(W(sink)), mode))
}

#[test]
fn coredns_restarts_only_after_k3s_applied_the_manifest() {
    let manifest = "kind: ConfigMap\n";
    let sum = hex::encode(Sha256::digest(manifest.as_bytes()));
    let restarts = |n: &Fake| {
        n.commands()
            .iter()
            .filter(|c| c.contains("rollout restart deployment/coredns"))
            .count()
    };

    let applied = Fake::new("s1");
    applied.answer("get addon airlock-coredns-custom", 0, &format!("{sum}\n"));
    restart_coredns(&applied, Some(manifest), Duration::from_secs(5), &quiet()).unwrap();
    assert_eq!(restarts(&applied), 1, "{:?}", applied.commands());
    assert!(
        applied
            .commands()
            .iter()
            .any(|c| c.contains("rollout status deployment/coredns")),
        "{:?}",
        applied.commands()
    );

    // K3s still has the previous manifest: no restart, a clear error at the deadline.
    let stale = Fake::new("s1");
    stale.answer("get addon airlock-coredns-custom", 0, "0123abcd\n");
    let err = restart_coredns(&stale, Some(manifest), Duration::ZERO, &quiet()).unwrap_err();
    assert!(err.to_string().contains("has not applied"), "{err}");
    assert_eq!(restarts(&stale), 0);

    // No coredns deployment (yet): no restart either.
    let missing = Fake::new("s1");
    missing.answer("get deployment coredns", 1, "");
    assert!(restart_coredns(&missing, None, Duration::ZERO, &quiet()).is_err());
    assert_eq!(restarts(&missing), 0);

    // The ConfigMap was deleted: nothing to wait for.
    let removed = Fake::new("s1");
    restart_coredns(&removed, None, Duration::from_secs(5), &quiet()).unwrap();
    assert_eq!(restarts(&removed), 1);
}
