//! `bundle create --inventory INV`: what `airlock deploy` needs on an isolated site, carried
//! and served offline at the paths deploy asks for. On loopback: a "K3s release" (a small
//! fake binary, its `sha256sum-amd64.txt`, `k3s-images.txt` naming an image in Debian's
//! `docker-registry`, and an install script) and a `createrepo_c` repository standing in
//! for Rancher's `SELinux` one, at the path deploy's `.repo` names, with its `public.key`.
//! The inventory points the site's upstreams at them (`airlock_upstreams`), and create
//! takes its proxies from the configuration `airlock render` writes for the site. Then
//! the upstreams stop, an offline gateway imports the bundle, and airlock-deploy's own
//! artifact fetcher, whose direct sources are closed ports, gets the binary (verified),
//! the checksum file and the install script through the gateway; dnf installs the `SELinux`
//! packages; the release's image is served by its original name. The error paths: a binary
//! that does not match its checksum line, an architecture the release lacks, an unknown
//! architecture name.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

mod bundles;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use airlock_deploy::artifacts::{GatewayAccess, Route, Sources, fetch_k3s};
use airlock_testkit::{
    DockerRegistry, FakeFiles, Image, RpmSpec, build_rpm, createrepo, dnf_install, free_port,
    port_open, require_tool, tar_layer, wait_until,
};
use airlock_types::Digest;
use bundles::gateway::start_gateway;
use bundles::packages::{checked, shown};
use bundles::registry::Pusher;
use bundles::{AMD64, airlock, fails, s, succeeds};

const VERSION: &str = "v1.31.4+k3s1";
/// A release whose checksum file does not match its binary.
const BAD_VERSION: &str = "v1.31.5+k3s1";
const PAUSE: &str = "docker.io/rancher/mirrored-pause:3.6";
/// Rancher's `SELinux` repository below the `rancher-k3s` proxy, as deploy's `.repo` names it.
const SELINUX_REPO: &str = "k3s/stable/common/centos/9/noarch/";
const INSTALL: &[u8] = b"#!/bin/sh\necho installing k3s\n";

/// The site: a staging node, one server, the gateway proxying packages, and every upstream
/// deploy and the gateway use moved to loopback.
fn inventory(dir: &Path, registry: &str, files: &str) -> std::path::PathBuf {
    let path = dir.join("inventory.yaml");
    std::fs::write(
        &path,
        format!(
            "all:\n  vars:\n    air_gapped: true\n    package_proxy_mode: airlock\n    k3s_version: {VERSION}\n\
             \x20   airlock_upstreams:\n      docker.io: \"{registry}\"\n      k3s-releases: \"{files}releases/\"\n\
             \x20     k3s-install: \"{files}install.sh\"\n      rancher-k3s: \"{files}rancher/\"\n\
             staging:\n  hosts:\n    staging.example.test: {{ansible_host: 10.0.0.2}}\n  vars:\n    staging_k3s_token: abc\n\
             server:\n  hosts:\n    s1.example.test: {{ansible_host: 10.0.0.3}}\n\
             k3s_cluster:\n  children: {{server: {{}}}}\n  vars:\n    k3s_token: s3cret\n"
        ),
    )
    .unwrap();
    path
}

/// The isolated gateway: the proxies deploy uses, offline, upstreams on a closed port.
fn offline_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let closed = format!("http://127.0.0.1:{}/", free_port());
    let path = dir.join("airlock.toml");
    let proxy = |name: &str, format: &str, host: &str| {
        format!(
            "[[proxy]]\nname = \"{name}\"\nformat = \"{format}\"\nupstream = \"{closed}\"\n{host}offline = true\n"
        )
    };
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\nhostname = \"localhost\"\n[tls]\nmode = \"off\"\n{}{}{}{}",
            dir.join("data"),
            proxy("dockerhub-proxy", "oci", "host = \"docker.io\"\n"),
            proxy("k3s-releases", "raw", ""),
            proxy("k3s-install", "raw", ""),
            proxy("rancher-k3s", "yum", ""),
        ),
    )
    .unwrap();
    path
}

