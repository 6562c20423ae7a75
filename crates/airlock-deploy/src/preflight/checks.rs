//! The checks that run on a host: login and sudo, `SELinux` mode, OS release, free disk,
//! default route, and whether the staging node's ports answer from there.

use std::fmt::Write as _;

use airlock_remote::{ExecError, Executor, Input, quote};

use super::{PROBE_TIMEOUT, Row};

/// ssh works, sudo works, and commands run as root; the flag says whether commands run at all.
pub(super) fn login_row(exec: &dyn Executor) -> (Row, bool) {
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

pub(super) fn selinux_row(exec: &dyn Executor) -> (Row, Option<SelinuxMode>) {
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
pub(super) fn os_row(exec: &dyn Executor, site_selinux: bool, mode: Option<SelinuxMode>) -> Row {
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
pub(super) fn disk_row(exec: &dyn Executor, path: &str, needed: u64, why: &str) -> Row {
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
pub(super) fn route_row(exec: &dyn Executor) -> Row {
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
pub(super) fn reach_row(exec: &dyn Executor, target: &str, port: u16, serve_fix: &str) -> Row {
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

/// The ports K3s's embedded registry mirror (Spegel) uses between nodes: its peer-to-peer
/// port and the supervisor port that serves the mirrored registry.
pub const PEER_PORTS: [u16; 2] = [5001, 6443];

/// Whether this node reaches every other cluster node on [`PEER_PORTS`], all probed at once.
/// Nothing listening is fine (K3s does not run before the first deploy); no answer, no route
/// or a name that does not resolve is a problem: the nodes would fetch every layer from the
/// gateway after all.
pub(super) fn peers_row(exec: &dyn Executor, peers: &[&str]) -> Row {
    let host = exec.host();
    let check = format!("peers {}", ports(":", " :"));
    let seconds = PROBE_TIMEOUT.as_secs();
    let mut script = format!(
        "command -v bash >/dev/null 2>&1 || {{ echo 'bash is not installed'; exit 127; }}; \
         probe() {{ out=$(timeout {seconds} bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' \"$1\" \"$2\" 2>&1); \
         s=$?; first=${{out%%$'\\n'*}}; echo \"peer $1 $2 $s ${{first##*: }}\"; }}; "
    );
    for peer in peers {
        for port in PEER_PORTS {
            let _ = write!(script, "probe {} {port} & ", quote(peer));
        }
    }
    script.push_str("wait");
    let output = match exec.exec(&script, Input::None) {
        Ok(output) => output,
        Err(e) => return Row::problem(host, &check, e.to_string(), "check the node"),
    };
    if output.status == 127 {
        return Row::problem(
            host,
            &check,
            "cannot test: bash or timeout is missing",
            "install bash and coreutils on the node",
        );
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut blocked = Vec::new();
    for peer in peers {
        for port in PEER_PORTS {
            let prefix = format!("peer {peer} {port} ");
            let answer = text.lines().find_map(|line| line.strip_prefix(&prefix));
            let (status, said) = answer
                .and_then(|a| a.split_once(' ').or(Some((a, ""))))
                .unwrap_or(("", "no answer from the probe"));
            match status {
                "0" => {}
                _ if said.contains("refused") => {}
                "124" => blocked.push(format!("{peer}:{port} (no answer within {seconds}s)")),
                _ => blocked.push(format!("{peer}:{port} ({})", said.trim())),
            }
        }
    }
    if blocked.is_empty() {
        return Row::ok(
            host,
            &check,
            format!("{} peers reachable or not yet listening", peers.len()),
        );
    }
    let shown: Vec<&str> = blocked.iter().take(5).map(String::as_str).collect();
    let more = blocked.len().saturating_sub(shown.len());
    Row::problem(
        host,
        &check,
        if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        },
        format!(
            "k3s_embedded_registry: allow TCP {} between every pair of cluster nodes",
            ports("", " and ")
        ),
    )
}

/// [`PEER_PORTS`] written as `5001 and 6443` or `:5001 :6443`.
fn ports(before: &str, between: &str) -> String {
    let listed: Vec<String> = PEER_PORTS.iter().map(ToString::to_string).collect();
    format!("{before}{}", listed.join(between))
}
