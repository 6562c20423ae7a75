//! The pypi format at `/repository/<name>/simple/`: PEP 503 HTML and PEP 691 JSON by
//! `Accept` against an in-process index, file URLs rewritten and verified, PEP 658 metadata,
//! yanking and PEP 700 fields kept, hostile pages and names, and a real `pip` installing a
//! small tree of wheels and an sdist it builds (via `--index-url`), then again through a `pip.conf` with the
//! upstream stopped.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use airlock_testkit::{Dist, FakePypi};
use airlock_types::Digest;

const JSON: &str = "application/vnd.pypi.simple.v1+json";
const PIP_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";

async fn start(dir: &std::path::Path, upstream: &FakePypi, extra: &str) -> SocketAddr {
    common::start(
        dir,
        &format!(
            "[[proxy]]\nname = \"pypi-proxy\"\nformat = \"pypi\"\nupstream = \"{}\"\n{extra}\n",
            upstream.url()
        ),
    )
    .await
}

use common::{client, get_accepting as get};

fn sample(upstream: &FakePypi) -> (Vec<u8>, Vec<u8>) {
    let wheel = b"PK stand-in for a wheel".to_vec();
    let metadata = b"Metadata-Version: 2.1\nName: alpha\nVersion: 1.0\n".to_vec();
    upstream.add(
        "alpha",
        Dist {
            requires_python: Some(">=3.8".into()),
            metadata: Some(metadata.clone()),
            ..Dist::new("alpha-1.0-py3-none-any.whl", &wheel)
        },
    );
    upstream.add(
        "alpha",
        Dist {
            yanked: Some("broken build".into()),
            ..Dist::new("alpha-0.9.tar.gz", b"old sdist")
        },
    );
    (wheel, metadata)
}

#[tokio::test]
async fn json_and_html_by_accept_each_cached_with_vary() {
    let upstream = FakePypi::start().await;
    let (wheel, metadata) = sample(&upstream);
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream, "").await;
    let page = format!("http://{addr}/repository/pypi-proxy/simple/alpha/");

    let first = get(&page, Some(PIP_ACCEPT)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], JSON);
    assert_eq!(first.headers()["vary"], "Accept");
    assert_eq!(first.headers()["x-airlock-cache"], "miss");
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["name"], "alpha");
    assert_eq!(body["meta"]["api-version"], "1.1");
    assert_eq!(body["versions"], serde_json::json!(["1.0", "0.9"]));
    let wheel_hex = Digest::of(&wheel).hex().to_owned();
    let file = &body["files"][0];
    assert_eq!(
        file["url"],
        format!("/repository/pypi-proxy/packages/alpha/{wheel_hex}/alpha-1.0-py3-none-any.whl")
    );
    assert_eq!(file["hashes"], serde_json::json!({ "sha256": wheel_hex }));
    assert_eq!(file["requires-python"], ">=3.8");
    assert_eq!(file["size"], wheel.len());
    assert_eq!(file["upload-time"], "2024-05-01T12:00:00.000000Z");
    let metadata_hash = serde_json::json!({ "sha256": Digest::of(&metadata).hex() });
    assert_eq!(file["core-metadata"], metadata_hash);
    assert_eq!(file["dist-info-metadata"], metadata_hash);
    assert_eq!(body["files"][1]["yanked"], "broken build");
    assert!(body["files"][1].get("core-metadata").is_none());

    let html = get(&page, Some("text/html")).await;
    assert_eq!(html.headers()["content-type"], "text/html");
    assert_eq!(html.headers()["vary"], "Accept");
    assert_eq!(
        html.headers()["x-airlock-cache"],
        "miss",
        "each representation is cached on its own"
    );
    let html = html.text().await.unwrap();
    assert!(
        html.contains(&format!(
            "<a href=\"/repository/pypi-proxy/packages/alpha/{wheel_hex}/alpha-1.0-py3-none-any.whl#sha256={wheel_hex}\" data-requires-python=\"&gt;=3.8\" data-core-metadata=\"sha256={0}\" data-dist-info-metadata=\"sha256={0}\">alpha-1.0-py3-none-any.whl</a>",
            Digest::of(&metadata).hex()
        )),
        "{html}"
    );
    assert!(html.contains("data-yanked=\"broken build\">alpha-0.9.tar.gz</a>"));

    for accept in [Some(PIP_ACCEPT), Some("text/html"), None] {
        let again = get(&page, accept).await;
        assert_eq!(again.headers()["x-airlock-cache"], "hit", "{accept:?}");
    }
    assert_eq!(upstream.count("simple/alpha/"), 2);
    let accepts = upstream.accepts("simple/alpha/");
    assert!(
        accepts[0].starts_with(JSON)
            && accepts[1].starts_with("application/vnd.pypi.simple.v1+html")
    );

    let etag = get(&page, Some(PIP_ACCEPT)).await.headers()["etag"].clone();
    let not_modified = client()
        .get(&page)
        .header("accept", PIP_ACCEPT)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304, "clients' own caches work");

    let pep691_html = get(&page, Some("application/vnd.pypi.simple.v1+html")).await;
    assert_eq!(
        pep691_html.headers()["content-type"],
        "application/vnd.pypi.simple.v1+html"
    );
    let refused = get(&page, Some("application/xml")).await;
    assert_eq!(refused.status(), 406);

    let root = get(
        &format!("http://{addr}/repository/pypi-proxy/simple/"),
        Some(JSON),
    )
    .await;
    assert_eq!(root.headers()["vary"], "Accept");
    let root: serde_json::Value = root.json().await.unwrap();
    assert_eq!(root["projects"], serde_json::json!([{ "name": "alpha" }]));
    let root_html = get(
        &format!("http://{addr}/repository/pypi-proxy/simple/"),
        None,
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        root_html.contains("<a href=\"alpha/\">alpha</a>"),
        "{root_html}"
    );
}

