//! `[[policy]]` on package downloads: a real `pip` gets a 403 for a denied project version
//! and installs the allowed one, a real `dnf` cannot download a denied RPM and installs the
//! others; the denial's body names the rule and the reason; index pages still list every
//! version; nothing denied is fetched from the upstream.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use crate::common;

use airlock_testkit::wheel::{build_wheels, pip, require_pip};
use airlock_testkit::{Dist, FakePypi};

const JSON: &str = "application/vnd.pypi.simple.v1+json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_gets_403_for_a_denied_version_and_installs_the_allowed_one() {
    require_pip();
    let dir = tempfile::tempdir().unwrap();
    let wheels = build_wheels(dir.path(), &[("beta", "1.0"), ("beta", "2.0")]);
    let upstream = FakePypi::start().await;
    for version in ["1.0", "2.0"] {
        let filename = format!("beta-{version}-py3-none-any.whl");
        upstream.add(
            "beta",
            Dist {
                metadata: Some(std::fs::read(wheels.join(format!("{filename}.metadata"))).unwrap()),
                ..Dist::new(&filename, &std::fs::read(wheels.join(&filename)).unwrap())
            },
        );
    }
    let addr = common::start(
        dir.path(),
        &format!(
            "[[proxy]]\nname = \"pypi-proxy\"\nformat = \"pypi\"\nupstream = \"{}\"\n\
             [[policy]]\nname = \"watch-old-beta\"\ndeny = [\"Beta<2\"]\nmode = \"log\"\n\
             [[policy]]\nname = \"no-beta-2\"\nproxy = \"pypi-proxy\"\ndeny = [\"beta>=2,<3\"]\n",
            upstream.url()
        ),
    )
    .await;
    let index = format!("http://{addr}/repository/pypi-proxy/simple/");

    // The page lists both versions: the policy acts on downloads only.
    let page = common::get_accepting(&format!("{index}beta/"), Some(JSON)).await;
    assert_eq!(page.status(), 200);
    let page: serde_json::Value = page.json().await.unwrap();
    let files: Vec<(String, String)> = page["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["filename"].as_str().unwrap().to_owned(),
                f["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");

    // The denied wheel and its metadata: 403, the rule and reason in a text body.
    let (_, denied_url) = files
        .iter()
        .find(|(name, _)| name.starts_with("beta-2.0"))
        .unwrap();
    let base = format!("http://{addr}/repository/pypi-proxy/simple/beta/");
    let denied_url = reqwest::Url::parse(&base)
        .unwrap()
        .join(denied_url)
        .unwrap();
    for url in [denied_url.to_string(), format!("{denied_url}.metadata")] {
        let response = common::get(&url).await;
        assert_eq!(response.status(), 403, "{url}");
        let body = response.text().await.unwrap();
        assert!(
            body.contains("policy rule \"no-beta-2\"")
                && body.contains("beta 2.0 matches deny entry \"beta>=2,<3\""),
            "{body}"
        );
    }
    assert_eq!(upstream.count("files/beta-2.0-py3-none-any.whl"), 0);
    assert_eq!(
        upstream.count("files/beta-2.0-py3-none-any.whl.metadata"),
        0
    );

    let target = dir.path().join("site");
    let run = |args: Vec<String>| {
        let index = index.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            pip(&args, &index)
        })
    };
    let install = |spec: &str| {
        vec![
            "install".to_owned(),
            "--target".to_owned(),
            target.display().to_string(),
            spec.to_owned(),
        ]
    };
    let output = run(install("beta==2.0")).await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "pip installed a denied version: {text}"
    );
    assert!(text.contains("403"), "{text}");
    assert!(!target.join("beta").exists());

    // The log-mode rule matches 1.0 and lets it through.
    let output = run(install("beta==1.0")).await.unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let installed = std::fs::read_to_string(target.join("beta/__init__.py")).unwrap();
    assert_eq!(installed, "VERSION = '1.0'\n");
}

#[tokio::test]
async fn other_formats_are_checked_by_the_name_and_version_in_their_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = airlock_testkit::FakeFiles::start().await;
    let addr = common::start(
        dir.path(),
        &format!(
            "[[proxy]]\nname = \"charts\"\nformat = \"helm\"\nupstream = \"{}\"\n\
             [[policy]]\nname = \"old-nginx\"\nproxy = \"charts\"\ndeny = [\"ingress-nginx==3.*\"]\n",
            upstream.url()
        ),
    )
    .await;
    let response = common::get(&format!(
        "http://{addr}/repository/charts/ingress-nginx-3.1.0.tgz"
    ))
    .await;
    assert_eq!(response.status(), 403);
    let body = response.text().await.unwrap();
    assert!(body.contains("policy rule \"old-nginx\""), "{body}");
    assert_eq!(upstream.total_requests(), 0, "nothing was asked upstream");
    let response = common::get(&format!(
        "http://{addr}/repository/charts/ingress-nginx-4.1.0.tgz"
    ))
    .await;
    assert_ne!(response.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnf_is_refused_a_denied_rpm_and_installs_the_others() {
    use airlock_testkit::{RpmSpec, build_rpm, createrepo, dnf_install};
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    for (name, requires) in [
        ("airlock-dep", None),
        ("airlock-app", Some("airlock-dep")),
        ("airlock-extra", None),
    ] {
        let spec = RpmSpec {
            name,
            version: "1.0",
            requires,
        };
        build_rpm(dir.path(), &repo, &spec);
    }
    createrepo(&repo, &[]);
    let upstream = airlock_testkit::FakeFiles::start().await;
    upstream.put_dir("el9/", &repo);
    let addr = common::start(
        dir.path(),
        &format!(
            "[[proxy]]\nname = \"el9\"\nformat = \"yum\"\nupstream = \"{}el9/\"\n\
             [[policy]]\nname = \"no-extra\"\nproxy = \"el9\"\ndeny = [\"airlock-extra==1.0-*\"]\n",
            upstream.url()
        ),
    )
    .await;
    let url = format!("http://{addr}/repository/el9/");
    let install = |root: &str, package: &str| {
        let (root, url, package) = (dir.path().join(root), url.clone(), package.to_owned());
        tokio::task::spawn_blocking(move || {
            dnf_install(
                &root,
                &url,
                &package,
                &["--setopt=t.repo_gpgcheck=0".to_owned()],
            )
        })
    };
    let shown = |output: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let output = install("denied", "airlock-extra").await.unwrap();
    assert!(
        !output.status.success(),
        "dnf installed it: {}",
        shown(&output)
    );
    // dnf -q says only that no mirror had it; the gateway's answer says why.
    assert!(
        shown(&output).contains("airlock-extra-1.0-1.noarch: Cannot download"),
        "{}",
        shown(&output)
    );
    let answer = common::get(&format!("{url}airlock-extra-1.0-1.noarch.rpm")).await;
    assert_eq!(answer.status(), 403);
    let body = answer.text().await.unwrap();
    assert!(
        body.contains("policy rule \"no-extra\"")
            && body.contains("airlock-extra 1.0-1 matches deny entry"),
        "{body}"
    );
    assert_eq!(upstream.count("el9/airlock-extra-1.0-1.noarch.rpm"), 0);
    let output = install("allowed", "airlock-app").await.unwrap();
    assert!(output.status.success(), "dnf: {}", shown(&output));
}
