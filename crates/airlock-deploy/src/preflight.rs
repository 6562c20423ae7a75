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
//! | `staging <name>:443`, `:<squid_port>` | cluster nodes | the registry or the egress proxy cannot be reached from the node |
//! | `api :6443` | servers, from here | timeout or unreachable (refused is fine before the first deploy) |
//!
//! Disk space is measured on the nearest existing parent (`df -Pk`), since the directories do
//! not exist before the first deploy.

use std::fmt::{self, Write as _};
use std::io;
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use airlock_ansible::connection::Machine;
use airlock_remote::{ExecError, Executor, Input, quote};
use airlock_site::site::Site;

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

/// The hosts to check: the staging node, servers, then agents (each host once), narrowed by
/// `limit` (host or group names: `staging`, `server`, `workers`, `gpu_workers`, `agents`).
pub fn targets(site: &Site, limit: &[String]) -> Result<Vec<(Machine, Role)>, String> {
    let groups: [(&str, Role, Vec<&Machine>); 5] = [
        (
            "staging",
            Role::Staging,
            site.staging.iter().map(|s| &s.machine).collect(),
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
    if let Some(staging) = &site.staging {
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
    rows
}

/// ssh works, sudo works, and commands run as root; the flag says whether commands run at all.
fn login_row(exec: &dyn Executor) -> (Row, bool) {
    let host = exec.host();
    match exec.exec("id -u; id -un", Input::None) {
        Err(ExecError::Unreachable { message, .. }) => (
            Row::problem(
                host,
                "login",
                format!("unreachable: {message}"),
                "check that the host is up and that ssh to it works from here with the \
                 inventory's ansible_host, ansible_port, ansible_user and key (no prompts: \
                 use a key or an agent)",
            ),
            false,
        ),
        Err(e) => (
            Row::problem(
                host,
                "login",
                e.to_string(),
                "install the OpenSSH client here",
            ),
            false,
        ),
        Ok(output) if !output.success() => (
            Row::problem(
                host,
                "login",
                format!("status {}: {}", output.status, output.tail(3)),
                "let the ssh user run sudo without a password, or set ansible_become_password \
                 (and pass --vault-password-file when it is vault-encrypted)",
            ),
            false,
        ),
        Ok(output) => {
            let text = output.stdout_text();
            let mut lines = text.lines().map(str::trim);
            let uid = lines.next().unwrap_or_default();
            let name = lines.next().unwrap_or_default();
            let row = if uid == "0" {
                Row::ok(host, "login", format!("commands run as {name}"))
            } else {
                Row::problem(
                    host,
                    "login",
                    format!("commands run as `{name}`, not root"),
                    "set ansible_become: true (sudo) or ansible_user: root: deploy installs K3s as root",
                )
            };
            (row, true)
        }
    }
}

/// The node's `SELinux` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelinuxMode {
    Enforcing,
    Permissive,
    Disabled,
}

const SELINUX_SCRIPT: &str = "if command -v getenforce >/dev/null 2>&1; then getenforce; \
     elif [ -r /sys/fs/selinux/enforce ]; then cat /sys/fs/selinux/enforce; \
     else echo Disabled; fi";

fn selinux_row(exec: &dyn Executor) -> (Row, Option<SelinuxMode>) {
    let host = exec.host();
    let output = match exec.run(SELINUX_SCRIPT) {
        Ok(output) => output,
        Err(e) => {
            return (
                Row::problem(
                    host,
                    "selinux",
                    e.to_string(),
                    "run `getenforce` on the node to see why",
                ),
                None,
            );
        }
    };
    let mode = match output.trim() {
        "Enforcing" | "1" => SelinuxMode::Enforcing,
        "Permissive" | "0" => SelinuxMode::Permissive,
        "Disabled" => SelinuxMode::Disabled,
        other => {
            return (
                Row::problem(
                    host,
                    "selinux",
                    format!("cannot tell the mode from `{other}`"),
                    "run `getenforce` on the node to see why",
                ),
                None,
            );
        }
    };
    let text = match mode {
        SelinuxMode::Enforcing => "enforcing",
        SelinuxMode::Permissive => "permissive",
        SelinuxMode::Disabled => "disabled",
    };
    (Row::ok(host, "selinux", text), Some(mode))
}

/// The node's system, and whether it can take the k3s-selinux RPMs when they are needed.
fn os_row(exec: &dyn Executor, site_selinux: bool, mode: Option<SelinuxMode>) -> Row {
    let host = exec.host();
    let text = match exec.read("/etc/os-release") {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(None) => {
            return Row::problem(
                host,
                "os",
                "no /etc/os-release",
                "install Rocky Linux 9 (or another RHEL 9-compatible system) on the node",
            );
        }
        Err(e) => {
            return Row::problem(
                host,
                "os",
                e.to_string(),
                "check the node's /etc/os-release",
            );
        }
    };
    let release = OsRelease::parse(&text);
    let node_selinux = matches!(mode, Some(SelinuxMode::Enforcing | SelinuxMode::Permissive));
    let why = if site_selinux {
        Some("k3s_selinux_enabled is set")
    } else if node_selinux {
        Some("SELinux is on")
    } else {
        None
    };
    match why {
        Some(why) if !release.is_rhel9_compatible() => Row::problem(
            host,
            "os",
            format!(
                "{}: {why}, and the k3s-selinux RPMs need a RHEL 9-compatible system",
                release.name()
            ),
            "install Rocky Linux 9 on the node (or RHEL 9 / AlmaLinux 9), or disable SELinux \
             there and set k3s_selinux_enabled: false",
        ),
        Some(why) => Row::ok(
            host,
            "os",
            format!("{} ({why}: k3s-selinux RPMs for EL9)", release.name()),
        ),
        None => Row::ok(host, "os", format!("{} (SELinux not used)", release.name())),
    }
}

/// The fields of `/etc/os-release` preflight reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: String,
    pub id_like: Vec<String>,
    pub version_id: String,
    pub pretty_name: String,
}

impl OsRelease {
    pub fn parse(text: &str) -> Self {
        let mut release = Self::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .to_owned();
            match key.trim() {
                "ID" => release.id = value.to_lowercase(),
                "ID_LIKE" => {
                    release.id_like = value.split_whitespace().map(str::to_lowercase).collect();
                }
                "VERSION_ID" => release.version_id = value,
                "PRETTY_NAME" => release.pretty_name = value,
                _ => {}
            }
        }
        release
    }

    /// RHEL 9 or a rebuild of it (Rocky, `AlmaLinux`, Oracle, `CentOS` Stream 9).
    pub fn is_rhel9_compatible(&self) -> bool {
        let family = ["rhel", "rocky", "almalinux", "centos", "ol"].contains(&self.id.as_str())
            || self.id_like.iter().any(|l| l == "rhel");
        family && self.version_id.split('.').next() == Some("9")
    }

    fn name(&self) -> String {
        if self.pretty_name.is_empty() {
            format!("{} {}", self.id, self.version_id).trim().to_owned()
        } else {
            self.pretty_name.clone()
        }
    }
}

