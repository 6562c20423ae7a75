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

/// [`SMALL_SITE`] with three staging hosts ("replicas", listed out of alphabetical order so
/// inventory order shows) sharing one S3 bucket; `storage` is extra YAML for `staging.vars`
/// (indented by four spaces), e.g. the bucket's variables.
#[must_use]
pub fn replicated_site(storage: &str) -> String {
    format!(
        "\
all:
  vars:
    ansible_user: root
    air_gapped: true
staging:
  hosts:
    north.example.test: {{ansible_host: 10.0.0.21}}
    south.example.test: {{ansible_host: 10.0.0.22}}
    east.example.test: {{ansible_host: 10.0.0.23}}
  vars:
    staging_k3s_token: abc
{storage}
server:
  hosts:
    s1.example.test: {{ansible_host: 10.0.0.3}}
agents:
  hosts:
    w1.example.test: {{ansible_host: 10.0.0.4}}
k3s_cluster:
  children: {{server: {{}}, agents: {{}}}}
  vars:
    k3s_token: s3cret
    k3s_version: v1.31.4+k3s1
"
    )
}

/// The `staging.vars` lines of a bucket every replica of [`replicated_site`] shares.
pub const SHARED_BUCKET: &str = "    airlock_storage_backend: s3
    airlock_s3_bucket: airlock
    airlock_s3_endpoint: \"http://10.0.0.7:3900\"
    airlock_s3_region: garage
    airlock_s3_access_key_id_file: /etc/airlock/s3.id
    airlock_s3_secret_access_key_file: /etc/airlock/s3.secret
    airlock_k2v_endpoint: \"http://10.0.0.7:3904\"";

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
