//! `format = "helm"` at `/repository/<name>/`: an in-process chart repository whose
//! `index.yaml` lists charts by relative URL, by absolute URL under itself, and on a second
//! host; the gateway rewrites every URL to itself, serves the charts verified against the
//! index's digests, refuses tampered charts, malformed indexes and hosts the index never
//! named, and serves the index stale when the upstream fails.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use airlock_testkit::FakeFiles;
use airlock_types::Digest;
use yaml_rust2::YamlLoader;

async fn start(dir: &std::path::Path, upstream: &str, extra: &str) -> SocketAddr {
    common::start(
        dir,
        &format!(
            "[[proxy]]\nname = \"charts\"\nformat = \"helm\"\nupstream = \"{upstream}\"\n{extra}\n"
        ),
    )
    .await
}

/// Status, `X-Airlock-Cache` and body (a failure may also arrive as a broken body).
async fn fetch(url: &str) -> (u16, String, Option<Vec<u8>>) {
    let response = common::get(url).await;
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-airlock-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        cache,
        response.bytes().await.ok().map(|b| b.to_vec()),
    )
}

/// A chart archive: a real gzip stream, different per name.
fn chart(name: &str) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(format!("apiVersion: v2\nname: {name}\nversion: 1.0.0\n").as_bytes())
        .unwrap();
    gz.finish().unwrap()
}

/// An index.yaml entry for a chart at `url` whose content is `bytes`.
fn entry(name: &str, version: &str, url: &str, bytes: &[u8]) -> String {
    format!(
        "  {name}:\n  - apiVersion: v2\n    name: {name}\n    version: {version}\n    appVersion: \"1.10\"\n    description: \"A chart: {name}\"\n    created: \"2024-05-01T10:00:00Z\"\n    digest: {}\n    urls:\n    - {url}\n",
        Digest::of(bytes).hex()
    )
}

fn index(entries: &[String]) -> Vec<u8> {
    format!(
        "apiVersion: v1\nentries:\n{}generated: \"2024-05-01T10:00:00Z\"\n",
        entries.concat()
    )
    .into_bytes()
}

