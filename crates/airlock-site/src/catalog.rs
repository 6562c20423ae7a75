//! What Scout's sites mirror: the public registries (Harbor proxy projects) and the package
//! repositories (Nexus repository names) that a node without internet access needs.

use std::sync::LazyLock;

use airlock_config::{Format, raw};

/// A public OCI registry and the Harbor-style project that proxies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryEntry {
    /// `<key>` in the inventory override `harbor_<key>_proxy_project`: the project name
    /// without its `-proxy` suffix.
    pub key: &'static str,
    /// Default project name: `/v2/<project>/…` on the gateway.
    pub project: &'static str,
    /// The name images use (`docker.io/library/nginx`), and containerd's `?ns=`.
    pub registry: &'static str,
    /// Where the gateway fetches from.
    pub upstream: &'static str,
}

/// A package repository the gateway proxies at `/repository/<name>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageEntry {
    pub name: &'static str,
    pub format: Format,
    pub upstream: &'static str,
}

/// The gateway's embedded default is the one table of what sites mirror: the registries
/// and repositories below are read from it, so the two cannot drift apart.
static DEFAULT: LazyLock<raw::Config> = LazyLock::new(raw::Config::embedded_default);

static REGISTRIES: LazyLock<Vec<RegistryEntry>> = LazyLock::new(|| {
    DEFAULT
        .proxies
        .iter()
        .filter(|p| p.format == Format::Oci)
        .map(|p| RegistryEntry {
            key: p.name.strip_suffix("-proxy").unwrap_or(&p.name),
            project: &p.name,
            registry: p
                .host
                .as_deref()
                .expect("every OCI proxy of the embedded default names its registry host"),
            upstream: p.upstream.as_str(),
        })
        .collect()
});

static PACKAGES: LazyLock<Vec<PackageEntry>> =
    LazyLock::new(|| package_entries(|f| f != Format::Oci && f != Format::Raw));

static K3S_FILES: LazyLock<Vec<PackageEntry>> =
    LazyLock::new(|| package_entries(|f| f == Format::Raw));

fn package_entries(keep: impl Fn(Format) -> bool) -> Vec<PackageEntry> {
    DEFAULT
        .proxies
        .iter()
        .filter(|p| keep(p.format))
        .map(|p| PackageEntry {
            name: &p.name,
            format: p.format,
            upstream: p.upstream.as_str(),
        })
        .collect()
}

/// The public registries, in the order of the embedded default.
pub fn registries() -> &'static [RegistryEntry] {
    &REGISTRIES
}

/// The package repositories (every format but OCI and raw).
pub fn packages() -> &'static [PackageEntry] {
    &PACKAGES
}

/// The K3s release assets and install script `airlock deploy` fetches through the gateway
/// (the raw proxies): always proxied, whatever `package_proxy_mode` says.
pub fn k3s_files() -> &'static [PackageEntry] {
    &K3S_FILES
}

/// Identity providers Keycloak reaches through the egress proxy, by the variable that turns
/// each on.
pub const IDP_DOMAINS: &[(&str, &str, &[&str])] = &[
    (
        "keycloak_microsoft_client_id",
        "Microsoft",
        &["login.microsoftonline.com", "graph.microsoft.com"],
    ),
    (
        "keycloak_gh_client_id",
        "GitHub",
        &["github.com", "api.github.com"],
    ),
];

/// Let's Encrypt's ACME API, needed when cert-manager issues the cluster's certificates.
pub const ACME_DOMAINS: &[&str] = &["acme-v02.api.letsencrypt.org"];

/// `k3s_selinux_channel` values rpm.rancher.io publishes.
pub const SELINUX_CHANNELS: &[&str] = &["stable", "latest", "testing"];

/// Variables airlock reads (besides `harbor_<key>_proxy_project` for each registry); a name
/// one or two typos away from one of these is probably meant to be it.
pub const KNOWN_VARS: &[&str] = &[
    "air_gapped",
    "staging_k3s_token",
    "external_url",
    "harbor_subdomain",
    "harbor_storage_size",
    "tls_cert_path",
    "tls_key_path",
    "tls_mode",
    "acmedns_host",
    "squid_extra_allowed_domains",
    "squid_port",
    "keycloak_microsoft_client_id",
    "keycloak_gh_client_id",
    "k3s_version",
    "k3s_artifact_download_timeout",
    "k3s_selinux_enabled",
    "k3s_selinux_channel",
    "k3s_selinux_rpm_site",
    "package_proxy_mode",
    "airlock_data_dir",
    "airlock_cache_max_size",
    "airlock_admin_password",
    "harbor_admin_password",
    "airlock_hosted_projects",
    "airlock_robots",
    "airlock_ca_file",
    "registry_insecure_skip_verify",
    "ansible_host",
    "ansible_user",
    "ansible_port",
    "ansible_connection",
    "ansible_become",
    "ansible_become_user",
    "ansible_become_password",
    "ansible_become_method",
    "ansible_ssh_common_args",
    "ansible_ssh_extra_args",
    "ansible_ssh_private_key_file",
    "k3s_channel",
    "k3s_token",
    "airlock_upstreams",
    "base_dir",
    "k3s_extra_args",
    "kubeconfig_yaml",
    "kubeconfig_group",
    "enable_gpu_node_taint",
    "k3s_embedded_registry",
    "coredns_forward_map",
    "coredns_forward_domains",
    "coredns_extra_server_blocks",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_from_the_embedded_default() {
        let keys: Vec<&str> = registries().iter().map(|r| r.key).collect();
        assert_eq!(
            keys,
            [
                "dockerhub",
                "ghcr",
                "quay",
                "k8ssandra",
                "k8s",
                "elastic",
                "nvidia",
                "apachesuperset"
            ]
        );
        assert_eq!(registries()[0].upstream, "https://registry-1.docker.io");
        assert_eq!(registries()[0].registry, "docker.io");
        let names: Vec<&str> = packages().iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "pypi-proxy",
                "conda-forge",
                "defaults",
                "maven-central",
                "rancher-k3s",
                "epel-9",
                "nvidia-container-toolkit"
            ]
        );
        let files: Vec<&str> = k3s_files().iter().map(|p| p.name).collect();
        assert_eq!(files, ["k3s-releases", "k3s-install"]);
    }
}
