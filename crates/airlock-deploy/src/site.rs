//! The deployment an inventory describes, read once into typed settings.
//!
//! Each setting is looked up where Scout's playbooks look for it: gateway settings on the
//! staging host, cluster settings on the first `server` host; settings both sides share fall
//! back from one to the other. Every bad value becomes a [`Diagnostic`] on its line; vault
//! values are decrypted only when a setting needs them, and never echoed.
//!
//! | variable | read on | effect (default) |
//! |---|---|---|
//! | `air_gapped` | any | require a staging node (false) |
//! | `staging_k3s_token` | staging | must be set when there is a staging node |
//! | `external_url` | staging | gateway hostname (the inventory name) |
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
//! | `airlock_ca_file` | server, then staging | CA path on nodes (`/etc/rancher/k3s/staging-ca.crt` when self-signed) |
//! | `registry_insecure_skip_verify` | server, then staging | skip TLS verification on nodes (false) |
//! | `k3s_channel`, `k3s_token` | server, then staging | version when `k3s_version` is unset (`stable`); join secret |
//! | `airlock_upstreams` | staging, then server | `{registry or repository: URL}` overrides the gateway's upstreams |
//! | `ansible_host`, `ansible_user`, `ansible_port`, `ansible_connection` | each host | SSH target |
//! | `ansible_become`, `ansible_become_user`, `ansible_become_password` | each host | sudo for deploy |
//! | `ansible_ssh_common_args`, `ansible_ssh_extra_args`, `ansible_ssh_private_key_file` | each host | extra ssh options |

use std::path::PathBuf;

use crate::catalog;
use crate::inventory::{Diagnostic, HostVars, Inventory, Var, VarError};
use crate::vault::VaultSecret;

/// Where nodes find the gateway's CA certificate when it is self-signed.
pub const DEFAULT_CA_FILE: &str = "/etc/rancher/k3s/staging-ca.crt";

/// The deployment, as far as airlock renders and installs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub inventory: PathBuf,
    pub air_gapped: bool,
    pub staging: Option<Staging>,
    pub servers: Vec<Machine>,
    pub workers: Vec<Machine>,
    pub gpu_workers: Vec<Machine>,
    pub agents: Vec<Machine>,
    pub data_dir: String,
    pub cache_max_size: Option<String>,
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
}

/// The staging node: where `airlock serve` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staging {
    pub machine: Machine,
    /// The gateway's public name (`external_url` or the inventory name).
    pub hostname: String,
    /// The registry name nodes pull from: `harbor.<hostname>`, or `hostname` itself.
    pub registry_host: String,
}

/// A host and how to reach it over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    pub address: String,
    pub user: Option<String>,
    pub port: u16,
    pub connection: String,
    /// `ansible_become`: run commands as another user (root) through sudo.
    pub escalate: Option<Become>,
    /// `ansible_ssh_common_args` then `ansible_ssh_extra_args`, split like a shell would.
    pub ssh_args: Vec<String>,
    /// `ansible_ssh_private_key_file` (or `ansible_private_key_file`).
    pub private_key: Option<String>,
}

impl Machine {
    /// Whether commands run on the control node itself (`ansible_connection: local`).
    pub fn is_local(&self) -> bool {
        self.connection == "local"
    }
}

/// Privilege escalation with sudo (`ansible_become_user`, `ansible_become_password`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Become {
    pub user: String,
    pub password: Option<Secret>,
}

/// A vault-decrypted value: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Known(String),
    /// Vault-encrypted, and no vault password was given.
    Locked,
}

impl Secret {
    /// The plaintext; empty when locked (callers check [`Secret::is_locked`] first).
    pub fn expose(&self) -> &str {
        match self {
            Secret::Known(text) => text,
            Secret::Locked => "",
        }
    }

    pub fn is_locked(&self) -> bool {
        matches!(self, Secret::Locked)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Known(_) => f.write_str("Secret(<redacted>)"),
            Secret::Locked => f.write_str("Secret(<vault-encrypted>)"),
        }
    }
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
}

#[derive(Clone, Copy)]
enum Scope {
    Staging,
    StagingThenCluster,
    ClusterThenStaging,
}

struct Reader<'a> {
    inventory: &'a Inventory,
    secret: Option<&'a VaultSecret>,
    staging: Option<HostVars<'a>>,
    cluster: Option<HostVars<'a>>,
    diagnostics: Vec<Diagnostic>,
    /// Plaintexts of vault values read so far: never echoed in a diagnostic.
    revealed: Vec<String>,
}

