//! pip against an offline `pypi` proxy: of a project with two versions upstream, the one
//! fetched before is the one pip installs; pages and the root list only held files.

#![allow(clippy::unnecessary_debug_formatting)]

use std::path::Path;
use std::process::Command;

use airlock_testkit::{Dist, FakePypi};
use airlock_types::Digest;

use super::{shown, start, unreachable};
use crate::common::{self, get_accepting as get};

const PROXY: &str = "name = \"pypi-proxy\"\nformat = \"pypi\"";
const JSON: &str = "application/vnd.pypi.simple.v1+json";

/// Builds `beta-1.0` and `beta-2.0` wheels (and `other-1.0`) with Python's zipfile.
const WHEELS: &str = r#"
import base64, hashlib, os, sys, zipfile
out = sys.argv[1]
def wheel(name, version):
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: airlock-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(os.path.join(out, f"{name}-{version}-py3-none-any.whl"), "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
wheel("beta", "1.0")
wheel("beta", "2.0")
wheel("other", "1.0")
"#;

fn pip(args: &[&str], index: &str) -> std::process::Output {
    let mut command = Command::new("python3");
    command.args(["-m", "pip"]).args(args);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("PIP_") || key.to_ascii_lowercase().ends_with("_proxy") {
            command.env_remove(key);
        }
    }
    command
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("NO_PROXY", "*")
        .args(["--index-url", index])
        .args([
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

async fn pip_async(args: Vec<String>, index: String) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        pip(&args, &index)
    })
    .await
    .unwrap()
}

fn wheels(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("wheels");
    std::fs::create_dir_all(&out).unwrap();
    let built = Command::new("python3")
        .args(["-c", WHEELS])
        .arg(&out)
        .output()
        .expect("python3 runs");
    assert!(built.status.success(), "{}", shown(&built));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_resolves_to_the_version_fetched_before() {
    let version = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "`python3 -m pip` is not available: apt-get install python3-pip (run scripts/test.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let built = wheels(dir.path());
    let upstream = FakePypi::start().await;
    let file = |name: &str| std::fs::read(built.join(name)).unwrap();
    for (project, name) in [
        ("beta", "beta-1.0-py3-none-any.whl"),
        ("beta", "beta-2.0-py3-none-any.whl"),
        ("other", "other-1.0-py3-none-any.whl"),
    ] {
        upstream.add(project, Dist::new(name, &file(name)));
    }

    // Online: pip fetches beta 1.0 only (and looks at other's page, fetching no file).
    let online = start(dir.path(), PROXY, &upstream.url(), false).await;
    let index = format!("http://{}/repository/pypi-proxy/simple/", online.addr);
    let downloads = dir.path().join("downloads");
    let output = pip_async(
        vec![
            "download".into(),
            "--no-deps".into(),
            "--dest".into(),
            downloads.display().to_string(),
            "beta==1.0".into(),
        ],
        index.clone(),
    )
    .await;
    assert!(output.status.success(), "pip download: {}", shown(&output));
    let page = get(&format!("{index}other/"), Some(JSON)).await;
    assert_eq!(page.status(), 200);
    assert_eq!(upstream.count("files/beta-2.0-py3-none-any.whl"), 0);
    online.stop().await;
    drop(upstream);

    // Offline, the upstream unreachable: plain pip against the proxy's index.
    let offline = start(dir.path(), PROXY, &unreachable(""), true).await;
    let index = format!("http://{}/repository/pypi-proxy/simple/", offline.addr);
    let body: serde_json::Value = get(&format!("{index}beta/"), Some(JSON))
        .await
        .json()
        .await
        .unwrap();
    let files: Vec<&str> = body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["beta-1.0-py3-none-any.whl"], "{body}");
    assert!(body.get("versions").is_none(), "{body}");
    // The page was cached as JSON; an HTML client gets the same held files.
    let html = get(&format!("{index}beta/"), Some("text/html"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("beta-1.0-py3-none-any.whl"), "{html}");
    assert!(!html.contains("beta-2.0"), "{html}");
    let other: serde_json::Value = get(&format!("{index}other/"), Some(JSON))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        other["files"],
        serde_json::json!([]),
        "nothing of it is held"
    );
    let root: serde_json::Value = get(&index, Some(JSON)).await.json().await.unwrap();
    assert_eq!(root["projects"], serde_json::json!([{ "name": "beta" }]));
    let root_html = get(&index, None).await.text().await.unwrap();
    assert!(
        root_html.contains(">beta</a>") && !root_html.contains("other"),
        "{root_html}"
    );

    let target = dir.path().join("target");
    let output = pip_async(
        vec![
            "install".into(),
            "--no-compile".into(),
            "--target".into(),
            target.display().to_string(),
            "beta".into(),
        ],
        index.clone(),
    )
    .await;
    assert!(
        output.status.success(),
        "pip install offline: {}",
        shown(&output)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("beta/__init__.py")).unwrap(),
        "VERSION = '1.0'\n"
    );
    // What is not held cannot be resolved, and pip says so rather than failing a download.
    let output = pip_async(
        vec![
            "install".into(),
            "--target".into(),
            dir.path().join("t2").display().to_string(),
            "beta>=2".into(),
        ],
        index,
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("No matching distribution found for beta>=2"),
        "{}",
        shown(&output)
    );
    let hex = Digest::of(&file("beta-2.0-py3-none-any.whl"))
        .hex()
        .to_owned();
    let unheld = common::get(&format!(
        "http://{}/repository/pypi-proxy/packages/beta/{hex}/beta-2.0-py3-none-any.whl",
        offline.addr
    ))
    .await;
    assert_eq!(unheld.status(), 404);
    offline.stop().await;
}
