//! Each site setting read from the inventory: where it is looked up, its default, and the
//! diagnostic a bad value gets.

use super::reader::{Reader, Scope};
use super::values::{
    host_of_url, is_hostname, is_k3s_version, is_plain_name, is_project_name,
    kubernetes_quantity_to_size,
};
use super::{
    AdminPassword, DEFAULT_CA_FILE, Egress, GatewayTls, K3s, Mirror, PackageProxy,
    PackageProxyMode, Site, Staging,
};
use crate::catalog;
use airlock_ansible::connection::Machine;
use airlock_ansible::inventory::Var;
use airlock_ansible::yaml::Mark;

impl Reader<'_> {
    pub(super) fn site(&mut self) -> Site {
        let air_gapped_line = self
            .lookup(Scope::StagingThenCluster, "air_gapped")
            .map(|v| v.mark);
        let air_gapped = self.flag(Scope::StagingThenCluster, "air_gapped", false);
        self.check_groups(air_gapped, air_gapped_line);
        let replicas = self.replicas();
        let staging = replicas.first().cloned();
        let servers = self.machines("server");
        let workers = self.machines("workers");
        let gpu_workers = self.machines("gpu_workers");
        let agents = self.machines("agents");
        let data_dir = self
            .text(Scope::Staging, "airlock_data_dir")
            .map_or_else(|| "/var/lib/airlock".to_owned(), |(t, _)| t);
        let cache_max_size = self.cache_max_size();
        let storage = self.storage(&replicas);
        let tls = self.tls();
        let insecure_skip_verify = self.flag(
            Scope::ClusterThenStaging,
            "registry_insecure_skip_verify",
            false,
        );
        let ca_file = match (
            &tls,
            self.text(Scope::ClusterThenStaging, "airlock_ca_file"),
        ) {
            (_, Some((path, _))) => Some(path),
            (GatewayTls::SelfSigned, None) => Some(DEFAULT_CA_FILE.to_owned()),
            (GatewayTls::Files { .. }, None) => None,
        };
        let cert_manager = self.tls_mode_is_cert_manager();
        let mut mirrors = self.mirrors();
        let package_proxy_mode = self.package_proxy_mode();
        let (identity_providers, egress) = self.egress(cert_manager);
        let k3s = self.k3s();
        let install = self.k3s_install();
        let coredns = self.coredns();
        let mut packages: Vec<PackageProxy> = if package_proxy_mode == PackageProxyMode::Gateway {
            catalog::packages()
                .iter()
                .map(|p| PackageProxy {
                    name: p.name,
                    format: p.format,
                    upstream: if p.name == "rancher-k3s" {
                        format!("https://{}/", k3s.selinux_rpm_site)
                    } else {
                        p.upstream.to_owned()
                    },
                })
                .collect()
        } else {
            Vec::new()
        };
        // `airlock deploy` installs K3s from these, whatever the package proxy mode.
        for p in catalog::k3s_files() {
            if !packages.iter().any(|have| have.name == p.name) {
                packages.push(PackageProxy {
                    name: p.name,
                    format: p.format,
                    upstream: p.upstream.to_owned(),
                });
            }
        }
        self.override_upstreams(&mut mirrors, &mut packages);
        let upstream_proxy = self.outbound_proxy();
        let admin_password = self.admin_password();
        let proxy_names: Vec<String> = mirrors
            .iter()
            .map(|m| m.project.clone())
            .chain(packages.iter().map(|p| p.name.to_owned()))
            .collect();
        let (hosted, robots) = self.hosted(&proxy_names, admin_password.is_some());
        Site {
            inventory: self.inventory.file.clone(),
            air_gapped,
            staging,
            replicas,
            servers,
            workers,
            gpu_workers,
            agents,
            data_dir,
            cache_max_size,
            storage,
            tls,
            ca_file,
            insecure_skip_verify,
            cert_manager,
            mirrors,
            package_proxy_mode,
            packages,
            identity_providers,
            egress,
            k3s,
            sources: self.sources(),
            upstream_proxy,
            install,
            coredns,
            admin_password,
            hosted,
            robots,
        }
    }

    /// The admin password, unless it is still the example's placeholder (`inventory check`
    /// warns about that).
    fn admin_password(&mut self) -> Option<AdminPassword> {
        let (text, _) = self
            .text(Scope::Staging, "airlock_admin_password")
            .or_else(|| self.text(Scope::Staging, "harbor_admin_password"))?;
        (!text.is_empty() && crate::check::placeholder_kind(&text).is_none())
            .then_some(AdminPassword(text))
    }

    /// `airlock_upstreams`: `{registry or package repository: URL}`, for sites whose
    /// gateway reaches the public services through an internal mirror.
    fn override_upstreams(&mut self, mirrors: &mut [Mirror], packages: &mut [PackageProxy]) {
        let Some(var) = self.lookup(Scope::StagingThenCluster, "airlock_upstreams") else {
            return;
        };
        let Some(entries) = var.value.as_map() else {
            if !var.value.is_null() {
                self.error(
                    var.mark,
                    format!(
                        "`airlock_upstreams` must be a mapping, found {}",
                        var.value.describe()
                    ),
                    "write `airlock_upstreams: {docker.io: \"https://mirror.example.org\"}`",
                );
            }
            return;
        };
        for (key, value) in entries {
            let line = key.mark;
            let (Some(name), Some(url)) = (key.as_str(), value.as_str()) else {
                self.error(
                    line,
                    "`airlock_upstreams` entries must map a name to a URL",
                    "write `docker.io: \"https://mirror.example.org\"`",
                );
                continue;
            };
            let url = url.trim();
            let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
            if !scheme_ok || !is_hostname(&host_of_url(url)) {
                self.error(
                    value.mark,
                    format!("`airlock_upstreams` `{name}`: `{url}` is not an http(s) URL"),
                    "write the upstream as `https://host[:port]/path`",
                );
                continue;
            }
            if let Some(mirror) = mirrors.iter_mut().find(|m| m.registry == name) {
                url.clone_into(&mut mirror.upstream);
            } else if let Some(package) = packages.iter_mut().find(|p| p.name == name) {
                url.clone_into(&mut package.upstream);
            } else {
                self.error(
                    line,
                    format!("`airlock_upstreams` names `{name}`, which the gateway does not proxy"),
                    "use a registry (`docker.io`, `ghcr.io`, …) or a package repository (`k3s-releases`, `pypi-proxy`, …)",
                );
            }
        }
    }

    fn check_groups(&mut self, air_gapped: bool, air_gapped_line: Option<Mark>) {
        let staging_hosts = self.inventory.hosts_of("staging");
        match self.inventory.group("staging") {
            None if air_gapped => self.error(
                air_gapped_line.unwrap_or_default(),
                "`air_gapped` is true but the inventory has no `staging` group",
                "add `staging:` with `hosts:` naming the node that has internet access and runs `airlock serve`",
            ),
            Some(group) if staging_hosts.is_empty() && air_gapped => {
                let line = group.mark.line;
                self.error(
                    line,
                    "group `staging` has no hosts",
                    "list the staging node under `staging: hosts:`",
                );
            }
            _ => {}
        }
        match self.inventory.group("server") {
            None => self.error(
                1,
                "the inventory has no `server` group",
                "add `server:` with `hosts:` naming the K3s control-plane node(s)",
            ),
            Some(group) if self.inventory.hosts_of("server").is_empty() => {
                let line = group.mark.line;
                self.error(
                    line,
                    "group `server` has no hosts",
                    "list the K3s control-plane node(s) under `server: hosts:`",
                );
            }
            Some(_) => {}
        }
        match self.inventory.group("k3s_cluster") {
            None => self.warning(
                1,
                "the inventory has no `k3s_cluster` group",
                "add `k3s_cluster: children: {server:, agents:}` so cluster-wide vars reach every node",
            ),
            Some(group) => {
                let line = group.mark.line;
                let cluster = self.inventory.hosts_of("k3s_cluster");
                for server in self.inventory.hosts_of("server") {
                    if !cluster.contains(&server) {
                        self.warning(
                            line,
                            format!("server `{server}` is not in `k3s_cluster`, so it does not see the cluster's vars"),
                            "list `server` under `k3s_cluster: children:`",
                        );
                    }
                }
            }
        }
    }

    /// Every staging host, the primary first, each with its own gateway name; two that
    /// would answer as one gateway, or share an address, are errors.
    fn replicas(&mut self) -> Vec<Staging> {
        let names: Vec<String> = self
            .inventory
            .hosts_of("staging")
            .into_iter()
            .map(str::to_owned)
            .collect();
        let Some(primary) = names.first() else {
            return Vec::new();
        };
        let shared_url = self.lookup(Scope::Staging, "external_url");
        let subdomain = self.harbor_subdomain();
        let mut replicas: Vec<Staging> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let machine = self.machine(name);
            // The primary takes `external_url` wherever it is set; another replica only a
            // value of its own, since a shared one names the primary.
            let url = if i == 0 {
                shared_url
            } else {
                self.inventory
                    .vars_of(name)
                    .get("external_url")
                    .filter(|var| !shared_url.is_some_and(|shared| std::ptr::eq(shared, *var)))
            };
            let hostname = self.gateway_name(name, url);
            let registry_host = match &subdomain {
                None => format!("harbor.{hostname}"),
                Some(sub) if sub.is_empty() => hostname.clone(),
                Some(sub) => format!("{sub}.{hostname}"),
            };
            self.check_distinct(&replicas, name, &machine, &hostname, names.len());
            replicas.push(Staging {
                machine,
                hostname,
                registry_host,
            });
        }
        self.check_staging_token(primary);
        replicas
    }

    /// `external_url`'s host, else the inventory name, checked to be a DNS name.
    fn gateway_name(&mut self, name: &str, url: Option<&Var>) -> String {
        let line = self.inventory.host(name).map_or(1, |h| h.mark.line);
        let text = url.and_then(|var| {
            let text = self.read(var)?;
            self.expand(Scope::Staging, "external_url", text, var.mark, 0)
                .map(|t| (t, var.mark))
        });
        let hostname = match text {
            Some((url, mark)) => {
                let host = host_of_url(&url);
                if is_hostname(&host) {
                    host
                } else {
                    self.error(
                        mark,
                        format!("`external_url` `{url}` does not name a host"),
                        "write the staging node's DNS name, e.g. `external_url: staging.example.edu`",
                    );
                    name.to_owned()
                }
            }
            None => name.to_owned(),
        };
        if !is_hostname(&hostname) {
            self.error(
                line,
                format!("staging host `{hostname}` is not a valid DNS name"),
                "name the staging host by its DNS name, or set `external_url`",
            );
        }
        hostname
    }

    /// `harbor_subdomain`: `None` when unset, `""` for the staging name itself.
    fn harbor_subdomain(&mut self) -> Option<String> {
        let (sub, line) = self.text(Scope::StagingThenCluster, "harbor_subdomain")?;
        let sub = sub.trim().to_owned();
        if !sub.is_empty() && !is_hostname(&sub) {
            self.error(
                line,
                format!("`harbor_subdomain` `{sub}` is not a DNS label"),
                "use e.g. `harbor`, or `''` to pull from the staging name itself",
            );
        }
        Some(sub)
    }

    /// A replica must be its own machine under its own name: nodes list every replica as a
    /// separate mirror, and render writes each one's config under its inventory name.
    fn check_distinct(
        &mut self,
        earlier: &[Staging],
        name: &str,
        machine: &Machine,
        hostname: &str,
        count: usize,
    ) {
        let line = self.inventory.host(name).map_or(1, |h| h.mark.line);
        if count > 1 && !is_plain_name(name) {
            self.error(
                line,
                format!("staging host `{}` is not a plain host name", name.escape_debug()),
                "name each staging host with letters, digits, `.`, `-` and `_` (its gateway config is rendered under that name)",
            );
        }
        for other in earlier {
            if other.hostname == hostname {
                self.error(
                    line,
                    format!(
                        "staging hosts `{}` and `{name}` would both be the gateway `{hostname}`",
                        other.machine.name
                    ),
                    "give each staging host its own name: its inventory name, or `external_url` in that host's own vars (a group's `external_url` names only the first)",
                );
            } else if other.machine.address == machine.address {
                self.error(
                    line,
                    format!(
                        "staging hosts `{}` and `{name}` have the same address `{}`",
                        other.machine.name, machine.address
                    ),
                    "each staging host is its own machine: fix its `ansible_host`",
                );
            }
        }
    }

    /// `staging_k3s_token` is Scout's (its staging node ran K3s); airlock's gateway runs no
    /// K3s, so a missing or empty one is only a warning.
    fn check_staging_token(&mut self, staging: &str) {
        let Some(var) = self.lookup(Scope::Staging, "staging_k3s_token") else {
            let line = self.group_line("staging");
            self.warning(
                line,
                format!("`staging_k3s_token` is not set for staging host `{staging}`; airlock does not use it (its gateway runs no K3s)"),
                "nothing to do for airlock; Scout's staging playbook needs it: `airlock vault new-secret --name staging_k3s_token` prints one",
            );
            return;
        };
        // Rendering never needs the token itself: without a password, presence is enough.
        if self.secret.is_none() && var.value.vault_text().is_some() {
            return;
        }
        if let Some((token, line)) = self.text(Scope::Staging, "staging_k3s_token") {
            if token.trim().is_empty() {
                self.warning(
                    line,
                    "`staging_k3s_token` is empty; airlock does not use it (its gateway runs no K3s)",
                    "nothing to do for airlock; Scout's staging playbook needs it: `airlock vault new-secret --name staging_k3s_token` prints one",
                );
            }
        }
    }

    fn cache_max_size(&mut self) -> Option<String> {
        let (text, line, name) =
            if let Some((t, l)) = self.text(Scope::Staging, "airlock_cache_max_size") {
                (t, l, "airlock_cache_max_size")
            } else {
                let (t, l) = self.text(Scope::Staging, "harbor_storage_size")?;
                (t, l, "harbor_storage_size")
            };
        let size = kubernetes_quantity_to_size(&text);
        if size.is_none() {
            self.error(
                line,
                format!("`{name}` `{text}` is not a size"),
                "write e.g. `100Gi` or `500GiB`",
            );
        }
        size
    }

    fn tls(&mut self) -> GatewayTls {
        let cert = self
            .text(Scope::Staging, "tls_cert_path")
            .filter(|(t, _)| !t.trim().is_empty());
        let key = self
            .text(Scope::Staging, "tls_key_path")
            .filter(|(t, _)| !t.trim().is_empty());
        match (cert, key) {
            (Some((cert, _)), Some((key, _))) => GatewayTls::Files { cert, key },
            (None, None) => GatewayTls::SelfSigned,
            (Some((_, line)), None) => {
                self.error(
                    line,
                    "`tls_cert_path` is set but `tls_key_path` is not",
                    "set both (the gateway serves that certificate) or neither (self-signed)",
                );
                GatewayTls::SelfSigned
            }
            (None, Some((_, line))) => {
                self.error(
                    line,
                    "`tls_key_path` is set but `tls_cert_path` is not",
                    "set both (the gateway serves that certificate) or neither (self-signed)",
                );
                GatewayTls::SelfSigned
            }
        }
    }

    fn tls_mode_is_cert_manager(&mut self) -> bool {
        let Some((mode, line)) = self.text(Scope::ClusterThenStaging, "tls_mode") else {
            return false;
        };
        match mode.trim() {
            "cert_manager" | "cert-manager" => true,
            "" | "provided" | "files" | "self_signed" | "self-signed" | "none" => false,
            other => {
                self.error(
                    line,
                    format!("unknown `tls_mode` `{other}`"),
                    "use `cert_manager`, `provided` or `self_signed`",
                );
                false
            }
        }
    }

    fn mirrors(&mut self) -> Vec<Mirror> {
        let mut mirrors: Vec<Mirror> = Vec::new();
        for entry in catalog::registries() {
            let var = format!("harbor_{}_proxy_project", entry.key);
            let project = match self.text(Scope::StagingThenCluster, &var) {
                Some((project, line)) => {
                    let project = project.trim().to_owned();
                    if !is_project_name(&project) {
                        self.error(
                            line,
                            format!("`{var}` `{project}` is not a valid project name"),
                            "use lowercase letters, digits, `-`, `_` and `.`, e.g. `dockerhub-proxy`",
                        );
                        continue;
                    }
                    if let Some(other) = mirrors.iter().find(|m| m.project == project) {
                        self.error(
                            line,
                            format!(
                                "`{var}` `{project}` is already the project of {}",
                                other.registry
                            ),
                            "give every registry its own project",
                        );
                        continue;
                    }
                    project
                }
                None => entry.project.to_owned(),
            };
            mirrors.push(Mirror {
                registry: entry.registry.to_owned(),
                project,
                upstream: entry.upstream.to_owned(),
            });
        }
        mirrors
    }

    fn package_proxy_mode(&mut self) -> PackageProxyMode {
        let Some((mode, line)) = self.text(Scope::StagingThenCluster, "package_proxy_mode") else {
            return PackageProxyMode::None;
        };
        match mode.trim() {
            "" | "none" => PackageProxyMode::None,
            "nexus" | "airlock" => PackageProxyMode::Gateway,
            "external" => PackageProxyMode::External,
            other => {
                self.error(
                    line,
                    format!("unknown `package_proxy_mode` `{other}`"),
                    "use `airlock` (or Scout's `nexus`) for the gateway's package proxies, `external`, or `none`",
                );
                PackageProxyMode::None
            }
        }
    }

    fn egress(&mut self, cert_manager: bool) -> (Vec<&'static str>, Egress) {
        let port = self.port(Scope::StagingThenCluster, "squid_port", 3128);
        let mut allow: Vec<String> = Vec::new();
        let mut idps = Vec::new();
        for (var, idp, domains) in catalog::IDP_DOMAINS {
            let set = self
                .text(Scope::ClusterThenStaging, var)
                .is_some_and(|(t, _)| !t.trim().is_empty());
            if set {
                idps.push(*idp);
                allow.extend(domains.iter().map(|d| (*d).to_owned()));
            }
        }
        if cert_manager {
            allow.extend(catalog::ACME_DOMAINS.iter().map(|d| (*d).to_owned()));
            if let Some((host, line)) = self.text(Scope::ClusterThenStaging, "acmedns_host") {
                let host = host_of_url(&host);
                if is_hostname(&host) {
                    allow.push(host);
                } else {
                    self.error(
                        line,
                        format!("`acmedns_host` `{host}` is not a host name"),
                        "write the acme-dns server's DNS name, e.g. `auth.acme-dns.io`",
                    );
                }
            } else {
                let line = self
                    .lookup(Scope::ClusterThenStaging, "tls_mode")
                    .map_or(Mark::default(), |v| v.mark);
                self.warning(
                    line,
                    "`tls_mode` is cert_manager but `acmedns_host` is not set",
                    "set `acmedns_host` so the DNS-01 challenge server is in the egress allowlist",
                );
            }
        }
        for (domain, line) in self.list(Scope::StagingThenCluster, "squid_extra_allowed_domains") {
            let domain = domain.trim().to_ascii_lowercase();
            if domain.starts_with('.') || domain.contains('*') {
                self.error(
                    line,
                    format!("`squid_extra_allowed_domains` entry `{domain}` is a wildcard"),
                    "the egress proxy allows exact names only: list each host (e.g. `api.example.com`)",
                );
            } else if !is_hostname(&domain) {
                self.error(
                    line,
                    format!("`squid_extra_allowed_domains` entry `{domain}` is not a host name"),
                    "write bare host names, without scheme, port or path",
                );
            } else {
                allow.push(domain);
            }
        }
        let mut seen = std::collections::HashSet::new();
        allow.retain(|d| seen.insert(d.clone()));
        (idps, Egress { port, allow })
    }

    fn k3s(&mut self) -> K3s {
        let version = self
            .text(Scope::ClusterThenStaging, "k3s_version")
            .and_then(|(v, line)| {
                let v = v.trim().to_owned();
                if is_k3s_version(&v) {
                    Some(v)
                } else {
                    self.error(
                        line,
                        format!("`k3s_version` `{v}` is not a K3s release name"),
                        "write it as GitHub names K3s releases, e.g. `v1.31.4+k3s1`",
                    );
                    None
                }
            });
        let selinux_rpm_site = match self.text(Scope::ClusterThenStaging, "k3s_selinux_rpm_site") {
            Some((site, line)) => {
                let host = host_of_url(&site);
                if is_hostname(&host) {
                    host
                } else {
                    self.error(
                        line,
                        format!("`k3s_selinux_rpm_site` `{site}` is not a host name"),
                        "write e.g. `rpm.rancher.io` (or `rpm-testing.rancher.io`)",
                    );
                    "rpm.rancher.io".to_owned()
                }
            }
            None => "rpm.rancher.io".to_owned(),
        };
        let artifact_download_timeout = self
            .text(Scope::ClusterThenStaging, "k3s_artifact_download_timeout")
            .and_then(|(t, line)| match t.trim().parse::<u64>() {
                Ok(seconds) if seconds > 0 => Some(seconds),
                _ => {
                    self.error(
                        line,
                        format!("`k3s_artifact_download_timeout` must be a number of seconds, found `{t}`"),
                        "write e.g. `k3s_artifact_download_timeout: 600`",
                    );
                    None
                }
            });
        let selinux = self.flag(Scope::ClusterThenStaging, "k3s_selinux_enabled", false);
        let selinux_channel = match self.text(Scope::ClusterThenStaging, "k3s_selinux_channel") {
            Some((channel, line)) => {
                let channel = channel.trim().to_owned();
                if catalog::SELINUX_CHANNELS.contains(&channel.as_str()) {
                    channel
                } else {
                    self.error(
                        line,
                        format!("unknown `k3s_selinux_channel` `{channel}`"),
                        format!("use one of: {}", catalog::SELINUX_CHANNELS.join(", ")),
                    );
                    "stable".to_owned()
                }
            }
            None => "stable".to_owned(),
        };
        let channel = self
            .text(Scope::ClusterThenStaging, "k3s_channel")
            .map_or_else(|| "stable".to_owned(), |(c, _)| c.trim().to_owned());
        let token = self
            .lookup(Scope::ClusterThenStaging, "k3s_token")
            .and_then(|var| self.secret_of(var));
        K3s {
            version,
            selinux,
            selinux_channel,
            selinux_rpm_site,
            artifact_download_timeout,
            channel,
            token,
        }
    }
}
