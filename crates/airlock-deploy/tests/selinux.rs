//! `SELinux` packages without a yum proxy: real repositories built with `rpmbuild` and
//! `createrepo_c`, served on loopback, resolved and downloaded on the control node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_deploy::artifacts::Http;
use airlock_deploy::rpms::selinux::PACKAGES;
use airlock_deploy::rpms::{Closure, RpmError, download_rpms, resolve_closure};
use airlock_testkit::{FakeFiles, RpmSpec, build_rpm, createrepo, require_tool};
use sha2::{Digest, Sha256};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn http() -> Http {
    Http::new(None, None, Some(Duration::from_secs(30)), false).expect("client")
}

/// Rancher-like: `k3s-selinux` needs `container-selinux`, which is here in two versions and
/// needs `policycoreutils` (only the OS has it).
fn rancher_like(work: &Path, createrepo_args: &[&str]) -> PathBuf {
    require_tool("rpmbuild", "rpm");
    require_tool("createrepo_c", "createrepo-c");
    let repo = work.join("repo");
    for spec in [
        RpmSpec {
            name: "k3s-selinux",
            version: "1.6",
            requires: Some("container-selinux >= 2.164"),
        },
        RpmSpec {
            name: "container-selinux",
            version: "2.229",
            requires: Some("policycoreutils >= 3.0"),
        },
        RpmSpec {
            name: "container-selinux",
            version: "2.100",
            requires: None,
        },
        RpmSpec {
            name: "unrelated",
            version: "1.0",
            requires: None,
        },
    ] {
        build_rpm(work, &repo, &spec);
    }
    createrepo(&repo, createrepo_args);
    repo
}

fn serve(files: &FakeFiles, prefix: &str, repo: &Path) -> String {
    assert!(files.put_dir(prefix, repo) > 0);
    format!("{}{}", files.url(), prefix.trim_end_matches('/'))
}

fn names(closure: &Closure) -> Vec<String> {
    closure
        .packages
        .iter()
        .map(|p| format!("{}-{}", p.name, p.evr))
        .collect()
}

#[test]
fn the_closure_follows_requirements_and_leaves_the_rest_to_the_os() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    let work = tempfile::tempdir().expect("work");
    let repo = rancher_like(work.path(), &[]);
    let url = serve(&files, "k3s/stable/common/centos/9/noarch/", &repo);

    let closure =
        resolve_closure(std::slice::from_ref(&url), &PACKAGES, "x86_64", &http()).expect("closure");
    assert_eq!(
        names(&closure),
        ["k3s-selinux-1.6-1", "container-selinux-2.229-1"]
    );
    assert_eq!(closure.left_to_os.len(), 1, "{:?}", closure.left_to_os);
    assert_eq!(closure.left_to_os[0].requirement, "policycoreutils >= 3.0");
    assert_eq!(
        closure.left_to_os[0].required_by.as_deref(),
        Some("container-selinux-2.229-1.noarch")
    );
    let k3s = &closure.packages[0];
    assert_eq!(k3s.file_name, "k3s-selinux-1.6-1.noarch.rpm");
    assert_eq!(k3s.url, format!("{url}/k3s-selinux-1.6-1.noarch.rpm"));
    assert_eq!(k3s.checksum.kind, "sha256");

    let cache = tempfile::tempdir().expect("cache");
    let rpms = download_rpms(&closure, cache.path(), &http()).expect("download");
    assert_eq!(rpms.len(), 2);
    for rpm in &rpms {
        let bytes = std::fs::read(&rpm.path).unwrap();
        assert_eq!(
            bytes,
            std::fs::read(repo.join(&rpm.package.file_name)).unwrap()
        );
        assert_eq!(hex::encode(Sha256::digest(&bytes)), rpm.sha256);
        assert_eq!(rpm.path, cache.path().join("sha256").join(&rpm.sha256));
    }
    // A second download is served from the cache.
    download_rpms(&closure, cache.path(), &http()).expect("again");
    assert_eq!(
        files.count("k3s/stable/common/centos/9/noarch/k3s-selinux-1.6-1.noarch.rpm"),
        1
    );
}

#[test]
fn a_version_constraint_picks_an_older_package_and_absent_wanted_goes_to_the_os() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    let work = tempfile::tempdir().expect("work");
    let repo = work.path().join("repo");
    for spec in [
        RpmSpec {
            name: "k3s-selinux",
            version: "1.4",
            requires: Some("container-selinux < 2.200"),
        },
        RpmSpec {
            name: "container-selinux",
            version: "2.229",
            requires: None,
        },
        RpmSpec {
            name: "container-selinux",
            version: "2.164",
            requires: None,
        },
    ] {
        build_rpm(work.path(), &repo, &spec);
    }
    createrepo(&repo, &[]);
    let url = serve(&files, "el8/", &repo);
    let closure = resolve_closure(&[url], &["k3s-selinux"], "x86_64", &http()).expect("closure");
    assert_eq!(
        names(&closure),
        ["k3s-selinux-1.4-1", "container-selinux-2.164-1"]
    );

    // Only in the OS's repositories: reported, not an error, while something resolved.
    let url = format!("{}el8", files.url());
    let closure = resolve_closure(
        std::slice::from_ref(&url),
        &["k3s-selinux", "selinux-policy"],
        "x86_64",
        &http(),
    )
    .expect("closure");
    assert_eq!(closure.left_to_os[0].requirement, "selinux-policy");
    assert_eq!(closure.left_to_os[0].required_by, None);
    let error = resolve_closure(&[url], &["nothing-like-this"], "x86_64", &http())
        .expect_err("nothing found");
    assert!(matches!(error, RpmError::NothingFound { .. }), "{error}");
}

