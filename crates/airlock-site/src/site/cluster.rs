//! Cluster settings Scout's `k3s` role reads: how the K3s installer runs on the nodes
//! (`base_dir`, `k3s_extra_args`, `kubeconfig_yaml`, `kubeconfig_group`,
//! `enable_gpu_node_taint`, `k3s_embedded_registry`) and the `coredns-custom` `ConfigMap` (`coredns_forward_map`,
//! the deprecated `coredns_forward_domains`, `coredns_extra_server_blocks`).

use std::net::{IpAddr, SocketAddr};

use airlock_ansible::yaml::{Mark, Node};

use super::reader::{Reader, Scope};
use super::values::is_hostname;

/// Where K3s puts local-path volumes unless `base_dir` says otherwise (Scout's default).
pub const DEFAULT_BASE_DIR: &str = "/var/lib/rancher/k3s/storage";
/// Where K3s writes the cluster's admin kubeconfig on servers.
pub const DEFAULT_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// How the K3s installer runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sInstall {
    /// `base_dir`: `--default-local-storage-path` on servers, created first.
    pub base_dir: String,
    /// `k3s_extra_args`, split as a shell would: more server flags.
    pub extra_args: Vec<String>,
    /// `kubeconfig_yaml`: where servers write the admin kubeconfig.
    pub kubeconfig: String,
    /// `kubeconfig_group`: the group that may read it (mode 0640).
    pub kubeconfig_group: String,
    /// `enable_gpu_node_taint`: `nvidia.com/gpu=present:NoSchedule` on GPU workers of
    /// multi-node clusters.
    pub gpu_node_taint: bool,
    /// `k3s_embedded_registry`: K3s's embedded registry mirror (Spegel) on every node, so
    /// nodes fetch layers from each other and each layer comes through the gateway about
    /// once. A server flag; it needs TCP 5001 and 6443 open between nodes.
    pub embedded_registry: bool,
}

/// What goes into the `coredns-custom` `ConfigMap` besides the air-gap layer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoreDns {
    /// Forward destination (an IP address, `IP:port`, or a resolv.conf-style file path) and
    /// the domains sent there, sorted by destination.
    pub forward: Vec<(String, Vec<String>)>,
    /// `<name>.server` keys and their raw Corefile text, in inventory order.
    pub extra_server_blocks: Vec<(String, String)>,
}

