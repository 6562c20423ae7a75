//! Stage `selinux`: Rancher's `k3s-selinux` and `container-selinux` on nodes that run
//! `SELinux` (or all nodes when `k3s_selinux_enabled` is true). With a `rancher-k3s` yum proxy
//! on the gateway, a `.repo` file and `dnf install`; without one, RPMs resolved and verified
//! on the control node, copied over and installed from files. No Kubernetes Job.

use super::files::{install_from_files, install_through_repo};
use super::report::Report;
use super::{ArtifactSource, DeployError, GatewayLink, Mode};
use crate::rpms::selinux::{self, PACKAGES};
use airlock_remote::{ExecError, Executor, Input};
use airlock_site::site::Site;

pub const REPO_FILE: &str = "/etc/yum.repos.d/airlock-k3s-selinux.repo";
/// Where RPMs copied from the control node wait to be installed.
pub const RPM_DIR: &str = "/var/lib/airlock/rpms";

/// `getenforce`, or what `/sys/fs/selinux` says, or `Disabled`.
pub const MODE_SCRIPT: &str = "if command -v getenforce >/dev/null 2>&1; then getenforce; \
elif [ -r /sys/fs/selinux/enforce ]; then \
if [ \"$(cat /sys/fs/selinux/enforce)\" = 1 ]; then echo Enforcing; else echo Permissive; fi; \
else echo Disabled; fi";

/// Whether a node needs the policy packages: always when the inventory says so, else when
/// `SELinux` is not disabled there.
pub fn wanted(site: &Site, mode: &str) -> bool {
    site.k3s.selinux || !mode.trim().eq_ignore_ascii_case("disabled")
}

