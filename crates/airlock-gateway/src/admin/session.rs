//! Console sessions, and who a request acts as.
//!
//! A login (the form at `/ui/login`) makes a session: a random 256-bit id in the cookie
//! `airlock_session` (`HttpOnly; Secure; SameSite=Strict; Path=/`), kept server-side in a
//! bounded table keyed by the id's SHA-256 (a lookup by hash, so no comparison of the id
//! itself can leak it through timing), with an idle and an absolute expiry. Each session has
//! a CSRF token; a state-changing request made with the session cookie must carry it, in the
//! form field `csrf` or the header `X-CSRF-Token`, or it is refused with 403. The login form
//! itself is protected by a double-submit token: a random value in the cookie
//! `airlock_login` (scoped to `/ui/login`) that the form must repeat.
//!
//! HTTP basic auth is accepted as well. Browsers replay cached basic credentials on any
//! request to the host, a cross-site form post included, so a state-changing request
//! authenticated by basic auth is refused when `Sec-Fetch-Site` says `cross-site` or
//! `same-site`, and when its body is of a type an HTML form can send.
//!
//! The extractors: [`Viewer`] for pages and `GET` endpoints (a login, or nobody when
//! `[ui] anonymous_read = true`), [`Admin`] for JSON mutations, and [`AdminForm`] for
//! server-rendered form posts. A page handler takes a `Viewer`, shows its forms only when
//! [`Viewer::can_mutate`], and embeds `viewer.csrf` in each as
//! `<input type="hidden" name="csrf" value="…">`; the handler the form posts to takes an
//! `AdminForm<Fields>`, which checks that field before `Fields` is read. Without a login, `/api/v1/` and form posts answer 401 JSON
//! and pages under `/ui/` redirect to the login form.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use http::request::Parts;
use http::{HeaderMap, HeaderName, header};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use super::ApiError;
use crate::AppState;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "airlock_session";
/// The login form's double-submit cookie.
pub(crate) const LOGIN_COOKIE: &str = "airlock_login";
/// The header a JSON client repeats the session's CSRF token in.
pub(crate) const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");
/// A session unused this long ends.
pub(crate) const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after the login, however busy.
pub(crate) const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most; past this, the one unused longest ends.
const MAX_SESSIONS: usize = 1024;

/// One logged-in browser.
#[derive(Debug)]
struct Session {
    user: String,
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// The server-side session table.
#[derive(Debug)]
pub(crate) struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    absolute: Duration,
}

/// A live session as a request sees it.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub user: String,
    pub csrf: String,
}

impl Sessions {
    pub(crate) fn new(idle: Duration, absolute: Duration) -> Self {
        Self {
            table: Mutex::default(),
            idle,
            absolute,
        }
    }

    /// A new session for `user`: its id (the cookie value) and CSRF token.
    pub(crate) fn create(&self, user: &str) -> (String, String) {
        let id = random_token();
        let csrf = random_token();
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if table.len() >= MAX_SESSIONS {
            table.retain(|_, s| self.live(s, now));
        }
        if table.len() >= MAX_SESSIONS {
            let stalest = table
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(key, _)| *key);
            if let Some(key) = stalest {
                table.remove(&key);
            }
        }
        table.insert(
            key_of(&id),
            Session {
                user: user.to_owned(),
                csrf: csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        (id, csrf)
    }

    /// The live session `id` names, marked as used now; an expired one is removed.
    pub(crate) fn get(&self, id: &str) -> Option<Found> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<Found> {
        let key = key_of(id);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let session = table.get_mut(&key)?;
        if !self.live(session, now) {
            table.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(Found {
            user: session.user.clone(),
            csrf: session.csrf.clone(),
        })
    }

    /// Ends the session `id` names; `false` when there was none.
    pub(crate) fn remove(&self, id: &str) -> bool {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key_of(id))
            .is_some()
    }

    fn live(&self, session: &Session, now: Instant) -> bool {
        now.saturating_duration_since(session.last_seen) < self.idle
            && now.saturating_duration_since(session.created) < self.absolute
    }
}

/// 256 random bits from the operating system, base64url without padding.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn key_of(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value with the attributes every airlock cookie has.
pub(crate) fn set_cookie(name: &str, value: &str, path: &str, max_age: Option<Duration>) -> String {
    let age = max_age.map_or(String::new(), |a| format!("; Max-Age={}", a.as_secs()));
    format!("{name}={value}; HttpOnly; Secure; SameSite=Strict; Path={path}{age}")
}

/// A refusal, answered as JSON under `/api/` and as a redirect to the login form under
/// `/ui/` when the request had no login.
#[derive(Debug)]
pub(crate) struct Refused {
    error: ApiError,
    page: bool,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        if self.page && matches!(self.error, ApiError::Unauthorized(_)) {
            return Redirect::to("/ui/login").into_response();
        }
        self.error.into_response()
    }
}

