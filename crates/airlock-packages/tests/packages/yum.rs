//! The yum proxy against a repository the tests build with `rpmbuild` and `createrepo_c`
//! (Debian packages `rpm`, `createrepo-c`), served by an in-process file server, and a
//! real `dnf` (Debian package `dnf`) installing through the gateway, then again from the
//! cache with the upstream stopped, and checking the repomd.xml signature (`gnupg`).
//! Consistent snapshots, verification, hostile input.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_testkit::{FakeFiles, RpmSpec, build_rpm, createrepo, sign_repository};

const DEP: RpmSpec<'static> = RpmSpec {
    name: "airlock-dep",
    version: "1.0",
    requires: None,
};
const APP: RpmSpec<'static> = RpmSpec {
    name: "airlock-app",
    version: "1.0",
    requires: Some("airlock-dep"),
};

async fn start(dir: &Path, upstream: &str, extra: &str) -> SocketAddr {
    common::start(
        dir,
        &format!(
            "[[proxy]]\nname = \"el9\"\nformat = \"yum\"\nupstream = \"{upstream}\"\n{extra}\n"
        ),
    )
    .await
}

/// Builds the two-package repository under `dir/repo`; `args` go to `createrepo_c`.
fn repository(dir: &Path, args: &[&str]) -> PathBuf {
    let repo = dir.join("repo");
    build_rpm(dir, &repo, &DEP);
    build_rpm(dir, &repo, &APP);
    createrepo(&repo, args);
    repo
}

/// The repository's metadata files as `createrepo_c` named them.
fn metadata_files(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo.join("repodata"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "repomd.xml")
        .collect();
    names.sort();
    names
}

use common::get;

/// Status and body, where a body cut short by a failed verification counts as an error.
async fn fetch(url: &str) -> (u16, Result<Vec<u8>, String>) {
    let response = get(url).await;
    let status = response.status().as_u16();
    (
        status,
        response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string()),
    )
}

/// A real `dnf` installing `airlock-app` (and with it `airlock-dep`) from `repo_url`.
fn dnf_install(dir: &Path, repo_url: &str, options: &[String]) -> std::process::Output {
    airlock_testkit::dnf_install(dir, repo_url, "airlock-app", options)
}

fn unsigned() -> Vec<String> {
    vec!["--setopt=t.repo_gpgcheck=0".to_owned()]
}

