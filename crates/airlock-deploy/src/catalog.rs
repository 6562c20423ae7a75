//! What Scout's sites mirror: the public registries (Harbor proxy projects) and the package
//! repositories (Nexus repository names) that a node without internet access needs.

/// A public OCI registry and the Harbor-style project that proxies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryEntry {
    /// `<key>` in the inventory override `harbor_<key>_proxy_project`.
    pub key: &'static str,
    /// Default project name: `/v2/<project>/…` on the gateway.
    pub project: &'static str,
    /// The name images use (`docker.io/library/nginx`), and containerd's `?ns=`.
    pub registry: &'static str,
    /// Where the gateway fetches from.
    pub upstream: &'static str,
}

pub const REGISTRIES: &[RegistryEntry] = &[
    RegistryEntry {
        key: "dockerhub",
        project: "dockerhub-proxy",
        registry: "docker.io",
        upstream: "https://registry-1.docker.io",
    },
    RegistryEntry {
        key: "ghcr",
        project: "ghcr-proxy",
        registry: "ghcr.io",
        upstream: "https://ghcr.io",
    },
    RegistryEntry {
        key: "quay",
        project: "quay-proxy",
        registry: "quay.io",
        upstream: "https://quay.io",
    },
    RegistryEntry {
        key: "k8ssandra",
        project: "k8ssandra-proxy",
        registry: "cr.k8ssandra.io",
        upstream: "https://cr.k8ssandra.io",
    },
    RegistryEntry {
        key: "k8s",
        project: "k8s-proxy",
        registry: "registry.k8s.io",
        upstream: "https://registry.k8s.io",
    },
    RegistryEntry {
        key: "elastic",
        project: "elastic-proxy",
        registry: "docker.elastic.co",
        upstream: "https://docker.elastic.co",
    },
    RegistryEntry {
        key: "nvidia",
        project: "nvidia-proxy",
        registry: "nvcr.io",
        upstream: "https://nvcr.io",
    },
    RegistryEntry {
        key: "apachesuperset",
        project: "apachesuperset-proxy",
        registry: "apachesuperset.docker.scarf.sh",
        upstream: "https://apachesuperset.docker.scarf.sh",
    },
];

/// A package repository the gateway proxies at `/repository/<name>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageEntry {
    pub name: &'static str,
    /// Gateway format: `pypi`, `conda`, `maven`, `yum`, `raw`.
    pub format: &'static str,
    pub upstream: &'static str,
}

pub const PACKAGES: &[PackageEntry] = &[
    PackageEntry {
        name: "pypi-proxy",
        format: "pypi",
        upstream: "https://pypi.org/",
    },
    PackageEntry {
        name: "conda-forge",
        format: "conda",
        upstream: "https://conda.anaconda.org/conda-forge/",
    },
    PackageEntry {
        name: "defaults",
        format: "conda",
        upstream: "https://repo.anaconda.com/pkgs/main/",
    },
    PackageEntry {
        name: "maven-central",
        format: "maven",
        upstream: "https://repo1.maven.org/maven2/",
    },
    PackageEntry {
        name: "rancher-k3s",
        format: "yum",
        upstream: "https://rpm.rancher.io/",
    },
    PackageEntry {
        name: "epel-9",
        format: "yum",
        upstream: "https://dl.fedoraproject.org/pub/epel/",
    },
    PackageEntry {
        name: "nvidia-container-toolkit",
        format: "yum",
        upstream: "https://nvidia.github.io/libnvidia-container/",
    },
];

/// The K3s release assets and install script `airlock deploy` fetches through the gateway:
/// always proxied, whatever `package_proxy_mode` says.
pub const K3S_FILES: &[PackageEntry] = &[
    PackageEntry {
        name: "k3s-releases",
        format: "raw",
        upstream: "https://github.com/k3s-io/k3s/releases/download/",
    },
    PackageEntry {
        name: "k3s-install",
        format: "raw",
        upstream: "https://get.k3s.io/",
    },
];

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
];
