//! A whole site in one bundle, as an operator moves it: on loopback, Debian's
//! `docker-registry` with a multi-platform image and a cosign-signed image, a `PyPI` index,
//! a yum repository, a Helm chart repository and a raw file. One signed `bundle create`
//! whose spec names all of it (the package sections warmed through a scratch gateway);
//! then the upstreams stop, and a second gateway, every proxy `offline = true` with its
//! upstream on a closed port, imports the bundle. containerd pulls the image by its
//! original name through a `hosts.toml` mirror (`?ns=docker.io`) with the upstream's
//! digest, skopeo reads it straight from the bundle as an `oci-archive:`, pip installs the
//! hash-pinned lock, dnf installs a package and its dependency, the Helm index lists the
//! carried chart (and not the other) and serves it with the index's digest, the cosign
//! signature image is served for the isolated side to check again, and curl gets the file.

// Paths go into TOML and YAML through `{:?}`, which quotes them as both need.
#![allow(clippy::unnecessary_debug_formatting)]

mod bundles;

use std::path::Path;
use std::process::Command;

use airlock_testkit::{
    Containerd, DockerRegistry, dnf_install, free_port, port_open, require_tool, wait_until,
};
use airlock_types::Digest;
use bundles::gateway::{keygen, start_gateway};
use bundles::packages::{checked, pip_install, shown, upstreams, write_lock};
use bundles::registry::{Pusher, payload, sign};
use bundles::*;
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePublicKey as _, LineEnding};

/// The gateway's proxies: `upstreams` are the registry's and the static files' base URLs
/// plus the `PyPI` index's, or `None` for an offline gateway whose upstreams are gone.
fn config(dir: &Path, port: u16, upstreams: Option<[&str; 3]>) -> std::path::PathBuf {
    let closed = format!("http://127.0.0.1:{}/", free_port());
    let [registry, files, pypi] = upstreams.unwrap_or([&closed, &closed, &closed]);
    let offline = if upstreams.is_some() {
        ""
    } else {
        "offline = true\n"
    };
    let path = dir.join("airlock.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\nhostname = \"localhost\"\n[tls]\nmode = \"off\"\n\
             [[proxy]]\nname = \"docker-hub\"\nformat = \"oci\"\nupstream = \"{registry}\"\nhost = \"docker.io\"\n{offline}\
             [[proxy]]\nname = \"pypi\"\nformat = \"pypi\"\nupstream = \"{pypi}\"\n{offline}\
             [[proxy]]\nname = \"el9\"\nformat = \"yum\"\nupstream = \"{files}el9/\"\n{offline}\
             [[proxy]]\nname = \"charts\"\nformat = \"helm\"\nupstream = \"{files}charts/\"\n{offline}\
             [[proxy]]\nname = \"k3s-files\"\nformat = \"raw\"\nupstream = \"{files}k3s/\"\n{offline}",
            dir.join("data"),
        ),
    )
    .unwrap();
    path
}

fn curl(url: &str) -> Vec<u8> {
    checked(Command::new("curl").args(["-fsS", "--noproxy", "*", url])).stdout
}

