//! How the K3s installer runs on one node: its flags and environment, from the inventory
//! variables Scout's `k3s` role reads. Everything here goes into the install marker, so a
//! change re-runs the installer.
//!
//! | flag or variable | nodes | when |
//! |---|---|---|
//! | `--default-local-storage-path=<base_dir>` | servers | always |
//! | `--tls-san=<ansible_host>`, `--tls-san=<inventory name>` | servers | always |
//! | `--disable-default-registry-endpoint` | all | a staging gateway serves the mirrors |
//! | `--node-taint=node-role.kubernetes.io/control-plane:PreferNoSchedule` | servers | more than one node |
//! | `--node-taint=nvidia.com/gpu=present:NoSchedule` | `gpu_workers` | more than one node, `enable_gpu_node_taint` |
//! | `--embedded-registry` | servers | `k3s_embedded_registry`: Spegel shares layers between nodes |
//! | `k3s_extra_args` | servers | always, last |
//! | `K3S_KUBECONFIG_OUTPUT`, `K3S_KUBECONFIG_MODE=0640`, `K3S_KUBECONFIG_GROUP` | servers | always |

use airlock_ansible::connection::Machine;
use airlock_site::site::Site;

use super::nodes::Role;

pub const CONTROL_PLANE_TAINT: &str = "node-role.kubernetes.io/control-plane:PreferNoSchedule";
pub const GPU_TAINT: &str = "nvidia.com/gpu=present:NoSchedule";
/// The kubeconfig's mode on servers: root writes, `kubeconfig_group` reads.
pub const KUBECONFIG_MODE: u32 = 0o640;

/// The installer's flags and environment for one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInstall {
    /// After `server`/`agent --node-name <name>`.
    pub flags: Vec<String>,
    /// Exported for the installer, which keeps `K3S_*` in the service's environment file.
    pub env: Vec<(&'static str, String)>,
    /// A GPU worker: `default-runtime: nvidia`.
    pub gpu: bool,
}

/// The flags and environment of `machine` in its `role`; `nodes` is how many nodes the
/// cluster has (servers and agents).
pub fn node_install(site: &Site, machine: &Machine, role: Role, nodes: usize) -> NodeInstall {
    let server = role != Role::Agent;
    let gpu = site.gpu_workers.iter().any(|m| m.name == machine.name);
    let multi_node = nodes > 1;
    let install = &site.install;
    let mut flags = Vec::new();
    let mut env = Vec::new();
    if server {
        flags.push(format!("--default-local-storage-path={}", install.base_dir));
        flags.push(format!("--tls-san={}", machine.address));
        if machine.name != machine.address {
            flags.push(format!("--tls-san={}", machine.name));
        }
    }
    if site.staging.is_some() {
        flags.push("--disable-default-registry-endpoint".to_owned());
    }
    if server && multi_node {
        flags.push(format!("--node-taint={CONTROL_PLANE_TAINT}"));
    }
    if gpu && multi_node && install.gpu_node_taint {
        flags.push(format!("--node-taint={GPU_TAINT}"));
    }
    // A server flag that turns the mirror on cluster-wide (agents refuse it); it serves the
    // registries `registries.yaml` lists, which are the gateway's mirrors.
    if server && install.embedded_registry {
        flags.push("--embedded-registry".to_owned());
    }
    if server {
        flags.extend(install.extra_args.iter().cloned());
        env.push(("K3S_KUBECONFIG_OUTPUT", install.kubeconfig.clone()));
        env.push(("K3S_KUBECONFIG_MODE", format!("{KUBECONFIG_MODE:04o}")));
        env.push(("K3S_KUBECONFIG_GROUP", install.kubeconfig_group.clone()));
    }
    NodeInstall { flags, env, gpu }
}