#[tokio::test]
async fn files_and_metadata_are_verified_and_immutable() {
    let upstream = FakePypi::start().await;
    let (wheel, metadata) = sample(&upstream);
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream, "").await;
    let hex = Digest::of(&wheel).hex().to_owned();
    let url = format!(
        "http://{addr}/repository/pypi-proxy/packages/alpha/{hex}/alpha-1.0-py3-none-any.whl"
    );
    for expected in ["miss", "hit"] {
        let response = get(&url, None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-airlock-cache"], expected);
        assert_eq!(response.bytes().await.unwrap(), wheel);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(upstream.count("files/alpha-1.0-py3-none-any.whl"), 1);
    let meta = get(&format!("{url}.metadata"), None).await;
    assert_eq!(meta.status(), 200);
    assert_eq!(meta.bytes().await.unwrap(), metadata);

    // A sha256 the index does not list, a name that differs, a file without metadata.
    let zeros = "0".repeat(64);
    for (path, status) in [
        (
            format!("packages/alpha/{zeros}/alpha-1.0-py3-none-any.whl"),
            404,
        ),
        (
            format!("packages/alpha/{hex}/other-1.0-py3-none-any.whl"),
            404,
        ),
        (
            format!("packages/Alpha/{hex}/alpha-1.0-py3-none-any.whl"),
            400,
        ),
        (
            format!(
                "packages/alpha/{}/alpha-1.0-py3-none-any.whl",
                hex.to_uppercase()
            ),
            400,
        ),
        (
            format!(
                "packages/alpha/{}/alpha-0.9.tar.gz.metadata",
                Digest::of(b"old sdist").hex()
            ),
            404,
        ),
    ] {
        let response = get(&format!("http://{addr}/repository/pypi-proxy/{path}"), None).await;
        assert_eq!(response.status(), status, "{path}");
    }
}

#[tokio::test]
async fn a_file_that_does_not_match_its_index_is_an_error_and_never_cached() {
    let upstream = FakePypi::start().await;
    let (wheel, _) = sample(&upstream);
    upstream.tamper("alpha-1.0-py3-none-any.whl", b"PK evil wheel");
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream, "").await;
    let url = format!(
        "http://{addr}/repository/pypi-proxy/packages/alpha/{}/alpha-1.0-py3-none-any.whl",
        Digest::of(&wheel).hex()
    );
    for _ in 0..2 {
        let response = get(&url, None).await;
        let cache = response.headers().get("x-airlock-cache").cloned();
        let body = response.bytes().await;
        assert!(
            body.is_err() || body.unwrap().as_ref() != b"PK evil wheel",
            "a mismatch never arrives whole"
        );
        assert_ne!(
            cache.as_ref().map(reqwest::header::HeaderValue::as_bytes),
            Some(&b"hit"[..])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        upstream.count("files/alpha-1.0-py3-none-any.whl"),
        2,
        "nothing was cached, so the second request went upstream again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_upstream_fetch() {
    let upstream = FakePypi::start().await;
    let (wheel, _) = sample(&upstream);
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream, "").await;
    let page = format!("http://{addr}/repository/pypi-proxy/simple/alpha/");
    let file = format!(
        "http://{addr}/repository/pypi-proxy/packages/alpha/{}/alpha-1.0-py3-none-any.whl",
        Digest::of(&wheel).hex()
    );
    for url in [page, file] {
        let requests: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { get(&url, Some(JSON)).await.bytes().await.unwrap() })
            })
            .collect();
        for request in requests {
            assert!(!request.await.unwrap().is_empty());
        }
    }
    assert_eq!(upstream.count("simple/alpha/"), 1);
    assert_eq!(upstream.count("files/alpha-1.0-py3-none-any.whl"), 1);
}

