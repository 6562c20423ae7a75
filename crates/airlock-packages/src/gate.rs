//! Policy at the gate for package files: the name and version a download path carries,
//! read from its file name the way each format names files, checked against `[[policy]]`
//! before anything is fetched or served. Index and metadata pages pass untouched: a client
//! still sees every version, and a denied one fails at download with the rule and reason.
//!
//! | format | path | name | version |
//! |---|---|---|---|
//! | pypi | `packages/<project>/<sha256>/<file>` (wheel, sdist, `.metadata`) | project | wheel/sdist version |
//! | conda | `…/<name>-<version>-<build>.conda` or `.tar.bz2` | name | version |
//! | maven | `<group path>/<artifact>/<version>/<artifact>-<version>…` | `group:artifact` | version |
//! | yum | `…/<name>-<version>-<release>.<arch>.rpm` | name | `version-release` |
//! | helm | `…/<name>-<version>.tgz` (and `.prov`) | name | version |
//!
//! Raw files have no name or version to check.

use airlock_config::Format;
use airlock_policy::{Family, Finding, Mode, Policy, Subject, Verdict};

use crate::PackageError;

/// The package a download path names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PackageFile {
    pub name: String,
    pub version: String,
}

/// Checks a request path of proxy `proxy` against the policy.
pub(crate) fn check(
    policy: &Policy,
    proxy: &str,
    format: Format,
    path: &str,
) -> Result<(), PackageError> {
    if policy.is_empty() {
        return Ok(());
    }
    let Some(file) = file_of(format, path) else {
        return Ok(());
    };
    let family = if format == Format::Pypi {
        Family::Pypi
    } else {
        Family::Files
    };
    let subject = Subject::Package {
        proxy,
        family,
        name: &file.name,
        version: &file.version,
    };
    let evaluation = policy.evaluate(&subject);
    for finding in &evaluation.logged {
        record(proxy, &file, finding, Mode::Log);
    }
    match evaluation.verdict {
        Verdict::Deny(finding) => {
            record(proxy, &file, &finding, Mode::Enforce);
            Err(PackageError::PolicyDenied {
                rule: finding.rule.to_owned(),
                reason: finding.reason,
            })
        }
        Verdict::Allow | Verdict::Verify { .. } => Ok(()),
    }
}

fn record(proxy: &str, file: &PackageFile, finding: &Finding<'_>, mode: Mode) {
    airlock_policy::record(&airlock_policy::Decision {
        proxy,
        item: &format!("{} {}", file.name, file.version),
        digest: None,
        finding,
        mode,
    });
}

/// The package a path of a proxy of `format` downloads, if it is a package file.
pub(crate) fn file_of(format: Format, path: &str) -> Option<PackageFile> {
    let segments: Vec<&str> = path.split('/').collect();
    let filename = *segments.last()?;
    let (name, version) = match format {
        Format::Pypi => match segments.as_slice() {
            ["packages", project, _, filename] => (
                (*project).to_owned(),
                pypi_version(filename.strip_suffix(".metadata").unwrap_or(filename))?,
            ),
            _ => return None,
        },
        Format::Conda => {
            let stem = filename
                .strip_suffix(".conda")
                .or_else(|| filename.strip_suffix(".tar.bz2"))?;
            let mut parts = stem.rsplitn(3, '-');
            let (_build, version, name) = (parts.next()?, parts.next()?, parts.next()?);
            (name.to_owned(), version.to_owned())
        }
        Format::Yum => {
            let stem = filename.strip_suffix(".rpm")?;
            let (nvr, _arch) = stem.rsplit_once('.')?;
            let mut parts = nvr.rsplitn(3, '-');
            let (release, version, name) = (parts.next()?, parts.next()?, parts.next()?);
            (name.to_owned(), format!("{version}-{release}"))
        }
        Format::Helm => {
            let stem = filename
                .strip_suffix(".tgz")
                .or_else(|| filename.strip_suffix(".tgz.prov"))?;
            let at = stem
                .char_indices()
                .find(|&(i, c)| {
                    c == '-'
                        && stem[i + 1..]
                            .chars()
                            .next()
                            .is_some_and(|d| d.is_ascii_digit())
                })?
                .0;
            (stem[..at].to_owned(), stem[at + 1..].to_owned())
        }
        Format::Maven => {
            let n = segments.len();
            if n < 4 {
                return None;
            }
            let (artifact, version) = (segments[n - 3], segments[n - 2]);
            if !filename.starts_with(&format!("{artifact}-{version}")) {
                return None;
            }
            let group = segments[..n - 3].join(".");
            (format!("{group}:{artifact}"), version.to_owned())
        }
        Format::Raw | Format::Oci => return None,
    };
    (!name.is_empty() && !version.is_empty()).then_some(PackageFile { name, version })
}

