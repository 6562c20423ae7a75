//! `airlock preflight`: what would stop a deploy, found before it starts.
//!
//! Every host of the inventory is checked over its own connection, all hosts at once:
//!
//! | check | on | problem when |
//! |---|---|---|
//! | `login` | every host | ssh fails, sudo fails, or commands do not run as root |
//! | `selinux` | every host | the mode cannot be read (`getenforce`, else `/sys/fs/selinux/enforce`; neither = disabled) |
//! | `os` | cluster nodes | `SELinux` RPMs are needed (`k3s_selinux_enabled`, or the node enforcing/permissive) and `/etc/os-release` is not RHEL 9-compatible (Rocky Linux 9, `AlmaLinux` 9, RHEL 9, …) |
//! | `disk /var/lib/rancher` | cluster nodes | under [`RANCHER_MIN_FREE`] (10 GiB) free: images and containers live there |
//! | `disk /usr/local/bin` | cluster nodes | under [`BIN_MIN_FREE`] (1 GiB) free: the K3s binary and its links |
//! | `default route` | cluster nodes | no IPv4 default route: K3s needs one even air-gapped |
//! | `staging <name>:443`, `:<squid_port>` | cluster nodes | the registry or the egress proxy of a staging host (each, when there are several) cannot be reached from the node |
//! | `api :6443` | servers, from here | timeout or unreachable (refused is fine before the first deploy) |
//! | `peers :5001 :6443` | cluster nodes, with `k3s_embedded_registry` | another node's embedded-mirror ports give no answer, no route, or do not resolve (refused is fine before the first deploy) |
//!
//! Disk space is measured on the nearest existing parent (`df -Pk`), since the directories do
//! not exist before the first deploy.

mod checks;

use std::fmt::{self, Write as _};
use std::io;
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use airlock_ansible::connection::Machine;
use airlock_remote::Executor;
use airlock_site::site::Site;

pub use checks::{OsRelease, SelinuxMode};
use checks::{disk_row, login_row, os_row, peers_row, reach_row, route_row, selinux_row};

/// Free space `/var/lib/rancher` needs: K3s' images, containerd's content and the pods'
/// writable layers.
pub const RANCHER_MIN_FREE: u64 = 10 << 30;
/// Free space `/usr/local/bin` needs: the K3s binary (about 70 MiB) and its links, with room.
pub const BIN_MIN_FREE: u64 = 1 << 30;
/// How long a TCP reachability probe waits.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The Kubernetes API port of K3s servers.
pub const API_PORT: u16 = 6443;
/// The port nodes pull images from the gateway on.
pub const REGISTRY_PORT: u16 = 443;

/// What a host is to the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Staging,
    Server,
    Agent,
}

impl Role {
    fn is_cluster(self) -> bool {
        matches!(self, Role::Server | Role::Agent)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Problem,
}

/// One cell of the table: one check on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub host: String,
    pub check: String,
    pub status: Status,
    pub detail: String,
    /// What to do about a problem (empty when fine).
    pub fix: String,
}

impl Row {
    fn ok(host: &str, check: &str, detail: impl Into<String>) -> Self {
        Self {
            host: host.to_owned(),
            check: check.to_owned(),
            status: Status::Ok,
            detail: detail.into(),
            fix: String::new(),
        }
    }

    fn problem(host: &str, check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            host: host.to_owned(),
            check: check.to_owned(),
            status: Status::Problem,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
}

/// Every check's result, host by host in inventory order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn problems(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.status == Status::Problem)
            .count()
    }

    /// The row of `check` on `host`, if that check ran.
    pub fn row(&self, host: &str, check: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.host == host && r.check == check)
    }
}

