//! Shared helpers for the integration tests: the fixture inventory and small inline ones.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use airlock_ansible::inventory::Inventory;
use airlock_ansible::vault::VaultSecret;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn example_path() -> PathBuf {
    fixtures().join("inventory.example.yaml")
}

pub fn example() -> Inventory {
    Inventory::load(&example_path(), None).unwrap()
}

pub fn secret() -> VaultSecret {
    VaultSecret::from_file(&fixtures().join("vault-password"), None).unwrap()
}

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
