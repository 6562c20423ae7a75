//! The console's login and logout: a plain server-rendered form (no script, no external
//! asset), protected by a double-submit token; the same failed-login limit as HTTP basic
//! auth; a session cookie on success.
//!
//! ```text
//! GET  /ui/login    the form, and a fresh airlock_login cookie whose value it repeats
//! POST /ui/login    user, password, csrf → 303 to /ui/ with airlock_session set
//! POST /ui/logout   csrf (the session's) → 303 to /ui/login, session ended
//! GET  /api/v1/session   who the request is logged in as, and the session's CSRF token
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::response::{Html, IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::ApiError;
use super::session::{
    AdminForm, LOGIN_COOKIE, SESSION_COOKIE, Viewer, cookie, random_token, same_secret, set_cookie,
};
use crate::AppState;

/// How long a login form may stay open before it must be reloaded.
const LOGIN_FORM_AGE: Duration = Duration::from_secs(3600);

/// The login form's fields.
#[derive(Debug, serde::Deserialize)]
pub(super) struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

/// The form page with a fresh double-submit token, and `message` above the form.
fn form_page(status: StatusCode, message: Option<&str>) -> Response {
    let token = random_token();
    let body = maud::html! {
        @if let Some(message) = message {
            p.bad role="alert" { (message) }
        }
        form.stack method="post" action="/ui/login" {
            input type="hidden" name="csrf" value=(token);
            p { label for="user" { "User" } input id="user" name="user" autocomplete="username" required; }
            p { label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required; }
            p { button type="submit" { "Log in" } }
        }
    };
    let page = crate::console::page::page("Log in", "", &Viewer::default(), &body).into_string();
    let mut response = (status, Html(page)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&set_cookie(
        LOGIN_COOKIE,
        &token,
        "/ui/login",
        Some(LOGIN_FORM_AGE),
    )) {
        headers.append(header::SET_COOKIE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /ui/login`.
pub(super) async fn show() -> Response {
    form_page(StatusCode::OK, None)
}

/// `POST /ui/login`.
pub(super) async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return form_page(
            StatusCode::BAD_REQUEST,
            Some("The form needs a user, a password and its token."),
        );
    };
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !same_secret(&form.csrf, expected) {
        tracing::warn!(target: "airlock::admin", client = %peer.ip(), "login form refused: its token does not match the login cookie");
        return form_page(
            StatusCode::FORBIDDEN,
            Some("This form expired or was not sent by this site: log in again."),
        );
    }
    let Some(logins) = &state.logins else {
        return form_page(
            StatusCode::NOT_FOUND,
            Some("This gateway has no admin users."),
        );
    };
    let name = form.user.clone();
    let checked = logins.check(peer.ip(), form.user, form.password).await;
    if let Err(e) = &checked {
        state.audit_login(&name, peer.ip(), Some(&e.reason()));
    }
    match checked {
        Ok(user) => {
            let (id, _) = state.sessions.create(&user);
            tracing::info!(target: "airlock::admin", %user, client = %peer.ip(), "console login");
            state.audit_login(&user, peer.ip(), None);
            let mut response = (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, HeaderValue::from_static("/ui/"))],
            )
                .into_response();
            let headers = response.headers_mut();
            for value in [
                set_cookie(SESSION_COOKIE, &id, "/", None),
                set_cookie(LOGIN_COOKIE, "", "/ui/login", Some(Duration::ZERO)),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(ApiError::TooManyFailures { retry_after }) => {
            let mut response = form_page(
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "Too many failed logins from this address: try again in {retry_after} s."
                )),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            response
        }
        Err(ApiError::Unauthorized(_)) => form_page(
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password."),
        ),
        Err(e) => e.into_response(),
    }
}

/// `POST /ui/logout`: the form carries only the session's `csrf`.
pub(super) async fn logout(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: AdminForm<std::collections::HashMap<String, String>>,
) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        state.sessions.remove(id);
    }
    tracing::info!(target: "airlock::admin", user = form.admin.user, client = %peer.ip(), "console logout");
    state.audit_admin(&form.admin.user, peer, "logout", "");
    let mut response = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static("/ui/login"))],
    )
        .into_response();
    if let Ok(value) =
        HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", "/", Some(Duration::ZERO)))
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `GET /api/v1/session`: the user the request is logged in as (`null` for an anonymous
/// reader), and the session's CSRF token for a script to repeat in `X-CSRF-Token`.
pub(super) async fn session(viewer: Viewer) -> Response {
    axum::Json(serde_json::json!({
        "user": viewer.user,
        "csrf": viewer.csrf,
        "can_mutate": viewer.can_mutate(),
    }))
    .into_response()
}