/// How a request logged in.
#[derive(Debug, Clone)]
enum Login {
    Session(Found),
    Basic(String),
}

/// The request's login: a live session cookie first, else HTTP basic (rate-limited);
/// `None` when it carries neither.
async fn login(state: &AppState, parts: &Parts) -> Result<Option<Login>, ApiError> {
    if let Some(found) =
        cookie(&parts.headers, SESSION_COOKIE).and_then(|id| state.sessions.get(id))
    {
        return Ok(Some(Login::Session(found)));
    }
    if !parts.headers.contains_key(header::AUTHORIZATION) {
        return Ok(None);
    }
    let Some(logins) = &state.logins else {
        return Err(ApiError::Unauthorized("this gateway has no [admin] users"));
    };
    let client = client_ip(parts);
    match logins.authenticate(client, &parts.headers).await {
        Ok(user) => Ok(Some(Login::Basic(user))),
        Err(e) => {
            let user = super::auth::basic_credentials(&parts.headers).map(|(user, _)| user);
            state.audit_login(user.as_deref().unwrap_or(""), client, Some(&e.reason()));
            Err(e)
        }
    }
}

fn client_ip(parts: &Parts) -> std::net::IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip())
}

/// A page under `/ui/` is answered without a login by a redirect to the form; a form post
/// there, like everything under `/api/v1/`, by the error itself.
fn refused(parts: &Parts, error: ApiError) -> Refused {
    Refused {
        error,
        page: parts.uri.path().starts_with("/ui/")
            && matches!(parts.method, http::Method::GET | http::Method::HEAD),
    }
}

/// Who reads a page or a `GET` endpoint: a logged-in admin, or nobody when
/// `[ui] anonymous_read = true`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Viewer {
    /// The admin's name; `None` for an anonymous reader.
    pub user: Option<String>,
    /// The session's CSRF token, for the forms a page embeds; `None` without a session
    /// (forms then need a console login before they work).
    pub csrf: Option<String>,
}

impl Viewer {
    /// Whether this reader may change anything (pin, purge, prefetch, log out).
    pub(crate) fn can_mutate(&self) -> bool {
        self.user.is_some()
    }
}

impl<S> FromRequestParts<S> for Viewer
where
    Arc<AppState>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refused> {
        let state = Arc::<AppState>::from_ref(state);
        match login(&state, parts).await.map_err(|e| refused(parts, e))? {
            Some(Login::Session(found)) => Ok(Self {
                user: Some(found.user),
                csrf: Some(found.csrf),
            }),
            Some(Login::Basic(user)) => Ok(Self {
                user: Some(user),
                csrf: None,
            }),
            None if state.config.ui.anonymous_read => Ok(Self {
                user: None,
                csrf: None,
            }),
            None => Err(refused(
                parts,
                ApiError::Unauthorized(
                    "this needs an admin login (HTTP basic auth or a console session)",
                ),
            )),
        }
    }
}

