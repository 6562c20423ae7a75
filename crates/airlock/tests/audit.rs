//! The audit trail after a mixed run of real clients against real upstreams: exactly one
//! `fetch` line per request the upstream's own access log shows (Debian's `docker-registry`
//! behind an OCI proxy, Python's `http.server` behind a raw proxy), each naming the client
//! that caused it; one `egress` line per egress decision; and `airlock audit` printing and
//! filtering it.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use airlock_audit::{Kind, Record};
use airlock_testkit::{
    DockerRegistry, Image, StaticFiles, free_port, require_tool, run, serve_airlock, wait_until,
};

/// `(method, path)` of an access-log line: `… "GET /path HTTP/1.1" …`.
fn request_of(line: &str) -> (String, String) {
    let quoted = line.split('"').nth(1).unwrap_or_else(|| panic!("{line}"));
    let mut parts = quoted.split(' ');
    let method = parts.next().unwrap().to_owned();
    let path = parts.next().unwrap().to_owned();
    (method, path)
}

/// `(method, path)` of a fetch record: its item is the upstream URL (query shown as `?…`).
fn fetched(record: &Record) -> (String, String) {
    let url = record.item.as_deref().unwrap();
    let after_scheme = url.split_once("://").unwrap().1;
    let path = &after_scheme[after_scheme.find('/').unwrap()..];
    (
        record.action.clone().unwrap(),
        path.trim_end_matches("?…").to_owned(),
    )
}

