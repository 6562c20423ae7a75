//! `/ui/audit` (the trail, filtered) and `/ui/egress` (the allowlist and its latest
//! decisions, from the trail).

use std::sync::Arc;
use std::time::SystemTime;

use airlock_audit::{Filter, Kind, Record};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{Viewer, bytes, page};
use crate::AppState;

/// Records shown at most.
const SHOWN: usize = 200;

/// The filter form's fields; empty fields filter nothing.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    proxy: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    item: String,
    #[serde(default)]
    since: String,
}

fn some(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

pub(crate) async fn audit(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Query(query): Query<AuditQuery>,
) -> Response {
    // The trail names clients and users: `[ui] anonymous_read` does not open it (as
    // `GET /api/v1/audit`).
    if viewer.user.is_none() {
        return axum::response::Redirect::to("/ui/login").into_response();
    }
    let mut problems = Vec::new();
    let kind = some(&query.kind).and_then(|k| k.parse::<Kind>().map_err(|e| problems.push(e)).ok());
    let since = some(&query.since).and_then(|s| {
        Filter::parse_since(&s, SystemTime::now())
            .map_err(|e| problems.push(e.to_string()))
            .ok()
    });
    let filter = Filter {
        since,
        kind,
        proxy: some(&query.proxy),
        client: some(&query.client),
        item: some(&query.item),
        user: None,
    };
    let records = match read(&state, filter).await {
        Ok(records) => records,
        Err(response) => return response,
    };
    let proxies: Vec<&str> = state
        .config
        .proxies
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let body = html! {
        form.filters method="get" action="/ui/audit" role="search" aria-label="Filter the audit trail" {
            label { "Kind"
                select name="kind" {
                    option value="" { "any" }
                    @for k in Kind::ALL {
                        option value=(k.as_str()) selected[query.kind == k.as_str()] { (k.as_str()) }
                    }
                }
            }
            label { "Proxy"
                select name="proxy" {
                    option value="" { "any" }
                    @for p in &proxies {
                        option value=(p) selected[query.proxy == *p] { (p) }
                    }
                }
            }
            label { "Client" input type="text" name="client" value=(query.client) inputmode="decimal" size="15"; }
            label { "Item contains" input type="text" name="item" value=(query.item) size="20"; }
            label { "Since" input type="text" name="since" value=(query.since) placeholder="24h" size="10"; }
            button type="submit" { "Filter" }
        }
        @for problem in &problems {
            p.bad role="alert" { (problem) }
        }
        (table(&records))
    };
    page("Audit trail", "/ui/audit", &viewer, &body).into_response()
}

pub(crate) async fn egress(State(state): State<Arc<AppState>>, viewer: Viewer) -> Response {
    let Some(policy) = state.egress.clone() else {
        let body = html! { p { "The egress proxy does not run: the configuration has no " code { "[egress]" } "." } };
        return page("Egress", "/ui/egress", &viewer, &body).into_response();
    };
    let filter = Filter {
        kind: Some(Kind::Egress),
        ..Filter::default()
    };
    let records = match read(&state, filter).await {
        Ok(records) => records,
        Err(response) => return response,
    };
    let entries = policy.allowlist().entries();
    let body = html! {
        p { "Listening on " code { (policy.listen()) } "; allowlist digest " code { (policy.allowlist_digest()) } "." }
        h2 { "Allowed names (" (entries.len()) ")" }
        @if entries.is_empty() {
            p.muted { "None: every CONNECT is refused." }
        } @else {
            ul { @for entry in &entries { li { code { (entry) } } } }
        }
        h2 { "Latest decisions" }
        (table(&records))
    };
    page("Egress", "/ui/egress", &viewer, &body).into_response()
}

/// The newest records `filter` keeps, newest first.
async fn read(state: &AppState, filter: Filter) -> Result<Vec<Record>, Response> {
    let path = state.config.audit.path.clone();
    let read = tokio::task::spawn_blocking(move || airlock_audit::read_last(&path, &filter, SHOWN))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())?;
    match read {
        Ok((mut records, _bad)) => {
            records.reverse();
            Ok(records)
        }
        Err(e) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the audit trail: {e}"),
        )
            .into_response()),
    }
}

fn table(records: &[Record]) -> Markup {
    html! {
        @if records.is_empty() {
            p.muted { "No records." }
        } @else {
            div.scroll {
                table {
                    caption.muted { "Newest first; at most " (SHOWN) }
                    thead { tr {
                        th scope="col" { "Time (UTC)" } th scope="col" { "Kind" } th scope="col" { "Result" }
                        th scope="col" { "Who" } th scope="col" { "Proxy" } th scope="col" { "Item" }
                        th.num scope="col" { "Bytes" } th scope="col" { "Detail" }
                    } }
                    tbody {
                        @for r in records {
                            tr {
                                td.mono { (r.time.get(..19).unwrap_or(&r.time).replace('T', " ")) }
                                td { (r.kind.as_str()) }
                                td { @if matches!(r.result.as_str(), "ok" | "allow") { (r.result) } @else { span.bad { (r.result) } } }
                                td { (r.user.as_deref().or(r.client.as_deref()).unwrap_or("-")) }
                                td { (r.proxy.as_deref().unwrap_or("-")) }
                                td.mono { (r.action.as_deref().map(|a| format!("{a} ")).unwrap_or_default()) (r.item.as_deref().unwrap_or("-")) }
                                td.num { (r.bytes.map(bytes).unwrap_or_default()) }
                                td {
                                    @if let Some(status) = r.status { (status) " " }
                                    @if let Some(rule) = &r.rule { "rule " code { (rule) } " " }
                                    @if let Some(reason) = &r.reason { span.muted { (reason) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