/// Free space for `path`, measured on its nearest existing parent.
fn disk_row(exec: &dyn Executor, path: &str, needed: u64, why: &str) -> Row {
    let host = exec.host();
    let check = format!("disk {path}");
    let script = format!(
        "p={}; while [ ! -e \"$p\" ]; do p=$(dirname \"$p\"); done; df -Pk \"$p\" | tail -n 1",
        quote(path)
    );
    let output = match exec.run(&script) {
        Ok(output) => output,
        Err(e) => return Row::problem(host, &check, e.to_string(), "check `df -Pk` on the node"),
    };
    let fields: Vec<&str> = output.split_whitespace().collect();
    let free = fields
        .get(3)
        .and_then(|f| f.parse::<u64>().ok())
        .map(|kib| kib * 1024);
    let Some(free) = free else {
        return Row::problem(
            host,
            &check,
            format!("cannot read `df -Pk` output `{}`", output.trim()),
            "check `df -Pk` on the node",
        );
    };
    let mount = fields.get(5).copied().unwrap_or("?");
    let found = format!("{} free on {mount}, needs {}", gib(free), gib(needed));
    if free >= needed {
        Row::ok(host, &check, found)
    } else {
        Row::problem(
            host,
            &check,
            found,
            format!("free space on {mount} or mount a bigger volume at {path} ({why})"),
        )
    }
}

