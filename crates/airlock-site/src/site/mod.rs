//! The deployment an inventory describes, read once into typed settings.
//!
//! Each setting is looked up where Scout's playbooks look for it: gateway settings on the
//! staging host, cluster settings on the first `server` host; settings both sides share fall
//! back from one to the other. The `staging` group may hold several hosts ("replicas"): the
//! first is the primary, where the gateway's settings are read, and every one of them runs
//! the same gateway under its own name, so nodes list them all and move to the next when one
//! dies. Variables come from the inventory file, `group_vars/`,
//! `host_vars/` and `-e`, with Ansible's precedence ([`Inventory`]); every bad value becomes a
//! [`Diagnostic`] on the file and line it was set, and [`Site::sources`] says where each
//! setting came from. Vault values are decrypted only when a setting needs them, and never
//! echoed.
//!
//! | variable | read on | effect (default) |
//! |---|---|---|
//! | `air_gapped` | any | require a staging node (false) |
//! | `staging_k3s_token` | staging | not used by airlock (Scout's staging K3s); a warning when missing |
//! | `external_url` | each staging host | its gateway hostname (the inventory name); a value the first staging host shares with another (a group's, `all`'s, `-e`) names only the first |
//! | `harbor_subdomain` | staging, then server | registry name `<sub>.<hostname>`; `''` = hostname (`harbor`) |
//! | `harbor_<key>_proxy_project` | staging, then server | project of that registry (Scout's names) |
//! | `tls_cert_path`, `tls_key_path` | staging | gateway certificate files (self-signed) |
//! | `tls_mode`, `acmedns_host` | server, then staging | `cert_manager` opens Let's Encrypt and acme-dns |
//! | `keycloak_microsoft_client_id`, `keycloak_gh_client_id` | server, then staging | open the IdP's domains |
//! | `squid_port`, `squid_extra_allowed_domains` | staging, then server | egress port (3128), extra exact names |
//! | `package_proxy_mode` | staging, then server | `airlock`/`nexus`: package proxies and clients (`none`) |
//! | `k3s_version`, `k3s_selinux_*`, `k3s_artifact_download_timeout` | server, then staging | K3s install |
//! | `harbor_storage_size`, `airlock_cache_max_size` | staging | cache size limit (none) |
//! | `airlock_data_dir` | staging | gateway store (`/var/lib/airlock`) |
//! | `airlock_storage_backend` | staging | `[storage] backend`: `fs` or `s3` (no `[storage]`: `fs`; with several staging hosts a warning unless written) |
//! | `airlock_s3_bucket`, `airlock_s3_endpoint`, `airlock_s3_region`, `airlock_s3_path_style` | staging | `[storage]` `bucket`, `endpoint`, `region`, `path_style` (the gateway's defaults) |
//! | `airlock_s3_access_key_id_file`, `airlock_s3_secret_access_key_file` | staging | files on the control node, installed at the same paths on every staging host for `[storage]`'s `*_file` keys (none: the environment's `AWS_*`); the keys themselves are refused as variables |
//! | `airlock_s3_local_cache` | staging | `[storage] local_cache`, the hot tier (`10GiB`) |
//! | `airlock_k2v_endpoint` | staging | `[storage] k2v_endpoint`: replicas share tags, records, leases and eviction through Garage's K2V API (none: a warning with several staging hosts on s3) |
//! | `airlock_admin_password`, `harbor_admin_password` | staging | the gateway's `admin` user, rendered as an argon2id hash (none) |
//! | `airlock_hosted_projects` | staging | `[[hosted]]`: a list of `{name, anonymous_pull, delete}`, the flags false unless set (none) |
//! | `airlock_robots` | staging | `[[robot]]`: a list of `{name, secret, push, pull}` (globs `<project>/<repository glob>` of those projects); the secret (`!vault`) is rendered as an argon2id hash, and for CI runners as `ci/<name>/config.json` (none) |
//! | `airlock_ca_file` | server, then staging | CA path on nodes (`/etc/rancher/k3s/staging-ca.crt` when self-signed) |
//! | `registry_insecure_skip_verify` | server, then staging | skip TLS verification on nodes (false) |
//! | `k3s_channel`, `k3s_token` | server, then staging | version when `k3s_version` is unset (`stable`); join secret |
//! | `base_dir` | server, then staging | `--default-local-storage-path` on servers, created (`/var/lib/rancher/k3s/storage`) |
//! | `k3s_extra_args` | server, then staging | more K3s server flags, split as a shell would (none) |
//! | `kubeconfig_yaml`, `kubeconfig_group` | server, then staging | servers' admin kubeconfig, mode 0640 for that group (`/etc/rancher/k3s/k3s.yaml`, `root`) |
//! | `enable_gpu_node_taint` | server, then staging | `nvidia.com/gpu=present:NoSchedule` on `gpu_workers` of multi-node clusters (true) |
//! | `k3s_embedded_registry` | server, then staging | `--embedded-registry` on servers: nodes share layers peer to peer (false) |
//! | `coredns_forward_map`, `coredns_forward_domains` (deprecated) | server, then staging | `{IP or resolv.conf path: [domains]}` forwarded by `CoreDNS` (none) |
//! | `coredns_extra_server_blocks` | server, then staging | `{name: Corefile text}` as `<name>.server` in `coredns-custom` (none) |
//! | `airlock_upstreams` | staging, then server | `{registry or repository: URL}` overrides the gateway's upstreams |
//! | `https_proxy` (or `http_proxy`), `no_proxy` | staging | the site's outbound proxy for the gateway and deploy's downloads (none) |
//! | `airlock_upstream_proxy_ca_file` | staging | CA (PEM, on the control node) of a TLS-intercepting proxy (none) |
//! | `ansible_host`, `ansible_user`, `ansible_port`, `ansible_connection` | each host | SSH target |
//! | `ansible_become`, `ansible_become_user`, `ansible_become_password` | each host | sudo for deploy |
//! | `ansible_ssh_common_args`, `ansible_ssh_extra_args`, `ansible_ssh_private_key_file` | each host | extra ssh options |

