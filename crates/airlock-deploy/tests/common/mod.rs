//! Shared helpers for the integration tests: small inline inventories.

use std::path::Path;

use airlock_ansible::inventory::Inventory;

pub fn parse(text: &str) -> Inventory {
    Inventory::parse_str(text, Path::new("inventory.yaml")).unwrap()
}

/// A small air-gapped site; `staging_vars` and `cluster_vars` are extra YAML lines (already
/// indented by four spaces) for `staging.vars` and `k3s_cluster.vars`.
pub fn site(staging_vars: &str, cluster_vars: &str) -> String {
    format!(
        "\
all:
  vars:
    air_gapped: true
staging:
  hosts:
    gw.example.org:
  vars:
    staging_k3s_token: plain-test-token
{staging_vars}
server:
  hosts:
    cp1.example.org:
workers:
  hosts:
    w1.example.org:
agents:
  children:
    workers:
k3s_cluster:
  children:
    server:
    agents:
  vars:
    k3s_version: v1.31.4+k3s1
{cluster_vars}
"
    )
}
