//! RPM packages for the nodes, resolved on the control node from yum repository metadata:
//! [`selinux`] (Rancher's `k3s-selinux`, `container-selinux`) and [`nvidia`] (the NVIDIA
//! container toolkit on GPU workers).
//!
//! - With a yum proxy on the gateway, nodes get a `.repo` file pointing at it and install
//!   with `dnf install <names>`.
//! - Without one, the control node reads the repositories' metadata (`repodata/repomd.xml`,
//!   then the primary it lists, checked against repomd's checksum), resolves the packages'
//!   dependency closure ([`resolve_closure`]), downloads and verifies the RPMs into the local
//!   cache ([`download_rpms`]); they are copied to the nodes and installed there with
//!   `dnf install <files>`, which takes [`Closure::left_to_os`] from the node's own
//!   repositories.
//!
//! Packages are checked with the checksum their primary metadata gives: sha256 (or sha224,
//! sha384, sha512); sha1 and md5 are refused as insecure. `repomd.xml` itself is trusted as
//! TLS delivered it.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::artifacts::{ArtifactError, Body, Cas, Http, Sink};

pub mod nvidia;
mod repodata;
pub mod selinux;

use airlock_yum::Dep;
pub use airlock_yum::{Checksum, Evr, rpmvercmp};
use repodata::read_repository;

/// `repomd.xml` larger than this is not one.
const REPOMD_LIMIT: u64 = 16 * 1024 * 1024;
/// Compressed primary metadata larger than this is refused.
const PRIMARY_LIMIT: u64 = 512 * 1024 * 1024;
/// Decompressed primary metadata larger than this is refused (Fedora's is ~100 MiB).
const PRIMARY_XML_LIMIT: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RpmError {
    #[error(transparent)]
    Fetch(#[from] ArtifactError),
    #[error("{url}: {detail}")]
    Malformed { url: String, detail: String },
    #[error(
        "{url} is checked only with {kind}, which is not secure; use a repository published with sha256"
    )]
    InsecureChecksum { url: String, kind: String },
    #[error("{url} has checksum type `{kind}`, which airlock does not know")]
    UnknownChecksum { url: String, kind: String },
    #[error("{url} does not match its metadata: expected {kind} {expected}, got {actual}")]
    ChecksumMismatch {
        url: String,
        kind: String,
        expected: String,
        actual: String,
    },
    #[error("none of {wanted} is in {repos}")]
    NothingFound { wanted: String, repos: String },
    #[error(
        "`{0}` is not an OS release airlock installs RPM packages on (RHEL-family 7, 8, 9, 10)"
    )]
    UnsupportedOs(String),
}

/// The RHEL major version (`7`, `8`, `9`, `10`) of an `/etc/os-release` of the RHEL family.
pub fn el_major(os_release: &str) -> Result<u32, RpmError> {
    let field = |key: &str| {
        os_release.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix('=')?;
            Some(value.trim().trim_matches('"').trim_matches('\'').to_owned())
        })
    };
    let id = field("ID").unwrap_or_default();
    let like = field("ID_LIKE").unwrap_or_default();
    let rhel_family = ["rhel", "centos", "rocky", "almalinux", "ol"]
        .iter()
        .any(|f| id == *f || like.split_whitespace().any(|l| l == *f));
    let version = field("VERSION_ID").unwrap_or_default();
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m @ 7..=10) if rhel_family => Ok(m),
        _ => Err(RpmError::UnsupportedOs(format!("{id} {version}"))),
    }
}

/// One package of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmPackage {
    pub name: String,
    pub arch: String,
    pub evr: Evr,
    /// Where to download it.
    pub url: String,
    /// The file name to copy it to (`<name>-<version>-<release>.<arch>.rpm`).
    pub file_name: String,
    pub checksum: Checksum,
    pub size: Option<u64>,
}

/// A requirement no given repository satisfies: the node's own repositories must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// `container-selinux >= 2:2.164`, `/bin/sh`, …
    pub requirement: String,
    /// The package that needs it; `None` for a package asked for by name.
    pub required_by: Option<String>,
}