#[tokio::test]
async fn project_names_are_normalized_with_redirects_and_checked() {
    let upstream = FakePypi::start().await;
    sample(&upstream);
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream, "").await;
    for (path, location) in [
        ("simple/Alpha/", "simple/alpha/"),
        ("simple/zope.Interface__x/", "simple/zope-interface-x/"),
        ("simple/alpha", "simple/alpha/"),
        ("simple", "simple/"),
    ] {
        let response = get(&format!("http://{addr}/repository/pypi-proxy/{path}"), None).await;
        assert_eq!(response.status(), 301, "{path}");
        assert_eq!(
            response.headers()["location"],
            format!("/repository/pypi-proxy/{location}").as_str()
        );
    }
    for (path, status) in [
        ("/repository/pypi-proxy/simple/../../etc/passwd/", 400),
        ("/repository/pypi-proxy/simple/%2e%2e/", 400),
        ("/repository/pypi-proxy/simple/a%2fb/", 400),
        ("/repository/pypi-proxy/simple/-alpha/", 400),
        ("/repository/pypi-proxy/simple/al~pha/", 400),
        ("/repository/pypi-proxy/simple/nothere/", 404),
        ("/repository/pypi-proxy/elsewhere", 404),
    ] {
        let answer = common::raw_get(addr, path).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {answer}"
        );
    }
    assert_eq!(upstream.count("etc/passwd/"), 0);
}

