//! Inventories for the control node's tests: small air-gapped sites as YAML text.

/// A site with one staging host, one server and one agent (`ansible_host` addresses in
/// 10.0.0.0/24), air-gapped, with a K3s token and version.
pub const SMALL_SITE: &str = "\
all:
  vars:
    ansible_user: root
    air_gapped: true
staging:
  hosts:
    staging.example.test:
      ansible_host: 10.0.0.2
  vars:
    staging_k3s_token: abc
server:
  hosts:
    s1.example.test: {ansible_host: 10.0.0.3}
agents:
  hosts:
    w1.example.test: {ansible_host: 10.0.0.4}
k3s_cluster:
  children: {server: {}, agents: {}}
  vars:
    k3s_token: s3cret
    k3s_version: v1.31.4+k3s1
";

/// A small air-gapped site; `staging_vars` and `cluster_vars` are extra YAML lines (already
/// indented by four spaces) for `staging.vars` and `k3s_cluster.vars`.
#[must_use]
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
