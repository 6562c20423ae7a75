//! Package proxies at `/repository/<name>/…`: the raw format against an in-process file
//! server, and `curl` as a real client. Verification, TTL refresh with conditional
//! requests, negative caching, serve-stale, offline, hostile paths.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use airlock_testkit::FakeFiles;
use airlock_types::Digest;
use futures_util::StreamExt;

async fn start(dir: &std::path::Path, proxies: &str) -> SocketAddr {
    common::start(dir, proxies).await
}

fn raw(upstream: &FakeFiles, extra: &str) -> String {
    format!(
        "[[proxy]]\nname = \"k3s-releases\"\nformat = \"raw\"\nupstream = \"{}\"\n{extra}\n",
        upstream.url()
    )
}

use common::get;

#[tokio::test]
async fn listed_files_are_verified_and_cached_for_good() {
    let upstream = FakeFiles::start().await;
    let binary = b"#!/bin/sh\necho k3s stand-in\n".to_vec();
    upstream.put("v1.30.4+k3s1/k3s", "application/octet-stream", &binary);
    upstream.put(
        "v1.30.4+k3s1/tampered",
        "application/octet-stream",
        b"not what the list says",
    );
    let extra = format!(
        "[proxy.sha256]\n\"v1.30.4+k3s1/k3s\" = \"{}\"\n\"v1.30.4+k3s1/tampered\" = \"{}\"",
        Digest::of(&binary).hex(),
        Digest::of(b"the real thing").hex()
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &raw(&upstream, &extra)).await;
    let url = format!("http://{addr}/repository/k3s-releases/v1.30.4+k3s1/k3s");
    for expected in ["miss", "hit"] {
        let response = get(&url).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-airlock-cache"], expected);
        assert_eq!(response.bytes().await.unwrap(), binary);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(upstream.count("v1.30.4+k3s1/k3s"), 1);

    let tampered = get(&format!(
        "http://{addr}/repository/k3s-releases/v1.30.4+k3s1/tampered"
    ))
    .await;
    let body = tampered.bytes().await;
    assert!(
        body.is_err() || body.unwrap().as_ref() != b"not what the list says",
        "a mismatch never arrives whole"
    );
    let again = get(&format!(
        "http://{addr}/repository/k3s-releases/v1.30.4+k3s1/tampered"
    ))
    .await;
    assert_ne!(
        again
            .headers()
            .get("x-airlock-cache")
            .map(reqwest::header::HeaderValue::as_bytes),
        Some(&b"hit"[..]),
        "never cached"
    );
}

#[tokio::test]
async fn other_files_refresh_by_ttl_with_conditional_requests_and_serve_stale() {
    let upstream = FakeFiles::start().await;
    upstream.put("install.sh", "text/x-shellscript", b"#!/bin/sh\n# v1\n");
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &raw(&upstream, "metadata_ttl = \"0s\"")).await;
    let url = format!("http://{addr}/repository/k3s-releases/install.sh");
    let first = get(&url).await;
    assert_eq!(first.headers()["x-airlock-cache"], "miss");
    assert_eq!(first.headers()["content-type"], "text/x-shellscript");
    let etag = first.headers()["etag"].clone();
    assert_eq!(first.bytes().await.unwrap(), &b"#!/bin/sh\n# v1\n"[..]);

    let second = get(&url).await;
    assert_eq!(
        second.headers()["x-airlock-cache"],
        "revalidated",
        "a 304 from upstream"
    );

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let not_modified = client
        .get(&url)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304, "clients' own caches work");

    upstream.put("install.sh", "text/x-shellscript", b"#!/bin/sh\n# v2\n");
    assert_eq!(
        get(&url).await.bytes().await.unwrap(),
        &b"#!/bin/sh\n# v2\n"[..]
    );

    upstream.fail_with(Some(503));
    let stale = get(&url).await;
    assert_eq!(stale.headers()["x-airlock-cache"], "stale");
    assert_eq!(stale.bytes().await.unwrap(), &b"#!/bin/sh\n# v2\n"[..]);
    upstream.fail_with(None);

    let ranged = client
        .get(&url)
        .header("range", "bytes=2-5")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap(), &b"/bin"[..]);
}

#[tokio::test]
async fn missing_files_are_remembered_for_negative_ttl() {
    let upstream = FakeFiles::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &raw(&upstream, "negative_ttl = \"1h\"")).await;
    let url = format!("http://{addr}/repository/k3s-releases/v9.9.9/k3s");
    assert_eq!(get(&url).await.status(), 404);
    assert_eq!(get(&url).await.status(), 404);
    assert_eq!(
        upstream.count("v9.9.9/k3s"),
        1,
        "the second 404 came from the negative cache"
    );
}

