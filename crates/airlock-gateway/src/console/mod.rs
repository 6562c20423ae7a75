//! The operator's console at `/ui/`: server-rendered HTML (maud, escaped by construction),
//! one inline stylesheet, inline SVG charts, no JavaScript and nothing loaded from
//! anywhere else.
//!
//! ```text
//! GET /ui/          overview: each proxy's upstream health, 24 h of hits and bytes, the store
//! GET /ui/egress    the allowlist with its digest, the latest egress decisions
//! GET /ui/audit     the audit trail, filtered (?kind=&proxy=&client=&item=&since=)
//! GET /ui/proxies/{name}, its buttons, prefetch and its jobs: see [`proxy`]
//! ```
//!
//! Who may see a page and press a button is the admin API's rule
//! (`crate::admin::session`): without a login a page redirects to `/ui/login`.

mod audit;
mod chart;
pub(crate) mod history;
mod overview;
pub(crate) mod page;
mod proxy;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;
pub(crate) use history::History;

/// The console's routes, or `None` when no admin user is configured.
pub(crate) fn router(state: &Arc<AppState>) -> Option<Router> {
    state.logins.as_ref()?;
    Some(
        Router::new()
            .route(
                "/ui",
                get(|| async { axum::response::Redirect::permanent("/ui/") }),
            )
            .route("/ui/", get(overview::overview))
            .route("/ui/egress", get(audit::egress))
            .route("/ui/audit", get(audit::audit))
            .route("/ui/proxies/{name}", get(proxy::browse))
            .route("/ui/proxies/{name}/{action}", post(proxy::act))
            .route("/ui/prefetch", post(proxy::prefetch))
            .route("/ui/jobs/{id}", get(proxy::job))
            .with_state(state.clone()),
    )
}
