//! `airlock kubeconfig`: the first server's kubeconfig on the control node.
//!
//! K3s writes a kubeconfig whose `server` is `https://127.0.0.1:6443`. Fetched over SSH, it
//! is pointed at the address the control node reaches the server by (`ansible_host`, else
//! the inventory name), keeps K3s's CA, and is written 0600. Scout's playbook turns TLS
//! verification off at this point because the API certificate does not name that address;
//! `airlock deploy` adds it with `--tls-san`, so here the copy keeps verification on, and
//! [`verify`] checks that the API's certificate really is valid for it.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

use airlock_ansible::connection::Machine;
use airlock_ansible::inventory::Inventory;
use airlock_ansible::yaml::{self, Kind, Node};
use airlock_remote::{ExecError, Executor};
use airlock_site::site::Site;

use crate::deploy::report::Report;
use crate::deploy::{DeployError, Mode};

/// The port of the Kubernetes API on K3s servers.
pub const API_PORT: u16 = 6443;

/// How long [`verify`] waits for the API server.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the kubeconfig could not be fetched, rewritten or written.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("cannot read {path} on {host}: {source}")]
    Remote {
        host: String,
        path: String,
        source: Box<ExecError>,
    },
    #[error(
        "{path} does not exist on {host}\n  what to do: install K3s there first (`airlock deploy`), or set `kubeconfig_yaml` to where it is"
    )]
    Missing { host: String, path: String },
    #[error("{path} on {host} is not a kubeconfig as K3s writes it: {reason}")]
    Shape {
        host: String,
        path: String,
        reason: String,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `airlock kubeconfig` does for a site: which server, which file there, which URL,
/// where the copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub server: Machine,
    /// `kubeconfig_yaml` on the server.
    pub remote: String,
    /// `https://<ansible_host or name>:6443`.
    pub url: String,
    /// `--out`, else `local_kubeconfig_yaml`, else [`default_local_path`].
    pub local: PathBuf,
}

impl Plan {
    /// The plan for the site's first server; `None` when the site has no servers.
    #[must_use]
    pub fn new(site: &Site, inventory: &Inventory, out: Option<&Path>) -> Option<Self> {
        let server = site.servers.first()?.clone();
        let vars = inventory.vars_of(&server.name);
        let text = |name: &str| {
            vars.get(name)
                .and_then(|v| v.value.as_str())
                .filter(|t| !t.is_empty() && !t.contains("{{"))
                .map(str::to_owned)
        };
        let remote = site.install.kubeconfig.clone();
        let local = out
            .map(Path::to_owned)
            .or_else(|| text("local_kubeconfig_yaml").map(PathBuf::from))
            .unwrap_or_else(|| {
                default_local_path(&inventory.file, text("scout_repo_dir").as_deref(), &server)
            });
        Some(Self {
            url: api_url(&server),
            server,
            remote,
            local,
        })
    }
}

/// Whether the control node is outside the cluster (Scout's
/// `ansible_control_node_external_to_cluster`): as the inventory says when it sets a plain
/// boolean, else when the first server is not reached with `ansible_connection: local`.
#[must_use]
pub fn control_node_is_external(site: &Site, inventory: &Inventory) -> bool {
    let Some(server) = site.servers.first() else {
        return false;
    };
    inventory
        .vars_of(&server.name)
        .get("ansible_control_node_external_to_cluster")
        .and_then(|v| match &v.value.kind {
            Kind::Scalar { plain: true, .. } => v.value.as_bool(),
            _ => None,
        })
        .unwrap_or(!server.is_local())
}

/// The API address the control node uses: `https://<ansible_host or name>:6443`.
#[must_use]
pub fn api_url(machine: &Machine) -> String {
    match machine.address.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("https://[{ip}]:{API_PORT}"),
        _ => format!("https://{}:{API_PORT}", machine.address),
    }
}

/// Where the copy goes by default, as Scout's playbook puts it:
/// `<scout repository>/.kube/scout/<ansible_host or name>/config`. The repository is
/// `scout_repo_dir` when the inventory sets it, else the parent of the inventory's directory
/// when that is Scout's `ansible/`, else the inventory's directory.
#[must_use]
pub fn default_local_path(inventory: &Path, repo_dir: Option<&str>, machine: &Machine) -> PathBuf {
    let repo = repo_dir.map_or_else(
        || {
            let dir = inventory
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or_else(|| Path::new("."));
            match dir.file_name() {
                Some(name) if name == "ansible" => dir.parent().unwrap_or(dir).to_owned(),
                _ => dir.to_owned(),
            }
        },
        PathBuf::from,
    );
    repo.join(".kube/scout")
        .join(&machine.address)
        .join("config")
}