/// One node. `arch` is `uname -m`'s (`x86_64`, `aarch64`); `ca` is where the node keeps the
/// gateway's CA and the PEM (placed first: dnf needs it to reach the gateway).
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
    let fail = |e: ExecError| DeployError::host("selinux", &host, e);
    let selinux = exec.run(MODE_SCRIPT).map_err(fail)?;
    if !wanted(site, &selinux) {
        report.skipped(&host, "SELinux is disabled here (set k3s_selinux_enabled: true to install its K3s policy anyway)");
        return Ok(());
    }
    let os_release = exec
        .read("/etc/os-release")
        .map_err(fail)?
        .unwrap_or_default();
    let el = crate::rpms::el_major(&String::from_utf8_lossy(&os_release)).map_err(|e| {
        DeployError::host_message(
            "selinux",
            &host,
            format!("SELinux is {} but {e}", selinux.trim()),
            "K3s's SELinux policy is published for RHEL-compatible systems (Rocky Linux 9 above all); disable SELinux on this node or reinstall it with a RHEL-compatible OS",
        )
    })?;
    let installed_query = format!("rpm -q {} >/dev/null 2>&1", PACKAGES.join(" "));
    let installed = exec
        .exec(&installed_query, Input::None)
        .map_err(fail)?
        .success();
    let through_gateway = gateway.filter(|_| site.has_package("rancher-k3s"));
    let install = if let Some(gateway) = through_gateway {
        let base = format!("https://{}/repository", gateway.staging.hostname);
        let ca_path = site.ca_file.as_deref().unwrap_or_default();
        let repo = selinux::repo_file(site, &base, ca_path, el);
        install_through_repo(exec, ca, (REPO_FILE, repo), &PACKAGES, mode, report).map_err(fail)?
    } else {
        if installed {
            report.ok(&host, &format!("{} installed", PACKAGES.join(", ")));
            return Ok(());
        }
        let repo = selinux::rancher_repo(site, el);
        let rpms = artifacts.rpms(&[repo], &PACKAGES, arch).map_err(|message| {
            DeployError::local(
                "selinux",
                message.to_string(),
                "the control node resolves the RPMs from k3s_selinux_rpm_site; check it is reachable, or set package_proxy_mode so the gateway proxies them",
            )
        })?;
        install_from_files(exec, &rpms, mode, report).map_err(fail)?
    };
    if installed {
        report.ok(&host, &format!("{} installed", PACKAGES.join(", ")));
        return Ok(());
    }
    if mode == Mode::Apply {
        exec.run(&install).map_err(fail)?;
    }
    report.changed(
        &host,
        &format!(
            "install {} (SELinux {})",
            PACKAGES.join(", "),
            selinux.trim()
        ),
        None,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::K3sArtifacts;
    use crate::deploy::SourceError;
    use crate::rpms::{CachedRpm, Checksum, Evr, RpmPackage};
    use airlock_remote::fake::Fake;

    struct Rpms(std::path::PathBuf);
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
            assert_eq!(
                (repos, packages, arch),
                (
                    &["https://rpm.rancher.io/k3s/stable/common/centos/9/noarch/".to_owned()][..],
                    &PACKAGES[..],
                    "x86_64"
                )
            );
            let sha256 = crate::deploy::sha256_file(&self.0).unwrap();
            Ok(vec![CachedRpm {
                package: RpmPackage {
                    name: "k3s-selinux".to_owned(),
                    arch: "noarch".to_owned(),
                    evr: Evr {
                        epoch: 0,
                        version: "1.6".to_owned(),
                        release: "1.el9".to_owned(),
                    },
                    url: "https://rpm.example.test/k3s-selinux-1.6-1.el9.noarch.rpm".to_owned(),
                    file_name: "k3s-selinux-1.6-1.el9.noarch.rpm".to_owned(),
                    checksum: Checksum {
                        kind: "sha256".to_owned(),
                        hex: sha256.clone(),
                    },
                    size: None,
                },
                path: self.0.clone(),
                sha256,
            }])
        }
    }

    const ROCKY: &str =
        "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n";

    fn quiet() -> Report {
        Report::new(Box::new(std::io::sink()), Mode::Apply)
    }

    #[test]
    fn disabled_selinux_is_skipped() {
        let site = super::super::tests::site();
        let node = Fake::new("n");
        node.answer("getenforce", 0, "Disabled\n");
        let dir = tempfile::tempdir().unwrap();
        run(
            &site,
            &node,
            None,
            "x86_64",
            None,
            &Rpms(dir.path().join("x")),
            Mode::Apply,
            &quiet(),
        )
        .unwrap();
        assert!(!node.commands().iter().any(|c| c.contains("dnf")));
    }

    #[test]
    fn enforcing_node_without_a_yum_proxy_gets_rpm_files() {
        let site = super::super::tests::site();
        let dir = tempfile::tempdir().unwrap();
        let rpm = dir.path().join("k3s-selinux.rpm");
        std::fs::write(&rpm, b"rpm bytes").unwrap();
        let node = Fake::new("n");
        node.answer("getenforce", 0, "Enforcing\n");
        node.answer("rpm -q", 1, "");
        node.put("/etc/os-release", ROCKY);
        run(
            &site,
            &node,
            None,
            "x86_64",
            None,
            &Rpms(rpm),
            Mode::Apply,
            &quiet(),
        )
        .unwrap();
        let copied = format!("{RPM_DIR}/k3s-selinux-1.6-1.el9.noarch.rpm");
        assert_eq!(node.file(&copied).unwrap(), b"rpm bytes");
        assert!(
            node.commands()
                .contains(&format!("dnf -y install {copied}")),
            "{:?}",
            node.commands()
        );
    }

    #[test]
    fn enforcing_debian_node_is_refused_with_advice() {
        let site = super::super::tests::site();
        let node = Fake::new("n");
        node.answer("getenforce", 0, "Enforcing\n");
        node.put("/etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
        let dir = tempfile::tempdir().unwrap();
        let err = run(
            &site,
            &node,
            None,
            "x86_64",
            None,
            &Rpms(dir.path().join("x")),
            Mode::Apply,
            &quiet(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("RHEL-compatible"), "{err}");
    }

    /// Regression: with the gateway's yum proxy, the `.repo` named the CA file before the
    /// nodes stage had placed it, so dnf could not verify the gateway on a first deploy.
    #[test]
    fn through_the_gateway_the_ca_is_placed_before_the_repo_file() {
        let mut site = super::super::tests::site();
        let entry = airlock_site::catalog::packages()
            .iter()
            .find(|p| p.name == "rancher-k3s")
            .unwrap();
        site.packages.push(airlock_site::site::PackageProxy {
            name: entry.name,
            format: entry.format,
            upstream: entry.upstream.to_owned(),
        });
        let gateway = GatewayLink {
            staging: site.staging.clone().unwrap(),
            ca: Some(b"PEM\n".to_vec()),
            insecure: false,
        };
        let node = Fake::new("n");
        node.answer("getenforce", 0, "Enforcing\n");
        node.answer("rpm -q", 1, "");
        node.put("/etc/os-release", ROCKY);
        let dir = tempfile::tempdir().unwrap();
        let ca = site.ca_file.clone().unwrap();
        run(
            &site,
            &node,
            Some((&ca, "PEM\n")),
            "x86_64",
            Some(&gateway),
            &Rpms(dir.path().join("x")),
            Mode::Apply,
            &quiet(),
        )
        .unwrap();
        let log = node.log();
        let at = |needle: &str| log.iter().position(|l| l == needle);
        let (ca_written, repo_written) = (
            at(&format!("write {ca}")).expect("the CA is written"),
            at(&format!("write {REPO_FILE}")).expect("the .repo is written"),
        );
        assert!(ca_written < repo_written, "{log:?}");
        assert!(
            node.commands()
                .contains(&"dnf -y install k3s-selinux container-selinux".to_owned())
        );
    }
}
