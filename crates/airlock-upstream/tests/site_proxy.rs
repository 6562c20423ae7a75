//! Through the site's outbound proxy the upstream rules still hold: credentials go only to
//! the configured upstream, a 401 from a host a redirect led to is not answered, and the
//! proxy (a real tinyproxy) carries every request, the foreign ones included.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use airlock_config::Config;
use airlock_testkit::tinyproxy::Tinyproxy;
use airlock_testkit::{AuthMode, FakeFiles, FakeRegistry};
use airlock_upstream::{SiteProxy, Target, Upstream};
use axum::Router;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use reqwest::Method;
use reqwest::header::HeaderMap;

const PROXY_PASSWORD: &str = "site-proxy-pw";

/// An upstream client with credentials `u`/`pw` for `upstream`, through `proxy`, which
/// wants the site's credentials when `proxy_auth`.
fn client(
    upstream: &str,
    proxy: &Tinyproxy,
    proxy_auth: bool,
    dir: &tempfile::TempDir,
) -> Upstream {
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "pw").unwrap();
    let proxy_secret = dir.path().join("proxy-secret");
    std::fs::write(&proxy_secret, PROXY_PASSWORD).unwrap();
    let auth = if proxy_auth {
        format!(
            "username = \"site\"\npassword_file = {:?}\n",
            proxy_secret.display().to_string()
        )
    } else {
        String::new()
    };
    let text = format!(
        "[[proxy]]\nname = \"p\"\nformat = \"oci\"\nupstream = \"{upstream}\"\nusername = \"u\"\npassword_file = {:?}\n\
         [upstream_proxy]\nurl = \"{}\"\n{auth}",
        secret.display().to_string(),
        proxy.url(),
    );
    let config = Config::from_toml_str(&text, "test").unwrap();
    let site = SiteProxy::load(config.upstream_proxy.as_ref().unwrap()).unwrap();
    Upstream::new(&config.proxies[0], Some(&site)).unwrap()
}

#[tokio::test]
async fn credentials_stay_with_the_upstream_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start(&dir.path().join("proxy"), Some(("site", PROXY_PASSWORD)));
    let upstream = FakeRegistry::start(AuthMode::Basic {
        username: "u".into(),
        password: "pw".into(),
    })
    .await;
    let elsewhere = FakeFiles::start().await;
    elsewhere.put("file.whl", "application/octet-stream", b"wheel");
    let client = client(&upstream.url(), &proxy, true, &dir);
    let own = client
        .send(Method::GET, "v2/", HeaderMap::new(), "")
        .await
        .unwrap();
    assert_eq!(
        own.status(),
        200,
        "the upstream itself gets the credentials"
    );
    let foreign = Target::Url(format!("{}file.whl", elsewhere.url()));
    let other = client
        .send(Method::GET, foreign, HeaderMap::new(), "")
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(
        elsewhere.authorized_requests(),
        0,
        "another host never sees them"
    );
    let through = proxy.requests();
    assert!(
        through
            .iter()
            .any(|r| r.starts_with(&format!("GET {}file.whl ", elsewhere.url()))),
        "{through:#?}"
    );
    assert!(
        through
            .iter()
            .any(|r| r.starts_with(&format!("GET {}/v2/ ", upstream.url()))),
        "{through:#?}"
    );
}

#[tokio::test]
async fn a_redirect_to_a_stranger_through_the_proxy_gets_no_credentials() {
    // A proxy without authentication: reqwest drops `Proxy-Authorization` from a plain-http
    // request that a redirect sent to another origin (see the README).
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start(&dir.path().join("proxy"), None);
    let (requests, authorized) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (r, a) = (requests.clone(), authorized.clone());
    let stranger = Router::new().fallback(move |request: axum::extract::Request| {
        let (r, a) = (r.clone(), a.clone());
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            if request.headers().contains_key(header::AUTHORIZATION) {
                a.fetch_add(1, Ordering::SeqCst);
            }
            let mut response: Response = StatusCode::UNAUTHORIZED.into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"stranger\"".parse().unwrap(),
            );
            response
        }
    });
    let stranger = serve(stranger).await;
    let origin = Router::new().fallback(move || async move {
        let mut response: Response = StatusCode::FOUND.into_response();
        response.headers_mut().insert(
            header::LOCATION,
            format!("http://{stranger}/blob").parse().unwrap(),
        );
        response
    });
    let origin = serve(origin).await;
    let client = client(&format!("http://{origin}/"), &proxy, false, &dir);
    let response = client
        .send(Method::GET, "v2/x/blobs/sha256:ab", HeaderMap::new(), "")
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "the stranger's 401 goes back as it is"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    assert_eq!(authorized.load(Ordering::SeqCst), 0);
    let through = proxy.requests();
    assert!(
        through
            .iter()
            .any(|r| r.starts_with(&format!("GET http://{stranger}/blob "))),
        "the redirect was followed through the proxy too: {through:#?}"
    );
}

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}
