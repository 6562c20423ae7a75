//! `/ui/proxies/{name}`: what one proxy holds, searchable, with who brought each item in
//! from the internet; pin, unpin and purge buttons; and the prefetch form and its job page.
//!
//! ```text
//! GET  /ui/proxies/{name}?q=&cursor=     the items (100 a page)
//! POST /ui/proxies/{name}/pin            item, csrf   (OCI: pins <name>/<item>)
//! POST /ui/proxies/{name}/unpin          item, csrf
//! POST /ui/proxies/{name}/purge          item, csrf   (all three: `act`)
//! POST /ui/prefetch                      lines, csrf  → /ui/jobs/{id}
//! GET  /ui/jobs/{id}                     the job's progress (refreshes itself while it runs)
//! ```
//!
//! Every form post goes through [`AdminForm`]: a console session and its CSRF token, or
//! nothing happens. The work itself is the admin API's (`crate::admin`), so a button and
//! a `curl` do exactly the same, audit line included.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_audit::{Filter, Kind};
use airlock_config::Format;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::page::{Viewer, ago, bytes, csrf_field, error_page, page};
use crate::AppState;
use crate::admin::items::{Item, list_items};
use crate::admin::session::AdminForm;

/// Items a page shows.
const PAGE: usize = 100;
/// Fetch records read to find who brought items in.
const FETCHES_READ: usize = 20_000;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct BrowseQuery {
    #[serde(default)]
    q: String,
    cursor: Option<String>,
    /// What the last button did: `pinned`, `unpinned` or `purged`, with `item`.
    done: Option<String>,
    item: Option<String>,
}

