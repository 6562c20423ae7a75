//! An offline proxy's yum repositories ([`crate::offline`]). When the store holds every
//! package a repository's primary metadata lists, its upstream snapshot is served as it
//! is, signature included. Otherwise `repomd.xml` is regenerated: primary, filelists and
//! other are the cached upstream files with only the held packages (each `<package>` as
//! upstream wrote it), gzip-compressed and named by their sha256; comps groups, advisories
//! and module streams (which name packages, not files) are kept as they are; anything else
//! (sqlite and zchunk copies, delta RPMs) would list packages that are not here and is left
//! out. A regenerated `repomd.xml` cannot carry upstream's signature: `repomd.xml.asc`
//! answers 404, so clients of an offline gateway use `repo_gpgcheck=0` and keep
//! `gpgcheck=1` (each package's own signature). A repository with nothing cached is an
//! empty one, so dnf still reads it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use airlock_types::{CacheOutcome, ClientRequest, Digest};
use airlock_yum::{
    EMPTY_FILELISTS, EMPTY_OTHER, EMPTY_PRIMARY, EMPTY_REPOMD, Regenerated, RepodataError,
};
use axum::response::Response;

use super::{
    MAX_PRIMARY, MAX_PRIMARY_XML, OCTETS, REPODATA, REPOMD, SIGNATURE, Snapshot, current, packages,
    serve_bytes, sha256,
};
use crate::derived::{Table, blocking};
use crate::{Origin, PackageError};

/// Metadata kept as upstream published it: it names packages, never files to download.
const KEPT: &[&str] = &[
    "group",
    "group_gz",
    "group_xz",
    "group_zst",
    "updateinfo",
    "modules",
];
/// The metadata regenerated from what is held, with its empty form.
const REGENERATED: [(&str, &str); 3] = [
    ("primary", EMPTY_PRIMARY),
    ("filelists", EMPTY_FILELISTS),
    ("other", EMPTY_OTHER),
];
/// Regenerated repositories kept per proxy.
const VIEWS_KEPT: usize = 16;

/// A regenerated repository: `repomd.xml` and the files it names, by name in `repodata/`.
pub(super) struct View {
    repomd: Vec<u8>,
    files: HashMap<String, Vec<u8>>,
}

/// The root, the digest of the upstream `repomd.xml` (none: nothing cached) and of the
/// held set.
type Key = (String, Option<Digest>, Digest);

/// `<root>repodata/<name>` of a repository the proxy holds only part of; `None` when the
/// upstream snapshot is served as it is (everything held, or a file the view does not
/// replace).
pub(super) async fn metadata(
    origin: &Origin,
    root: &str,
    name: &str,
    request: &ClientRequest,
) -> Result<Option<Response>, PackageError> {
    let Some(view) = view(origin, root).await? else {
        return Ok(None);
    };
    if name == SIGNATURE {
        return Err(PackageError::NotFoundUpstream {
            path: format!(
                "{root}{REPODATA}{SIGNATURE} (repository {} is offline and holds part of this \
                 repository: its repomd.xml is regenerated from what it holds, unsigned)",
                origin.config().name
            ),
        });
    }
    let bytes = if name == REPOMD {
        Some(view.repomd.clone())
    } else {
        view.files.get(name).cloned()
    };
    Ok(bytes.map(|bytes| {
        let content_type = if name == REPOMD { "text/xml" } else { OCTETS };
        serve_bytes(bytes, content_type, CacheOutcome::Hit, request)
    }))
}

