//! K3s artifacts against loopback servers: a stand-in release (binary, real checksum file,
//! install script) direct and behind a mimic of the gateway's raw proxies, the channel
//! redirect, the local cache, a tampered binary and a stalled server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use airlock_deploy::artifacts::{ArtifactError, GatewayAccess, Route, Sources, fetch_k3s};
use airlock_testkit::FakeFiles;
use sha2::{Digest, Sha256};

const VERSION: &str = "v1.31.4+k3s1";
const BINARY: &[u8] = b"\x7fELF stand-in for the k3s binary";
const SCRIPT: &[u8] = b"#!/bin/sh\necho install k3s\n";

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `sha256sum-amd64.txt` as K3s publishes it, for `binary`.
fn checksums(binary: &[u8]) -> String {
    format!(
        "{}  k3s\n{}  k3s-airgap-images-amd64.tar.zst\n",
        sha256(binary),
        sha256(b"images")
    )
}

/// Puts a release under `<prefix>` (`<prefix><version>/<asset>`) and the script at `script_at`.
fn put_release(files: &FakeFiles, prefix: &str, script_at: &str, binary: &[u8]) {
    files.put(
        &format!("{prefix}{VERSION}/sha256sum-amd64.txt"),
        "text/plain",
        checksums(BINARY).as_bytes(),
    );
    files.put(
        &format!("{prefix}{VERSION}/k3s"),
        "application/octet-stream",
        binary,
    );
    files.put(script_at, "text/plain", SCRIPT);
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn direct(files: &FakeFiles) -> Sources {
    Sources {
        direct_releases: format!("{}download/", files.url()),
        direct_install: files.url(),
        channels: format!("{}channels", files.url()),
        gateway: None,
        outbound: None,
    }
}

fn fetch(
    sources: &Sources,
    cache: &Path,
) -> Result<airlock_deploy::artifacts::K3sArtifacts, ArtifactError> {
    fetch_k3s(
        sources,
        Some(VERSION),
        "stable",
        "amd64",
        cache,
        Some(Duration::from_secs(20)),
        false,
    )
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map_or_else(
        |_| Vec::new(),
        |d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        },
    )
}

#[test]
fn direct_download_then_the_cache_serves_a_second_run() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    put_release(&files, "download/", "", BINARY);
    let cache = tempfile::tempdir().expect("cache");
    let sources = direct(&files);

    let first = fetch(&sources, cache.path()).expect("first fetch");
    assert_eq!(first.route, Route::Direct);
    assert_eq!(first.version, VERSION);
    assert_eq!(std::fs::read(&first.binary.path).unwrap(), BINARY);
    assert_eq!(first.binary.sha256, sha256(BINARY));
    assert_eq!(
        first.binary.path,
        cache.path().join("sha256").join(sha256(BINARY))
    );
    assert_eq!(std::fs::read(&first.install_script.path).unwrap(), SCRIPT);
    assert_eq!(
        std::fs::read_to_string(&first.checksums.path).unwrap(),
        checksums(BINARY)
    );
    assert_eq!(
        first.binary.url,
        format!("{}download/{VERSION}/k3s", files.url())
    );
    assert!(
        cache
            .path()
            .join("k3s")
            .join(VERSION)
            .join("amd64")
            .join("index.json")
            .is_file()
    );

    let second = fetch(&sources, cache.path()).expect("second fetch");
    assert_eq!(second.route, Route::Cache);
    assert_eq!(second.binary, first.binary);
    assert_eq!(second.install_script, first.install_script);
    assert_eq!(files.count(&format!("download/{VERSION}/k3s")), 1);
    assert_eq!(
        files.count(&format!("download/{VERSION}/sha256sum-amd64.txt")),
        1
    );
    assert_eq!(files.count(""), 1);
    assert!(entries(&cache.path().join("tmp")).is_empty());
}

#[test]
fn a_changed_cached_blob_is_downloaded_again() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    put_release(&files, "download/", "", BINARY);
    let cache = tempfile::tempdir().expect("cache");
    let sources = direct(&files);
    let first = fetch(&sources, cache.path()).expect("first fetch");
    std::fs::write(&first.binary.path, b"bit rot").unwrap();

    let second = fetch(&sources, cache.path()).expect("second fetch");
    assert_eq!(second.route, Route::Direct);
    assert_eq!(std::fs::read(&second.binary.path).unwrap(), BINARY);
    assert_eq!(files.count(&format!("download/{VERSION}/k3s")), 2);
}

