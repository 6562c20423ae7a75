//! `format = "yum"`: an RPM repository (dnf, yum, zypper) at `/repository/<name>/`.
//!
//! Paths below the proxy, relative to the repository root:
//!
//! ```text
//! repodata/repomd.xml             refreshed by TTL; served only once every file it lists
//!                                 is in the store, verified (a consistent snapshot); until
//!                                 a new one is, the previous one is served (stale)
//! repodata/repomd.xml.asc         fetched with repomd.xml and kept in its snapshot, so the
//!                                 signature always matches the repomd.xml served
//! repodata/<file listed there>    immutable, verified against repomd.xml's sha256
//! repodata/<sha256>-<name>        immutable, verified against the sha256 in its name (a file
//!                                 of an older snapshot a client may still be reading)
//! <location of a package>.rpm     immutable, verified against primary.xml's sha256; fetched
//!                                 from the location's xml:base when it has one
//! anything else                   refreshed by TTL (repomd.xml.key, .repo files, GPG keys)
//! ```
//!
//! Checksums other than sha256 (sha1 and md5 in old repositories, sha512) are refused with
//! a 502 that says so: airlock caches only what it verified. Files are served with the
//! bytes upstream sent and no `Content-Encoding`, so `.gz`/`.zst`/`.xz` metadata reaches
//! dnf exactly as its checksum describes. Parsed primaries are cached in memory by digest
//! (see [`primary`]), so once the primary has been parsed an RPM request costs a
//! `repomd.xml` lookup, a store check of each file it lists, and a hash-map lookup.

mod primary;
mod repomd;

use std::sync::{Arc, Mutex};

use airlock_types::Digest;
use axum::body::Body;
use axum::response::Response;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::{Check, Origin, PackageError, Variant};

const REPOMD: &str = "repodata/repomd.xml";
/// The detached signature of `repomd.xml`, kept in the snapshot so the pair always matches.
const SIGNATURE: &str = "repodata/repomd.xml.asc";
/// A signature is a few hundred bytes.
const MAX_SIGNATURE: usize = 64 * 1024;
/// `repomd.xml` is a few KiB; anything this large is not one.
const MAX_REPOMD: usize = 4 * 1024 * 1024;
/// Compressed primary metadata larger than this is refused.
const MAX_PRIMARY: usize = 512 * 1024 * 1024;
const UPSTREAM_XML: Variant<'static> = Variant {
    name: "repomd",
    accept: "application/xml, text/xml;q=0.9, */*;q=0.1",
};
const RPM: &str = "application/x-rpm";
const OCTETS: &str = "application/octet-stream";

/// Maps a request path below `/repository/<name>/` to metadata, a package or a file.
pub(crate) async fn serve(
    origin: &Origin,
    path: &str,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, PackageError> {
    if path.is_empty() || path.ends_with('/') {
        return Err(PackageError::NotFound);
    }
    if path == REPOMD {
        return snapshot(origin, head, headers).await;
    }
    if path == SIGNATURE {
        let (snapshot, cache) = current(origin).await?;
        let Some(signature) = snapshot.signature.clone() else {
            return Err(PackageError::NotFoundUpstream {
                path: path.to_owned(),
            });
        };
        return Ok(serve_bytes(
            signature,
            "application/pgp-signature",
            cache,
            head,
            headers,
        ));
    }
    if let Some(name) = path.strip_prefix("repodata/") {
        // Named by their sha256, files of older snapshots stay servable without one.
        if let Some(digest) = named_digest(name) {
            return origin.immutable(path, &digest, OCTETS, head, headers).await;
        }
        if name.starts_with("repomd.xml") {
            return origin.refreshed(path, head, headers).await;
        }
        let (snapshot, _) = current(origin).await?;
        if let Some(entry) = snapshot.entries.iter().find(|e| e.href == path) {
            let digest = sha256(origin, path, entry.checksum.as_ref())?;
            let source = located(entry.base.as_deref(), &entry.href);
            return origin
                .immutable(&source, &digest, OCTETS, head, headers)
                .await;
        }
        return origin.refreshed(path, head, headers).await;
    }
    let rpm = std::path::Path::new(path)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("rpm"));
    if rpm {
        return package(origin, path, head, headers).await;
    }
    origin.refreshed(path, head, headers).await
}

