//! Rendered node configs read by the real tools that consume them: skopeo (the
//! containers-image library podman and CRI-O share) resolves images through the rendered
//! `registries.conf` to exactly the mirror path `explain-image` predicts. Needs the Debian
//! package `skopeo`; a machine without it fails this test.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use airlock_deploy::check::check;
use airlock_deploy::explain::explain;
use airlock_deploy::render::render;

/// The first location skopeo tries for `image` under `registries_conf`. Only the resolution is
/// wanted: skopeo is stopped before it waits on any network.
fn first_attempt(registries_conf: &std::path::Path, image: &str) -> String {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("skopeo").is_file()));
    assert!(
        found,
        "`skopeo` is not installed: install the Debian package `skopeo`"
    );
    let mut child = Command::new("skopeo")
        .arg("--debug")
        .arg("--registries-conf")
        .arg(registries_conf)
        .args(["inspect", "--retry-times", "0"])
        .arg(format!("docker://{image}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut attempt = None;
    for line in stderr.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("Trying to access \\\"").nth(1) {
            attempt = Some(rest.split("\\\"").next().unwrap().to_owned());
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    attempt.unwrap_or_else(|| panic!("skopeo never tried a location for {image}"))
}

#[test]
fn skopeo_pulls_through_the_rendered_mirrors() {
    let report = check(&common::example(), Some(&common::secret()));
    let rendered = render(&report.site).unwrap();
    let dir = tempfile::tempdir().unwrap();
    rendered.write_to(dir.path()).unwrap();
    let conf = dir.path().join("nodes/registries.conf");
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    for image in [
        "postgres:15".to_owned(),
        "bitnami/redis:7.2".to_owned(),
        "ghcr.io/org/app:1.0".to_owned(),
        format!("quay.io/org/tool@{digest}"),
        "registry.k8s.io/pause:3.9".to_owned(),
        "apachesuperset.docker.scarf.sh/apache/superset:4.1.1".to_owned(),
    ] {
        let explained = explain(&report.site, &image).unwrap();
        let mirror = explained.mirror.as_ref().unwrap();
        let sep = if explained.image.reference.contains(':') {
            '@'
        } else {
            ':'
        };
        let expected = format!(
            "{}/{}/{}{sep}{}",
            explained.registry_host,
            mirror.project,
            explained.image.repository,
            explained.image.reference
        );
        assert_eq!(first_attempt(&conf, &image), expected, "{image}");
    }
    // A registry with no mirror is tried directly.
    assert_eq!(
        first_attempt(&conf, "registry.example.com/team/tool:1"),
        "registry.example.com/team/tool:1"
    );
}