fn assert_installed(root: &Path, output: &std::process::Output) {
    assert!(
        output.status.success(),
        "dnf failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for name in ["airlock-app", "airlock-dep"] {
        let hello = root.join(format!("root/usr/share/{name}/hello"));
        assert_eq!(
            std::fs::read_to_string(&hello).unwrap_or_default(),
            format!("{name}\n"),
            "{hello:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnf_installs_a_package_and_its_dependency_then_from_the_cache_upstream_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path(), &[]);
    let upstream = FakeFiles::start().await;
    upstream.put_dir("el9/", &repo);
    let addr = start(dir.path(), &format!("{}el9/", upstream.url()), "").await;
    let repo_url = format!("http://{addr}/repository/el9/");

    let first = dir.path().join("first");
    let url = repo_url.clone();
    let output = {
        let first = first.clone();
        tokio::task::spawn_blocking(move || dnf_install(&first, &url, &unsigned()))
            .await
            .unwrap()
    };
    assert_installed(&first, &output);
    for rpm in [
        "airlock-app-1.0-1.noarch.rpm",
        "airlock-dep-1.0-1.noarch.rpm",
    ] {
        assert_eq!(upstream.count(&format!("el9/{rpm}")), 1, "{rpm}");
    }

    drop(upstream);
    let second = dir.path().join("second");
    let output = {
        let second = second.clone();
        tokio::task::spawn_blocking(move || dnf_install(&second, &repo_url, &unsigned()))
            .await
            .unwrap()
    };
    assert_installed(&second, &output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnf_checks_the_repomd_signature_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path(), &[]);
    sign_repository(dir.path(), &repo);
    let upstream = FakeFiles::start().await;
    upstream.put_dir("", &repo);
    let addr = start(dir.path(), &upstream.url(), "").await;
    let repo_url = format!("http://{addr}/repository/el9/");
    let signed = vec![
        "--setopt=t.repo_gpgcheck=1".to_owned(),
        format!("--setopt=t.gpgkey={repo_url}repodata/repomd.xml.key"),
    ];
    let root = dir.path().join("signed");
    let output = {
        let (root, signed) = (root.clone(), signed.clone());
        tokio::task::spawn_blocking(move || dnf_install(&root, &repo_url, &signed))
            .await
            .unwrap()
    };
    assert_installed(&root, &output);
    assert_eq!(upstream.count("repodata/repomd.xml.asc"), 1);

    // A signature that does not match repomd.xml: dnf refuses the repository.
    let forged = dir.path().join("forged");
    std::fs::create_dir_all(&forged).unwrap();
    let other = repository(&forged, &[]);
    sign_repository(&forged, &other);
    let impostor = FakeFiles::start().await;
    impostor.put_dir("", &repo);
    impostor.put(
        "repodata/repomd.xml.asc",
        "application/pgp-signature",
        &std::fs::read(other.join("repodata/repomd.xml.asc")).unwrap(),
    );
    let addr = start(&forged, &impostor.url(), "").await;
    let repo_url = format!("http://{addr}/repository/el9/");
    let signed = vec![
        "--setopt=t.repo_gpgcheck=1".to_owned(),
        format!("--setopt=t.gpgkey={repo_url}repodata/repomd.xml.key"),
    ];
    let root = forged.join("root-dir");
    let output = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || dnf_install(&root, &repo_url, &signed))
            .await
            .unwrap()
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a forged signature is refused");
    assert!(
        stderr.contains("GPG") || stderr.contains("signature"),
        "{stderr}"
    );
    assert!(!root.join("root/usr/share/airlock-app/hello").exists());
}

#[tokio::test]
async fn repomd_is_served_with_every_listed_file_verified_and_files_keep_their_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path(), &[]);
    let upstream = FakeFiles::start().await;
    upstream.put_dir("", &repo);
    let addr = start(dir.path(), &upstream.url(), "").await;
    let base = format!("http://{addr}/repository/el9");

    let repomd = get(&format!("{base}/repodata/repomd.xml")).await;
    assert_eq!(repomd.status(), 200);
    assert_eq!(repomd.headers()["x-airlock-cache"], "miss");
    assert_eq!(
        repomd.bytes().await.unwrap(),
        std::fs::read(repo.join("repodata/repomd.xml")).unwrap()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let files = metadata_files(&repo);
    assert!(files.iter().any(|f| f.ends_with("-primary.xml.gz")));
    for file in &files {
        assert_eq!(
            upstream.count(&format!("repodata/{file}")),
            1,
            "{file} fetched with the snapshot"
        );
        let response = get(&format!("{base}/repodata/{file}")).await;
        assert_eq!(response.status(), 200, "{file}");
        assert_eq!(response.headers()["x-airlock-cache"], "hit", "{file}");
        assert!(
            response.headers().get("content-encoding").is_none(),
            "{file}: no Content-Encoding"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/octet-stream"
        );
        assert_eq!(
            response.bytes().await.unwrap(),
            std::fs::read(repo.join("repodata").join(file)).unwrap(),
            "{file}: the bytes upstream sent"
        );
    }

    for rpm in [
        "airlock-app-1.0-1.noarch.rpm",
        "airlock-dep-1.0-1.noarch.rpm",
    ] {
        for expected in ["miss", "hit"] {
            let response = get(&format!("{base}/{rpm}")).await;
            assert_eq!(response.status(), 200, "{rpm}");
            assert_eq!(response.headers()["x-airlock-cache"], expected, "{rpm}");
            assert_eq!(response.headers()["content-type"], "application/x-rpm");
            assert_eq!(
                response.bytes().await.unwrap(),
                std::fs::read(repo.join(rpm)).unwrap()
            );
            // The store commits just after the last byte reaches the client.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(upstream.count(rpm), 1, "{rpm}");
    }
    let unsigned = get(&format!("{base}/repodata/repomd.xml.asc")).await;
    assert_eq!(unsigned.status(), 404, "an unsigned repository");
    let unknown = get(&format!("{base}/airlock-nope-1.0-1.noarch.rpm")).await;
    assert_eq!(unknown.status(), 404, "an RPM primary does not list");
    assert_eq!(upstream.count("airlock-nope-1.0-1.noarch.rpm"), 0);
}

#[tokio::test]
async fn an_rpm_that_does_not_match_primary_is_an_error_and_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path(), &[]);
    let upstream = FakeFiles::start().await;
    upstream.put_dir("", &repo);
    let rpm = "airlock-dep-1.0-1.noarch.rpm";
    let real = std::fs::read(repo.join(rpm)).unwrap();
    let mut tampered = real.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    upstream.put(rpm, "application/x-rpm", &tampered);
    let addr = start(dir.path(), &upstream.url(), "").await;
    let url = format!("http://{addr}/repository/el9/{rpm}");
    for attempt in 1..=2 {
        let (status, body) = fetch(&url).await;
        assert!(
            status != 200
                || body.as_deref().is_ok_and(|b| b != tampered.as_slice())
                || body.is_err(),
            "attempt {attempt}: a mismatch never arrives whole"
        );
        assert_ne!(body.as_deref().ok(), Some(tampered.as_slice()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(upstream.count(rpm), 2, "never cached: fetched again");

    upstream.put(rpm, "application/x-rpm", &real);
    let (status, body) = fetch(&url).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), real);
}

