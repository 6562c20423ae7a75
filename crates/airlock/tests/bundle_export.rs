//! `airlock bundle index --data-dir` and `bundle create --from-gateway [--since]`: a
//! connected gateway is warmed by real clients (skopeo, pip, curl) through its proxies, then
//! stopped and exported; a second gateway, offline with its upstreams on a closed port,
//! imports the bundle and serves the same things to the same clients. A bundle made
//! `--since` the first carries nothing when nothing changed, and only a new tag's new blobs
//! after one was pulled.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

mod bundles;

use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_bundle::{BundleIndex, Kind};
use airlock_testkit::wheel::{build_wheels, pip, require_pip};
use airlock_testkit::{
    AuthMode, Dist, FakeFiles, FakePypi, FakeRegistry, Image, require_tool, tar_layer,
};
use airlock_types::Digest;
use bundles::gateway::{free_port, start_gateway};
use bundles::*;

const WHEEL: &str = "beta-1.0-py3-none-any.whl";

/// A gateway on `port` with a registry, a `PyPI` and a raw proxy; `upstreams` gives their
/// URLs, or `None` for an offline gateway whose upstreams are a closed port.
fn gateway_config(dir: &Path, port: u16, upstreams: Option<[&str; 3]>) -> PathBuf {
    let closed = format!("http://127.0.0.1:{}/", free_port());
    let [registry, pypi, files] = upstreams.unwrap_or([&closed, &closed, &closed]);
    let offline = if upstreams.is_some() {
        ""
    } else {
        "offline = true\n"
    };
    let config = dir.join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\nhostname = \"localhost\"\n[tls]\nmode = \"off\"\n\
             [[proxy]]\nname = \"team-registry\"\nformat = \"oci\"\nupstream = \"{registry}\"\nhost = \"registry.test\"\n{offline}\
             [[proxy]]\nname = \"pypi\"\nformat = \"pypi\"\nupstream = \"{pypi}\"\n{offline}\
             [[proxy]]\nname = \"releases\"\nformat = \"raw\"\nupstream = \"{files}\"\n{offline}",
            dir.join("data"),
        ),
    )
    .unwrap();
    config
}

fn index_of(args: &[&str]) -> BundleIndex {
    BundleIndex::parse(succeeds(args).as_bytes()).unwrap()
}

