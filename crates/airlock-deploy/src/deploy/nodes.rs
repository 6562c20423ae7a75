//! Stage `nodes`: K3s binary, install script, the gateway's CA and `registries.yaml` on each
//! node, `config.yaml` with the `nvidia` runtime on GPU workers, and on servers the storage
//! directory and the `coredns-custom` manifest in K3s's auto-deploy directory; the installer
//! (air-gapped: it downloads nothing) only when how K3s is installed changed — version, files,
//! [`super::flags`]; a restart only when its configuration changed; then every node Ready and
//! the servers' kubeconfig readable by `kubeconfig_group`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use super::files::{FileSpec, diff, ensure, ensure_absent, ensure_dir};
use super::flags::NodeInstall;
use super::report::Report;
use super::{DeployError, Mode};
use airlock_remote::{ExecError, Executor, Input, quote};

pub const K3S_BINARY: &str = "/usr/local/bin/k3s";
pub const INSTALL_SCRIPT: &str = "/usr/local/share/airlock/k3s-install.sh";
pub const REGISTRIES: &str = "/etc/rancher/k3s/registries.yaml";
/// K3s's own configuration file: GPU workers get `default-runtime: nvidia` there.
pub const K3S_CONFIG: &str = "/etc/rancher/k3s/config.yaml";
pub const GPU_CONFIG: &str = "default-runtime: nvidia\n";
/// K3s applies every manifest here on the servers, and again when the file changes.
pub const COREDNS_MANIFEST: &str =
    "/var/lib/rancher/k3s/server/manifests/airlock-coredns-custom.yaml";
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
    /// This node's flags and environment.
    pub install: &'a NodeInstall,
    /// `base_dir`: created on servers before K3s starts.
    pub base_dir: &'a str,
    /// The `coredns-custom` manifest for servers; `None`: the site needs none (removed).
    pub coredns: Option<&'a str>,
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
    for (key, value) in &inputs.install.env {
        let _ = writeln!(script, "export {key}={}", quote(value));
    }
    let _ = write!(
        script,
        "exec sh {INSTALL_SCRIPT} {} --node-name {}",
        role.exec(),
        quote(name)
    );
    for flag in &inputs.install.flags {
        script.push(' ');
        script.push_str(&quote(flag));
    }
    script.push('\n');
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
    let mut fields = format!(
        "role={}\nnode_name={name}\nversion={}\nserver_url={server_url}\nk3s_sha256={}\ninstall_sh_sha256={}\n",
        role.exec(),
        inputs.version,
        inputs.binary.1,
        inputs.script.1,
    );
    // Markers before flags were part of the install have neither line: installs they
    // describe get the flags by running the installer again.
    let flags: Vec<String> = inputs.install.flags.iter().map(|f| quote(f)).collect();
    let _ = writeln!(fields, "flags={}", flags.join(" "));
    let env: Vec<String> = inputs
        .install
        .env
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    let _ = writeln!(fields, "env={}", env.join(" "));
    fields
}