#[test]
fn every_published_compression_is_read() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    for compression in ["gz", "xz", "bz2"] {
        let work = tempfile::tempdir().expect("work");
        let repo = rancher_like(
            work.path(),
            &[&format!("--general-compress-type={compression}")],
        );
        let repomd = std::fs::read_to_string(repo.join("repodata/repomd.xml")).unwrap();
        assert!(
            repomd.contains(&format!("primary.xml.{compression}")),
            "{compression}: {repomd}"
        );
        let url = serve(&files, &format!("{compression}/"), &repo);
        let closure = resolve_closure(&[url], &PACKAGES, "x86_64", &http()).expect(compression);
        assert_eq!(closure.packages.len(), 2, "{compression}");
    }
    // zstd (createrepo_c 1.x's default): this createrepo_c may lack it, so the gzip primary
    // is recompressed and a repomd.xml written for it.
    let work = tempfile::tempdir().expect("work");
    let repo = rancher_like(work.path(), &["--general-compress-type=gz"]);
    let gz = std::fs::read_dir(repo.join("repodata"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("primary.xml.gz"))
        .expect("a gzip primary");
    let mut xml = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(gz).unwrap()),
        &mut xml,
    )
    .unwrap();
    let zst = zstd::encode_all(&xml[..], 3).unwrap();
    let url = serve(&files, "zst/", &repo);
    files.put(
        "zst/repodata/repomd.xml",
        "text/xml",
        repomd_for("repodata/primary.xml.zst", &zst).as_bytes(),
    );
    files.put("zst/repodata/primary.xml.zst", "application/zstd", &zst);
    let closure = resolve_closure(&[url], &PACKAGES, "x86_64", &http()).expect("zst");
    assert_eq!(closure.packages.len(), 2, "zst");
}

