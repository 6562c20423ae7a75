//! Upgrades on the namespace test bed (see `deploy_netns.rs` for the bed; needs root): a new
//! `k3s_version` rolls through an installed cluster node by node, and stops at the first
//! node whose installer fails; a new airlock binary restarts the gateway once.
//!
//! The bed has node1 (server), node2 (GPU agent) and node3 (agent). Each stand-in `k3s`
//! records the version its node runs where the server's `kubectl get nodes` reads it, so
//! deploy sees every node Ready at the version it really runs.

mod bed;

use std::time::Duration;

use bed::*;

/// The version `node`'s kubelet reports (what its running stand-in `k3s` recorded).
fn running(bed: &Bed, node: &Node) -> String {
    std::fs::read_to_string(bed.path("cluster").join(node.name))
        .unwrap_or_else(|e| panic!("{} never ran k3s: {e}", node.name))
        .trim()
        .to_owned()
}

fn at(run: &std::collections::BTreeMap<String, String>) -> f64 {
    run["at"].parse().unwrap()
}

fn position(output: &str, text: &str) -> usize {
    output
        .find(text)
        .unwrap_or_else(|| panic!("the output shows `{text}`:\n{output}"))
}

#[test]
fn a_new_version_rolls_node_by_node_and_stops_at_the_first_failure() {
    let bed = Bed::with_agents(1);
    check_bed(&bed);
    let node3 = &bed.agents[0];
    let nodes = [&bed.node1, &bed.node2, node3];
    let step = Duration::from_secs(150);
    let upgrade = format!("k3s_version={UPGRADE}");

    // 1. The cluster at GOOD.
    let (ok, output) = bed.airlock(&["deploy"], step);
    assert!(ok, "the first deploy succeeds:\n{output}");
    for node in nodes {
        assert_eq!(running(&bed, node), GOOD, "{} runs {GOOD}", node.name);
    }

    // 2. --check shows every node's upgrade and changes nothing.
    let (ok, output) = bed.airlock(&["deploy", "--check", "-e", &upgrade], step);
    assert!(ok, "deploy --check of the upgrade succeeds:\n{output}");
    for node in nodes {
        position(
            &output,
            &format!("would change: {}: k3s {GOOD} → {UPGRADE}", node.name),
        );
        assert_eq!(installer_runs(node).len(), 1, "--check installs nothing");
        assert_eq!(running(&bed, node), GOOD);
    }

    // 3. node2's installer fails at UPGRADE: node1 was upgraded and Ready first, node3 is
    //    left as it was, and the error says how to resume.
    let plant = format!("touch /var/lib/standin/fail-install-{UPGRADE}");
    assert!(bed.ssh(&bed.node2, &plant).status.success());
    let (ok, output) = bed.airlock(&["deploy", "-e", &upgrade], step);
    assert!(!ok, "the rollout fails at node2:\n{output}");
    for shown in [
        "the install of v1.32.0+k3s1 fails on this node",
        &format!("Upgraded to {UPGRADE} and Ready: node1.example.test."),
        "Stopped at: node2.example.test.",
        "Not touched: node3.example.test.",
        "run the same deploy again",
    ] {
        position(&output, shown);
    }
    let server_ready = position(
        &output,
        &format!("ok: node1.example.test: Ready at {UPGRADE}"),
    );
    assert!(
        server_ready < position(&output, "stage `nodes` failed on node2.example.test"),
        "node1 is Ready at {UPGRADE} before node2 fails:\n{output}"
    );
    let (server, agent) = (installer_runs(&bed.node1), installer_runs(&bed.node2));
    assert_eq!(server.len(), 2, "node1 was upgraded: {server:?}");
    assert_eq!(server[1]["INSTALL_K3S_VERSION"], UPGRADE);
    assert_eq!(
        agent.len(),
        2,
        "node2's installer ran and failed: {agent:?}"
    );
    assert!(
        at(&server[1]) < at(&agent[1]),
        "the server is upgraded before the agent"
    );
    assert_eq!(running(&bed, &bed.node1), UPGRADE);
    assert_eq!(running(&bed, &bed.node2), GOOD, "node2 still runs {GOOD}");
    assert_eq!(installer_runs(node3).len(), 1, "node3 is not touched");
    assert_eq!(running(&bed, node3), GOOD);
    assert_eq!(
        node3.machine.read("/usr/local/bin/k3s"),
        Some(bed.k3s.clone()),
        "node3 keeps the {GOOD} binary"
    );

    // 4. Fixed, the same command resumes: node1 is left alone, node2 then node3, each
    //    Ready at UPGRADE before the next starts.
    let fix = format!("rm /var/lib/standin/fail-install-{UPGRADE}");
    assert!(bed.ssh(&bed.node2, &fix).status.success());
    let (ok, output) = bed.airlock(&["deploy", "-e", &upgrade], step);
    assert!(ok, "the resumed rollout succeeds:\n{output}");
    assert_eq!(
        installer_runs(&bed.node1).len(),
        2,
        "node1 is not upgraded twice"
    );
    let (agent, other) = (installer_runs(&bed.node2), installer_runs(node3));
    assert_eq!((agent.len(), other.len()), (3, 2), "{agent:?} {other:?}");
    assert!(at(&agent[2]) < at(&other[1]), "node2 before node3");
    assert!(
        position(
            &output,
            &format!("ok: node2.example.test: Ready at {UPGRADE}")
        ) < position(
            &output,
            &format!("changed: node3.example.test: k3s {GOOD} → {UPGRADE}")
        ),
        "node3 is upgraded only after node2 is Ready at {UPGRADE}:\n{output}"
    );
    for node in nodes {
        assert_eq!(running(&bed, node), UPGRADE, "{} runs {UPGRADE}", node.name);
        assert_eq!(
            node.machine.read("/usr/local/bin/k3s"),
            Some(bed.k3s_upgrade.clone()),
            "{} has the {UPGRADE} binary",
            node.name
        );
    }

    // 5. Once more: nothing changes.
    let (ok, output) = bed.airlock(&["deploy", "-e", &upgrade], step);
    assert!(ok, "a third run succeeds:\n{output}");
    for (host, _, changed, failed) in recap(&output) {
        assert!(
            changed == 0 && failed == 0,
            "nothing changes on {host}:\n{output}"
        );
    }

    // 6. A new airlock binary for the gateway alone: one restart, /healthz, nodes untouched.
    let binary = bed.path("airlock-next");
    let mut next = std::fs::read(env!("CARGO_BIN_EXE_airlock")).unwrap();
    next.extend_from_slice(b"\n# a later build\n");
    std::fs::write(&binary, &next).unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let restarts = || {
        let log = bed
            .staging
            .machine
            .read("/var/lib/standin/systemctl.log")
            .unwrap_or_default();
        String::from_utf8_lossy(&log)
            .lines()
            .filter(|l| l.ends_with(" restart airlock") || l.ends_with(" restart airlock.service"))
            .count()
    };
    let before = restarts();
    let (ok, output) = bed.airlock(
        &[
            "deploy",
            "--limit",
            "staging",
            "--airlock-binary",
            binary.to_str().unwrap(),
        ],
        step,
    );
    assert!(ok, "the gateway upgrade succeeds:\n{output}");
    assert_eq!(
        restarts(),
        before + 1,
        "the gateway restarted once:\n{output}"
    );
    position(&output, "/healthz answers");
    assert_eq!(
        bed.staging.machine.read("/usr/local/bin/airlock"),
        Some(next),
        "staging runs the new binary"
    );
    for node in nodes {
        assert_eq!(running(&bed, node), UPGRADE);
    }
    assert_eq!(
        installer_runs(node3).len(),
        2,
        "--limit staging leaves the nodes alone"
    );
}