/// The `urls` of every entry of a served index, by chart name.
fn urls(body: &[u8]) -> Vec<(String, String)> {
    let docs = YamlLoader::load_from_str(std::str::from_utf8(body).unwrap()).unwrap();
    let mut out = Vec::new();
    for (name, versions) in docs[0]["entries"].as_hash().unwrap() {
        for version in versions.as_vec().unwrap() {
            for url in version["urls"].as_vec().unwrap() {
                out.push((
                    name.as_str().unwrap().to_owned(),
                    url.as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    out
}

struct Repos {
    upstream: FakeFiles,
    other_host: FakeFiles,
    local: Vec<u8>,
    absolute: Vec<u8>,
    elsewhere: Vec<u8>,
}

/// The upstream repository (under `stable/`) and a second host holding one of its charts.
async fn repos() -> Repos {
    let upstream = FakeFiles::start().await;
    let other_host = FakeFiles::start().await;
    let (local, absolute, elsewhere) = (chart("local"), chart("absolute"), chart("elsewhere"));
    upstream.put("stable/charts/local-1.0.0.tgz", "application/gzip", &local);
    upstream.put("stable/absolute-1.0.0.tgz", "application/gzip", &absolute);
    other_host.put(
        "releases/download/v1/elsewhere-1.0.0.tgz",
        "application/gzip",
        &elsewhere,
    );
    other_host.put(
        "releases/download/v1/elsewhere-1.0.0.tgz.prov",
        "application/pgp-signature",
        b"-----BEGIN PGP SIGNED MESSAGE-----\n",
    );
    upstream.put(
        "stable/index.yaml",
        "application/x-yaml",
        &index(&[
            entry("local", "1.0.0", "charts/local-1.0.0.tgz", &local),
            entry(
                "absolute",
                "1.0.0",
                &format!("{}stable/absolute-1.0.0.tgz", upstream.url()),
                &absolute,
            ),
            entry(
                "elsewhere",
                "1.0.0",
                &format!(
                    "{}releases/download/v1/elsewhere-1.0.0.tgz",
                    other_host.url()
                ),
                &elsewhere,
            ),
        ]),
    );
    Repos {
        upstream,
        other_host,
        local,
        absolute,
        elsewhere,
    }
}

/// How the gateway names a file server in `_ext/` paths: scheme, host, port.
fn host_of(files: &FakeFiles) -> String {
    files
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .replacen(':', "/", 1)
        .split_once('/')
        .map(|(host, port)| format!("http/{host}/{port}"))
        .expect("host:port")
}

#[tokio::test]
async fn chart_urls_are_rewritten_and_charts_served_verified() {
    let repos = repos().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &format!("{}stable/", repos.upstream.url()), "").await;
    let base = format!("http://{addr}/repository/charts");
    let (status, cache, body) = fetch(&format!("{base}/index.yaml")).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    let body = body.unwrap();
    let served = body.clone();
    let other = host_of(&repos.other_host);
    let mut rewritten = urls(&body);
    rewritten.sort();
    assert_eq!(
        rewritten,
        [
            (
                "absolute".to_owned(),
                "/repository/charts/absolute-1.0.0.tgz".to_owned()
            ),
            (
                "elsewhere".to_owned(),
                format!("/repository/charts/_ext/{other}/releases/download/v1/elsewhere-1.0.0.tgz")
            ),
            (
                "local".to_owned(),
                "/repository/charts/charts/local-1.0.0.tgz".to_owned()
            ),
        ]
    );
    // Everything else in the index is kept.
    let doc = &YamlLoader::load_from_str(std::str::from_utf8(&body).unwrap()).unwrap()[0];
    assert_eq!(doc["apiVersion"].as_str(), Some("v1"));
    assert_eq!(
        doc["entries"]["local"][0]["appVersion"].as_str(),
        Some("1.10")
    );
    assert_eq!(
        doc["entries"]["local"][0]["description"].as_str(),
        Some("A chart: local")
    );
    assert_eq!(
        doc["entries"]["local"][0]["digest"].as_str(),
        Some(Digest::of(&repos.local).hex())
    );
    assert!(!String::from_utf8_lossy(&body).contains(&host_of(&repos.upstream)));

    // Each rewritten URL, resolved against the gateway as Helm does, gives the chart.
    for ((name, url), bytes) in
        rewritten
            .iter()
            .zip([&repos.absolute, &repos.elsewhere, &repos.local])
    {
        let url = format!("http://{addr}{url}");
        let (status, cache, body) = fetch(&url).await;
        assert_eq!((status, cache.as_str()), (200, "miss"), "{name}");
        assert_eq!(body.as_ref(), Some(bytes), "{name}");
        let (status, cache, body) = fetch(&url).await;
        assert_eq!((status, cache.as_str()), (200, "hit"), "{name}");
        assert_eq!(body.as_ref(), Some(bytes), "{name}");
    }
    assert_eq!(repos.upstream.count("stable/charts/local-1.0.0.tgz"), 1);
    assert_eq!(repos.upstream.count("stable/absolute-1.0.0.tgz"), 1);
    assert_eq!(
        repos
            .other_host
            .count("releases/download/v1/elsewhere-1.0.0.tgz"),
        1
    );
    // The provenance file of a listed chart passes through.
    let (status, _, body) = fetch(&format!(
        "{base}/_ext/{other}/releases/download/v1/elsewhere-1.0.0.tgz.prov"
    ))
    .await;
    assert_eq!(status, 200);
    assert!(body.unwrap().starts_with(b"-----BEGIN PGP"));

    // The index is cached: a second fetch does not go upstream, and answers 304s.
    let response = common::get(&format!("{base}/index.yaml")).await;
    assert_eq!(response.headers()["x-airlock-cache"], "hit");
    let etag = response.headers()["etag"].clone();
    assert_eq!(response.bytes().await.unwrap(), served);
    let again = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{base}/index.yaml"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(repos.upstream.count("stable/index.yaml"), 1);

    // Upstream gone: index (stale after its TTL) and cached charts still served.
    repos.upstream.fail_with(Some(503));
    repos.other_host.fail_with(Some(503));
    let (status, _, body) = fetch(&format!("{base}/index.yaml")).await;
    assert_eq!(status, 200);
    assert_eq!(urls(&body.unwrap()).len(), 3);
    let (status, cache, body) = fetch(&format!(
        "{base}/_ext/{other}/releases/download/v1/elsewhere-1.0.0.tgz"
    ))
    .await;
    assert_eq!((status, cache.as_str()), (200, "hit"));
    assert_eq!(body.unwrap(), repos.elsewhere);
}

#[tokio::test]
async fn index_is_refreshed_by_ttl_and_served_stale() {
    let repos = repos().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = start(
        dir.path(),
        &format!("{}stable/", repos.upstream.url()),
        "metadata_ttl = \"1s\"",
    )
    .await;
    let url = format!("http://{addr}/repository/charts/index.yaml");
    let (status, _, body) = fetch(&url).await;
    assert_eq!(status, 200);
    assert_eq!(urls(&body.unwrap()).len(), 3);
    // A new version upstream shows up after the TTL.
    let newer = chart("local-2");
    repos
        .upstream
        .put("stable/charts/local-2.0.0.tgz", "application/gzip", &newer);
    repos.upstream.put(
        "stable/index.yaml",
        "application/x-yaml",
        &index(&[entry("local", "2.0.0", "charts/local-2.0.0.tgz", &newer)]),
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, cache, body) = fetch(&url).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert_eq!(
        urls(&body.unwrap()),
        [(
            "local".to_owned(),
            "/repository/charts/charts/local-2.0.0.tgz".to_owned()
        )]
    );
    let (status, _, body) = fetch(&format!(
        "http://{addr}/repository/charts/charts/local-2.0.0.tgz"
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), newer);
    // Upstream down after the TTL: the cached index, stale.
    repos.upstream.fail_with(Some(502));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, cache, body) = fetch(&url).await;
    assert_eq!((status, cache.as_str()), (200, "stale"));
    assert_eq!(urls(&body.unwrap()).len(), 1);
    // A malformed index upstream: not cached, the previous one served stale.
    repos.upstream.fail_with(None);
    repos.upstream.put(
        "stable/index.yaml",
        "application/x-yaml",
        b"apiVersion: v1\nentries: [unclosed\n",
    );
    let (status, cache, body) = fetch(&url).await;
    assert_eq!((status, cache.as_str()), (200, "stale"));
    assert_eq!(urls(&body.unwrap()).len(), 1);
}

#[tokio::test]
async fn a_malformed_index_without_a_cached_copy_is_a_clear_502() {
    for (bad, why) in [
        (
            b"apiVersion: v1\nentries: [unclosed\n".as_slice(),
            "not YAML",
        ),
        (
            b"<html>Service Unavailable</html>".as_slice(),
            "not a mapping",
        ),
        (
            b"apiVersion: v1\nentries:\n  app: 3\n".as_slice(),
            "not a list",
        ),
    ] {
        let upstream = FakeFiles::start().await;
        upstream.put("index.yaml", "application/x-yaml", bad);
        let dir = tempfile::tempdir().unwrap();
        let addr = start(dir.path(), &upstream.url(), "").await;
        let (status, _, body) = fetch(&format!("http://{addr}/repository/charts/index.yaml")).await;
        let body = String::from_utf8(body.unwrap()).unwrap();
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("index.yaml") && body.contains(why), "{body}");
        // Charts need an index: nothing is fetched without one.
        let (status, _, _) = fetch(&format!("http://{addr}/repository/charts/app-1.0.0.tgz")).await;
        assert_eq!(status, 502);
        assert_eq!(upstream.count("app-1.0.0.tgz"), 0);
    }
}

#[tokio::test]
async fn a_tampered_chart_is_an_error_and_never_cached() {
    let repos = repos().await;
    // Both hosts now serve bytes other than the index's digests promise.
    repos.upstream.put(
        "stable/charts/local-1.0.0.tgz",
        "application/gzip",
        &chart("evil"),
    );
    repos.other_host.put(
        "releases/download/v1/elsewhere-1.0.0.tgz",
        "application/gzip",
        &chart("evil"),
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &format!("{}stable/", repos.upstream.url()), "").await;
    let other = host_of(&repos.other_host);
    for (path, upstream_path, fixed, host) in [
        (
            "charts/local-1.0.0.tgz".to_owned(),
            "stable/charts/local-1.0.0.tgz",
            &repos.local,
            &repos.upstream,
        ),
        (
            format!("_ext/{other}/releases/download/v1/elsewhere-1.0.0.tgz"),
            "releases/download/v1/elsewhere-1.0.0.tgz",
            &repos.elsewhere,
            &repos.other_host,
        ),
    ] {
        let url = format!("http://{addr}/repository/charts/{path}");
        for attempt in 1..=2 {
            let (status, _, body) = fetch(&url).await;
            let body = String::from_utf8(body.unwrap()).unwrap();
            assert_eq!(status, 502, "{path} attempt {attempt}: {body}");
            assert!(body.contains("wrong content"), "{body}");
            assert_eq!(host.count(upstream_path), attempt, "{path}: never cached");
        }
        // Fixed upstream: the next request fetches and verifies it.
        host.put(upstream_path, "application/gzip", fixed);
        let (status, cache, body) = fetch(&url).await;
        assert_eq!((status, cache.as_str()), (200, "miss"), "{path}");
        assert_eq!(body.as_ref(), Some(fixed), "{path}");
    }
}

#[tokio::test]
async fn hosts_and_charts_the_index_never_named_are_refused() {
    let repos = repos().await;
    // A third server the index does not mention, holding something tempting.
    let unlisted = FakeFiles::start().await;
    unlisted.put("secret.tgz", "application/gzip", b"not for clients");
    unlisted.put(
        "releases/download/v1/elsewhere-1.0.0.tgz",
        "application/gzip",
        b"x",
    );
    repos.upstream.put(
        "stable/unlisted-1.0.0.tgz",
        "application/gzip",
        b"unverifiable",
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &format!("{}stable/", repos.upstream.url()), "").await;
    let stranger = host_of(&unlisted);
    let other = host_of(&repos.other_host);
    for path in [
        format!("_ext/{stranger}/secret.tgz"),
        format!("_ext/{stranger}/releases/download/v1/elsewhere-1.0.0.tgz"),
        // A listed host, but a file the index does not list there.
        format!("_ext/{other}/releases/download/v1/other-1.0.0.tgz"),
        format!("_ext/{other}/"),
        "_ext/example.com/x".to_owned(),
        // A chart under the upstream the index does not list: no digest to verify it by.
        "unlisted-1.0.0.tgz".to_owned(),
    ] {
        let (status, _, body) = fetch(&format!("http://{addr}/repository/charts/{path}")).await;
        assert!(status == 404 || status == 400, "{path}: {status}");
        let body = String::from_utf8(body.unwrap()).unwrap();
        assert!(!body.contains("not for clients"), "{path}");
    }
    assert_eq!(unlisted.count("secret.tgz"), 0);
    assert_eq!(
        unlisted.count("releases/download/v1/elsewhere-1.0.0.tgz"),
        0
    );
    assert_eq!(repos.upstream.count("stable/unlisted-1.0.0.tgz"), 0);
    assert_eq!(
        repos
            .other_host
            .count("releases/download/v1/other-1.0.0.tgz"),
        0
    );
    // Hostile paths never leave the proxy.
    for path in [
        "/repository/charts/../index.yaml",
        "/repository/charts/_ext/%2e%2e/x.tgz",
        "/repository/charts/_ext//x.tgz",
        "/repository/charts/charts/..%2f..%2fsecret.tgz",
    ] {
        let response = common::raw_get(addr, path).await;
        let status = response.split(' ').nth(1).unwrap_or("");
        assert!(status == "400" || status == "404", "{path}: {response}");
    }
}

#[tokio::test]
async fn a_chart_listed_without_a_digest_is_refused() {
    let upstream = FakeFiles::start().await;
    upstream.put("nodigest-1.0.0.tgz", "application/gzip", &chart("nodigest"));
    upstream.put(
        "index.yaml",
        "application/x-yaml",
        b"apiVersion: v1\nentries:\n  nodigest:\n  - name: nodigest\n    version: 1.0.0\n    urls:\n    - nodigest-1.0.0.tgz\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "").await;
    let (status, _, body) = fetch(&format!("http://{addr}/repository/charts/index.yaml")).await;
    assert_eq!(status, 200);
    assert_eq!(
        urls(&body.unwrap()),
        [(
            "nodigest".to_owned(),
            "/repository/charts/nodigest-1.0.0.tgz".to_owned()
        )]
    );
    let (status, _, body) = fetch(&format!(
        "http://{addr}/repository/charts/nodigest-1.0.0.tgz"
    ))
    .await;
    assert_eq!(status, 502);
    assert!(String::from_utf8(body.unwrap()).unwrap().contains("digest"));
    assert_eq!(upstream.count("nodigest-1.0.0.tgz"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_parse_the_index_once() {
    let repos = repos().await;
    // An index large enough that parsing it takes a while.
    let mut entries: Vec<String> = (0..3_000)
        .map(|i| {
            entry(
                &format!("filler-{i}"),
                "1.0.0",
                &format!("charts/filler-{i}-1.0.0.tgz"),
                &[],
            )
        })
        .collect();
    entries.push(entry(
        "local",
        "1.0.0",
        "charts/local-1.0.0.tgz",
        &repos.local,
    ));
    repos
        .upstream
        .put("stable/index.yaml", "application/x-yaml", &index(&entries));
    let dir = tempfile::tempdir().unwrap();
    let name = "charts-parsed-once";
    let (addr, packages) = common::start_with_packages(
        dir.path(),
        &format!(
            "[[proxy]]\nname = \"{name}\"\nformat = \"helm\"\nupstream = \"{}stable/\"\n",
            repos.upstream.url()
        ),
    )
    .await;
    let base = format!("http://{addr}/repository/{name}");
    // Index and chart requests at once: every one needs the rewritten index.
    let requests: Vec<_> = (0..24)
        .map(|i| {
            let url = if i % 3 == 0 {
                format!("{base}/charts/local-1.0.0.tgz")
            } else {
                format!("{base}/index.yaml")
            };
            tokio::spawn(async move { fetch(&url).await })
        })
        .collect();
    for request in requests {
        let (status, _, body) = request.await.unwrap();
        assert_eq!(status, 200);
        assert!(body.is_some_and(|b| !b.is_empty()));
    }
    let stats = packages.derived_stats(name);
    let table = stats.iter().find(|t| t.name == "helm-index").unwrap();
    assert_eq!(table.computed, 1, "parsed once: {stats:?}");
    assert!(table.kept <= table.capacity, "{stats:?}");
    assert_eq!(repos.upstream.count("stable/index.yaml"), 1);
}