/// An admin allowed to change something: the CSRF and cross-site checks passed.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub user: String,
    /// The session's CSRF token; `None` when the request used HTTP basic auth.
    #[allow(dead_code, reason = "for the console pages a form post renders")]
    pub csrf: Option<String>,
}

/// Whether a body of this `Content-Type` is one an HTML form can send cross-site without
/// a CORS preflight.
fn form_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
    ) || value.to_str().is_err()
}

fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.eq_ignore_ascii_case("cross-site") || v.eq_ignore_ascii_case("same-site")
        })
}

/// The checks every state-changing request passes; `form_csrf` is the `csrf` field of a
/// form body, when the request has one.
async fn authorize(
    state: &AppState,
    parts: &Parts,
    form_csrf: Option<&str>,
) -> Result<Admin, ApiError> {
    match login(state, parts).await? {
        Some(Login::Session(found)) => {
            let sent = parts
                .headers
                .get(&CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .or(form_csrf);
            match sent {
                Some(sent) if same_secret(sent, &found.csrf) => Ok(Admin {
                    user: found.user,
                    csrf: Some(found.csrf),
                }),
                Some(_) => Err(ApiError::Forbidden(
                    "the CSRF token is wrong: reload the page (the session may have been renewed)".to_owned(),
                )),
                None => Err(ApiError::Forbidden(
                    "a change made with the session cookie needs the session's CSRF token (form field csrf or header X-CSRF-Token)".to_owned(),
                )),
            }
        }
        Some(Login::Basic(user)) => {
            if cross_site(&parts.headers) {
                return Err(ApiError::Forbidden(
                    "a change authenticated by HTTP basic auth is refused from another site (Sec-Fetch-Site)".to_owned(),
                ));
            }
            if form_csrf.is_some() || form_content_type(&parts.headers) {
                return Err(ApiError::Forbidden(
                    "a change authenticated by HTTP basic auth must not be a form post: send JSON, or log in to the console"
                        .to_owned(),
                ));
            }
            Ok(Admin { user, csrf: None })
        }
        None => Err(ApiError::Unauthorized(
            "this needs an admin login (HTTP basic auth or a console session)",
        )),
    }
}

impl<S> FromRequestParts<S> for Admin
where
    Arc<AppState>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refused> {
        let state = Arc::<AppState>::from_ref(state);
        authorize(&state, parts, None)
            .await
            .map_err(|e| refused(parts, e))
    }
}

/// A server-rendered form post by an admin: the form's fields as `T` and the admin, once
/// the form's `csrf` field (or `X-CSRF-Token`) matched the session's token.
#[derive(Debug)]
pub(crate) struct AdminForm<T> {
    pub admin: Admin,
    #[allow(
        dead_code,
        reason = "logout's form has no field but csrf; the console's forms do"
    )]
    pub form: T,
}

/// The largest form body read.
const MAX_FORM: usize = 64 * 1024;

impl<S, T> FromRequest<S> for AdminForm<T>
where
    Arc<AppState>: FromRef<S>,
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = Refused;

    async fn from_request(request: Request, state: &S) -> Result<Self, Refused> {
        let state = Arc::<AppState>::from_ref(state);
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|e| {
            refused(
                &parts,
                ApiError::BadRequest(format!("the form could not be read: {e}")),
            )
        })?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            refused(
                &parts,
                ApiError::BadRequest(format!("the form is not URL-encoded: {e}")),
            )
        })?;
        let csrf = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map_or("", |(_, v)| v.as_str());
        let admin = authorize(&state, &parts, Some(csrf))
            .await
            .map_err(|e| refused(&parts, e))?;
        let form = serde_urlencoded_fields(&bytes).map_err(|e| refused(&parts, e))?;
        Ok(Self { admin, form })
    }
}

