//! `format = "yum"`: RPM repositories (dnf, yum, zypper) below `/repository/<name>/`.
//!
//! An upstream may hold one repository at its root or many below it (EPEL's
//! `9/Everything/x86_64/`, `k3s/stable/common/centos/9/noarch/`): every request belongs to
//! the repository at a directory `<root>` (empty, or ending in `/`) below the upstream.
//! Paths below the proxy:
//!
//! ```text
//! <root>repodata/repomd.xml           refreshed by TTL; served only once every file it lists
//!                                     is in the store, verified (a consistent snapshot of the
//!                                     repository at <root>); until a new one is, the previous
//!                                     one is served (stale)
//! <root>repodata/repomd.xml.asc       fetched with repomd.xml and kept in its snapshot, so the
//!                                     signature always matches the repomd.xml served
//! <root>repodata/<file listed there>  immutable, verified against repomd.xml's sha256
//! <root>repodata/<sha256>-<name>      immutable, verified against the sha256 in its name (a
//!                                     file of an older snapshot a client may still be reading)
//! <root><location of a package>.rpm   immutable, verified against primary.xml's sha256; fetched
//!                                     from the location's xml:base when it has one
//! anything else                       refreshed by TTL (repomd.xml.key, .repo files, GPG keys)
//! ```
//!
//! A package's `<root>` is the deepest directory above it whose snapshot is known, else the
//! deepest whose `repodata/repomd.xml` exists and lists it: up to [`MAX_DEPTH`] directories
//! above the package are tried, deepest first (a missing `repomd.xml` is remembered for
//! `negative_ttl`, so the search costs upstream requests once).
//!
//! Checksums other than sha256 (sha1 and md5 in old repositories, sha512) are refused with
//! a 502 that says so: airlock caches only what it verified. Files are served with the
//! bytes upstream sent and no `Content-Encoding`, so `.gz`/`.zst`/`.xz` metadata reaches
//! dnf exactly as its checksum describes. Parsed primaries are kept in the proxy's derived
//! tables by digest (parsed once, off the async threads, however many requests ask at the
//! same time), so once the primary has been parsed an RPM request costs a `repomd.xml`
//! lookup, a store check of each file it lists, and a hash-map lookup.
//!
//! Everything this module keeps in memory is bounded: the last good snapshot of at most
//! [`SNAPSHOTS_KEPT`] repository roots (only roots whose `repomd.xml` was valid and whose
//! files verified), the directories found to hold no repository for `negative_ttl` (at
//! most [`MISSING_KEPT`]), and [`PRIMARIES_KEPT`] parsed primaries.
//!
//! Offline, a repository held in part is served regenerated from what is held
//! (`offline.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use airlock_types::{CacheOutcome, ClientRequest, Digest};
use airlock_upstream::Target;
use airlock_yum::{Checksum, Detail, RepodataError, Repomd};
use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

mod offline;

use crate::derived::{Table, blocking};
use crate::{Check, Origin, PackageError, Spec, Variant};

/// The directory of a repository's metadata, below its root.
const REPODATA: &str = "repodata/";
/// The metadata index, in [`REPODATA`].
const REPOMD: &str = "repomd.xml";
/// The detached signature of `repomd.xml`, kept in the snapshot so the pair always matches.
const SIGNATURE: &str = "repomd.xml.asc";
/// How many directories above a package are tried as its repository's root.
const MAX_DEPTH: usize = 8;
/// A signature is a few hundred bytes.
const MAX_SIGNATURE: usize = 64 * 1024;
/// `repomd.xml` is a few KiB; anything this large is not one.
const MAX_REPOMD: usize = 4 * 1024 * 1024;
/// Compressed primary metadata larger than this is refused.
const MAX_PRIMARY: usize = 512 * 1024 * 1024;
/// Decompressed primary metadata larger than this is refused (Fedora's is ~100 MiB).
const MAX_PRIMARY_XML: u64 = 2 * 1024 * 1024 * 1024;
const UPSTREAM_XML: Variant<'static> = Variant {
    name: "repomd",
    accept: "application/xml, text/xml;q=0.9, */*;q=0.1",
};
/// Repository roots whose last good snapshot is kept per proxy (EPEL-style upstreams hold
/// a few dozen: releases × architectures × variants).
const SNAPSHOTS_KEPT: usize = 256;
/// Directories per proxy remembered as holding no repository (each RPM request for an
/// unknown path may try up to [`MAX_DEPTH`] of them).
const MISSING_KEPT: usize = 1024;
/// Parsed primaries kept per proxy (tens of MiB each for a large repository).
const PRIMARIES_KEPT: usize = 4;
const RPM: &str = "application/x-rpm";
const OCTETS: &str = "application/octet-stream";

