//! `airlock inventory check`: every problem in an inventory, and a summary of the site.
//!
//! Runs three passes over one parsed inventory and its variable files: their structure
//! (while reading), every vault value (decrypted once to prove the password; failures of one
//! kind are reported once with the lines they affect), and the site settings
//! ([`Site::read`]). Placeholders left from Scout's `inventory.example.yaml`
//! (`$(openssl rand …)`, `<ssh username>`, `your-…`) are warnings: the file is valid, the
//! values are not real yet; so are `-e` values that differ from what the files say. The
//! summary says where each K3s setting came from, as `file:line`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::site::{GatewayTls, PackageProxyMode, Site};
use airlock_ansible::inventory::{
    Diagnostic, Inventory, VarError, is_secret_name, sort_diagnostics,
};
use airlock_ansible::vault::{VaultError, VaultSecret};

/// The result of checking an inventory.
#[derive(Debug, Clone)]
pub struct Report {
    pub site: Site,
    pub diagnostics: Vec<Diagnostic>,
    pub vault_values: usize,
    pub vault_decrypted: usize,
    /// Wholly vault-encrypted variable files read (with the password).
    pub vault_files: usize,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }
}

/// Check an inventory; `secret` is the vault password, when one was given.
pub fn check(inventory: &Inventory, secret: Option<&VaultSecret>) -> Report {
    let mut diagnostics = inventory.diagnostics.clone();
    let vault = check_vault(inventory, secret);
    diagnostics.extend(vault.diagnostics);
    diagnostics.extend(placeholders(inventory));
    diagnostics.extend(near_misses(inventory));
    diagnostics.extend(inventory.extra_overrides());
    let (site, site_diags) = Site::read(inventory, secret);
    diagnostics.extend(
        site_diags
            .into_iter()
            .filter(|d| !vault.covered.contains(&(d.file.clone(), d.line))),
    );
    sort_diagnostics(&mut diagnostics);
    diagnostics.dedup();
    Report {
        site,
        diagnostics,
        vault_values: vault.total,
        vault_decrypted: vault.decrypted,
        vault_files: inventory.vault_files().len(),
    }
}

/// What the vault pass found: counts, problems, and the lines those problems cover.
struct VaultPass {
    total: usize,
    decrypted: usize,
    diagnostics: Vec<Diagnostic>,
    covered: HashSet<(PathBuf, usize)>,
}

fn check_vault(inventory: &Inventory, secret: Option<&VaultSecret>) -> VaultPass {
    let mut pass = VaultPass {
        total: 0,
        decrypted: 0,
        diagnostics: Vec::new(),
        covered: HashSet::new(),
    };
    let mut wrong: Vec<(PathBuf, usize, Option<String>)> = Vec::new();
    let mut first = None;
    for var in inventory.all_vars() {
        for node in var.vault_values() {
            pass.total += 1;
            // A `!vault |` block starts on the line after its key; report the key's line.
            let mark = if node.mark.line == var.mark.line + 1 {
                var.mark
            } else {
                node.mark
            };
            let at = inventory.locate(mark);
            let (file, line) = (at.file.to_owned(), at.line);
            first.get_or_insert((file.clone(), line));
            let Some(secret) = secret else { continue };
            match airlock_ansible::vault::decrypt(node.vault_text().unwrap_or_default(), secret) {
                Ok(_) => pass.decrypted += 1,
                Err(VaultError::WrongPassword { label }) => wrong.push((file, line, label)),
                Err(source) => {
                    pass.covered.insert((file.clone(), line));
                    pass.diagnostics.push(Diagnostic::error(
                        &file,
                        line,
                        VarError::Vault {
                            name: var.name.clone(),
                            source,
                        }
                        .to_string(),
                        format!(
                            "re-encrypt it: `airlock vault encrypt-string --name {}` (value on stdin)",
                            var.name
                        ),
                    ));
                }
            }
        }
    }
    if let (None, Some((file, line))) = (secret, &first) {
        pass.diagnostics.push(Diagnostic::warning(
            file,
            *line,
            format!(
                "{} vault-encrypted value(s) were not checked: no vault password",
                pass.total
            ),
            "pass --vault-password-file FILE or set ANSIBLE_VAULT_PASSWORD_FILE",
        ));
    }
    if let Some((file, line, _)) = wrong.first() {
        // Lines of the inventory file by number, those of variable files as `file:line`.
        let lines: Vec<String> = wrong
            .iter()
            .map(|(f, l, _)| {
                if *f == inventory.file {
                    l.to_string()
                } else {
                    format!("{}:{l}", f.display())
                }
            })
            .collect();
        let mut labels: Vec<&str> = wrong.iter().filter_map(|(_, _, l)| l.as_deref()).collect();
        labels.sort_unstable();
        labels.dedup();
        let for_ids = if labels.is_empty() {
            String::new()
        } else {
            format!(" for vault-id {}", labels.join(", "))
        };
        pass.diagnostics.push(Diagnostic::error(
            file,
            *line,
            format!(
                "wrong vault password{for_ids}: {} of {} vault value(s) do not decrypt (lines {})",
                wrong.len(),
                pass.total,
                lines.join(", ")
            ),
            "check --vault-password-file / ANSIBLE_VAULT_PASSWORD_FILE; values made with another password must be re-encrypted",
        ));
        pass.covered
            .extend(wrong.iter().map(|(f, l, _)| (f.clone(), *l)));
    }
    pass
}