#[tokio::test]
async fn a_new_snapshot_is_served_only_once_its_files_verify() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path(), &[]);
    let old_repomd = std::fs::read(repo.join("repodata/repomd.xml")).unwrap();
    let upstream = FakeFiles::start().await;
    upstream.put_dir("", &repo);
    let signature = "repodata/repomd.xml.asc";
    upstream.put(signature, "application/pgp-signature", b"old signature");
    let addr = start(dir.path(), &upstream.url(), "metadata_ttl = \"0s\"").await;
    let base = format!("http://{addr}/repository/el9");
    let (status, body) = fetch(&format!("{base}/repodata/repomd.xml")).await;
    assert_eq!((status, body.unwrap()), (200, old_repomd.clone()));
    let (status, body) = fetch(&format!("{base}/{signature}")).await;
    assert_eq!((status, body.unwrap()), (200, b"old signature".to_vec()));

    // Upstream publishes a new snapshot, but its primary arrives corrupted.
    let new = RpmSpec {
        name: "airlock-new",
        version: "2.0",
        requires: None,
    };
    build_rpm(dir.path(), &repo, &new);
    createrepo(&repo, &[]);
    let new_repomd = std::fs::read(repo.join("repodata/repomd.xml")).unwrap();
    assert_ne!(new_repomd, old_repomd);
    upstream.put_dir("", &repo);
    let primary = metadata_files(&repo)
        .into_iter()
        .find(|f| f.ends_with("-primary.xml.gz"))
        .unwrap();
    let primary_path = format!("repodata/{primary}");
    upstream.put(&primary_path, "application/octet-stream", b"corrupt");
    upstream.put(signature, "application/pgp-signature", b"new signature");

    let response = get(&format!("{base}/repodata/repomd.xml")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-airlock-cache"], "stale");
    assert_eq!(
        response.bytes().await.unwrap(),
        old_repomd,
        "the previous snapshot"
    );
    let (status, body) = fetch(&format!("{base}/{signature}")).await;
    assert_eq!(
        (status, body.unwrap()),
        (200, b"old signature".to_vec()),
        "the signature of the repomd.xml served"
    );
    let (status, body) = fetch(&format!("{base}/airlock-app-1.0-1.noarch.rpm")).await;
    assert_eq!(
        status, 200,
        "packages of the previous snapshot keep working"
    );
    assert_eq!(
        body.unwrap(),
        std::fs::read(repo.join("airlock-app-1.0-1.noarch.rpm")).unwrap()
    );

    upstream.put(
        &primary_path,
        "application/octet-stream",
        &std::fs::read(repo.join(&primary_path)).unwrap(),
    );
    let (status, body) = fetch(&format!("{base}/repodata/repomd.xml")).await;
    assert_eq!((status, body.unwrap()), (200, new_repomd));
    let (status, body) = fetch(&format!("{base}/{signature}")).await;
    assert_eq!((status, body.unwrap()), (200, b"new signature".to_vec()));
    let (status, body) = fetch(&format!("{base}/airlock-new-2.0-1.noarch.rpm")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body.unwrap(),
        std::fs::read(repo.join("airlock-new-2.0-1.noarch.rpm")).unwrap()
    );
}