/// A dependency closure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Closure {
    /// In the order they were chosen (the wanted packages first).
    pub packages: Vec<RpmPackage>,
    pub left_to_os: Vec<Unresolved>,
}

/// A downloaded, verified package in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRpm {
    pub package: RpmPackage,
    /// `<cache>/sha256/<hex>`.
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone)]
struct Parsed {
    package: RpmPackage,
    provides: Vec<Dep>,
    requires: Vec<Dep>,
    files: Vec<String>,
}

impl Parsed {
    fn provides(&self, dep: &Dep) -> bool {
        if dep.name.starts_with('/') && self.files.contains(&dep.name) {
            return true;
        }
        if dep.name == self.package.name && dep.satisfied_by(Some(&self.package.evr)) {
            return true;
        }
        self.provides
            .iter()
            .any(|p| p.name == dep.name && dep.satisfied_by(p.evr.as_ref()))
    }
}

fn malformed(url: &str, detail: impl Into<String>) -> RpmError {
    RpmError::Malformed {
        url: url.to_owned(),
        detail: detail.into(),
    }
}

/// The dependency closure of `wanted` (package names) from the yum repositories `repos`
/// (each a URL of the directory holding `repodata/`), for `arch` (`x86_64`, `aarch64`) and
/// `noarch`: the newest package satisfying each requirement, following its requirements;
/// what none of `repos` provides is left to the node's own repositories.
pub fn resolve_closure(
    repos: &[String],
    wanted: &[&str],
    arch: &str,
    http: &Http,
) -> Result<Closure, RpmError> {
    let mut available = Vec::new();
    for repo in repos {
        available.extend(
            read_repository(repo, http)?
                .into_iter()
                .filter(|p| p.package.arch == "noarch" || p.package.arch == arch),
        );
    }
    let mut closure = Closure::default();
    let mut chosen: Vec<usize> = Vec::new();
    let mut chosen_names: HashSet<String> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<(Dep, Option<String>)> = wanted
        .iter()
        .map(|w| {
            (
                Dep {
                    name: (*w).to_owned(),
                    flags: None,
                    evr: None,
                },
                None,
            )
        })
        .collect();
    while let Some((dep, required_by)) = queue.pop_front() {
        if dep.name.starts_with("rpmlib(") || !seen.insert(dep.to_string()) {
            continue;
        }
        if chosen.iter().any(|&i| available[i].provides(&dep)) {
            continue;
        }
        let best = available
            .iter()
            .enumerate()
            .filter(|(_, p)| !chosen_names.contains(&p.package.name) && p.provides(&dep))
            .max_by(|(_, a), (_, b)| {
                a.package
                    .evr
                    .compare(&b.package.evr)
                    .then_with(|| b.package.name.cmp(&a.package.name))
            })
            .map(|(i, _)| i);
        let Some(index) = best else {
            closure.left_to_os.push(Unresolved {
                requirement: dep.to_string(),
                required_by,
            });
            continue;
        };
        let package = &available[index];
        chosen_names.insert(package.package.name.clone());
        chosen.push(index);
        closure.packages.push(package.package.clone());
        let by = format!(
            "{}-{}.{}",
            package.package.name, package.package.evr, package.package.arch
        );
        for requirement in &package.requires {
            queue.push_back((requirement.clone(), Some(by.clone())));
        }
    }
    if closure.packages.is_empty() {
        return Err(RpmError::NothingFound {
            wanted: wanted.join(", "),
            repos: repos.join(", "),
        });
    }
    Ok(closure)
}

