//! HTTP clients for integration tests: no proxy from the environment, a 30 s bound, and a
//! hand-written GET for paths a client library would normalize.

use std::net::SocketAddr;
use std::time::Duration;

/// A client with no proxy from the environment, no redirects followed (tests look at them),
/// and a 30 s bound.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A GET with a fresh client that follows redirects: no proxy from the environment, a 30 s
/// bound.
pub async fn get(url: &str) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    client.get(url).send().await.unwrap()
}

/// A GET with [`client`], sending `Accept: accept` when given.
pub async fn get_accepting(url: &str, accept: Option<&str>) -> reqwest::Response {
    let mut request = client().get(url);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    request.send().await.unwrap()
}

/// A GET written by hand on a raw socket, returning the whole answer: an HTTP client
/// library would normalize away the dot segments and encodings these tests send.
pub async fn raw_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}