#[tokio::test]
async fn corrupted_metadata_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path(), &[]);

    // A primary whose bytes do not match repomd.xml: the snapshot is not served.
    let upstream = FakeFiles::start().await;
    upstream.put_dir("", &repo);
    let primary = metadata_files(&repo)
        .into_iter()
        .find(|f| f.ends_with("-primary.xml.gz"))
        .unwrap();
    upstream.put(
        &format!("repodata/{primary}"),
        "application/octet-stream",
        b"\x1f\x8b not the primary",
    );
    let addr = start(&dir.path().join("a"), &upstream.url(), "").await;
    let base = format!("http://{addr}/repository/el9");
    let (status, _) = fetch(&format!("{base}/repodata/repomd.xml")).await;
    assert_eq!(status, 502, "a snapshot whose primary cannot be verified");
    let (status, body) = fetch(&format!("{base}/airlock-dep-1.0-1.noarch.rpm")).await;
    assert!(status == 502 || body.is_err(), "{status}");
    let (status, body) = fetch(&format!("{base}/repodata/{primary}")).await;
    assert!(status == 502 || body.is_err(), "{status}");

    // A repomd.xml that is not one: refused, not cached.
    let broken = FakeFiles::start().await;
    broken.put_dir("", &repo);
    broken.put(
        "repodata/repomd.xml",
        "text/xml",
        b"<html><body>503 Service Unavailable</body></html>",
    );
    let addr = start(&dir.path().join("b"), &broken.url(), "").await;
    let url = format!("http://{addr}/repository/el9/repodata/repomd.xml");
    for _ in 0..2 {
        let (status, body) = fetch(&url).await;
        assert_eq!(status, 502);
        assert!(String::from_utf8_lossy(&body.unwrap()).contains("malformed"));
    }
    assert_eq!(broken.count("repodata/repomd.xml"), 2, "never cached");

    // Checksums other than sha256 are refused, saying why.
    let sha1 = FakeFiles::start().await;
    let old = dir.path().join("sha1");
    std::fs::create_dir_all(&old).unwrap();
    let old_repo = repository(&old, &["--checksum", "sha1"]);
    sha1.put_dir("", &old_repo);
    let addr = start(&dir.path().join("c"), &sha1.url(), "").await;
    let (status, body) = fetch(&format!("http://{addr}/repository/el9/repodata/repomd.xml")).await;
    assert_eq!(status, 502);
    assert!(String::from_utf8_lossy(&body.unwrap()).contains("sha1 checksum"));
}

#[tokio::test]
async fn packages_with_xml_base_are_fetched_from_that_base() {
    let dir = tempfile::tempdir().unwrap();
    let packages = FakeFiles::start().await;
    let repo = repository(
        dir.path(),
        &["--baseurl", &format!("{}pool/", packages.url())],
    );
    let metadata = FakeFiles::start().await;
    metadata.put_dir("", &repo.join("repodata")).to_string();
    let mut moved = 0;
    for rpm in [
        "airlock-app-1.0-1.noarch.rpm",
        "airlock-dep-1.0-1.noarch.rpm",
    ] {
        packages.put(
            &format!("pool/{rpm}"),
            "application/x-rpm",
            &std::fs::read(repo.join(rpm)).unwrap(),
        );
        moved += 1;
    }
    assert_eq!(moved, 2);
    // put_dir put the metadata at the root; the repository root holds repodata/.
    metadata.put_dir("repodata/", &repo.join("repodata"));
    let addr = start(dir.path(), &metadata.url(), "").await;
    let rpm = "airlock-dep-1.0-1.noarch.rpm";
    let (status, body) = fetch(&format!("http://{addr}/repository/el9/{rpm}")).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), std::fs::read(repo.join(rpm)).unwrap());
    assert_eq!(packages.count(&format!("pool/{rpm}")), 1);
    assert_eq!(metadata.count(rpm), 0);
}

