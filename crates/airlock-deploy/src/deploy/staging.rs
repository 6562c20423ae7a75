//! Stage `staging`: the gateway binary, its config and systemd unit on each staging node,
//! restarted only when something changed, then `/healthz` from the control node.
//!
//! With several staging nodes (replicas) and a self-signed certificate, the first one's CA
//! is the site's: its `ca.crt` and `ca.key` are placed in every other replica's
//! `data_dir/tls` before that gateway starts, and the gateway issues its own server
//! certificate from it for its own names. Nodes trust that one CA.
//!
//! The gateway runs as its own system user, confined by the unit: it can bind port 443
//! (`CAP_NET_BIND_SERVICE`, nothing else), write only its data directory, and reach nothing
//! of the host it does not need. The data directory and a provided TLS key belong to that
//! user, 0700/0600.

use std::time::{Duration, Instant};

use super::files::{FileSpec, ensure};
use super::report::Report;
use super::{DeployError, Mode, Options};
use airlock_remote::{ExecError, Executor, quote};
use airlock_site::site::{GatewayTls, OutboundProxy, Site, Staging, UPSTREAM_PROXY_PASSWORD_FILE};

pub const BINARY: &str = "/usr/local/bin/airlock";
pub const CONFIG: &str = "/etc/airlock/airlock.toml";
pub const UNIT: &str = "/etc/systemd/system/airlock.service";
pub const SERVICE: &str = "airlock.service";
/// The system user (and group) the gateway runs as.
pub const USER: &str = "airlock";
/// The gateway's HTTPS port (the rendered config listens on `0.0.0.0:443`).
pub const PORT: u16 = 443;

/// Where `ProtectHome=yes` hides everything from the gateway.
const HOME_DIRS: [&str; 3] = ["/home", "/root", "/run/user"];

/// The systemd unit `airlock serve` runs under, writing only to `data_dir`.
pub fn unit(data_dir: &str) -> String {
    format!(
        "# Written by `airlock deploy`; changes here are replaced on the next deploy.\n\
[Unit]\n\
Description=airlock gateway: OCI and package caches, egress proxy\n\
After=network-online.target\n\
Wants=network-online.target\n\
\n\
[Service]\n\
User={USER}\n\
Group={USER}\n\
ExecStart={BINARY} serve --config {CONFIG}\n\
Restart=on-failure\n\
RestartSec=2\n\
# One descriptor per client connection, upstream connection and egress tunnel side.\n\
LimitNOFILE=65536\n\
# Least privilege: port 443 is the only privilege; the data directory the only place it\n\
# writes; `systemd-analyze security airlock` shows what each line removes.\n\
AmbientCapabilities=CAP_NET_BIND_SERVICE\n\
CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n\
NoNewPrivileges=yes\n\
UMask=0077\n\
ProtectSystem=strict\n\
ReadWritePaths={data_dir}\n\
ProtectHome=yes\n\
PrivateTmp=yes\n\
PrivateDevices=yes\n\
PrivateMounts=yes\n\
ProtectKernelTunables=yes\n\
ProtectKernelModules=yes\n\
ProtectKernelLogs=yes\n\
ProtectControlGroups=yes\n\
ProtectClock=yes\n\
ProtectHostname=yes\n\
ProtectProc=invisible\n\
ProcSubset=pid\n\
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n\
RestrictNamespaces=yes\n\
RestrictRealtime=yes\n\
RestrictSUIDSGID=yes\n\
LockPersonality=yes\n\
MemoryDenyWriteExecute=yes\n\
RemoveIPC=yes\n\
SystemCallArchitectures=native\n\
SystemCallFilter=@system-service\n\
SystemCallFilter=~@privileged @resources\n\
SystemCallErrorNumber=EPERM\n\
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
    refuse_home(&site.data_dir, "airlock_data_dir")?;
    let mut files = vec![
        FileSpec::local(BINARY, binary.clone(), sha256, 0o755),
        FileSpec::text(CONFIG, config, 0o644),
        FileSpec::text(UNIT, unit(&site.data_dir), 0o644),
    ];
    if let GatewayTls::Files { cert, key } = &site.tls {
        // The inventory names files on the control node; they land at the same paths. The
        // key is the gateway user's alone; the certificate is public.
        for (path, mode, owner, var) in [
            (cert, 0o644, super::files::ROOT, "tls_cert_path"),
            (key, 0o600, OWNER, "tls_key_path"),
        ] {
            refuse_home(path, var)?;
            let local = std::path::PathBuf::from(path);
            let sha = super::sha256_file(&local).map_err(|e| {
                DeployError::local(
                    "staging",
                    format!("cannot read TLS file {path}: {e}"),
                    "tls_cert_path and tls_key_path name files on the control node",
                )
            })?;
            files.push(FileSpec::local(path, local, sha, mode).owned_by(owner));
        }
    }
    if let Some(proxy) = &site.upstream_proxy {
        files.extend(outbound_proxy_files(proxy)?);
    }
    files.extend(storage_files(site)?);
    Ok(files)
}

/// The S3 credential files `[storage]` names: files on the control node, installed at the
/// same paths, the gateway user's alone and never shown in a diff.
fn storage_files(site: &Site) -> Result<Vec<FileSpec>, DeployError> {
    let Some(storage) = &site.storage else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    for (path, var) in [
        (&storage.access_key_id_file, "airlock_s3_access_key_id_file"),
        (
            &storage.secret_access_key_file,
            "airlock_s3_secret_access_key_file",
        ),
    ] {
        let Some(path) = path.as_ref().and_then(|p| p.to_str()) else {
            continue;
        };
        refuse_home(path, var)?;
        let local = std::path::PathBuf::from(path);
        let sha = super::sha256_file(&local).map_err(|e| {
            DeployError::local(
                "staging",
                format!("cannot read the S3 credential file {path}: {e}"),
                format!("`{var}` names a file on the control node; deploy installs it on every staging host"),
            )
        })?;
        files.push(FileSpec::local(path, local, sha, 0o600).owned_by(OWNER));
    }
    Ok(files)
}

/// The site's CA when the gateways' certificates are self-signed: the first staging node's,
/// which every other replica issues its own server certificate from.
#[derive(Clone, PartialEq, Eq)]
pub struct SiteCa {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for SiteCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SiteCa(…)")
    }
}

