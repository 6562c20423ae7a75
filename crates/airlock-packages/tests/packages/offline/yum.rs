//! dnf against an offline `yum` proxy: the repository's metadata regenerated from the
//! packages fetched before (consistent checksums, unsigned), so dnf installs what is held
//! and does not see the rest.

#![allow(clippy::unnecessary_debug_formatting)]

use std::path::Path;

use airlock_testkit::{FakeFiles, RpmSpec, build_rpm, createrepo};
use airlock_types::Digest;

use super::{shown, start, unreachable};
use crate::common;

const PROXY: &str = "name = \"el9\"\nformat = \"yum\"";

const PACKAGES: [RpmSpec<'static>; 3] = [
    RpmSpec {
        name: "airlock-dep",
        version: "1.0",
        requires: None,
    },
    RpmSpec {
        name: "airlock-app",
        version: "1.0",
        requires: Some("airlock-dep"),
    },
    RpmSpec {
        name: "airlock-extra",
        version: "1.0",
        requires: None,
    },
];

/// A real `dnf` installing `package` from `url` alone. What the .repo guidance says for an
/// offline gateway: regenerated metadata is unsigned; packages keep their own signatures
/// (not signed in this fixture).
fn dnf_install(dir: &Path, url: &str, package: &str) -> std::process::Output {
    airlock_testkit::dnf_install(
        dir,
        url,
        package,
        &["--setopt=t.repo_gpgcheck=0".to_owned()],
    )
}

async fn install(dir: &Path, url: &str, package: &str) -> std::process::Output {
    let (dir, url, package) = (dir.to_owned(), url.to_owned(), package.to_owned());
    tokio::task::spawn_blocking(move || dnf_install(&dir, &url, &package))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnf_installs_what_is_held_from_regenerated_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    for spec in &PACKAGES {
        build_rpm(dir.path(), &repo, spec);
    }
    createrepo(&repo, &[]);
    let upstream = FakeFiles::start().await;
    upstream.put_dir("el9/", &repo);

    let online = start(dir.path(), PROXY, &format!("{}el9/", upstream.url()), false).await;
    let url = format!("http://{}/repository/el9/", online.addr);
    let output = install(&dir.path().join("online"), &url, "airlock-app").await;
    assert!(output.status.success(), "dnf online: {}", shown(&output));
    assert_eq!(upstream.count("el9/airlock-extra-1.0-1.noarch.rpm"), 0);
    online.stop().await;
    drop(upstream);

    let offline = start(dir.path(), PROXY, &unreachable("el9/"), true).await;
    let url = format!("http://{}/repository/el9/", offline.addr);
    let repomd = common::get(&format!("{url}repodata/repomd.xml")).await;
    assert_eq!(repomd.status(), 200);
    let repomd = airlock_yum::Repomd::parse(&repomd.bytes().await.unwrap()).unwrap();
    let mut kinds: Vec<&str> = repomd.entries.iter().map(|e| e.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["filelists", "other", "primary"]);
    // Every file repomd.xml names is served with the checksum it gives.
    for entry in &repomd.entries {
        let file = common::get(&format!("{url}{}", entry.href)).await;
        assert_eq!(file.status(), 200, "{}", entry.href);
        let bytes = file.bytes().await.unwrap();
        assert_eq!(
            Digest::of(&bytes).hex(),
            entry.checksum.as_ref().unwrap().hex
        );
    }
    let primary = common::get(&format!("{url}{}", repomd.primary().href))
        .await
        .bytes()
        .await
        .unwrap();
    let mut names = Vec::new();
    airlock_yum::read_primary(
        &repomd.primary().href,
        &primary,
        1 << 24,
        airlock_yum::Detail::Locations,
        |p| {
            names.push(p.name.unwrap());
            Ok::<_, airlock_yum::RepodataError>(())
        },
    )
    .unwrap();
    names.sort();
    assert_eq!(names, ["airlock-app", "airlock-dep"]);
    let signature = common::get(&format!("{url}repodata/repomd.xml.asc")).await;
    assert_eq!(signature.status(), 404, "regenerated metadata is unsigned");

    let root = dir.path().join("offline");
    let output = install(&root, &url, "airlock-app").await;
    assert!(output.status.success(), "dnf offline: {}", shown(&output));
    for name in ["airlock-app", "airlock-dep"] {
        let hello = root.join(format!("root/usr/share/{name}/hello"));
        assert_eq!(
            std::fs::read_to_string(&hello).unwrap(),
            format!("{name}\n")
        );
    }
    // The package never fetched is not in the repository dnf sees.
    let output = install(&dir.path().join("extra"), &url, "airlock-extra").await;
    assert!(!output.status.success());
    let said = shown(&output);
    assert!(
        said.contains("No match for argument") || said.contains("Unable to find a match"),
        "{said}"
    );
    offline.stop().await;
}

#[tokio::test]
async fn a_repository_held_whole_is_served_as_published_signature_included() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    for spec in &PACKAGES[..2] {
        build_rpm(dir.path(), &repo, spec);
    }
    createrepo(&repo, &[]);
    airlock_testkit::sign_repository(dir.path(), &repo);
    let upstream = FakeFiles::start().await;
    upstream.put_dir("", &repo);

    let online = start(dir.path(), PROXY, &upstream.url(), false).await;
    let url = format!("http://{}/repository/el9/", online.addr);
    for path in [
        "repodata/repomd.xml",
        "repodata/repomd.xml.asc",
        "airlock-app-1.0-1.noarch.rpm",
        "airlock-dep-1.0-1.noarch.rpm",
    ] {
        assert_eq!(
            common::get(&format!("{url}{path}")).await.status(),
            200,
            "{path}"
        );
    }
    online.stop().await;
    drop(upstream);

    let offline = start(dir.path(), PROXY, &unreachable(""), true).await;
    let url = format!("http://{}/repository/el9/", offline.addr);
    for name in ["repomd.xml", "repomd.xml.asc"] {
        let served = common::get(&format!("{url}repodata/{name}")).await;
        assert_eq!(served.status(), 200, "{name}");
        assert_eq!(
            served.bytes().await.unwrap(),
            std::fs::read(repo.join("repodata").join(name)).unwrap(),
            "{name} as upstream published it"
        );
    }
    offline.stop().await;
}