#[tokio::test]
async fn hostile_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = FakeFiles::start().await;
    let addr = start(dir.path(), &upstream.url(), "").await;
    for path in [
        "/repository/el9/../../etc/passwd",
        "/repository/el9/repodata/%2e%2e/repomd.xml",
        "/repository/el9/Packages//a.rpm",
        "/repository/el9/repodata%2frepomd.xml",
        "/repository/el9/Packages/..%5ca.rpm",
    ] {
        let answer = common::raw_get(addr, path).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    assert_eq!(upstream.count("repodata/repomd.xml"), 0);
}

/// Where the nested repositories below live on the fake upstream, as on `rpm.rancher.io`.
const NESTED: &str = "k3s/stable/common/centos/9/noarch/";

/// Builds a repository of `specs` under `dir/<name>`, its packages in `Packages/`.
fn packages_repository(dir: &Path, name: &str, specs: &[RpmSpec<'_>]) -> PathBuf {
    let work = dir.join(format!("{name}-build"));
    let repo = dir.join(name);
    for spec in specs {
        build_rpm(&work, &repo.join("Packages"), spec);
    }
    createrepo(&repo, &[]);
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnf_installs_from_a_repository_nested_below_the_upstream_root() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path(), &[]);
    let upstream = FakeFiles::start().await;
    upstream.put_dir(NESTED, &repo);
    let addr = start(dir.path(), &upstream.url(), "").await;
    let repo_url = format!("http://{addr}/repository/el9/{NESTED}");

    let root = dir.path().join("nested");
    let output = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || dnf_install(&root, &repo_url, &unsigned()))
            .await
            .unwrap()
    };
    assert_installed(&root, &output);
    assert_eq!(upstream.count(&format!("{NESTED}repodata/repomd.xml")), 1);
    for rpm in [
        "airlock-app-1.0-1.noarch.rpm",
        "airlock-dep-1.0-1.noarch.rpm",
    ] {
        assert_eq!(upstream.count(&format!("{NESTED}{rpm}")), 1, "{rpm}");
    }
    assert_eq!(
        upstream.count("repodata/repomd.xml"),
        0,
        "the snapshot dnf read names the packages' repository: no search above it"
    );
}

#[tokio::test]
async fn a_nested_repository_is_a_verified_snapshot_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path(), &[]);
    let upstream = FakeFiles::start().await;
    upstream.put_dir(NESTED, &repo);
    let addr = start(dir.path(), &upstream.url(), "").await;
    let base = format!("http://{addr}/repository/el9/{NESTED}");

    let repomd = get(&format!("{base}repodata/repomd.xml")).await;
    assert_eq!(repomd.status(), 200);
    assert_eq!(repomd.headers()["x-airlock-cache"], "miss");
    assert_eq!(
        repomd.bytes().await.unwrap(),
        std::fs::read(repo.join("repodata/repomd.xml")).unwrap()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    for file in metadata_files(&repo) {
        let path = format!("{NESTED}repodata/{file}");
        assert_eq!(upstream.count(&path), 1, "{file} fetched with the snapshot");
        let response = get(&format!("{base}repodata/{file}")).await;
        assert_eq!(response.status(), 200, "{file}");
        assert_eq!(response.headers()["x-airlock-cache"], "hit", "{file}");
        assert!(response.headers().get("content-encoding").is_none());
    }
    let unsigned = get(&format!("{base}repodata/repomd.xml.asc")).await;
    assert_eq!(unsigned.status(), 404, "an unsigned repository");
    let unknown = get(&format!("{base}airlock-nope-1.0-1.noarch.rpm")).await;
    assert_eq!(unknown.status(), 404, "an RPM primary does not list");
    assert_eq!(
        upstream.count(&format!("{NESTED}airlock-nope-1.0-1.noarch.rpm")),
        0
    );
}