/// A `repomd.xml` whose listed files are all in the store, verified.
#[derive(Debug)]
struct Snapshot {
    bytes: Vec<u8>,
    content_type: Option<String>,
    entries: Vec<repomd::Entry>,
    /// `repomd.xml.asc`, fetched with `repomd.xml`; `None` when the repository has none.
    signature: Option<Vec<u8>>,
}

/// The last snapshot each proxy served whole, by proxy name and upstream, so a newer
/// `repomd.xml` whose files cannot be verified yet does not interrupt clients. In memory: after
/// a restart the first usable snapshot takes its place.
static LAST_GOOD: Mutex<Vec<(String, Arc<Snapshot>)>> = Mutex::new(Vec::new());

fn snapshot_key(origin: &Origin) -> String {
    format!("{} {}", origin.config().name, origin.upstream_url(""))
}

/// The current snapshot: `repomd.xml` refreshed by TTL and checked to parse before it is
/// cached, then every file it lists fetched into the store and verified. When that fails,
/// the last snapshot served whole (marked stale), or the failure.
async fn current(origin: &Origin) -> Result<(Arc<Snapshot>, &'static str), PackageError> {
    match verified(origin).await {
        Ok((snapshot, cache)) => {
            let snapshot = Arc::new(snapshot);
            let key = snapshot_key(origin);
            let mut last = LAST_GOOD.lock().expect("snapshots");
            last.retain(|(k, _)| *k != key);
            last.push((key, snapshot.clone()));
            Ok((snapshot, cache))
        }
        Err(error) => {
            let key = snapshot_key(origin);
            let last = LAST_GOOD.lock().expect("snapshots");
            let Some((_, snapshot)) = last.iter().find(|(k, _)| *k == key) else {
                return Err(error);
            };
            tracing::warn!(
                target: "airlock::packages",
                proxy = %origin.config().name,
                %error,
                "serving the previous repomd.xml: the new one is not usable"
            );
            Ok((snapshot.clone(), "stale"))
        }
    }
}

async fn verified(origin: &Origin) -> Result<(Snapshot, &'static str), PackageError> {
    let check: &Check<'_> = &|bytes, _| {
        repomd::parse(bytes)
            .map(|_| ())
            .map_err(|e| format!("malformed repository metadata: {e}"))
    };
    let document = origin
        .document(REPOMD, &UPSTREAM_XML, MAX_REPOMD, check)
        .await?;
    let entries = repomd::parse(&document.bytes).map_err(|e| malformed(origin, REPOMD, &e))?;
    for entry in &entries {
        let digest = sha256(origin, &entry.href, entry.checksum.as_ref())?;
        let source = located(entry.base.as_deref(), &entry.href);
        ensure_stored(origin, &source, &digest).await?;
    }
    let accept_any = Variant {
        name: "signature",
        accept: "*/*",
    };
    let signature = match origin
        .document(SIGNATURE, &accept_any, MAX_SIGNATURE, &|_, _| Ok(()))
        .await
    {
        Ok(signature) => Some(signature.bytes),
        Err(PackageError::NotFoundUpstream { .. }) => None,
        Err(other) => return Err(other),
    };
    let snapshot = Snapshot {
        bytes: document.bytes,
        content_type: document.content_type,
        entries,
        signature,
    };
    Ok((snapshot, document.cache))
}

