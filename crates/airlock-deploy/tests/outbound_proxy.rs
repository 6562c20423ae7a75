//! The control node behind the site's outbound proxy: K3s downloads go through the proxy
//! the inventory names (`https_proxy`, with credentials), or direct for `no_proxy` hosts,
//! never through one named in the environment. A real proxy (tinyproxy) logs what it
//! carried.

mod common;

use std::time::Duration;

use airlock_deploy::artifacts::{Sources, fetch_k3s};
use airlock_testkit::FakeFiles;
use airlock_testkit::tinyproxy::Tinyproxy;
use sha2::{Digest, Sha256};

const VERSION: &str = "v1.31.4+k3s1";
const BINARY: &[u8] = b"\x7fELF stand-in for the k3s binary";
const SCRIPT: &[u8] = b"#!/bin/sh\necho install k3s\n";
const PASSWORD: &str = "c0ntrol-node-pa55";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A release on a loopback file server, its URL.
fn release(files: &FakeFiles) {
    let checksums = format!("{}  k3s\n", hex::encode(Sha256::digest(BINARY)));
    files.put(
        &format!("download/{VERSION}/sha256sum-amd64.txt"),
        "text/plain",
        checksums.as_bytes(),
    );
    files.put(
        &format!("download/{VERSION}/k3s"),
        "application/octet-stream",
        BINARY,
    );
    files.put("install.sh", "text/plain", SCRIPT);
}

/// The site: K3s from `files`, the outbound proxy `proxy_url`, and more staging vars.
fn sources(files: &FakeFiles, proxy_url: &str, extra: &str) -> Sources {
    let staging = format!(
        "    https_proxy: \"{proxy_url}\"\n{extra}    airlock_upstreams:\n      k3s-releases: \"{0}download/\"\n      k3s-install: \"{0}install.sh\"\n",
        files.url()
    );
    let inventory = common::parse(&common::site(&staging, ""));
    let (site, diagnostics) = airlock_site::site::Site::read(&inventory, None);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    Sources::for_site(&site, None).expect("the proxy settings are usable")
}

fn fetch(sources: &Sources, cache: &std::path::Path) -> Result<(), String> {
    fetch_k3s(
        sources,
        Some(VERSION),
        "stable",
        "amd64",
        cache,
        Some(Duration::from_secs(20)),
        false,
    )
    .map(|got| assert_eq!(std::fs::read(&got.binary.path).unwrap(), BINARY))
    .map_err(|e| e.to_string())
}

#[test]
fn k3s_downloads_go_through_the_inventorys_proxy() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    release(&files);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start(&dir.path().join("proxy"), Some(("deploy", PASSWORD)));
    let url = format!("http://deploy:{PASSWORD}@{}", proxy.addr());
    fetch(&sources(&files, &url, ""), &dir.path().join("cache")).expect("fetched");
    let through = proxy.requests();
    let base = files.url();
    for path in [
        format!("download/{VERSION}/sha256sum-amd64.txt"),
        format!("download/{VERSION}/k3s"),
        "install.sh".to_owned(),
    ] {
        assert!(
            through
                .iter()
                .any(|r| r.starts_with(&format!("GET {base}{path} "))),
            "{path} went through the proxy: {through:#?}"
        );
    }
}

#[test]
fn no_proxy_hosts_are_fetched_directly() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    release(&files);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start(&dir.path().join("proxy"), None);
    fetch(
        &sources(
            &files,
            &proxy.url(),
            "    no_proxy: \"127.0.0.0/8,.example.org\"\n",
        ),
        &dir.path().join("cache"),
    )
    .expect("fetched");
    assert_eq!(proxy.requests(), Vec::<String>::new());
    assert!(files.total_requests() >= 3);
}

#[test]
fn a_refusing_proxy_is_reported_without_its_password() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    release(&files);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start(&dir.path().join("proxy"), Some(("deploy", "the-right-one")));
    let url = format!("http://deploy:{PASSWORD}@{}", proxy.addr());
    let error = fetch(&sources(&files, &url, ""), &dir.path().join("cache")).unwrap_err();
    // tinyproxy refuses wrong credentials with 401 (no credentials at all: 407).
    assert!(
        error.contains("answered 401") || error.contains("answered 407"),
        "{error}"
    );
    assert!(!error.contains(PASSWORD), "{error}");
    assert_eq!(files.total_requests(), 0, "nothing went around the proxy");
}