/// Downloads `closure`'s packages into `cache_dir` (`sha256/<hex>`), each verified against its
/// metadata checksum before it enters the cache; a package already cached (by sha256) is
/// hashed again instead of downloaded.
pub fn download_rpms(
    closure: &Closure,
    cache_dir: &Path,
    http: &Http,
) -> Result<Vec<CachedRpm>, RpmError> {
    let cas = Cas::open(cache_dir)?;
    let mut cached = Vec::new();
    for package in &closure.packages {
        let kind = checked_kind(&package.url, &package.checksum.kind)?;
        if kind == Kind::Sha256 {
            if let Some(path) = cas.verified(&package.checksum.hex) {
                cached.push(CachedRpm {
                    package: package.clone(),
                    path,
                    sha256: package.checksum.hex.clone(),
                });
                continue;
            }
        }
        let fetched = http.fetch(&package.url, Sink::Cache(&cas))?;
        let actual = match (&fetched.body, kind) {
            (_, Kind::Sha256) => fetched.sha256.clone(),
            (Body::File(file, _), kind) => {
                kind.of_file(file.path())
                    .map_err(|source| ArtifactError::Cache {
                        path: file.path().to_owned(),
                        source,
                    })?
            }
            (Body::Memory(bytes, _), kind) => kind.of(bytes),
        };
        if actual != package.checksum.hex {
            return Err(RpmError::ChecksumMismatch {
                url: package.url.clone(),
                kind: package.checksum.kind.clone(),
                expected: package.checksum.hex.clone(),
                actual,
            });
        }
        let sha256 = fetched.sha256.clone();
        let path = cas.commit(fetched)?;
        cached.push(CachedRpm {
            package: package.clone(),
            path,
            sha256,
        });
    }
    tracing::debug!("{} RPM packages in {}", cached.len(), cas.root().display());
    Ok(cached)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Kind {
    fn of(self, bytes: &[u8]) -> String {
        match self {
            Self::Sha224 => hex::encode(sha2::Sha224::digest(bytes)),
            Self::Sha256 => hex::encode(sha2::Sha256::digest(bytes)),
            Self::Sha384 => hex::encode(sha2::Sha384::digest(bytes)),
            Self::Sha512 => hex::encode(sha2::Sha512::digest(bytes)),
        }
    }

    fn of_file(self, path: &Path) -> std::io::Result<String> {
        fn hash<D: sha2::Digest + std::io::Write>(path: &Path) -> std::io::Result<String> {
            let mut hasher = D::new();
            std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
            Ok(hex::encode(hasher.finalize()))
        }
        match self {
            Self::Sha224 => hash::<sha2::Sha224>(path),
            Self::Sha256 => hash::<sha2::Sha256>(path),
            Self::Sha384 => hash::<sha2::Sha384>(path),
            Self::Sha512 => hash::<sha2::Sha512>(path),
        }
    }
}

fn checked_kind(url: &str, kind: &str) -> Result<Kind, RpmError> {
    match kind.to_ascii_lowercase().as_str() {
        "sha224" => Ok(Kind::Sha224),
        "sha256" => Ok(Kind::Sha256),
        "sha384" => Ok(Kind::Sha384),
        "sha512" => Ok(Kind::Sha512),
        "sha" | "sha1" | "md5" => Err(RpmError::InsecureChecksum {
            url: url.to_owned(),
            kind: kind.to_owned(),
        }),
        _ => Err(RpmError::UnknownChecksum {
            url: url.to_owned(),
            kind: kind.to_owned(),
        }),
    }
}

/// `<repo>/<href>` (or `<xml:base>/<href>`), refusing hrefs that climb out.
fn located(base: &str, href: &str, url: &str) -> Result<String, RpmError> {
    if href.is_empty()
        || href.starts_with('/')
        || href.contains("://")
        || href.split('/').any(|s| s == ".." || s == ".")
    {
        return Err(malformed(
            url,
            format!("location `{href}` is not a relative path"),
        ));
    }
    Ok(format!("{}/{href}", base.trim_end_matches('/')))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_releases() {
        assert_eq!(
            el_major("NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n")
                .unwrap(),
            9
        );
        assert_eq!(el_major("ID=\"rhel\"\nVERSION_ID=\"8.10\"\n").unwrap(), 8);
        assert!(el_major("ID=ubuntu\nVERSION_ID=\"24.04\"\n").is_err());
        assert!(el_major("ID=fedora\nVERSION_ID=40\n").is_err());
    }
}