#[tokio::test]
async fn a_tampered_rpm_in_a_nested_repository_is_refused_and_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path(), &[]);
    let upstream = FakeFiles::start().await;
    upstream.put_dir(NESTED, &repo);
    let rpm = format!("{NESTED}airlock-dep-1.0-1.noarch.rpm");
    let real = std::fs::read(repo.join("airlock-dep-1.0-1.noarch.rpm")).unwrap();
    let mut tampered = real.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    upstream.put(&rpm, "application/x-rpm", &tampered);
    let addr = start(dir.path(), &upstream.url(), "").await;
    let base = format!("http://{addr}/repository/el9/");
    let (status, _) = fetch(&format!("{base}{NESTED}repodata/repomd.xml")).await;
    assert_eq!(status, 200);
    let url = format!("{base}{rpm}");
    for attempt in 1..=2 {
        let (status, body) = fetch(&url).await;
        assert!(
            status != 200 || body.is_err(),
            "attempt {attempt}: a mismatch never arrives whole ({status})"
        );
        assert_ne!(body.as_deref().ok(), Some(tampered.as_slice()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(upstream.count(&rpm), 2, "never cached: fetched again");

    upstream.put(&rpm, "application/x-rpm", &real);
    let (status, body) = fetch(&url).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), real);
}

#[tokio::test]
async fn an_rpm_requested_first_is_found_by_searching_the_directories_above_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = packages_repository(dir.path(), "repo", &[DEP, APP]);
    let upstream = FakeFiles::start().await;
    upstream.put_dir(NESTED, &repo);
    // A repository at the upstream root as well, which must not be the one chosen.
    let top = packages_repository(dir.path(), "top", &[DEP]);
    upstream.put_dir("", &top);
    let addr = start(dir.path(), &upstream.url(), "").await;
    let base = format!("http://{addr}/repository/el9/");

    // A fresh gateway knows no snapshot: the directories above the package are tried,
    // deepest first, until one's repomd.xml lists it.
    let dep = "Packages/airlock-dep-1.0-1.noarch.rpm";
    let (status, body) = fetch(&format!("{base}{NESTED}{dep}")).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), std::fs::read(repo.join(dep)).unwrap());
    let packages_repomd = format!("{NESTED}Packages/repodata/repomd.xml");
    assert_eq!(upstream.count(&packages_repomd), 1, "tried first, missing");
    assert_eq!(upstream.count(&format!("{NESTED}repodata/repomd.xml")), 1);
    assert_eq!(
        upstream.count("repodata/repomd.xml"),
        0,
        "not searched further"
    );
    assert_eq!(upstream.count(&format!("{NESTED}{dep}")), 1);

    // Now the snapshot is known: the next package goes straight to it.
    let app = "Packages/airlock-app-1.0-1.noarch.rpm";
    let (status, body) = fetch(&format!("{base}{NESTED}{app}")).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), std::fs::read(repo.join(app)).unwrap());
    assert_eq!(upstream.count(&packages_repomd), 1);

    // The root repository serves its own copy, verified against its own primary.
    let (status, body) = fetch(&format!("{base}{dep}")).await;
    assert_eq!(status, 200);
    let top_dep = std::fs::read(top.join(dep)).unwrap();
    assert_eq!(body.unwrap(), top_dep);
    // Two rpmbuild runs in the same second make identical files: the store already holds
    // those verified bytes, so nothing is fetched.
    let identical = top_dep == std::fs::read(repo.join(dep)).unwrap();
    assert_eq!(upstream.count(dep), u64::from(!identical));

    // A package no repository above it lists: 404, and the file is never fetched.
    let nope = format!("{NESTED}Packages/airlock-nope-1.0-1.noarch.rpm");
    upstream.put(&nope, "application/x-rpm", b"not listed anywhere");
    let (status, _) = fetch(&format!("{base}{nope}")).await;
    assert_eq!(status, 404);
    assert_eq!(upstream.count(&nope), 0);
}

