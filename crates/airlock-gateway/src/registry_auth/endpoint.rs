//! `GET /service/token`: Docker token authentication's token endpoint. A client that met a
//! Bearer challenge asks here, with HTTP basic credentials of an `[admin]` user or a
//! `[[robot]]` (or none, for an anonymous token), for the scopes it needs
//! (`scope=repository:<name>:pull,push`, repeated); it gets a token for the part of them
//! the account may have. Asking for more than that is not an error: the token grants
//! less, and the registry refuses what it does not grant.
//!
//! Wrong credentials count against the client's failed logins with the admin API's and
//! the console's, and are audited. `OAuth2`'s `POST` form is not served: containerd falls
//! back to this `GET` when the `POST` is refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use airlock_config::{Action, Robot};
use airlock_registry::{Grants, SERVICE};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};

use super::token::parse_action;
use crate::AppState;
use crate::admin::basic_credentials;

/// Scopes read from one request at most.
const MAX_SCOPES: usize = 64;

/// Who logged in.
enum Account {
    Anonymous,
    Admin(String),
    Robot(Robot),
}

impl Account {
    fn subject(&self) -> &str {
        match self {
            Account::Anonymous => "",
            Account::Admin(name) => name,
            Account::Robot(robot) => robot.name(),
        }
    }
}

/// A refusal of the token endpoint: Docker's clients show `details`.
fn refuse(status: StatusCode, why: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "code": "UNAUTHORIZED", "message": why, "detail": null }], "details": why });
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"airlock\""),
        );
    }
    response
}

pub(crate) async fn token(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if let Some((_, service)) = query.iter().find(|(k, _)| k == "service") {
        if service != SERVICE {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("this gateway issues tokens for service {SERVICE:?}, not {service:?}"),
            );
        }
    }
    let scopes: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' '))
        .filter(|s| !s.is_empty())
        .take(MAX_SCOPES)
        .collect();
    let account = match login(&state, peer.ip(), &headers).await {
        Ok(account) => account,
        Err(response) => return response,
    };
    let grants = grant(&state, &account, &scopes);
    let now = airlock_store::unix_now();
    let token = state.tokens.issue(&grants, now);
    let issued_at = i64::try_from(now)
        .ok()
        .and_then(|now| time::OffsetDateTime::from_unix_timestamp(now).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    tracing::debug!(target: "airlock::registry", subject = account.subject(), scopes = scopes.len(), "token issued");
    let mut response = axum::Json(serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": state.tokens.ttl().as_secs(),
        "issued_at": issued_at,
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The account `headers` log in as: anonymous without credentials (or with an empty user
/// name, as some clients send), else an admin user or a robot whose secret matches.
async fn login(state: &AppState, client: IpAddr, headers: &HeaderMap) -> Result<Account, Response> {
    let Some((name, secret)) = basic_credentials(headers).filter(|(name, _)| !name.is_empty())
    else {
        return Ok(Account::Anonymous);
    };
    if let Some(retry_after) = state.failures.blocked(client) {
        let mut response = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("too many failed logins from this address; retry in {retry_after}s"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return Err(response);
    }
    let admins = state.config.admin_users.clone();
    let robots = state.config.robots.clone();
    let user = name.clone();
    // argon2id off the async threads; an unknown name is checked against a real hash too,
    // so timing does not tell which names exist.
    let found = tokio::task::spawn_blocking(move || {
        if let Some(admin) = admins.iter().find(|a| a.name == user) {
            return admin
                .verify(secret.as_bytes())
                .then_some(Account::Admin(user));
        }
        if let Some(robot) = robots.iter().find(|r| r.name() == user) {
            return robot
                .verify(secret.as_bytes())
                .then(|| Account::Robot(robot.clone()));
        }
        if let Some(admin) = admins.first() {
            let _ = admin.verify(secret.as_bytes());
        } else if let Some(robot) = robots.first() {
            let _ = robot.verify(secret.as_bytes());
        }
        None
    })
    .await
    .ok()
    .flatten();
    if let Some(account) = found {
        state.audit_login(&name, client, None);
        return Ok(account);
    }
    state.failures.record(client);
    state.audit_login(&name, client, Some("wrong user name or secret"));
    tracing::warn!(target: "airlock::registry", %client, user = name, "registry login failed: wrong user name or secret");
    Err(refuse(
        StatusCode::UNAUTHORIZED,
        "wrong user name or secret",
    ))
}

/// The part of `scopes` that `account` may have. Repositories of the proxies are open to
/// everyone for pulls; hosted ones follow the account and the project.
fn grant(state: &AppState, account: &Account, scopes: &[&str]) -> Grants {
    let mut grants = Grants {
        subject: account.subject().to_owned(),
        ..Grants::default()
    };
    for scope in scopes {
        let Some((kind, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        // `repository(plugin)` is a repository too.
        match kind.split('(').next().unwrap_or_default() {
            "repository" => {
                for action in actions.split(',') {
                    let wanted: &[Action] = match action {
                        "*" => &[Action::Pull, Action::Push, Action::Delete],
                        other => match parse_action(other) {
                            Some(Action::Pull) => &[Action::Pull],
                            Some(Action::Push) => &[Action::Push],
                            Some(Action::Delete) => &[Action::Delete],
                            None => &[],
                        },
                    };
                    for &action in wanted {
                        if may(state, account, name, action) {
                            grants
                                .repositories
                                .entry(name.to_owned())
                                .or_default()
                                .insert(action);
                        }
                    }
                }
            }
            "registry" if name == "catalog" => {
                grants.catalog |= matches!(account, Account::Admin(_));
            }
            _ => {}
        }
    }
    grants
}

fn may(state: &AppState, account: &Account, name: &str, action: Action) -> bool {
    let Some(project) = state.registry.hosted_project_of(name) else {
        return action == Action::Pull;
    };
    match account {
        Account::Admin(_) => true,
        Account::Robot(robot) => robot.allows(name, action),
        Account::Anonymous => action == Action::Pull && project.anonymous_pull,
    }
}
