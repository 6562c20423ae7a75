//! Stage `staging`: the gateway binary, its config and systemd unit on the staging node,
//! restarted only when something changed, then `/healthz` from the control node.

use std::time::{Duration, Instant};

use super::files::{FileSpec, ensure};
use super::report::Report;
use super::{DeployError, Options};
use crate::exec::{Executor, quote};
use crate::site::{GatewayTls, Site, Staging};

pub const BINARY: &str = "/usr/local/bin/airlock";
pub const CONFIG: &str = "/etc/airlock/airlock.toml";
pub const UNIT: &str = "/etc/systemd/system/airlock.service";
pub const SERVICE: &str = "airlock.service";
/// The gateway's HTTPS port (the rendered config listens on `0.0.0.0:443`).
pub const PORT: u16 = 443;

/// The systemd unit `airlock serve` runs under.
pub fn unit() -> String {
    format!(
        "# Written by `airlock deploy`; changes here are replaced on the next deploy.\n\
[Unit]\n\
Description=airlock gateway: OCI and package caches, egress proxy\n\
After=network-online.target\n\
Wants=network-online.target\n\
\n\
[Service]\n\
ExecStart={BINARY} serve --config {CONFIG}\n\
Restart=on-failure\n\
RestartSec=2\n\
# One descriptor per client connection, upstream connection and egress tunnel side.\n\
LimitNOFILE=65536\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n"
    )
}

/// Every file the staging node should hold.
pub fn files(site: &Site, config: &str, options: &Options) -> Result<Vec<FileSpec>, DeployError> {
    let binary = &options.airlock_binary;
    let sha256 = super::sha256_file(binary).map_err(|e| {
        DeployError::local(
            "staging",
            format!("cannot read the airlock binary {}: {e}", binary.display()),
            "pass the binary to install with --airlock-binary",
        )
    })?;
    let mut files = vec![
        FileSpec::local(BINARY, binary.clone(), sha256, 0o755),
        FileSpec::text(CONFIG, config, 0o644),
        FileSpec::text(UNIT, unit(), 0o644),
    ];
    if let GatewayTls::Files { cert, key } = &site.tls {
        // The inventory names files on the control node; they land at the same paths.
        for (path, mode) in [(cert, 0o644), (key, 0o600)] {
            let local = std::path::PathBuf::from(path);
            let sha = super::sha256_file(&local).map_err(|e| {
                DeployError::local(
                    "staging",
                    format!("cannot read TLS file {path}: {e}"),
                    "tls_cert_path and tls_key_path name files on the control node",
                )
            })?;
            files.push(FileSpec::local(path, local, sha, mode));
        }
    }
    Ok(files)
}

