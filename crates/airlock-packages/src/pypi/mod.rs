//! `format = "pypi"`: the simple repository API at `/repository/<name>/simple/`, in HTML
//! (PEP 503) and JSON (PEP 691) by `Accept`, with every file URL rewritten to the gateway.
//!
//! Paths below the proxy:
//!
//! ```text
//! simple/                                  root index, refreshed by TTL
//! simple/<project>/                        project page, refreshed by TTL; other spellings → 301
//! packages/<project>/<sha256>/<filename>   a file, immutable, verified against <sha256>
//! packages/<project>/<sha256>/<filename>.metadata
//!                                          its PEP 658 metadata, verified against the hash the
//!                                          project page gives for it
//! ```
//!
//! Upstream pages are parsed into one model ([`ProjectPage`]) and rendered in the client's
//! representation, so an upstream that only speaks HTML still serves JSON clients. Files the
//! index gives no sha256 for are left out of the page: airlock could not verify them. A
//! metadata file is advertised only when the index gives its sha256, because then it is
//! served here, verified; pip fails hard on advertised metadata it cannot fetch.

mod html;
mod json;
mod offline;
#[cfg(test)]
mod proptests;

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_types::{CacheOutcome, ClientRequest, Digest};
use airlock_upstream::Target;
use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use reqwest::Url;

use crate::derived::{blocking, in_place};
use crate::{Check, Origin, PackageError, Spec, Variant};

/// PEP 691 JSON.
const JSON: &str = "application/vnd.pypi.simple.v1+json";
/// PEP 691's name for PEP 503 HTML.
const HTML: &str = "application/vnd.pypi.simple.v1+html";
/// A project page larger than this is refused (pypi.org's largest are a few MiB).
const MAX_PROJECT_PAGE: usize = 32 * 1024 * 1024;
/// The root index lists every project (pypi.org's is tens of MiB).
const MAX_ROOT_PAGE: usize = 256 * 1024 * 1024;
/// Rendered root pages kept per proxy: one per representation, and the previous ones while
/// a refresh is picked up.
const ROOTS_KEPT: usize = 4;
/// The derived table holding them, by upstream representation, whether the upstream sent
/// JSON, and the digest of its page.
const ROOT_TABLE: &str = "pypi-root";

/// The upstream representations airlock caches, each under its own key.
const UPSTREAM_JSON: Variant<'static> = Variant {
    name: "json",
    accept: "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01",
};
const UPSTREAM_HTML: Variant<'static> = Variant {
    name: "html",
    accept: "application/vnd.pypi.simple.v1+html, text/html;q=0.01",
};

/// What a client asked for, by `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Representation {
    Json,
    /// HTML, answered with this media type (`text/html` or PEP 691's name for it).
    Html(&'static str),
}

/// One distribution file of a project page, whichever representation it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DistFile {
    filename: String,
    url: String,
    hashes: BTreeMap<String, String>,
    requires_python: Option<String>,
    /// `Some("")` when yanked without a reason (PEP 592).
    yanked: Option<String>,
    /// PEP 658/714: `Some` when the index offers a metadata file, with its hashes.
    metadata: Option<BTreeMap<String, String>>,
    size: Option<u64>,
    upload_time: Option<String>,
}

/// A project page (PEP 503/691/700).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProjectPage {
    versions: Option<Vec<String>>,
    files: Vec<DistFile>,
}

/// Maps a request path below `/repository/<name>/` to an index page or a file.
pub(crate) async fn serve(
    origin: &Origin,
    path: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["simple"] => Ok(redirect(origin, "simple/")),
        ["simple", ""] => root(origin, request).await,
        ["simple", project] | ["simple", project, ""] => {
            let normal = normalize(project)?;
            if normal != *project || !path.ends_with('/') {
                return Ok(redirect(origin, &format!("simple/{normal}/")));
            }
            project_page(origin, &normal, request).await
        }
        ["packages", project, sha256, filename] => {
            file(origin, project, sha256, filename, request).await
        }
        _ => Err(PackageError::NotFound),
    }
}