pub(crate) fn placeholder_kind(text: &str) -> Option<&'static str> {
    let t = text.trim();
    if t.starts_with("$(") && t.ends_with(')') {
        Some("a shell command to run")
    } else if t.starts_with('<') && t.ends_with('>') && t.len() > 2 {
        Some("a placeholder")
    } else if t.starts_with("your-") {
        Some("an example value")
    } else {
        None
    }
}

fn placeholders(inventory: &Inventory) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for var in inventory.all_vars() {
        let Some(text) = var.value.as_str() else {
            continue;
        };
        let Some(kind) = placeholder_kind(text) else {
            continue;
        };
        let help = if is_secret_name(&var.name) {
            format!(
                "replace it with the output of `airlock vault new-secret --name {}` (or `airlock vault encrypt-string --name {}` with the value on stdin)",
                var.name, var.name
            )
        } else {
            format!("set `{}` to the site's real value", var.name)
        };
        let at = inventory.locate(var.mark);
        out.push(Diagnostic::warning(
            at.file,
            at.line,
            format!("`{}` is still {kind}: {}", var.name, text.trim()),
            help,
        ));
    }
    out
}

/// Edit distance (insertions, deletions, substitutions, adjacent swaps), for typo hints.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

fn near_misses(inventory: &Inventory) -> Vec<Diagnostic> {
    let projects: Vec<String> = crate::catalog::registries()
        .iter()
        .map(|r| format!("harbor_{}_proxy_project", r.key))
        .collect();
    let known: Vec<&str> = crate::catalog::KNOWN_VARS
        .iter()
        .copied()
        .chain(projects.iter().map(String::as_str))
        .collect();
    let mut out = Vec::new();
    for var in inventory.all_vars() {
        if var.name.len() < 6 || known.contains(&var.name.as_str()) {
            continue;
        }
        if let Some(meant) = known.iter().find(|k| distance(&var.name, k) <= 2) {
            let at = inventory.locate(var.mark);
            out.push(Diagnostic::warning(
                at.file,
                at.line,
                format!(
                    "`{}` is not a variable airlock reads; did you mean `{meant}`?",
                    var.name
                ),
                format!("rename it to `{meant}`, or ignore this if another tool reads it"),
            ));
        }
    }
    out
}