/// `data_dir/tls`, where the gateway keeps its CA and server certificate.
pub fn tls_dir(site: &Site) -> String {
    format!("{}/tls", site.data_dir.trim_end_matches('/'))
}

/// The site CA as the first staging node holds it, or `None` before its gateway first ran.
pub fn read_site_ca(site: &Site, exec: &dyn Executor) -> Result<Option<SiteCa>, ExecError> {
    let dir = tls_dir(site);
    let cert = exec.read(&format!("{dir}/ca.crt"))?;
    let key = exec.read(&format!("{dir}/ca.key"))?;
    Ok(match (cert, key) {
        (Some(cert), Some(key)) if !cert.is_empty() && !key.is_empty() => {
            Some(SiteCa { cert, key })
        }
        _ => None,
    })
}

/// The site CA's files in a replica's `data_dir/tls`, the gateway user's alone (as the
/// gateway writes them); the key is never shown.
pub fn site_ca_files(site: &Site, ca: &SiteCa) -> Vec<FileSpec> {
    let dir = tls_dir(site);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let cert = FileSpec::text(&format!("{dir}/ca.crt"), text(&ca.cert), 0o600).owned_by(OWNER);
    let mut key = FileSpec::text(&format!("{dir}/ca.key"), text(&ca.key), 0o600).owned_by(OWNER);
    key.opaque = true;
    vec![cert, key]
}

/// The outbound proxy's password (the gateway user's alone, never shown in a diff) and the
/// CA of a TLS-intercepting proxy, which the inventory names on the control node and which
/// lands at the same path.
fn outbound_proxy_files(proxy: &OutboundProxy) -> Result<Vec<FileSpec>, DeployError> {
    let mut files = Vec::new();
    if let Some(password) = &proxy.password {
        let mut spec = FileSpec::text(
            UPSTREAM_PROXY_PASSWORD_FILE,
            format!("{}\n", password.expose()),
            0o600,
        )
        .owned_by(OWNER);
        spec.opaque = true;
        files.push(spec);
    }
    if let Some(path) = &proxy.ca_file {
        let var = "airlock_upstream_proxy_ca_file";
        refuse_home(path, var)?;
        let local = std::path::PathBuf::from(path);
        let sha = super::sha256_file(&local).map_err(|e| {
            DeployError::local(
                "staging",
                format!("cannot read the outbound proxy's CA {path}: {e}"),
                format!("`{var}` names a PEM file on the control node"),
            )
        })?;
        files.push(FileSpec::local(path, local, sha, 0o644));
    }
    Ok(files)
}