/// PEP 503 normalization, after checking the name against PEP 508's grammar (which also
/// keeps traversal and separators out).
fn normalize(name: &str) -> Result<String, PackageError> {
    airlock_types::pypi::normalize(name)
        .map_err(|_| PackageError::BadPath(format!("{name} (not a Python project name)")))
}

/// Chooses the representation from `Accept` (PEP 691): highest quality wins, JSON on a tie;
/// no `Accept` means HTML.
fn negotiate(request: &ClientRequest) -> Result<Representation, PackageError> {
    let Some(accept) = &request.accept else {
        return Ok(Representation::Html("text/html"));
    };
    let accept = accept
        .to_str()
        .map_err(|_| PackageError::NotAcceptable("(not text)".to_owned()))?;
    let mut best: Option<(u16, u8, Representation)> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        // Quality in thousandths: header values have at most three decimals.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let quality = (quality.clamp(0.0, 1.0) * 1000.0).round() as u16;
        let (rank, representation) = match media.as_str() {
            JSON | "application/vnd.pypi.simple.latest+json" => (3, Representation::Json),
            HTML | "application/vnd.pypi.simple.latest+html" => (2, Representation::Html(HTML)),
            "text/html" | "*/*" | "text/*" => (1, Representation::Html("text/html")),
            _ => continue,
        };
        if quality == 0 {
            continue;
        }
        if best.is_none_or(|(q, r, _)| (quality, rank) > (q, r)) {
            best = Some((quality, rank, representation));
        }
    }
    best.map(|(_, _, r)| r)
        .ok_or_else(|| PackageError::NotAcceptable(accept.to_owned()))
}

fn redirect(origin: &Origin, path: &str) -> Response {
    let location = format!("/repository/{}/{path}", origin.config().name);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Parses an upstream page by its `Content-Type`.
fn parse_project(bytes: &[u8], content_type: Option<&str>) -> Result<ProjectPage, String> {
    if content_type.is_some_and(|t| t.contains("json")) {
        json::parse_project(bytes)
    } else {
        html::parse_project(bytes)
    }
}

fn parse_root(bytes: &[u8], content_type: Option<&str>) -> Result<Vec<String>, String> {
    if content_type.is_some_and(|t| t.contains("json")) {
        json::parse_root(bytes)
    } else {
        html::parse_root(bytes)
    }
}

fn upstream_variant(representation: Representation) -> &'static Variant<'static> {
    match representation {
        Representation::Json => &UPSTREAM_JSON,
        Representation::Html(_) => &UPSTREAM_HTML,
    }
}

/// The root page as served: rendered once per upstream page and representation.
struct RootPage {
    body: Bytes,
    etag: String,
}

type RootKey = (&'static str, bool, Digest);

/// Parses an upstream root page and renders it in the representation `variant` stands for.
fn render_root(
    bytes: &[u8],
    content_type: Option<&str>,
    variant: &Variant<'_>,
) -> Result<RootPage, String> {
    let projects =
        parse_root(bytes, content_type).map_err(|e| format!("malformed index page: {e}"))?;
    let projects: Vec<(String, String)> = projects
        .into_iter()
        .filter_map(|name| normalize(&name).ok().map(|normal| (name, normal)))
        .collect();
    let body = if variant.name == UPSTREAM_JSON.name {
        json::render_root(&projects)
    } else {
        html::render_root(&projects)
    };
    let etag = etag_of(body.as_bytes());
    Ok(RootPage {
        body: Bytes::from(body),
        etag,
    })
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|t| t.contains("json"))
}

/// `simple/`: the upstream's root page (every project on the index, tens of MiB) parsed and
/// rendered once per upstream page and representation, off the async threads, however many
/// requests ask at the same time; the check that lets a fetched page into the cache keeps
/// its rendering.
async fn root(origin: &Origin, request: &ClientRequest) -> Result<Response, PackageError> {
    let representation = negotiate(request)?;
    if origin.is_offline() {
        let projects = offline::held_projects(origin).await?;
        let body = match representation {
            Representation::Json => json::render_root(&projects),
            Representation::Html(_) => html::render_root(&projects),
        };
        let etag = etag_of(body.as_bytes());
        return Ok(index_response(
            Bytes::from(body),
            &etag,
            representation,
            CacheOutcome::Hit,
            request,
        ));
    }
    let variant = upstream_variant(representation);
    let table = origin
        .derived
        .table::<RootKey, RootPage>(ROOT_TABLE, ROOTS_KEPT, None);
    let check: &Check<'_> = &|bytes, content_type| {
        in_place(|| {
            let key = (variant.name, is_json(content_type), Digest::of(bytes));
            if table.get(&key).is_none() {
                table.fill(key, render_root(bytes, content_type, variant)?);
            }
            Ok(())
        })
    };
    let document = origin
        .document(Spec::document("simple/", variant).checked(MAX_ROOT_PAGE, check))
        .await?;
    let json = is_json(document.content_type.as_deref());
    let content_type = document.content_type;
    let bytes = document.bytes;
    // The document comes without its digest: hashing tens of MiB is work for the blocking
    // pool too.
    let (digest, bytes) = blocking(move || (Digest::of(&bytes), bytes)).await?;
    let page = table
        .get_or_compute((variant.name, json, digest), || async {
            blocking(move || render_root(&bytes, content_type.as_deref(), variant))
                .await?
                .map_err(|e| malformed(origin, "simple/", &e))
        })
        .await?;
    Ok(index_response(
        page.body.clone(),
        &page.etag,
        representation,
        document.cache,
        request,
    ))
}