impl Reader<'_> {
    pub(super) fn k3s_install(&mut self) -> K3sInstall {
        let base_dir = self.absolute_path("base_dir", DEFAULT_BASE_DIR);
        let kubeconfig = self.absolute_path("kubeconfig_yaml", DEFAULT_KUBECONFIG);
        let extra_args = match self.text(Scope::ClusterThenStaging, "k3s_extra_args") {
            None => Vec::new(),
            Some((text, line)) => shell_words::split(&text).unwrap_or_else(|_| {
                self.error(
                    line,
                    format!("`k3s_extra_args` cannot be split into arguments: {text}"),
                    "close every quote, e.g. `k3s_extra_args: '--snapshotter=native --node-label \"zone=a b\"'`",
                );
                Vec::new()
            }),
        };
        let kubeconfig_group = match self.text(Scope::ClusterThenStaging, "kubeconfig_group") {
            None => "root".to_owned(),
            Some((group, line)) => {
                let group = group.trim().to_owned();
                if is_group_name(&group) {
                    group
                } else if group.starts_with('<') && group.ends_with('>') {
                    // Still the example's placeholder: `inventory check` warns about it.
                    "root".to_owned()
                } else {
                    self.error(
                        line,
                        format!("`kubeconfig_group` `{group}` is not a group name"),
                        "write a group that exists on the servers, e.g. `kubeconfig_group: wheel`",
                    );
                    "root".to_owned()
                }
            }
        };
        let gpu_node_taint = self.flag(Scope::ClusterThenStaging, "enable_gpu_node_taint", true);
        let embedded_registry =
            self.flag(Scope::ClusterThenStaging, "k3s_embedded_registry", false);
        K3sInstall {
            base_dir,
            extra_args,
            kubeconfig,
            kubeconfig_group,
            gpu_node_taint,
            embedded_registry,
        }
    }

    fn absolute_path(&mut self, name: &str, default: &str) -> String {
        let Some((path, line)) = self.text(Scope::ClusterThenStaging, name) else {
            return default.to_owned();
        };
        let path = path.trim().to_owned();
        if is_absolute_path(&path) {
            path
        } else {
            self.error(
                line,
                format!("`{name}` `{path}` is not an absolute path"),
                format!("write a path from `/`, e.g. `{name}: {default}`"),
            );
            default.to_owned()
        }
    }

    pub(super) fn coredns(&mut self) -> CoreDns {
        let map = self.forward_map();
        let legacy = self.lookup(Scope::ClusterThenStaging, "coredns_forward_domains");
        let legacy_line = legacy.map(|v| v.mark);
        let legacy_names = self.list(Scope::ClusterThenStaging, "coredns_forward_domains");
        let legacy = self.domains("coredns_forward_domains", &legacy_names);
        let forward = match (map.is_empty(), legacy.is_empty()) {
            (_, true) => map,
            (true, false) => {
                self.warning(
                    legacy_line.unwrap_or_default(),
                    "`coredns_forward_domains` is deprecated",
                    format!(
                        "write `coredns_forward_map: {{/etc/resolv.conf: [{}]}}` instead",
                        legacy.join(", ")
                    ),
                );
                vec![("/etc/resolv.conf".to_owned(), legacy)]
            }
            (false, false) => {
                self.error(
                    legacy_line.unwrap_or_default(),
                    "both `coredns_forward_domains` and `coredns_forward_map` are set",
                    "move the domains into `coredns_forward_map` under `/etc/resolv.conf` and remove `coredns_forward_domains`",
                );
                map
            }
        };
        let extra_server_blocks = self.server_blocks();
        CoreDns {
            forward,
            extra_server_blocks,
        }
    }

    fn forward_map(&mut self) -> Vec<(String, Vec<String>)> {
        let Some(var) = self.lookup(Scope::ClusterThenStaging, "coredns_forward_map") else {
            return Vec::new();
        };
        let Some(entries) = var.value.as_map() else {
            if !var.value.is_null() {
                self.error(
                    var.mark,
                    format!(
                        "`coredns_forward_map` must be a mapping, found {}",
                        var.value.describe()
                    ),
                    "write `coredns_forward_map: {/etc/resolv.conf: [example.edu], 10.0.0.53: [ts.net]}`",
                );
            }
            return Vec::new();
        };
        let mut forward: Vec<(String, Vec<String>)> = Vec::new();
        for (key, value) in entries {
            let Some(destination) = key.as_str().map(str::trim) else {
                self.error(
                    key.mark,
                    "`coredns_forward_map` keys must be forward destinations",
                    "write an IP address or an absolute path such as `/etc/resolv.conf`",
                );
                continue;
            };
            if !is_forward_destination(destination) {
                self.error(
                    key.mark,
                    format!(
                        "`coredns_forward_map` destination `{destination}` is neither an IP address nor an absolute path"
                    ),
                    "write an IP address (`10.0.0.53`, `10.0.0.53:5353`) or a resolv.conf path (`/etc/resolv.conf`)",
                );
                continue;
            }
            let names = self.domain_list(destination, value);
            let domains = self.domains("coredns_forward_map", &names);
            if !domains.is_empty() {
                forward.push((destination.to_owned(), domains));
            }
        }
        forward.sort_by(|a, b| a.0.cmp(&b.0));
        forward
    }

    /// The domains of one `coredns_forward_map` destination, with their lines.
    fn domain_list(&mut self, destination: &str, value: &Node) -> Vec<(String, Mark)> {
        if let Some(items) = value.as_seq() {
            let mut out = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(text) => out.push((text.to_owned(), item.mark)),
                    None => self.error(
                        item.mark,
                        format!(
                            "`coredns_forward_map` `{destination}` must list domain names, found {}",
                            item.describe()
                        ),
                        "write one domain per list item",
                    ),
                }
            }
            return out;
        }
        if value.is_null() {
            return Vec::new();
        }
        self.error(
            value.mark,
            format!("`coredns_forward_map` `{destination}` must be a list of domains"),
            format!("write `{destination}: [example.edu]`"),
        );
        Vec::new()
    }

    /// Valid domain names of `names`, lowercased; each bad one gets an error.
    fn domains(&mut self, var: &str, names: &[(String, Mark)]) -> Vec<String> {
        let mut out = Vec::new();
        for (name, line) in names {
            let domain = name.trim().trim_end_matches('.').to_ascii_lowercase();
            if is_hostname(&domain) {
                if !out.contains(&domain) {
                    out.push(domain);
                }
            } else {
                self.error(
                    *line,
                    format!("`{var}` entry `{name}` is not a domain name"),
                    "write a bare domain such as `example.edu` (every name below it is forwarded)",
                );
            }
        }
        out
    }

    fn server_blocks(&mut self) -> Vec<(String, String)> {
        let Some(var) = self.lookup(Scope::ClusterThenStaging, "coredns_extra_server_blocks")
        else {
            return Vec::new();
        };
        let Some(entries) = var.value.as_map() else {
            if !var.value.is_null() {
                self.error(
                    var.mark,
                    format!(
                        "`coredns_extra_server_blocks` must be a mapping, found {}",
                        var.value.describe()
                    ),
                    "write `coredns_extra_server_blocks: {name: |\\n  example.org:53 { ... }}`",
                );
            }
            return Vec::new();
        };
        let mut blocks = Vec::new();
        for (key, value) in entries {
            let (Some(name), Some(text)) = (key.as_str(), value.as_str()) else {
                self.error(
                    key.mark,
                    "`coredns_extra_server_blocks` entries must map a name to Corefile text",
                    "write `my-block: |` followed by the server block, indented",
                );
                continue;
            };
            if !is_configmap_key_stem(name) {
                self.error(
                    key.mark,
                    format!(
                        "`coredns_extra_server_blocks` name `{name}` cannot be a ConfigMap key"
                    ),
                    "use letters, digits, `-`, `_` and `.` (the key becomes `<name>.server`)",
                );
                continue;
            }
            if text.trim().is_empty() {
                self.error(
                    value.mark,
                    format!("`coredns_extra_server_blocks` `{name}` is empty"),
                    "write the server block, or remove the entry",
                );
                continue;
            }
            blocks.push((name.to_owned(), text.to_owned()));
        }
        blocks
    }
}

