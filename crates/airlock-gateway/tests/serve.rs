//! The gateway's own surface around the registry: status endpoints, self-signed TLS with
//! HTTP/2 and HTTP/1.1, the metrics of OCI pulls, and the egress proxy started by `serve`.
//! (The registry's behaviour is tested in airlock-registry against the registry alone.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use airlock_config::Config;
use airlock_gateway::Gateway;
use airlock_testkit::{AuthMode, FakeRegistry, Fault, Image};
use airlock_types::Digest;

use common::get;

/// A gateway that runs until the test ends.
struct Running {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn start_running(proxies: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let addr = common::start(dir.path(), proxies).await;
    Running { addr, _dir: dir }
}

fn hub(upstream: &FakeRegistry, extra: &str) -> String {
    format!(
        "[[proxy]]\nname = \"dockerhub-proxy\"\nformat = \"oci\"\nupstream = \"{}\"\nhost = \"docker.io\"\n{extra}\n",
        upstream.url()
    )
}

fn proxy(upstream: &str, extra: &str) -> String {
    format!(
        "[[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{upstream}\"\nhost = \"docker.io\"\n{extra}\n"
    )
}

#[tokio::test]
async fn base_endpoint_and_status_endpoints() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let gw = start_running(&hub(&upstream, "")).await;
    let response = get(&gw.url("/v2/")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    assert_eq!(get(&gw.url("/healthz")).await.status(), 200);
    let health: serde_json::Value = get(&gw.url("/api/v2.0/health")).await.json().await.unwrap();
    assert_eq!(health["status"], "healthy");
    let info: serde_json::Value = get(&gw.url("/api/v2.0/systeminfo"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        info["harbor_version"]
            .as_str()
            .unwrap()
            .starts_with("airlock-")
    );
    assert_eq!(
        get(&gw.url("/ca.crt")).await.status(),
        404,
        "tls off: no generated CA"
    );
    assert_eq!(
        upstream.total_requests(),
        0,
        "nothing here needs the upstream"
    );
}

#[tokio::test]
async fn self_signed_tls_serves_http2_and_http1_to_clients_trusting_ca_crt() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[10]);
    upstream.push_image("library/tls", "1", &image);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\nhostname = \"localhost\"\n[tls]\nmode = \"self-signed\"\n{}",
        dir.path(),
        hub(&upstream, "")
    );
    let gateway = Gateway::bind(Config::from_toml_str(&text, "test").unwrap())
        .await
        .unwrap();
    let ca = gateway
        .ca_pem()
        .expect("self-signed mode has a CA")
        .to_owned();
    let port = gateway.local_addr().port();
    tokio::spawn(gateway.serve(std::future::pending()));
    let root = reqwest::Certificate::from_pem(ca.as_bytes()).unwrap();
    let url = format!("https://localhost:{port}/v2/dockerhub-proxy/library/tls/manifests/1");
    for (client, version) in [
        (
            reqwest::Client::builder().add_root_certificate(root.clone()),
            reqwest::Version::HTTP_2,
        ),
        (
            reqwest::Client::builder()
                .add_root_certificate(root.clone())
                .http1_only(),
            reqwest::Version::HTTP_11,
        ),
    ] {
        let client = client.no_proxy().build().unwrap();
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.bytes().await.unwrap(), image.manifest);
    }
    let served_ca = reqwest::Client::builder()
        .add_root_certificate(root)
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("https://localhost:{port}/ca.crt"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served_ca, ca);
    let untrusting = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        untrusting.get(&url).send().await.is_err(),
        "a client without the CA refuses the certificate"
    );
}

#[tokio::test]
async fn metrics_count_requests_cache_results_and_upstream_errors() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[1000]);
    upstream.push_image("library/m", "1", &image);
    let dir = tempfile::tempdir().unwrap();
    let addr = common::start(dir.path(), &proxy(&upstream.url(), "")).await;
    let blob = format!(
        "http://{addr}/v2/hub/library/m/blobs/{}",
        Digest::of(&image.layers[0])
    );
    get(&blob).await.bytes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    get(&blob).await.bytes().await.unwrap();
    upstream.fault("/manifests/broken", Fault::Status(503));
    get(&format!("http://{addr}/v2/hub/library/m/manifests/broken")).await;
    let metrics = get(&format!("http://{addr}/metrics"))
        .await
        .text()
        .await
        .unwrap();
    for line in [
        "airlock_http_requests_total{route=\"blob\",status=\"200\"} 2",
        "airlock_http_requests_total{route=\"manifest\",status=\"502\"} 1",
        "airlock_cache_requests_total{proxy=\"hub\",result=\"hit\"} 1",
        "airlock_cache_requests_total{proxy=\"hub\",result=\"miss\"} 1",
        "airlock_cache_served_bytes_total 1000",
        "airlock_upstream_fetched_bytes_total 1000",
        "airlock_upstream_downloads_total{result=\"started\"} 1",
        "airlock_upstream_errors_total{proxy=\"hub\"} 1",
        "airlock_downloads_in_flight 0",
        "airlock_store_bytes 1000",
        "# TYPE airlock_evicted_blobs_total counter",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn egress_proxy_runs_inside_serve_and_reports_metrics() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n\
         [egress]\nlisten = \"127.0.0.1:0\"\nallow = [\"login.example.org\"]\n",
        dir.path()
    );
    let gateway = Gateway::bind(Config::from_toml_str(&text, "test").unwrap())
        .await
        .unwrap();
    let (http, egress) = (
        gateway.local_addr(),
        gateway.egress_addr().expect("egress listens"),
    );
    tokio::spawn(gateway.serve(std::future::pending()));
    let mut stream = tokio::net::TcpStream::connect(egress).await.unwrap();
    stream
        .write_all(b"CONNECT evil.example.net:443 HTTP/1.1\r\nHost: evil.example.net:443\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let metrics = get(&format!("http://{http}/metrics"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("airlock_egress"),
        "egress metrics are exported:\n{metrics}"
    );
}
