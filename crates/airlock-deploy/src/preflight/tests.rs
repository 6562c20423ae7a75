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

/// Every staging host is a target, in inventory order, and a node must reach each one's
/// registry and egress ports: it moves to the next when one fails.
#[test]
fn every_replica_is_checked_and_must_be_reachable_from_nodes() {
    let text =
        airlock_testkit::inventory::replicated_site(airlock_testkit::inventory::SHARED_BUCKET);
    let inventory = Inventory::parse_str(&text, std::path::Path::new("hosts.yaml")).unwrap();
    let (site, _) = Site::read(&inventory, None);
    let all = targets(&site, &[]).unwrap();
    let staging: Vec<&str> = all
        .iter()
        .filter(|(_, role)| *role == Role::Staging)
        .map(|(m, _)| m.name.as_str())
        .collect();
    assert_eq!(
        staging,
        [
            "north.example.test",
            "south.example.test",
            "east.example.test"
        ]
    );
    let limited = targets(&site, &["staging".to_owned()]).unwrap();
    assert_eq!(limited.len(), 3);

    let node = rocky_with(
        "s1.example.test",
        &[("harbor.south.example.test 443", 124, "")],
    );
    let rows = check_host(&node, Role::Server, &site);
    let reach: Vec<&str> = rows
        .iter()
        .filter(|r| r.check.starts_with("to "))
        .map(|r| r.check.as_str())
        .collect();
    assert_eq!(
        reach,
        [
            "to harbor.north.example.test:443",
            "to north.example.test:3128",
            "to harbor.south.example.test:443",
            "to south.example.test:3128",
            "to harbor.east.example.test:443",
            "to east.example.test:3128",
        ]
    );
    assert_eq!(
        problems(&rows),
        [("to harbor.south.example.test:443", "no answer within 5s")]
    );
}

/// With K3s's embedded mirror, each node must reach the others' peer ports; nothing
/// listening yet is fine before the first deploy, a silent firewall is not.
#[test]
fn with_the_embedded_mirror_a_node_must_reach_the_other_nodes_peer_ports() {
    let site = inventory_site("    k3s_embedded_registry: true\n");
    let peers = |rows: &[Row]| -> Vec<String> {
        rows.iter()
            .filter(|r| r.check.starts_with("peers"))
            .map(|r| format!("{}: {}", r.check, r.detail))
            .collect()
    };
    // The leader probes the worker (not itself): one refused, one dropped.
    let node = rocky_with(
        "leader.example.edu",
        &[(
            "probe()",
            0,
            "peer 10.0.0.8 5001 1 Connection refused\npeer 10.0.0.8 6443 124 \n",
        )],
    );
    let rows = check_host(&node, Role::Server, &site);
    assert_eq!(
        problems(&rows),
        [("peers :5001 :6443", "10.0.0.8:6443 (no answer within 5s)")]
    );
    let problem = rows.iter().find(|r| r.check.starts_with("peers")).unwrap();
    assert!(
        problem.fix.contains("allow TCP 5001 and 6443"),
        "{problem:?}"
    );

    let node = rocky_with(
        "worker.example.edu",
        &[(
            "probe()",
            0,
            "peer 10.0.0.7 6443 0 \npeer 10.0.0.7 5001 1 Connection refused\n",
        )],
    );
    let rows = check_host(&node, Role::Agent, &site);
    assert_eq!(problems(&rows), []);
    assert_eq!(
        peers(&rows),
        ["peers :5001 :6443: 1 peers reachable or not yet listening"]
    );

    // A probe that never answered is a problem, not a pass.
    let node = rocky_with("worker.example.edu", &[("probe()", 0, "")]);
    let rows = check_host(&node, Role::Agent, &site);
    assert_eq!(problems(&rows).len(), 1, "{rows:?}");

    // Without the mirror, no such check.
    let rows = check_host(
        &rocky("leader.example.edu"),
        Role::Server,
        &inventory_site(""),
    );
    assert!(peers(&rows).is_empty());
}

/// The probe script itself, run by bash here: a closed port is fine, a name that does not
/// resolve is named.
#[test]
fn the_peer_probe_runs_in_bash_and_tells_refused_from_unresolvable() {
    let here = airlock_remote::local::Local::new("here", None);
    let row = super::checks::peers_row(&here, &["127.0.0.1"]);
    assert_eq!(row.status, Status::Ok, "{row:?}");
    let row = super::checks::peers_row(&here, &["peer.invalid"]);
    assert_eq!(row.status, Status::Problem, "{row:?}");
    assert!(
        row.detail.starts_with("peer.invalid:5001 (") && row.detail.contains("peer.invalid:6443"),
        "{row:?}"
    );
}