impl<'a> Reader<'a> {
    fn new(inventory: &'a Inventory, secret: Option<&'a VaultSecret>) -> Self {
        let staging = inventory
            .hosts_of("staging")
            .first()
            .map(|h| inventory.vars_of(h));
        let cluster = inventory
            .hosts_of("server")
            .first()
            .map(|h| inventory.vars_of(h));
        Self {
            inventory,
            secret,
            staging,
            cluster,
            diagnostics: Vec::new(),
            revealed: Vec::new(),
        }
    }

    fn redact(&self, message: impl Into<String>) -> String {
        let mut message = message.into();
        for secret in &self.revealed {
            message = message.replace(secret.as_str(), "<vault value>");
        }
        message
    }

    fn error(&mut self, line: usize, message: impl Into<String>, help: impl Into<String>) {
        let message = self.redact(message);
        self.diagnostics
            .push(Diagnostic::error(&self.inventory.file, line, message, help));
    }

    fn warning(&mut self, line: usize, message: impl Into<String>, help: impl Into<String>) {
        let message = self.redact(message);
        self.diagnostics.push(Diagnostic::warning(
            &self.inventory.file,
            line,
            message,
            help,
        ));
    }

    /// A variable's text; vault plaintexts are remembered so no diagnostic repeats them.
    fn read(&mut self, var: &Var) -> Option<String> {
        match var.text(self.secret) {
            Ok(text) => {
                if let (Some(plain), Some(_)) = (&text, var.value.vault_text()) {
                    if !plain.trim().is_empty() {
                        self.revealed.push(plain.clone());
                    }
                }
                text
            }
            Err(e) => {
                self.var_error(var.mark.line, &e);
                None
            }
        }
    }