fn counted(
    requests: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<(String, String), u32> {
    let mut counts = BTreeMap::new();
    for request in requests {
        *counts.entry(request).or_default() += 1;
    }
    counts
}

fn trail(path: &Path) -> Vec<Record> {
    let (records, bad) =
        airlock_audit::read_last(path, &airlock_audit::Filter::default(), usize::MAX).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    records
}

fn airlock_audit(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("audit")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn one_audit_line_per_upstream_request_and_per_egress_decision() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let skopeo = require_tool("skopeo", "skopeo");
    let curl = require_tool("curl", "curl");

    // The OCI upstream, holding one image pushed by skopeo (before the gateway runs: those
    // requests are the test's, not the gateway's).
    let registry = DockerRegistry::start(dir);
    let image = Image::random(&[300_000, 200_000]);
    registry.push(&image, dir, "library/alpine", "3.20");
    let pushed = registry.requests().len();

    // The raw upstream: a static file server that logs every request it answers.
    let files = dir.join("files");
    std::fs::create_dir_all(files.join("tools")).unwrap();
    std::fs::write(files.join("tools/kit.tar.gz"), vec![7u8; 50_000]).unwrap();
    let files_log = dir.join("files.log");
    let files_server = StaticFiles::start(&files, &files_log);
    let files_port = files_server.port;

    let port = free_port();
    let egress_port = free_port();
    let config = dir.join("airlock.toml");
    let audit_path = dir.join("log/audit.jsonl");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\n[tls]\nmode = \"off\"\n\
             [audit]\npath = {audit_path:?}\n\
             [[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{}\"\ntag_ttl = \"0s\"\n\
             [[proxy]]\nname = \"files\"\nformat = \"raw\"\nupstream = \"http://127.0.0.1:{files_port}/\"\n\
             [egress]\nlisten = \"127.0.0.1:{egress_port}\"\nallow = [\"idp.example.org\"]\n",
            dir.join("data"),
            registry.url(),
        ),
    )
    .unwrap();
    let _gateway = serve_airlock(
        Path::new(env!("CARGO_BIN_EXE_airlock")),
        &config,
        &dir.join("airlock.log"),
        port,
    );

    // A mixed run: a cold and a warm image pull (the warm one revalidates the tag), a file
    // fetched twice, a file the upstream does not have, a tunnel refused.
    for n in 0..2 {
        run(Command::new(&skopeo)
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://127.0.0.1:{port}/hub/library/alpine:3.20"))
            .arg(format!("dir:{}", dir.join(format!("pulled-{n}")).display())));
    }
    for _ in 0..2 {
        let body = run(Command::new(&curl).args(["-sSf"]).arg(format!(
            "http://127.0.0.1:{port}/repository/files/tools/kit.tar.gz"
        )))
        .stdout;
        assert_eq!(body.len(), 50_000);
    }
    let missing = Command::new(&curl)
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!(
            "http://127.0.0.1:{port}/repository/files/tools/none.tar.gz"
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&missing.stdout), "404");
    let refused = Command::new(&curl)
        .args(["-sS", "-p", "-x"])
        .arg(format!("http://127.0.0.1:{egress_port}"))
        .arg(format!("http://elsewhere.invalid:{files_port}/"))
        .output()
        .unwrap();
    assert!(!refused.status.success());

    // Give the egress server a moment to write the refused connection's line.
    wait_until("the egress line", Duration::from_secs(10), || {
        trail(&audit_path).iter().any(|r| r.kind == Kind::Egress)
    });
    let records = trail(&audit_path);

    // OCI: the upstream's access log and the trail name the same requests, once each.
    let upstream: Vec<_> = registry.requests()[pushed..]
        .iter()
        .map(|l| request_of(l))
        .collect();
    let audited: Vec<_> = records
        .iter()
        .filter(|r| r.kind == Kind::Fetch && r.proxy.as_deref() == Some("hub"))
        .map(fetched)
        .collect();
    assert!(
        audited
            .iter()
            .any(|(_, path)| path.contains("/blobs/sha256:"))
    );
    assert_eq!(counted(audited), counted(upstream));

    // Raw: the same against the file server's log.
    let log = std::fs::read_to_string(&files_log).unwrap();
    let upstream: Vec<_> = log
        .lines()
        .filter(|l| l.contains("\" 200 ") || l.contains("\" 404 ") || l.contains("\" 304 "))
        .map(request_of)
        .collect();
    let audited: Vec<_> = records
        .iter()
        .filter(|r| r.kind == Kind::Fetch && r.proxy.as_deref() == Some("files"))
        .map(fetched)
        .collect();
    assert_eq!(counted(audited), counted(upstream), "{log}");

    // Every fetch names its client and request, and what it got.
    for r in records.iter().filter(|r| r.kind == Kind::Fetch) {
        assert_eq!(r.client.as_deref(), Some("127.0.0.1"), "{r:?}");
        assert!(r.request_id.is_some() && r.status.is_some(), "{r:?}");
        assert!(humantime::parse_rfc3339(&r.time).is_ok(), "{r:?}");
    }
    let blob = records
        .iter()
        .find(|r| r.item.as_deref().is_some_and(|i| i.contains("/blobs/")))
        .unwrap();
    assert!(
        blob.digest
            .as_deref()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    let missing = records
        .iter()
        .find(|r| {
            r.item
                .as_deref()
                .is_some_and(|i| i.ends_with("none.tar.gz"))
        })
        .unwrap();
    assert_eq!(
        (missing.status, missing.result.as_str()),
        (Some(404), "error")
    );

    // Egress: the refusal with its reason (allowed tunnels, which need a name this machine
    // resolves, are audited in the egress crate's tests).
    let egress: Vec<&Record> = records.iter().filter(|r| r.kind == Kind::Egress).collect();
    assert_eq!(egress.len(), 1, "{egress:?}");
    let denied = egress[0];
    assert_eq!((denied.result.as_str(), denied.status), ("deny", Some(403)));
    assert_eq!(
        denied.item.as_deref(),
        Some(format!("elsewhere.invalid:{files_port}").as_str())
    );
    assert_eq!(denied.reason.as_deref(), Some("not_allowlisted"));

    // The command line: filters, JSON, and a clear error for a bad --since.
    let hub_fetches = records
        .iter()
        .filter(|r| r.kind == Kind::Fetch && r.proxy.as_deref() == Some("hub"))
        .count();
    let out = airlock_audit(
        &config,
        &["--kind", "fetch", "--proxy", "hub", "--since", "1h"],
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), hub_fetches, "{text}");
    assert!(
        text.lines()
            .all(|l| l.contains(" fetch ") && l.contains("proxy=hub")),
        "{text}"
    );
    let out = airlock_audit(&config, &["--json", "--kind", "egress", "--last", "1"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let last: Record = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(&last, *egress.last().unwrap());
    let out = airlock_audit(&config, &["--item", "none.tar.gz"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    let out = airlock_audit(&config, &["--since", "last tuesday"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a duration"));
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["audit", "--file"])
        .arg(dir.join("nothing.jsonl"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no audit trail"));
}