#[test]
fn a_tampered_binary_is_refused_and_nothing_is_cached() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    let tampered: &[u8] = b"\x7fELF something else";
    put_release(&files, "download/", "", tampered);
    let cache = tempfile::tempdir().expect("cache");

    let error = fetch(&direct(&files), cache.path()).expect_err("tampered binary");
    match &error {
        ArtifactError::ChecksumMismatch {
            url,
            expected,
            actual,
        } => {
            assert_eq!(url, &format!("{}download/{VERSION}/k3s", files.url()));
            assert_eq!(expected, &sha256(BINARY));
            assert_eq!(actual, &sha256(tampered));
        }
        other => panic!("expected a checksum mismatch, got {other}"),
    }
    assert!(error.to_string().contains("no node was touched"), "{error}");
    assert!(entries(&cache.path().join("sha256")).is_empty());
    assert!(entries(&cache.path().join("tmp")).is_empty());
    assert!(!cache.path().join("k3s").exists());
}

#[test]
fn a_checksum_file_without_the_asset_is_an_error() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    put_release(&files, "download/", "", BINARY);
    files.put(
        &format!("download/{VERSION}/sha256sum-amd64.txt"),
        "text/plain",
        format!("{}  k3s-arm64\n", sha256(BINARY)).as_bytes(),
    );
    let cache = tempfile::tempdir().expect("cache");
    let error = fetch(&direct(&files), cache.path()).expect_err("no line");
    assert!(
        matches!(&error, ArtifactError::ChecksumMissing { asset, .. } if asset == "k3s"),
        "{error}"
    );
    assert!(entries(&cache.path().join("sha256")).is_empty());
}

/// A channel server: `/channels/stable` redirects as update.k3s.io does.
fn channel_server(rt: &tokio::runtime::Runtime) -> SocketAddr {
    use axum::response::IntoResponse;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .route(
            "/channels/stable",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [(
                        axum::http::header::LOCATION,
                        "https://github.com/k3s-io/k3s/releases/tag/v1.31.4%2Bk3s1",
                    )],
                )
                    .into_response()
            }),
        )
        .route(
            "/channels/broken",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [(
                        axum::http::header::LOCATION,
                        "https://example.invalid/nothing-here",
                    )],
                )
                    .into_response()
            }),
        );
    rt.spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    addr
}

#[test]
fn the_channel_redirect_names_the_version() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    put_release(&files, "download/", "", BINARY);
    let channels = channel_server(&rt);
    let cache = tempfile::tempdir().expect("cache");
    let sources = Sources {
        channels: format!("http://{channels}/channels"),
        ..direct(&files)
    };
    let got = fetch_k3s(&sources, None, "stable", "amd64", cache.path(), None, false)
        .expect("latest stable");
    assert_eq!(got.version, VERSION);
    assert_eq!(std::fs::read(&got.binary.path).unwrap(), BINARY);

    let error = fetch_k3s(&sources, None, "broken", "amd64", cache.path(), None, false)
        .expect_err("no release in the redirect");
    assert!(
        matches!(error, ArtifactError::ChannelAnswer { .. }),
        "{error}"
    );
    let error = fetch_k3s(&sources, None, "latest", "amd64", cache.path(), None, false)
        .expect_err("no redirect");
    assert!(error.to_string().contains("expected a redirect"), "{error}");
}