/// Regression: every distinct path a client asked for, upstream 404s included, used to
/// write a durable index row (~25 KB each) that nothing removed.
#[tokio::test]
async fn upstream_404s_do_not_grow_the_index() {
    let upstream = FakeFiles::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &raw(&upstream, "negative_ttl = \"1h\"")).await;
    let index = dir
        .path()
        .join("data")
        .join(airlock_store::layout::INDEX_FILE);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |n: u32| {
        client
            .get(format!(
                "http://{addr}/repository/k3s-releases/missing/{n}/{}",
                "x".repeat(900)
            ))
            .send()
    };
    get(0).await.unwrap();
    let before = std::fs::metadata(&index).unwrap().len();
    for n in 1..=400 {
        assert_eq!(get(n).await.unwrap().status(), 404);
    }
    let after = std::fs::metadata(&index).unwrap().len();
    assert!(
        after.saturating_sub(before) < 256 * 1024,
        "the index grew from {before} to {after} bytes for 400 missing paths"
    );
    // Still remembered: the second ask is answered from memory.
    assert_eq!(get(7).await.unwrap().status(), 404);
    assert_eq!(upstream.total_requests(), 401);
}

/// Regression: pins were looked up by the path as the client encoded it, so
/// `v1.30.4%2Bk3s1/…` missed the `v1.30.4+k3s1/…` pin and was served unverified.
#[tokio::test]
async fn a_percent_encoded_path_is_the_pinned_file() {
    let upstream = FakeFiles::start().await;
    upstream.put("v1.30.4+k3s1/k3s", "application/octet-stream", b"tampered");
    let extra = format!(
        "[proxy.sha256]\n\"v1.30.4+k3s1/k3s\" = \"{}\"",
        Digest::of(b"genuine").hex()
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &raw(&upstream, &extra)).await;
    for spelling in [
        "v1.30.4%2Bk3s1/k3s",
        "v1.30.4%2bk3s1/k3s",
        "v1.30.4+k3s1/k3s",
    ] {
        let response = get(&format!("http://{addr}/repository/k3s-releases/{spelling}")).await;
        assert_eq!(response.status(), 502, "{spelling}");
        assert!(!response.text().await.unwrap().contains("tampered"));
    }
}

#[tokio::test]
async fn the_upstream_root_is_a_file_too() {
    // get.k3s.io serves the K3s install script at `/`: `/repository/k3s-install/` is it.
    let upstream = FakeFiles::start().await;
    upstream.put("install.sh", "text/plain", b"#!/bin/sh\necho install\n");
    let dir = tempfile::tempdir().unwrap();
    let proxies = format!(
        "[[proxy]]\nname = \"k3s-install\"\nformat = \"raw\"\nupstream = \"{}install.sh\"\n",
        upstream.url()
    );
    let addr = start(dir.path(), &proxies).await;
    for path in ["/repository/k3s-install/", "/repository/k3s-install"] {
        let response = get(&format!("http://{addr}{path}")).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.bytes().await.unwrap().as_ref(),
            b"#!/bin/sh\necho install\n"
        );
    }
    assert_eq!(
        upstream.count("install.sh"),
        1,
        "the second request is a hit"
    );
    let sub = get(&format!("http://{addr}/repository/k3s-install/sub/")).await;
    assert_eq!(sub.status(), 404, "other directories have no file");
}

#[tokio::test]
async fn hostile_paths_and_unknown_repositories() {
    let upstream = FakeFiles::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &raw(&upstream, "")).await;
    for (path, status) in [
        ("/repository/k3s-releases/../../etc/passwd", 400),
        ("/repository/k3s-releases/a/%2e%2e/b", 400),
        ("/repository/k3s-releases/a//b", 400),
        ("/repository/k3s-releases/a%2fb", 400),
        ("/repository/nope/file", 404),
    ] {
        let answer = common::raw_get(addr, path).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {answer}"
        );
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let put = client
        .put(format!("http://{addr}/repository/k3s-releases/x"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);
    assert_eq!(
        upstream.count("etc/passwd") + upstream.count("b") + upstream.count("x"),
        0
    );
}

#[tokio::test]
async fn offline_raw_proxy_never_contacts_the_upstream() {
    let upstream = FakeFiles::start().await;
    upstream.put("sha256sum-amd64.txt", "text/plain", b"abc  k3s\n");
    let dir = tempfile::tempdir().unwrap();
    let offline = start(dir.path(), &raw(&upstream, "offline = true")).await;
    let miss = get(&format!(
        "http://{offline}/repository/k3s-releases/sha256sum-amd64.txt"
    ))
    .await;
    assert_eq!(miss.status(), 404);
    assert!(miss.text().await.unwrap().contains("offline"));
    assert_eq!(upstream.count("sha256sum-amd64.txt"), 0);
}