/// Maps a request path below `/repository/<name>/` to metadata, a package or a file.
pub(crate) async fn serve(
    origin: &Origin,
    path: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    if path.is_empty() || path.ends_with('/') {
        return Err(PackageError::NotFound);
    }
    if let Some((root, name)) = metadata_path(path) {
        return metadata(origin, root, name, request).await;
    }
    let rpm = std::path::Path::new(path)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("rpm"));
    if rpm {
        return package(origin, path, request).await;
    }
    origin.get(Spec::ttl(path), request).await
}

/// `<root>repodata/<name>` as the repository root (empty, or ending in `/`) and the name.
fn metadata_path(path: &str) -> Option<(&str, &str)> {
    let at = match path.rfind("/repodata/") {
        Some(slash) => slash + 1,
        None if path.starts_with(REPODATA) => 0,
        None => return None,
    };
    let name = &path[at + REPODATA.len()..];
    (!name.is_empty()).then(|| (&path[..at], name))
}

/// A file in `<root>repodata/`.
async fn metadata(
    origin: &Origin,
    root: &str,
    name: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    let path = format!("{root}{REPODATA}{name}");
    if origin.is_offline() {
        if let Some(response) = offline::metadata(origin, root, name, request).await? {
            return Ok(response);
        }
    }
    if name == REPOMD {
        return snapshot(origin, root, request).await;
    }
    if name == SIGNATURE {
        let (snapshot, cache) = current(origin, root).await?;
        let Some(signature) = snapshot.signature.clone() else {
            return Err(PackageError::NotFoundUpstream { path });
        };
        return Ok(serve_bytes(
            signature,
            "application/pgp-signature",
            cache,
            request,
        ));
    }
    // Named by their sha256, files of older snapshots stay servable without one.
    if let Some(digest) = named_digest(name) {
        return origin
            .get(Spec::immutable(&path, &digest, OCTETS), request)
            .await;
    }
    if name.starts_with(REPOMD) {
        return origin.get(Spec::ttl(&path), request).await;
    }
    let (snapshot, _) = current(origin, root).await?;
    let href = format!("{REPODATA}{name}");
    if let Some(entry) = snapshot.repomd.entries.iter().find(|e| e.href == href) {
        let digest = sha256(origin, &path, entry.checksum.as_ref())?;
        let source = located(
            origin.upstream_base(),
            root,
            entry.base.as_deref(),
            &entry.href,
        );
        return origin
            .get(Spec::immutable(source, &digest, OCTETS), request)
            .await;
    }
    origin.get(Spec::ttl(&path), request).await
}

/// A `repomd.xml` whose listed files are all in the store, verified.
#[derive(Debug)]
struct Snapshot {
    bytes: Vec<u8>,
    content_type: Option<String>,
    repomd: Repomd,
    /// `repomd.xml.asc`, fetched with `repomd.xml`; `None` when the repository has none.
    signature: Option<Vec<u8>>,
}

/// The last snapshot of each repository served whole, by root, so a newer `repomd.xml`
/// whose files cannot be verified yet does not interrupt clients. In memory: after a
/// restart the first usable snapshot takes its place.
fn last_good(origin: &Origin) -> Arc<Table<String, Snapshot>> {
    origin.derived.table("yum-last-good", SNAPSHOTS_KEPT, None)
}

/// Roots whose `repodata/repomd.xml` the upstream answered 404 for, remembered for
/// `negative_ttl` so searching the directories above a package skips them.
fn no_repository(origin: &Origin) -> Arc<Table<String, ()>> {
    origin.derived.table(
        "yum-no-repository",
        MISSING_KEPT,
        Some(origin.config().negative_ttl.0),
    )
}

/// The current snapshot of the repository at `root`: `repomd.xml` refreshed by TTL and
/// checked to parse before it is cached, then every file it lists fetched into the store and
/// verified. When that fails, the last snapshot served whole (marked stale), or the failure.
async fn current(
    origin: &Origin,
    root: &str,
) -> Result<(Arc<Snapshot>, CacheOutcome), PackageError> {
    match verified(origin, root).await {
        Ok((snapshot, cache)) => {
            no_repository(origin).remove(&root.to_owned());
            Ok((last_good(origin).fill(root.to_owned(), snapshot), cache))
        }
        Err(error) => {
            let Some(snapshot) = last_good(origin).get(&root.to_owned()) else {
                return Err(error);
            };
            tracing::warn!(
                target: "airlock::packages",
                proxy = %origin.config().name,
                root,
                %error,
                "serving the previous repomd.xml: the new one is not usable"
            );
            Ok((snapshot, CacheOutcome::Stale))
        }
    }
}

