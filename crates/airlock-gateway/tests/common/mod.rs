//! Helpers shared by the gateway's integration tests.

// Each test binary uses its own subset of these.
#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::path::Path;

use airlock_config::Config;
use airlock_gateway::Gateway;

pub use airlock_testkit::http::{client, get, get_accepting, raw_get};

/// Starts a gateway on a free loopback port, plain HTTP, its data under `dir/data`, with
/// the given `[[proxy]]` tables; it runs until the test ends.
pub async fn start(dir: &Path, proxies: &str) -> SocketAddr {
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n{proxies}",
        dir.join("data").display().to_string()
    );
    let config = Config::from_toml_str(&text, "test").expect("test config is valid");
    let gateway = Gateway::bind(config).await.expect("gateway binds");
    let addr = gateway.local_addr();
    tokio::spawn(gateway.serve(std::future::pending()));
    addr
}