#[tokio::test]
async fn hostile_pages_are_errors_and_never_cached() {
    let upstream = FakePypi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream, "metadata_ttl = \"1h\"").await;
    let oversized = vec![b'a'; 33 * 1024 * 1024];
    for (project, content_type, body) in [
        ("html", "text/html", &b"<html><a href=\"x.whl"[..]),
        (
            "types",
            JSON,
            br#"{"files":[{"filename":7,"url":"x","hashes":{}}]}"#,
        ),
        ("notjson", JSON, b"{\"files\": ["),
        ("big", "text/html", &oversized),
    ] {
        let path = format!("simple/{project}/");
        upstream.put_page(&path, content_type, body);
        let url = format!("http://{addr}/repository/pypi-proxy/{path}");
        let response = get(&url, Some(JSON)).await;
        assert_eq!(response.status(), 502, "{project}");
        let text = response.text().await.unwrap();
        assert!(text.contains("pypi-proxy"), "{text}");
        // A good page now: fetched (nothing bad was cached despite the 1h TTL).
        upstream.put_page(
            &path,
            JSON,
            br#"{"meta":{"api-version":"1.0"},"name":"x","files":[]}"#,
        );
        let fixed = get(&url, Some(JSON)).await;
        assert_eq!(fixed.status(), 200, "{project}");
        assert_eq!(fixed.headers()["x-airlock-cache"], "miss");
    }

    // A bad page after a good one: the good one is served stale.
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream, "metadata_ttl = \"0s\"").await;
    let url = format!("http://{addr}/repository/pypi-proxy/simple/html/");
    assert_eq!(get(&url, Some(JSON)).await.status(), 200);
    upstream.put_page("simple/html/", JSON, b"[1, 2");
    let stale = get(&url, Some(JSON)).await;
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["x-airlock-cache"], "stale");
}

#[tokio::test]
async fn unverifiable_files_and_metadata_are_not_advertised() {
    let upstream = FakePypi::start().await;
    let hex = Digest::of(b"w").hex().to_owned();
    upstream.put_page(
        "simple/beta/",
        "text/html",
        format!(
            "<a href=\"/f/beta-1.0.tar.gz#md5=abc\">beta-1.0.tar.gz</a>\n\
             <a href=\"/f/beta-1.1-py3-none-any.whl#sha256={hex}\" data-dist-info-metadata=\"true\">beta-1.1-py3-none-any.whl</a>\n\
             <a href=\"ftp://f/beta-1.2.tar.gz#sha256={hex}\">beta-1.2.tar.gz</a>\n\
             <a href=\"/f/x#sha256={hex}\">../../etc/passwd</a>"
        )
        .as_bytes(),
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream, "").await;
    let url = format!("http://{addr}/repository/pypi-proxy/simple/beta/");
    let body: serde_json::Value = get(&url, Some(JSON)).await.json().await.unwrap();
    let files = body["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{body}");
    assert_eq!(files[0]["filename"], "beta-1.1-py3-none-any.whl");
    assert!(files[0].get("core-metadata").is_none());
    assert!(files[0].get("dist-info-metadata").is_none());
    let html = get(&url, None).await.text().await.unwrap();
    assert!(!html.contains("metadata"), "{html}");
}

#[tokio::test]
async fn an_html_only_upstream_still_serves_json_clients() {
    let upstream = FakePypi::start().await;
    let (wheel, _) = sample(&upstream);
    upstream.html_only(true);
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream, "").await;
    let url = format!("http://{addr}/repository/pypi-proxy/simple/alpha/");
    let body: serde_json::Value = get(&url, Some(PIP_ACCEPT)).await.json().await.unwrap();
    assert_eq!(
        body["files"][0]["hashes"]["sha256"],
        Digest::of(&wheel).hex()
    );
    assert_eq!(body["files"][1]["yanked"], "broken build");
    let file = body["files"][0]["url"].as_str().unwrap();
    let response = get(&format!("http://{addr}{file}"), None).await;
    assert_eq!(response.status(), 200, "relative upstream URLs resolve");
    assert_eq!(response.bytes().await.unwrap(), wheel);
}

/// Builds `name-version-py3-none-any.whl` files with Python's zipfile.
const WHEEL_BUILDER: &str = r#"
import base64, hashlib, os, sys, zipfile
out = sys.argv[1]
def wheel(name, version, requires=()):
    dist = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": metadata,
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: airlock-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    filename = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(out, filename), "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    with open(os.path.join(out, filename + ".metadata"), "w") as f:
        f.write(metadata)