fn skopeo_copy(skopeo: &Path, port: u16, image: &str, out: &Path) {
    run(Command::new(skopeo).args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://127.0.0.1:{port}/team-registry/{image}"),
        &format!("dir:{}", s(out)),
    ]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warmed_gateway_is_exported_imported_offline_and_exported_again_since() {
    let skopeo = require_tool("skopeo", "skopeo");
    let curl = require_tool("curl", "curl");
    require_pip();
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let pypi = FakePypi::start().await;
    let files = FakeFiles::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_owned();
    let items = fixture();
    registry.push_image("team/app", "1", &items.single);
    registry.push_index("team/multi", "2", &items.multi);
    let wheels = build_wheels(&dir, &[("beta", "1.0"), ("beta", "2.0")]);
    for name in [WHEEL, "beta-2.0-py3-none-any.whl"] {
        pypi.add(
            "beta",
            Dist::new(name, &std::fs::read(wheels.join(name)).unwrap()),
        );
    }
    let wheel = Digest::of(&std::fs::read(wheels.join(WHEEL)).unwrap());
    files.put("releases/v1/k3s", "application/octet-stream", &items.file);
    // A second tag sharing the first's layer, and one new layer.
    let next = Image::from_layers(
        vec![
            items.single.layers[0].clone(),
            tar_layer("new.txt", b"only in app:2\n"),
        ],
        AMD64,
    );
    registry.push_image("team/app", "2", &next);
    let next_digest = next.digest.clone();
    let (registry_url, pypi_url, files_url) = (
        registry.url(),
        pypi.url(),
        format!("{}releases", files.url()),
    );

    let result = tokio::task::spawn_blocking(move || {
        let online_dir = dir.join("online");
        std::fs::create_dir_all(&online_dir).unwrap();
        let online_port = free_port();
        let online = gateway_config(
            &online_dir,
            online_port,
            Some([&registry_url, &pypi_url, &files_url]),
        );
        let data = online_dir.join("data");

        // Warm it with the clients' own requests.
        let gateway = start_gateway(&online_dir, &online, online_port);
        skopeo_copy(&skopeo, online_port, "team/app:1", &dir.join("pulled-app"));
        skopeo_copy(
            &skopeo,
            online_port,
            "team/multi:2",
            &dir.join("pulled-multi"),
        );
        let index_url = format!("http://127.0.0.1:{online_port}/repository/pypi/simple/");
        let downloads = dir.join("downloads");
        let output = pip(
            &[
                "download",
                "--no-deps",
                "--dest",
                s(&downloads),
                "beta==1.0",
            ],
            &index_url,
        );
        assert!(output.status.success(), "pip download: {output:?}");
        let raw = format!("http://127.0.0.1:{online_port}/repository/releases/v1/k3s");
        run(Command::new(&curl).args(["-sSf", "-o", "/dev/null", &raw]));
        let busy = fails(&[
            "bundle",
            "index",
            "--data-dir",
            s(&data),
            "--config",
            s(&online),
        ]);
        assert!(busy.contains("stop it first"), "{busy}");
        drop(gateway);

        // What the store holds, every entry expected (none carried).
        let held = index_of(&[
            "bundle",
            "index",
            "--data-dir",
            s(&data),
            "--config",
            s(&online),
        ]);
        assert!(held.entries.iter().all(|e| !e.carried));
        let subjects: Vec<(Kind, &str, &str)> = held
            .entries
            .iter()
            .map(|e| (e.kind, e.proxy.as_str(), e.subject()))
            .collect();
        for image in ["registry.test/team/app:1", "registry.test/team/multi:2"] {
            assert!(
                subjects.contains(&(Kind::Image, "team-registry", image)),
                "{subjects:?}"
            );
        }
        assert!(
            subjects.contains(&(Kind::File, "releases", "v1/k3s")),
            "{subjects:?}"
        );
        assert!(
            subjects.iter().any(|(k, p, s)| *k == Kind::File
                && *p == "pypi"
                && s.starts_with("simple/beta/#")),
            "the project page is held: {subjects:?}"
        );
        let package = held
            .entries
            .iter()
            .find(|e| e.kind == Kind::Package)
            .unwrap();
        assert_eq!((package.proxy.as_str(), &package.digest), ("pypi", &wheel));

        // The whole store, into a bundle; only the PyPI proxy's part, into another.
        let first = dir.join("first.bundle");
        succeeds(&[
            "bundle",
            "create",
            "--from-gateway",
            s(&data),
            "--config",
            s(&online),
            "--out",
            s(&first),
        ]);
        succeeds(&["bundle", "verify", s(&first)]);
        let only_pypi = dir.join("pypi.bundle");
        succeeds(&[
            "bundle",
            "create",
            "--from-gateway",
            s(&data),
            "--proxy",
            "pypi",
            "--config",
            s(&online),
            "--out",
            s(&only_pypi),
        ]);
        let pypi_index = index_of(&["bundle", "index", s(&only_pypi)]);
        assert!(
            pypi_index.entries.iter().all(|e| e.proxy == "pypi"),
            "{pypi_index:?}"
        );
        assert!(
            pypi_index
                .entries
                .iter()
                .any(|e| e.digest == wheel && e.carried)
        );
        let unknown = fails(&[
            "bundle",
            "create",
            "--from-gateway",
            s(&data),
            "--proxy",
            "nope",
            "--config",
            s(&online),
            "--out",
            s(&dir.join("x.bundle")),
        ]);
        assert!(unknown.contains("no proxy named \"nope\""), "{unknown}");

        // Nothing changed: a bundle since the first carries no blob.
        let first_index = dir.join("first.json");
        std::fs::write(&first_index, succeeds(&["bundle", "index", s(&first)])).unwrap();
        let same = dir.join("same.bundle");
        succeeds(&[
            "bundle",
            "create",
            "--from-gateway",
            s(&data),
            "--config",
            s(&online),
            "--since",
            s(&first_index),
            "--out",
            s(&same),
        ]);
        let same_index = index_of(&["bundle", "index", s(&same)]);
        assert_eq!(
            same_index.entries.len(),
            index_of(&["bundle", "index", s(&first)]).entries.len()
        );
        assert!(
            same_index.carried().is_empty(),
            "{:?}",
            same_index.carried()
        );

        // One new tag pulled: only its manifest, config and new layer travel.
        let gateway = start_gateway(&online_dir, &online, online_port);
        skopeo_copy(&skopeo, online_port, "team/app:2", &dir.join("pulled-app2"));
        drop(gateway);
        let newer = dir.join("newer.bundle");
        succeeds(&[
            "bundle",
            "create",
            "--from-gateway",
            s(&data),
            "--config",
            s(&online),
            "--since",
            s(&first_index),
            "--out",
            s(&newer),
        ]);
        let newer_index = index_of(&["bundle", "index", s(&newer)]);
        let carried: Vec<Digest> = newer_index.carried().into_keys().cloned().collect();
        let mut expected = vec![
            next.digest.clone(),
            Digest::of(&next.config),
            Digest::of(&next.layers[1]),
        ];
        expected.sort();
        assert_eq!(carried, expected);

        // The isolated side: import into a stopped offline gateway, then serve.
        let offline_dir = dir.join("offline");
        std::fs::create_dir_all(&offline_dir).unwrap();
        let offline_port = free_port();
        let offline = gateway_config(&offline_dir, offline_port, None);
        for bundle in [&first, &newer] {
            succeeds(&[
                "bundle",
                "import",
                s(bundle),
                "--config",
                s(&offline),
                "--allow-unsigned",
            ]);
        }
        let again = succeeds(&[
            "bundle",
            "import",
            s(&same),
            "--config",
            s(&offline),
            "--allow-unsigned",
        ]);
        assert!(again.contains("nothing to import"), "{again}");
        let _gateway = start_gateway(&offline_dir, &offline, offline_port);
        let inspect = |image: &str| {
            run(Command::new(&skopeo).args([
                "inspect",
                "--tls-verify=false",
                "--raw",
                &format!("docker://127.0.0.1:{offline_port}/team-registry/{image}"),
            ]))
        };
        let served = (
            Digest::of(&inspect("team/app:1")),
            Digest::of(&inspect("team/app:2")),
            Digest::of(&inspect("team/multi:2")),
        );
        skopeo_copy(
            &skopeo,
            offline_port,
            "team/app:2",
            &dir.join("offline-app2"),
        );
        let index_url = format!("http://127.0.0.1:{offline_port}/repository/pypi/simple/");
        let target = dir.join("site-packages");
        let installed = pip(
            &["install", "--no-deps", "--target", s(&target), "beta"],
            &index_url,
        );
        assert!(
            installed.status.success(),
            "pip install offline: {installed:?}"
        );
        let version = std::fs::read_to_string(target.join("beta/__init__.py")).unwrap();
        let raw = format!("http://127.0.0.1:{offline_port}/repository/releases/v1/k3s");
        let body = run(Command::new(&curl).args(["-sSf", &raw]));
        (served, version, body, dir)
    })
    .await
    .unwrap();
    let ((app, app2, multi), version, body, _dir) = result;
    assert_eq!(app, items.single.digest);
    assert_eq!(app2, next_digest);
    assert_eq!(multi, items.multi.digest);
    assert_eq!(
        version, "VERSION = '1.0'\n",
        "pip installs the version that was carried"
    );
    assert!(body == items.file, "the raw file differs");
}