#[test]
fn a_tampered_rpm_is_refused_and_not_cached() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    let work = tempfile::tempdir().expect("work");
    let repo = rancher_like(work.path(), &[]);
    let url = serve(&files, "repo/", &repo);
    let closure =
        resolve_closure(std::slice::from_ref(&url), &PACKAGES, "x86_64", &http()).expect("closure");
    let tampered = b"not the package the metadata describes";
    files.put(
        "repo/k3s-selinux-1.6-1.noarch.rpm",
        "application/x-rpm",
        tampered,
    );
    let cache = tempfile::tempdir().expect("cache");
    let error = download_rpms(&closure, cache.path(), &http()).expect_err("tampered");
    match &error {
        RpmError::ChecksumMismatch {
            url: got, actual, ..
        } => {
            assert_eq!(got, &format!("{url}/k3s-selinux-1.6-1.noarch.rpm"));
            assert_eq!(actual, &hex::encode(Sha256::digest(tampered)));
        }
        other => panic!("expected a checksum mismatch, got {other}"),
    }
    let blobs: Vec<_> = std::fs::read_dir(cache.path().join("sha256"))
        .unwrap()
        .collect();
    assert!(blobs.is_empty(), "{blobs:?}");
    assert_eq!(
        std::fs::read_dir(cache.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn sha1_repositories_are_refused_as_insecure() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    let work = tempfile::tempdir().expect("work");
    let repo = rancher_like(work.path(), &["--checksum", "sha1"]);
    let url = serve(&files, "old/", &repo);
    let error = resolve_closure(&[url], &PACKAGES, "x86_64", &http()).expect_err("sha1");
    assert!(
        matches!(error, RpmError::InsecureChecksum { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("not secure"), "{error}");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn repomd_for(href: &str, primary: &[u8]) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <data type="primary">
    <checksum type="sha256">{}</checksum>
    <location href="{href}"/>
  </data>
</repomd>
"#,
        hex::encode(Sha256::digest(primary))
    )
}

#[test]
fn malformed_metadata_is_a_clear_error() {
    let rt = runtime();
    let files = rt.block_on(FakeFiles::start());
    let check = |name: &str, expected: &str| {
        let error = resolve_closure(
            &[format!("{}{name}", files.url())],
            &PACKAGES,
            "x86_64",
            &http(),
        )
        .expect_err(name);
        assert!(error.to_string().contains(expected), "{name}: {error}");
    };

    files.put("notxml/repodata/repomd.xml", "text/xml", b"<repomd><data");
    check("notxml", "not XML");

    files.put(
        "html/repodata/repomd.xml",
        "text/html",
        b"<html><body>hi</body></html>",
    );
    check("html", "not a repomd.xml");

    files.put(
        "noprimary/repodata/repomd.xml",
        "text/xml",
        br#"<repomd><data type="other"><location href="repodata/o.xml.gz"/></data></repomd>"#,
    );
    check("noprimary", "no primary metadata");

    let primary = gzip(b"<metadata><package type=\"rpm\"><name>x</name></package></metadata>");
    files.put(
        "wrongsum/repodata/repomd.xml",
        "text/xml",
        repomd_for("repodata/primary.xml.gz", b"other bytes").as_bytes(),
    );
    files.put(
        "wrongsum/repodata/primary.xml.gz",
        "application/gzip",
        &primary,
    );
    check("wrongsum", "does not match its metadata");

    files.put(
        "incomplete/repodata/repomd.xml",
        "text/xml",
        repomd_for("repodata/primary.xml.gz", &primary).as_bytes(),
    );
    files.put(
        "incomplete/repodata/primary.xml.gz",
        "application/gzip",
        &primary,
    );
    check("incomplete", "has no <arch>");

    let not_gzip = b"plain bytes named .gz".to_vec();
    files.put(
        "notgz/repodata/repomd.xml",
        "text/xml",
        repomd_for("repodata/primary.xml.gz", &not_gzip).as_bytes(),
    );
    files.put(
        "notgz/repodata/primary.xml.gz",
        "application/gzip",
        &not_gzip,
    );
    check("notgz", "cannot decompress");

    let other = gzip(b"<filelists/>");
    files.put(
        "notprimary/repodata/repomd.xml",
        "text/xml",
        repomd_for("repodata/primary.xml.gz", &other).as_bytes(),
    );
    files.put(
        "notprimary/repodata/primary.xml.gz",
        "application/gzip",
        &other,
    );
    check("notprimary", "not primary metadata");

    let climbing = gzip(
        br#"<metadata><package type="rpm"><name>k3s-selinux</name><arch>noarch</arch>
        <version epoch="0" ver="1" rel="1"/><checksum type="sha256">00</checksum>
        <location href="../../etc/k3s-selinux-1-1.noarch.rpm"/></package></metadata>"#,
    );
    files.put(
        "climbing/repodata/repomd.xml",
        "text/xml",
        repomd_for("repodata/primary.xml.gz", &climbing).as_bytes(),
    );
    files.put(
        "climbing/repodata/primary.xml.gz",
        "application/gzip",
        &climbing,
    );
    check("climbing", "is not a relative path");

    check("missing", "answered 404");
}

mod common;

fn site_with(staging_vars: &str, cluster_vars: &str) -> airlock_site::site::Site {
    let inventory = common::parse(&common::site(staging_vars, cluster_vars));
    let (site, diagnostics) = airlock_site::site::Site::read(&inventory, None);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    site
}

#[test]
fn the_repo_file_points_at_the_gateways_rancher_proxy() {
    let site = site_with("", "    k3s_selinux_channel: testing\n");
    let text = airlock_deploy::rpms::selinux::repo_file(
        &site,
        "https://gw.example.org/repository/",
        "/etc/rancher/k3s/staging-ca.crt",
        9,
    );
    assert_eq!(
        text,
        "# Written by airlock: Rancher's K3s SELinux packages through the gateway.\n\
         [rancher-k3s-common-testing]\n\
         name=Rancher K3s Common (testing) via airlock\n\
         baseurl=https://gw.example.org/repository/rancher-k3s/k3s/testing/common/centos/9/noarch\n\
         enabled=1\n\
         gpgcheck=1\n\
         repo_gpgcheck=0\n\
         gpgkey=https://gw.example.org/repository/rancher-k3s/public.key\n\
         sslcacert=/etc/rancher/k3s/staging-ca.crt\n\
         # The gateway answers once a file is fully downloaded and verified: wait for large ones.\n\
         timeout=300\n"
    );
    let without_ca =
        airlock_deploy::rpms::selinux::repo_file(&site, "https://gw.example.org/repository", "", 8);
    assert!(without_ca.contains("/centos/8/noarch\n"));
    assert!(!without_ca.contains("sslcacert"));
    assert_eq!(
        airlock_deploy::rpms::selinux::rancher_repo(&site, 9),
        "https://rpm.rancher.io/k3s/testing/common/centos/9/noarch/"
    );
}

#[test]
fn sources_follow_the_sites_upstreams() {
    let site = site_with(
        "    airlock_upstreams:\n      k3s-releases: \"https://mirror.example.org/k3s/\"\n",
        "",
    );
    let sources = airlock_deploy::artifacts::Sources::for_site(&site, None).unwrap();
    assert_eq!(sources.direct_releases, "https://mirror.example.org/k3s/");
    assert_eq!(sources.direct_install, "https://get.k3s.io/");
    assert_eq!(
        sources.channels,
        airlock_deploy::artifacts::DEFAULT_CHANNELS
    );
}
