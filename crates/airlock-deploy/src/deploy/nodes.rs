//! Stage `nodes`: K3s binary, install script, the gateway's CA and `registries.yaml` on each
//! node; the installer (air-gapped: it downloads nothing) only when how K3s is installed
//! changed; a restart only when its registry config changed; then every node Ready.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use super::files::{FileSpec, ensure};
use super::report::Report;
use super::{DeployError, Mode};
use airlock_remote::{ExecError, Executor, Input, quote};

pub const K3S_BINARY: &str = "/usr/local/bin/k3s";
pub const INSTALL_SCRIPT: &str = "/usr/local/share/airlock/k3s-install.sh";
pub const REGISTRIES: &str = "/etc/rancher/k3s/registries.yaml";
/// How K3s was installed; a change re-runs the installer. The token is in it only as an
/// HMAC keyed with a random per-node salt stored beside it, so the file cannot be used to
/// test guesses against a table, and it is root's alone (0600).
pub const MARKER: &str = "/etc/rancher/k3s/airlock-install.env";

/// A node's part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The first server: starts the cluster.
    FirstServer,
    /// Another server: joins the first.
    Server,
    Agent,
}

impl Role {
    fn exec(self) -> &'static str {
        match self {
            Role::FirstServer | Role::Server => "server",
            Role::Agent => "agent",
        }
    }

    fn service(self) -> &'static str {
        match self {
            Role::FirstServer | Role::Server => "k3s",
            Role::Agent => "k3s-agent",
        }
    }
}

/// What every node gets (the same for all nodes of one architecture).
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub version: &'a str,
    pub binary: (&'a Path, &'a str),
    pub script: (&'a Path, &'a str),
    /// Where the CA goes on the node, and the PEM.
    pub ca: Option<(&'a str, &'a str)>,
    pub registries: &'a str,
    pub token: &'a str,
    /// `https://<first server>:6443`.
    pub server_url: &'a str,
}

/// The installer's environment and arguments: fed on stdin, so the token never appears in
/// a process list.
pub fn installer_script(name: &str, role: Role, inputs: &Inputs<'_>) -> String {
    let mut script = String::from("set -e\n");
    script.push_str("export INSTALL_K3S_SKIP_DOWNLOAD=true\n");
    script.push_str("export INSTALL_K3S_SKIP_SELINUX_RPM=true\n");
    let _ = writeln!(
        script,
        "export INSTALL_K3S_VERSION={}",
        quote(inputs.version)
    );
    let _ = writeln!(script, "export K3S_TOKEN={}", quote(inputs.token));
    if role != Role::FirstServer {
        let _ = writeln!(script, "export K3S_URL={}", quote(inputs.server_url));
    }
    let _ = writeln!(
        script,
        "exec sh {INSTALL_SCRIPT} {} --node-name {}",
        role.exec(),
        quote(name)
    );
    script
}

/// The marker: everything that, when changed, means the installer must run again. `salt`
/// keys the token's HMAC (hex, 16 random bytes when the node has no marker yet).
pub fn marker(name: &str, role: Role, inputs: &Inputs<'_>, salt: &str) -> String {
    format!(
        "# Written by `airlock deploy`: how K3s was installed on this node.\n{}token_salt={salt}\ntoken_hmac_sha256={}\n",
        marker_fields(name, role, inputs),
        token_hmac(salt, inputs.token),
    )
}

/// Markers of earlier versions: the token as its bare sha256. Recognized only to replace them
/// without reinstalling K3s.
fn legacy_marker(name: &str, role: Role, inputs: &Inputs<'_>) -> String {
    format!(
        "# Written by `airlock deploy`: how K3s was installed on this node.\n{}token_sha256={}\n",
        marker_fields(name, role, inputs),
        hex::encode(Sha256::digest(inputs.token.as_bytes())),
    )
}

fn marker_fields(name: &str, role: Role, inputs: &Inputs<'_>) -> String {
    let server_url = if role == Role::FirstServer {
        ""
    } else {
        inputs.server_url
    };
    format!(
        "role={}\nnode_name={name}\nversion={}\nserver_url={server_url}\nk3s_sha256={}\ninstall_sh_sha256={}\n",
        role.exec(),
        inputs.version,
        inputs.binary.1,
        inputs.script.1,
    )
}

