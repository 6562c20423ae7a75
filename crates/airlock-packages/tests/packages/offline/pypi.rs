//! pip against an offline `pypi` proxy: of a project with two versions upstream, the one
//! fetched before is the one pip installs; pages and the root list only held files.

#![allow(clippy::unnecessary_debug_formatting)]

use std::path::Path;

use airlock_testkit::wheel::{build_wheels, pip, require_pip};
use airlock_testkit::{Dist, FakePypi};
use airlock_types::Digest;

use super::{shown, start, unreachable};
use crate::common::{self, get_accepting as get};

const PROXY: &str = "name = \"pypi-proxy\"\nformat = \"pypi\"";
const JSON: &str = "application/vnd.pypi.simple.v1+json";

async fn pip_async(args: Vec<String>, index: String) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        pip(&args, &index)
    })
    .await
    .unwrap()
}

fn wheels(dir: &Path) -> std::path::PathBuf {
    build_wheels(dir, &[("beta", "1.0"), ("beta", "2.0"), ("other", "1.0")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_resolves_to_the_version_fetched_before() {
    require_pip();
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