#[tokio::test]
async fn sibling_nested_repositories_keep_their_own_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let nine = packages_repository(dir.path(), "nine", &[DEP, APP]);
    sign_repository(&dir.path().join("nine-keys"), &nine);
    let old = RpmSpec {
        name: "airlock-old",
        version: "8.0",
        requires: None,
    };
    let eight = packages_repository(dir.path(), "eight", &[old]);
    let upstream = FakeFiles::start().await;
    upstream.put_dir("9/x86_64/", &nine);
    upstream.put_dir("8/x86_64/", &eight);
    let addr = start(dir.path(), &upstream.url(), "").await;
    let base = format!("http://{addr}/repository/el9/");

    for (root, repo) in [("9/x86_64/", &nine), ("8/x86_64/", &eight)] {
        let (status, body) = fetch(&format!("{base}{root}repodata/repomd.xml")).await;
        assert_eq!(status, 200, "{root}");
        assert_eq!(
            body.unwrap(),
            std::fs::read(repo.join("repodata/repomd.xml")).unwrap(),
            "{root}"
        );
    }
    let (status, body) = fetch(&format!("{base}9/x86_64/repodata/repomd.xml.asc")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body.unwrap(),
        std::fs::read(nine.join("repodata/repomd.xml.asc")).unwrap()
    );
    let (status, _) = fetch(&format!("{base}8/x86_64/repodata/repomd.xml.asc")).await;
    assert_eq!(status, 404, "the signature of 9 is not the signature of 8");

    let old_rpm = "Packages/airlock-old-8.0-1.noarch.rpm";
    let (status, body) = fetch(&format!("{base}8/x86_64/{old_rpm}")).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), std::fs::read(eight.join(old_rpm)).unwrap());
    let app_rpm = "Packages/airlock-app-1.0-1.noarch.rpm";
    let (status, body) = fetch(&format!("{base}9/x86_64/{app_rpm}")).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), std::fs::read(nine.join(app_rpm)).unwrap());

    // Each repository's packages are only its own, even where the upstream has the file.
    upstream.put(
        &format!("9/x86_64/{old_rpm}"),
        "application/x-rpm",
        &std::fs::read(eight.join(old_rpm)).unwrap(),
    );
    let (status, _) = fetch(&format!("{base}9/x86_64/{old_rpm}")).await;
    assert_eq!(status, 404, "8's package is not in 9's primary");
    assert_eq!(upstream.count(&format!("9/x86_64/{old_rpm}")), 0);
    let (status, _) = fetch(&format!("{base}8/x86_64/{app_rpm}")).await;
    assert_eq!(status, 404, "9's package is not in 8's primary");
    assert_eq!(upstream.count(&format!("8/x86_64/{app_rpm}")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_nonexistent_roots_leave_the_yum_tables_bounded() {
    let upstream = FakeFiles::start().await;
    let dir = tempfile::tempdir().unwrap();
    let name = "el9-bounded";
    let (addr, packages) = common::start_with_packages(
        dir.path(),
        &format!(
            "[[proxy]]\nname = \"{name}\"\nformat = \"yum\"\nupstream = \"{}\"\n",
            upstream.url()
        ),
    )
    .await;
    let base = format!("http://{addr}/repository/{name}/");
    // Each request tries two roots nobody else tries (d<i>/x/ and d<i>/) and the top one.
    let requests: u64 = 1_000;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..requests {
        if tasks.len() >= 16 {
            assert_eq!(tasks.join_next().await.unwrap().unwrap(), 404);
        }
        let url = format!("{base}d{i}/x/a-1.0-1.noarch.rpm");
        tasks.spawn(async move { get(&url).await.status().as_u16() });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 404);
    }
    let stats = packages.derived_stats(name);
    let table = |name: &str| stats.iter().find(|t| t.name == name).unwrap();
    let missing = table("yum-no-repository");
    // Concurrent first requests may each record the top directory.
    assert!(
        (2 * requests + 1..=2 * requests + 16).contains(&missing.computed),
        "{stats:?}"
    );
    assert!(missing.kept <= missing.capacity, "{stats:?}");
    assert!(missing.capacity < 2_000, "{stats:?}");
    let last_good = table("yum-last-good");
    assert_eq!(
        last_good.kept, 0,
        "only roots with a valid repomd.xml: {stats:?}"
    );
    // The top directory was asked upstream once, then remembered as holding nothing.
    assert_eq!(upstream.count("repodata/repomd.xml"), 1);
}
