//! `airlock deploy`: the gateway and an air-gapped K3s cluster, installed over SSH in
//! stages, each idempotent and reported per host.
//!
//! 1. [`staging`]: `airlock` + `airlock.toml` + systemd unit on each staging node, the first
//!    first; restart only on change; `/healthz` from the control node; the CA read back when
//!    self-signed, and given to the other staging nodes.
//! 2. artifacts: `k3s`, its checksum file and the install script into the control node's
//!    cache (through an [`ArtifactSource`]), verified before any node sees them.
//! 3. `SELinux`: `k3s-selinux` and `container-selinux` on nodes that enforce it.
//! 4. [`gpu`]: the NVIDIA container toolkit on `gpu_workers`.
//! 5. [`nodes`]: files, the installer with its [`flags`] (servers first, then agents),
//!    restarts, Ready, the servers' kubeconfig permissions; a version change rolls node by
//!    node (`rollout`).
//! 6. kubeconfig: the first server's, on the control node when it is outside the cluster.
//!
//! `--check` runs every comparison and prints what would change, changing nothing.

pub mod fetcher;
pub mod files;
pub mod flags;
pub mod gpu;
pub mod nodes;
pub mod report;
mod rollout;
pub mod selinux_policy;
pub mod staging;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use airlock_ansible::connection::Machine;
use airlock_ansible::inventory::Inventory;
use airlock_remote::{ExecError, Executor};
use airlock_site::render::Rendered;
use airlock_site::site::{GatewayTls, Site, Staging};

use crate::artifacts::{ArtifactError, K3sArtifacts};
use crate::rpms::{CachedRpm, RpmError};
use nodes::Role;
use report::Report;

/// Whether a run changes the hosts or only shows what it would change (`--check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Compare and report; change nothing.
    Check,
    /// Make the changes.
    Apply,
}

/// How deploy runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    /// Only these hosts (inventory names or group names); `None` = every host.
    pub limit: Option<Vec<String>>,
    /// The airlock binary installed on the staging node.
    pub airlock_binary: PathBuf,
    /// The control node's artifact cache.
    pub cache_dir: PathBuf,
    /// How long to wait for the gateway to answer and for nodes to become Ready.
    pub wait_timeout: Duration,
    /// Progress bars for downloads.
    pub progress: bool,
    /// How many agents a rolling upgrade takes at once (servers go one at a time).
    pub batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: Mode::Apply,
            limit: None,
            airlock_binary: PathBuf::new(),
            cache_dir: PathBuf::new(),
            wait_timeout: Duration::from_secs(300),
            progress: false,
            batch: 1,
        }
    }
}

/// A stage that stopped: where, why, and how to go on.
#[derive(Debug, thiserror::Error)]
#[error("stage `{stage}` failed{}: {message}\n  what to do: {hint}", host.as_ref().map(|h| format!(" on {h}")).unwrap_or_default())]
pub struct DeployError {
    pub stage: &'static str,
    pub host: Option<String>,
    pub message: String,
    pub hint: String,
}

