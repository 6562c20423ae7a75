//! `/ui/`: at a glance, is every upstream answering, how much comes from the cache, how
//! full the store is, and how busy the egress proxy is.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use maud::{Markup, html};

use super::chart::{Measure, chart};
use super::page::{Viewer, ago, bytes, page, percent};
use crate::AppState;

pub(crate) async fn overview(State(state): State<Arc<AppState>>, viewer: Viewer) -> Markup {
    let now = SystemTime::now();
    page("Overview", "/ui/", &viewer, &body(&state, now))
}

fn body(state: &AppState, now: SystemTime) -> Markup {
    let history = &state.history;
    let size = state.index.total_size();
    let max = state.config.cache.max_size.map(|m| m.0);
    let days: Vec<_> = state
        .config
        .proxies
        .iter()
        .map(|p| (p, history.day(&p.name, now), history.health(&p.name)))
        .collect();
    let (cached, upstream) = days.iter().fold((0, 0), |(c, u), (_, d, _)| {
        (c + d.bytes_cached, u + d.bytes_upstream)
    });
    let egress = state.egress.as_ref().map(|e| {
        let total = super::history::egress_decisions(e);
        (
            history.egress_per_minute(total, now),
            e.metrics().active_tunnels(),
        )
    });
    html! {
        section.cards aria-label="Summary" {
            div.card {
                div { "Store" }
                div.big { (bytes(size)) }
                @if let Some(max) = max {
                    label { "of " (bytes(max)) " (max_size)"
                        meter min="0" max=(max) value=(size.min(max)) { (percent(size, max)) } }
                } @else {
                    div.muted { "no max_size" }
                }
            }
            div.card {
                div { "Saved from the internet, 24 h" }
                div.big { (bytes(cached)) }
                div.muted { (bytes(upstream)) " fetched" }
            }
            div.card {
                div { "Egress decisions" }
                @match egress {
                    Some((Some(rate), active)) => {
                        div.big { (format!("{rate:.1}")) " / min" }
                        div.muted { (active) " tunnels open" }
                    }
                    Some((None, active)) => {
                        div.big { "-" }
                        div.muted { "measured after a minute; " (active) " tunnels open" }
                    }
                    None => { div.big { "off" } div.muted { "no [egress]" } }
                }
            }
        }
        h2 { "Proxies" }
        div.scroll {
            table {
                caption.muted { "Responses and bytes over the last 24 hours" }
                thead { tr {
                    th scope="col" { "Proxy" } th scope="col" { "Format" } th scope="col" { "Upstream" }
                    th scope="col" { "Health" } th.num scope="col" { "Hit ratio" }
                    th.num scope="col" { "From cache" } th.num scope="col" { "From internet" }
                } }
                tbody {
                    @for (proxy, day, (failure, success)) in &days {
                        tr {
                            th scope="row" { a href=(format!("/ui/proxies/{}", proxy.name)) { (proxy.name) } }
                            td { (proxy.format.as_str()) }
                            td.mono { (shown_url(&proxy.upstream)) }
                            td { (health(failure.as_ref(), *success, now)) }
                            td.num { (percent(day.hits, day.hits + day.misses)) }
                            td.num { (bytes(day.bytes_cached)) }
                            td.num { (bytes(day.bytes_upstream)) }
                        }
                    }
                }
            }
        }
        h2 { "Last 24 hours" }
        div.charts {
            @for (proxy, _, _) in &days {
                @let series = history.series(&proxy.name, now);
                section aria-label=(format!("{} charts", proxy.name)) {
                    h3 { (proxy.name) }
                    (chart(&format!("{}-req", proxy.name), &format!("{}: responses", proxy.name), &series, Measure::Requests))
                    (chart(&format!("{}-bytes", proxy.name), &format!("{}: bytes", proxy.name), &series, Measure::Bytes))
                }
            }
        }
    }
}

fn health(
    failure: Option<&super::history::Failure>,
    success: Option<SystemTime>,
    now: SystemTime,
) -> Markup {
    let failing = failure.is_some_and(|f| success.is_none_or(|s| f.at > s));
    html! {
        @if let Some(f) = failure {
            @if failing {
                span.bad { "failing" } " "
            } @else {
                span.ok { "ok" } " "
            }
            span.muted { "last error " (ago(Some(f.at), now)) ": " (f.status) " for " }
            code { (f.path) }
        } @else if success.is_some() {
            span.ok { "ok" }
        } @else {
            span.muted { "not used yet" }
        }
    }
}

/// An upstream URL without any credentials written into it.
fn shown_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}