fn serde_urlencoded_fields<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the form's fields are not usable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_and_at_the_absolute_limit() {
        let sessions = Sessions::new(Duration::from_secs(10), Duration::from_secs(25));
        let (id, csrf) = sessions.create("admin");
        let start = Instant::now();
        let found = sessions.get_at(&id, start).unwrap();
        assert_eq!(
            (found.user.as_str(), found.csrf.as_str()),
            ("admin", csrf.as_str())
        );
        // Used every 8 s: idle never reached, but the absolute limit is.
        assert!(
            sessions
                .get_at(&id, start + Duration::from_secs(8))
                .is_some()
        );
        assert!(
            sessions
                .get_at(&id, start + Duration::from_secs(16))
                .is_some()
        );
        assert!(
            sessions
                .get_at(&id, start + Duration::from_secs(24))
                .is_some()
        );
        assert!(
            sessions
                .get_at(&id, start + Duration::from_secs(26))
                .is_none()
        );
        // Gone for good once expired.
        assert!(sessions.get_at(&id, start).is_none());

        let (id, _) = sessions.create("admin");
        let start = Instant::now();
        assert!(
            sessions
                .get_at(&id, start + Duration::from_secs(11))
                .is_none()
        );
        assert!(sessions.get_at("not-a-session", start).is_none());
    }

    #[test]
    fn ids_and_tokens_are_random_and_the_table_is_bounded() {
        let sessions = Sessions::new(IDLE, ABSOLUTE);
        let (first, first_csrf) = sessions.create("a");
        assert_eq!(first.len(), 43, "256 bits in base64url");
        assert_ne!(first, first_csrf);
        for _ in 0..MAX_SESSIONS {
            sessions.create("b");
        }
        assert_eq!(sessions.table.lock().unwrap().len(), MAX_SESSIONS);
        // The one unused longest went.
        assert!(sessions.get(&first).is_none());
        assert!(!sessions.remove(&first));
    }

    #[test]
    fn cookies_and_secrets() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; airlock_session=xyz".parse().unwrap());
        headers.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "airlock"), None);
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert_eq!(
            set_cookie(SESSION_COOKIE, "v", "/", None),
            "airlock_session=v; HttpOnly; Secure; SameSite=Strict; Path=/"
        );
    }

    #[test]
    fn pages_redirect_to_the_login_and_everything_else_answers_401() {
        let answer = |method: &str, path: &str| {
            let (parts, ()) = http::Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap()
                .into_parts();
            refused(&parts, ApiError::Unauthorized("x")).into_response()
        };
        let page = answer("GET", "/ui/proxies");
        assert_eq!(page.status(), http::StatusCode::SEE_OTHER);
        assert_eq!(page.headers()[header::LOCATION], "/ui/login");
        assert_eq!(
            answer("POST", "/ui/pins").status(),
            http::StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            answer("GET", "/api/v1/proxies").status(),
            http::StatusCode::UNAUTHORIZED
        );
        // A logged-in request refused for another reason is not sent to the login form.
        let (parts, ()) = http::Request::builder()
            .uri("/ui/x")
            .body(())
            .unwrap()
            .into_parts();
        let forbidden = refused(&parts, ApiError::Forbidden("no".to_owned())).into_response();
        assert_eq!(forbidden.status(), http::StatusCode::FORBIDDEN);
    }

    #[test]
    fn form_types_and_fetch_sites() {
        let mut headers = HeaderMap::new();
        assert!(!form_content_type(&headers));
        for (value, form) in [
            ("application/json", false),
            ("application/octet-stream", false),
            ("application/x-www-form-urlencoded", true),
            ("Multipart/Form-Data; boundary=x", true),
            ("text/plain;charset=UTF-8", true),
        ] {
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(form_content_type(&headers), form, "{value}");
        }
        for (value, cross) in [
            ("same-origin", false),
            ("none", false),
            ("cross-site", true),
            ("same-site", true),
        ] {
            headers.insert("sec-fetch-site", value.parse().unwrap());
            assert_eq!(cross_site(&headers), cross, "{value}");
        }
    }
}
