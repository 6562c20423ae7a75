//! What each proxy holds, read from the metadata index, and purging one item.
//!
//! ```text
//! GET    /api/v1/proxies                         name, format, upstream, health, size, hit ratio
//! GET    /api/v1/proxies/{name}/items?q=&limit=&cursor=
//! DELETE /api/v1/proxies/{name}/items/{item}     purge: REPO:TAG (OCI) or the file's path
//! ```
//!
//! An OCI item is a cached tag (`REPO:TAG`, every client variant of it together): its size is
//! the manifest's and the blobs it references that the store holds (an index's child
//! manifests and theirs included), its last use the latest of theirs. A package item is a
//! file record with content. Items come sorted by name, at most `limit` (default 100, at
//! most 1000) a page; `next` is the cursor of the following page.
//!
//! A purge removes the tag or file record only. Blobs stay until eviction removes what
//! nothing uses, so a blob another item references is never removed by a purge.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use airlock_config::{Format, ProxyConfig};
use airlock_store::{Snapshot, TagKey};
use airlock_types::{Digest, Reference, RepoName};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use super::ApiError;
use super::session::{Admin, Viewer};
use crate::AppState;

/// Items a page holds at most, and by default.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;
/// The longest item name a request may give.
const MAX_ITEM: usize = 1024;

/// One cached item.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Item {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Bytes the store holds for it.
    pub size: u64,
    /// Unix seconds; 0 when none of its blobs was used since the index recorded them.
    pub last_used: u64,
}

fn index_error(e: &airlock_store::StoreError) -> ApiError {
    ApiError::Internal(format!("reading the metadata index: {e}"))
}

/// The configured proxy `name`, or 404.
fn proxy<'a>(state: &'a AppState, name: &str) -> Result<&'a ProxyConfig, ApiError> {
    state
        .config
        .proxies
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no proxy is named {name:?} (GET /api/v1/proxies lists them)"
            ))
        })
}

/// The digests `root` reaches (itself, its references, an index's children's) that the
/// store holds, each once.
fn held_closure<'s>(snapshot: &'s Snapshot, root: &'s Digest, seen: &mut HashSet<&'s Digest>) {
    let mut stack = vec![root];
    while let Some(digest) = stack.pop() {
        if !seen.insert(digest) {
            continue;
        }
        if let Some(manifest) = snapshot.manifests.get(digest) {
            stack.extend(manifest.refs.iter());
        }
    }
}

fn size_and_use<'s>(snapshot: &Snapshot, digests: impl Iterator<Item = &'s Digest>) -> (u64, u64) {
    digests
        .filter_map(|d| snapshot.blobs.get(d))
        .fold((0, 0), |(size, used), b| {
            (size + b.size, used.max(b.last_used))
        })
}

/// An OCI proxy's tags as items, by name.
fn oci_items(snapshot: &Snapshot, proxy: &str) -> BTreeMap<String, Item> {
    let mut items = BTreeMap::new();
    for (key, digest) in snapshot.tags.iter().filter(|(k, _)| k.proxy == proxy) {
        let name = format!("{}:{}", key.repo, key.tag);
        // The variant of clients taking every manifest kind names the tag; another
        // variant only fills in when that one is absent.
        if items.contains_key(&name) && !key.variant.is_empty() {
            continue;
        }
        let mut seen = HashSet::new();
        held_closure(snapshot, digest, &mut seen);
        let (size, last_used) = size_and_use(snapshot, seen.into_iter());
        items.insert(
            name.clone(),
            Item {
                name,
                digest: Some(digest.to_string()),
                size,
                last_used,
            },
        );
    }
    items
}

/// A package proxy's file records with content, as items by path.
async fn package_items(
    state: &AppState,
    snapshot: &Snapshot,
    proxy: &str,
) -> Result<BTreeMap<String, Item>, ApiError> {
    let files = state
        .index
        .files_under(proxy, "")
        .await
        .map_err(|e| index_error(&e))?;
    Ok(files
        .into_iter()
        .filter_map(|(path, record)| {
            let digest = record.digest?;
            let (size, last_used) = size_and_use(snapshot, std::iter::once(&digest));
            Some((
                path.clone(),
                Item {
                    name: path,
                    digest: Some(digest.to_string()),
                    size,
                    last_used,
                },
            ))
        })
        .collect())
}

async fn items_of(
    state: &AppState,
    snapshot: &Snapshot,
    proxy: &ProxyConfig,
) -> Result<BTreeMap<String, Item>, ApiError> {
    match proxy.format {
        Format::Oci => Ok(oci_items(snapshot, &proxy.name)),
        _ => package_items(state, snapshot, &proxy.name).await,
    }
}