/// The regenerated repository at `root`, or `None` when every package is held.
async fn view(origin: &Origin, root: &str) -> Result<Option<Arc<View>>, PackageError> {
    let snapshot = match current(origin, root).await {
        Ok((snapshot, _)) => Some(snapshot),
        Err(PackageError::Offline { .. }) => None,
        Err(error) => return Err(error),
    };
    let views: Arc<Table<Key, View>> = origin.derived.table("yum-offline", VIEWS_KEPT, None);
    let Some(snapshot) = snapshot else {
        let key = (root.to_owned(), None, Digest::of(b""));
        let empty = views
            .get_or_compute(key, || async {
                blocking(|| regenerate(EMPTY_REPOMD.as_bytes(), &[], &HashSet::new(), &[]))
                    .await?
                    .map_err(|e| PackageError::Internal(format!("empty repository: {e}")))
            })
            .await?;
        return Ok(Some(empty));
    };
    let listing = packages(origin, root).await?;
    let listed: Vec<Digest> = listing
        .values()
        .filter_map(|package| sha256(origin, root, Some(&package.checksum)).ok())
        .collect();
    let held = origin.held(listed.iter().cloned()).await?;
    let files: Vec<(String, Digest)> = snapshot
        .repomd
        .entries
        .iter()
        .filter_map(|e| {
            Some((
                e.kind.clone(),
                sha256(origin, root, e.checksum.as_ref()).ok()?,
            ))
        })
        .collect();
    let files_held = origin.held(files.iter().map(|(_, d)| d.clone())).await?;
    let whole = files.len() == snapshot.repomd.entries.len()
        && files.iter().all(|(_, digest)| files_held.contains(digest));
    if whole && listed.iter().all(|digest| held.contains(digest)) {
        return Ok(None);
    }
    // What is kept as upstream published it must be here to be listed.
    let kept: Vec<String> = files
        .into_iter()
        .filter(|(kind, digest)| KEPT.contains(&kind.as_str()) && files_held.contains(digest))
        .map(|(kind, _)| kind)
        .collect();
    let ids: HashSet<String> = listed
        .into_iter()
        .filter(|digest| held.contains(digest))
        .map(|digest| digest.hex().to_owned())
        .collect();
    let key = (
        root.to_owned(),
        Some(Digest::of(&snapshot.bytes)),
        held.key().clone(),
    );
    let view = views
        .get_or_compute(key, || async {
            let sources = sources(origin, root, &snapshot).await?;
            let repomd = snapshot.bytes.clone();
            blocking(move || regenerate(&repomd, &sources, &ids, &kept))
                .await?
                .map_err(|e| PackageError::Internal(format!("regenerating {root}{REPOMD}: {e}")))
        })
        .await?;
    Ok(Some(view))
}

/// The snapshot's primary, filelists and other that the store holds: (kind, href, bytes).
async fn sources(
    origin: &Origin,
    root: &str,
    snapshot: &Snapshot,
) -> Result<Vec<(String, String, Vec<u8>)>, PackageError> {
    let mut sources = Vec::new();
    for (kind, _) in REGENERATED {
        let Some(entry) = snapshot.repomd.entries.iter().find(|e| e.kind == kind) else {
            continue;
        };
        let path = format!("{root}{}", entry.href);
        let digest = sha256(origin, &path, entry.checksum.as_ref())?;
        if !origin.held([digest.clone()]).await?.contains(&digest) {
            continue;
        }
        let bytes = origin.read_stored(&digest, MAX_PRIMARY as u64).await?;
        sources.push((kind.to_owned(), entry.href.clone(), bytes));
    }
    Ok(sources)
}

/// `repomd` with primary, filelists and other rewritten to the packages `ids` names (an
/// empty document of each kind when `sources` lacks it), and of the rest only the `kept`
/// kinds.
fn regenerate(
    repomd: &[u8],
    sources: &[(String, String, Vec<u8>)],
    ids: &HashSet<String>,
    kept: &[String],
) -> Result<View, RepodataError> {
    let mut files = HashMap::new();
    let mut entries = Vec::new();
    for (kind, empty) in REGENERATED {
        let xml = match sources.iter().find(|(k, _, _)| k == kind) {
            Some((_, href, bytes)) => {
                airlock_yum::filter_packages(href, bytes, MAX_PRIMARY_XML, |id| ids.contains(id))?
            }
            None if kind == "primary" || sources.is_empty() => empty.as_bytes().to_vec(),
            // Not held: left out rather than listed empty (dnf reads it only when asked).
            None => continue,
        };
        let gz = airlock_yum::gzip(&xml);
        let checksum = Digest::of(&gz).hex().to_owned();
        let name = format!("{checksum}-{kind}.xml.gz");
        entries.push(Regenerated {
            kind: kind.to_owned(),
            href: format!("{REPODATA}{name}"),
            open_checksum: Digest::of(&xml).hex().to_owned(),
            checksum,
            size: gz.len() as u64,
            open_size: xml.len() as u64,
        });
        files.insert(name, gz);
    }
    let repomd =
        airlock_yum::rewrite_repomd(repomd, &entries, |kind| kept.iter().any(|k| k == kind))?;
    Ok(View { repomd, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_repository_lists_nothing_and_is_consistent() {
        let view = regenerate(EMPTY_REPOMD.as_bytes(), &[], &HashSet::new(), &[]).unwrap();
        let repomd = airlock_yum::Repomd::parse(&view.repomd).unwrap();
        assert_eq!(repomd.entries.len(), 3);
        for entry in &repomd.entries {
            let name = entry.href.strip_prefix(REPODATA).unwrap();
            let bytes = &view.files[name];
            assert_eq!(
                entry.checksum.as_ref().unwrap().hex,
                Digest::of(bytes).hex(),
                "{name}"
            );
            let xml = airlock_yum::decompressed(name, bytes, 1 << 20)
                .unwrap()
                .read_all()
                .unwrap();
            assert!(String::from_utf8(xml).unwrap().contains("packages=\"0\""));
        }
    }
}
