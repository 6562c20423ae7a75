//! Credentials go only to the configured upstream, never to other hosts an index names, a
//! redirect leads to, or a plain-http token realm on another host; refused targets send
//! nothing at all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use airlock_config::Config;
use airlock_testkit::{AuthMode, FakeFiles, FakeRegistry};
use airlock_upstream::{Target, Upstream, UpstreamError};
use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use reqwest::Method;
use reqwest::header::HeaderMap;

fn client(upstream: &str, secret_dir: &tempfile::TempDir) -> Upstream {
    let secret = secret_dir.path().join("secret");
    std::fs::write(&secret, "pw").unwrap();
    let text = format!(
        "[[proxy]]\nname = \"p\"\nformat = \"oci\"\nupstream = \"{upstream}\"\nusername = \"u\"\npassword_file = {:?}\n",
        secret.display().to_string()
    );
    let config = Config::from_toml_str(&text, "test").unwrap();
    Upstream::new(&config.proxies[0], None).unwrap()
}

/// Serves `app` on loopback for the rest of the test.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A host that counts every request and every `Authorization` header it is sent, and
/// answers 401 with `challenge`.
async fn challenging_host(challenge: String) -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    let (requests, authorized) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (r, a) = (requests.clone(), authorized.clone());
    let app = Router::new().fallback(move |request: Request| {
        let (r, a, challenge) = (r.clone(), a.clone(), challenge.clone());
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            if request.headers().contains_key(header::AUTHORIZATION) {
                a.fetch_add(1, Ordering::SeqCst);
            }
            let mut response: Response = StatusCode::UNAUTHORIZED.into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge.parse().unwrap());
            response
        }
    });
    (serve(app).await, requests, authorized)
}

#[tokio::test]
async fn basic_credentials_and_tokens_stay_with_the_upstream() {
    let upstream = FakeRegistry::start(AuthMode::Basic {
        username: "u".into(),
        password: "pw".into(),
    })
    .await;
    let elsewhere = FakeFiles::start().await;
    elsewhere.put("file.whl", "application/octet-stream", b"wheel");
    let dir = tempfile::tempdir().unwrap();
    let client = client(&upstream.url(), &dir);
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
}

#[tokio::test]
async fn a_401_from_a_host_a_redirect_led_to_is_not_answered() {
    // The stranger's challenge names a token realm on itself over https: answering it would
    // hand it the credentials.
    let (stranger, requests, authorized) =
        challenging_host("Bearer realm=\"https://127.0.0.1:9/token\",service=\"x\"".into()).await;
    let app = Router::new().fallback(move || async move {
        let mut response: Response = StatusCode::FOUND.into_response();
        response.headers_mut().insert(
            header::LOCATION,
            format!("http://{stranger}/blob").parse().unwrap(),
        );
        response
    });
    let upstream = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&format!("http://{upstream}/"), &dir);
    let response = client
        .send(Method::GET, "v2/x/blobs/sha256:ab", HeaderMap::new(), "")
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "the 401 goes back as it is");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    assert_eq!(authorized.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn credentials_never_go_to_a_plain_http_realm_on_another_host() {
    let (realm, _, realm_authorized) = challenging_host("Basic realm=\"x\"".into()).await;
    let (upstream, _, _) = challenging_host(format!(
        "Bearer realm=\"http://{realm}/token\",service=\"registry\""
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&format!("http://{upstream}/"), &dir);
    let error = client
        .send(Method::GET, "v2/", HeaderMap::new(), "repository:x:pull")
        .await
        .unwrap_err();
    assert!(
        matches!(error, UpstreamError::BadChallenge { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("plain http"), "{error}");
    assert_eq!(realm_authorized.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn refused_targets_send_nothing() {
    let canary = FakeFiles::start().await;
    canary.put("secret", "text/plain", b"s3cret");
    let upstream = FakeFiles::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&upstream.url(), &dir);
    let canary_addr = canary
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    for path in [
        format!("http:{canary_addr}/secret"),
        format!("//{canary_addr}/secret"),
        "../secret".to_owned(),
        "a/%2e%2e/%2e%2e/secret".to_owned(),
        "..;/secret".to_owned(),
    ] {
        let error = client
            .send(Method::GET, path.as_str(), HeaderMap::new(), "")
            .await
            .unwrap_err();
        assert!(
            matches!(error, UpstreamError::PathRefused { .. }),
            "{path}: {error}"
        );
    }
    assert_eq!(canary.count("secret"), 0);
    assert_eq!(upstream.count("secret"), 0);
}