/// `GET /api/v1/proxies`.
pub(super) async fn proxies(
    _viewer: Viewer,
    State(state): State<Arc<AppState>>,
) -> Result<Response, ApiError> {
    let snapshot = state.index.snapshot().await.map_err(|e| index_error(&e))?;
    let mut out = Vec::with_capacity(state.config.proxies.len());
    for proxy in &state.config.proxies {
        let items = items_of(&state, &snapshot, proxy).await?;
        // Blobs shared by several items count once.
        let mut held = HashSet::new();
        for item in items.values() {
            if let Some(digest) = item
                .digest
                .as_deref()
                .and_then(|d| d.parse::<Digest>().ok())
            {
                if let Some(d) = snapshot.blobs.get_key_value(&digest).map(|(d, _)| d) {
                    held_closure(&snapshot, d, &mut held);
                } else if let Some((d, _)) = snapshot.manifests.get_key_value(&digest) {
                    held_closure(&snapshot, d, &mut held);
                }
            }
        }
        let (size, _) = size_and_use(&snapshot, held.into_iter());
        let counters = state.metrics.proxy(&proxy.name);
        let hit_ratio = (counters.responses > 0)
            .then(|| counters.from_cache as f64 / counters.responses as f64);
        out.push(serde_json::json!({
            "name": proxy.name,
            "format": proxy.format.as_str(),
            "upstream": without_credentials(&proxy.upstream),
            "offline": proxy.offline,
            "health": {
                "upstream_errors": counters.upstream_errors,
                "last_upstream_error": counters.last_upstream_error,
            },
            "items": items.len(),
            "size": size,
            "responses": counters.responses,
            "from_cache": counters.from_cache,
            "hit_ratio": hit_ratio,
        }));
    }
    Ok(axum::Json(serde_json::json!({ "proxies": out })).into_response())
}

/// `url` with any user name and password removed: the list may be public
/// (`[ui] anonymous_read`).
fn without_credentials(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// `?q=&limit=&cursor=`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ItemQuery {
    /// Only items whose name contains this.
    q: Option<String>,
    limit: Option<usize>,
    /// The name after which the page starts (the previous page's `next`).
    cursor: Option<String>,
}

/// One page of `proxy`'s items whose names contain `q`, from after `cursor`: the items,
/// and the cursor of the next page when there is one.
pub(crate) async fn list_items(
    state: &AppState,
    name: &str,
    q: Option<&str>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<Item>, Option<String>), ApiError> {
    let proxy = proxy(state, name)?;
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let snapshot = state.index.snapshot().await.map_err(|e| index_error(&e))?;
    let all = items_of(state, &snapshot, proxy).await?;
    let start = match cursor {
        Some(cursor) => std::ops::Bound::Excluded(cursor.to_owned()),
        None => std::ops::Bound::Unbounded,
    };
    let mut page: Vec<Item> = all
        .range((start, std::ops::Bound::Unbounded))
        .map(|(_, item)| item)
        .filter(|item| q.is_none_or(|q| item.name.contains(q)))
        .take(limit + 1)
        .cloned()
        .collect();
    let next = (page.len() > limit).then(|| {
        page.truncate(limit);
        page.last().map(|i| i.name.clone())
    });
    Ok((page, next.flatten()))
}

/// `GET /api/v1/proxies/{name}/items`.
pub(super) async fn items(
    _viewer: Viewer,
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<ItemQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (page, next) = list_items(
        &state,
        &name,
        query.q.as_deref(),
        query.cursor.as_deref(),
        query.limit.unwrap_or(DEFAULT_PAGE),
    )
    .await?;
    let format = proxy(&state, &name)?.format;
    Ok(axum::Json(serde_json::json!({
        "proxy": name,
        "format": format.as_str(),
        "items": page,
        "next": next,
    }))
    .into_response())
}

/// Refuses item names that could not name a tag or a stored path: empty, overlong,
/// control characters, backslashes, absolute, or with empty, `.` or `..` segments.
pub(crate) fn check_item(item: &str) -> Result<(), ApiError> {
    let bad = |why: &str| ApiError::BadRequest(format!("the item name {item:?} is refused: {why}"));
    if item.is_empty() || item.len() > MAX_ITEM {
        return Err(bad(&format!("it must have 1 to {MAX_ITEM} bytes")));
    }
    if item.chars().any(|c| c.is_control() || c == '\\') {
        return Err(bad("it holds a control character or a backslash"));
    }
    // Index pages end in '/' ("simple/numpy/"): one trailing empty segment is allowed.
    let inner = item.strip_suffix('/').unwrap_or(item);
    if inner
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(bad("it has an empty, '.' or '..' path segment"));
    }
    Ok(())
}

