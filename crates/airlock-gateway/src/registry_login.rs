//! Who is asking the registry: for the paths where it matters (hosted projects, the
//! catalog, the API root once hosted projects exist), HTTP basic credentials are checked
//! against the `[admin]` users — with the admin API's limit on failed logins and its
//! audit records — and passed to the registry as a [`Caller`]. The registry decides what
//! a caller may do.
//!
//! Docker token auth (`/service/token`, scoped JWTs) and `[[robot]]` accounts come next;
//! they replace this check, not the registry's decisions.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use airlock_registry::{Caller, RegistryError};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::admin::{ApiError, basic_credentials};

pub(crate) async fn caller(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !state.registry.wants_caller(request.uri().path()) {
        return next.run(request).await;
    }
    // Read before the first await: a request (its body) is not `Sync`.
    let credentials = basic_credentials(request.headers());
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip());
    match login(&state, credentials, client).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

async fn login(
    state: &AppState,
    credentials: Option<(String, String)>,
    client: IpAddr,
) -> Result<Caller, RegistryError> {
    // containers/image answers a basic challenge with empty credentials when it has none.
    let Some((user, password)) = credentials.filter(|(user, _)| !user.is_empty()) else {
        return Ok(Caller::Anonymous);
    };
    let Some(logins) = &state.logins else {
        return Err(RegistryError::LoginRequired(
            "this gateway has no [admin] users to log in as".into(),
        ));
    };
    match logins.check(client, user.clone(), password).await {
        Ok(user) => Ok(Caller::User(user)),
        Err(error) => {
            state.audit_login(&user, client, Some(&error.reason()));
            Err(match error {
                ApiError::Unauthorized(why) => RegistryError::LoginRequired(why.to_owned()),
                ApiError::TooManyFailures { retry_after } => {
                    RegistryError::LoginThrottled { retry_after }
                }
                other => RegistryError::Internal(other.reason()),
            })
        }
    }
}