/// A path from `/` without `..` or control characters (it goes into a shell and a flag).
fn is_absolute_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.split('/').any(|s| s == "..")
        && !path.chars().any(char::is_control)
}

/// A group as `chgrp` takes it: a name (`[a-z_][a-z0-9_-]*$?`) or a number.
fn is_group_name(group: &str) -> bool {
    let name = group.strip_suffix('$').unwrap_or(group);
    !name.is_empty()
        && name.len() <= 32
        && (name.chars().all(|c| c.is_ascii_digit())
            || (name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && name.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')
                })))
}

/// What `CoreDNS`'s `forward` takes here: an IP address, with or without a port, or the path
/// of a resolv.conf-style file.
pub fn is_forward_destination(destination: &str) -> bool {
    if destination.starts_with('/') {
        return is_absolute_path(destination) && !destination.contains(char::is_whitespace);
    }
    destination.parse::<IpAddr>().is_ok() || destination.parse::<SocketAddr>().is_ok()
}

/// A `ConfigMap` data key without its `.server` suffix.
fn is_configmap_key_stem(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 246
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_destinations() {
        for good in [
            "/etc/resolv.conf",
            "10.0.0.53",
            "10.0.0.53:5353",
            "fd00::53",
            "[fd00::53]:53",
        ] {
            assert!(is_forward_destination(good), "{good}");
        }
        for bad in [
            "resolv.conf",
            "dns.example.edu",
            "10.0.0.300",
            "/etc/../resolv.conf",
            "/etc/resolv conf",
            "",
        ] {
            assert!(!is_forward_destination(bad), "{bad}");
        }
    }

    #[test]
    fn group_names() {
        for good in ["root", "wheel", "k3s-admins", "_ops", "1001", "machine$"] {
            assert!(is_group_name(good), "{good}");
        }
        for bad in ["", "Wheel", "-x", "a b", "g;rm", "1a$$"] {
            assert!(!is_group_name(bad), "{bad}");
        }
    }
}