/// The release files on `files`: `binary` with a checksum line that is right, or wrong.
fn put_release(files: &FakeFiles, version: &str, binary: &[u8], checksum_right: bool) {
    let hex = if checksum_right {
        Digest::of(binary).hex().to_owned()
    } else {
        "0".repeat(64)
    };
    let base = format!("releases/{version}");
    files.put(&format!("{base}/k3s"), "application/octet-stream", binary);
    let sums = format!(
        "{hex}  k3s\n{}  k3s-airgap-images-amd64.tar\n",
        "a".repeat(64)
    );
    files.put(
        &format!("{base}/sha256sum-amd64.txt"),
        "text/plain",
        sums.as_bytes(),
    );
    files.put(
        &format!("{base}/k3s-images.txt"),
        "text/plain",
        format!("{PAUSE}\n").as_bytes(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_s_deploy_needs_are_carried_and_served_where_deploy_asks() {
    for (tool, package) in [
        ("curl", "curl"),
        ("dnf", "dnf"),
        ("rpmbuild", "rpm"),
        ("createrepo_c", "createrepo-c"),
    ] {
        require_tool(tool, package);
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_owned();
    let files = FakeFiles::start().await;
    let binary: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    put_release(&files, VERSION, &binary, true);
    put_release(&files, BAD_VERSION, b"not the k3s binary", false);
    files.put("install.sh", "text/x-shellscript", INSTALL);
    let repo = dir.join("selinux-repo");
    for spec in [
        RpmSpec {
            name: "container-selinux",
            version: "2.0",
            requires: None,
        },
        RpmSpec {
            name: "k3s-selinux",
            version: "1.6",
            requires: Some("container-selinux"),
        },
    ] {
        build_rpm(&dir, &repo, &spec);
    }
    createrepo(&repo, &[]);
    files.put_dir(&format!("rancher/{SELINUX_REPO}"), &repo);
    files.put(
        "rancher/public.key",
        "text/plain",
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n",
    );
    let files_url = files.url();

    tokio::task::spawn_blocking(move || {
        let registry = DockerRegistry::start(&dir);
        let pause = Image::from_layers(vec![tar_layer("pause", b"pause\n")], AMD64);
        Pusher::new(registry.port).image("rancher/mirrored-pause", "3.6", &pause);
        let inventory = inventory(&dir, &registry.url(), &files_url);
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let bundle = out.join("site.bundle");

        // The error paths first: each stops create and leaves nothing beside --out.
        let bad_spec = dir.join("bad-k3s.yaml");
        std::fs::write(&bad_spec, format!("k3s: {{version: {BAD_VERSION}}}\n")).unwrap();
        for (extra, expected) in [
            (
                vec!["--spec", s(&bad_spec)],
                format!(
                    "{BAD_VERSION}/k3s: the bytes hash to sha256:{}, not the expected sha256:{}",
                    Digest::of(b"not the k3s binary").hex(),
                    "0".repeat(64)
                ),
            ),
            (
                vec!["--arch", "amd64,arm64"],
                format!("{VERSION}/sha256sum-arm64.txt: the gateway answered 404"),
            ),
            (
                vec!["--arch", "x86_64"],
                "unknown architecture `x86_64`: K3s publishes amd64, arm64 and arm".to_owned(),
            ),
        ] {
            let mut args = vec![
                "bundle",
                "create",
                "--inventory",
                s(&inventory),
                "--out",
                s(&bundle),
            ];
            args.extend(extra.iter().copied());
            let error = fails(&args);
            assert!(error.contains(&expected), "{extra:?}: {error}");
            let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
            assert!(left.is_empty(), "{extra:?}: left behind {left:?}");
        }

        // The connected side: the inventory alone says what to carry and through what.
        let created = airlock(&[
            "bundle",
            "create",
            "--inventory",
            s(&inventory),
            "--out",
            s(&bundle),
        ]);
        assert!(created.status.success(), "create: {}", shown(&created));
        let said = String::from_utf8_lossy(&created.stderr);
        assert!(
            said.contains(&format!("K3s {VERSION} for amd64; RPMs for EL 9")),
            "{said}"
        );
        assert!(
            said.contains("rpms 2 packages, charts 0, k3s 2 files and 1 images"),
            "{said}"
        );
        let index = airlock_bundle::BundleIndex::parse(
            &succeeds(&["bundle", "index", s(&bundle)]).into_bytes(),
        )
        .unwrap();
        let mut files_carried: Vec<(&str, &str)> = index
            .entries
            .iter()
            .filter(|e| e.kind == airlock_bundle::Kind::File)
            .map(|e| (e.proxy.as_str(), e.path.as_deref().unwrap()))
            .filter(|(proxy, _)| proxy.starts_with("k3s"))
            .collect();
        files_carried.sort_unstable();
        assert_eq!(
            files_carried,
            [
                ("k3s-install", ""),
                ("k3s-releases", "v1.31.4+k3s1/k3s"),
                ("k3s-releases", "v1.31.4+k3s1/k3s-images.txt"),
                ("k3s-releases", "v1.31.4+k3s1/sha256sum-amd64.txt"),
            ]
        );
        assert!(
            index.entries.iter().any(|e| e.subject() == PAUSE),
            "the release's image travels: {:?}",
            index.entries
        );

        // The link goes away.
        drop(registry);
        drop(files);
        wait_until("the upstreams to stop", Duration::from_secs(10), || {
            !port_open(url::Url::parse(&files_url).unwrap().port().unwrap())
        });

        // The isolated side.
        let isolated = dir.join("isolated");
        std::fs::create_dir_all(&isolated).unwrap();
        let port = free_port();
        let config = offline_config(&isolated, port);
        let imported = succeeds(&[
            "bundle",
            "import",
            s(&bundle),
            "--config",
            s(&config),
            "--allow-unsigned",
        ]);
        assert!(imported.contains("imported"), "{imported}");
        let _gateway = start_gateway(&isolated, &config, port);
        let base = format!("http://127.0.0.1:{port}/");

        // deploy's own fetcher: direct sources on a closed port, so only the gateway answers.
        let closed = format!("http://127.0.0.1:{}/", free_port());
        let sources = Sources {
            direct_releases: closed.clone(),
            direct_install: closed.clone(),
            channels: closed,
            gateway: Some(GatewayAccess {
                base: format!("{base}repository"),
                resolve: None,
                ca_pem: None,
            }),
            outbound: None,
        };
        let cache = dir.join("deploy-cache");
        let k3s = fetch_k3s(
            &sources,
            Some(VERSION),
            "stable",
            "amd64",
            &cache,
            Some(Duration::from_secs(60)),
            false,
        )
        .expect("deploy gets K3s through the isolated gateway");
        assert_eq!(k3s.route, Route::Gateway);
        assert_eq!(std::fs::read(&k3s.binary.path).unwrap(), binary);
        assert_eq!(std::fs::read(&k3s.install_script.path).unwrap(), INSTALL);
        assert!(
            k3s.binary
                .url
                .starts_with(&format!("{base}repository/k3s-releases/{VERSION}/")),
            "{}",
            k3s.binary.url
        );

        // The SELinux packages, from the repository deploy's .repo file names, and its key.
        let output = dnf_install(
            &dir.join("dnf"),
            &format!("{base}repository/rancher-k3s/{SELINUX_REPO}"),
            "k3s-selinux",
            &["--setopt=t.repo_gpgcheck=0".to_owned()],
        );
        assert!(output.status.success(), "dnf install: {}", shown(&output));
        for package in ["k3s-selinux", "container-selinux"] {
            assert!(
                dir.join(format!("dnf/root/usr/share/{package}/hello"))
                    .is_file(),
                "{package} is not installed: {}",
                shown(&output)
            );
        }
        let key = checked(Command::new("curl").args([
            "-fsS",
            "--noproxy",
            "*",
            &format!("{base}repository/rancher-k3s/public.key"),
        ]))
        .stdout;
        assert!(
            key.starts_with(b"-----BEGIN PGP"),
            "{}",
            String::from_utf8_lossy(&key)
        );

        // The release's system image, by its original name.
        let manifest = checked(Command::new("curl").args([
            "-fsS",
            "--noproxy",
            "*",
            &format!("{base}v2/rancher/mirrored-pause/manifests/3.6?ns=docker.io"),
        ]))
        .stdout;
        assert_eq!(Digest::of(&manifest), pause.digest);
    })
    .await
    .unwrap();
}
