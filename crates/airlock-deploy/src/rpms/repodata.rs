//! Reading a yum repository's metadata with `airlock-yum`: `repodata/repomd.xml`, then the
//! primary it lists (verified against repomd's checksum, decompressed within bounds), into
//! the packages of the closure with their provides, requires and files.

use airlock_yum::{Detail, Package, RepodataError, Repomd};

use super::*;
use crate::artifacts::{Http, Sink};

/// Reads one repository: `repodata/repomd.xml`, then its primary, verified.
pub(super) fn read_repository(repo: &str, http: &Http) -> Result<Vec<Parsed>, RpmError> {
    let repomd_url = located(repo, "repodata/repomd.xml", repo)?;
    let repomd = http.fetch(
        &repomd_url,
        Sink::Memory {
            limit: REPOMD_LIMIT,
        },
    )?;
    let repomd =
        Repomd::parse(repomd.bytes()).map_err(|e| malformed(&repomd_url, e.to_string()))?;
    let entry = repomd.primary();
    let Some(checksum) = entry.checksum.clone().filter(|c| !c.hex.is_empty()) else {
        return Err(malformed(
            &repomd_url,
            "no primary metadata with a location and checksum",
        ));
    };
    let primary_url = located(repo, &entry.href, &repomd_url)?;
    let kind = checked_kind(&primary_url, &checksum.kind)?;
    let primary = http.fetch(
        &primary_url,
        Sink::Memory {
            limit: PRIMARY_LIMIT,
        },
    )?;
    let actual = kind.of(primary.bytes());
    if actual != checksum.hex {
        return Err(RpmError::ChecksumMismatch {
            url: primary_url,
            kind: checksum.kind,
            expected: checksum.hex,
            actual,
        });
    }
    let mut packages = Vec::new();
    airlock_yum::read_primary(
        &entry.href,
        primary.bytes(),
        PRIMARY_XML_LIMIT,
        Detail::Everything,
        |package| {
            if let Some(parsed) = parsed(package, repo, &primary_url)? {
                packages.push(parsed);
            }
            Ok(())
        },
    )
    .map_err(|failure| match failure {
        Failure::Metadata(e) => malformed(&primary_url, e.to_string()),
        Failure::Package(e) => e,
    })?;
    Ok(packages)
}

/// Why reading a primary stopped: the metadata, or a package airlock cannot use.
enum Failure {
    Metadata(RepodataError),
    Package(RpmError),
}

impl From<RepodataError> for Failure {
    fn from(error: RepodataError) -> Self {
        Self::Metadata(error)
    }
}

/// A package of type `rpm` with everything the closure needs (`None` for other types), its
/// download URL below `xml:base` or the repository, its file name one airlock will copy.
fn parsed(package: Package, repo: &str, url: &str) -> Result<Option<Parsed>, Failure> {
    if package.kind != "rpm" {
        return Ok(None);
    }
    let name = package
        .name
        .ok_or_else(|| malformed(url, "a package without a <name>"))
        .map_err(Failure::Package)?;
    let missing =
        |what: &str| Failure::Package(malformed(url, format!("package `{name}` has no {what}")));
    let arch = package.arch.ok_or_else(|| missing("<arch>"))?;
    let evr = package.evr.ok_or_else(|| missing("<version>"))?;
    let href = package.href.ok_or_else(|| missing("<location href>"))?;
    let checksum = package.checksum.ok_or_else(|| missing("<checksum>"))?;
    if checksum.kind.is_empty() {
        return Err(missing("<checksum type>"));
    }
    if checksum.hex.is_empty() || !checksum.hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(missing("hex <checksum>"));
    }
    let package_url =
        located(package.base.as_deref().unwrap_or(repo), &href, url).map_err(Failure::Package)?;
    let file_name = href.rsplit('/').next().unwrap_or_default().to_owned();
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"._+-~^".contains(&b);
    if !Path::new(&file_name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("rpm"))
        || !file_name.bytes().all(safe)
    {
        return Err(Failure::Package(malformed(
            url,
            format!("package `{name}` has an unusable file name `{file_name}`"),
        )));
    }
    Ok(Some(Parsed {
        package: RpmPackage {
            name,
            arch,
            evr,
            url: package_url,
            file_name,
            checksum,
            size: package.size,
        },
        provides: package.provides,
        requires: package.requires,
        files: package.files,
    }))
}
