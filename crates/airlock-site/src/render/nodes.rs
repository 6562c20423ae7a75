//! Node-side registry configs: K3s `registries.yaml`, containerd `hosts.toml`, podman/CRI-O
//! `registries.conf`.
//!
//! K3s gets Harbor-style rewrites (`^(.*)$` → `<project>/$1`) so it requests
//! `/v2/<project>/<repo>/…`; stock containerd has no rewrite, so its `hosts.toml` relies on
//! the `?ns=<registry>` it adds to mirror requests; podman and CRI-O put the project in the
//! mirror location instead. Every staging host is a mirror, in inventory order: each runtime
//! tries them in turn, so a node whose first gateway is down pulls through the next.

use std::fmt::Write as _;

use super::{header, quote, registry_url};
use crate::site::{Mirror, Site};

pub(super) fn registries_yaml(site: &Site) -> String {
    let mut out = header(site, "#");
    out.push_str("mirrors:\n");
    for mirror in &site.mirrors {
        let _ = writeln!(out, "  {}:", quote(&mirror.registry));
        out.push_str("    endpoint:\n");
        for replica in &site.replicas {
            let _ = writeln!(out, "      - {}", quote(&registry_url(replica)));
        }
        let _ = writeln!(
            out,
            "    rewrite:\n      \"^(.*)$\": {}",
            quote(&format!("{}/$1", mirror.project))
        );
    }
    let mut tls = Vec::new();
    if let Some(ca) = &site.ca_file {
        tls.push(format!("ca_file: {}", quote(ca)));
    }
    if site.insecure_skip_verify {
        tls.push("insecure_skip_verify: true".to_owned());
    }
    if !tls.is_empty() {
        out.push_str("configs:\n");
        for replica in &site.replicas {
            let _ = writeln!(out, "  {}:\n    tls:", quote(&replica.registry_host));
            for line in &tls {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
    out
}

pub(super) fn hosts_toml(site: &Site, mirror: &Mirror) -> String {
    let mut out = header(site, "#");
    let _ = writeln!(out, "server = {}", quote(&mirror.upstream));
    for replica in &site.replicas {
        let _ = writeln!(out, "\n[host.{}]", quote(&registry_url(replica)));
        out.push_str("  capabilities = [\"pull\", \"resolve\"]\n");
        if let Some(ca) = &site.ca_file {
            let _ = writeln!(out, "  ca = {}", quote(ca));
        }
        if site.insecure_skip_verify {
            out.push_str("  skip_verify = true\n");
        }
    }
    out
}

pub(super) fn registries_conf(site: &Site) -> String {
    let mut out = header(site, "#");
    if site.ca_file.is_some() {
        for replica in &site.replicas {
            let _ = writeln!(
                out,
                "# Trust the gateway's CA: copy it to /etc/containers/certs.d/{}/ca.crt",
                replica.registry_host
            );
        }
    }
    out.push_str("unqualified-search-registries = [\"docker.io\"]\n");
    for mirror in &site.mirrors {
        let _ = writeln!(out, "\n[[registry]]");
        let _ = writeln!(out, "prefix = {}", quote(&mirror.registry));
        let _ = writeln!(out, "location = {}", quote(&mirror.registry));
        for replica in &site.replicas {
            let _ = writeln!(out, "\n[[registry.mirror]]");
            let _ = writeln!(
                out,
                "location = {}",
                quote(&format!("{}/{}", replica.registry_host, mirror.project))
            );
            if site.insecure_skip_verify {
                out.push_str("insecure = true\n");
            }
        }
    }
    out
}