/// `user:group` of what the gateway owns.
const OWNER: &str = "airlock:airlock";

/// The unit's `ProtectHome=yes` hides home directories from the gateway, so nothing it reads
/// or writes may live there.
fn refuse_home(path: &str, var: &str) -> Result<(), DeployError> {
    let inside = HOME_DIRS
        .iter()
        .any(|home| std::path::Path::new(path).starts_with(home));
    if inside {
        return Err(DeployError::local(
            "staging",
            format!("`{var}` is {path}, under a home directory the gateway's unit cannot see"),
            format!(
                "use a path outside {} (e.g. under /etc/airlock or /var/lib/airlock)",
                HOME_DIRS.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The gateway's system user: created when missing (no home, no login shell).
fn ensure_user(
    exec: &dyn Executor,
    data_dir: &str,
    mode: Mode,
    report: &Report,
) -> Result<bool, ExecError> {
    let host = exec.host();
    let exists = exec
        .exec(&format!("id -u {USER}"), airlock_remote::Input::None)?
        .success();
    if exists {
        report.ok(host, &format!("system user {USER}"));
        return Ok(false);
    }
    if mode == Mode::Apply {
        exec.run(&format!(
            "useradd --system --user-group --no-create-home --home-dir {} --shell /usr/sbin/nologin {USER}",
            quote(data_dir)
        ))?;
    }
    report.changed(host, &format!("create system user {USER}"), None);
    Ok(true)
}

/// The data directory: the gateway user's, 0700, and so is everything in it (files an
/// earlier gateway wrote as root included).
fn ensure_data_dir(
    exec: &dyn Executor,
    data_dir: &str,
    mode: Mode,
    report: &Report,
) -> Result<bool, ExecError> {
    let host = exec.host();
    let d = quote(data_dir);
    let state = exec.run(&format!(
        "if [ ! -d {d} ]; then echo missing; elif ! id -u {USER} >/dev/null 2>&1; then echo wrong; \
elif [ -n \"$(find {d} ! -type l \\( ! -user {USER} -o ! -group {USER} -o -perm /077 \\) -print -quit)\" ]; \
then echo wrong; else echo ok; fi"
    ))?;
    let task = format!("{data_dir} owned by {USER}, 0700");
    let why = match state.trim() {
        "ok" => {
            report.ok(host, &task);
            return Ok(false);
        }
        "missing" => "created",
        "wrong" => "owner or mode fixed",
        other => {
            return Err(ExecError::Local {
                host: host.to_owned(),
                message: format!("checking {data_dir}: unexpected output {other:?}"),
            });
        }
    };
    if mode == Mode::Apply {
        exec.run(&format!(
            "install -d -m 0700 -o {USER} -g {USER} {d} && chown -R {OWNER} {d} && chmod -R go-rwx {d}"
        ))?;
    }
    report.changed(host, &format!("{task} ({why})"), None);
    Ok(true)
}

/// Run the stage on one staging node: [`install`], then wait for it. Returns the gateway's
/// CA (PEM) when it is self-signed and exists.
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
    install(site, exec, files, options.mode, report)?;
    let ca_path = format!("{}/ca.crt", tls_dir(site));
    if options.mode == Mode::Check {
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

/// The gateway's user, data directory, files and unit on one staging node, restarted when any
/// of them changed (or it was not running). A replaced CA also drops the server certificate's
/// record, so the gateway issues a new one from that CA for its own names.
pub fn install(
    site: &Site,
    exec: &dyn Executor,
    files: &[FileSpec],
    mode: Mode,
    report: &Report,
) -> Result<(), DeployError> {
    let host = exec.host().to_owned();
    let fail = |e| DeployError::host("staging", &host, e);
    let mut changed = ensure_user(exec, &site.data_dir, mode, report).map_err(fail)?;
    changed |= ensure_data_dir(exec, &site.data_dir, mode, report).map_err(fail)?;
    let tls = tls_dir(site);
    let in_tls = |spec: &FileSpec| {
        std::path::Path::new(&spec.path).parent() == Some(std::path::Path::new(&tls))
    };
    if mode == Mode::Apply && files.iter().any(in_tls) {
        // Created by root, the directory would not be the gateway's to write its
        // certificate in.
        exec.run(&format!(
            "install -d -m 0700 -o {USER} -g {USER} {}",
            quote(&tls)
        ))
        .map_err(fail)?;
    }
    let mut unit_changed = false;
    let mut ca_changed = false;
    for spec in files {
        let c = ensure(exec, spec, mode, report).map_err(fail)?;
        changed |= c;
        unit_changed |= c && spec.path == UNIT;
        ca_changed |= c && in_tls(spec);
    }
    if ca_changed {
        if mode == Mode::Apply {
            exec.run(&format!("rm -f {}", quote(&format!("{tls}/server.json"))))
                .map_err(fail)?;
        }
        report.changed(
            &host,
            "server certificate re-issued from the site CA on restart",
            None,
        );
    }
    if unit_changed {
        if mode == Mode::Apply {
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
            airlock_remote::Input::None,
        )
        .map_err(fail)?
        .success();
    if changed || !active {
        let why = if changed {
            "its files changed"
        } else {
            "it was not running"
        };
        if mode == Mode::Apply {
            exec.run(&format!("systemctl restart {SERVICE}"))
                .map_err(fail)?;
        }
        report.changed(&host, &format!("restart {SERVICE} ({why})"), None);
    } else {
        report.ok(&host, &format!("{SERVICE} running"));
    }
    Ok(())
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
    use airlock_remote::fake::Fake;

    fn options(dir: &std::path::Path, mode: Mode) -> Options {
        let binary = dir.join("airlock");
        std::fs::write(&binary, b"airlock binary").unwrap();
        Options {
            mode,
            airlock_binary: binary,
            cache_dir: dir.join("cache"),
            wait_timeout: Duration::from_secs(1),
            ..Options::default()
        }
    }

    #[test]
    fn unit_runs_the_installed_binary_with_the_installed_config() {
        let unit = unit("/var/lib/airlock");
        assert!(
            unit.contains(
                "ExecStart=/usr/local/bin/airlock serve --config /etc/airlock/airlock.toml"
            )
        );
        assert!(unit.contains("WantedBy=multi-user.target"));
    }

    /// Regression: the gateway ran as root with no confinement at all.
    #[test]
    fn unit_runs_as_its_own_user_with_only_port_binding() {
        let unit = unit("/srv/airlock data");
        for line in [
            "User=airlock",
            "Group=airlock",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/srv/airlock data",
            "UMask=0077",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
        }
    }

    /// The exposure score `systemd-analyze security` gives the unit deploy installs, from the
    /// real tool: the final line reads `→ Overall exposure level for airlock.service: 1.4 OK 🙂`.
    #[test]
    fn systemd_analyze_rates_the_unit_ok_or_better() {
        let tool = airlock_testkit::require_tool("systemd-analyze", "systemd");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SERVICE);
        std::fs::write(&path, unit("/var/lib/airlock")).unwrap();
        let output = std::process::Command::new(tool)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Offline mode also loads the unit: an unknown or misspelt setting shows here.
        assert!(
            stderr.trim().is_empty(),
            "systemd-analyze complained:\n{stderr}"
        );
        let line = stdout
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no exposure line in:\n{stdout}\n{stderr}"));
        let verdict = line.rsplit(": ").next().unwrap();
        let mut words = verdict.split_whitespace();
        let score: f64 = words.next().unwrap().parse().unwrap();
        let band = words.next().unwrap();
        assert!(
            score <= 4.9 && ["PERFECT", "SAFE", "OK"].contains(&band),
            "{line}\n{stdout}"
        );
    }

    #[test]
    fn creates_the_user_and_hands_it_the_data_dir_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), Mode::Apply);
        let (cert, key) = (dir.path().join("gw.crt"), dir.path().join("gw.key"));
        std::fs::write(&cert, "CERT").unwrap();
        std::fs::write(&key, "KEY").unwrap();
        let mut site = super::super::tests::site();
        site.tls = GatewayTls::Files {
            cert: cert.to_str().unwrap().to_owned(),
            key: key.to_str().unwrap().to_owned(),
        };
        let files = files(&site, "listen = 1\n", &opts).unwrap();
        let host = Fake::new("staging");
        // First match wins, and the directory check also asks `id -u`.
        host.answer("find ", 0, "wrong\n");
        host.answer("id -u airlock", 1, "");
        let report = Report::new(Box::new(std::io::sink()), Mode::Apply);
        for spec in &files {
            ensure(&host, spec, Mode::Apply, &report).unwrap();
        }
        assert!(ensure_user(&host, &site.data_dir, Mode::Apply, &report).unwrap());
        assert!(ensure_data_dir(&host, &site.data_dir, Mode::Apply, &report).unwrap());
        let commands = host.commands();
        assert!(
            commands.iter().any(|c| c.starts_with("useradd --system")
                && c.contains("--shell /usr/sbin/nologin")
                && c.ends_with(" airlock")),
            "{commands:?}"
        );
        assert!(
            commands.iter().any(|c| c.contains("chown -R airlock:airlock")
                && c.contains("install -d -m 0700")),
            "{commands:?}"
        );
        let key = key.to_str().unwrap();
        assert_eq!(host.owner(key).unwrap(), "airlock:airlock");
        assert_eq!(host.mode(key), Some(airlock_remote::Mode(0o600)));
        assert_eq!(host.owner(cert.to_str().unwrap()).unwrap(), "root:root");
        assert_eq!(host.owner(UNIT).unwrap(), "root:root");
    }

    #[test]
    fn the_outbound_proxy_password_is_the_gateways_alone_and_never_reported() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), Mode::Apply);
        let ca = dir.path().join("site-proxy-ca.pem");
        std::fs::write(&ca, "PROXY CA").unwrap();
        let mut site = super::super::tests::site();
        site.upstream_proxy = Some(OutboundProxy {
            url: "http://proxy.example.edu:3128".parse().unwrap(),
            username: Some("airlock".to_owned()),
            password: Some(airlock_ansible::vault::Secret::Known("pr0xy-pw".to_owned())),
            no_proxy: Vec::new(),
            ca_file: Some(ca.to_str().unwrap().to_owned()),
        });
        let files = files(&site, "listen = 1\n", &opts).unwrap();
        let host = Fake::new("staging");
        let log = dir.path().join("report.txt");
        let report = Report::new(Box::new(std::fs::File::create(&log).unwrap()), Mode::Apply);
        for spec in &files {
            ensure(&host, spec, Mode::Apply, &report).unwrap();
        }
        drop(report);
        let password = UPSTREAM_PROXY_PASSWORD_FILE;
        assert_eq!(host.file(password).unwrap(), b"pr0xy-pw\n");
        assert_eq!(host.owner(password).unwrap(), "airlock:airlock");
        assert_eq!(host.mode(password), Some(airlock_remote::Mode(0o600)));
        let ca = ca.to_str().unwrap();
        assert_eq!(host.file(ca).unwrap(), b"PROXY CA");
        assert_eq!(host.owner(ca).unwrap(), "root:root");
        let shown = std::fs::read_to_string(&log).unwrap();
        assert!(shown.contains(password), "{shown}");
        assert!(!shown.contains("pr0xy-pw"), "{shown}");
        let commands = host.commands().join("\n");
        assert!(
            !commands.contains("pr0xy-pw"),
            "never on a command line: {commands}"
        );
    }

    /// A replica gets the site CA in a `data_dir/tls` that is the gateway's, before its
    /// gateway restarts, and its old server certificate record goes so the gateway issues a
    /// new one from that CA; a second run with the same CA changes nothing.
    #[test]
    fn a_replica_gets_the_site_ca_and_issues_its_certificate_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), Mode::Apply);
        let (_, mut site) = super::super::tests::replicated();
        site.storage = None;
        let ca = SiteCa {
            cert: b"SITE CA CERT\n".to_vec(),
            key: b"SITE CA KEY\n".to_vec(),
        };
        let mut files = files(&site, "listen = 1\n", &opts).unwrap();
        files.extend(site_ca_files(&site, &ca));
        let host = Fake::new("south.example.test");
        host.answer("find ", 0, "ok\n");
        // Its own CA from an earlier life as a lone gateway.
        host.put_with(
            "/var/lib/airlock/tls/ca.crt",
            "OLD CA",
            0o600,
            "airlock:airlock",
        );
        let report = Report::new(Box::new(std::io::sink()), Mode::Apply);
        install(&site, &host, &files, Mode::Apply, &report).unwrap();
        for (path, content) in [
            ("/var/lib/airlock/tls/ca.crt", "SITE CA CERT\n"),
            ("/var/lib/airlock/tls/ca.key", "SITE CA KEY\n"),
        ] {
            assert_eq!(host.file(path).unwrap(), content.as_bytes());
            assert_eq!(host.owner(path).unwrap(), "airlock:airlock");
            assert_eq!(host.mode(path), Some(airlock_remote::Mode(0o600)));
        }
        let commands = host.commands();
        let position = |needle: &str| {
            commands
                .iter()
                .position(|c| c.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in {commands:#?}"))
        };
        let log = host.log();
        let first_write = log
            .iter()
            .position(|l| l.starts_with("write /var/lib/airlock/tls/"))
            .unwrap();
        let tls_dir = log
            .iter()
            .position(|l| {
                l.contains("install -d -m 0700 -o airlock -g airlock /var/lib/airlock/tls")
            })
            .unwrap();
        assert!(tls_dir < first_write, "{log:#?}");
        assert!(
            position("rm -f /var/lib/airlock/tls/server.json") < position("systemctl restart"),
            "{commands:#?}"
        );

        let again = Fake::new("south.example.test");
        again.answer("find ", 0, "ok\n");
        for spec in &files {
            let super::super::files::Source::Text(text) = &spec.source else {
                continue;
            };
            let owner = spec
                .perms
                .owner
                .as_deref()
                .unwrap_or(super::super::files::ROOT);
            again.put_with(&spec.path, text.as_bytes(), spec.perms.mode.0, owner);
        }
        // The binary is the same too.
        again.put_with(BINARY, "airlock binary", 0o755, "root:root");
        install(&site, &again, &files, Mode::Apply, &report).unwrap();
        let commands = again.commands();
        assert!(
            commands
                .iter()
                .all(|c| !c.contains("server.json") && !c.contains("restart")),
            "{commands:#?}"
        );
    }

    /// The S3 credential files are copied from the control node, the gateway user's alone
    /// and never shown; one that cannot be read names its variable.
    #[test]
    fn s3_credential_files_are_the_gateways_alone() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), Mode::Apply);
        let (_, mut site) = super::super::tests::replicated();
        let secret = dir.path().join("s3.secret");
        std::fs::write(&secret, "s3-secret-key").unwrap();
        let storage = site.storage.as_mut().unwrap();
        storage.secret_access_key_file = Some(secret.clone());
        storage.access_key_id_file = None;
        let files = files(&site, "listen = 1\n", &opts).unwrap();
        let spec = files
            .iter()
            .find(|f| f.path == secret.to_str().unwrap())
            .expect("the secret key file is installed");
        assert!(spec.opaque);
        assert_eq!(spec.perms.owner.as_deref(), Some("airlock:airlock"));
        assert_eq!(spec.perms.mode, airlock_remote::Mode(0o600));

        site.storage.as_mut().unwrap().access_key_id_file = Some(dir.path().join("missing"));
        let err = files_err(&site, &opts);
        assert!(err.contains("airlock_s3_access_key_id_file"), "{err}");
    }

    fn files_err(site: &Site, opts: &Options) -> String {
        files(site, "", opts).unwrap_err().to_string()
    }

    #[test]
    fn paths_under_home_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), Mode::Apply);
        let mut site = super::super::tests::site();
        site.data_dir = "/home/ops/airlock".to_owned();
        let err = files(&site, "", &opts).unwrap_err().to_string();
        assert!(
            err.contains("airlock_data_dir") && err.contains("/home/ops/airlock"),
            "{err}"
        );
    }

    #[test]
    fn check_mode_reports_the_restart_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), Mode::Check);
        let site = super::super::tests::site();
        let staging = site.staging.clone().unwrap();
        let host = Fake::new("staging");
        host.answer("is-active", 3, "");
        host.answer("find ", 0, "ok\n");
        let files = files(&site, "listen = 1\n", &opts).unwrap();
        let report = Report::new(Box::new(std::io::sink()), Mode::Check);
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
