//! The console's login and the admin API over loopback HTTP: every mutating endpoint
//! refuses without credentials (401), refuses a session request without or with a wrong
//! CSRF token and a cross-site form post (403), and works with them; the login form's
//! token, rate limit and cookie attributes; logout; `[ui] anonymous_read`; items, purge,
//! pins across a restart, prefetch jobs, and hostile input.

mod common;

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
    /// without SameSite would send).
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
        As::BasicForm => request.basic_auth("admin", Some(PASSWORD)),
        As::BasicCrossSite => request
            .basic_auth("admin", Some(PASSWORD))
            .header("sec-fetch-site", "cross-site"),
        As::Basic => request.basic_auth("admin", Some(PASSWORD)),
    }
}

#[tokio::test]
async fn every_mutation_needs_a_login_and_its_csrf_token() {
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[1000, 2000]);
    registry.push_image("library/alpine", "3.19", &image);
    registry.push_image("library/alpine", "3.20", &image);
    let files = FakeFiles::start().await;
    files.put("base/a.txt", "text/plain", b"a file");
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), &proxies(&registry.url(), &files.url())).await;
    let session = log_in(&gateway).await;
    // Cache two tags to purge.
    for tag in ["3.19", "3.20"] {
        let response =
            common::get(&gateway.url(&format!("/v2/hub/library/alpine/manifests/{tag}"))).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    let pin = json!({ "reference": "hub/library/alpine:3.19" });
    let prefetch =
        json!({ "references": ["hub/library/alpine:3.19"], "urls": ["/repository/files/a.txt"] });
    // (method, path, body, status with a session, status with basic)
    let mutations: Vec<(Method, String, Option<Value>, StatusCode, StatusCode)> = vec![
        (
            Method::POST,
            "/api/v1/pins".into(),
            Some(pin.clone()),
            StatusCode::CREATED,
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            "/api/v1/pins/hub/library/alpine:3.19".into(),
            None,
            StatusCode::NO_CONTENT,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            "/api/v1/proxies/hub/items/library/alpine:3.19".into(),
            None,
            StatusCode::OK,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/api/v1/prefetch".into(),
            Some(prefetch.clone()),
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
        ),
    ];
    for (method, path, body, with_session, with_basic) in &mutations {
        for (how, expected) in [
            (As::Nobody, StatusCode::UNAUTHORIZED),
            (As::SessionWithoutToken, StatusCode::FORBIDDEN),
            (As::SessionWrongToken, StatusCode::FORBIDDEN),
            (As::CrossSiteForm, StatusCode::FORBIDDEN),
            (As::BasicForm, StatusCode::FORBIDDEN),
            (As::BasicCrossSite, StatusCode::FORBIDDEN),
            (As::Session, *with_session),
            (As::Basic, *with_basic),
        ] {
            let response = request(&gateway, &session, method, path, body.as_ref(), how)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            assert_eq!(status, expected, "{method} {path} as {how:?}: {text}");
            if !status.is_success() {
                let error: Value = serde_json::from_str(&text).unwrap();
                assert!(
                    error["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{text}"
                );
            }
        }
    }
    // The bundle import is a mutation too.
    for (how, expected) in [
        (As::Nobody, StatusCode::UNAUTHORIZED),
        (As::SessionWithoutToken, StatusCode::FORBIDDEN),
        (As::SessionWrongToken, StatusCode::FORBIDDEN),
        (As::CrossSiteForm, StatusCode::FORBIDDEN),
        (As::BasicForm, StatusCode::FORBIDDEN),
        (As::BasicCrossSite, StatusCode::FORBIDDEN),
    ] {
        let response = request(
            &gateway,
            &session,
            &Method::POST,
            "/api/v1/bundles/import?allow_unsigned=true",
            None,
            how,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), expected, "import as {how:?}");
    }
    // The other tag is still listed; the purged one is not.
    let items: Value = request(
        &gateway,
        &session,
        &Method::GET,
        "/api/v1/proxies/hub/items",
        None,
        As::Session,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let names: Vec<&str> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"library/alpine:3.20"), "{items}");

    // Each change is in the audit trail with the user and client; a login too.
    let trail: Value = client()
        .get(gateway.url("/api/v1/audit?kind=admin&client=127.0.0.1&since=1h"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = trail["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["item"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("pin", "hub/library/alpine:3.19"),
            ("pin", "hub/library/alpine:3.19"),
            ("unpin", "hub/library/alpine:3.19"),
            ("purge", "hub/library/alpine:3.19"),
            (
                "prefetch",
                "hub/library/alpine:3.19 /repository/files/a.txt"
            ),
            (
                "prefetch",
                "hub/library/alpine:3.19 /repository/files/a.txt"
            ),
        ],
        "{trail}"
    );
    assert!(
        trail["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["user"] == "admin")
    );
    let logins: Value = client()
        .get(gateway.url("/api/v1/audit?kind=login"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(logins["records"][0]["result"], "ok", "{logins}");
    let bad = client()
        .get(gateway.url("/api/v1/audit?since=yesterday"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // Logout is a form post with the session's token; without it, 403.
    for (how, expected) in [
        (As::Nobody, StatusCode::UNAUTHORIZED),
        (As::SessionWithoutToken, StatusCode::FORBIDDEN),
        (As::SessionWrongToken, StatusCode::FORBIDDEN),
        (As::BasicForm, StatusCode::FORBIDDEN),
    ] {
        let response = request(&gateway, &session, &Method::POST, "/ui/logout", None, how)
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "logout as {how:?}");
    }
    let response = client()
        .post(gateway.url("/ui/logout"))
        .header("cookie", &session.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", session.csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/ui/login");
    let (_, cleared) = set_cookie(&response, "airlock_session").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The session is gone: its cookie no longer logs in.
    let response = request(
        &gateway,
        &session,
        &Method::GET,
        "/api/v1/session",
        None,
        As::Session,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = request(
        &gateway,
        &session,
        &Method::POST,
        "/api/v1/pins",
        Some(&pin),
        As::Session,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    gateway.stop().await;
}

#[tokio::test]
async fn the_login_form_is_protected_rate_limited_and_sets_strict_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), "").await;
    let page = client().get(gateway.url("/ui/login")).send().await.unwrap();
    let (_, login_cookie) = set_cookie(&page, "airlock_login").unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui/login"] {
        assert!(login_cookie.contains(attribute), "{login_cookie}");
    }
    let html = page.text().await.unwrap();
    for needle in [
        "<label for=\"user\">",
        "<label for=\"password\">",
        "type=\"password\"",
        "method=\"post\"",
    ] {
        assert!(html.contains(needle), "{needle}: {html}");
    }
    assert!(
        !html.contains("<script") && !html.contains("http"),
        "no script, no external asset: {html}"
    );

    // Without the login cookie, or with a token that is not its value: 403.
    let (cookie, token) = login_form(&gateway).await;
    let response = post_login(&gateway, "", &token, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = post_login(&gateway, &cookie, "forged", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // The page names no asset, so a 403 page is the whole answer.

    // The right password: a session cookie with every attribute.
    let response = post_login(&gateway, &cookie, &token, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (session, attributes) = set_cookie(&response, "airlock_session").unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    let id = session.split_once('=').unwrap().1;
    assert_eq!(id.len(), 43, "256 bits, base64url: {id}");

    // Wrong passwords: 401 until the limit, then 429 for the form and for basic auth alike,
    // the right password included.
    for _ in 0..5 {
        let response = post_login(&gateway, &cookie, &token, "wrong").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = post_login(&gateway, &cookie, &token, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let response = client()
        .get(gateway.url("/api/v1/proxies"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // A session made before still works.
    let response = client()
        .get(gateway.url("/api/v1/proxies"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    gateway.stop().await;
}

#[tokio::test]
async fn anonymous_read_opens_reads_never_changes() {
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let files = FakeFiles::start().await;
    for (anonymous, read) in [(false, StatusCode::UNAUTHORIZED), (true, StatusCode::OK)] {
        let dir = tempfile::tempdir().unwrap();
        let tables = format!(
            "[ui]\nanonymous_read = {anonymous}\n{}",
            proxies(&registry.url(), &files.url())
        );
        let gateway = start(dir.path(), &tables).await;
        for path in [
            "/api/v1/proxies",
            "/api/v1/proxies/hub/items",
            "/api/v1/pins",
            "/api/v1/session",
        ] {
            let response = client().get(gateway.url(path)).send().await.unwrap();
            assert_eq!(
                response.status(),
                read,
                "{path} with anonymous_read = {anonymous}"
            );
        }
        let response = client()
            .post(gateway.url("/api/v1/pins"))
            .json(&json!({ "reference": "hub/library/alpine:3.19" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        gateway.stop().await;
    }
}

#[tokio::test]
async fn hostile_and_malformed_requests_get_clear_json_errors() {
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let files = FakeFiles::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), &proxies(&registry.url(), &files.url())).await;
    let basic = |method: Method, path: &str| {
        client()
            .request(method, gateway.url(path))
            .basic_auth("admin", Some(PASSWORD))
    };
    let cases: Vec<(RequestBuilder, StatusCode, &str)> = vec![
        (
            basic(Method::GET, "/api/v1/proxies/nope/items"),
            StatusCode::NOT_FOUND,
            "no proxy is named",
        ),
        (
            basic(Method::DELETE, "/api/v1/proxies/nope/items/a:b"),
            StatusCode::NOT_FOUND,
            "no proxy is named",
        ),
        (
            basic(
                Method::DELETE,
                "/api/v1/proxies/files/items/..%2F..%2Fetc%2Fpasswd",
            ),
            StatusCode::BAD_REQUEST,
            "'..'",
        ),
        (
            basic(Method::DELETE, "/api/v1/proxies/files/items/a%5Cb"),
            StatusCode::BAD_REQUEST,
            "backslash",
        ),
        (
            basic(Method::DELETE, "/api/v1/proxies/hub/items/library/alpine"),
            StatusCode::BAD_REQUEST,
            "REPO:TAG",
        ),
        (
            basic(
                Method::DELETE,
                "/api/v1/proxies/hub/items/library/alpine:9.9",
            ),
            StatusCode::NOT_FOUND,
            "holds no item",
        ),
        (
            basic(Method::GET, "/api/v1/proxies/hub/items?limit=0"),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            basic(Method::GET, "/api/v1/proxies/hub/items?bogus=1"),
            StatusCode::BAD_REQUEST,
            "bogus",
        ),
        (
            basic(Method::POST, "/api/v1/pins").json(&json!({ "reference": "not a reference" })),
            StatusCode::BAD_REQUEST,
            "not an image reference",
        ),
        (
            basic(Method::POST, "/api/v1/pins").json(&json!({ "reference": "alpine" })),
            StatusCode::BAD_REQUEST,
            "names no registry",
        ),
        (
            basic(Method::POST, "/api/v1/pins").json(&json!({ "reference": "quay.io/x/y:1" })),
            StatusCode::NOT_FOUND,
            "quay.io",
        ),
        (
            basic(Method::POST, "/api/v1/pins").json(&json!({ "ref": "hub/a:1" })),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            basic(Method::POST, "/api/v1/pins")
                .header("content-type", "application/octet-stream")
                .body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "JSON",
        ),
        (
            basic(Method::POST, "/api/v1/pins")
                .header("content-type", "application/json")
                .body("x".repeat(300 * 1024)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "over",
        ),
        (
            basic(Method::DELETE, "/api/v1/pins/hub/library/alpine:3.19"),
            StatusCode::NOT_FOUND,
            "not pinned",
        ),
        (
            basic(Method::POST, "/api/v1/prefetch").json(&json!({})),
            StatusCode::BAD_REQUEST,
            "1 to 500",
        ),
        (
            basic(Method::POST, "/api/v1/prefetch")
                .json(&json!({ "urls": ["/repository/files/../../etc/passwd"] })),
            StatusCode::BAD_REQUEST,
            "'..'",
        ),
        (
            basic(Method::POST, "/api/v1/prefetch")
                .json(&json!({ "urls": ["file:///etc/passwd"] })),
            StatusCode::BAD_REQUEST,
            "not http",
        ),
        (
            basic(Method::POST, "/api/v1/prefetch")
                .json(&json!({ "urls": ["http://x/repository/nope/a"] })),
            StatusCode::BAD_REQUEST,
            "no package proxy",
        ),
        (
            basic(Method::POST, "/api/v1/prefetch")
                .json(&json!({ "references": ["hub/Bad Name:1"] })),
            StatusCode::BAD_REQUEST,
            "not an image reference",
        ),
        (
            basic(Method::GET, "/api/v1/jobs/12345"),
            StatusCode::NOT_FOUND,
            "no job",
        ),
        (
            basic(Method::GET, "/api/v1/jobs/..%2F1"),
            StatusCode::NOT_FOUND,
            "no job",
        ),
    ];
    for (request, status, says) in cases {
        let response = request.send().await.unwrap();
        let got = response.status();
        let url = response.url().to_string();
        let text = response.text().await.unwrap();
        assert_eq!(got, status, "{url}: {text}");
        let error: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{url}: not JSON: {text}"));
        assert!(
            error["error"].as_str().unwrap().contains(says),
            "{url}: {text}"
        );
    }
    gateway.stop().await;
}

/// Polls a job until every item finished (bounded).
async fn wait_for_job(gateway: &Running, job: u64) -> Value {
    for _ in 0..300 {
        let status: Value = client()
            .get(gateway.url(&format!("/api/v1/jobs/{job}")))
            .basic_auth("admin", Some(PASSWORD))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["state"] != "running" {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job} did not finish in 30 s");
}

async fn start_job(gateway: &Running, body: &Value) -> u64 {
    let response = client()
        .post(gateway.url("/api/v1/prefetch"))
        .basic_auth("admin", Some(PASSWORD))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json::<Value>().await.unwrap()["job"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn prefetch_lists_pins_and_purge_work_on_what_is_cached() {
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[3000, 5000]);
    registry.push_image("library/alpine", "3.19", &image);
    let files = FakeFiles::start().await;
    files.put("base/dir/a.txt", "text/plain", b"a file");
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), &proxies(&registry.url(), &files.url())).await;

    let job = start_job(
        &gateway,
        &json!({
            "references": ["hub/library/alpine:3.19", "hub/library/missing:1"],
            "urls": ["http://gateway.example/repository/files/dir/a.txt"],
        }),
    )
    .await;
    let status = wait_for_job(&gateway, job).await;
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(status["done"], 2, "{status}");
    let items = status["items"].as_array().unwrap();
    assert_eq!(items[0]["state"], "done");
    let image_bytes =
        (image.manifest.len() + image.blobs().iter().map(|b| b.len()).sum::<usize>()) as u64;
    assert_eq!(items[0]["bytes"], image_bytes, "{status}");
    assert_eq!(items[1]["state"], "failed");
    assert!(
        items[1]["error"].as_str().unwrap().contains("404"),
        "{status}"
    );
    assert_eq!(items[2]["bytes"], 6);

    let get = |path: &str| {
        client()
            .get(gateway.url(path))
            .basic_auth("admin", Some(PASSWORD))
    };
    // The image is listed with its size, the file with its own.
    let listed: Value = get("/api/v1/proxies/hub/items?q=alpine")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["items"][0]["name"], "library/alpine:3.19",
        "{listed}"
    );
    assert_eq!(listed["items"][0]["size"], image_bytes, "{listed}");
    assert_eq!(listed["items"][0]["digest"], image.digest.to_string());
    let none: Value = get("/api/v1/proxies/hub/items?q=postgres")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["items"], json!([]));
    let listed: Value = get("/api/v1/proxies/files/items")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["name"], "dir/a.txt", "{listed}");
    assert_eq!(listed["items"][0]["size"], 6);
    let proxies: Value = get("/api/v1/proxies")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hub = &proxies["proxies"][0];
    assert_eq!(hub["name"], "hub");
    assert_eq!(hub["size"], image_bytes, "{proxies}");
    assert_eq!(hub["items"], 1);
    assert!(
        hub["health"]["upstream_errors"].as_u64().is_some(),
        "{proxies}"
    );

    // Pages: one item each, the cursor leads on.
    registry.push_image("library/alpine", "3.20", &image);
    assert_eq!(
        common::get(&gateway.url("/v2/hub/library/alpine/manifests/3.20"))
            .await
            .status(),
        StatusCode::OK
    );
    let first: Value = get("/api/v1/proxies/hub/items?limit=1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"][0]["name"], "library/alpine:3.19", "{first}");
    let cursor = first["next"].as_str().unwrap();
    let second: Value = get(&format!(
        "/api/v1/proxies/hub/items?limit=1&cursor={cursor}"
    ))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        second["items"][0]["name"], "library/alpine:3.20",
        "{second}"
    );
    assert_eq!(second["next"], Value::Null);

    // Purge the file: gone from the list, fetched again on the next request.
    let before = files.count("base/dir/a.txt");
    let response = client()
        .delete(gateway.url("/api/v1/proxies/files/items/dir/a.txt"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let listed: Value = get("/api/v1/proxies/files/items")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"], json!([]));
    assert_eq!(
        common::get(&gateway.url("/repository/files/dir/a.txt"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(files.count("base/dir/a.txt"), before + 1);

    // Purging one tag leaves the other tag's blobs (the same image) served.
    let response = client()
        .delete(gateway.url("/api/v1/proxies/hub/items/library/alpine:3.19"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(registry);
    for blob in image.blobs() {
        let digest = airlock_types::Digest::of(blob);
        let response =
            common::get(&gateway.url(&format!("/v2/hub/library/alpine/blobs/{digest}"))).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    gateway.stop().await;
}

#[tokio::test]
async fn runtime_pins_survive_a_restart() {
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let files = FakeFiles::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tables = format!(
        "[cache]\npin = [\"hub/library/postgres:15\"]\n{}",
        proxies(&registry.url(), &files.url())
    );
    let gateway = start(dir.path(), &tables).await;
    let pin = |reference: &str| {
        client()
            .post(gateway.url("/api/v1/pins"))
            .basic_auth("admin", Some(PASSWORD))
            .json(&json!({ "reference": reference }))
            .send()
    };
    assert_eq!(
        pin("hub/library/alpine:3.19").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        pin("hub/library/alpine:3.19").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        pin("hub/library/busybox:1").await.unwrap().status(),
        StatusCode::CREATED
    );
    let response = client()
        .delete(gateway.url("/api/v1/pins/hub/library/busybox:1"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // A configuration pin cannot be removed at run time.
    let response = client()
        .delete(gateway.url("/api/v1/pins/hub/library/postgres:15"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    gateway.stop().await;

    let gateway = start(dir.path(), &tables).await;
    let pins: Value = client()
        .get(gateway.url("/api/v1/pins"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        pins["runtime"],
        json!(["hub/library/alpine:3.19"]),
        "{pins}"
    );
    assert_eq!(pins["config"], json!(["hub/library/postgres:15"]), "{pins}");
    gateway.stop().await;
}

/// A prefetch of a multi-platform image from a real `docker-registry` upstream, then every
/// manifest and blob served with that upstream stopped.
#[tokio::test]
async fn a_prefetched_image_is_served_with_the_upstream_stopped() {
    let skopeo = airlock_testkit::require_tool("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let upstream = airlock_testkit::DockerRegistry::start(dir.path());
    let platform = |arch| airlock_testkit::Platform { os: "linux", arch };
    let index = airlock_testkit::Index::new(vec![
        (
            platform("amd64"),
            Image::from_layers(vec![b"amd64 layer".repeat(500)], platform("amd64")),
        ),
        (
            platform("arm64"),
            Image::from_layers(vec![b"arm64 layer".repeat(700)], platform("arm64")),
        ),
    ]);
    let layout = dir.path().join("layout");
    index.write_oci_layout(&layout, "1.0").unwrap();
    let pushed = tokio::process::Command::new(&skopeo)
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1.0", layout.display()))
        .arg(format!("docker://127.0.0.1:{}/team/app:1.0", upstream.port))
        .output()
        .await
        .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let files = FakeFiles::start().await;
    let gateway = start(
        &dir.path().join("gateway"),
        &proxies(&upstream.url().trim_end_matches('/'), &files.url()),
    )
    .await;
    let job = start_job(&gateway, &json!({ "references": ["hub/team/app:1.0"] })).await;
    let status = wait_for_job(&gateway, job).await;
    assert_eq!(status["state"], "done", "{status}");
    // Everything the image is, read back with the upstream stopped: skopeo recompressed
    // the layers on push, so the upstream's manifests say what the image is now.
    drop(upstream);
    let base = gateway.url("/v2/hub/team/app");
    // What docker and containerd accept: every manifest kind.
    let accept = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    let response = common::get_accepting(&format!("{base}/manifests/1.0"), Some(accept)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let top = response.bytes().await.unwrap();
    let mut served = top.len();
    let top: Value = serde_json::from_slice(&top).unwrap();
    let children = top["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2, "{top}");
    for child in children {
        let digest = child["digest"].as_str().unwrap();
        let response = common::get(&format!("{base}/manifests/{digest}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let manifest = response.bytes().await.unwrap();
        served += manifest.len();
        let manifest: Value = serde_json::from_slice(&manifest).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        for blob in std::iter::once(&manifest["config"]).chain(layers) {
            let digest: airlock_types::Digest = blob["digest"].as_str().unwrap().parse().unwrap();
            let response = common::get(&format!("{base}/blobs/{digest}")).await;
            assert_eq!(response.status(), StatusCode::OK, "{digest}");
            let bytes = response.bytes().await.unwrap();
            assert_eq!(airlock_types::Digest::of(&bytes), digest);
            served += bytes.len();
        }
    }
    assert_eq!(status["bytes"], served as u64, "{status}");
    gateway.stop().await;
}