/// Whether a snapshot of the repository at `root` was served whole (and is still kept).
fn known(origin: &Origin, root: &str) -> bool {
    last_good(origin).get(&root.to_owned()).is_some()
}

async fn verified(origin: &Origin, root: &str) -> Result<(Snapshot, CacheOutcome), PackageError> {
    let repomd = format!("{root}{REPODATA}{REPOMD}");
    let check: &Check<'_> = &|bytes, _| {
        Repomd::parse(bytes)
            .map(|_| ())
            .map_err(|e| format!("malformed repository metadata: {e}"))
    };
    let document = origin
        .document(Spec::document(&repomd, &UPSTREAM_XML).checked(MAX_REPOMD, check))
        .await?;
    let parsed =
        Repomd::parse(&document.bytes).map_err(|e| malformed(origin, &repomd, &e.to_string()))?;
    for entry in &parsed.entries {
        let digest = sha256(
            origin,
            &format!("{root}{}", entry.href),
            entry.checksum.as_ref(),
        )?;
        let source = located(
            origin.upstream_base(),
            root,
            entry.base.as_deref(),
            &entry.href,
        );
        match ensure_stored(origin, source, &digest).await {
            // Offline, a repository may be held in part: only its primary is needed to
            // list what is here (`offline.rs` leaves the rest out of what it serves).
            Err(PackageError::Offline { .. }) if entry.kind != "primary" => {}
            result => result?,
        }
    }
    let accept_any = Variant {
        name: "signature",
        accept: "*/*",
    };
    let signature = match origin
        .document(
            Spec::document(&format!("{root}{REPODATA}{SIGNATURE}"), &accept_any)
                .checked(MAX_SIGNATURE, &|_, _| Ok(())),
        )
        .await
    {
        Ok(signature) => Some(signature.bytes),
        Err(PackageError::NotFoundUpstream { .. } | PackageError::Offline { .. }) => None,
        Err(other) => return Err(other),
    };
    let snapshot = Snapshot {
        bytes: document.bytes,
        content_type: document.content_type,
        repomd: parsed,
        signature,
    };
    Ok((snapshot, document.cache))
}

/// Serves `repomd.xml` of the current snapshot, so a client never sees one the gateway
/// could not serve whole.
async fn snapshot(
    origin: &Origin,
    root: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    let (snapshot, cache) = current(origin, root).await?;
    let content_type = snapshot.content_type.as_deref().unwrap_or("text/xml");
    Ok(serve_bytes(
        snapshot.bytes.clone(),
        content_type,
        cache,
        request,
    ))
}