    fn lookup(&self, scope: Scope, name: &str) -> Option<&'a Var> {
        let staging = || self.staging.as_ref().and_then(|v| v.get(name));
        let cluster = || self.cluster.as_ref().and_then(|v| v.get(name));
        let all = || {
            self.inventory
                .group("all")
                .and_then(|g| g.vars.iter().rev().find(|v| v.name == name))
        };
        if let Some(extra) = self.inventory.extra_var(name) {
            return Some(extra);
        }
        match scope {
            Scope::Staging => staging(),
            Scope::StagingThenCluster => staging().or_else(cluster),
            Scope::ClusterThenStaging => cluster().or_else(staging),
        }
        .or_else(all)
    }

    /// A setting's text, decrypted and with `{{ var }}` references resolved.
    fn text(&mut self, scope: Scope, name: &str) -> Option<(String, usize)> {
        let var = self.lookup(scope, name)?;
        let line = var.mark.line;
        let text = self.read(var)?;
        if var.value.vault_text().is_some() {
            // A secret is taken literally, never templated.
            return Some((text, line));
        }
        self.expand(scope, name, text, line, 0)
            .map(|text| (text, line))
    }

    fn var_error(&mut self, line: usize, error: &VarError) {
        let help = match error {
            VarError::NoPassword { .. } => {
                "pass --vault-password-file FILE or set ANSIBLE_VAULT_PASSWORD_FILE"
            }
            VarError::Vault { .. } => "check the vault password, or re-encrypt the value",
            VarError::NotText { .. } => "encrypt the value as text",
            VarError::NotScalar { .. } => "write it as a single value",
        };
        self.error(line, error.to_string(), help);
    }

    fn expand(
        &mut self,
        scope: Scope,
        name: &str,
        text: String,
        line: usize,
        depth: usize,
    ) -> Option<String> {
        if !text.contains("{{") && !text.contains("{%") {
            return Some(text);
        }
        let reference = text
            .trim()
            .strip_prefix("{{")
            .and_then(|t| t.strip_suffix("}}"))
            .map(str::trim)
            .filter(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        match reference {
            Some(reference) if depth < 8 && reference != name => {
                let var = self.lookup(scope, reference)?;
                let inner = self.read(var)?;
                if var.value.vault_text().is_some() {
                    return Some(inner);
                }
                self.expand(scope, reference, inner, line, depth + 1)
            }
            _ => {
                self.warning(
                    line,
                    format!("`{name}` is a Jinja expression airlock does not evaluate: {text}"),
                    format!("write the value of `{name}` out, or as `{{{{ other_variable }}}}`"),
                );
                None
            }
        }
    }

    fn flag(&mut self, scope: Scope, name: &str, default: bool) -> bool {
        let Some(var) = self.lookup(scope, name) else {
            return default;
        };
        if let Some(b) = var.value.as_bool() {
            return b;
        }
        let Some((text, line)) = self.text(scope, name) else {
            return default;
        };
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" | "" => false,
            _ => {
                self.error(
                    line,
                    format!("`{name}` must be true or false, found `{text}`"),
                    format!("write `{name}: true` or `{name}: false`"),
                );
                default
            }
        }
    }

    fn port(&mut self, scope: Scope, name: &str, default: u16) -> u16 {
        let Some((text, line)) = self.text(scope, name) else {
            return default;
        };
        match text.trim().parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                self.error(
                    line,
                    format!("`{name}` must be a TCP port (1-65535), found `{text}`"),
                    format!("write e.g. `{name}: {default}`"),
                );
                default
            }
        }
    }

    fn list(&mut self, scope: Scope, name: &str) -> Vec<(String, usize)> {
        let Some(var) = self.lookup(scope, name) else {
            return Vec::new();
        };
        if let Some(items) = var.value.as_seq() {
            let mut out = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(text) => out.push((text.to_owned(), item.mark.line)),
                    None if item.is_null() => {}
                    None => self.error(
                        item.mark.line,
                        format!(
                            "`{name}` must list plain strings, found {}",
                            item.describe()
                        ),
                        "write one name per list item",
                    ),
                }
            }
            return out;
        }
        self.text(scope, name)
            .map(|(text, line)| {
                text.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(|s| (s.to_owned(), line))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn machine(&mut self, host: &str) -> Machine {
        let vars = self.inventory.vars_of(host);
        let line = self.inventory.host(host).map_or(1, |h| h.mark.line);
        let get = |this: &mut Self, name: &str| -> Option<String> { this.read(vars.get(name)?) };
        let address = get(self, "ansible_host").unwrap_or_else(|| host.to_owned());
        let user = get(self, "ansible_user");
        let connection = get(self, "ansible_connection").unwrap_or_else(|| "ssh".to_owned());
        if !matches!(connection.as_str(), "ssh" | "local" | "paramiko" | "smart") {
            self.error(
                vars.get("ansible_connection").map_or(line, |v| v.mark.line),
                format!("host `{host}`: ansible_connection `{connection}` is not supported"),
                "use `ssh` (the default) or `local` for the node airlock runs on",
            );
        }
        let port = match get(self, "ansible_port") {
            None => 22,
            Some(text) => text.trim().parse::<u16>().unwrap_or_else(|_| {
                self.error(
                    vars.get("ansible_port").map_or(line, |v| v.mark.line),
                    format!("host `{host}`: ansible_port must be a TCP port, found `{text}`"),
                    "write e.g. `ansible_port: 22`",
                );
                22
            }),
        };
        let escalate = self.escalate(host, &vars);
        let mut ssh_args = Vec::new();
        for name in ["ansible_ssh_common_args", "ansible_ssh_extra_args"] {
            let Some(var) = vars.get(name) else { continue };
            let Some(text) = self.read(var) else { continue };
            match shell_words::split(&text) {
                Ok(words) => ssh_args.extend(words),
                Err(_) => self.error(
                    var.mark.line,
                    format!("host `{host}`: `{name}` has an unclosed quote"),
                    "close the quote, e.g. `-o ProxyJump=\"bastion\"`",
                ),
            }
        }
        let private_key = get(self, "ansible_ssh_private_key_file")
            .or_else(|| get(self, "ansible_private_key_file"));
        Machine {
            name: host.to_owned(),
            address,
            user,
            port,
            connection,
            escalate,
            ssh_args,
            private_key,
        }
    }

    /// `ansible_become*` of one host; only sudo is supported.
    fn escalate(&mut self, host: &str, vars: &HostVars<'a>) -> Option<Become> {
        let var = vars.get("ansible_become")?;
        let on = if let Some(b) = var.value.as_bool() {
            b
        } else {
            let text = self.read(var).unwrap_or_default();
            matches!(
                text.trim().to_ascii_lowercase().as_str(),
                "true" | "yes" | "on" | "1"
            )
        };
        if !on {
            return None;
        }
        if let Some(var) = vars.get("ansible_become_method") {
            let method = self.read(var).unwrap_or_default();
            if !method.trim().is_empty() && method.trim() != "sudo" {
                self.error(
                    var.mark.line,
                    format!(
                        "host `{host}`: ansible_become_method `{}` is not supported",
                        method.trim()
                    ),
                    "airlock escalates with `sudo`; connect as root or configure sudo",
                );
            }
        }
        let user = vars
            .get("ansible_become_user")
            .and_then(|v| self.read(v))
            .map_or_else(|| "root".to_owned(), |u| u.trim().to_owned());
        let password = vars
            .get("ansible_become_password")
            .or_else(|| vars.get("ansible_become_pass"))
            .and_then(|var| self.secret_of(var));
        Some(Become { user, password })
    }

    /// A secret variable: decrypted when a vault password was given, [`Secret::Locked`]
    /// otherwise (rendering never needs secrets; deploy asks for the password).
    fn secret_of(&mut self, var: &Var) -> Option<Secret> {
        if self.secret.is_none() && var.value.vault_text().is_some() {
            return Some(Secret::Locked);
        }
        self.read(var)
            .filter(|t| !t.is_empty())
            .map(|t| Secret::Known(t.trim_end_matches('\n').to_owned()))
    }

    fn machines(&mut self, group: &str) -> Vec<Machine> {
        self.inventory
            .hosts_of(group)
            .into_iter()
            .map(|h| self.machine(h))
            .collect()
    }

    fn group_line(&self, group: &str) -> usize {
        self.inventory.group(group).map_or(1, |g| g.mark.line)
    }

    fn site(&mut self) -> Site {
        let air_gapped_line = self
            .lookup(Scope::StagingThenCluster, "air_gapped")
            .map(|v| v.mark.line);
        let air_gapped = self.flag(Scope::StagingThenCluster, "air_gapped", false);
        self.check_groups(air_gapped, air_gapped_line);
        let staging = self.staging_node();
        let servers = self.machines("server");
        let workers = self.machines("workers");
        let gpu_workers = self.machines("gpu_workers");
        let agents = self.machines("agents");
        let data_dir = self
            .text(Scope::Staging, "airlock_data_dir")
            .map_or_else(|| "/var/lib/airlock".to_owned(), |(t, _)| t);
        let cache_max_size = self.cache_max_size();
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
        Site {
            inventory: self.inventory.file.clone(),
            air_gapped,
            staging,
            servers,
            workers,
            gpu_workers,
            agents,
            data_dir,
            cache_max_size,
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
        }
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
                    var.mark.line,
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
            let line = key.mark.line;
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
                    value.mark.line,
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

    fn check_groups(&mut self, air_gapped: bool, air_gapped_line: Option<usize>) {
        let staging_hosts = self.inventory.hosts_of("staging");
        match self.inventory.group("staging") {
            None if air_gapped => self.error(
                air_gapped_line.unwrap_or(1),
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
            Some(group) if staging_hosts.len() > 1 => {
                let line = group.mark.line;
                self.warning(
                    line,
                    format!(
                        "group `staging` has {} hosts; only the first, `{}`, runs the gateway",
                        staging_hosts.len(),
                        staging_hosts[0]
                    ),
                    "keep one host in `staging`",
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

    fn staging_node(&mut self) -> Option<Staging> {
        let name = (*self.inventory.hosts_of("staging").first()?).to_owned();
        let machine = self.machine(&name);
        let hostname = match self.text(Scope::Staging, "external_url") {
            Some((url, line)) => {
                let host = host_of_url(&url);
                if is_hostname(&host) {
                    host
                } else {
                    self.error(
                        line,
                        format!("`external_url` `{url}` does not name a host"),
                        "write the staging node's DNS name, e.g. `external_url: staging.example.edu`",
                    );
                    name.clone()
                }
            }
            None => name.clone(),
        };
        if !is_hostname(&hostname) {
            let line = self.inventory.host(&name).map_or(1, |h| h.mark.line);
            self.error(
                line,
                format!("staging host `{hostname}` is not a valid DNS name"),
                "name the staging host by its DNS name, or set `external_url`",
            );
        }
        let registry_host = match self.text(Scope::StagingThenCluster, "harbor_subdomain") {
            Some((sub, _)) if sub.trim().is_empty() => hostname.clone(),
            Some((sub, line)) => {
                let sub = sub.trim().to_owned();
                if !is_hostname(&sub) {
                    self.error(
                        line,
                        format!("`harbor_subdomain` `{sub}` is not a DNS label"),
                        "use e.g. `harbor`, or `''` to pull from the staging name itself",
                    );
                }
                format!("{sub}.{hostname}")
            }
            None => format!("harbor.{hostname}"),
        };
        self.require_staging_token(&name);
        Some(Staging {
            machine,
            hostname,
            registry_host,
        })
    }

    fn require_staging_token(&mut self, staging: &str) {
        let Some(var) = self.lookup(Scope::Staging, "staging_k3s_token") else {
            let line = self.group_line("staging");
            self.error(
                line,
                format!("`staging_k3s_token` is not set for staging host `{staging}`"),
                "add it under `staging: vars:`; `airlock vault new-secret --name staging_k3s_token` prints one",
            );
            return;
        };
        // Rendering never needs the token itself: without a password, presence is enough.
        if self.secret.is_none() && var.value.vault_text().is_some() {
            return;
        }
        if let Some((token, line)) = self.text(Scope::Staging, "staging_k3s_token") {
            if token.trim().is_empty() {
                self.error(
                    line,
                    "`staging_k3s_token` is empty",
                    "`airlock vault new-secret --name staging_k3s_token` prints one",
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
                    .map_or(1, |v| v.mark.line);
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

/// The host part of `https://host:port/path`, or of a bare `host`.
pub fn host_of_url(url: &str) -> String {
    let rest = url.trim().split_once("://").map_or(url.trim(), |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    host.to_ascii_lowercase()
}

/// `v1.31.4+k3s1` or `v1.32.0-rc1+k3s1`: how K3s names its releases.
fn is_k3s_version(v: &str) -> bool {
    let Some((semver, build)) = v.strip_prefix('v').and_then(|r| r.split_once("+k3s")) else {
        return false;
    };
    let core = semver
        .split_once('-')
        .map_or(semver, |(core, pre)| if pre.is_empty() { "" } else { core });
    let numbers: Vec<&str> = core.split('.').collect();
    numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        && !build.is_empty()
        && build.chars().all(|c| c.is_ascii_digit())
}

/// A DNS name (or IPv4 address): dot-separated labels of letters, digits and inner `-`.
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_project_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// `100Gi` (a Kubernetes quantity, as in `harbor_storage_size`) → `100GiB`.
fn kubernetes_quantity_to_size(text: &str) -> Option<String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() || number.parse::<u64>().is_err() {
        return None;
    }
    let unit = match unit {
        "" | "B" => "B",
        "Ki" | "KiB" => "KiB",
        "Mi" | "MiB" => "MiB",
        "Gi" | "GiB" => "GiB",
        "Ti" | "TiB" => "TiB",
        "k" | "K" | "KB" => "KB",
        "M" | "MB" => "MB",
        "G" | "GB" => "GB",
        "T" | "TB" => "TB",
        _ => return None,
    };
    Some(if unit == "B" {
        number.to_owned()
    } else {
        format!("{number}{unit}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            host_of_url("https://Scout.Example.edu:8443/x"),
            "scout.example.edu"
        );
        assert_eq!(host_of_url("staging.example.edu"), "staging.example.edu");
        assert_eq!(host_of_url("u@h:22"), "h");
    }

    #[test]
    fn hostnames() {
        assert!(is_hostname("harbor.staging.example.edu"));
        assert!(is_hostname("10.0.0.5"));
        assert!(!is_hostname("-bad.example"));
        assert!(!is_hostname("a..b"));
        assert!(!is_hostname("a_b.example"));
        assert!(!is_hostname("*.example.com"));
    }

    #[test]
    fn k3s_versions() {
        assert!(is_k3s_version("v1.31.4+k3s1"));
        assert!(is_k3s_version("v1.32.0-rc1+k3s2"));
        for bad in [
            "1.31.4+k3s1",
            "v1.31+k3s1",
            "v1.31.4",
            "v1.31.4+k3s",
            "latest",
        ] {
            assert!(!is_k3s_version(bad), "{bad}");
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(
            kubernetes_quantity_to_size("100Gi").as_deref(),
            Some("100GiB")
        );
        assert_eq!(kubernetes_quantity_to_size("2T").as_deref(), Some("2TB"));
        assert_eq!(kubernetes_quantity_to_size("1024").as_deref(), Some("1024"));
        assert_eq!(kubernetes_quantity_to_size("lots"), None);
        assert_eq!(kubernetes_quantity_to_size("5Pi"), None);
    }
}