mod cluster;
mod hosted;
mod outbound;
mod reader;
mod settings;
mod storage;
mod values;

use std::path::PathBuf;

use airlock_ansible::connection::Machine;
use airlock_ansible::inventory::{Diagnostic, Inventory, Location};
use airlock_ansible::vault::{Secret, VaultSecret};

pub use cluster::{
    CoreDns, DEFAULT_BASE_DIR, DEFAULT_KUBECONFIG, K3sInstall, is_forward_destination,
};
pub use outbound::PASSWORD_FILE as UPSTREAM_PROXY_PASSWORD_FILE;
use reader::Reader;
pub use values::{host_of_url, is_hostname};

/// Where nodes find the gateway's CA certificate when it is self-signed.
pub const DEFAULT_CA_FILE: &str = "/etc/rancher/k3s/staging-ca.crt";

/// The deployment, as far as airlock renders and installs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub inventory: PathBuf,
    pub air_gapped: bool,
    /// The primary staging host: the first of the `staging` group, `replicas[0]`.
    pub staging: Option<Staging>,
    /// Every staging host in inventory order, the primary first; each runs the gateway.
    pub replicas: Vec<Staging>,
    pub servers: Vec<Machine>,
    pub workers: Vec<Machine>,
    pub gpu_workers: Vec<Machine>,
    pub agents: Vec<Machine>,
    pub data_dir: String,
    pub cache_max_size: Option<String>,
    /// The gateway's `[storage]` table, the same on every replica; `None`: not set (`fs`).
    pub storage: Option<airlock_config::raw::Storage>,
    pub tls: GatewayTls,
    /// CA file on nodes for the registry (`configs.<host>.tls.ca_file`), when needed.
    pub ca_file: Option<String>,
    pub insecure_skip_verify: bool,
    pub cert_manager: bool,
    pub mirrors: Vec<Mirror>,
    pub package_proxy_mode: PackageProxyMode,
    pub packages: Vec<PackageProxy>,
    pub identity_providers: Vec<&'static str>,
    pub egress: Egress,
    pub k3s: K3s,
    /// How the K3s installer runs on the nodes.
    pub install: K3sInstall,
    /// The `coredns-custom` `ConfigMap`'s forwarding and extra server blocks.
    pub coredns: CoreDns,
    /// The site's outbound proxy, when the staging and control nodes must use one.
    pub upstream_proxy: Option<OutboundProxy>,
    /// The gateway's `admin` user's password (`airlock_admin_password`, else Scout's
    /// `harbor_admin_password`); only its hash is rendered.
    pub admin_password: Option<AdminPassword>,
    /// The gateway's `[[hosted]]` projects (`airlock_hosted_projects`).
    pub hosted: Vec<airlock_config::raw::Hosted>,
    /// The gateway's `[[robot]]` accounts (`airlock_robots`), each checked against `hosted`.
    pub robots: Vec<Robot>,
    /// Every variable a setting was read from, by name, and where it was set.
    pub sources: Vec<Source>,
}

