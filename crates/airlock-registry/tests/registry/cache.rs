//! The cache's behaviour under failure and operation: resume after a dropped connection
//! with a token that expired meanwhile, offline proxies, pins checked at startup.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::Server;
use airlock_config::Config;
use airlock_testkit::{AuthMode, FakeRegistry, Fault, Image};
use airlock_types::Digest;

/// Starts a registry server that runs until the test ends.
async fn start(dir: &std::path::Path, text: &str) -> SocketAddr {
    let (addr, stop) = start_stoppable(dir, text).await;
    std::mem::forget(stop);
    addr
}

/// Starts a registry server; it stops when the returned sender is dropped.
async fn start_stoppable(
    dir: &std::path::Path,
    text: &str,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n{text}",
        dir.join("data")
    );
    let config = Config::from_toml_str(&text, "test").expect("test config is valid");
    // A previous server on the same data_dir may still be letting go of the index.
    let mut attempts = 0;
    let server = loop {
        match Server::bind(config.clone()).await {
            Ok(server) => break server,
            Err(_) if attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the registry starts: {e}"),
        }
    };
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = rx.await;
    }));
    (addr, tx)
}

fn proxy(upstream: &str, extra: &str) -> String {
    format!(
        "[[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{upstream}\"\nhost = \"docker.io\"\n{extra}\n"
    )
}

use common::get;

#[tokio::test]
async fn dropped_connection_resumes_with_range_and_a_fresh_token() {
    let upstream = FakeRegistry::start(AuthMode::Token).await;
    let image = Image::random(&[3 << 20]);
    upstream.push_image("library/big", "1", &image);
    let digest = Digest::of(&image.layers[0]);
    upstream.fault(
        &format!("/blobs/{digest}"),
        Fault::TruncateOnce {
            keep: 1 << 20,
            expire_tokens: true,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &proxy(&upstream.url(), "")).await;
    let response = get(&format!("http://{addr}/v2/hub/library/big/blobs/{digest}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        Digest::of(&response.bytes().await.unwrap()),
        digest,
        "every byte, in order"
    );
    // 401 (no token yet), the broken GET, 401 (token expired meanwhile), the resume.
    assert_eq!(
        upstream.count("GET", &format!("/v2/library/big/blobs/{digest}")),
        4
    );
    assert_eq!(
        upstream.tokens_issued(),
        2,
        "the expired token was replaced"
    );
}

#[tokio::test]
async fn offline_proxy_never_contacts_the_upstream() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[100]);
    upstream.push_image("library/app", "1", &image);
    let dir = tempfile::tempdir().unwrap();
    let (online, stop) = start_stoppable(dir.path(), &proxy(&upstream.url(), "")).await;
    assert_eq!(
        get(&format!("http://{online}/v2/hub/library/app/manifests/1"))
            .await
            .status(),
        200
    );
    let before = upstream.total_requests();
    drop(stop);

    let offline = start(
        dir.path(),
        &proxy(&upstream.url(), "offline = true\ntag_ttl = \"0s\""),
    )
    .await;
    let hit = get(&format!("http://{offline}/v2/hub/library/app/manifests/1")).await;
    assert_eq!(hit.status(), 200);
    assert_eq!(
        hit.headers()["x-airlock-cache"],
        "hit",
        "an offline proxy does not revalidate"
    );
    // Only the catch-all class of client asked online; a client taking just this media
    // type gets the same manifest (no upstream to ask what its class would get), and a
    // client taking none of it still gets nothing.
    let url = format!("http://{offline}/v2/hub/library/app/manifests/1");
    let narrow = airlock_testkit::http::get_accepting(&url, Some(image.media_type)).await;
    assert_eq!(narrow.status(), 200);
    assert_eq!(
        narrow.bytes().await.unwrap().as_ref(),
        image.manifest.as_slice()
    );
    let other =
        airlock_testkit::http::get_accepting(&url, Some("application/vnd.oci.image.index.v1+json"))
            .await;
    assert_eq!(other.status(), 404);
    let miss = get(&format!(
        "http://{offline}/v2/hub/library/app/blobs/{}",
        Digest::of(&image.layers[0])
    ))
    .await;
    assert_eq!(miss.status(), 404);
    let body: serde_json::Value = miss.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "BLOB_UNKNOWN");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("offline")
    );
    assert_eq!(
        upstream.total_requests(),
        before,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn pins_naming_no_proxy_stop_startup_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n[cache]\npin = [\"quay.io/org/app:1\"]\n{}",
        dir.path(),
        proxy("http://127.0.0.1:9", "")
    );
    let config = Config::from_toml_str(&text, "test").unwrap();
    let error = Server::bind(config).await.unwrap_err().to_string();
    assert!(
        error.contains("quay.io/org/app:1") && error.contains("no proxy"),
        "{error}"
    );
    let good = text.replace("quay.io/org/app:1", "docker.io/library/postgres:15");
    assert!(
        Server::bind(Config::from_toml_str(&good, "test").unwrap())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_stalled_upstream_fails_the_download_and_the_next_request_retries() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[500_000]);
    upstream.push_image("library/stall", "1", &image);
    let digest = Digest::of(&image.layers[0]);
    upstream.fault(&format!("/blobs/{digest}"), Fault::StallAfter(100_000));
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &proxy(&upstream.url(), "read_timeout = \"1s\"")).await;
    let url = format!("http://{addr}/v2/hub/library/stall/blobs/{digest}");
    let started = std::time::Instant::now();
    let body = get(&url).await.bytes().await;
    assert!(
        body.is_err(),
        "a stalled download ends in an error, not short bytes"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the read timeout applies"
    );
    upstream.clear_faults();
    let healed = get(&url).await;
    assert_eq!(Digest::of(&healed.bytes().await.unwrap()), digest);
}