/// The derived table of parsed project pages, by project, upstream representation,
/// whether the upstream sent JSON, and the digest of its page.
const PROJECT_TABLE: &str = "pypi-project";
/// Parsed project pages kept per proxy: a resolver asks for each project's page, then its
/// metadata and a file, so the pages of one install's dependency tree stay warm.
const PROJECTS_KEPT: usize = 64;

type ProjectKey = (String, &'static str, bool, Digest);

/// A project page as the upstream has it now (or as cached), parsed once per upstream page
/// (by digest) and kept in the proxy's derived cache: a file download looks its sha256 up
/// in the page without reading or parsing the page again.
async fn fetch_project(
    origin: &Origin,
    project: &str,
    variant: &'static Variant<'static>,
) -> Result<(Arc<ProjectPage>, CacheOutcome), PackageError> {
    match fetch_variant(origin, project, variant).await {
        // Offline, whichever representation was cached stands in for the other.
        Err(PackageError::Offline { .. }) if origin.is_offline() => {
            let other = if variant.name == UPSTREAM_JSON.name {
                &UPSTREAM_HTML
            } else {
                &UPSTREAM_JSON
            };
            fetch_variant(origin, project, other).await
        }
        result => result,
    }
}

/// [`fetch_project`] in one upstream representation.
async fn fetch_variant(
    origin: &Origin,
    project: &str,
    variant: &'static Variant<'static>,
) -> Result<(Arc<ProjectPage>, CacheOutcome), PackageError> {
    let path = format!("simple/{project}/");
    let base = origin
        .upstream_base()
        .join(&path)
        .map_err(|e| malformed(origin, &path, &e.to_string()))?;
    let proxy = origin.config().name.as_str();
    let table = origin
        .derived
        .table::<ProjectKey, ProjectPage>(PROJECT_TABLE, PROJECTS_KEPT, None);
    let key = |json: bool, digest: Digest| (project.to_owned(), variant.name, json, digest);
    let check: &Check<'_> = &|bytes, content_type| {
        in_place(|| {
            let page = parse_project(bytes, content_type)
                .map_err(|e| format!("malformed index page: {e}"))?;
            let key = key(is_json(content_type), Digest::of(bytes));
            if table.get(&key).is_none() {
                table.fill(key, resolved(page, &base, proxy, project));
            }
            Ok(())
        })
    };
    let entry = origin
        .entry(Spec::document(&path, variant).checked(MAX_PROJECT_PAGE, check))
        .await?;
    let json = is_json(entry.content_type.as_deref());
    let page = table
        .get_or_compute(key(json, entry.digest.clone()), || async {
            let bytes = origin
                .read_stored(&entry.digest, MAX_PROJECT_PAGE as u64)
                .await?;
            let content_type = entry.content_type.clone();
            let (proxy, project) = (proxy.to_owned(), project.to_owned());
            blocking(move || {
                parse_project(&bytes, content_type.as_deref())
                    .map(|page| resolved(page, &base, &proxy, &project))
            })
            .await?
            .map_err(|e| malformed(origin, &path, &e))
        })
        .await?;
    Ok((page, entry.outcome))
}

