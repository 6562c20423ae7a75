//! The HTTP surface: `/v2/…` to the registry, health and Harbor-compatible status
//! endpoints, the CA download, a plain status page, and the access log.
//!
//! Every request gets a [`RequestId`]: the one a client (or a load balancer in front) sent
//! in `X-Request-Id` when it is a plain token, otherwise a fresh one. It names the request's
//! `tracing` span (which the upstream fetches' spans nest in), its access-log line, and is
//! returned as `X-Request-Id` on every response the router makes, errors and refusals
//! included.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use airlock_types::{RequestId, ServedBy, UpstreamFailure};
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::{HeaderName, HeaderValue, StatusCode, header};
use tracing::Instrument as _;

use crate::AppState;

/// The request id header, read from clients and set on every response.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let registry = Router::new()
        .route("/v2", any(airlock_registry::serve))
        .route("/v2/", any(airlock_registry::serve))
        .route("/v2/{*rest}", any(airlock_registry::serve))
        .with_state(state.registry.clone())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::registry_auth::caller,
        ));
    let packages = Router::new()
        .route("/repository/{*rest}", any(airlock_packages::handle))
        .with_state(state.packages.clone());
    let admin = crate::admin::router(&state).unwrap_or_default();
    let console = crate::console::router(&state).unwrap_or_default();
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v2.0/health", get(harbor_health))
        .route("/api/v2.0/systeminfo", get(harbor_systeminfo))
        .route("/ca.crt", get(ca_certificate))
        .route("/metrics", get(metrics))
        .route("/service/token", get(crate::registry_auth::token_endpoint))
        .with_state(state.clone())
        .route("/service/rest/v1/status", get(|| async { "" }))
        .merge(registry)
        .merge(packages)
        .merge(admin)
        .merge(console)
        .layer(axum::middleware::from_fn_with_state(state, access_log))
}

async fn harbor_health() -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "status": "healthy",
        "components": [
            { "name": "core", "status": "healthy" },
            { "name": "registry", "status": "healthy" },
        ]
    }))
}

async fn harbor_systeminfo(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let host = &state.config.server.hostname;
    axum::Json(serde_json::json!({
        "harbor_version": concat!("airlock-", env!("CARGO_PKG_VERSION")),
        "registry_url": host,
        "external_url": format!("https://{host}"),
        "auth_mode": "none",
        "project_creation_restriction": "adminonly",
        "self_registration": false,
        "has_ca_root": state.ca_pem.is_some(),
        "read_only": true,
        "with_chartmuseum": false,
        "notification_enable": false,
    }))
}

async fn ca_certificate(State(state): State<Arc<AppState>>) -> Response {
    match &state.ca_pem {
        Some(pem) => (
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            pem.clone(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "this gateway does not use a generated CA (tls.mode is not self-signed)\n",
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(
            &state.registry,
            state.store.as_ref(),
            &state.connections,
            state.egress.as_ref(),
        ),
    )
}

async fn status_page(State(state): State<Arc<AppState>>) -> String {
    use std::fmt::Write as _;
    let mut page = format!("airlock {}\n\nproxies:\n", env!("CARGO_PKG_VERSION"));
    for proxy in &state.config.proxies {
        let (path, host) = match proxy.format {
            airlock_config::Format::Oci => (
                format!("/v2/{}/…", proxy.name),
                proxy
                    .host
                    .as_deref()
                    .map(|h| format!(" (ns={h})"))
                    .unwrap_or_default(),
            ),
            format => (
                format!("/repository/{}/… ({})", proxy.name, format.as_str()),
                String::new(),
            ),
        };
        let _ = writeln!(page, "  {path}{host} → {}", proxy.upstream);
    }
    if !state.config.hosted.is_empty() {
        page.push_str("\nhosted projects:\n");
        for hosted in &state.config.hosted {
            let pulls = if hosted.anonymous_pull {
                "anonymous pulls"
            } else {
                "pulls need a login"
            };
            let _ = writeln!(page, "  /v2/{}/… ({pulls})", hosted.name);
        }
    }
    page
}

/// One structured line per request: id, method, route, upstream, status, bytes, duration,
/// cache; the request runs in a span carrying its id, and the response carries the id.
async fn access_log(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = RequestId::from_client(
        request
            .headers()
            .get(&REQUEST_ID)
            .map(HeaderValue::as_bytes),
    );
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let span = tracing::info_span!(
        target: "airlock::request",
        "request",
        request_id = id.as_str(),
        %method,
        path,
        proxy = tracing::field::Empty,
    );
    // Upstream fetches this request causes are audited as this client's.
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let context = airlock_audit::Context {
        client,
        request_id: id.as_str().to_owned(),
        audit: state.audit.clone(),
    };
    let mut response = context
        .scope(next.run(request).instrument(span.clone()))
        .await;
    let served = response.extensions().get::<ServedBy>().cloned();
    if let Some(served) = &served {
        span.record("proxy", served.proxy.as_str());
    }
    response.headers_mut().insert(
        REQUEST_ID,
        HeaderValue::from_str(id.as_str()).expect("a request id is a plain token"),
    );
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let now = std::time::SystemTime::now();
    if let Some(served) = &served {
        state.history.record(
            &served.proxy,
            served.cache.from_cache(),
            bytes.unwrap_or(0),
            now,
        );
    }
    if let Some(failure) = response.extensions().get::<UpstreamFailure>() {
        state
            .history
            .failure(&failure.proxy, response.status().as_u16(), &path, now);
    }
    state.metrics.record(
        &path,
        response.status().as_u16(),
        served.as_ref(),
        response.extensions().get::<UpstreamFailure>(),
        bytes,
    );
    tracing::info!(
        target: "airlock::access",
        request_id = id.as_str(),
        %method,
        path,
        query = query.as_deref().unwrap_or(""),
        status = response.status().as_u16(),
        bytes = bytes.unwrap_or(0),
        ms = started.elapsed().as_millis() as u64,
        proxy = served.as_ref().map_or("", |s| s.proxy.as_str()),
        cache = served.as_ref().map_or("", |s| s.cache.as_str()),
        "request"
    );
    response
}
