//! RPM fixtures: tiny noarch packages built with `rpmbuild` and repositories indexed with
//! `createrepo_c` (Debian packages `rpm` and `createrepo-c`), signed with `gpg` (`gnupg`),
//! for yum proxy tests.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A package to build: one file, `/usr/share/<name>/hello`, and optionally one dependency.
#[derive(Debug, Clone, Copy)]
pub struct RpmSpec<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub requires: Option<&'a str>,
}

/// Builds `spec` with `rpmbuild` under `work` and moves the package into `repo`; returns
/// its path. Panics naming the Debian package when `rpmbuild` is missing.
pub fn build_rpm(work: &Path, repo: &Path, spec: &RpmSpec<'_>) -> PathBuf {
    let hello = format!("/usr/share/{}/hello", spec.name);
    let content = format!("{}\n", spec.name);
    build_rpm_with_files(work, repo, spec, &[(&hello, &content, 0o644)])
}

/// Like [`build_rpm`], with `files` (absolute path, content, mode) instead of the `hello`
/// file: a package whose files land where a test machine's overlays are (`/usr/local`).
pub fn build_rpm_with_files(
    work: &Path,
    repo: &Path,
    spec: &RpmSpec<'_>,
    files: &[(&str, &str, u32)],
) -> PathBuf {
    let RpmSpec {
        name,
        version,
        requires,
    } = *spec;
    let requires = requires
        .map(|r| format!("Requires: {r}\n"))
        .unwrap_or_default();
    let top = work.join(format!("rpmbuild-{name}"));
    let sources = top.join("files");
    std::fs::create_dir_all(&sources).expect("rpmbuild top dir");
    let mut install = String::new();
    let mut listed = String::new();
    for (i, (path, content, mode)) in files.iter().enumerate() {
        let source = sources.join(i.to_string());
        std::fs::write(&source, content).expect("write a package file");
        let _ = writeln!(
            install,
            "install -D -m {mode:o} {} %{{buildroot}}{path}",
            source.display()
        );
        listed.push_str(path);
        listed.push('\n');
    }
    let text = format!(
        "Name: {name}\nVersion: {version}\nRelease: 1\nSummary: {name} fixture\nLicense: MIT\n\
         BuildArch: noarch\nAutoReqProv: no\n{requires}\n%description\n{name} fixture\n\n%install\n\
         {install}\n%files\n{listed}"
    );
    let spec_path = top.join(format!("{name}.spec"));
    std::fs::write(&spec_path, text).expect("write spec");
    run(
        Command::new("rpmbuild")
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg(&spec_path),
        "rpmbuild",
        "rpm",
    );
    let file = format!("{name}-{version}-1.noarch.rpm");
    std::fs::create_dir_all(repo).expect("repo dir");
    let target = repo.join(&file);
    std::fs::rename(top.join("RPMS/noarch").join(&file), &target).expect("move the rpm");
    target
}

/// Indexes `repo` with `createrepo_c` and extra `args` (`--baseurl …`, `--checksum …`).
/// Panics naming the Debian package when `createrepo_c` is missing.
pub fn createrepo(repo: &Path, args: &[&str]) {
    run(
        Command::new("createrepo_c")
            .arg("--quiet")
            .args(args)
            .arg(repo),
        "createrepo_c",
        "createrepo-c",
    );
}

fn run(command: &mut Command, tool: &str, package: &str) {
    let output = command.output().unwrap_or_else(|e| {
        panic!("{tool} could not run ({e}): install the Debian package `{package}`")
    });
    assert!(
        output.status.success(),
        "{tool} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Signs `repo`'s `repodata/repomd.xml` with a new key (in a keyring under `work`), writing
/// `repomd.xml.asc` and the public key as `repomd.xml.key`. Panics naming the Debian
/// package when `gpg` is missing.
pub fn sign_repository(work: &Path, repo: &Path) {
    let home = work.join("gnupg");
    std::fs::create_dir_all(&home).expect("gnupg home");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))
            .expect("gnupg home mode");
    }
    let gpg = |args: &[&str]| {
        let mut command = Command::new("gpg");
        command
            .env("GNUPGHOME", &home)
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args);
        command
    };
    run(
        &mut gpg(&[
            "--quick-gen-key",
            "airlock test <test@airlock.invalid>",
            "rsa2048",
            "sign",
            "never",
        ]),
        "gpg",
        "gnupg",
    );
    let repodata = repo.join("repodata");
    let key = repodata.join("repomd.xml.key");
    let signature = repodata.join("repomd.xml.asc");
    let repomd = repodata.join("repomd.xml");
    run(
        gpg(&["--armor", "--export", "--output"]).arg(&key),
        "gpg",
        "gnupg",
    );
    run(
        gpg(&["--armor", "--detach-sign", "--output"])
            .arg(&signature)
            .arg(&repomd),
        "gpg",
        "gnupg",
    );
}

/// Runs a real `dnf` installing `package` into a fresh root under `dir` from the repository
/// `t` at `repo_url` alone, reading no configuration, repository, cache or proxy setting of
/// this machine; `options` (`--setopt=t.repo_gpgcheck=0`, …) set how `t` checks signatures.
/// Panics naming the Debian package when `dnf` cannot run.
pub fn dnf_install(
    dir: &Path,
    repo_url: &str,
    package: &str,
    options: &[String],
) -> std::process::Output {
    std::fs::create_dir_all(dir.join("repos.d")).unwrap();
    let conf = dir.join("dnf.conf");
    std::fs::write(
        &conf,
        format!(
            "[main]\ngpgcheck=0\ninstall_weak_deps=0\nreposdir={}\ncachedir={}\nlogdir={}\n\
             persistdir={}\nproxy=\n",
            dir.join("repos.d").display(),
            dir.join("cache").display(),
            dir.join("log").display(),
            dir.join("persist").display(),
        ),
    )
    .unwrap();
    let mut command = Command::new("dnf");
    command
        .args([
            "-y",
            "-q",
            "--noplugins",
            "--releasever=9",
            "--disablerepo=*",
        ])
        .arg(format!("--config={}", conf.display()))
        .arg(format!("--installroot={}", dir.join("root").display()))
        .arg(format!("--repofrompath=t,{repo_url}"))
        .arg("--setopt=t.gpgcheck=0")
        .args(options)
        .args(["install", package]);
    for key in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        command.env_remove(key);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("dnf could not run ({e}): install the Debian package `dnf`"))
}