/// `page` with every file URL resolved against the page's upstream URL `base`; files whose
/// URL is not http(s) are left out.
fn resolved(mut page: ProjectPage, base: &Url, proxy: &str, project: &str) -> ProjectPage {
    page.files.retain_mut(|file| match base.join(&file.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            file.url = url.to_string();
            true
        }
        _ => {
            tracing::warn!(target: "airlock::packages", proxy, project, url = %file.url,
                "left out a file whose URL is not http(s)");
            false
        }
    });
    page
}

async fn project_page(
    origin: &Origin,
    project: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    let representation = negotiate(request)?;
    let (page, cache) = fetch_project(origin, project, upstream_variant(representation)).await?;
    let mut page = ProjectPage::clone(&page);
    if origin.is_offline() {
        offline::keep_held(origin, &mut page).await?;
    }
    let prefix = format!("/repository/{}/packages/{project}", origin.config().name);
    page.files.retain_mut(|file| rewrite(file, &prefix));
    let body = match representation {
        Representation::Json => json::render_project(project, &page),
        Representation::Html(_) => html::render_project(project, &page),
    };
    let etag = etag_of(body.as_bytes());
    Ok(index_response(
        Bytes::from(body),
        &etag,
        representation,
        cache,
        request,
    ))
}

/// Points `file` at the gateway; `false` (leave it out) when it has no usable sha256 or a
/// filename that cannot be a path segment.
fn rewrite(file: &mut DistFile, prefix: &str) -> bool {
    let Some(sha256) = file.hashes.get("sha256").and_then(|h| sha256_hex(h)) else {
        tracing::debug!(target: "airlock::packages", filename = %file.filename,
            "left out a file the index gives no sha256 for");
        return false;
    };
    if !safe_filename(&file.filename) {
        return false;
    }
    if file
        .metadata
        .as_ref()
        .is_some_and(|m| m.get("sha256").and_then(|h| sha256_hex(h)).is_none())
    {
        // Served only when it can be verified, so advertised only then.
        file.metadata = None;
    }
    file.url = format!("{prefix}/{sha256}/{}", file.filename);
    true
}

fn sha256_hex(value: &str) -> Option<String> {
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

/// A filename that is one plain path segment.
fn safe_filename(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+!~".contains(&b))
}

/// An index page's `ETag`: named by the bytes sent, so clients' conditional requests work
/// across refreshes.
fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", Digest::of(body).hex())
}