#[test]
fn without_internet_the_channel_needs_k3s_version() {
    let rt = runtime();
    let gateway = rt.block_on(FakeFiles::start());
    let cache = tempfile::tempdir().expect("cache");
    let sources = Sources {
        direct_releases: format!("http://127.0.0.1:{}/", closed_port()),
        direct_install: format!("http://127.0.0.1:{}/", closed_port()),
        channels: format!("http://127.0.0.1:{}/channels", closed_port()),
        gateway: Some(GatewayAccess {
            base: format!("{}repository", gateway.url()),
            resolve: None,
            ca_pem: None,
        }),
        outbound: None,
    };
    let error = fetch_k3s(&sources, None, "stable", "amd64", cache.path(), None, false)
        .expect_err("no channel");
    assert!(
        matches!(error, ArtifactError::ChannelUnreachable { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("set `k3s_version`"), "{error}");
}

#[test]
fn unreachable_upstream_goes_through_the_gateway() {
    let rt = runtime();
    let gateway = rt.block_on(FakeFiles::start());
    put_release(
        &gateway,
        "repository/k3s-releases/",
        "repository/k3s-install/",
        BINARY,
    );
    let port = gateway
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let cache = tempfile::tempdir().expect("cache");
    let base = format!("http://gateway.airlock.test:{port}/repository");
    let sources = Sources {
        direct_releases: format!("http://127.0.0.1:{}/", closed_port()),
        direct_install: format!("http://127.0.0.1:{}/", closed_port()),
        channels: format!("http://127.0.0.1:{}/channels", closed_port()),
        gateway: Some(GatewayAccess {
            base: base.clone(),
            resolve: Some("127.0.0.1:0".parse().unwrap()),
            ca_pem: None,
        }),
        outbound: None,
    };
    let got = fetch(&sources, cache.path()).expect("through the gateway");
    assert_eq!(got.route, Route::Gateway);
    assert_eq!(got.binary.url, format!("{base}/k3s-releases/{VERSION}/k3s"));
    assert_eq!(got.install_script.url, format!("{base}/k3s-install/"));
    assert_eq!(std::fs::read(&got.binary.path).unwrap(), BINARY);
    assert_eq!(std::fs::read(&got.install_script.path).unwrap(), SCRIPT);
    assert_eq!(
        gateway.count(&format!("repository/k3s-releases/{VERSION}/k3s")),
        1
    );
}

#[test]
fn a_gateway_without_the_install_script_says_so() {
    let rt = runtime();
    let gateway = rt.block_on(FakeFiles::start());
    put_release(&gateway, "repository/k3s-releases/", "elsewhere", BINARY);
    let cache = tempfile::tempdir().expect("cache");
    let sources = Sources {
        direct_releases: format!("http://127.0.0.1:{}/", closed_port()),
        direct_install: format!("http://127.0.0.1:{}/", closed_port()),
        channels: String::new(),
        gateway: Some(GatewayAccess {
            base: format!("{}repository", gateway.url()),
            resolve: None,
            ca_pem: None,
        }),
        outbound: None,
    };
    let error = fetch(&sources, cache.path()).expect_err("no script");
    assert!(
        matches!(&error, ArtifactError::Status { status: 404, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("`k3s-install`"), "{error}");
    assert!(entries(&cache.path().join("sha256")).is_empty());
}

#[test]
fn unreachable_without_a_gateway_is_an_error() {
    let cache = tempfile::tempdir().expect("cache");
    let sources = Sources {
        direct_releases: format!("http://127.0.0.1:{}/", closed_port()),
        direct_install: format!("http://127.0.0.1:{}/", closed_port()),
        channels: String::new(),
        gateway: None,
        outbound: None,
    };
    let error = fetch(&sources, cache.path()).expect_err("unreachable");
    assert!(
        matches!(error, ArtifactError::Unreachable { .. }),
        "{error}"
    );
}

#[test]
fn a_bad_gateway_ca_is_a_clear_error() {
    let cache = tempfile::tempdir().expect("cache");
    let sources = Sources {
        direct_releases: "http://127.0.0.1:1/".to_owned(),
        direct_install: "http://127.0.0.1:1/".to_owned(),
        channels: String::new(),
        gateway: Some(GatewayAccess {
            base: "https://gateway.airlock.test/repository".to_owned(),
            resolve: None,
            ca_pem: Some(b"not a certificate".to_vec()),
        }),
        outbound: None,
    };
    let error = fetch(&sources, cache.path()).expect_err("bad CA");
    assert!(matches!(error, ArtifactError::BadCa(_)), "{error}");
}

#[test]
fn a_stalled_download_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ =
                    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial");
                std::thread::sleep(Duration::from_secs(30));
            });
        }
    });
    let cache = tempfile::tempdir().expect("cache");
    let sources = Sources {
        direct_releases: format!("http://{addr}/"),
        direct_install: format!("http://{addr}/"),
        channels: String::new(),
        gateway: None,
        outbound: None,
    };
    let started = Instant::now();
    let error = fetch_k3s(
        &sources,
        Some(VERSION),
        "stable",
        "amd64",
        cache.path(),
        Some(Duration::from_secs(1)),
        false,
    )
    .expect_err("stalled");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(error, ArtifactError::Timeout { seconds: 1, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("k3s_artifact_download_timeout"),
        "{error}"
    );
    assert!(entries(&cache.path().join("sha256")).is_empty());
}

#[test]
fn bad_versions_and_architectures_are_refused() {
    let cache = tempfile::tempdir().expect("cache");
    let sources = Sources {
        direct_releases: "http://127.0.0.1:1/".to_owned(),
        direct_install: "http://127.0.0.1:1/".to_owned(),
        channels: String::new(),
        gateway: None,
        outbound: None,
    };
    let error = fetch_k3s(
        &sources,
        Some("../etc"),
        "stable",
        "amd64",
        cache.path(),
        None,
        false,
    )
    .expect_err("bad version");
    assert!(matches!(error, ArtifactError::BadVersion(_)), "{error}");
    let error = fetch_k3s(
        &sources,
        Some(VERSION),
        "stable",
        "riscv",
        cache.path(),
        None,
        false,
    )
    .expect_err("bad arch");
    assert!(matches!(error, ArtifactError::UnknownArch(_)), "{error}");
}