/// A password read from the inventory; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminPassword(pub String);

impl std::fmt::Debug for AdminPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminPassword(…)")
    }
}

/// A robot account for CI inside the site: the gateway gets a hash of its secret, the CI
/// runners a `docker login`-style file with the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Robot {
    pub name: String,
    pub secret: RobotSecret,
    /// `<project>/<repository glob>`s it may push to (and pull from).
    pub push: Vec<String>,
    /// `<project>/<repository glob>`s it may pull from.
    pub pull: Vec<String>,
}

/// A robot's secret, read from the inventory; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RobotSecret(pub String);

impl std::fmt::Debug for RobotSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RobotSecret(…)")
    }
}

/// A variable a setting was read from: where it was set, and its value as written (vault
/// values and secret-looking names hidden).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub value: String,
    pub file: PathBuf,
    /// 0 for `-e` on the command line.
    pub line: usize,
}

impl Source {
    /// `file:line`, or `-e`.
    pub fn location(&self) -> Location<'_> {
        Location {
            file: &self.file,
            line: self.line,
        }
    }
}

/// A staging node: where `airlock serve` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staging {
    pub machine: Machine,
    /// The gateway's public name (`external_url` or the inventory name).
    pub hostname: String,
    /// The registry name nodes pull from: `harbor.<hostname>`, or `hostname` itself.
    pub registry_host: String,
}

/// The gateway's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayTls {
    SelfSigned,
    Files { cert: String, key: String },
}

/// One public registry mirrored through a gateway project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub registry: String,
    pub project: String,
    pub upstream: String,
}

/// `package_proxy_mode`: whether the gateway also proxies package repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageProxyMode {
    /// Nodes get packages some other way (or not at all).
    None,
    /// The gateway proxies them (`nexus` in Scout's inventories, or `airlock`).
    Gateway,
    /// Another proxy the site runs; airlock renders nothing for it.
    External,
}

/// The egress proxy (Squid's replacement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    pub port: u16,
    pub allow: Vec<String>,
}

/// The site's outbound proxy (`https_proxy`, `no_proxy`): the gateway's upstreams and the
/// control node's downloads go through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundProxy {
    /// `http(s)://host:port/`, without credentials.
    pub url: url::Url,
    pub username: Option<String>,
    /// From the URL's userinfo; rendered only as a file path, installed by deploy.
    pub password: Option<Secret>,
    /// Hosts reached directly (`[upstream_proxy] no_proxy`).
    pub no_proxy: Vec<String>,
    /// A PEM file on the control node, installed at the same path on the staging node.
    pub ca_file: Option<String>,
}

/// K3s settings the install and the `SELinux` repository need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3s {
    pub version: Option<String>,
    pub selinux: bool,
    pub selinux_channel: String,
    /// Where the `SELinux` RPMs come from (`k3s_selinux_rpm_site`).
    pub selinux_rpm_site: String,
    /// Seconds to wait for each K3s artifact download.
    pub artifact_download_timeout: Option<u64>,
    /// `k3s_channel`: where the version comes from when `k3s_version` is not set.
    pub channel: String,
    /// `k3s_token`: the cluster's join secret.
    pub token: Option<Secret>,
}

/// A package repository the gateway proxies at `/repository/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageProxy {
    pub name: &'static str,
    pub format: airlock_config::Format,
    pub upstream: String,
}

impl Site {
    /// Read the site from an inventory. Problems come back as diagnostics next to a site
    /// filled with defaults where values were missing or bad.
    pub fn read(inventory: &Inventory, secret: Option<&VaultSecret>) -> (Self, Vec<Diagnostic>) {
        let mut reader = Reader::new(inventory, secret);
        let site = reader.site();
        (site, reader.diagnostics)
    }

    /// The gateway URL prefix for package repositories: `https://<hostname>/repository`.
    pub fn repository_base(&self) -> Option<String> {
        self.staging
            .as_ref()
            .map(|s| format!("https://{}/repository", s.hostname))
    }

    pub fn has_package(&self, name: &str) -> bool {
        self.packages.iter().any(|p| p.name == name)
    }

    /// Where the variable `name` the site was read from was set.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }
}