/// The first `urls` entry of `name`'s `version` in a Helm `index.yaml`.
fn chart_url(index: &str, version: &str) -> String {
    let at = index
        .find(&format!("version: {version}"))
        .unwrap_or_else(|| panic!("no version {version} in\n{index}"));
    let urls = at + index[at..].find("urls:").expect("the entry lists urls");
    let line = index[urls..].lines().nth(1).expect("a url follows");
    line.trim().trim_start_matches("- ").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_site_is_carried_imported_offline_and_served_to_every_client() {
    for (tool, package) in [
        ("skopeo", "skopeo"),
        ("curl", "curl"),
        ("dnf", "dnf"),
        ("rpmbuild", "rpm"),
        ("createrepo_c", "createrepo-c"),
        ("tar", "tar"),
        ("ctr", "containerd"),
    ] {
        require_tool(tool, package);
    }
    airlock_testkit::wheel::require_pip();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_owned();
    let up = upstreams(&dir).await;
    let raw: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    up.files.put("k3s/v1/k3s", "application/octet-stream", &raw);
    write_lock(&up, &dir.join("locks/requirements.txt"));
    let (files_url, pypi_url) = (up.files.url(), up.pypi.url());
    let chart = up.charts[0].clone();

    tokio::task::spawn_blocking(move || {
        let registry = DockerRegistry::start(&dir);
        let push = Pusher::new(registry.port);
        let images = fixture();
        push.index("library/multi", "2", &images.multi);
        push.image("library/app", "1", &images.single);
        let org = SigningKey::random(&mut rand::rngs::OsRng);
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        std::fs::write(
            dir.join("keys/org.pub"),
            org.verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
        let signed = payload("docker.io/library/app", &images.single.digest);
        let signature = push.signature(
            "library/app",
            &images.single.digest,
            &[(signed.clone(), sign(&org, &signed))],
        );

        // The connected side: one spec, one signed bundle.
        let online = dir.join("online");
        std::fs::create_dir_all(&online).unwrap();
        let registry_url = registry.url();
        let online = config(
            &online,
            free_port(),
            Some([&registry_url, &files_url, &pypi_url]),
        );
        let spec = dir.join("site.yaml");
        std::fs::write(
            &spec,
            format!(
                "images:\n  - ref: docker.io/library/multi:2\n  - ref: docker.io/library/app:1\n    verify: {{cosign_key: keys/org.pub}}\n\
                 files:\n  - url: {files_url}k3s/v1/k3s\n    sha256: {}\n\
                 python:\n  requirements: locks/requirements.txt\n\
                 rpms:\n  proxy: el9\n  packages: [airlock-app]\n  arch: x86_64\n\
                 charts:\n  - {{proxy: charts, name: app, version: 1.0.0}}\n",
                Digest::of(&raw).hex()
            ),
        )
        .unwrap();
        let (key, public) = keygen(&dir, "site");
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let bundle = out.join("site.bundle");
        let created = airlock(&[
            "bundle",
            "create",
            "--spec",
            s(&spec),
            "--config",
            s(&online),
            "--sign-key",
            s(&key),
            "--out",
            s(&bundle),
        ]);
        assert!(created.status.success(), "create: {}", shown(&created));
        let said = String::from_utf8_lossy(&created.stderr);
        assert!(
            said.contains("warmed through a scratch gateway: python 2 files, rpms 2 packages, charts 1"),
            "{said}"
        );
        // Package files kept by digest are named by the documents that list them.
        let index = airlock_bundle::BundleIndex::parse(&run(Command::new(env!(
            "CARGO_BIN_EXE_airlock"
        ))
        .args(["bundle", "index", s(&bundle)])))
        .unwrap();
        let mut packages: Vec<(&str, &str)> = index
            .entries
            .iter()
            .filter(|e| e.kind == airlock_bundle::Kind::Package)
            .map(|e| (e.proxy.as_str(), e.path.as_deref().unwrap()))
            .collect();
        packages.sort_unstable();
        // yum's metadata files (`repodata/<hex>-primary.xml.gz`, …) are kept by digest too.
        let (metadata, files): (Vec<_>, Vec<_>) = packages
            .into_iter()
            .partition(|(proxy, path)| *proxy == "el9" && path.starts_with("repodata/"));
        assert_eq!(
            files,
            [
                ("el9", "airlock-app-1.0-1.noarch.rpm"),
                ("el9", "airlock-dep-1.0-1.noarch.rpm"),
                ("pypi", "simple/alpha/alpha-1.0-py3-none-any.whl"),
                ("pypi", "simple/alpha/alpha-1.0-py3-none-any.whl.metadata"),
                ("pypi", "simple/beta/beta-1.0-py3-none-any.whl"),
            ]
        );
        assert!(
            metadata.iter().any(|(_, path)| path.ends_with("-primary.xml.gz")),
            "{metadata:?}"
        );
        // The scratch gateway's directory beside the bundle is gone.
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["site.bundle"]);

        // The link goes away.
        drop(registry);
        drop(up);
        wait_until("the upstreams to stop", std::time::Duration::from_secs(10), || {
            !port_open(url::Url::parse(&files_url).unwrap().port().unwrap())
        });

        // The isolated side: verify, import into a stopped gateway, serve offline.
        let isolated = dir.join("isolated");
        std::fs::create_dir_all(&isolated).unwrap();
        let port = free_port();
        let offline = config(&isolated, port, None);
        succeeds(&["bundle", "verify", s(&bundle), "--trust-key", s(&public)]);
        let imported = succeeds(&[
            "bundle",
            "import",
            s(&bundle),
            "--config",
            s(&offline),
            "--trust-key",
            s(&public),
        ]);
        assert!(imported.contains("imported"), "{imported}");
        let _gateway = start_gateway(&isolated, &offline, port);
        let base = format!("http://127.0.0.1:{port}/");

        // containerd, by the image's original name through the mirror; the fallback
        // `server` is a closed port, so only the gateway can answer.
        let hosts = dir.join("certs.d");
        std::fs::create_dir_all(hosts.join("docker.io")).unwrap();
        std::fs::write(
            hosts.join("docker.io/hosts.toml"),
            format!(
                "server = \"http://127.0.0.1:{}\"\n\n[host.\"http://127.0.0.1:{port}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                free_port()
            ),
        )
        .unwrap();
        let containerd = Containerd::start(&dir.join("containerd"));
        let pulled = containerd.pull(&hosts, "docker.io/library/multi:2");
        assert!(pulled.contains(&images.multi.digest.to_string()), "{pulled}");
        assert!(pulled.contains("unpacking linux/amd64"), "{pulled}");
        drop(containerd);
        let log = std::fs::read_to_string(isolated.join("airlock.log")).unwrap();
        assert!(log.contains("ns=docker.io"), "containerd's requests carry ?ns=: {log}");

        // skopeo, from the bundle file itself.
        let raw_index = checked(Command::new("skopeo").args([
            "inspect",
            "--raw",
            &format!("oci-archive:{}:docker.io/library/multi:2", s(&bundle)),
        ]))
        .stdout;
        assert_eq!(raw_index, images.multi.manifest);

        // The signature image travelled and is served, for the isolated side to check.
        let sig = curl(&format!(
            "{base}v2/library/app/manifests/{}?ns=docker.io",
            airlock_cosign::signature_tag(&images.single.digest)
        ));
        assert_eq!(Digest::of(&sig), signature);

        // pip, from the lock; dnf, a package and its dependency.
        let output = pip_install(
            &dir.join("pip"),
            &format!("{base}repository/pypi/simple/"),
            &dir.join("locks/requirements.txt"),
        );
        assert!(output.status.success(), "pip install: {}", shown(&output));
        assert_eq!(
            std::fs::read_to_string(dir.join("pip/site/alpha/__init__.py")).unwrap(),
            "VERSION = '1.0'\n"
        );
        assert!(dir.join("pip/site/beta/__init__.py").is_file());
        let output = dnf_install(
            &dir.join("dnf"),
            &format!("{base}repository/el9/"),
            "airlock-app",
            &["--setopt=t.repo_gpgcheck=0".to_owned()],
        );
        assert!(output.status.success(), "dnf install: {}", shown(&output));
        for package in ["airlock-app", "airlock-dep"] {
            assert!(
                dir.join(format!("dnf/root/usr/share/{package}/hello")).is_file(),
                "{package} is not installed: {}",
                shown(&output)
            );
        }

        // Helm: the index lists what was carried, and the chart is served verified.
        let index_url = url::Url::parse(&format!("{base}repository/charts/index.yaml")).unwrap();
        let index = String::from_utf8(curl(index_url.as_str())).unwrap();
        assert!(!index.contains("2.0.0"), "{index}");
        let url = index_url.join(&chart_url(&index, "1.0.0")).unwrap();
        assert_eq!(Digest::of(&curl(url.as_str())), Digest::of(&chart));

        // The raw file.
        assert_eq!(curl(&format!("{base}repository/k3s-files/v1/k3s")), raw);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_section_that_cannot_be_warmed_stops_create_and_leaves_nothing() {
    for (tool, package) in [
        ("rpmbuild", "rpm"),
        ("createrepo_c", "createrepo-c"),
        ("tar", "tar"),
    ] {
        require_tool(tool, package);
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_owned();
    let up = upstreams(&dir).await;
    let (files_url, pypi_url) = (up.files.url(), up.pypi.url());
    tokio::task::spawn_blocking(move || {
        let online = config(
            &dir,
            free_port(),
            Some(["http://127.0.0.1:9/", &files_url, &pypi_url]),
        );
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        for (section, expected) in [
            (
                "charts:\n  - {proxy: charts, name: app, version: 9.9.9}\n",
                "chart app version 9.9.9 is not in the index of helm proxy `charts`",
            ),
            (
                "rpms:\n  proxy: el9\n  packages: [airlock-nope]\n",
                "no package named airlock-nope in the repositories of yum proxy `el9`",
            ),
            (
                "charts:\n  - {proxy: k3s-files, name: app, version: 1.0.0}\n",
                "proxy `k3s-files` is a raw proxy, not a helm one",
            ),
        ] {
            let spec = dir.join("spec.yaml");
            std::fs::write(&spec, section).unwrap();
            let bundle = out.join("site.bundle");
            let error = fails(&[
                "bundle",
                "create",
                "--spec",
                s(&spec),
                "--config",
                s(&online),
                "--out",
                s(&bundle),
            ]);
            assert!(error.contains(expected), "{section}: {error}");
            let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
            assert!(left.is_empty(), "{section}: left behind {left:?}");
        }
    })
    .await
    .unwrap();
}