/// A human summary of the site an inventory describes.
pub fn summary(report: &Report) -> String {
    let site = &report.site;
    let mut out = String::new();
    let mode = if site.air_gapped {
        "air-gapped"
    } else {
        "connected (air_gapped is false)"
    };
    let _ = writeln!(out, "{}: {mode} K3s site", site.inventory.display());
    let machine = |m: &airlock_ansible::connection::Machine| {
        let user = m
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        if m.connection == "local" {
            format!("{} (local)", m.name)
        } else {
            format!("{} (ssh {user}{}:{})", m.name, m.address, m.port)
        }
    };
    if site.replicas.is_empty() {
        let _ = writeln!(out, "  staging      (none)");
    }
    let tls = match &site.tls {
        GatewayTls::SelfSigned if site.replicas.len() > 1 => {
            "self-signed, one CA (the first staging host's)".to_owned()
        }
        GatewayTls::SelfSigned => "self-signed".to_owned(),
        GatewayTls::Files { cert, .. } => format!("from {cert}"),
    };
    for staging in &site.replicas {
        let _ = writeln!(out, "  staging      {}", machine(&staging.machine));
        let _ = writeln!(
            out,
            "  gateway      https://{} (registry {}), TLS {tls}",
            staging.hostname, staging.registry_host,
        );
    }
    if let Some(storage) = &site.storage {
        let backend = match storage.backend {
            Some(airlock_config::Backend::S3) => format!(
                "s3, bucket {}",
                storage.bucket.as_deref().unwrap_or_default()
            ),
            _ => "fs".to_owned(),
        };
        let _ = writeln!(out, "  storage      {backend}");
    }
    for (label, machines) in [
        ("server", &site.servers),
        ("workers", &site.workers),
        ("gpu_workers", &site.gpu_workers),
        ("agents", &site.agents),
    ] {
        let list: Vec<String> = machines.iter().map(machine).collect();
        let shown = if list.is_empty() {
            "(none)".to_owned()
        } else {
            list.join(", ")
        };
        let _ = writeln!(out, "  {label:<12} {shown}");
    }
    let projects: Vec<String> = site
        .mirrors
        .iter()
        .map(|m| format!("{}→{}", m.registry, m.project))
        .collect();
    let _ = writeln!(out, "  registries   {}", projects.join(", "));
    let packages = match site.package_proxy_mode {
        PackageProxyMode::Gateway => site
            .packages
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", "),
        PackageProxyMode::External => "external (package_proxy_mode: external)".to_owned(),
        PackageProxyMode::None => "none (package_proxy_mode: none)".to_owned(),
    };
    let _ = writeln!(out, "  packages     {packages}");
    if !site.hosted.is_empty() || !site.robots.is_empty() {
        let names = |names: Vec<&str>| {
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        let _ = writeln!(
            out,
            "  hosted       {} (robots: {})",
            names(site.hosted.iter().map(|h| h.name.as_str()).collect()),
            names(site.robots.iter().map(|r| r.name.as_str()).collect())
        );
    }
    let allow = if site.egress.allow.is_empty() {
        "(nothing allowed)".to_owned()
    } else {
        site.egress.allow.join(", ")
    };
    let _ = writeln!(out, "  egress       :{} → {allow}", site.egress.port);
    if let Some(proxy) = &site.upstream_proxy {
        // The URL holds no credentials; the user name is shown, the password never.
        let user = proxy
            .username
            .as_ref()
            .map_or_else(String::new, |u| format!(" as {u}"));
        let direct = if proxy.no_proxy.is_empty() {
            String::new()
        } else {
            format!(", direct: {}", proxy.no_proxy.join(", "))
        };
        let _ = writeln!(out, "  outbound     {}{user}{direct}", proxy.url);
    }
    let _ = writeln!(
        out,
        "  k3s          {}, SELinux {}",
        site.k3s
            .version
            .as_deref()
            .unwrap_or("version from airlock's default"),
        if site.k3s.selinux {
            format!("on ({} channel)", site.k3s.selinux_channel)
        } else {
            "off".to_owned()
        }
    );
    for source in site.sources.iter().filter(|s| s.name.starts_with("k3s_")) {
        let _ = writeln!(
            out,
            "               {} {} ({})",
            source.name,
            source.value,
            source.location()
        );
    }
    let files = match report.vault_files {
        0 => String::new(),
        n => format!("; {n} encrypted variable file(s)"),
    };
    let install = &site.install;
    let _ = writeln!(
        out,
        "  install      servers: --default-local-storage-path={}{}{}; kubeconfig {} (0640, group {}); GPU taint {}",
        install.base_dir,
        if install.extra_args.is_empty() {
            ""
        } else {
            " "
        },
        install.extra_args.join(" "),
        install.kubeconfig,
        install.kubeconfig_group,
        if install.gpu_node_taint { "on" } else { "off" },
    );
    let _ = writeln!(out, "  coredns      {}", coredns_summary(site));
    let _ = writeln!(
        out,
        "  vault        {} value(s), {} decrypted{files}",
        report.vault_values, report.vault_decrypted
    );
    out
}

/// What the `coredns-custom` `ConfigMap` holds, layer by layer.
fn coredns_summary(site: &Site) -> String {
    let mut layers = Vec::new();
    if site.air_gapped {
        layers.push("air-gapped deny-all".to_owned());
    }
    for (destination, domains) in &site.coredns.forward {
        layers.push(format!("forward {} → {destination}", domains.join(" ")));
    }
    if !site.coredns.extra_server_blocks.is_empty() {
        let names: Vec<&str> = site
            .coredns
            .extra_server_blocks
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        layers.push(format!("server blocks {}", names.join(", ")));
    }
    if layers.is_empty() {
        "stock (no coredns-custom)".to_owned()
    } else {
        layers.join("; ")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn distances() {
        assert_eq!(super::distance("air_gapped", "air_gapped"), 0);
        assert_eq!(super::distance("air_gaped", "air_gapped"), 1);
        assert_eq!(super::distance("sqiud_port", "squid_port"), 1);
        assert_eq!(super::distance("", "abc"), 3);
    }
}
