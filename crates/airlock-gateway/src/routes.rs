//! The HTTP surface: `/v2/…` to the registry, health and Harbor-compatible status
//! endpoints, the CA download, a plain status page, and the access log.

use std::sync::Arc;
use std::time::Instant;

use airlock_types::{ServedBy, UpstreamFailure};
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::{HeaderValue, StatusCode, header};

use crate::AppState;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let registry = Router::new()
        .route("/v2", any(airlock_registry::handle))
        .route("/v2/", any(airlock_registry::handle))
        .route("/v2/{*rest}", any(airlock_registry::handle))
        .with_state(state.registry.clone());
    let packages = Router::new()
        .route("/repository/{*rest}", any(airlock_packages::handle))
        .with_state(state.packages.clone());
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v2.0/health", get(harbor_health))
        .route("/api/v2.0/systeminfo", get(harbor_systeminfo))
        .route("/ca.crt", get(ca_certificate))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .route("/service/rest/v1/status", get(|| async { "" }))
        .merge(registry)
        .merge(packages)
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
        state
            .metrics
            .render(&state.registry, &state.connections, state.egress.as_ref()),
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
    page
}

/// One structured line per request: method, route, upstream, status, bytes, duration, cache.
async fn access_log(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let response = next.run(request).await;
    let served = response.extensions().get::<ServedBy>().cloned();
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    state.metrics.record(
        &path,
        response.status().as_u16(),
        served.as_ref(),
        response.extensions().get::<UpstreamFailure>(),
        bytes,
    );
    tracing::info!(
        target: "airlock::access",
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