/// Whether K3s's extra arguments turn its packaged `CoreDNS` off (`--disable coredns`,
/// `--disable=coredns`, or a comma list naming it): then nothing of airlock's restarts it.
pub fn disables_coredns(args: &[String]) -> bool {
    let names = |list: &str| list.split(',').any(|name| name.trim() == "coredns");
    args.iter()
        .enumerate()
        .any(|(i, arg)| match arg.strip_prefix("--disable") {
            Some(rest) => match rest.strip_prefix('=') {
                Some(list) => names(list),
                None => rest.is_empty() && args.get(i + 1).is_some_and(|next| names(next)),
            },
            None => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::node_roles;
    use airlock_ansible::inventory::Inventory;
    use std::path::Path;

    fn site(extra_cluster_vars: &str, gpu_in_agents: bool) -> Site {
        let gpu = if gpu_in_agents {
            "gpu_workers:\n  hosts:\n    g1.example.test: {ansible_host: 10.0.0.5}\nagents:\n  children: {workers: {}, gpu_workers: {}}\n"
        } else {
            "agents:\n  children: {workers: {}}\n"
        };
        let text = format!(
            "all:\n  vars:\n    air_gapped: true\n\
             staging:\n  hosts:\n    staging.example.test: {{ansible_host: 10.0.0.2}}\n  vars:\n    staging_k3s_token: abc\n\
             server:\n  hosts:\n    s1.example.test: {{ansible_host: 10.0.0.3}}\n\
             workers:\n  hosts:\n    w1.example.test: {{ansible_host: 10.0.0.4}}\n\
             {gpu}\
             k3s_cluster:\n  children: {{server: {{}}, agents: {{}}}}\n  vars:\n    k3s_token: s3cret\n{extra_cluster_vars}"
        );
        let inventory = Inventory::parse_str(&text, Path::new("inventory.yaml")).unwrap();
        let (site, diagnostics) = Site::read(&inventory, None);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
        site
    }

    fn flags_of(site: &Site) -> Vec<(String, Vec<String>)> {
        let roles = node_roles(site);
        roles
            .iter()
            .map(|(m, r)| (m.name.clone(), node_install(site, m, *r, roles.len()).flags))
            .collect()
    }

    #[test]
    fn multi_node_cluster_taints_servers_and_gpu_workers() {
        let site = site("", true);
        let flags = flags_of(&site);
        assert_eq!(
            flags,
            [
                (
                    "s1.example.test".to_owned(),
                    vec![
                        "--default-local-storage-path=/var/lib/rancher/k3s/storage".to_owned(),
                        "--tls-san=10.0.0.3".to_owned(),
                        "--tls-san=s1.example.test".to_owned(),
                        "--disable-default-registry-endpoint".to_owned(),
                        format!("--node-taint={CONTROL_PLANE_TAINT}"),
                    ]
                ),
                (
                    "w1.example.test".to_owned(),
                    vec!["--disable-default-registry-endpoint".to_owned()]
                ),
                (
                    "g1.example.test".to_owned(),
                    vec![
                        "--disable-default-registry-endpoint".to_owned(),
                        format!("--node-taint={GPU_TAINT}"),
                    ]
                ),
            ]
        );
        let roles = node_roles(&site);
        let gpu = node_install(&site, roles[2].0, roles[2].1, 3);
        assert!(gpu.gpu && gpu.env.is_empty());
        let server = node_install(&site, roles[0].0, roles[0].1, 3);
        assert!(!server.gpu);
        assert_eq!(
            server.env,
            [
                (
                    "K3S_KUBECONFIG_OUTPUT",
                    "/etc/rancher/k3s/k3s.yaml".to_owned()
                ),
                ("K3S_KUBECONFIG_MODE", "0640".to_owned()),
                ("K3S_KUBECONFIG_GROUP", "root".to_owned()),
            ]
        );
    }

    #[test]
    fn gpu_taint_follows_enable_gpu_node_taint() {
        let site = site("    enable_gpu_node_taint: false\n", true);
        let flags = flags_of(&site);
        assert_eq!(flags[2].1, ["--disable-default-registry-endpoint"]);
        assert!(
            flags[0]
                .1
                .contains(&format!("--node-taint={CONTROL_PLANE_TAINT}"))
        );
    }

    #[test]
    fn a_single_node_cluster_has_no_taints() {
        let site = super::super::tests::site();
        let (server, role) = node_roles(&site)[0];
        let alone = node_install(&site, server, role, 1);
        assert!(
            !alone.flags.iter().any(|f| f.starts_with("--node-taint")),
            "{:?}",
            alone.flags
        );
        let mut gpu_site = site.clone();
        gpu_site.gpu_workers.push(server.clone());
        let gpu_alone = node_install(&gpu_site, server, role, 1);
        assert!(gpu_alone.gpu);
        assert!(
            !gpu_alone
                .flags
                .iter()
                .any(|f| f.starts_with("--node-taint"))
        );
    }

    #[test]
    fn extra_args_and_settings_reach_server_flags_only() {
        let site = site(
            "    base_dir: /data/k3s\n    k3s_extra_args: '--snapshotter=native --node-label \"zone=a b\"'\n    kubeconfig_yaml: /etc/rancher/k3s/admin.yaml\n    kubeconfig_group: k3s-admins\n",
            false,
        );
        let roles = node_roles(&site);
        let server = node_install(&site, roles[0].0, roles[0].1, 2);
        assert_eq!(server.flags[0], "--default-local-storage-path=/data/k3s");
        assert_eq!(
            server.flags[server.flags.len() - 3..],
            ["--snapshotter=native", "--node-label", "zone=a b"]
        );
        assert!(server.env.contains(&(
            "K3S_KUBECONFIG_OUTPUT",
            "/etc/rancher/k3s/admin.yaml".to_owned()
        )));
        assert!(
            server
                .env
                .contains(&("K3S_KUBECONFIG_GROUP", "k3s-admins".to_owned()))
        );
        let agent = node_install(&site, roles[1].0, roles[1].1, 2);
        assert_eq!(agent.flags, ["--disable-default-registry-endpoint"]);
    }

    #[test]
    fn the_embedded_registry_mirror_is_a_server_flag_when_the_inventory_asks() {
        let off = flags_of(&site("", false));
        assert!(
            off.iter()
                .all(|(_, f)| !f.contains(&"--embedded-registry".to_owned()))
        );
        let on = flags_of(&site("    k3s_embedded_registry: true\n", false));
        assert!(
            on[0].1.contains(&"--embedded-registry".to_owned()),
            "{on:?}"
        );
        assert!(
            !on[1].1.contains(&"--embedded-registry".to_owned()),
            "agents: {on:?}"
        );
    }

    #[test]
    fn without_a_staging_gateway_the_default_endpoint_stays() {
        let mut site = super::super::tests::site();
        site.staging = None;
        let (server, role) = node_roles(&site)[0];
        let flags = node_install(&site, server, role, 2).flags;
        assert!(!flags.contains(&"--disable-default-registry-endpoint".to_owned()));
    }

    #[test]
    fn coredns_disabled_by_extra_args() {
        let args =
            |text: &str| -> Vec<String> { text.split_whitespace().map(str::to_owned).collect() };
        assert!(disables_coredns(&args("--disable coredns")));
        assert!(disables_coredns(&args(
            "--snapshotter=native --disable=traefik,coredns"
        )));
        assert!(!disables_coredns(&args("--disable traefik")));
        assert!(!disables_coredns(&args("--disable-network-policy coredns")));
        assert!(!disables_coredns(&args("--disable")));
        assert!(!disables_coredns(&[]));
    }
}
