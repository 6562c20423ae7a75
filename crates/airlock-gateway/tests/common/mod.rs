//! Helpers shared by the gateway's integration tests.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airlock_config::Config;
use airlock_gateway::Gateway;

/// Starts a gateway on a free loopback port, plain HTTP, its data under `dir/data`, with
/// the given `[[proxy]]` tables; it runs until the test ends.
pub async fn start(dir: &Path, proxies: &str) -> SocketAddr {
    start_with_packages(dir, proxies).await.0
}

/// [`start`], also handing back the gateway's package proxies (for their derived-cache
/// statistics).
pub async fn start_with_packages(
    dir: &Path,
    proxies: &str,
) -> (SocketAddr, Arc<airlock_packages::Packages>) {
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n{proxies}",
        dir.join("data").display().to_string()
    );
    let config = Config::from_toml_str(&text, "test").expect("test config is valid");
    let gateway = Gateway::bind(config).await.expect("gateway binds");
    let addr = gateway.local_addr();
    let packages = gateway.packages();
    tokio::spawn(gateway.serve(std::future::pending()));
    (addr, packages)
}

/// A GET with a fresh client: no proxy from the environment, a 30 s bound.
pub async fn get(url: &str) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    client.get(url).send().await.unwrap()
}

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
