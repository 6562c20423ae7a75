use std::path::Path;

use super::*;

fn inv(text: &str) -> Inventory {
    Inventory::parse_str(text, Path::new("inv.yaml")).unwrap()
}

fn value(vars: &HostVars<'_>, name: &str) -> Option<String> {
    vars.get(name).and_then(|v| v.text(None).unwrap())
}

const LAYERED: &str = "\
all:
  vars:
    level: all
    only_all: a
k3s_cluster:
  children:
    server:
    agents:
  vars:
    level: k3s_cluster
agents:
  children:
    workers:
  vars:
    level: agents
workers:
  hosts:
    w1:
      level: host
    w2:
  vars:
    level: workers
server:
  hosts:
    s1:
";

#[test]
fn host_vars_beat_deeper_groups_which_beat_shallower_ones() {
    let inventory = inv(LAYERED);
    assert!(
        inventory.diagnostics.is_empty(),
        "{:?}",
        inventory.diagnostics
    );
    assert_eq!(
        value(&inventory.vars_of("w1"), "level").as_deref(),
        Some("host")
    );
    assert_eq!(
        value(&inventory.vars_of("w2"), "level").as_deref(),
        Some("workers")
    );
    assert_eq!(
        value(&inventory.vars_of("s1"), "level").as_deref(),
        Some("k3s_cluster")
    );
    assert_eq!(
        value(&inventory.vars_of("s1"), "only_all").as_deref(),
        Some("a")
    );
}

#[test]
fn groups_of_a_host_are_ordered_by_depth_then_name() {
    let inventory = inv(LAYERED);
    let names: Vec<&str> = inventory
        .groups_of("w1")
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(names, ["all", "k3s_cluster", "agents", "workers"]);
}

#[test]
fn hosts_of_a_group_include_its_children() {
    let inventory = inv(LAYERED);
    assert_eq!(inventory.hosts_of("k3s_cluster"), ["w1", "w2", "s1"]);
    assert_eq!(inventory.hosts_of("server"), ["s1"]);
    assert!(inventory.hosts_of("missing").is_empty());
}

#[test]
fn structural_mistakes_are_reported_with_their_line() {
    let inventory = inv(
        "all:\n  vars:\n    a: 1\n  host:\n    x:\nstaging: [a, b]\nweb:\n  hosts:\n    web[1:3].edu:\n",
    );
    let lines: Vec<(usize, &str)> = inventory
        .diagnostics
        .iter()
        .map(|d| (d.line, d.message.as_str()))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0].0, 4);
    assert!(lines[0].1.contains("unknown key `host`"));
    assert_eq!(lines[1].0, 6);
    assert!(lines[1].1.contains("must be a mapping"));
    assert_eq!(lines[2].0, 9);
    assert!(lines[2].1.contains("host range"));
}

#[test]
fn cycles_are_refused() {
    let inventory = inv("a:\n  children:\n    b:\nb:\n  children:\n    a:\n");
    assert_eq!(inventory.diagnostics.len(), 1);
    assert!(inventory.diagnostics[0].message.contains("contain itself"));
    assert!(!inventory.groups_of("x").is_empty());
}

#[test]
fn empty_and_non_mapping_inventories() {
    assert!(inv("").diagnostics[0].message.contains("empty"));
    assert!(
        inv("- a\n").diagnostics[0]
            .message
            .contains("mapping of groups")
    );
}

#[test]
fn vault_values_need_a_password_to_be_read() {
    let inventory =
        inv("all:\n  vars:\n    token: !vault |\n      $ANSIBLE_VAULT;1.1;AES256\n      00\n");
    let var = inventory.vars_of("nobody").get("token").unwrap();
    assert_eq!(var.mark.line, 3);
    assert_eq!(
        var.text(None).unwrap_err(),
        VarError::NoPassword {
            name: "token".into()
        }
    );
    assert_eq!(var.vault_values().len(), 1);
}