/// Point every cluster of a K3s kubeconfig at `server`, keeping its CA; any
/// `insecure-skip-tls-verify` goes. Refuses a kubeconfig without CA data, since the copy
/// could then not verify the server.
pub fn rewrite(text: &str, server: &str) -> Result<String, String> {
    let doc = yaml::parse_str(text, Path::new("kubeconfig")).map_err(|e| e.to_string())?;
    let clusters = doc
        .get("clusters")
        .and_then(Node::as_seq)
        .filter(|c| !c.is_empty())
        .ok_or("it names no clusters")?;
    let mut server_lines = Vec::new();
    let mut insecure_lines = Vec::new();
    for entry in clusters {
        let cluster = entry
            .get("cluster")
            .ok_or("a cluster entry has no `cluster`")?;
        let current = cluster
            .get("server")
            .filter(|s| s.as_str().is_some())
            .ok_or("a cluster has no `server`")?;
        let ca = cluster
            .get("certificate-authority-data")
            .and_then(Node::as_str)
            .ok_or("a cluster has no `certificate-authority-data` to verify the server with")?;
        ca_pem(ca)?;
        server_lines.push(current.mark.line);
        if let Some(map) = cluster.as_map() {
            insecure_lines.extend(
                map.iter()
                    .filter(|(k, _)| k.as_str() == Some("insecure-skip-tls-verify"))
                    .map(|(k, _)| k.mark.line),
            );
        }
    }
    let mut out = String::with_capacity(text.len() + server.len());
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if insecure_lines.contains(&number) {
            continue;
        }
        if server_lines.contains(&number) {
            let (key, _) = line
                .split_once("server:")
                .ok_or("a `server` value is not on its key's line")?;
            out.push_str(key);
            out.push_str("server: ");
            out.push_str(server);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

/// The PEM of a `certificate-authority-data` value.
fn ca_pem(data: &str) -> Result<Vec<u8>, String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| "`certificate-authority-data` is not base64")?;
    if !pem.starts_with(b"-----BEGIN CERTIFICATE-----") {
        return Err("`certificate-authority-data` is not a PEM certificate".into());
    }
    Ok(pem)
}

/// Fetch `remote` from the server, point it at `server`, and return the new text.
pub fn fetch(exec: &dyn Executor, remote: &str, server: &str) -> Result<String, KubeconfigError> {
    let host = exec.host().to_owned();
    let bytes = exec
        .read(remote)
        .map_err(|source| KubeconfigError::Remote {
            host: host.clone(),
            path: remote.to_owned(),
            source: Box::new(source),
        })?
        .ok_or_else(|| KubeconfigError::Missing {
            host: host.clone(),
            path: remote.to_owned(),
        })?;
    let shape = |reason: String| KubeconfigError::Shape {
        host: host.clone(),
        path: remote.to_owned(),
        reason,
    };
    let text = String::from_utf8(bytes).map_err(|_| shape("it is not UTF-8 text".into()))?;
    rewrite(&text, server).map_err(shape)
}

/// Write the kubeconfig at `path`, mode 0600, its directory 0700 when created; through a
/// temporary file renamed into place, so a reader never sees half of it.
pub fn write(path: &Path, text: &str) -> Result<(), KubeconfigError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let fail = |source| KubeconfigError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let mut file = tempfile::Builder::new()
        .prefix(".kubeconfig-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.as_file().sync_all().map_err(fail)?;
    file.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// `deploy`'s last stage: fetch, write and verify the copy; under `--check`, say whether it
/// would change. A copy that does not verify is a note, not a failure: the cluster is
/// installed either way.
pub fn copy(
    plan: &Plan,
    exec: &dyn Executor,
    mode: Mode,
    report: &Report,
) -> Result<(), DeployError> {
    let local = plan.local.display().to_string();
    let text = match fetch(exec, &plan.remote, &plan.url) {
        Ok(text) => text,
        // Under --check on a fresh cluster, K3s has not written it yet.
        Err(KubeconfigError::Missing { .. }) if mode == Mode::Check => {
            report.changed(&plan.server.name, &format!("kubeconfig {local}"), None);
            return Ok(());
        }
        Err(e) => {
            return Err(DeployError::host_message(
                "kubeconfig",
                &plan.server.name,
                e.to_string(),
                format!(
                    "run `airlock kubeconfig -i INVENTORY` once {} is fixed",
                    plan.server.name
                ),
            ));
        }
    };
    if std::fs::read_to_string(&plan.local).is_ok_and(|current| current == text) {
        report.ok(&plan.server.name, &format!("kubeconfig {local}"));
    } else {
        if mode == Mode::Apply {
            write(&plan.local, &text).map_err(|e| {
                DeployError::local(
                    "kubeconfig",
                    e.to_string(),
                    "check that this directory is writable, or use `airlock kubeconfig --out FILE`",
                )
            })?;
        }
        report.changed(&plan.server.name, &format!("kubeconfig {local}"), None);
    }
    if mode == Mode::Apply {
        if let Err(reason) = verify(&text) {
            report.note(&format!(
                "note: the kubeconfig at {local} was written, but the API server's certificate did not verify: {reason}"
            ));
        }
    }
    Ok(())
}

/// Connect to the kubeconfig's first server and check its certificate against the
/// kubeconfig's own CA, for the name or address the kubeconfig uses. Any HTTP answer (401
/// included: no credentials are sent) means TLS verified.
pub fn verify(text: &str) -> Result<(), String> {
    let doc = yaml::parse_str(text, Path::new("kubeconfig")).map_err(|e| e.to_string())?;
    let cluster = doc
        .get("clusters")
        .and_then(Node::as_seq)
        .and_then(<[Node]>::first)
        .and_then(|c| c.get("cluster"))
        .ok_or("no cluster")?;
    let server = cluster
        .get("server")
        .and_then(Node::as_str)
        .ok_or("no server")?;
    let ca = cluster
        .get("certificate-authority-data")
        .and_then(Node::as_str)
        .ok_or("no certificate-authority-data")?;
    let ca = reqwest::Certificate::from_pem(&ca_pem(ca)?).map_err(|e| e.to_string())?;
    let client = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .no_proxy()
        .timeout(VERIFY_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}/version", server.trim_end_matches('/'));
    client
        .get(&url)
        .send()
        .map(drop)
        .map_err(|e| describe(&e, server))
}

/// A reqwest error with its causes, which hold the TLS reason.
fn describe(error: &reqwest::Error, server: &str) -> String {
    let mut text = format!("{server}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
