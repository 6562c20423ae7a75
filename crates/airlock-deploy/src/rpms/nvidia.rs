//! The NVIDIA container toolkit for GPU workers: the packages Scout installs, NVIDIA's
//! repository (`libnvidia-container/stable/rpm/<arch>/`), and the `.repo` file that reaches
//! it through the gateway's `nvidia-container-toolkit` yum proxy.

use std::fmt::Write as _;

use airlock_site::site::Site;

/// What a GPU worker needs so containerd can run the `nvidia` runtime.
pub const PACKAGES: [&str; 4] = [
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
];

/// The gateway proxy (and its upstream, unless the site overrides it).
pub const PROXY: &str = "nvidia-container-toolkit";
/// NVIDIA's signing key, below the proxy's root.
pub const KEY: &str = "gpgkey";
const UPSTREAM: &str = "https://nvidia.github.io/libnvidia-container/";

/// `stable/rpm/<arch>`: where NVIDIA publishes the RPMs below the proxy's root.
pub fn repo_path(arch: &str) -> String {
    format!("stable/rpm/{arch}")
}

/// The upstream URL of NVIDIA's repository for `arch` (`uname -m`): the
/// `nvidia-container-toolkit` proxy's upstream (or `airlock_upstreams`), else NVIDIA's.
pub fn upstream_repo(site: &Site, arch: &str) -> String {
    let root = site
        .packages
        .iter()
        .find(|p| p.name == PROXY)
        .map_or(UPSTREAM, |p| p.upstream.as_str());
    format!("{}/{}/", root.trim_end_matches('/'), repo_path(arch))
}

/// A dnf `.repo` for the toolkit through the gateway (`gateway_repository_base` is
/// `https://<gateway>/repository`), checked as NVIDIA's own `.repo` checks it: the
/// repository metadata's signature against NVIDIA's key (`repo_gpgcheck`).
pub fn repo_file(gateway_repository_base: &str, ca_path_on_node: &str) -> String {
    let proxy = format!("{}/{PROXY}", gateway_repository_base.trim_end_matches('/'));
    let mut text = format!(
        "# Written by airlock: the NVIDIA container toolkit through the gateway.\n\
         [{PROXY}]\n\
         name=NVIDIA container toolkit via airlock\n\
         baseurl={proxy}/{path}\n\
         enabled=1\n\
         gpgcheck=0\n\
         repo_gpgcheck=1\n\
         gpgkey={proxy}/{KEY}\n",
        path = repo_path("$basearch"),
    );
    if !ca_path_on_node.is_empty() {
        let _ = writeln!(text, "sslcacert={ca_path_on_node}");
    }
    let _ = writeln!(
        text,
        "{}\ntimeout={}",
        airlock_site::render::TIMEOUT_WHY,
        airlock_site::render::READ_TIMEOUT_SECS
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_file_points_at_the_proxy_and_checks_the_signature() {
        let text = repo_file("https://gw.example.org/repository/", "/etc/ca.crt");
        assert!(
            text.contains(
                "baseurl=https://gw.example.org/repository/nvidia-container-toolkit/stable/rpm/$basearch\n"
            ),
            "{text}"
        );
        assert!(text.contains("repo_gpgcheck=1\n"), "{text}");
        assert!(
            text.contains(
                "gpgkey=https://gw.example.org/repository/nvidia-container-toolkit/gpgkey\n"
            ),
            "{text}"
        );
        assert!(text.contains("sslcacert=/etc/ca.crt\n"), "{text}");
        assert!(!repo_file("https://gw/repository", "").contains("sslcacert"));
    }
}