/// Run the stage on the staging node. Returns the gateway's CA (PEM) when it is
/// self-signed and exists.
pub fn run(
    site: &Site,
    staging: &Staging,
    exec: &dyn Executor,
    files: &[FileSpec],
    options: &Options,
    report: &Report,
) -> Result<Option<Vec<u8>>, DeployError> {
    let host = exec.host().to_owned();
    let fail = |e| DeployError::host("staging", &host, e);
    let mut changed = false;
    let mut unit_changed = false;
    for spec in files {
        let c = ensure(exec, spec, options.check, report).map_err(fail)?;
        changed |= c;
        unit_changed |= c && spec.path == UNIT;
    }
    if unit_changed {
        if !options.check {
            exec.run(&format!(
                "systemctl daemon-reload && systemctl enable {SERVICE}"
            ))
            .map_err(fail)?;
        }
        report.changed(&host, &format!("enable {SERVICE}"), None);
    }
    let active = exec
        .exec(
            &format!("systemctl is-active --quiet {SERVICE}"),
            crate::exec::Input::None,
        )
        .map_err(fail)?
        .success();
    if changed || !active {
        let why = if changed {
            "its files changed"
        } else {
            "it was not running"
        };
        if !options.check {
            exec.run(&format!("systemctl restart {SERVICE}"))
                .map_err(fail)?;
        }
        report.changed(&host, &format!("restart {SERVICE} ({why})"), None);
    } else {
        report.ok(&host, &format!("{SERVICE} running"));
    }
    let ca_path = format!("{}/tls/ca.crt", site.data_dir.trim_end_matches('/'));
    if options.check {
        return exec.read(&ca_path).map_err(fail);
    }
    let started = Instant::now();
    let deadline = started + options.wait_timeout;
    let ca = match site.tls {
        GatewayTls::SelfSigned => {
            Some(wait_for_ca(exec, &ca_path, deadline).map_err(|message| {
                DeployError::host_message(
                    "staging",
                    &host,
                    message,
                    "look at `journalctl -u airlock` on the staging node",
                )
            })?)
        }
        GatewayTls::Files { .. } => None,
    };
    wait_healthy(staging, ca.as_deref(), site.insecure_skip_verify, deadline).map_err(|message| {
        DeployError::host_message(
            "staging",
            &host,
            message,
            "check that port 443 of the staging node is open to the control node, and `journalctl -u airlock` there",
        )
    })?;
    report.ok(
        &host,
        &format!(
            "https://{}/healthz answers ({:.1} s)",
            staging.hostname,
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(ca)
}

fn wait_for_ca(exec: &dyn Executor, path: &str, deadline: Instant) -> Result<Vec<u8>, String> {
    loop {
        match exec.read(path) {
            Ok(Some(pem)) if !pem.is_empty() => return Ok(pem),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the gateway wrote no CA at {} in time",
                quote(path)
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// An HTTPS client for the gateway: its name resolves to the staging node's address (the
/// control node may not know the name), trusting its CA.
pub fn client(
    staging: &Staging,
    ca: Option<&[u8]>,
    insecure: bool,
    timeout: Duration,
) -> Result<reqwest::blocking::Client, String> {
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .no_proxy()
        .danger_accept_invalid_certs(insecure);
    if let Ok(ip) = staging.machine.address.parse::<std::net::IpAddr>() {
        builder = builder.resolve(&staging.hostname, std::net::SocketAddr::new(ip, PORT));
    }
    if let Some(pem) = ca {
        let cert = reqwest::Certificate::from_pem(pem)
            .map_err(|e| format!("the gateway's CA is not a PEM certificate: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build an HTTPS client: {e}"))
}

fn wait_healthy(
    staging: &Staging,
    ca: Option<&[u8]>,
    insecure: bool,
    deadline: Instant,
) -> Result<(), String> {
    let client = client(staging, ca, insecure, Duration::from_secs(5))?;
    let url = format!("https://{}/healthz", staging.hostname);
    let mut last;
    loop {
        match client.get(&url).send() {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{url} answered {}", r.status()),
            Err(e) => last = format!("{url}: {}", error_chain(&e)),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the gateway did not become healthy in time: {last}"
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fake::Fake;

    fn options(dir: &std::path::Path, check: bool) -> Options {
        let binary = dir.join("airlock");
        std::fs::write(&binary, b"airlock binary").unwrap();
        Options {
            check,
            airlock_binary: binary,
            cache_dir: dir.join("cache"),
            wait_timeout: Duration::from_secs(1),
            ..Options::default()
        }
    }

    #[test]
    fn unit_runs_the_installed_binary_with_the_installed_config() {
        let unit = unit();
        assert!(
            unit.contains(
                "ExecStart=/usr/local/bin/airlock serve --config /etc/airlock/airlock.toml"
            )
        );
        assert!(unit.contains("WantedBy=multi-user.target"));
    }

    #[test]
    fn check_mode_reports_the_restart_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), true);
        let site = super::super::tests::site();
        let staging = site.staging.clone().unwrap();
        let host = Fake::new("staging");
        host.answer("is-active", 3, "");
        let files = files(&site, "listen = 1\n", &opts).unwrap();
        let report = Report::new(Box::new(std::io::sink()), true);
        run(&site, &staging, &host, &files, &opts, &report).unwrap();
        assert!(host.file(CONFIG).is_none());
        assert!(
            host.commands()
                .iter()
                .all(|c| !c.contains("restart") && !c.contains("enable")),
            "{:?}",
            host.commands()
        );
        assert_eq!(
            report.counts()["staging"].changed,
            5,
            "3 files, enable, restart"
        );
    }
}