#[tokio::test]
async fn curl_downloads_through_the_raw_proxy() {
    let curl = airlock_testkit::require_tool("curl", "curl");
    let upstream = FakeFiles::start().await;
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    upstream.put("v1/k3s", "application/octet-stream", &payload);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[proxy.sha256]\n\"v1/k3s\" = \"{}\"",
        Digest::of(&payload).hex()
    );
    let addr = start(dir.path(), &raw(&upstream, &extra)).await;
    let out = dir.path().join("k3s");
    let url = format!("http://{addr}/repository/k3s-releases/v1/k3s");
    let status = tokio::process::Command::new(curl)
        .args(["--fail", "--silent", "--show-error", "--noproxy", "*", "-o"])
        .arg(&out)
        .arg(&url)
        .status()
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&out).unwrap(), payload);
}

/// Serves `body` at `/<name>` in `chunks` pieces `pause` apart, chunked (no
/// `Content-Length`): a slow, tampering upstream.
async fn slow_server(name: &str, body: Vec<u8>, chunks: usize, pause: Duration) -> SocketAddr {
    use axum::body::Body;
    let path = format!("/{name}");
    let app = axum::Router::new().route(
        &path,
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                let size = body.len().div_ceil(chunks);
                let pieces: Vec<Vec<u8>> = body.chunks(size).map(<[u8]>::to_vec).collect();
                let stream = futures_util::stream::iter(pieces).then(move |piece| async move {
                    tokio::time::sleep(pause).await;
                    Ok::<_, std::io::Error>(piece)
                });
                Body::from_stream(stream)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// `curl … | sh` on a pinned install script never runs a byte of a tampered one: the
/// gateway answers only once the download is verified, so the error is the status, and
/// the shell sees no script at all. Regression: the script used to stream as it arrived.
#[tokio::test]
async fn a_tampered_pinned_script_never_reaches_the_shell() {
    let curl = airlock_testkit::require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let genuine = format!("#!/bin/sh\necho genuine > {}\n", marker.display()).into_bytes();
    let mut tampered = format!("#!/bin/sh\necho tampered > {}\n", marker.display()).into_bytes();
    tampered.extend(std::iter::repeat_n(b'#', 64 * 1024));
    tampered.push(b'\n');
    let upstream = slow_server("install.sh", tampered, 8, Duration::from_millis(150)).await;
    let genuine_upstream =
        slow_server("install.sh", genuine.clone(), 4, Duration::from_millis(50)).await;
    let proxies = format!(
        "[[proxy]]\nname = \"k3s-install\"\nformat = \"raw\"\nupstream = \"http://{upstream}/\"\n[proxy.sha256]\n\"install.sh\" = \"{hex}\"\n\
         [[proxy]]\nname = \"k3s-install-genuine\"\nformat = \"raw\"\nupstream = \"http://{genuine_upstream}/\"\n[proxy.sha256]\n\"install.sh\" = \"{hex}\"\n",
        hex = Digest::of(&genuine).hex()
    );
    let addr = start(dir.path(), &proxies).await;
    let run = {
        let curl = curl.clone();
        move |proxy: &str| {
            let command = format!(
                "{} -sS --max-time 30 http://{addr}/repository/{proxy}/install.sh | sh",
                curl.display()
            );
            std::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .output()
                .unwrap()
        }
    };
    // With the tampered script upstream: the shell never runs it.
    let output = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run("k3s-install")
    })
    .await
    .unwrap();
    assert!(
        !marker.exists(),
        "the shell ran the tampered script: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The status says so before any body byte: curl reports 502 and writes only the
    // gateway's error text, never a byte of the script.
    let saved = dir.path().join("saved");
    let status = tokio::process::Command::new(&curl)
        .args(["-sS", "--max-time", "30", "-o"])
        .arg(&saved)
        .args(["-w", "%{http_code}"])
        .arg(format!("http://{addr}/repository/k3s-install/install.sh"))
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "502");
    let saved = std::fs::read_to_string(&saved).unwrap();
    assert!(
        !saved.contains("#!/bin/sh") && !saved.contains("tampered >"),
        "{saved}"
    );
    assert!(saved.contains("wrong content"), "{saved}");
    // The genuine script, as slowly and without a length, runs once verified.
    let output = tokio::task::spawn_blocking(move || run("k3s-install-genuine"))
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "genuine\n");
}
