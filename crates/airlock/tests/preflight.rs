//! `airlock preflight` end to end: the real binary, a real sshd on loopback standing in for
//! every node, one table out.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};

use airlock_testkit::sshd::Sshd;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn closed_port() -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// Staging, one server and one worker all on the loopback sshd; a second worker whose port
/// is closed; the egress proxy port answered by `squid`.
fn inventory(dir: &Path, sshd: &Sshd, squid: u16, dead: u16) -> std::path::PathBuf {
    let args = format!(
        "{} -i {}",
        sshd.client_options().join(" "),
        sshd.client_key_path.display()
    );
    let text = format!(
        "all:
  vars:
    air_gapped: true
    ansible_connection: ssh
    ansible_user: {user}
    ansible_port: {port}
    ansible_ssh_common_args: '{args}'
staging:
  hosts:
    localhost:
      ansible_host: 127.0.0.1
  vars:
    staging_k3s_token: token-of-the-staging-cluster
    harbor_subdomain: ''
    squid_port: {squid}
server:
  hosts:
    leader:
      ansible_host: 127.0.0.1
workers:
  hosts:
    worker:
      ansible_host: 127.0.0.1
    gone:
      ansible_host: 127.0.0.1
      ansible_port: {dead}
",
        user = sshd.user,
        port = sshd.port,
    );
    let path = dir.join("hosts.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn preflight(inventory: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["preflight", "-i"])
        .arg(inventory)
        .args(extra)
        .env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
        .output()
        .unwrap()
}

/// The table's row for `host` and `check`, split into its columns' words.
fn row<'a>(table: &'a str, host: &str, check: &str) -> &'a str {
    table
        .lines()
        .find(|l| {
            l.strip_prefix(host)
                .is_some_and(|rest| rest.starts_with(' ') && rest.trim_start().starts_with(check))
        })
        .unwrap_or_else(|| panic!("no row for {host} / {check} in:\n{table}"))
}

#[test]
fn checks_every_host_over_ssh_and_prints_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path(), LOOPBACK);
    assert_eq!(
        sshd.user, "root",
        "the nodes here log in as the user running the test, and preflight wants root: run as root"
    );
    let squid = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let squid_port = squid.local_addr().unwrap().port();
    let dead = closed_port();
    let hosts = inventory(dir.path(), &sshd, squid_port, dead);

    let output = preflight(&hosts, &[]);
    let table = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        !output.status.success(),
        "problems must fail the command:\n{table}"
    );
    assert!(stderr.contains("problem(s)"), "{stderr}");
    assert!(table.starts_with("HOST"), "{table}");

    for host in ["localhost", "leader", "worker"] {
        let login = row(&table, host, "login");
        assert!(
            login.contains(" ok ") && login.contains("commands run as root"),
            "{login}"
        );
        assert!(row(&table, host, "selinux").contains(" ok "), "{table}");
    }
    for host in ["leader", "worker"] {
        assert!(row(&table, host, "os").contains(" ok "), "{table}");
        assert!(
            row(&table, host, "disk /var/lib/rancher").contains("GiB free on"),
            "{table}"
        );
        assert!(
            row(&table, host, "disk /usr/local/bin").contains("GiB free on"),
            "{table}"
        );
        let route = row(&table, host, "default route");
        assert!(route.contains("dev ") || route.contains("none"), "{route}");
        // The egress port answers; nothing serves the registry port on loopback.
        let egress = row(&table, host, &format!("to localhost:{squid_port}"));
        assert!(
            egress.contains(" ok ") && egress.contains("reachable"),
            "{egress}"
        );
        let registry = row(&table, host, "to localhost:443");
        assert!(
            registry.contains(" problem ")
                && registry.contains("Connection refused")
                && registry.contains("airlock serve"),
            "{registry}"
        );
    }
    // Checks on a node that runs no K3s stop at login and SELinux.
    assert!(!table.contains("localhost  disk"), "{table}");

    let api = row(&table, "leader", "api :6443");
    assert!(
        api.contains("not yet listening (fine before the first deploy)"),
        "{api}"
    );
    assert!(!table.contains("worker  api"), "{table}");

    // The unreachable host: one row, with ssh's own words and what to do.
    let gone: Vec<&str> = table.lines().filter(|l| l.starts_with("gone ")).collect();
    assert_eq!(gone.len(), 1, "{table}");
    assert!(
        gone[0].contains("login")
            && gone[0].contains(" problem ")
            && gone[0].contains("Connection refused")
            && gone[0].contains(&dead.to_string())
            && gone[0].contains("ansible_port"),
        "{}",
        gone[0]
    );

    // One connection per host, shared by all of its checks.
    assert_eq!(sshd.logins(), 3, "{}", sshd.log());
    drop(squid);
}

#[test]
fn limit_narrows_to_named_hosts_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path(), LOOPBACK);
    let hosts = inventory(dir.path(), &sshd, closed_port(), closed_port());

    let output = preflight(&hosts, &["--limit", "staging,gone"]);
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(!output.status.success(), "{table}");
    let hosts_seen: std::collections::BTreeSet<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        hosts_seen.into_iter().collect::<Vec<_>>(),
        ["gone", "localhost"],
        "{table}"
    );

    let output = preflight(&hosts, &["--limit", "nobody"]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!output.status.success());
    assert!(
        stderr.contains("`nobody` is neither a host nor a group"),
        "{stderr}"
    );
}