/// Serves bytes of a snapshot with an `ETag` of their digest and `If-None-Match` support.
fn serve_bytes(
    bytes: Vec<u8>,
    content_type: &str,
    cache: CacheOutcome,
    request: &ClientRequest,
) -> Response {
    let etag = format!("\"{}\"", Digest::of(&bytes));
    let matches = request.holds(&etag, true);
    let length = bytes.len();
    let mut response = if matches {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else if request.is_head() {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(bytes))
    };
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    out.insert(header::ETAG, HeaderValue::from_str(&etag).expect("ascii"));
    out.insert("x-airlock-cache", HeaderValue::from_static(cache.as_str()));
    if !matches {
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

/// Fetches `source` into the store (verified against `digest`) unless it is there already.
async fn ensure_stored(
    origin: &Origin,
    source: Target,
    digest: &Digest,
) -> Result<(), PackageError> {
    // A miss answers only once the file is verified and stored; the body is not needed.
    origin
        .entry(Spec::immutable(source, digest, OCTETS))
        .await
        .map(drop)
}

/// A package listed in the primary metadata of the repository above it, verified against
/// its sha256 there.
async fn package(
    origin: &Origin,
    path: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    let (root, package) = locate(origin, path).await?;
    let digest = sha256(origin, path, Some(&package.checksum))?;
    let source = located(
        origin.upstream_base(),
        root,
        package.base.as_deref(),
        &path[root.len()..],
    );
    origin
        .get(Spec::immutable(source, &digest, RPM), request)
        .await
}

/// The repository root above `path` whose primary metadata lists it, and its listing: the
/// roots whose snapshot is known first, then the others, each deepest first. A repository
/// that cannot be read is skipped, and its failure reported when no other lists the package.
async fn locate<'p>(origin: &Origin, path: &'p str) -> Result<(&'p str, Listed), PackageError> {
    let roots = ancestors(path);
    let (known, unknown): (Vec<&str>, Vec<&str>) =
        roots.iter().partition(|root| known(origin, root));
    let missing = no_repository(origin);
    let mut failure = None;
    for root in known.into_iter().chain(unknown) {
        if missing.get(&root.to_owned()).is_some() {
            continue;
        }
        match packages(origin, root).await {
            Ok(packages) => {
                if let Some(package) = packages.get(&path[root.len()..]) {
                    return Ok((root, package.clone()));
                }
            }
            Err(PackageError::NotFoundUpstream { path }) => {
                if path == format!("{root}{REPODATA}{REPOMD}") {
                    missing.fill(root.to_owned(), ());
                }
            }
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    Err(failure.unwrap_or_else(|| PackageError::NotFoundUpstream {
        path: format!("{path} (not in the primary metadata of a repository above it)"),
    }))
}

/// The directories above `path` (each empty or ending in `/`), deepest first, at most
/// [`MAX_DEPTH`] of them.
fn ancestors(path: &str) -> Vec<&str> {
    let mut roots = Vec::new();
    let mut end = path.rfind('/').map_or(0, |slash| slash + 1);
    loop {
        roots.push(&path[..end]);
        if end == 0 || roots.len() == MAX_DEPTH {
            return roots;
        }
        end = path[..end - 1].rfind('/').map_or(0, |slash| slash + 1);
    }
}

/// The packages of the repository at `root`'s current snapshot, parsed once per primary.
async fn packages(origin: &Origin, root: &str) -> Result<Arc<Listing>, PackageError> {
    let (snapshot, _) = current(origin, root).await?;
    let entry = snapshot.repomd.primary();
    let path = format!("{root}{}", entry.href);
    let digest = sha256(origin, &path, entry.checksum.as_ref())?;
    let primaries: Arc<Table<Digest, Listing>> =
        origin.derived.table("yum-primary", PRIMARIES_KEPT, None);
    primaries
        .get_or_compute(digest.clone(), || async {
            let source = located(
                origin.upstream_base(),
                root,
                entry.base.as_deref(),
                &entry.href,
            );
            let stored = origin
                .entry(Spec::immutable(source, &digest, OCTETS))
                .await?;
            if stored.size > MAX_PRIMARY as u64 {
                return Err(PackageError::Verification {
                    proxy: origin.config().name.clone(),
                    path: path.clone(),
                    detail: format!("larger than {MAX_PRIMARY} bytes"),
                });
            }
            let bytes = origin.read_stored(&digest, MAX_PRIMARY as u64).await?;
            let href = entry.href.clone();
            blocking(move || listing(&href, &bytes))
                .await?
                .map_err(|e| malformed(origin, &path, &e.to_string()))
        })
        .await
}

/// Where one package is and what it must hash to.
#[derive(Debug, Clone)]
struct Listed {
    /// `xml:base` of its location, when it lives outside the repository.
    base: Option<String>,
    checksum: Checksum,
}

/// A repository's packages by location `href` (relative to the repository root).
type Listing = HashMap<String, Listed>;

/// The packages a primary file (`href`, compressed as its name says) lists, by location.
fn listing(href: &str, bytes: &[u8]) -> Result<Listing, RepodataError> {
    let mut listing = Listing::new();
    airlock_yum::read_primary(href, bytes, MAX_PRIMARY_XML, Detail::Locations, |package| {
        let (Some(href), Some(checksum)) = (package.href, package.checksum) else {
            return Err(RepodataError::Malformed(
                "primary: a <package> lacks a location or checksum".to_owned(),
            ));
        };
        listing.insert(
            href,
            Listed {
                base: package.base,
                checksum,
            },
        );
        Ok(())
    })?;
    Ok(listing)
}

/// The sha256 a listing gives for `path`, or a refusal naming the algorithm it used.
fn sha256(
    origin: &Origin,
    path: &str,
    checksum: Option<&Checksum>,
) -> Result<Digest, PackageError> {
    let refuse = |detail: String| PackageError::Upstream {
        proxy: origin.config().name.clone(),
        path: path.to_owned(),
        detail,
    };
    match checksum {
        Some(Checksum { kind, hex }) if kind == "sha256" => {
            Digest::sha256_hex(hex).map_err(|e| refuse(format!("bad sha256 checksum {hex:?}: {e}")))
        }
        Some(Checksum { kind, .. }) => Err(refuse(format!(
            "the repository metadata gives a {kind} checksum; airlock verifies sha256 only \
             (regenerate the repository with createrepo_c's default checksum)"
        ))),
        None => Err(refuse(
            "the repository metadata gives no checksum".to_owned(),
        )),
    }
}

/// `repodata/<64 hex>-<name>`: the sha256 createrepo puts in metadata file names.
fn named_digest(name: &str) -> Option<Digest> {
    let (hex, rest) = name.split_once('-')?;
    let valid = hex.len() == 64
        && !rest.is_empty()
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid {
        return None;
    }
    Digest::sha256_hex(hex).ok()
}

/// Where a listed file comes from: `href` below the repository at `root`, or below the
/// entry's `xml:base`.
fn located(upstream: &reqwest::Url, root: &str, base: Option<&str>, href: &str) -> Target {
    let joined = |base: &str| {
        if base.ends_with('/') {
            format!("{base}{href}")
        } else {
            format!("{base}/{href}")
        }
    };
    match base {
        // Absolute: an index-listed URL, checked as such before it is fetched.
        Some(base) if base.contains("://") => Target::Url(joined(base)),
        Some(base) if base.starts_with('/') => match upstream.join(&joined(base)) {
            Ok(url) => Target::Url(url.to_string()),
            Err(_) => Target::Path(joined(base)),
        },
        Some(base) => Target::Path(joined(&format!("{root}{base}"))),
        None => Target::Path(format!("{root}{href}")),
    }
}

fn malformed(origin: &Origin, path: &str, detail: &str) -> PackageError {
    PackageError::Upstream {
        proxy: origin.config().name.clone(),
        path: path.to_owned(),
        detail: format!("malformed repository metadata: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_named_files() {
        let hex = "1fcd12c186914d40c239baa1d1a1a6a5cae82e6cad4a820b8311e4ba8d649f8e";
        assert_eq!(
            named_digest(&format!("{hex}-primary.xml.gz")).map(|d| d.hex().to_owned()),
            Some(hex.to_owned())
        );
        for other in [
            "repomd.xml.asc",
            "primary.xml.gz",
            &format!("{hex}-"),
            &format!("{}-primary.xml.gz", hex.to_uppercase()),
            "abcd-primary.xml.gz",
        ] {
            assert!(named_digest(other).is_none(), "{other}");
        }
    }

    #[test]
    fn xml_base() {
        let upstream = reqwest::Url::parse("https://repo.example.org/el/").unwrap();
        let path = |p: &str| Target::Path(p.to_owned());
        let url = |u: &str| Target::Url(u.to_owned());
        assert_eq!(
            located(&upstream, "", None, "Packages/a.rpm"),
            path("Packages/a.rpm")
        );
        assert_eq!(
            located(&upstream, "9/x86_64/", None, "a.rpm"),
            path("9/x86_64/a.rpm")
        );
        for root in ["", "9/x86_64/"] {
            assert_eq!(
                located(&upstream, root, Some("http://mirror/el9/"), "a.rpm"),
                url("http://mirror/el9/a.rpm")
            );
            assert_eq!(
                located(&upstream, root, Some("http://mirror/el9"), "a.rpm"),
                url("http://mirror/el9/a.rpm")
            );
        }
        assert_eq!(
            located(&upstream, "9/x86_64/", Some("pool"), "a.rpm"),
            path("9/x86_64/pool/a.rpm")
        );
        assert_eq!(
            located(&upstream, "9/", Some("/other/"), "a.rpm"),
            url("https://repo.example.org/other/a.rpm")
        );
    }

    #[test]
    fn repository_roots() {
        assert_eq!(
            metadata_path("repodata/repomd.xml"),
            Some(("", "repomd.xml"))
        );
        assert_eq!(
            metadata_path("9/Everything/x86_64/repodata/repomd.xml.asc"),
            Some(("9/Everything/x86_64/", "repomd.xml.asc"))
        );
        for other in [
            "a.rpm",
            "x/repodata",
            "xrepodata/repomd.xml",
            "repodata.rpm",
        ] {
            assert_eq!(metadata_path(other), None, "{other}");
        }
        assert_eq!(ancestors("a.rpm"), vec![""]);
        assert_eq!(
            ancestors("k3s/stable/Packages/a.rpm"),
            vec!["k3s/stable/Packages/", "k3s/stable/", "k3s/", ""]
        );
        let deep = "1/2/3/4/5/6/7/8/9/10/a.rpm";
        let roots = ancestors(deep);
        assert_eq!(roots.len(), MAX_DEPTH);
        assert_eq!(roots[0], "1/2/3/4/5/6/7/8/9/10/");
        assert_eq!(roots[MAX_DEPTH - 1], "1/2/3/");
    }
}