/// What changed in how K3s is installed, as a diff of the marker's fields (the token's
/// lines left out: they differ by salt alone).
fn marker_diff(installed: Option<&str>, wanted: &str) -> String {
    let fields = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("token_"))
            .fold(String::new(), |mut all, l| {
                all.push_str(l);
                all.push('\n');
                all
            })
    };
    diff(
        MARKER,
        &fields(installed.unwrap_or_default()),
        &fields(wanted),
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

/// Run the stage on one node. Returns whether the node's `coredns-custom` manifest changed
/// (written, replaced or removed): `CoreDNS` then needs a restart ([`restart_coredns`]).
pub fn run(
    exec: &dyn Executor,
    role: Role,
    inputs: &Inputs<'_>,
    mode: Mode,
    report: &Report,
) -> Result<bool, DeployError> {
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
    if inputs.install.gpu {
        files.push(FileSpec::text(K3S_CONFIG, GPU_CONFIG, 0o644));
    }
    let mut config_changed = false;
    for spec in &files {
        let changed = ensure(exec, spec, mode, report).map_err(fail)?;
        config_changed |= changed && spec.path != K3S_BINARY && spec.path != INSTALL_SCRIPT;
    }
    let mut coredns_changed = false;
    if role != Role::Agent {
        ensure_dir(exec, inputs.base_dir, 0o755, mode, report).map_err(fail)?;
        coredns_changed = coredns(exec, inputs.coredns, mode, report).map_err(fail)?;
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
        return Ok(coredns_changed);
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
    let task = match installed.as_deref().and_then(version_in_marker) {
        Some(old) if old != inputs.version => format!(
            "k3s {old} → {}: run the K3s installer ({}, air-gapped)",
            inputs.version,
            role.exec()
        ),
        _ => format!(
            "run the K3s installer ({} {}, air-gapped)",
            role.exec(),
            inputs.version
        ),
    };
    report.changed(
        &host,
        &task,
        Some(marker_diff(installed.as_deref(), &wanted).trim_end()),
    );
    Ok(coredns_changed)
}

/// The `coredns-custom` manifest on a server: placed when the site needs one; else, when
/// an earlier deploy placed it, the `ConfigMap` deleted (K3s leaves what a removed manifest
/// created in the cluster) and the file removed. Returns whether anything changed.
fn coredns(
    exec: &dyn Executor,
    manifest: Option<&str>,
    mode: Mode,
    report: &Report,
) -> Result<bool, ExecError> {
    if let Some(manifest) = manifest {
        return ensure(
            exec,
            &FileSpec::text(COREDNS_MANIFEST, manifest, 0o600),
            mode,
            report,
        );
    }
    if exec.stat(COREDNS_MANIFEST)?.is_some() && mode == Mode::Apply {
        exec.run(&format!(
            "{K3S_BINARY} kubectl delete configmap coredns-custom --namespace kube-system --ignore-not-found"
        ))?;
    }
    ensure_absent(exec, COREDNS_MANIFEST, mode, report)
}

/// The name K3s gives the `Addon` that tracks a manifest: the file name up to its first dot.
const COREDNS_ADDON: &str = "airlock-coredns-custom";

/// Restart `CoreDNS` so it reads a changed `coredns-custom` (it does not reload imported
/// files on its own), as Scout's playbook does: first wait until K3s applied `manifest`
/// (its `Addon` records the sha256 of the file it applied last) and the `coredns` deployment
/// exists, then `rollout restart` and `rollout status`. `None`: the `ConfigMap` was
/// deleted, nothing to wait for.
pub fn restart_coredns(
    server: &dyn Executor,
    manifest: Option<&str>,
    timeout: Duration,
    report: &Report,
) -> Result<(), DeployError> {
    let host = server.host().to_owned();
    let wanted = manifest.map(|m| hex::encode(Sha256::digest(m.as_bytes())));
    let kubectl = |args: &str| {
        server
            .exec(&format!("{K3S_BINARY} kubectl {args}"), Input::None)
            .ok()
            .filter(airlock_remote::Output::success)
            .map(|o| o.stdout_text().trim().to_owned())
    };
    let started = Instant::now();
    loop {
        let applied = wanted.as_ref().is_none_or(|sum| {
            kubectl(&format!(
                "get addon {COREDNS_ADDON} --namespace kube-system -o jsonpath={{.spec.checksum}}"
            ))
            .is_some_and(|applied| &applied == sum)
        });
        if applied && kubectl("get deployment coredns --namespace kube-system -o name").is_some() {
            break;
        }
        if started.elapsed() >= timeout {
            return Err(DeployError::host_message(
                "nodes",
                &host,
                format!(
                    "K3s has not applied {COREDNS_MANIFEST}, or runs no coredns deployment, after {} s",
                    timeout.as_secs()
                ),
                "look at `k3s kubectl get addon -n kube-system` and `journalctl -u k3s` on that server",
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let fail = |e: ExecError| DeployError::host("nodes", &host, e);
    server
        .run(&format!(
            "{K3S_BINARY} kubectl rollout restart deployment/coredns --namespace kube-system"
        ))
        .map_err(fail)?;
    server
        .run(&format!(
            "{K3S_BINARY} kubectl rollout status deployment/coredns --namespace kube-system --timeout={}s",
            timeout.as_secs().max(1)
        ))
        .map_err(fail)?;
    report.changed(
        &host,
        "restart CoreDNS (its coredns-custom configuration changed)",
        None,
    );
    Ok(())
}

/// The servers' kubeconfig: mode 0640 and `group` (K3s does not apply
/// `K3S_KUBECONFIG_GROUP` itself). Changes mode and group in place: K3s owns the content.
/// A missing file is an error once K3s runs (`must_exist`), else nothing to do yet.
pub fn kubeconfig_perms(
    exec: &dyn Executor,
    path: &str,
    group: &str,
    must_exist: bool,
    mode: Mode,
    report: &Report,
) -> Result<(), DeployError> {
    let host = exec.host().to_owned();
    let fail = |e: ExecError| DeployError::host("nodes", &host, e);
    let wanted = airlock_remote::Mode(super::flags::KUBECONFIG_MODE);
    let Some(state) = exec.stat(path).map_err(fail)? else {
        if must_exist {
            return Err(DeployError::host_message(
                "nodes",
                &host,
                format!("K3s runs but has not written its kubeconfig {path}"),
                "look at `journalctl -u k3s` on that server; check `kubeconfig_yaml`",
            ));
        }
        return Ok(());
    };
    let current_group = state.owner.split_once(':').map_or("", |(_, g)| g);
    if state.mode == wanted && current_group == group {
        report.ok(&host, &format!("{path} {wanted} group {group}"));
        return Ok(());
    }
    if mode == Mode::Apply {
        let p = quote(path);
        exec.run(&format!("chgrp {} {p} && chmod {wanted} {p}", quote(group)))
            .map_err(fail)?;
    }
    report.changed(
        &host,
        path,
        Some(&format!(
            "    mode {} -> {wanted}, group {current_group} -> {group}",
            state.mode
        )),
    );
    Ok(())
}

/// Wait until `k3s kubectl get nodes` on the first server shows every node Ready, and
/// running `version` when one is given (a rolling upgrade waits for the new version).
pub fn wait_ready(
    server: &dyn Executor,
    nodes: &[String],
    version: Option<&str>,
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
            .filter(|n| {
                !ready
                    .iter()
                    .any(|(name, at)| name == *n && version.is_none_or(|v| v == at))
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            for node in nodes {
                match version {
                    Some(version) => report.ok(node, &format!("Ready at {version}")),
                    None => report.ok(node, "Ready"),
                }
            }
            return Ok(());
        }
        if started.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let at = version.map(|v| format!(" at {v}")).unwrap_or_default();
    Err(DeployError::host_message(
        "nodes",
        server.host(),
        format!(
            "not Ready{at} after {} s: {}",
            timeout.as_secs(),
            missing.join(", ")
        ),
        "look at `journalctl -u k3s` / `-u k3s-agent` on those nodes; `k3s kubectl describe node` on the server",
    ))
}

/// The Ready nodes in `kubectl get nodes --no-headers` output, each with the version its
/// kubelet reports.
pub fn ready_nodes(listing: &str) -> Vec<(String, String)> {
    listing
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let [name, status, _roles, _age, version, ..] = words[..] else {
                return None;
            };
            status
                .split(',')
                .any(|s| s == "Ready")
                .then(|| (name.to_owned(), version.to_owned()))
        })
        .collect()
}

/// The K3s version the install marker on a node records; `None` before the first install.
pub fn installed_version(exec: &dyn Executor) -> Result<Option<String>, ExecError> {
    Ok(exec
        .read(MARKER)?
        .and_then(|bytes| version_in_marker(&String::from_utf8_lossy(&bytes))))
}

fn version_in_marker(marker: &str) -> Option<String> {
    marker
        .lines()
        .find_map(|l| l.strip_prefix("version="))
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests;