/// Serves `repomd.xml` of the current snapshot, so a client never sees one the gateway
/// could not serve whole.
async fn snapshot(
    origin: &Origin,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, PackageError> {
    let (snapshot, cache) = current(origin).await?;
    let content_type = snapshot.content_type.as_deref().unwrap_or("text/xml");
    Ok(serve_bytes(
        snapshot.bytes.clone(),
        content_type,
        cache,
        head,
        headers,
    ))
}

/// Serves bytes of a snapshot with an `ETag` of their digest and `If-None-Match` support.
fn serve_bytes(
    bytes: Vec<u8>,
    content_type: &str,
    cache: &'static str,
    head: bool,
    headers: &HeaderMap,
) -> Response {
    let etag = format!("\"{}\"", Digest::of(&bytes));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let length = bytes.len();
    let mut response = if matches {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else if head {
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
    out.insert("x-airlock-cache", HeaderValue::from_static(cache));
    if !matches {
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

/// Fetches `source` into the store (verified against `digest`) unless it is there already.
async fn ensure_stored(origin: &Origin, source: &str, digest: &Digest) -> Result<(), PackageError> {
    let response = origin
        .immutable(source, digest, OCTETS, false, &HeaderMap::new())
        .await?;
    if response
        .headers()
        .get("x-airlock-cache")
        .map(HeaderValue::as_bytes)
        == Some(b"hit")
    {
        return Ok(());
    }
    // The download verifies as it streams; its last chunk is an error on a mismatch.
    let mut body = response.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        chunk.map_err(|e| PackageError::Verification {
            proxy: origin.config().name.clone(),
            path: source.to_owned(),
            detail: e.to_string(),
        })?;
    }
    Ok(())
}

/// A package listed in primary metadata, verified against its sha256 there.
async fn package(
    origin: &Origin,
    path: &str,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, PackageError> {
    let packages = packages(origin).await?;
    let Some(package) = packages.get(path) else {
        return Err(PackageError::NotFoundUpstream {
            path: format!("{path} (not in the repository's primary metadata)"),
        });
    };
    let digest = sha256(origin, path, Some(&package.checksum))?;
    let source = located(package.base.as_deref(), path);
    origin.immutable(&source, &digest, RPM, head, headers).await
}

/// The packages of the current snapshot's primary metadata, parsed once per primary.
async fn packages(origin: &Origin) -> Result<Arc<primary::Packages>, PackageError> {
    let (snapshot, _) = current(origin).await?;
    let entry = snapshot
        .entries
        .iter()
        .find(|e| e.kind == "primary")
        .ok_or_else(|| malformed(origin, REPOMD, "no primary metadata"))?;
    let digest = sha256(origin, &entry.href, entry.checksum.as_ref())?;
    if let Some(packages) = primary::cached(&digest) {
        return Ok(packages);
    }
    let source = located(entry.base.as_deref(), &entry.href);
    let response = origin
        .immutable(&source, &digest, OCTETS, false, &HeaderMap::new())
        .await?;
    let bytes = axum::body::to_bytes(response.into_body(), MAX_PRIMARY)
        .await
        .map_err(|e| PackageError::Verification {
            proxy: origin.config().name.clone(),
            path: entry.href.clone(),
            detail: format!("{e} (or larger than {MAX_PRIMARY} bytes)"),
        })?;
    let href = entry.href.clone();
    let parsed = tokio::task::spawn_blocking(move || primary::parse(&href, &bytes))
        .await
        .map_err(|e| PackageError::Internal(e.to_string()))?
        .map_err(|e| malformed(origin, &entry.href, &e))?;
    let parsed = Arc::new(parsed);
    primary::remember(digest, parsed.clone());
    Ok(parsed)
}

/// The sha256 a listing gives for `path`, or a refusal naming the algorithm it used.
fn sha256(
    origin: &Origin,
    path: &str,
    checksum: Option<&(String, String)>,
) -> Result<Digest, PackageError> {
    let refuse = |detail: String| PackageError::Upstream {
        proxy: origin.config().name.clone(),
        path: path.to_owned(),
        detail,
    };
    match checksum {
        Some((kind, hex)) if kind == "sha256" => format!("sha256:{hex}")
            .parse()
            .map_err(|e| refuse(format!("bad sha256 checksum {hex:?}: {e}"))),
        Some((kind, _)) => Err(refuse(format!(
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
    format!("sha256:{hex}").parse().ok()
}

/// Where to fetch `href` from: below `xml:base` when the metadata gives one.
fn located(base: Option<&str>, href: &str) -> String {
    match base {
        Some(base) if base.ends_with('/') => format!("{base}{href}"),
        Some(base) => format!("{base}/{href}"),
        None => href.to_owned(),
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
        assert_eq!(located(None, "Packages/a.rpm"), "Packages/a.rpm");
        assert_eq!(
            located(Some("http://mirror/el9/"), "a.rpm"),
            "http://mirror/el9/a.rpm"
        );
        assert_eq!(
            located(Some("http://mirror/el9"), "a.rpm"),
            "http://mirror/el9/a.rpm"
        );
    }
}