/// HMAC-SHA256 of the token keyed with the salt (hex).
fn token_hmac(salt: &str, token: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(salt.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The salt of an installed marker, or a fresh one.
fn salt_of(installed: Option<&str>) -> String {
    installed
        .and_then(|text| text.lines().find_map(|l| l.strip_prefix("token_salt=")))
        .filter(|salt| salt.len() == 32 && salt.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(
            || {
                let mut bytes = [0u8; 16];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                hex::encode(bytes)
            },
            str::to_owned,
        )
}

/// Run the stage on one node.
pub fn run(
    exec: &dyn Executor,
    role: Role,
    inputs: &Inputs<'_>,
    mode: Mode,
    report: &Report,
) -> Result<(), DeployError> {
    let host = exec.host().to_owned();
    let fail = |e: ExecError| DeployError::host("nodes", &host, e);
    let mut files = vec![
        FileSpec::local(
            K3S_BINARY,
            inputs.binary.0.to_owned(),
            inputs.binary.1.to_owned(),
            0o755,
        ),
        FileSpec::local(
            INSTALL_SCRIPT,
            inputs.script.0.to_owned(),
            inputs.script.1.to_owned(),
            0o755,
        ),
    ];
    if let Some((path, pem)) = inputs.ca {
        files.push(FileSpec::text(path, pem, 0o644));
    }
    files.push(FileSpec::text(REGISTRIES, inputs.registries, 0o644));
    let mut config_changed = false;
    for spec in &files {
        let changed = ensure(exec, spec, mode, report).map_err(fail)?;
        config_changed |= changed && spec.path != K3S_BINARY && spec.path != INSTALL_SCRIPT;
    }
    let installed = exec
        .read(MARKER)
        .map_err(fail)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let wanted = marker(&host, role, inputs, &salt_of(installed.as_deref()));
    let marker = FileSpec::text(MARKER, wanted.as_str(), 0o600);
    let current = installed
        .as_deref()
        .is_some_and(|text| text == wanted || text == legacy_marker(&host, role, inputs));
    if current {
        // Also replaces a legacy marker, and fixes a marker's mode or owner.
        ensure(exec, &marker, mode, report).map_err(fail)?;
        report.ok(
            &host,
            &format!("K3s {} installed ({})", inputs.version, role.exec()),
        );
        if config_changed {
            let service = role.service();
            if mode == Mode::Apply {
                exec.run(&format!("systemctl restart {service}"))
                    .map_err(fail)?;
            }
            report.changed(
                &host,
                &format!("restart {service} (its registry config changed)"),
                None,
            );
        }
        return Ok(());
    }
    if mode == Mode::Apply {
        let script = installer_script(&host, role, inputs);
        let output = exec
            .exec("sh -s", Input::Bytes(script.as_bytes()))
            .map_err(fail)?;
        if !output.success() {
            return Err(fail(ExecError::Failed {
                host: host.clone(),
                command: format!("sh {INSTALL_SCRIPT} {} --node-name {host}", role.exec()),
                status: output.status,
                tail: output.tail(20),
            }));
        }
        // Written only after the installer succeeded, so a failed install runs again.
        ensure(
            exec,
            &marker,
            Mode::Apply,
            &Report::new(Box::new(std::io::sink()), Mode::Apply),
        )
        .map_err(fail)?;
    }
    report.changed(
        &host,
        &format!(
            "run the K3s installer ({} {}, air-gapped)",
            role.exec(),
            inputs.version
        ),
        None,
    );
    Ok(())
}

/// Wait until `k3s kubectl get nodes` on the first server shows every node Ready.
pub fn wait_ready(
    server: &dyn Executor,
    nodes: &[String],
    timeout: Duration,
    report: &Report,
) -> Result<(), DeployError> {
    let started = Instant::now();
    let mut missing: Vec<String>;
    loop {
        let listing = server.exec(
            &format!("{K3S_BINARY} kubectl get nodes --no-headers"),
            Input::None,
        );
        let ready = match &listing {
            Ok(output) if output.success() => ready_nodes(&output.stdout_text()),
            _ => Vec::new(),
        };
        missing = nodes
            .iter()
            .filter(|n| !ready.contains(n))
            .cloned()
            .collect();
        if missing.is_empty() {
            for node in nodes {
                report.ok(node, "Ready");
            }
            return Ok(());
        }
        if started.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(DeployError::host_message(
        "nodes",
        server.host(),
        format!(
            "not Ready after {} s: {}",
            timeout.as_secs(),
            missing.join(", ")
        ),
        "look at `journalctl -u k3s` / `-u k3s-agent` on those nodes; `k3s kubectl describe node` on the server",
    ))
}

/// Names of Ready nodes in `kubectl get nodes --no-headers` output.
pub fn ready_nodes(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let status = words.next()?;
            status
                .split(',')
                .any(|s| s == "Ready")
                .then(|| name.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
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
        assert_eq!(ready_nodes(listing), ["s1", "w2"]);
    }
}