impl fmt::Display for Report {
    /// One table: host, check, ok/problem, what was found, what to do.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cells: Vec<[String; 5]> =
            std::iter::once(["HOST", "CHECK", "RESULT", "FOUND", "WHAT TO DO"].map(str::to_owned))
                .chain(self.rows.iter().map(|r| {
                    [
                        r.host.clone(),
                        r.check.clone(),
                        match r.status {
                            Status::Ok => "ok".to_owned(),
                            Status::Problem => "problem".to_owned(),
                        },
                        one_line(&r.detail),
                        one_line(&r.fix),
                    ]
                }))
                .collect();
        let mut widths = [0usize; 5];
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in &cells {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The hosts to check: the staging nodes, servers, then agents (each host once), narrowed by
/// `limit` (host or group names: `staging`, `server`, `workers`, `gpu_workers`, `agents`).
pub fn targets(site: &Site, limit: &[String]) -> Result<Vec<(Machine, Role)>, String> {
    let groups: [(&str, Role, Vec<&Machine>); 5] = [
        (
            "staging",
            Role::Staging,
            site.replicas.iter().map(|s| &s.machine).collect(),
        ),
        ("server", Role::Server, site.servers.iter().collect()),
        ("workers", Role::Agent, site.workers.iter().collect()),
        (
            "gpu_workers",
            Role::Agent,
            site.gpu_workers.iter().collect(),
        ),
        ("agents", Role::Agent, site.agents.iter().collect()),
    ];
    for name in limit {
        let known = groups
            .iter()
            .any(|(group, _, hosts)| group == name || hosts.iter().any(|m| &m.name == name));
        if !known {
            return Err(format!(
                "--limit: `{name}` is neither a host nor a group (staging, server, workers, gpu_workers, agents) of the inventory"
            ));
        }
    }
    let mut chosen: Vec<(Machine, Role)> = Vec::new();
    for (group, role, hosts) in &groups {
        for machine in hosts {
            let wanted = limit.is_empty() || limit.iter().any(|l| l == group || *l == machine.name);
            if wanted && !chosen.iter().any(|(m, _)| m.name == machine.name) {
                chosen.push(((*machine).clone(), *role));
            }
        }
    }
    Ok(chosen)
}

/// Check every target at once: `connect` gives each host's executor, `probe` opens a TCP
/// connection from here (see [`tcp_probe`]).
pub fn run<C, P>(site: &Site, targets: &[(Machine, Role)], connect: C, probe: P) -> Report
where
    C: Fn(&Machine) -> Box<dyn Executor> + Sync,
    P: Fn(&str, u16) -> io::Result<()> + Sync,
{
    let rows = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|(machine, role)| {
                let (connect, probe) = (&connect, &probe);
                scope.spawn(move || {
                    let exec = connect(machine);
                    let mut rows = check_host(exec.as_ref(), *role, site);
                    if *role == Role::Server {
                        rows.push(api_row(&machine.name, &machine.address, probe));
                    }
                    rows
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a preflight thread panicked"))
            .collect()
    });
    Report { rows }
}

/// A TCP connection to `host:port` from here, within [`PROBE_TIMEOUT`] per address.
pub fn tcp_probe(host: &str, port: u16) -> io::Result<()> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for address in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&address, PROBE_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The Kubernetes API port of a server, from the control node.
fn api_row(host: &str, address: &str, probe: impl Fn(&str, u16) -> io::Result<()>) -> Row {
    let check = format!("api :{API_PORT}");
    match probe(address, API_PORT) {
        Ok(()) => Row::ok(host, &check, "listening"),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Row::ok(
            host,
            &check,
            "not yet listening (fine before the first deploy)",
        ),
        Err(e) => Row::problem(
            host,
            &check,
            format!("{address}:{API_PORT} from here: {e}"),
            format!(
                "allow TCP {API_PORT} from this machine to {address} (kubectl and deploy's readiness checks use it)"
            ),
        ),
    }
}

/// Every check that runs on the host itself.
pub fn check_host(exec: &dyn Executor, role: Role, site: &Site) -> Vec<Row> {
    let mut rows = Vec::new();
    let (login, reached) = login_row(exec);
    rows.push(login);
    if !reached {
        return rows;
    }
    let (selinux_row, selinux) = selinux_row(exec);
    if role.is_cluster() {
        rows.push(os_row(exec, site.k3s.selinux, selinux));
    }
    rows.push(selinux_row);
    if !role.is_cluster() {
        return rows;
    }
    rows.push(disk_row(
        exec,
        "/var/lib/rancher",
        RANCHER_MIN_FREE,
        "images and containers live there",
    ));
    rows.push(disk_row(
        exec,
        "/usr/local/bin",
        BIN_MIN_FREE,
        "the K3s binary goes there",
    ));
    rows.push(route_row(exec));
    // Nodes move to the next staging host when one fails: each must be reachable.
    for staging in &site.replicas {
        rows.push(reach_row(
            exec,
            &staging.registry_host,
            REGISTRY_PORT,
            &format!("start `airlock serve` on {}", staging.machine.name),
        ));
        rows.push(reach_row(
            exec,
            &staging.hostname,
            site.egress.port,
            &format!(
                "run the egress proxy on {} (squid_port {})",
                staging.machine.name, site.egress.port
            ),
        ));
    }
    if site.install.embedded_registry {
        let mut peers: Vec<&str> = Vec::new();
        let cluster = site
            .servers
            .iter()
            .chain(&site.workers)
            .chain(&site.gpu_workers)
            .chain(&site.agents);
        for machine in cluster {
            if machine.name != exec.host() && !peers.contains(&machine.address.as_str()) {
                peers.push(&machine.address);
            }
        }
        if !peers.is_empty() {
            rows.push(peers_row(exec, &peers));
        }
    }
    rows
}

#[cfg(test)]
mod tests;
