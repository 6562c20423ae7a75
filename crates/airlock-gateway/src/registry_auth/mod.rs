//! Docker token authentication for the registry's hosted projects. Where it matters (a
//! hosted project's paths, the catalog, the API root once hosted projects exist) the
//! `Authorization: Bearer` token is checked and its grants passed to the registry as a
//! [`Caller`]; the registry decides, and its refusals carry a Bearer challenge to which
//! this layer adds the realm: `/service/token` on the address the client used
//! ([`endpoint`]). Tokens are JWTs this gateway signs ([`token`]).
//!
//! Basic credentials are taken at the token endpoint only: a registry request with them
//! gets the challenge, as from a registry that serves tokens (every client that speaks
//! the token protocol follows it).

mod endpoint;
pub(crate) mod token;

use std::sync::Arc;

use airlock_registry::{Caller, Challenge, RegistryError};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::AppState;
pub(crate) use endpoint::token as token_endpoint;

pub(crate) async fn caller(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !state.registry.wants_caller(request.uri().path()) {
        return next.run(request).await;
    }
    let realm = realm(&state, request.headers());
    let response = match establish(&state, request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    };
    with_realm(response, &realm)
}

/// The caller a request's `Authorization` names.
fn establish(state: &AppState, headers: &HeaderMap) -> Result<Caller, RegistryError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Caller::Anonymous);
    };
    let value = value.to_str().unwrap_or_default().trim();
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return state
            .tokens
            .verify(credentials.trim())
            .map(Caller::Token)
            .map_err(|bad| RegistryError::LoginRequired {
                why: bad.to_string(),
                challenge: Challenge {
                    scope: None,
                    error: Some("invalid_token"),
                },
            });
    }
    Err(RegistryError::LoginRequired {
        why: "this registry takes Bearer tokens: get one from /service/token with these \
              credentials (docker login and skopeo login do)"
            .into(),
        challenge: Challenge::default(),
    })
}

/// Where clients get tokens: `/service/token` on the host and scheme the request came in
/// on (a `Host` that is not a plain authority falls back to the configured hostname).
fn realm(state: &AppState, headers: &HeaderMap) -> String {
    let scheme = if state.config.tls.mode == airlock_config::TlsMode::Off {
        "http"
    } else {
        "https"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.parse::<http::uri::Authority>().is_ok() && !h.contains(['"', '@', '\\']))
        .map_or_else(
            || {
                format!(
                    "{}:{}",
                    state.config.server.hostname,
                    state.config.server.listen.port()
                )
            },
            str::to_owned,
        );
    format!("{scheme}://{host}/service/token")
}

/// A 401's Bearer challenge with the realm put first, as clients expect.
fn with_realm(mut response: Response, realm: &str) -> Response {
    if response.status() != StatusCode::UNAUTHORIZED {
        return response;
    }
    let headers = response.headers_mut();
    let rest = headers
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|rest| !rest.contains("realm="))
        .map(str::to_owned);
    if let Some(rest) = rest {
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer realm=\"{realm}\",{rest}")) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
    }
    response
}
