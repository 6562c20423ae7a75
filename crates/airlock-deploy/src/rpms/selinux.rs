//! Rancher's `SELinux` policy for K3s: the packages, their upstream repository and the
//! `.repo` file that reaches it through the gateway's `rancher-k3s` yum proxy.

use std::fmt::Write as _;

use airlock_site::site::Site;

/// What K3s needs for `SELinux`.
pub const PACKAGES: [&str; 2] = ["k3s-selinux", "container-selinux"];
/// The packages' signing key, below the `rancher-k3s` proxy's root.
pub const KEY: &str = "public.key";

/// Rancher's repository path for `SELinux` packages: `k3s/<channel>/common/centos/<el>/noarch`
/// (as K3s's install script writes it), below the `rancher-k3s` proxy's root.
pub fn rancher_path(site: &Site, el_major: u32) -> String {
    format!(
        "k3s/{}/common/centos/{el_major}/noarch",
        site.k3s.selinux_channel
    )
}

/// The upstream URL of Rancher's `SELinux` repository for RHEL `el_major`: the `rancher-k3s`
/// proxy's upstream (`k3s_selinux_rpm_site`, or `airlock_upstreams`) and the channel path
/// (`k3s/<channel>/common/centos/<el>/noarch`).
pub fn rancher_repo(site: &Site, el_major: u32) -> String {
    let root = site
        .packages
        .iter()
        .find(|p| p.name == "rancher-k3s")
        .map_or_else(
            || format!("https://{}/", site.k3s.selinux_rpm_site),
            |p| p.upstream.clone(),
        );
    format!(
        "{}/{}/",
        root.trim_end_matches('/'),
        rancher_path(site, el_major)
    )
}

/// A dnf `.repo` for Rancher's `SELinux` packages through the gateway's `rancher-k3s` yum
/// proxy (`gateway_repository_base` is `https://<gateway>/repository`), for RHEL
/// `el_major`; `sslcacert=` names `ca_path_on_node` unless it is empty.
pub fn repo_file(
    site: &Site,
    gateway_repository_base: &str,
    ca_path_on_node: &str,
    el_major: u32,
) -> String {
    let channel = &site.k3s.selinux_channel;
    let proxy = format!(
        "{}/rancher-k3s",
        gateway_repository_base.trim_end_matches('/')
    );
    let mut text = format!(
        "# Written by airlock: Rancher's K3s SELinux packages through the gateway.\n\
         [rancher-k3s-common-{channel}]\n\
         name=Rancher K3s Common ({channel}) via airlock\n\
         baseurl={proxy}/{path}\n\
         enabled=1\n\
         gpgcheck=1\n\
         repo_gpgcheck=0\n\
         gpgkey={proxy}/{KEY}\n",
        path = rancher_path(site, el_major),
    );
    if !ca_path_on_node.is_empty() {
        text.push_str("sslcacert=");
        text.push_str(ca_path_on_node);
        text.push('\n');
    }
    let _ = writeln!(
        text,
        "{}\ntimeout={}",
        airlock_site::render::TIMEOUT_WHY,
        airlock_site::render::READ_TIMEOUT_SECS
    );
    text
}