#[tokio::test]
async fn a_slow_upstream_start_still_streams_every_byte_to_every_waiting_client() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[1 << 20]);
    upstream.push_image("library/slow", "1", &image);
    upstream.throttle(Some(Duration::from_millis(5)));
    let digest = Digest::of(&image.layers[0]);
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &proxy(&upstream.url(), "")).await;
    let url = format!("http://{addr}/v2/hub/library/slow/blobs/{digest}");
    let mut clients = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            get(&url).await.bytes().await.unwrap()
        }));
        // Late joiners read what is on disk, then follow the live tail.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for client in clients {
        assert_eq!(Digest::of(&client.await.unwrap()), digest);
    }
    assert_eq!(
        upstream.count("GET", &format!("/v2/library/slow/blobs/{digest}")),
        1
    );
}

#[tokio::test]
async fn a_blob_lost_between_file_and_record_is_fetched_again() {
    // What an eviction interrupted by kill -9 leaves: the file gone, its records still there.
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[2000]);
    upstream.push_image("library/lost", "1", &image);
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &proxy(&upstream.url(), "")).await;
    let manifest = format!("http://{addr}/v2/hub/library/lost/manifests/1");
    let layer = Digest::of(&image.layers[0]);
    let blob = format!("http://{addr}/v2/hub/library/lost/blobs/{layer}");
    assert_eq!(get(&manifest).await.status(), 200);
    assert_eq!(get(&blob).await.bytes().await.unwrap(), image.layers[0]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let blobs = dir.path().join("data/store-v1/blobs/sha256");
    for digest in [&layer, &image.digest] {
        std::fs::remove_file(blobs.join(&digest.hex()[..2]).join(digest.hex())).unwrap();
    }
    let again = get(&manifest).await;
    assert_eq!(again.headers()["x-airlock-cache"], "miss");
    assert_eq!(again.bytes().await.unwrap(), image.manifest);
    let again = get(&blob).await;
    assert_eq!(again.headers()["x-airlock-cache"], "miss");
    assert_eq!(again.bytes().await.unwrap(), image.layers[0]);
}
