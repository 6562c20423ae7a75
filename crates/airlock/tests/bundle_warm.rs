//! `airlock_bundle::create::warm` against a real gateway in front of real static upstreams
//! (a `PyPI` index with a package and its dependency, a `createrepo_c` yum repository with a
//! package that requires another, a Helm chart repository): warming requests exactly what
//! the spec's `python`, `rpms` and `charts` sections name. Then the upstreams stop, the
//! same data directory is served with every package proxy `offline = true`, and pip
//! (`--require-hashes`), dnf and curl get what was warmed, and only that. The error paths:
//! a pinned hash no file has, a chart version the index lacks, an RPM name no repository has.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

mod bundles;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use airlock_bundle::create::spec::Spec;
use airlock_bundle::create::warm::{Fetched, WarmError, Warmed, warm};
use airlock_config::Config;
use airlock_gateway::Gateway;
use airlock_testkit::{dnf_install, require_tool};
use airlock_types::Digest;
use bundles::packages::{checked, pip_install, shown, upstreams, wheel, write_lock};

/// The gateway's configuration: data under `dir/data`, the three package proxies.
fn config(dir: &Path, pypi: &str, files: &str, offline: bool) -> Config {
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n\
         [[proxy]]\nname = \"pypi-proxy\"\nformat = \"pypi\"\nupstream = \"{pypi}\"\noffline = {offline}\n\
         [[proxy]]\nname = \"el9\"\nformat = \"yum\"\nupstream = \"{files}el9/\"\noffline = {offline}\n\
         [[proxy]]\nname = \"charts\"\nformat = \"helm\"\nupstream = \"{files}charts/\"\noffline = {offline}\n",
        dir.join("data").display().to_string()
    );
    Config::from_toml_str(&text, "test").expect("test config is valid")
}

/// A gateway serving until [`Running::stop`].
struct Running {
    url: reqwest::Url,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(config: Config) -> Self {
        // A gateway stopped a moment ago may still hold the index lock: wait, bounded.
        let mut attempts = 0;
        let gateway = loop {
            match Gateway::bind(config.clone()).await {
                Ok(gateway) => break gateway,
                Err(error) if attempts < 200 && error.to_string().contains("lock") => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("the gateway does not start: {error}"),
            }
        };
        let url = reqwest::Url::parse(&format!("http://{}/", gateway.local_addr())).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            gateway
                .serve(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self { url, stop, served }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(60), self.served)
            .await
            .expect("the gateway stops within 60 s")
            .unwrap();
    }
}

fn names(section: &[Fetched]) -> Vec<&str> {
    let mut names: Vec<&str> = section.iter().map(Fetched::name).collect();
    names.sort_unstable();
    names
}