wheel("alpha", "1.0", ["beta>=1.0", "gamma"])
wheel("beta", "1.0")
wheel("beta", "2.0")
wheel("gamma", "0.5", ["beta", "delta"])

# delta is an sdist: pip builds it with an in-tree PEP 517 backend that needs nothing else.
import io, tarfile
BACKEND = """
import base64, hashlib, os, zipfile
NAME, VERSION = "delta", "0.3"
def get_requires_for_build_wheel(config_settings=None):
    return []
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    dist = f"{NAME}-{VERSION}.dist-info"
    with open(os.path.join(NAME, "__init__.py")) as f:
        files = {f"{NAME}/__init__.py": f.read()}
    files[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n"
    files[f"{dist}/WHEEL"] = "Wheel-Version: 1.0\\nGenerator: delta-backend\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\\n".join(record) + "\\n"
    filename = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return filename
"""
sdist_files = {
    "delta-0.3/PKG-INFO": "Metadata-Version: 2.1\nName: delta\nVersion: 0.3\n",
    "delta-0.3/pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
    "delta-0.3/backend.py": BACKEND,
    "delta-0.3/delta/__init__.py": "VERSION = '0.3'  # built from the sdist\n",
}
with tarfile.open(os.path.join(out, "delta-0.3.tar.gz"), "w:gz") as t:
    for path, text in sdist_files.items():
        data = text.encode()
        info = tarfile.TarInfo(path)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
"#;

/// How pip is pointed at the gateway: `--index-url`, or a `pip.conf` (the index is then the
/// only configuration pip reads either way).
enum Index {
    Flag(String),
    Config(std::path::PathBuf),
}