/// A button's form: the item, and the search to return to.
#[derive(Debug, Deserialize)]
pub(crate) struct ItemForm {
    item: String,
    #[serde(default)]
    q: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PrefetchForm {
    lines: String,
}

pub(crate) async fn browse(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<BrowseQuery>,
) -> Response {
    let Some(proxy) = state.config.proxies.iter().find(|p| p.name == name) else {
        let error = crate::admin::ApiError::NotFound(format!("no proxy is named {name:?}"));
        return error_page(&viewer, error, "/ui/");
    };
    let q = query.q.trim();
    let listed = list_items(
        &state,
        &name,
        (!q.is_empty()).then_some(q),
        query.cursor.as_deref(),
        PAGE,
    )
    .await;
    let (items, next) = match listed {
        Ok(listed) => listed,
        Err(error) => return error_page(&viewer, error, "/ui/"),
    };
    let oci = proxy.format == Format::Oci;
    let pinned = pinned(&state, &name);
    let fetches = fetches(&state, &name).await;
    let now = SystemTime::now();
    let body = html! {
        p { (proxy.format.as_str()) " proxy at "
            code { @if oci { "/v2/" (name) "/…" } @else { "/repository/" (name) "/…" } } }
        @if let (Some(done), Some(item)) = (&query.done, &query.item) {
            @if matches!(done.as_str(), "pinned" | "unpinned" | "purged") {
                p.flash role="status" { (capitalized(done)) " " code { (item) } "." }
            }
        }
        form.filters method="get" action=(format!("/ui/proxies/{name}")) role="search" {
            label { "Search " (if oci { "images" } else { "files" })
                input type="search" name="q" value=(q) size="30"; }
            button type="submit" { "Search" }
        }
        @if items.is_empty() {
            p.muted { "Nothing cached" @if !q.is_empty() { " matches " code { (q) } } "." }
        } @else {
            div.scroll { table {
                caption.muted { "Sorted by name; " (items.len()) " shown" }
                thead { tr {
                    th scope="col" { (if oci { "Image" } else { "File" }) }
                    th.num scope="col" { "Size" }
                    th scope="col" { "Last used" }
                    th scope="col" { "Brought in by" }
                    @if oci { th scope="col" { "Pinned" } }
                    @if viewer.can_mutate() { th scope="col" { "Actions" } }
                } }
                tbody {
                    @for item in &items {
                        (row(&viewer, &name, q, item, oci, &pinned, &fetches, now))
                    }
                }
            } }
            @if let Some(next) = &next {
                p { a href=(format!("/ui/proxies/{name}?q={}&cursor={}", encode(q), encode(next))) { "Next page" } }
            }
        }
        @if viewer.can_mutate() {
            h2 { "Prefetch" }
            form.stack method="post" action="/ui/prefetch" {
                (csrf_field(&viewer))
                label { "Image references or package URLs, one per line"
                    textarea name="lines" rows="4" cols="60" required
                        placeholder=(if oci { format!("{name}/library/postgres:16") } else { format!("/repository/{name}/…") }) {} }
                p { button type="submit" { "Prefetch" } }
            }
        }
    };
    page(&format!("Proxy {name}"), "", &viewer, &body).into_response()
}

#[allow(clippy::too_many_arguments)]
fn row(
    viewer: &Viewer,
    name: &str,
    q: &str,
    item: &Item,
    oci: bool,
    pinned: &HashSet<String>,
    fetches: &[(String, String, String)],
    now: SystemTime,
) -> Markup {
    let is_pinned = pinned.contains(&item.name);
    let used = (item.last_used > 0).then(|| UNIX_EPOCH + Duration::from_secs(item.last_used));
    let brought = brought_in(fetches, &item.name, oci);
    html! {
        tr {
            th scope="row" { code { (item.name) } }
            td.num { (bytes(item.size)) }
            td { (ago(used, now)) }
            td { @if let Some((client, time)) = brought { (client) " " span.muted { (time.get(..16).unwrap_or(time).replace('T', " ")) } } @else { span.muted { "-" } } }
            @if oci { td { @if is_pinned { strong { "pinned" } } @else { span.muted { "not pinned" } } } }
            @if viewer.can_mutate() {
                td {
                    @if oci {
                        (button(viewer, name, q, item, if is_pinned { "unpin" } else { "pin" }))
                        " "
                    }
                    (button(viewer, name, q, item, "purge"))
                }
            }
        }
    }
}

fn button(viewer: &Viewer, name: &str, q: &str, item: &Item, action: &str) -> Markup {
    html! {
        form.inline method="post" action=(format!("/ui/proxies/{name}/{action}")) {
            (csrf_field(viewer))
            input type="hidden" name="item" value=(item.name);
            input type="hidden" name="q" value=(q);
            button.secondary[action != "purge"] type="submit" aria-label=(format!("{} {}", capitalized(action), item.name)) {
                (capitalized(action))
            }
        }
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `REPO:TAG` items of proxy `name` that a pin (the configuration's or a run-time one)
/// holds.
fn pinned(state: &AppState, name: &str) -> HashSet<String> {
    state
        .registry
        .pins()
        .iter()
        .cloned()
        .chain(state.pins.resolved())
        .filter(|pin| pin.proxy == name)
        .map(|pin| format!("{}:{}", pin.repo, pin.reference))
        .collect()
}

/// The proxy's upstream fetches in the audit trail, newest first: URL path, client, time.
async fn fetches(state: &AppState, name: &str) -> Vec<(String, String, String)> {
    let path = state.config.audit.path.clone();
    let filter = Filter {
        kind: Some(Kind::Fetch),
        proxy: Some(name.to_owned()),
        ..Filter::default()
    };
    let read =
        tokio::task::spawn_blocking(move || airlock_audit::read_last(&path, &filter, FETCHES_READ))
            .await;
    let Ok(Ok((records, _))) = read else {
        return Vec::new();
    };
    records
        .into_iter()
        .rev()
        .filter_map(|r| {
            let url = url::Url::parse(r.item.as_deref()?.trim_end_matches("?…")).ok()?;
            Some((url.path().to_owned(), r.client?, r.time))
        })
        .collect()
}

/// Who caused the latest upstream fetch of `item`'s manifest (OCI) or file, and when.
fn brought_in<'f>(
    fetches: &'f [(String, String, String)],
    item: &str,
    oci: bool,
) -> Option<(&'f str, &'f str)> {
    let suffix = if oci {
        let (repo, tag) = item.rsplit_once(':')?;
        format!("/{repo}/manifests/{tag}")
    } else {
        format!("/{item}")
    };
    fetches
        .iter()
        .find(|(path, _, _)| path.ends_with(&suffix))
        .map(|(_, client, time)| (client.as_str(), time.as_str()))
}

/// Where a button returns to: the proxy's page with the search kept and what was done.
fn back(name: &str, form: &ItemForm, done: &str) -> Response {
    Redirect::to(&format!(
        "/ui/proxies/{name}?q={}&done={done}&item={}",
        encode(&form.q),
        encode(&form.item)
    ))
    .into_response()
}

/// `POST /ui/proxies/{name}/{action}`: pin, unpin or purge the form's item.
pub(crate) async fn act(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    viewer: Viewer,
    UrlPath((name, action)): UrlPath<(String, String)>,
    AdminForm { admin, form }: AdminForm<ItemForm>,
) -> Response {
    let reference = format!("{name}/{}", form.item);
    let user = &admin.user;
    let done = match action.as_str() {
        "pin" => crate::admin::pins::add_pin(&state, user, peer, &reference).map(|_| "pinned"),
        "unpin" => {
            crate::admin::pins::remove_pin(&state, user, peer, &reference).map(|()| "unpinned")
        }
        "purge" => crate::admin::items::purge_item(&state, user, peer, &name, &form.item)
            .await
            .map(|_| "purged"),
        other => Err(crate::admin::ApiError::NotFound(format!(
            "no action {other:?}: pin, unpin or purge"
        ))),
    };
    match done {
        Ok(done) => back(&name, &form, done),
        Err(error) => error_page(&viewer, error, &format!("/ui/proxies/{name}")),
    }
}

pub(crate) async fn prefetch(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    viewer: Viewer,
    AdminForm { admin, form }: AdminForm<PrefetchForm>,
) -> Response {
    let (mut references, mut urls) = (Vec::new(), Vec::new());
    for line in form.lines.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with('/') || line.starts_with("http://") || line.starts_with("https://") {
            urls.push(line.to_owned());
        } else {
            references.push(line.to_owned());
        }
    }
    match crate::admin::prefetch::start_job(&state, &admin.user, peer, references, urls) {
        Ok(id) => Redirect::to(&format!("/ui/jobs/{id}")).into_response(),
        Err(error) => error_page(&viewer, error, "/ui/"),
    }
}

pub(crate) async fn job(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let status = match crate::admin::prefetch::job_status(&state, &id) {
        Ok(status) => status,
        Err(error) => return error_page(&viewer, error, "/ui/"),
    };
    let running = status["state"] == "running";
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let body = html! {
        @if running {
            // Reloads itself every two seconds until the job ends (no script).
            (PreEscaped("<meta http-equiv=\"refresh\" content=\"2\">"))
        }
        p role="status" { "Job " (id) " by " (text(&status["user"])) ": " strong { (text(&status["state"])) }
            " — " (status["done"]) " done, " (status["failed"]) " failed, "
            (bytes(status["bytes"].as_u64().unwrap_or(0))) " received." }
        div.scroll { table {
            thead { tr { th scope="col" { "Item" } th scope="col" { "State" } th.num scope="col" { "Bytes" } th scope="col" { "Error" } } }
            tbody {
                @for item in status["items"].as_array().into_iter().flatten() {
                    tr {
                        th scope="row" { code { (text(&item["item"])) } }
                        td { (text(&item["state"])) }
                        td.num { (bytes(item["bytes"].as_u64().unwrap_or(0))) }
                        td { (text(&item["error"])) }
                    }
                }
            }
        } }
    };
    page(&format!("Prefetch job {id}"), "", &viewer, &body).into_response()
}