/// An offline gateway's regenerated metadata is unsigned.
fn unsigned() -> Vec<String> {
    vec!["--setopt=t.repo_gpgcheck=0".to_owned()]
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn spec(dir: &Path, text: &str) -> Spec {
    let path = dir.join("spec.yaml");
    std::fs::write(&path, text).unwrap();
    Spec::load(&path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_carries_exactly_the_spec_and_offline_clients_install_it() {
    for (tool, package) in [
        ("python3", "python3-pip"),
        ("dnf", "dnf"),
        ("rpmbuild", "rpm"),
        ("createrepo_c", "createrepo-c"),
        ("curl", "curl"),
        ("tar", "tar"),
    ] {
        require_tool(tool, package);
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let up = upstreams(dir).await;
    let alpha = wheel(&up, "alpha-1.0-py3-none-any.whl");
    let beta = wheel(&up, "beta-1.0-py3-none-any.whl");
    let requirements = dir.join("locks/requirements.txt");
    write_lock(&up, &requirements);
    let spec = spec(
        dir,
        "python:\n  requirements: locks/requirements.txt\n\
         rpms:\n  proxy: el9\n  packages: [airlock-app]\n  arch: x86_64\n\
         charts:\n  - {proxy: charts, name: app, version: 1.0.0}\n",
    );

    let online = config(dir, &up.pypi.url(), &up.files.url(), false);
    let gateway = Running::start(online.clone()).await;
    let warmed: Warmed = warm(&gateway.url, &online, &spec).await.unwrap();

    assert_eq!(
        names(&warmed.python.files),
        ["alpha-1.0-py3-none-any.whl", "beta-1.0-py3-none-any.whl"]
    );
    assert!(
        warmed
            .python
            .documents
            .iter()
            .any(|d| d.path.ends_with("alpha-1.0-py3-none-any.whl.metadata")),
        "{:?}",
        warmed.python.documents
    );
    assert_eq!(
        warmed.python.files[0].bytes + warmed.python.files[1].bytes,
        (alpha.len() + beta.len()) as u64
    );
    assert_eq!(
        names(&warmed.rpms.files),
        [
            "airlock-app-1.0-1.noarch.rpm",
            "airlock-dep-1.0-1.noarch.rpm"
        ]
    );
    let mut metadata: Vec<&str> = warmed
        .rpms
        .documents
        .iter()
        .map(|d| d.path.as_str())
        .collect();
    metadata.sort_unstable();
    assert!(metadata.contains(&"repodata/repomd.xml"), "{metadata:?}");
    assert!(
        metadata.iter().all(|m| m.starts_with("repodata/")),
        "{metadata:?}"
    );
    for kind in ["primary", "filelists", "other"] {
        assert!(metadata.iter().any(|m| m.contains(kind)), "{metadata:?}");
    }
    assert_eq!(names(&warmed.charts.files), ["app-1.0.0.tgz"]);
    assert_eq!(warmed.charts.files[0].sha256, Digest::of(&up.charts[0]));
    assert_eq!(warmed.charts.documents[0].path, "index.yaml");
    // Nothing else was fetched from the upstreams.
    assert_eq!(up.pypi.count("files/alpha-2.0-py3-none-any.whl"), 0);
    assert_eq!(up.files.count("el9/airlock-extra-1.0-1.noarch.rpm"), 0);
    assert_eq!(up.files.count("charts/app-2.0.0.tgz"), 0);

    // The error paths, each stopping with a message that names what is missing.
    let other = "0".repeat(64);
    std::fs::write(
        dir.join("locks/wrong.txt"),
        format!("alpha==1.0 --hash=sha256:{other}\n"),
    )
    .unwrap();
    for (text, expected) in [
        (
            "python:\n  requirements: locks/wrong.txt\n  proxy: pypi-proxy\n".to_owned(),
            format!("no file of alpha==1.0 has the pinned hash ({}:1): proxy `pypi-proxy` lists 2 file(s) of `alpha`, none with sha256 {other}", dir.join("locks/wrong.txt").display()),
        ),
        (
            "charts:\n  - {proxy: charts, name: app, version: 9.9.9}\n".to_owned(),
            "chart app version 9.9.9 is not in the index of helm proxy `charts` (it has 1.0.0, 2.0.0)".to_owned(),
        ),
        (
            "charts:\n  - {proxy: charts, name: nope, version: 1.0.0}\n".to_owned(),
            "it has no chart named nope".to_owned(),
        ),
        (
            "rpms:\n  packages: [airlock-app, airlock-nope]\n  arch: x86_64\n".to_owned(),
            "no package named airlock-nope in the repositories of yum proxy `el9`".to_owned(),
        ),
        (
            "charts:\n  - {proxy: el9, name: app, version: 1.0.0}\n".to_owned(),
            "proxy `el9` is a yum proxy, not a helm one".to_owned(),
        ),
    ] {
        let error: WarmError = warm(&gateway.url, &online, &self::spec(dir, &text))
            .await
            .unwrap_err();
        assert!(error.to_string().contains(&expected), "{text}: {error}");
    }
    gateway.stop().await;

    // The upstreams stop; the same data, every proxy offline with its upstream gone.
    let (pypi_url, files_url) = (up.pypi.url(), up.files.url());
    drop(up);
    assert!(
        reqwest::get(format!("{pypi_url}simple/alpha/"))
            .await
            .is_err(),
        "the upstream still answers"
    );
    let offline = config(dir, &pypi_url, &files_url, true);
    let gateway = Running::start(offline).await;
    let base = gateway.url.clone();

    let index = format!("{base}repository/pypi-proxy/simple/");
    let (pip_dir, lock) = (dir.join("pip"), requirements.clone());
    let output = blocking(move || pip_install(&pip_dir, &index, &lock)).await;
    assert!(output.status.success(), "pip install: {}", shown(&output));
    let installed = std::fs::read_to_string(dir.join("pip/site/alpha/__init__.py")).unwrap();
    assert_eq!(installed, "VERSION = '1.0'\n");
    assert!(dir.join("pip/site/beta/__init__.py").is_file());

    let repo = format!("{base}repository/el9/");
    let dnf_dir = dir.join("dnf");
    let output = blocking(move || dnf_install(&dnf_dir, &repo, "airlock-app", &unsigned())).await;
    assert!(output.status.success(), "dnf install: {}", shown(&output));
    for package in ["airlock-app", "airlock-dep"] {
        assert!(
            dir.join(format!("dnf/root/usr/share/{package}/hello"))
                .is_file(),
            "{package} is not installed: {}",
            shown(&output)
        );
    }
    let repo = format!("{base}repository/el9/");
    let extra_dir = dir.join("dnf-extra");
    let output =
        blocking(move || dnf_install(&extra_dir, &repo, "airlock-extra", &unsigned())).await;
    assert!(
        !output.status.success(),
        "airlock-extra was never warmed, yet dnf installed it"
    );

    let index = checked(
        Command::new("curl")
            .args(["-fsS", "--noproxy", "*"])
            .arg(format!("{base}repository/charts/index.yaml")),
    );
    let index = String::from_utf8(index.stdout).unwrap();
    assert!(index.contains("1.0.0"), "{index}");
    assert!(!index.contains("2.0.0"), "{index}");
    let chart = dir.join("app.tgz");
    checked(
        Command::new("curl")
            .args(["-fsS", "--noproxy", "*", "-o"])
            .arg(&chart)
            .arg(format!(
                "{base}repository/charts/{}",
                warmed.charts.files[0].path
            )),
    );
    assert_eq!(
        Digest::of(&std::fs::read(&chart).unwrap()),
        warmed.charts.files[0].sha256
    );
    gateway.stop().await;
}
