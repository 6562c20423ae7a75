//! Stage `gpu`: the NVIDIA container toolkit on `gpu_workers`, before K3s is installed there
//! (K3s finds the `nvidia` runtime when it starts). With a `nvidia-container-toolkit` yum
//! proxy on the gateway, a `.repo` file and `dnf install`; without one, RPMs resolved and
//! verified on the control node, copied over and installed from files. Verified with
//! `nvidia-ctk --version`. The node's `default-runtime: nvidia` is written by [`super::nodes`].

use super::files::{install_from_files, install_through_repo};
use super::report::Report;
use super::{ArtifactSource, DeployError, GatewayLink, Mode};
use crate::rpms::nvidia::{self, PACKAGES};
use airlock_remote::{ExecError, Executor, Input};
use airlock_site::site::Site;

pub const REPO_FILE: &str = "/etc/yum.repos.d/airlock-nvidia-container-toolkit.repo";
/// What proves the toolkit works: its CLI answers.
pub const VERIFY: &str = "nvidia-ctk --version";

/// One GPU worker. `arch` is `uname -m`'s (`x86_64`, `aarch64`); `ca` is where the node
/// keeps the gateway's CA and the PEM (placed first: dnf needs it to reach the gateway).
#[allow(clippy::too_many_arguments)] // the stage's inputs, each used once
pub fn run(
    site: &Site,
    exec: &dyn Executor,
    ca: Option<(&str, &str)>,
    arch: &str,
    gateway: Option<&GatewayLink>,
    artifacts: &dyn ArtifactSource,
    mode: Mode,
    report: &Report,
) -> Result<(), DeployError> {
    let host = exec.host().to_owned();
    let fail = |e: ExecError| DeployError::host("gpu", &host, e);
    let installed = exec
        .exec(
            &format!("rpm -q {} >/dev/null 2>&1", PACKAGES.join(" ")),
            Input::None,
        )
        .map_err(fail)?
        .success();
    let through_gateway = gateway.filter(|_| site.has_package(nvidia::PROXY));
    let install = if let Some(gateway) = through_gateway {
        let base = format!("https://{}/repository", gateway.staging.hostname);
        let repo = nvidia::repo_file(&base, site.ca_file.as_deref().unwrap_or_default());
        install_through_repo(exec, ca, (REPO_FILE, repo), &PACKAGES, mode, report).map_err(fail)?
    } else if installed {
        String::new()
    } else {
        let repo = nvidia::upstream_repo(site, arch);
        let rpms = artifacts.rpms(&[repo], &PACKAGES, arch).map_err(|message| {
            DeployError::local(
                "gpu",
                message.to_string(),
                "the control node resolves the NVIDIA container toolkit from NVIDIA's repository; check it is reachable, or set package_proxy_mode so the gateway proxies it",
            )
        })?;
        install_from_files(exec, &rpms, mode, report).map_err(fail)?
    };
    if installed {
        report.ok(&host, &format!("{} installed", PACKAGES.join(", ")));
    } else {
        if mode == Mode::Apply {
            exec.run(&install).map_err(fail)?;
        }
        report.changed(
            &host,
            &format!("install {} (GPU worker)", PACKAGES.join(", ")),
            None,
        );
    }
    if installed || mode == Mode::Apply {
        let version = exec.run(VERIFY).map_err(|e| {
            DeployError::host_message(
                "gpu",
                &host,
                format!("`{VERIFY}` failed after the toolkit was installed: {e}"),
                "check the nvidia-container-toolkit packages on that node (`rpm -V nvidia-container-toolkit`)",
            )
        })?;
        let first = version.lines().next().unwrap_or_default().trim();
        report.ok(&host, &format!("{VERIFY}: {first}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::K3sArtifacts;
    use crate::deploy::SourceError;
    use crate::deploy::selinux_policy::RPM_DIR;
    use crate::rpms::{CachedRpm, Checksum, Evr, RpmPackage};
    use airlock_remote::fake::Fake;
    use std::sync::Mutex;

    /// One request for RPMs: repositories, package names, architecture.
    type Asked = (Vec<String>, Vec<String>, String);

    /// Hands out one cached RPM and records what was asked for.
    struct Rpms {
        file: std::path::PathBuf,
        asked: Mutex<Vec<Asked>>,
    }

    impl ArtifactSource for Rpms {
        fn k3s(&self, _: &str, _: Option<&GatewayLink>) -> Result<K3sArtifacts, SourceError> {
            unreachable!()
        }
        fn rpms(
            &self,
            repos: &[String],
            packages: &[&str],
            arch: &str,
        ) -> Result<Vec<CachedRpm>, SourceError> {
            self.asked.lock().unwrap().push((
                repos.to_vec(),
                packages.iter().map(|p| (*p).to_owned()).collect(),
                arch.to_owned(),
            ));
            let sha256 = crate::deploy::sha256_file(&self.file).unwrap();
            Ok(vec![CachedRpm {
                package: RpmPackage {
                    name: "nvidia-container-toolkit".to_owned(),
                    arch: "x86_64".to_owned(),
                    evr: Evr {
                        epoch: 0,
                        version: "1.17.8".to_owned(),
                        release: "1".to_owned(),
                    },
                    url: "https://nvidia.example.test/x.rpm".to_owned(),
                    file_name: "nvidia-container-toolkit-1.17.8-1.x86_64.rpm".to_owned(),
                    checksum: Checksum {
                        kind: "sha256".to_owned(),
                        hex: sha256.clone(),
                    },
                    size: None,
                },
                path: self.file.clone(),
                sha256,
            }])
        }
    }

    fn quiet() -> Report {
        Report::new(Box::new(std::io::sink()), Mode::Apply)
    }

    fn source(dir: &tempfile::TempDir) -> Rpms {
        let file = dir.path().join("toolkit.rpm");
        std::fs::write(&file, b"rpm bytes").unwrap();
        Rpms {
            file,
            asked: Mutex::new(Vec::new()),
        }
    }

    #[test]
    fn without_a_proxy_the_closure_comes_from_nvidias_repository_as_files() {
        let site = super::super::tests::site();
        let dir = tempfile::tempdir().unwrap();
        let rpms = source(&dir);
        let node = Fake::new("gpu1");
        node.answer("rpm -q", 1, "");
        node.answer(
            "nvidia-ctk",
            0,
            "NVIDIA Container Toolkit CLI version 1.17.8\n",
        );
        run(
            &site,
            &node,
            None,
            "x86_64",
            None,
            &rpms,
            Mode::Apply,
            &quiet(),
        )
        .unwrap();
        assert_eq!(
            rpms.asked.lock().unwrap()[0],
            (
                vec!["https://nvidia.github.io/libnvidia-container/stable/rpm/x86_64/".to_owned()],
                PACKAGES.iter().map(|p| (*p).to_owned()).collect(),
                "x86_64".to_owned()
            )
        );
        let copied = format!("{RPM_DIR}/nvidia-container-toolkit-1.17.8-1.x86_64.rpm");
        assert_eq!(node.file(&copied).unwrap(), b"rpm bytes");
        let commands = node.commands();
        let install = commands
            .iter()
            .position(|c| *c == format!("dnf -y install {copied}"))
            .expect("installs the copied files");
        let verify = commands.iter().position(|c| c == VERIFY).expect("verifies");
        assert!(install < verify, "{commands:?}");
    }

    #[test]
    fn installed_toolkit_is_only_verified_and_check_mode_installs_nothing() {
        let site = super::super::tests::site();
        let dir = tempfile::tempdir().unwrap();
        let rpms = source(&dir);
        let node = Fake::new("gpu1");
        node.answer("rpm -q", 0, "");
        node.answer(
            "nvidia-ctk",
            0,
            "NVIDIA Container Toolkit CLI version 1.17.8\n",
        );
        let report = quiet();
        run(
            &site,
            &node,
            None,
            "x86_64",
            None,
            &rpms,
            Mode::Apply,
            &report,
        )
        .unwrap();
        assert!(rpms.asked.lock().unwrap().is_empty());
        assert!(!node.commands().iter().any(|c| c.contains("dnf")));
        assert_eq!(report.counts()["gpu1"].changed, 0);

        let fresh = Fake::new("gpu2");
        fresh.answer("rpm -q", 1, "");
        let check = Report::new(Box::new(std::io::sink()), Mode::Check);
        run(
            &site,
            &fresh,
            None,
            "x86_64",
            None,
            &rpms,
            Mode::Check,
            &check,
        )
        .unwrap();
        assert!(
            !fresh
                .commands()
                .iter()
                .any(|c| c.contains("dnf") || c == VERIFY),
            "{:?}",
            fresh.commands()
        );
        assert_eq!(
            check.counts()["gpu2"].changed,
            2,
            "the copy and the install"
        );
    }

    #[test]
    fn a_toolkit_that_does_not_answer_fails_the_stage() {
        let site = super::super::tests::site();
        let dir = tempfile::tempdir().unwrap();
        let node = Fake::new("gpu1");
        node.answer("rpm -q", 0, "");
        node.answer("nvidia-ctk", 127, "nvidia-ctk: command not found");
        let err = run(
            &site,
            &node,
            None,
            "x86_64",
            None,
            &source(&dir),
            Mode::Apply,
            &quiet(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("gpu1") && text.contains("nvidia-ctk --version"),
            "{text}"
        );
    }
}
