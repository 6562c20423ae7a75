//! A token endpoint's answer is read within a bound, whether or not it announces its
//! length.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use airlock_config::Config;
use airlock_upstream::{Upstream, UpstreamError};
use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use http::{StatusCode, header};
use reqwest::Method;
use reqwest::header::HeaderMap;

/// Chunks the endpoint would send at most: 64 MiB.
const CHUNKS: u64 = 1024;
const CHUNK: usize = 64 * 1024;

/// A registry on loopback whose `/v2/` asks for a token from its own `/token`, which
/// streams [`CHUNKS`] chunks of whitespace without a `Content-Length`; returns the address
/// and the number of chunks the endpoint has handed to the connection.
async fn endless_token_endpoint() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let app = Router::new()
        .route(
            "/v2/",
            get(move || async move {
                let mut response: Response = StatusCode::UNAUTHORIZED.into_response();
                let challenge = format!("Bearer realm=\"http://{addr}/token\",service=\"s\"");
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge.parse().unwrap());
                response
            }),
        )
        .route(
            "/token",
            get(move || {
                let counter = counter.clone();
                async move {
                    let chunks = futures_util::stream::iter(0..CHUNKS).map(move |_| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, std::io::Error>(vec![b' '; CHUNK])
                    });
                    Body::from_stream(chunks).into_response()
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, sent)
}

/// Regression: a token response without `Content-Length` was read whole, however large.
#[tokio::test]
async fn a_chunked_token_response_stops_at_the_bound() {
    let (addr, sent) = endless_token_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "pw").unwrap();
    let text = format!(
        "[[proxy]]\nname = \"p\"\nformat = \"oci\"\nupstream = \"http://{addr}\"\nusername = \"u\"\npassword_file = {:?}\n",
        secret.display().to_string()
    );
    let config = Config::from_toml_str(&text, "test").unwrap();
    let client = Upstream::new(&config.proxies[0], None).unwrap();
    let error = client
        .send(Method::GET, "v2/", HeaderMap::new(), "repository:a:pull")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, UpstreamError::BadChallenge { reason, .. } if reason.contains("too large")),
        "{error}"
    );
    // Reading stopped near the 1 MiB bound, not after the endpoint's 64 MiB.
    let chunks = sent.load(Ordering::SeqCst);
    assert!(
        chunks < CHUNKS / 4,
        "{chunks} chunks of {CHUNK} bytes were sent"
    );
}