impl DeployError {
    pub fn local(stage: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            stage,
            host: None,
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// A command on `host` failed: the error carries the command, status and output tail.
    #[allow(clippy::needless_pass_by_value)] // called as `.map_err(|e| DeployError::host(…, e))`
    pub fn host(stage: &'static str, host: &str, error: ExecError) -> Self {
        let hint = match &error {
            ExecError::Unreachable { .. } => format!(
                "check that `ssh {host}` works from this machine (keys, ~/.ssh/config, ansible_host/ansible_port); then run deploy again, or with `--limit` to leave {host} out"
            ),
            _ => format!(
                "fix the cause on {host}, then run deploy again (`--limit {host}` runs only that host)"
            ),
        };
        Self {
            stage,
            host: Some(host.to_owned()),
            message: error.to_string(),
            hint,
        }
    }

    pub fn host_message(
        stage: &'static str,
        host: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            stage,
            host: Some(host.to_owned()),
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// How the control node reaches the gateway (for downloads through its raw proxies).
#[derive(Debug, Clone)]
pub struct GatewayLink {
    pub staging: Staging,
    pub ca: Option<Vec<u8>>,
    pub insecure: bool,
}

/// Where K3s artifacts and RPM packages come from; verifies them before returning.
/// [`fetcher::Fetcher`] is the control node's cache; unit tests put fakes here.
pub trait ArtifactSource: Sync {
    /// K3s for `arch` (`amd64`, `arm64`, `arm`).
    fn k3s(&self, arch: &str, gateway: Option<&GatewayLink>) -> Result<K3sArtifacts, SourceError>;
    /// `packages` and what they need from the yum repositories `repos` (each the URL of the
    /// directory holding `repodata/`), for `arch` (`uname -m`).
    fn rpms(
        &self,
        repos: &[String],
        packages: &[&str],
        arch: &str,
    ) -> Result<Vec<CachedRpm>, SourceError>;
}

/// Why an [`ArtifactSource`] could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A download or the cache (K3s releases, and the HTTP client for RPMs).
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// Resolving or downloading RPM packages.
    #[error(transparent)]
    Rpm(#[from] RpmError),
}

/// Hosts reached one way or another (SSH, local, fake).
pub type Connect<'a> = dyn Fn(&Machine) -> Arc<dyn Executor> + Sync + 'a;

/// The sha256 of a local file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Whether `host` is in `--limit` (a host name or a group it belongs to).
pub fn in_limit(inventory: &Inventory, limit: Option<&[String]>, host: &str) -> bool {
    let Some(limit) = limit else { return true };
    limit
        .iter()
        .any(|l| l == host || inventory.hosts_of(l).contains(&host))
}

/// Names in `--limit` that are neither a host nor a group of the inventory.
pub fn unknown_limits(inventory: &Inventory, limit: &[String]) -> Vec<String> {
    limit
        .iter()
        .filter(|l| inventory.host(l).is_none() && inventory.group(l).is_none())
        .cloned()
        .collect()
}

/// Map `uname -m` to K3s's architecture names.
pub fn k3s_arch(uname: &str) -> Option<&'static str> {
    match uname.trim() {
        "x86_64" | "amd64" => Some("amd64"),
        "aarch64" | "arm64" => Some("arm64"),
        "armv7l" | "armv7" | "armhf" => Some("arm"),
        _ => None,
    }
}

/// The stages, in order; each runs on every chosen host before the next starts.
const STAGES: [Stage; 6] = [
    stage_staging,
    stage_artifacts,
    stage_selinux,
    stage_gpu,
    rollout::stage_nodes,
    stage_kubeconfig,
];

/// One stage of a deploy run: it reads what earlier stages left in the [`Run`] and adds
/// its own results.
type Stage = fn(&mut Run<'_>, Mode) -> Result<(), DeployError>;

/// What the stages of one deploy share: the inputs, and what earlier stages found.
struct Run<'a> {
    site: &'a Site,
    inventory: &'a Inventory,
    rendered: &'a Rendered,
    connect: &'a Connect<'a>,
    artifacts: &'a dyn ArtifactSource,
    options: &'a Options,
    report: &'a Report,
    /// The cluster nodes `--limit` chose, with their roles.
    nodes: Vec<(&'a Machine, Role)>,
    /// Set by `staging`: how the control node reaches the gateway.
    gateway: Option<GatewayLink>,
    /// Set by `artifacts`: one executor, `uname -m` and K3s architecture per node.
    execs: Vec<Arc<dyn Executor>>,
    unames: Vec<String>,
    arches: Vec<&'static str>,
    /// Set by `artifacts`: the K3s release per architecture (`None`: not fetched, check
    /// mode only).
    fetched: Vec<(&'static str, Option<K3sArtifacts>)>,
}

impl Run<'_> {
    fn chosen(&self, machine: &Machine) -> bool {
        in_limit(self.inventory, self.options.limit.as_deref(), &machine.name)
    }
}

/// Run every stage. Stops at the first stage that fails on any host.
pub fn deploy(
    site: &Site,
    inventory: &Inventory,
    rendered: &Rendered,
    connect: &Connect<'_>,
    artifacts: &dyn ArtifactSource,
    options: &Options,
    report: &Report,
) -> Result<(), DeployError> {
    let limit = options.limit.as_deref();
    let nodes: Vec<(&Machine, Role)> = node_roles(site)
        .into_iter()
        .filter(|(m, _)| in_limit(inventory, limit, &m.name))
        .collect();
    check_secrets(
        site,
        site.replicas
            .iter()
            .map(|s| &s.machine)
            .chain(nodes.iter().map(|(m, _)| *m)),
        !nodes.is_empty(),
    )?;
    let mut run = Run {
        site,
        inventory,
        rendered,
        connect,
        artifacts,
        options,
        report,
        nodes,
        gateway: None,
        execs: Vec::new(),
        unames: Vec::new(),
        arches: Vec::new(),
        fetched: Vec::new(),
    };
    for stage in STAGES {
        stage(&mut run, options.mode)?;
    }
    Ok(())
}

/// Stage 1: the gateway on each staging node `--limit` chose, the first one first (its CA is
/// the site's); the first one's CA read back when `--limit` left it out.
fn stage_staging(run: &mut Run<'_>, mode: Mode) -> Result<(), DeployError> {
    let (site, options, report) = (run.site, run.options, run.report);
    let Some(primary) = site.staging.as_ref() else {
        return Ok(());
    };
    let exec = (run.connect)(&primary.machine);
    let ca = if run.chosen(&primary.machine) {
        report.stage(
            "staging",
            &format!("the gateway on {}", primary.machine.name),
        );
        let files = staging::files(site, gateway_config(run, primary)?, options)?;
        staging::run(site, primary, exec.as_ref(), &files, options, report)?
    } else {
        let path = format!("{}/ca.crt", staging::tls_dir(site));
        exec.read(&path)
            .map_err(|e| DeployError::host("staging", &primary.machine.name, e))?
    };
    let replicas: Vec<&Staging> = site
        .replicas
        .iter()
        .skip(1)
        .filter(|r| run.chosen(&r.machine))
        .collect();
    if !replicas.is_empty() {
        let site_ca = match site.tls {
            GatewayTls::SelfSigned => site_ca(run, exec.as_ref(), mode)?,
            GatewayTls::Files { .. } => None,
        };
        for replica in replicas {
            report.stage(
                "staging",
                &format!("the gateway on {} (replica)", replica.machine.name),
            );
            let mut files = staging::files(site, gateway_config(run, replica)?, options)?;
            if let Some(site_ca) = &site_ca {
                files.extend(staging::site_ca_files(site, site_ca));
            }
            let exec = (run.connect)(&replica.machine);
            staging::run(site, replica, exec.as_ref(), &files, options, report)?;
        }
    }
    run.gateway = Some(GatewayLink {
        staging: primary.clone(),
        ca,
        insecure: site.insecure_skip_verify,
    });
    Ok(())
}

/// `replica`'s rendered gateway config.
fn gateway_config<'r>(run: &Run<'r>, replica: &Staging) -> Result<&'r str, DeployError> {
    let path = airlock_site::render::gateway_config_path(run.site, replica);
    run.rendered.get(&path.to_string_lossy()).ok_or_else(|| {
        DeployError::local(
            "staging",
            format!("the rendered gateway config {} is missing", path.display()),
            "report this as a bug",
        )
    })
}

/// The first staging node's CA and key, which the other replicas issue their certificates
/// from. Before that gateway first ran there is none: `--check` says so, a real run stops.
fn site_ca(
    run: &Run<'_>,
    primary: &dyn Executor,
    mode: Mode,
) -> Result<Option<staging::SiteCa>, DeployError> {
    let found = staging::read_site_ca(run.site, primary)
        .map_err(|e| DeployError::host("staging", primary.host(), e))?;
    if found.is_none() {
        if mode == Mode::Check {
            run.report.note(&format!(
                "note: {} has no CA yet (its gateway makes it on first start); the other staging hosts get it then",
                primary.host()
            ));
        } else {
            return Err(DeployError::host_message(
                "staging",
                primary.host(),
                format!(
                    "no CA in {} to give the other staging hosts",
                    staging::tls_dir(run.site)
                ),
                "deploy the first staging host first (include it in --limit), so its gateway makes the site's CA",
            ));
        }
    }
    Ok(found)
}

/// Stage 2: K3s for every architecture the nodes have, into the control node's cache.
fn stage_artifacts(run: &mut Run<'_>, mode: Mode) -> Result<(), DeployError> {
    if run.nodes.is_empty() {
        return Ok(());
    }
    run.execs = run.nodes.iter().map(|(m, _)| (run.connect)(m)).collect();
    run.report.stage(
        "artifacts",
        "K3s binary, checksums and install script on the control node",
    );
    run.unames = parallel(&run.execs, |exec| {
        exec.run("uname -m")
            .map(|u| u.trim().to_owned())
            .map_err(|e| DeployError::host("artifacts", exec.host(), e))
    })?;
    run.arches = run
        .unames
        .iter()
        .zip(&run.execs)
        .map(|(uname, exec)| {
            k3s_arch(uname).ok_or_else(|| {
                DeployError::host_message(
                    "artifacts",
                    exec.host(),
                    format!("unsupported CPU architecture `{uname}`"),
                    "K3s ships amd64, arm64 and armhf binaries",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for &arch in &run.arches {
        if run.fetched.iter().any(|(a, _)| *a == arch) {
            continue;
        }
        let files = match run.artifacts.k3s(arch, run.gateway.as_ref()) {
            Ok(files) => {
                run.report.ok(
                    "localhost",
                    &format!(
                        "k3s {} ({arch}) verified: sha256 {}",
                        files.version, files.binary.sha256
                    ),
                );
                Some(files)
            }
            // Before the first deploy the gateway is not there to fetch through: --check
            // still shows everything else, with the K3s files as unknown.
            Err(message) if mode == Mode::Check => {
                run.report.note(&format!(
                    "note: K3s files not fetched in check mode ({message}); they show as unknown"
                ));
                None
            }
            Err(message) => {
                return Err(DeployError::local(
                    "artifacts",
                    message.to_string(),
                    "nothing was changed on the nodes; fix the source of the K3s files (or the gateway's k3s-releases proxy) and run deploy again",
                ));
            }
        };
        run.fetched.push((arch, files));
    }
    Ok(())
}

/// Stage 3: `SELinux` policy packages, on every node at once.
fn stage_selinux(run: &mut Run<'_>, mode: Mode) -> Result<(), DeployError> {
    if run.nodes.is_empty() {
        return Ok(());
    }
    run.report.stage(
        "selinux",
        "k3s-selinux and container-selinux where SELinux is on",
    );
    let run = &*run;
    let indices: Vec<usize> = (0..run.execs.len()).collect();
    let ca = node_ca(run.site, run.gateway.as_ref());
    let ca = ca.as_ref().map(|(path, pem)| (path.as_str(), pem.as_str()));
    parallel(&indices, |&i| {
        selinux_policy::run(
            run.site,
            run.execs[i].as_ref(),
            ca,
            &run.unames[i],
            run.gateway.as_ref(),
            run.artifacts,
            mode,
            run.report,
        )
    })?;
    Ok(())
}

/// Stage 4: the NVIDIA container toolkit on the GPU workers `--limit` chose.
fn stage_gpu(run: &mut Run<'_>, mode: Mode) -> Result<(), DeployError> {
    let run = &*run;
    let gpu: Vec<usize> = (0..run.nodes.len())
        .filter(|&i| {
            let name = &run.nodes[i].0.name;
            run.site.gpu_workers.iter().any(|m| &m.name == name)
        })
        .collect();
    if gpu.is_empty() {
        return Ok(());
    }
    run.report
        .stage("gpu", "the NVIDIA container toolkit on GPU workers");
    let ca = node_ca(run.site, run.gateway.as_ref());
    let ca = ca.as_ref().map(|(path, pem)| (path.as_str(), pem.as_str()));
    parallel(&gpu, |&i| {
        gpu::run(
            run.site,
            run.execs[i].as_ref(),
            ca,
            &run.unames[i],
            run.gateway.as_ref(),
            run.artifacts,
            mode,
            run.report,
        )
    })?;
    Ok(())
}

/// The first server's kubeconfig on the control node, when it is outside the cluster and
/// `--limit` chose that server.
fn stage_kubeconfig(run: &mut Run<'_>, mode: Mode) -> Result<(), DeployError> {
    let Some((server, _)) = run
        .nodes
        .iter()
        .find(|(_, role)| *role == Role::FirstServer)
    else {
        return Ok(());
    };
    if !crate::kubeconfig::control_node_is_external(run.site, run.inventory) {
        return Ok(());
    }
    let Some(plan) = crate::kubeconfig::Plan::new(run.site, run.inventory, None) else {
        return Ok(());
    };
    run.report.stage(
        "kubeconfig",
        "the first server's kubeconfig on this machine",
    );
    crate::kubeconfig::copy(&plan, (run.connect)(server).as_ref(), mode, run.report)
}

/// Where nodes keep the gateway's CA, and the PEM, when they need it and it is known.
fn node_ca(site: &Site, gateway: Option<&GatewayLink>) -> Option<(String, String)> {
    let pem = gateway?.ca.as_ref()?;
    Some((
        site.ca_file.clone()?,
        String::from_utf8_lossy(pem).into_owned(),
    ))
}

/// Every node with its role: the first server, other servers, agents.
pub fn node_roles(site: &Site) -> Vec<(&Machine, Role)> {
    let mut out = Vec::new();
    for (i, server) in site.servers.iter().enumerate() {
        out.push((
            server,
            if i == 0 {
                Role::FirstServer
            } else {
                Role::Server
            },
        ));
    }
    for agent in &site.agents {
        if !out.iter().any(|(m, _)| m.name == agent.name) {
            out.push((agent, Role::Agent));
        }
    }
    out
}

/// Vault values deploy needs must have been decrypted.
fn check_secrets<'m>(
    site: &Site,
    machines: impl Iterator<Item = &'m Machine>,
    needs_token: bool,
) -> Result<(), DeployError> {
    let locked_hint = "pass --vault-password-file FILE (or set ANSIBLE_VAULT_PASSWORD_FILE)";
    for machine in machines {
        if machine
            .escalate
            .as_ref()
            .and_then(|b| b.password.as_ref())
            .is_some_and(airlock_ansible::vault::Secret::is_locked)
        {
            return Err(DeployError::host_message(
                "inventory",
                &machine.name,
                "`ansible_become_password` is vault-encrypted and no vault password was given",
                locked_hint,
            ));
        }
    }
    if needs_token {
        match &site.k3s.token {
            None => {
                return Err(DeployError::local(
                    "inventory",
                    "`k3s_token` is not set: nodes need it to join the cluster",
                    "`airlock vault new-secret --name k3s_token` prints one to put under `k3s_cluster: vars:`",
                ));
            }
            Some(t) if t.is_locked() => {
                return Err(DeployError::local(
                    "inventory",
                    "`k3s_token` is vault-encrypted and no vault password was given",
                    locked_hint,
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Run `f` for every item on its own thread; the first error (in item order) wins.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, DeployError> + Sync,
) -> Result<Vec<R>, DeployError> {
    let results: Vec<Result<R, DeployError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = items.iter().map(|item| scope.spawn(|| f(item))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(DeployError::local(
                        "deploy",
                        "a worker thread panicked",
                        "report this as a bug",
                    ))
                })
            })
            .collect()
    });
    results.into_iter().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use airlock_ansible::inventory::Inventory;

    use airlock_testkit::inventory::SMALL_SITE as INVENTORY;

    pub(crate) fn inventory() -> Inventory {
        Inventory::parse_str(INVENTORY, Path::new("inventory.yaml")).unwrap()
    }

    pub(crate) fn site() -> Site {
        let (site, diagnostics) = Site::read(&inventory(), None);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
        site
    }

    /// `airlock_testkit::inventory::replicated_site` on a shared bucket.
    pub(crate) fn replicated() -> (Inventory, Site) {
        let text =
            airlock_testkit::inventory::replicated_site(airlock_testkit::inventory::SHARED_BUCKET);
        let inventory = Inventory::parse_str(&text, Path::new("inventory.yaml")).unwrap();
        let (site, diagnostics) = Site::read(&inventory, None);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
        (inventory, site)
    }

    /// Never asked: these runs choose no cluster node.
    struct NoNodes;

    impl ArtifactSource for NoNodes {
        fn k3s(&self, _: &str, _: Option<&GatewayLink>) -> Result<K3sArtifacts, SourceError> {
            panic!("no cluster node was chosen, so no K3s download")
        }
        fn rpms(&self, _: &[String], _: &[&str], _: &str) -> Result<Vec<CachedRpm>, SourceError> {
            panic!("no cluster node was chosen, so no RPMs")
        }
    }

    /// A staging deploy (`--limit staging`) of the replicated site on fake hosts, whose
    /// first staging host holds `ca` (certificate, key) in its data directory.
    fn deploy_replicas(
        mode: Mode,
        limit: &[&str],
        ca: Option<(&str, &str)>,
    ) -> (
        Result<(), DeployError>,
        Vec<Arc<airlock_remote::fake::Fake>>,
        String,
    ) {
        let (inventory, mut site) = replicated();
        // The credential files live on the control node.
        let dir = tempfile::tempdir().unwrap();
        let storage = site.storage.as_mut().unwrap();
        for (name, file) in [
            ("s3.id", &mut storage.access_key_id_file),
            ("s3.secret", &mut storage.secret_access_key_file),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, name).unwrap();
            *file = Some(path);
        }
        let binary = dir.path().join("airlock");
        std::fs::write(&binary, b"airlock binary").unwrap();
        let rendered = airlock_site::render::render(&site).unwrap();
        let hosts: Vec<Arc<airlock_remote::fake::Fake>> = site
            .replicas
            .iter()
            .map(|r| {
                let host = airlock_remote::fake::Fake::new(&r.machine.name);
                host.answer("find ", 0, "ok\n");
                host.answer("is-active", 3, "");
                Arc::new(host)
            })
            .collect();
        if let Some((cert, key)) = ca {
            hosts[0].put_with(
                "/var/lib/airlock/tls/ca.crt",
                cert,
                0o600,
                "airlock:airlock",
            );
            hosts[0].put_with("/var/lib/airlock/tls/ca.key", key, 0o600, "airlock:airlock");
        }
        let connect = |m: &Machine| -> Arc<dyn Executor> {
            let i = site
                .replicas
                .iter()
                .position(|r| r.machine.name == m.name)
                .unwrap();
            hosts[i].clone()
        };
        let options = Options {
            mode,
            limit: Some(limit.iter().map(|l| (*l).to_owned()).collect()),
            airlock_binary: binary,
            cache_dir: dir.path().join("cache"),
            wait_timeout: Duration::from_secs(1),
            ..Options::default()
        };
        let log = dir.path().join("report.txt");
        let report = Report::new(Box::new(std::fs::File::create(&log).unwrap()), mode);
        let result = deploy(
            &site, &inventory, &rendered, &connect, &NoNodes, &options, &report,
        );
        drop(report);
        (result, hosts, std::fs::read_to_string(&log).unwrap())
    }

    /// `--check` on three replicas: each is compared against its own rendered config, and the
    /// other two would get the first one's CA; nothing is written anywhere.
    #[test]
    fn check_shows_every_replica_and_the_site_ca_they_would_get() {
        let (result, hosts, shown) = deploy_replicas(
            Mode::Check,
            &["staging"],
            Some(("SITE CA CERT\n", "SITE CA KEY\n")),
        );
        result.unwrap();
        for (host, name) in hosts.iter().zip(["north", "south", "east"]) {
            assert!(host.file(staging::CONFIG).is_none(), "{name} was written");
            assert!(
                shown.contains(&format!("hostname = \"{name}.example.test\"")),
                "{name}'s own config not shown:\n{shown}"
            );
        }
        let ca_lines = shown
            .lines()
            .filter(|l| l.contains("/var/lib/airlock/tls/ca.key"))
            .count();
        assert_eq!(ca_lines, 2, "{shown}");
        assert!(shown.contains("+SITE CA CERT"), "{shown}");
        assert!(
            !shown.contains("SITE CA KEY"),
            "the key is never shown:\n{shown}"
        );
        assert!(
            shown.contains("/etc/airlock/s3.secret") || shown.contains("s3.secret"),
            "{shown}"
        );
    }

    /// Before the first replica's gateway ever ran there is no site CA: `--check` says so,
    /// and a real run of the other replicas alone stops before changing anything.
    #[test]
    fn replicas_wait_for_the_first_staging_hosts_ca() {
        let (result, _, shown) = deploy_replicas(Mode::Check, &["staging"], None);
        result.unwrap();
        assert!(shown.contains("has no CA yet"), "{shown}");

        let (result, hosts, _) = deploy_replicas(Mode::Apply, &["south.example.test"], None);
        let err = result.unwrap_err();
        assert_eq!(err.host.as_deref(), Some("north.example.test"));
        assert!(
            err.hint.contains("deploy the first staging host first"),
            "{err}"
        );
        assert!(hosts[1].log().is_empty(), "{:?}", hosts[1].log());
    }

    #[test]
    fn limit_matches_hosts_and_groups() {
        let inv = inventory();
        let limit = vec!["agents".to_owned()];
        assert!(in_limit(&inv, Some(&limit), "w1.example.test"));
        assert!(!in_limit(&inv, Some(&limit), "s1.example.test"));
        assert!(in_limit(&inv, None, "s1.example.test"));
        assert_eq!(
            unknown_limits(&inv, &["nope".to_owned(), "server".to_owned()]),
            ["nope"]
        );
    }

    #[test]
    fn roles_put_the_first_server_first() {
        let site = site();
        let roles: Vec<_> = node_roles(&site)
            .iter()
            .map(|(m, r)| (m.name.clone(), *r))
            .collect();
        assert_eq!(
            roles,
            [
                ("s1.example.test".to_owned(), Role::FirstServer),
                ("w1.example.test".to_owned(), Role::Agent)
            ]
        );
    }

    #[test]
    fn architectures() {
        assert_eq!(k3s_arch("x86_64\n"), Some("amd64"));
        assert_eq!(k3s_arch("aarch64"), Some("arm64"));
        assert_eq!(k3s_arch("sparc64"), None);
    }
}