fn pip(args: &[&str], index: &Index) -> std::process::Output {
    let mut command = std::process::Command::new("python3");
    command.args(["-m", "pip"]).args(args);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("PIP_") || key.to_ascii_lowercase().ends_with("_proxy") {
            command.env_remove(key);
        }
    }
    match index {
        Index::Flag(url) => command
            .env("PIP_CONFIG_FILE", "/dev/null")
            .args(["--index-url", url]),
        Index::Config(file) => command.env("PIP_CONFIG_FILE", file),
    };
    command.env("NO_PROXY", "*").args([
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-input",
        "--retries",
        "0",
        "--timeout",
        "20",
    ]);
    command.output().expect("run python3 -m pip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_installs_a_tree_of_wheels_then_again_with_the_upstream_stopped() {
    let version = std::process::Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "`python3 -m pip` is not available: apt-get install python3-pip (run scripts/test.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let wheels = dir.path().join("wheels");
    std::fs::create_dir(&wheels).unwrap();
    let built = std::process::Command::new("python3")
        .args(["-c", WHEEL_BUILDER])
        .arg(&wheels)
        .status()
        .unwrap();
    assert!(built.success());
    let upstream = FakePypi::start().await;
    let sdist = std::fs::read(wheels.join("delta-0.3.tar.gz")).unwrap();
    upstream.add(
        "delta",
        Dist {
            requires_python: Some(">=3.7".into()),
            ..Dist::new("delta-0.3.tar.gz", &sdist)
        },
    );
    for (project, version, yanked) in [
        ("alpha", "1.0", None),
        ("beta", "1.0", None),
        ("beta", "2.0", Some("")),
        ("gamma", "0.5", None),
    ] {
        let filename = format!("{project}-{version}-py3-none-any.whl");
        let bytes = std::fs::read(wheels.join(&filename)).unwrap();
        let metadata = std::fs::read(wheels.join(format!("{filename}.metadata"))).unwrap();
        upstream.add(
            project,
            Dist {
                yanked: yanked.map(str::to_owned),
                requires_python: Some(">=3.7".into()),
                metadata: Some(metadata),
                ..Dist::new(&filename, &bytes)
            },
        );
    }
    let addr = start(dir.path(), &upstream, "metadata_ttl = \"0s\"").await;
    let index = format!("http://{addr}/repository/pypi-proxy/simple/");

    let run = |args: Vec<String>, index: Index| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            pip(&args, &index)
        })
    };
    let downloads = dir.path().join("downloads");
    let output = run(
        vec![
            "download".into(),
            "--dest".into(),
            downloads.display().to_string(),
            "Alpha".into(),
        ],
        Index::Flag(index.clone()),
    )
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "pip download: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut got: Vec<String> = std::fs::read_dir(&downloads)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "alpha-1.0-py3-none-any.whl",
            "beta-1.0-py3-none-any.whl",
            "delta-0.3.tar.gz",
            "gamma-0.5-py3-none-any.whl"
        ],
        "the yanked beta 2.0 is not chosen"
    );
    assert!(
        upstream.count("files/alpha-1.0-py3-none-any.whl.metadata") >= 1,
        "PEP 658 used"
    );

    drop(upstream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let page = get(&format!("{index}beta/"), Some(PIP_ACCEPT)).await;
    assert_eq!(
        page.headers()["x-airlock-cache"],
        "stale",
        "the upstream is gone"
    );
    let target = dir.path().join("target");
    let config = dir.path().join("pip.conf");
    std::fs::write(&config, format!("[global]\nindex-url = {index}\n")).unwrap();
    let output = run(
        vec![
            "install".into(),
            "--no-compile".into(),
            "--target".into(),
            target.display().to_string(),
            "alpha".into(),
        ],
        Index::Config(config),
    )
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "pip install with the upstream stopped: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("delta/__init__.py")).unwrap(),
        "VERSION = '0.3'  # built from the sdist\n",
        "pip built the sdist it got through the gateway"
    );
    for package in ["alpha", "beta", "gamma", "delta"] {
        assert!(
            target.join(package).join("__init__.py").is_file(),
            "{package}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(target.join("beta/__init__.py")).unwrap(),
        "VERSION = '1.0'\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_root_requests_parse_the_root_page_once_per_representation() {
    let upstream = FakePypi::start().await;
    // A root page large enough that parsing it takes a while.
    let mut html = String::from("<!DOCTYPE html><html><body>\n");
    for i in 0..50_000 {
        use std::fmt::Write as _;
        writeln!(html, "<a href=\"/simple/project-{i}/\">Project_{i}</a>").unwrap();
    }
    html.push_str("</body></html>\n");
    upstream.put_page("simple/", "text/html", html.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let name = "pypi-root-once";
    let (addr, packages) = common::start_with_packages(
        dir.path(),
        &format!(
            "[[proxy]]\nname = \"{name}\"\nformat = \"pypi\"\nupstream = \"{}\"\n",
            upstream.url()
        ),
    )
    .await;
    let url = format!("http://{addr}/repository/{name}/simple/");
    let requests: Vec<_> = (0..24)
        .map(|i| {
            let url = url.clone();
            let accept = if i % 2 == 0 { JSON } else { "text/html" };
            tokio::spawn(async move {
                let response = get(&url, Some(accept)).await;
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap()
            })
        })
        .collect();
    let mut bodies = std::collections::HashSet::new();
    for request in requests {
        bodies.insert(request.await.unwrap());
    }
    assert_eq!(bodies.len(), 2, "one JSON and one HTML rendering");
    assert!(
        bodies
            .iter()
            .all(|b| String::from_utf8_lossy(b).contains("49999"))
    );
    // And again, all from what was derived.
    for accept in [JSON, "text/html"] {
        assert_eq!(get(&url, Some(accept)).await.status(), 200);
    }
    let stats = packages.derived_stats(name);
    let root = stats.iter().find(|t| t.name == "pypi-root").unwrap();
    assert_eq!(
        root.computed, 2,
        "parsed once per representation: {stats:?}"
    );
    assert!(root.kept <= root.capacity, "{stats:?}");
    assert_eq!(upstream.count("simple/"), 2, "one fetch per representation");
}
