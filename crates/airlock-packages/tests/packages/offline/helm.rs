//! An offline `helm` proxy's `index.yaml` over HTTP (no helm binary here): only the chart
//! version fetched before is listed, and it is served verified.

use std::fmt::Write as _;

use airlock_testkit::FakeFiles;
use airlock_types::Digest;
use yaml_rust2::YamlLoader;

use super::{start, unreachable};
use crate::common;

const PROXY: &str = "name = \"charts\"\nformat = \"helm\"";

/// A chart archive: a real gzip stream.
pub fn chart(name: &str, version: &str) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(format!("apiVersion: v2\nname: {name}\nversion: {version}\n").as_bytes())
        .unwrap();
    gz.finish().unwrap()
}

/// `index.yaml` listing each (name, version, bytes) at `<name>-<version>.tgz`.
pub fn index(charts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut text = String::from("apiVersion: v1\nentries:\n");
    let mut names: Vec<&str> = charts.iter().map(|(name, _, _)| *name).collect();
    names.dedup();
    for name in names {
        let _ = writeln!(text, "  {name}:");
        for (_, version, bytes) in charts.iter().filter(|(n, _, _)| *n == name) {
            let _ = write!(
                text,
                "  - apiVersion: v2\n    name: {name}\n    version: {version}\n    digest: {}\n    urls:\n    - {name}-{version}.tgz\n",
                Digest::of(bytes).hex()
            );
        }
    }
    text.push_str("generated: \"2024-05-01T10:00:00Z\"\n");
    text.into_bytes()
}

/// (name, version) of every entry of a served index.
pub fn versions(body: &[u8]) -> Vec<(String, String)> {
    let docs = YamlLoader::load_from_str(std::str::from_utf8(body).unwrap()).unwrap();
    let mut out = Vec::new();
    if let Some(entries) = docs[0]["entries"].as_hash() {
        for (name, versions) in entries {
            for version in versions.as_vec().unwrap() {
                out.push((
                    name.as_str().unwrap().to_owned(),
                    version["version"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn the_index_lists_only_the_held_chart() {
    let (one, two, tool) = (
        chart("app", "1.0.0"),
        chart("app", "2.0.0"),
        chart("tool", "1.0.0"),
    );
    let upstream = FakeFiles::start().await;
    upstream.put(
        "stable/index.yaml",
        "application/x-yaml",
        &index(&[
            ("app", "1.0.0", &one),
            ("app", "2.0.0", &two),
            ("tool", "1.0.0", &tool),
        ]),
    );
    for (path, bytes) in [
        ("app-1.0.0.tgz", &one),
        ("app-2.0.0.tgz", &two),
        ("tool-1.0.0.tgz", &tool),
    ] {
        upstream.put(&format!("stable/{path}"), "application/gzip", bytes);
    }
    let dir = tempfile::tempdir().unwrap();
    let online = start(
        dir.path(),
        PROXY,
        &format!("{}stable/", upstream.url()),
        false,
    )
    .await;
    let base = format!("http://{}/repository/charts", online.addr);
    let listed = common::get(&format!("{base}/index.yaml"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(versions(&listed).len(), 3);
    let fetched = common::get(&format!("{base}/app-1.0.0.tgz")).await;
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.unwrap(), one);
    online.stop().await;
    drop(upstream);

    let offline = start(dir.path(), PROXY, &unreachable("stable/"), true).await;
    let base = format!("http://{}/repository/charts", offline.addr);
    let response = common::get(&format!("{base}/index.yaml")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-yaml");
    let etag = response.headers()["etag"].clone();
    let body = response.bytes().await.unwrap();
    assert_eq!(versions(&body), [("app".to_owned(), "1.0.0".to_owned())]);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("/repository/charts/app-1.0.0.tgz"), "{text}");
    assert!(
        text.contains("generated"),
        "the rest of the index is kept: {text}"
    );
    let again = common::client()
        .get(format!("{base}/index.yaml"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let chart = common::get(&format!("{base}/app-1.0.0.tgz")).await;
    assert_eq!(chart.status(), 200);
    assert_eq!(chart.bytes().await.unwrap(), one);
    assert_eq!(
        common::get(&format!("{base}/app-2.0.0.tgz")).await.status(),
        404
    );
    offline.stop().await;
}