/// The version in a wheel (`name-version-…whl`, binary `.egg` alike) or sdist
/// (`name-version.tar.gz`, `.zip`) file name.
fn pypi_version(filename: &str) -> Option<String> {
    let extension = std::path::Path::new(filename)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if extension == "whl" || extension == "egg" {
        return filename.split('-').nth(1).map(str::to_owned);
    }
    let stem = [".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar"]
        .iter()
        .find_map(|ext| filename.strip_suffix(ext))?;
    stem.rsplit_once('-').map(|(_, version)| version.to_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn named(format: Format, path: &str) -> Option<(String, String)> {
        file_of(format, path).map(|f| (f.name, f.version))
    }

    fn pair(name: &str, version: &str) -> (String, String) {
        (name.to_owned(), version.to_owned())
    }

    #[test]
    fn file_names_give_name_and_version() {
        let sha = "a".repeat(64);
        assert_eq!(
            named(
                Format::Pypi,
                &format!("packages/requests/{sha}/requests-2.31.0-py3-none-any.whl")
            ),
            Some(pair("requests", "2.31.0"))
        );
        assert_eq!(
            named(
                Format::Pypi,
                &format!("packages/requests/{sha}/requests-2.31.0-py3-none-any.whl.metadata")
            ),
            Some(pair("requests", "2.31.0"))
        );
        assert_eq!(
            named(
                Format::Pypi,
                &format!("packages/zope-interface/{sha}/zope.interface-6.0.tar.gz")
            ),
            Some(pair("zope-interface", "6.0"))
        );
        assert_eq!(named(Format::Pypi, "simple/requests/"), None);
        assert_eq!(
            named(
                Format::Conda,
                "conda-forge/linux-64/openssl-3.0.13-h4ab18f5_0.conda"
            ),
            Some(pair("openssl", "3.0.13"))
        );
        assert_eq!(
            named(
                Format::Conda,
                "main/noarch/python-dateutil-2.8.2-pyhd3eb1b0_0.tar.bz2"
            ),
            Some(pair("python-dateutil", "2.8.2"))
        );
        assert_eq!(named(Format::Conda, "main/linux-64/repodata.json"), None);
        assert_eq!(
            named(
                Format::Yum,
                "BaseOS/x86_64/os/Packages/openssl-libs-3.0.7-27.el9.x86_64.rpm"
            ),
            Some(pair("openssl-libs", "3.0.7-27.el9"))
        );
        assert_eq!(
            named(Format::Yum, "BaseOS/x86_64/os/repodata/repomd.xml"),
            None
        );
        assert_eq!(
            named(Format::Helm, "charts/ingress-nginx-4.10.1.tgz"),
            Some(pair("ingress-nginx", "4.10.1"))
        );
        assert_eq!(named(Format::Helm, "index.yaml"), None);
        assert_eq!(
            named(
                Format::Maven,
                "org/apache/commons/commons-lang3/3.14.0/commons-lang3-3.14.0.jar"
            ),
            Some(pair("org.apache.commons:commons-lang3", "3.14.0"))
        );
        assert_eq!(
            named(
                Format::Maven,
                "org/apache/commons/commons-lang3/maven-metadata.xml"
            ),
            None
        );
        assert_eq!(named(Format::Raw, "anything/x-1.0.tar.gz"), None);
    }

    proptest! {
        #[test]
        fn hostile_paths_never_panic(path in "[a-z0-9./_+-]{0,60}") {
            for format in [Format::Pypi, Format::Conda, Format::Yum, Format::Helm, Format::Maven, Format::Raw] {
                if let Some(file) = file_of(format, &path) {
                    prop_assert!(!file.name.is_empty() && !file.version.is_empty());
                }
            }
        }
    }
}
