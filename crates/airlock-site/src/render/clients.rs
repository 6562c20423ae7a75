//! Package clients pointed at the gateway's `/repository/<name>/` paths (Nexus-compatible):
//! pip, conda, Maven and dnf.
//!
//! The gateway sends a file pinned by a checksum only once it is downloaded and verified, so a
//! client may see no byte for as long as the upstream download takes: pip, conda and dnf get a
//! read timeout of [`READ_TIMEOUT_SECS`] (their defaults are 15, 60 and 30 s). Maven's
//! resolver already waits 30 minutes.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::header;
use crate::site::{GatewayTls, Site, Staging};

pub(super) fn all(site: &Site, staging: &Staging) -> Vec<(PathBuf, String)> {
    let base = format!("https://{}/repository", staging.hostname);
    let mut files = Vec::new();
    if site.has_package("pypi-proxy") {
        files.push(("clients/pip.conf", pip_conf(site, &base)));
    }
    if site.has_package("conda-forge") {
        files.push(("clients/condarc", condarc(site, &base)));
    }
    if site.has_package("maven-central") {
        files.push(("clients/settings.xml", settings_xml(&base)));
    }
    files.push(("clients/airlock.repo", dnf_repo(site, &base)));
    files
        .into_iter()
        .map(|(p, c)| (PathBuf::from(p), c))
        .collect()
}

/// Seconds a client waits for the first byte of a response: enough for a large file to be
/// fetched and verified upstream before the gateway answers.
pub const READ_TIMEOUT_SECS: u32 = 300;

/// The comment above each timeout setting (`#` comment syntax).
pub const TIMEOUT_WHY: &str =
    "# The gateway answers once a file is fully downloaded and verified: wait for large ones.";

/// CA file clients must trust, when the gateway's certificate is self-signed.
pub(super) fn client_ca(site: &Site) -> Option<&str> {
    match site.tls {
        GatewayTls::SelfSigned => site.ca_file.as_deref(),
        GatewayTls::Files { .. } => None,
    }
}

fn pip_conf(site: &Site, base: &str) -> String {
    let mut out = header(site, "#");
    let _ = writeln!(
        out,
        "[global]\nindex-url = {base}/pypi-proxy/simple/\n{TIMEOUT_WHY}\ntimeout = {READ_TIMEOUT_SECS}"
    );
    if let Some(ca) = client_ca(site) {
        let _ = writeln!(out, "cert = {ca}");
    }
    out
}

fn condarc(site: &Site, base: &str) -> String {
    let mut out = header(site, "#");
    let _ = writeln!(out, "channel_alias: {base}");
    if site.has_package("defaults") {
        let _ = writeln!(out, "default_channels:\n  - {base}/defaults");
    }
    out.push_str("channels:\n  - conda-forge\n");
    if site.has_package("defaults") {
        out.push_str("  - defaults\n");
    }
    if let Some(ca) = client_ca(site) {
        let _ = writeln!(out, "ssl_verify: {ca}");
    }
    let _ = writeln!(
        out,
        "{TIMEOUT_WHY}\nremote_read_timeout_secs: {READ_TIMEOUT_SECS}"
    );
    out
}

fn settings_xml(base: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Rendered by `airlock render`; edit the inventory, not this file. -->
<settings xmlns="http://maven.apache.org/SETTINGS/1.2.0"
          xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
          xsi:schemaLocation="http://maven.apache.org/SETTINGS/1.2.0 https://maven.apache.org/xsd/settings-1.2.0.xsd">
  <mirrors>
    <mirror>
      <id>airlock-maven-central</id>
      <name>Maven Central through the airlock gateway</name>
      <mirrorOf>*</mirrorOf>
      <url>{base}/maven-central/</url>
    </mirror>
  </mirrors>
</settings>
"#
    )
}

/// Why the `.repo` checks packages' signatures but not the metadata's.
const UNSIGNED_METADATA_WHY: &str = "# repo_gpgcheck=0: a gateway with `offline = true` serves repomd.xml regenerated from the\n\
     # packages it holds, which no upstream key signed; gpgcheck=1 checks every package's own.";

fn dnf_repo(site: &Site, base: &str) -> String {
    let mut out = header(site, "#");
    let _ = writeln!(out, "{TIMEOUT_WHY}");
    let _ = writeln!(out, "{UNSIGNED_METADATA_WHY}");
    let ca = client_ca(site)
        .map(|ca| format!("sslcacert={ca}\n"))
        .unwrap_or_default();
    let channel = &site.k3s.selinux_channel;
    let repos: [(&str, &str, String, String); 3] = [
        (
            "rancher-k3s",
            "K3s SELinux policy (rpm.rancher.io) through airlock",
            format!("{base}/rancher-k3s/k3s/{channel}/common/centos/9/noarch/"),
            format!("{base}/rancher-k3s/public.key"),
        ),
        (
            "epel-9",
            "EPEL 9 through airlock",
            format!("{base}/epel-9/9/Everything/$basearch/"),
            format!("{base}/epel-9/RPM-GPG-KEY-EPEL-9"),
        ),
        (
            "nvidia-container-toolkit",
            "NVIDIA container toolkit through airlock",
            format!("{base}/nvidia-container-toolkit/stable/rpm/$basearch/"),
            format!("{base}/nvidia-container-toolkit/gpgkey"),
        ),
    ];
    for (name, title, baseurl, gpgkey) in repos {
        if !site.has_package(name) {
            continue;
        }
        let _ = write!(
            out,
            "\n[airlock-{name}]\nname={title}\nbaseurl={baseurl}\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=0\ngpgkey={gpgkey}\n{ca}timeout={READ_TIMEOUT_SECS}\n"
        );
    }
    out
}
