//! The console's login and the admin API over loopback HTTP, one test binary: every
//! mutating endpoint refuses without credentials (401), refuses a session request without
//! or with a wrong CSRF token and a cross-site form post (403), and works with them; the
//! login form's token, rate limit and cookie attributes; logout; `[ui] anonymous_read`;
//! items, purge, pins across a restart, prefetch jobs, and hostile input.

mod access;
mod cache;
#[path = "../common/mod.rs"]
mod common;
mod forms;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use airlock_config::Config;
use airlock_gateway::Gateway;
use airlock_testkit::http::client;
use airlock_testkit::{AuthMode, FakeFiles, FakeRegistry, Image};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "s3cret-pw";

/// A gateway serving until `stop`.
struct Running {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the gateway stops")
            .unwrap();
    }
}

fn config_text(dir: &Path, tables: &str) -> String {
    let hash = airlock_config::hash_password(PASSWORD.as_bytes()).unwrap();
    format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n[admin]\nusers = [{{ name = \"admin\", password_hash = \"{hash}\" }}]\n{tables}",
        dir.join("data").display().to_string()
    )
}

async fn start(dir: &Path, tables: &str) -> Running {
    let config = Config::from_toml_str(&config_text(dir, tables), "test").unwrap();
    let gateway = Gateway::bind(config).await.unwrap();
    let addr = gateway.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        gateway
            .serve(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running { addr, stop, task }
}

fn proxies(registry: &str, files: &str) -> String {
    format!(
        "[[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{registry}\"\n[[proxy]]\nname = \"files\"\nformat = \"raw\"\nupstream = \"{files}base/\"\n"
    )
}

/// A logged-in console session: the cookie and its CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

/// The `name=value` of a `Set-Cookie` header named `name`, and the whole header.
fn set_cookie(response: &Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_owned(), v.to_owned()))
}

/// The login form's token and cookie.
async fn login_form(gateway: &Running) -> (String, String) {
    let response = client().get(gateway.url("/ui/login")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (cookie, _) = set_cookie(&response, "airlock_login").expect("a login cookie");
    let token = cookie.split_once('=').unwrap().1.to_owned();
    let page = response.text().await.unwrap();
    assert!(
        page.contains(&format!("name=\"csrf\" value=\"{token}\"")),
        "{page}"
    );
    (cookie, token)
}

async fn post_login(gateway: &Running, cookie: &str, token: &str, password: &str) -> Response {
    client()
        .post(gateway.url("/ui/login"))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("user=admin&password={password}&csrf={token}"))
        .send()
        .await
        .unwrap()
}

async fn log_in(gateway: &Running) -> Session {
    let (cookie, token) = login_form(gateway).await;
    let response = post_login(gateway, &cookie, &token, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (cookie, _) = set_cookie(&response, "airlock_session").expect("a session cookie");
    let session: Value = client()
        .get(gateway.url("/api/v1/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["user"], "admin");
    Session {
        cookie,
        csrf: session["csrf"].as_str().unwrap().to_owned(),
    }
}

/// How a mutation is sent in the matrix below.
#[derive(Debug, Clone, Copy)]
enum As {
    Nobody,
    SessionWithoutToken,
    SessionWrongToken,
    /// The session cookie on a cross-site form post without the token (what a browser
    /// without `SameSite` would send).
    CrossSiteForm,
    BasicForm,
    BasicCrossSite,
    Session,
    Basic,
}

fn request(
    gateway: &Running,
    session: &Session,
    method: &Method,
    path: &str,
    body: Option<&Value>,
    how: As,
) -> RequestBuilder {
    let mut request = client().request(method.clone(), gateway.url(path));
    let form = matches!(how, As::CrossSiteForm | As::BasicForm);
    if form {
        request = request
            .header("content-type", "application/x-www-form-urlencoded")
            .body("reference=x");
    } else if let Some(body) = body {
        request = request.json(body);
    }
    match how {
        As::Nobody => request,
        As::SessionWithoutToken => request.header("cookie", &session.cookie),
        As::CrossSiteForm => request
            .header("cookie", &session.cookie)
            .header("sec-fetch-site", "cross-site"),
        As::SessionWrongToken => request
            .header("cookie", &session.cookie)
            .header("x-csrf-token", "not-the-token"),
        As::Session => request
            .header("cookie", &session.cookie)
            .header("x-csrf-token", &session.csrf),
        As::BasicCrossSite => request
            .basic_auth("admin", Some(PASSWORD))
            .header("sec-fetch-site", "cross-site"),
        As::Basic | As::BasicForm => request.basic_auth("admin", Some(PASSWORD)),
    }
}