fn gib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let value = bytes as f64 / f64::from(1u32 << 30);
    format!("{value:.1} GiB")
}

/// An IPv4 default route, from `/proc/net/route`.
fn route_row(exec: &dyn Executor) -> Row {
    let host = exec.host();
    let fix = "add a default route (any gateway on the cluster network will do): K3s picks \
               the node address and flannel's interface from it, even air-gapped";
    let table = match exec.read("/proc/net/route") {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(None) => return Row::problem(host, "default route", "no /proc/net/route", fix),
        Err(e) => return Row::problem(host, "default route", e.to_string(), fix),
    };
    let default = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| (f[0], f[2]))
    });
    match default {
        Some((device, gateway)) => {
            let via = u32::from_str_radix(gateway, 16)
                .ok()
                .filter(|g| *g != 0)
                .map(|g| format!("via {} ", std::net::Ipv4Addr::from(g.swap_bytes())))
                .unwrap_or_default();
            Row::ok(host, "default route", format!("{via}dev {device}"))
        }
        None => Row::problem(host, "default route", "none", fix),
    }
}

/// A TCP connection from the node to `target:port` (bash's `/dev/tcp`, bounded by `timeout`).
fn reach_row(exec: &dyn Executor, target: &str, port: u16, serve_fix: &str) -> Row {
    let host = exec.host();
    let check = format!("to {target}:{port}");
    let seconds = PROBE_TIMEOUT.as_secs();
    let script = format!(
        "command -v bash >/dev/null 2>&1 || {{ echo 'bash is not installed'; exit 127; }}; \
         timeout {seconds} bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' {} {port} 2>&1",
        quote(target)
    );
    let output = match exec.exec(&script, Input::None) {
        Ok(output) => output,
        Err(e) => return Row::problem(host, &check, e.to_string(), "check the node"),
    };
    let said = output.tail(1);
    let said = said
        .rsplit_once(": ")
        .map_or(said.as_str(), |(_, reason)| reason)
        .to_owned();
    match output.status {
        0 => Row::ok(host, &check, "reachable"),
        124 => Row::problem(
            host,
            &check,
            format!("no answer within {seconds}s"),
            format!("a firewall drops the traffic: allow TCP {port} from the node to {target}"),
        ),
        127 => Row::problem(
            host,
            &check,
            "cannot test: bash or timeout is missing",
            "install bash and coreutils on the node",
        ),
        _ if said.contains("not known") || said.contains("resolution") => Row::problem(
            host,
            &check,
            format!("{target} does not resolve: {said}"),
            format!("make {target} resolve on the node (DNS or /etc/hosts)"),
        ),
        _ => Row::problem(
            host,
            &check,
            if said.is_empty() {
                format!("status {}", output.status)
            } else {
                said
            },
            format!("{serve_fix}, and allow TCP {port} from the node to {target}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_ansible::inventory::Inventory;
    use airlock_remote::fake::Fake;

    const ROCKY: &str = "NAME=\"Rocky Linux\"\nVERSION=\"9.4 (Blue Onyx)\"\nID=\"rocky\"\n\
                         ID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n\
                         PRETTY_NAME=\"Rocky Linux 9.4 (Blue Onyx)\"\n";
    const UBUNTU: &str = "PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\n\
                          ID=ubuntu\nID_LIKE=debian\n";
    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                          eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                          eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
    const NO_DEFAULT: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                              eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";

    fn inventory_site(extra: &str) -> Site {
        let text = format!(
            "all:\n  vars:\n    air_gapped: true\n{extra}\
             staging:\n  hosts:\n    staging.example.edu:\n      ansible_host: 10.0.0.5\n  \
             vars:\n    staging_k3s_token: token-of-the-staging-cluster\n    squid_port: 3129\n\
             server:\n  hosts:\n    leader.example.edu:\n      ansible_host: 10.0.0.7\n\
             workers:\n  hosts:\n    worker.example.edu:\n      ansible_host: 10.0.0.8\n"
        );
        let inventory = Inventory::parse_str(&text, std::path::Path::new("hosts.yaml")).unwrap();
        let (site, diagnostics) = Site::read(&inventory, None);
        let errors: Vec<String> = diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        site
    }

    /// A healthy Rocky Linux 9 node, as root, everything reachable.
    fn rocky(name: &str) -> Fake {
        rocky_with(name, &[])
    }

    /// [`rocky`], with these answers taking precedence.
    fn rocky_with(name: &str, answers: &[(&str, i32, &str)]) -> Fake {
        let node = Fake::new(name);
        for (needle, status, stdout) in answers {
            node.answer(needle, *status, stdout);
        }
        node.answer("id -u", 0, "0\nroot\n");
        node.answer("getenforce", 0, "Enforcing\n");
        node.answer(
            "p=/var/lib/rancher",
            0,
            "/dev/sda2 104857600 1048576 52428800 2% /var\n",
        );
        node.answer(
            "p=/usr/local/bin",
            0,
            "/dev/sda1 20971520 1048576 10485760 5% /\n",
        );
        node.answer("/dev/tcp", 0, "");
        node.put("/etc/os-release", ROCKY);
        node.put("/proc/net/route", ROUTES);
        node
    }

    fn problems(rows: &[Row]) -> Vec<(&str, &str)> {
        rows.iter()
            .filter(|r| r.status == Status::Problem)
            .map(|r| (r.check.as_str(), r.detail.as_str()))
            .collect()
    }

    #[test]
    fn a_healthy_rocky_node_passes_every_check() {
        let site = inventory_site("");
        let rows = check_host(&rocky("leader.example.edu"), Role::Server, &site);
        assert_eq!(problems(&rows), []);
        let checks: Vec<&str> = rows.iter().map(|r| r.check.as_str()).collect();
        assert_eq!(
            checks,
            [
                "login",
                "os",
                "selinux",
                "disk /var/lib/rancher",
                "disk /usr/local/bin",
                "default route",
                "to harbor.staging.example.edu:443",
                "to staging.example.edu:3129",
            ]
        );
        let detail = |check: &str| &rows.iter().find(|r| r.check == check).unwrap().detail;
        assert_eq!(detail("login"), "commands run as root");
        assert_eq!(
            detail("os"),
            "Rocky Linux 9.4 (Blue Onyx) (SELinux is on: k3s-selinux RPMs for EL9)"
        );
        assert_eq!(detail("selinux"), "enforcing");
        assert_eq!(
            detail("disk /var/lib/rancher"),
            "50.0 GiB free on /var, needs 10.0 GiB"
        );
        assert_eq!(detail("default route"), "via 10.0.0.1 dev eth0");
    }

    #[test]
    fn ubuntu_is_a_problem_only_when_selinux_rpms_are_needed() {
        let node = rocky("worker.example.edu");
        node.put("/etc/os-release", UBUNTU);
        let rows = check_host(&node, Role::Agent, &inventory_site(""));
        let found = problems(&rows);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "os");
        assert!(
            found[0].1.contains("Ubuntu 22.04.4 LTS: SELinux is on"),
            "{found:?}"
        );

        // The site asks for SELinux even though the node has it off.
        let node = rocky_with("worker.example.edu", &[("getenforce", 0, "Disabled\n")]);
        node.put("/etc/os-release", UBUNTU);
        let site = inventory_site("    k3s_selinux_enabled: true\n");
        let rows = check_host(&node, Role::Agent, &site);
        let os = rows.iter().find(|r| r.check == "os").unwrap();
        assert_eq!(os.status, Status::Problem);
        assert!(os.detail.contains("k3s_selinux_enabled is set"), "{os:?}");
        assert!(os.fix.contains("Rocky Linux 9"), "{os:?}");

        // Neither needs it: any system will do.
        let node = rocky_with("worker.example.edu", &[("getenforce", 0, "Disabled\n")]);
        node.put("/etc/os-release", UBUNTU);
        let rows = check_host(&node, Role::Agent, &inventory_site(""));
        assert_eq!(problems(&rows), []);
        let os = rows.iter().find(|r| r.check == "os").unwrap();
        assert_eq!(os.detail, "Ubuntu 22.04.4 LTS (SELinux not used)");
    }

    #[test]
    fn rhel_8_and_rebuilds() {
        let os = |text: &str| OsRelease::parse(text).is_rhel9_compatible();
        assert!(os(ROCKY));
        assert!(os(
            "ID=\"almalinux\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.3\"\n"
        ));
        assert!(os("ID=\"rhel\"\nVERSION_ID=\"9.2\"\n"));
        assert!(os("ID=\"ol\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"9.4\"\n"));
        assert!(!os(
            "ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"8.9\"\n"
        ));
        assert!(!os("ID=fedora\nVERSION_ID=40\n"));
        assert!(!os(UBUNTU));
    }

    #[test]
    fn selinux_mode_from_sysfs_and_unreadable() {
        let node = rocky_with("leader.example.edu", &[("getenforce", 0, "0\n")]);
        let rows = check_host(&node, Role::Server, &inventory_site(""));
        assert_eq!(
            rows.iter().find(|r| r.check == "selinux").unwrap().detail,
            "permissive"
        );

        let node = Fake::new("leader.example.edu");
        node.answer("id -u", 0, "0\nroot\n");
        node.answer("getenforce", 0, "what\n");
        let rows = check_host(&node, Role::Staging, &inventory_site(""));
        assert_eq!(
            problems(&rows),
            [("selinux", "cannot tell the mode from `what`")]
        );
    }

    #[test]
    fn no_default_route_is_a_problem() {
        let node = rocky("leader.example.edu");
        node.put("/proc/net/route", NO_DEFAULT);
        let rows = check_host(&node, Role::Server, &inventory_site(""));
        assert_eq!(problems(&rows), [("default route", "none")]);
        let row = rows.iter().find(|r| r.check == "default route").unwrap();
        assert!(row.fix.contains("even air-gapped"), "{row:?}");
    }

    #[test]
    fn low_disk_is_a_problem() {
        // 4 GiB free where images go, 512 MiB where the binary goes.
        let node = rocky_with(
            "leader.example.edu",
            &[
                (
                    "p=/var/lib/rancher",
                    0,
                    "/dev/sda2 104857600 100663296 4194304 96% /\n",
                ),
                (
                    "p=/usr/local/bin",
                    0,
                    "/dev/sda1 1048576 524288 524288 50% /usr\n",
                ),
            ],
        );
        let rows = check_host(&node, Role::Server, &inventory_site(""));
        assert_eq!(
            problems(&rows),
            [
                ("disk /var/lib/rancher", "4.0 GiB free on /, needs 10.0 GiB"),
                ("disk /usr/local/bin", "0.5 GiB free on /usr, needs 1.0 GiB"),
            ]
        );
        // The script measures the nearest existing parent.
        let script = node
            .commands()
            .into_iter()
            .find(|c| c.contains("p=/var/lib/rancher"))
            .unwrap();
        assert!(
            script.contains("dirname") && script.contains("df -Pk"),
            "{script}"
        );
    }

    #[test]
    fn staging_ports_unreachable_from_the_node() {
        let node = rocky_with(
            "worker.example.edu",
            &[
                (
                    "harbor.staging.example.edu 443",
                    1,
                    "bash: connect: Connection refused\nbash: line 1: /dev/tcp/staging.example.edu/443: Connection refused\n",
                ),
                ("staging.example.edu 3129", 124, ""),
            ],
        );
        let rows = check_host(&node, Role::Agent, &inventory_site(""));
        assert_eq!(
            problems(&rows),
            [
                ("to harbor.staging.example.edu:443", "Connection refused"),
                ("to staging.example.edu:3129", "no answer within 5s"),
            ]
        );
        let refused = rows.iter().find(|r| r.check.ends_with(":443")).unwrap();
        assert!(refused.fix.contains("airlock serve"), "{refused:?}");
        let dropped = rows.iter().find(|r| r.check.ends_with(":3129")).unwrap();
        assert!(dropped.fix.contains("firewall"), "{dropped:?}");

        let node = rocky_with(
            "worker.example.edu",
            &[(
                "harbor.staging.example.edu 443",
                1,
                "bash: line 1: staging.example.edu: Name or service not known\n",
            )],
        );
        let rows = check_host(&node, Role::Agent, &inventory_site(""));
        let row = rows.iter().find(|r| r.check.ends_with(":443")).unwrap();
        assert!(row.fix.contains("resolve"), "{row:?}");
    }

    #[test]
    fn unreachable_host_is_one_row() {
        let node = rocky("worker.example.edu");
        node.go_away();
        let rows = check_host(&node, Role::Agent, &inventory_site(""));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].check, "login");
        assert_eq!(rows[0].status, Status::Problem);
        assert!(
            rows[0].detail.contains("Connection refused (fake)"),
            "{:?}",
            rows[0]
        );
        assert!(rows[0].fix.contains("ansible_port"), "{:?}", rows[0]);
    }

    #[test]
    fn failing_sudo_stops_and_non_root_is_a_problem() {
        let node = rocky_with("worker.example.edu", &[("id -u", 1, "")]);
        let rows = check_host(&node, Role::Agent, &inventory_site(""));
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert!(rows[0].fix.contains("ansible_become_password"), "{rows:?}");

        let node = Fake::new("worker.example.edu");
        node.answer("id -u", 0, "1000\nadmin\n");
        node.answer("getenforce", 0, "Disabled\n");
        let rows = check_host(&node, Role::Staging, &inventory_site(""));
        assert_eq!(
            problems(&rows),
            [("login", "commands run as `admin`, not root")]
        );
    }

    #[test]
    fn api_port_refused_is_fine_and_timeout_is_not() {
        let refused = |_: &str, _: u16| Err(io::Error::from(io::ErrorKind::ConnectionRefused));
        let row = api_row("leader", "10.0.0.7", refused);
        assert_eq!(row.status, Status::Ok);
        assert_eq!(
            row.detail,
            "not yet listening (fine before the first deploy)"
        );
        let timeout = |_: &str, _: u16| Err(io::Error::from(io::ErrorKind::TimedOut));
        let row = api_row("leader", "10.0.0.7", timeout);
        assert_eq!(row.status, Status::Problem);
        assert!(row.fix.contains("6443"), "{row:?}");
        assert_eq!(
            api_row("leader", "10.0.0.7", |_, _| Ok(())).detail,
            "listening"
        );
    }

    #[test]
    fn real_probe_tells_refused_from_listening() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        tcp_probe("127.0.0.1", port).unwrap();
        drop(listener);
        let err = tcp_probe("127.0.0.1", port).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn run_checks_every_target_in_order_and_limit_narrows() {
        let site = inventory_site("");
        let all = targets(&site, &[]).unwrap();
        let names: Vec<&str> = all.iter().map(|(m, _)| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "staging.example.edu",
                "leader.example.edu",
                "worker.example.edu"
            ]
        );
        let limited = targets(
            &site,
            &["server".to_owned(), "worker.example.edu".to_owned()],
        );
        let limited = limited.unwrap();
        assert_eq!(limited.len(), 2);
        assert_eq!(limited[0].1, Role::Server);
        let err = targets(&site, &["nope".to_owned()]).unwrap_err();
        assert!(err.contains("`nope`"), "{err}");

        let report = run(
            &site,
            &all,
            |m: &Machine| -> Box<dyn Executor> {
                let node = rocky(&m.name);
                if m.name == "worker.example.edu" {
                    node.go_away();
                }
                Box::new(node)
            },
            |_: &str, _: u16| Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
        );
        assert_eq!(report.problems(), 1);
        let hosts: Vec<&str> = report.rows.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(hosts.first(), Some(&"staging.example.edu"));
        assert_eq!(hosts.last(), Some(&"worker.example.edu"));
        assert_eq!(
            report
                .row("leader.example.edu", "api :6443")
                .unwrap()
                .status,
            Status::Ok
        );
        let table = report.to_string();
        let header = table.lines().next().unwrap();
        assert!(
            header.starts_with("HOST") && header.ends_with("WHAT TO DO"),
            "{table}"
        );
        let line = table
            .lines()
            .find(|l| l.starts_with("worker.example.edu"))
            .unwrap();
        assert!(
            line.contains("login") && line.contains("problem"),
            "{table}"
        );
        assert_eq!(table.lines().count(), report.rows.len() + 1);
    }
}