/// `REPO:TAG` of an OCI item.
fn oci_item(proxy: &str, item: &str) -> Result<TagKey, ApiError> {
    let bad = |why: String| ApiError::BadRequest(format!("{item:?} is not REPO:TAG: {why}"));
    let (repo, tag) = item
        .rsplit_once(':')
        .ok_or_else(|| bad("it has no ':'".to_owned()))?;
    let repo: RepoName = repo.parse().map_err(|e| bad(format!("{e}")))?;
    match tag.parse::<Reference>() {
        Ok(Reference::Tag(tag)) => Ok(TagKey {
            proxy: proxy.to_owned(),
            repo: repo.to_string(),
            tag,
            variant: String::new(),
        }),
        _ => Err(bad(format!("{tag:?} is not a tag"))),
    }
}

/// Purges `item` of proxy `name` for `user`: the tag or file record goes (logged and
/// audited); returns the records removed.
pub(crate) async fn purge_item(
    state: &AppState,
    user: &str,
    peer: SocketAddr,
    name: &str,
    item: &str,
) -> Result<usize, ApiError> {
    let proxy = proxy(state, name)?;
    check_item(item)?;
    let removed = if proxy.format == Format::Oci {
        forget_tag(state, &proxy.name, item).await?
    } else {
        forget_file(state, &proxy.name, item).await?
    };
    if removed == 0 {
        return Err(ApiError::NotFound(format!(
            "proxy {name:?} holds no item {item:?}"
        )));
    }
    let what = format!("{name}/{item}");
    tracing::info!(target: "airlock::admin", user, client = %peer.ip(), item = what, records = removed, "purged");
    state.audit_admin(user, peer, "purge", &what);
    Ok(removed)
}

/// `DELETE /api/v1/proxies/{name}/items/{item}`.
pub(super) async fn purge(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath((name, item)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let removed = purge_item(&state, &admin.user, peer, &name, &item).await?;
    Ok((
        StatusCode::OK,
        axum::Json(serde_json::json!({ "proxy": name, "item": item, "records_removed": removed })),
    )
        .into_response())
}

/// Removes every client variant of the tag `item` (`REPO:TAG`); returns how many.
async fn forget_tag(state: &AppState, proxy: &str, item: &str) -> Result<usize, ApiError> {
    let key = oci_item(proxy, item)?;
    let variants: Vec<TagKey> = state
        .index
        .tag_variants(&key)
        .await
        .map_err(|e| index_error(&e))?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let n = variants.len();
    if n > 0 {
        state
            .index
            .forget(Vec::new(), variants)
            .await
            .map_err(|e| index_error(&e))?;
    }
    Ok(n)
}

/// Removes the file record `item`; returns how many (0 or 1).
async fn forget_file(state: &AppState, proxy: &str, item: &str) -> Result<usize, ApiError> {
    let removed = state
        .index
        .forget_file(proxy, item)
        .await
        .map_err(|e| index_error(&e))?;
    Ok(usize::from(removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_item_names_are_refused() {
        for bad in [
            "",
            "../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "/",
            "a//",
            "a\\b",
            "a\u{0}b",
            "a\nb",
            &"x".repeat(MAX_ITEM + 1),
        ] {
            assert!(check_item(bad).is_err(), "{bad:?}");
        }
        for good in ["library/alpine:3.19", "simple/numpy/", "packages/a-1.0.whl"] {
            assert!(check_item(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn upstreams_are_listed_without_credentials() {
        let url = "https://user:secret@registry.example/v2/".parse().unwrap();
        assert_eq!(without_credentials(&url), "https://registry.example/v2/");
    }

    #[test]
    fn oci_items_are_repo_colon_tag() {
        let key = oci_item("hub", "library/alpine:3.19").unwrap();
        assert_eq!(
            (key.repo.as_str(), key.tag.as_str()),
            ("library/alpine", "3.19")
        );
        assert!(oci_item("hub", "library/alpine").is_err());
        assert!(oci_item("hub", "Library/alpine:3").is_err());
        assert!(oci_item("hub", "alpine:sha256:abc").is_err());
        assert!(oci_item("hub", "alpine:-bad").is_err());
    }
}
