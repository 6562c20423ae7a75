//! Static package upstreams the bundle tests carry from: a `PyPI` index with `alpha`
//! (requiring `beta`, with PEP 658 metadata) and `beta`, a `createrepo_c` yum repository
//! under `el9/` with `airlock-app` requiring `airlock-dep` (and an unrelated
//! `airlock-extra`), and a Helm chart repository under `charts/` with `app` 1.0.0 and 2.0.0.
//! Plus pip installing from a hash-pinned lock.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use airlock_testkit::wheel::{build_wheels_requiring, pip};
use airlock_testkit::{Dist, FakeFiles, FakePypi, RpmSpec, build_rpm, createrepo};
use airlock_types::Digest;

pub const RPMS: [RpmSpec<'static>; 3] = [
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

pub fn shown(output: &Output) -> String {
    format!(
        "{}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn checked(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {}", shown(&output));
    output
}

/// The static upstreams, and what they serve.
pub struct Upstreams {
    pub pypi: FakePypi,
    pub files: FakeFiles,
    pub wheels: std::path::PathBuf,
    pub charts: Vec<Vec<u8>>,
}

pub fn wheel(upstreams: &Upstreams, name: &str) -> Vec<u8> {
    std::fs::read(upstreams.wheels.join(name)).unwrap()
}

/// A chart archive made by `tar`: `<name>/Chart.yaml`.
pub fn chart(dir: &Path, name: &str, version: &str) -> Vec<u8> {
    let src = dir.join(format!("chart-{version}"));
    std::fs::create_dir_all(src.join(name)).unwrap();
    std::fs::write(
        src.join(name).join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
    )
    .unwrap();
    let out = dir.join(format!("{name}-{version}.tgz"));
    checked(
        Command::new("tar")
            .arg("-czf")
            .arg(&out)
            .arg("-C")
            .arg(&src)
            .arg(name),
    );
    std::fs::read(out).unwrap()
}

pub async fn upstreams(dir: &Path) -> Upstreams {
    let wheels = build_wheels_requiring(
        dir,
        &[
            ("alpha", "1.0", &["beta"]),
            ("alpha", "2.0", &["beta"]),
            ("beta", "1.0", &[]),
        ],
    );
    let pypi = FakePypi::start().await;
    for (project, name) in [
        ("alpha", "alpha-1.0-py3-none-any.whl"),
        ("alpha", "alpha-2.0-py3-none-any.whl"),
        ("beta", "beta-1.0-py3-none-any.whl"),
    ] {
        let mut dist = Dist::new(name, &std::fs::read(wheels.join(name)).unwrap());
        // alpha's page offers PEP 658 metadata: pip reads it instead of the wheel.
        if project == "alpha" {
            dist.metadata = Some(std::fs::read(wheels.join(format!("{name}.metadata"))).unwrap());
        }
        pypi.add(project, dist);
    }

    let repo = dir.join("repo");
    for spec in &RPMS {
        build_rpm(dir, &repo, spec);
    }
    createrepo(&repo, &[]);
    let files = FakeFiles::start().await;
    files.put_dir("el9/", &repo);

    let charts = vec![chart(dir, "app", "1.0.0"), chart(dir, "app", "2.0.0")];
    let mut index = String::from("apiVersion: v1\nentries:\n  app:\n");
    for (version, bytes) in ["1.0.0", "2.0.0"].iter().zip(&charts) {
        let _ = write!(
            index,
            "  - apiVersion: v2\n    name: app\n    version: {version}\n    digest: {}\n    urls:\n    - app-{version}.tgz\n",
            Digest::of(bytes).hex()
        );
        files.put(
            &format!("charts/app-{version}.tgz"),
            "application/gzip",
            bytes,
        );
    }
    index.push_str("generated: \"2024-05-01T10:00:00Z\"\n");
    files.put("charts/index.yaml", "application/x-yaml", index.as_bytes());
    Upstreams {
        pypi,
        files,
        wheels,
        charts,
    }
}

/// pip installing exactly `requirements` (`--require-hashes`) from `index` into
/// `dir/site`.
pub fn pip_install(dir: &Path, index: &str, requirements: &Path) -> Output {
    let target = dir.join("site");
    pip(
        &[
            "install",
            "--require-hashes",
            "-r",
            requirements.to_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
        ],
        index,
    )
}

/// A lock pinning `alpha==1.0` and `beta==1.0` by their wheels' sha256, as
/// `pip-compile --generate-hashes` writes one, at `path`.
pub fn write_lock(upstreams: &Upstreams, path: &Path) {
    let alpha = wheel(upstreams, "alpha-1.0-py3-none-any.whl");
    let beta = wheel(upstreams, "beta-1.0-py3-none-any.whl");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        format!(
            "# what pip-compile --generate-hashes writes\nalpha==1.0 \\\n    --hash=sha256:{}\nbeta==1.0 \\\n    --hash=sha256:{}\n",
            Digest::of(&alpha).hex(),
            Digest::of(&beta).hex()
        ),
    )
    .unwrap();
}