fn index_response(
    body: Bytes,
    etag: &str,
    representation: Representation,
    cache: CacheOutcome,
    request: &ClientRequest,
) -> Response {
    let content_type = match representation {
        Representation::Json => JSON,
        Representation::Html(media) => media,
    };
    let matches = request.holds(etag, false);
    let length = body.len();
    let mut response = Response::new(if request.is_head() || matches {
        Body::empty()
    } else {
        Body::from(body)
    });
    if matches {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert("x-airlock-cache", HeaderValue::from_static(cache.as_str()));
    if matches {
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
        return response;
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// A distribution file or its `.metadata`, verified against the hash the project page gives.
async fn file(
    origin: &Origin,
    project: &str,
    sha256: &str,
    filename: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    let normal = normalize(project)?;
    let bad = || PackageError::BadPath(format!("packages/{project}/{sha256}/{filename}"));
    if normal != project || !safe_filename(filename) {
        return Err(bad());
    }
    let sha256 = sha256_hex(sha256).filter(|h| h == sha256).ok_or_else(bad)?;
    let file_digest = Digest::sha256_hex(&sha256).map_err(|_| bad())?;
    let metadata_of = filename.strip_suffix(".metadata");
    // Even a stored file is served only as the page lists it: a known sha256 alone must not
    // reach blobs cached for other projects or proxies.
    let wanted = metadata_of.unwrap_or(filename);
    let (page, _) = fetch_project(origin, project, &UPSTREAM_JSON).await?;
    let listed = page
        .files
        .iter()
        .find(|f| {
            f.filename == wanted
                && f.hashes
                    .get("sha256")
                    .and_then(|h| sha256_hex(h))
                    .as_deref()
                    == Some(&sha256)
        })
        .ok_or_else(|| PackageError::NotFoundUpstream {
            path: format!("{wanted} with sha256 {sha256} in the index of {project}"),
        })?;
    if metadata_of.is_some() {
        let hex = listed
            .metadata
            .as_ref()
            .and_then(|m| m.get("sha256"))
            .and_then(|h| sha256_hex(h))
            .ok_or_else(|| PackageError::NotFoundUpstream {
                path: format!("{filename} (the index gives no sha256 for it)"),
            })?;
        let digest = Digest::sha256_hex(&hex).map_err(|_| bad())?;
        let url = Target::Url(format!("{}.metadata", listed.url));
        origin
            .get(
                Spec::immutable(url, &digest, content_type(filename)),
                request,
            )
            .await
    } else {
        let source = Target::Url(listed.url.clone());
        origin
            .get(
                Spec::immutable(source, &file_digest, content_type(filename)),
                request,
            )
            .await
    }
}

fn content_type(filename: &str) -> &'static str {
    let extension = std::path::Path::new(filename)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("metadata") => "text/plain; charset=utf-8",
        Some("whl" | "zip") => "application/zip",
        Some("gz") => "application/gzip",
        _ => "application/octet-stream",
    }
}

fn malformed(origin: &Origin, path: &str, detail: &str) -> PackageError {
    PackageError::Upstream {
        proxy: origin.config().name.clone(),
        path: path.to_owned(),
        detail: format!("malformed index page: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_and_checked() {
        assert_eq!(normalize("Foo_Bar..baz").unwrap(), "foo-bar-baz");
        assert_eq!(normalize("requests").unwrap(), "requests");
        for bad in ["..", "-a", "a-", "a/b", "", "a%2fb", "é"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn accept_chooses_the_representation() {
        let pick = |accept: &str| {
            let mut request = ClientRequest::get();
            request.accept = Some(HeaderValue::from_str(accept).unwrap());
            negotiate(&request)
        };
        assert_eq!(
            pick("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01").unwrap(),
            Representation::Json
        );
        assert_eq!(
            pick("text/html").unwrap(),
            Representation::Html("text/html")
        );
        assert_eq!(
            pick("application/vnd.pypi.simple.v1+json;q=0.5, application/vnd.pypi.simple.v1+html")
                .unwrap(),
            Representation::Html(HTML)
        );
        assert!(pick("application/xml").is_err());
        assert_eq!(
            negotiate(&ClientRequest::get()).unwrap(),
            Representation::Html("text/html")
        );
    }

    #[test]
    fn files_without_sha256_or_verifiable_metadata() {
        let file = DistFile {
            filename: "a-1.0-py3-none-any.whl".into(),
            url: "https://files.example/a.whl".into(),
            hashes: BTreeMap::from([("md5".into(), "00".into())]),
            requires_python: None,
            yanked: None,
            metadata: Some(BTreeMap::new()),
            size: None,
            upload_time: None,
        };
        assert!(!rewrite(&mut file.clone(), "/p"));
        let mut with = file;
        with.hashes.insert("sha256".into(), "A".repeat(64));
        assert!(rewrite(&mut with, "/p"));
        assert_eq!(
            with.url,
            format!("/p/{}/a-1.0-py3-none-any.whl", "a".repeat(64))
        );
        assert_eq!(
            with.metadata, None,
            "metadata without a sha256 is not advertised"
        );
        assert_eq!(
            with.hashes["sha256"],
            "A".repeat(64),
            "hashes kept as given"
        );
    }
}
