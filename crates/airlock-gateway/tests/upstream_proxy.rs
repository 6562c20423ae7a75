//! `[upstream_proxy]`: a staging node behind the site's outbound proxy. A real forward
//! proxy (tinyproxy, with Basic authentication) logs every request it carries, so each test
//! can tell what went through it and what went direct.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use airlock_config::Config;
use airlock_gateway::Gateway;
use airlock_testkit::tinyproxy::Tinyproxy;
use airlock_testkit::{AuthMode, FakeFiles, FakeRegistry, Image};

use common::{client, get};

const USER: &str = "airlock";
const PASSWORD: &str = "pr0xy-pa55word";

/// Every tracing event of this test binary, as text, so a test can look for secrets in it.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<String>>);

impl Logs {
    /// The one subscriber of this binary, installed on first use.
    fn installed() -> Self {
        static LOGS: OnceLock<Logs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
            logs
        })
        .clone()
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The `[upstream_proxy]` table for `proxy_url` with the test credentials (written to a
/// file under `dir`) and the given extra keys.
fn table(dir: &std::path::Path, proxy_url: &str, extra: &str) -> String {
    let secret = dir.join("proxy.password");
    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    format!(
        "[upstream_proxy]\nurl = \"{proxy_url}\"\nusername = \"{USER}\"\npassword_file = {:?}\n{extra}\n",
        secret.display().to_string()
    )
}

async fn gateway(dir: &std::path::Path, body: &str) -> SocketAddr {
    common::start(dir, body).await
}

#[tokio::test]
async fn pulls_go_through_the_proxy_and_no_proxy_hosts_go_direct() {
    let logs = Logs::installed();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start(&dir.path().join("proxy"), Some((USER, PASSWORD)));
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[2048]);
    registry.push_image("library/app", "1", &image);
    let files = FakeFiles::start().await;
    files.put("k3s", "application/octet-stream", b"direct bytes");
    // The same loopback servers, told apart by how their URL names them: `localhost` is in
    // `no_proxy`, `127.0.0.1` is not (loopback gets no exception of its own).
    let direct_url = files.url().replace("127.0.0.1", "localhost");
    let body = format!(
        "[[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{}\"\n\
         [[proxy]]\nname = \"files\"\nformat = \"raw\"\nupstream = \"{direct_url}\"\n{}",
        registry.url(),
        table(dir.path(), &proxy.url(), "no_proxy = [\"localhost\"]")
    );
    let addr = gateway(dir.path(), &body).await;

    let manifest = get(&format!("http://{addr}/v2/hub/library/app/manifests/1")).await;
    assert_eq!(manifest.status(), 200);
    assert_eq!(manifest.bytes().await.unwrap(), image.manifest);
    let layer = &image.layers[0];
    let digest = airlock_types::Digest::of(layer);
    let blob = get(&format!("http://{addr}/v2/hub/library/app/blobs/{digest}")).await;
    assert_eq!(blob.status(), 200);
    assert_eq!(blob.bytes().await.unwrap(), layer.as_slice());
    let raw = get(&format!("http://{addr}/repository/files/k3s")).await;
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.bytes().await.unwrap(), b"direct bytes".as_slice());

    let through = proxy.requests();
    let upstream = registry.url();
    assert!(
        through
            .iter()
            .any(|r| r.starts_with(&format!("GET {upstream}/v2/library/app/manifests/1 "))),
        "the manifest went through the proxy: {through:#?}"
    );
    assert!(
        through
            .iter()
            .any(|r| r.starts_with(&format!("GET {upstream}/v2/library/app/blobs/{digest} "))),
        "the blob went through the proxy: {through:#?}"
    );
    let direct_port = files
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    assert!(
        !proxy.log().contains(&format!(":{direct_port}")),
        "the no_proxy upstream never reached the proxy: {through:#?}"
    );
    assert_eq!(files.count("k3s"), 1, "it was fetched directly");
    assert!(
        !logs.text().contains(PASSWORD),
        "the proxy password is never logged"
    );
}

#[tokio::test]
async fn https_upstreams_are_tunnelled_and_the_proxy_ca_is_trusted() {
    Logs::installed();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start(&dir.path().join("proxy"), Some((USER, PASSWORD)));
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[512]);
    registry.push_image("library/tls", "2", &image);
    // An https origin: another gateway with a self-signed certificate. Its CA is trusted
    // only through `[upstream_proxy] ca_file`, as a TLS-intercepting proxy's would be.
    let origin_dir = dir.path().join("origin");
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\nhostname = \"localhost\"\nextra_names = [\"127.0.0.1\"]\n[tls]\nmode = \"self-signed\"\n\
         [[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{}\"\n",
        origin_dir.display().to_string(),
        registry.url()
    );
    let origin = Gateway::bind(Config::from_toml_str(&text, "origin").unwrap())
        .await
        .unwrap();
    let ca = dir.path().join("intercepting-ca.pem");
    std::fs::write(&ca, origin.ca_pem().unwrap()).unwrap();
    let origin_port = origin.local_addr().port();
    tokio::spawn(origin.serve(std::future::pending()));

    let body = format!(
        "[[proxy]]\nname = \"edge\"\nformat = \"oci\"\nupstream = \"https://127.0.0.1:{origin_port}\"\n{}",
        table(
            dir.path(),
            &proxy.url(),
            &format!("ca_file = {:?}", ca.display().to_string())
        )
    );
    let edge = gateway(&dir.path().join("edge"), &body).await;
    let response = get(&format!(
        "http://{edge}/v2/edge/hub/library/tls/manifests/2"
    ))
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), image.manifest);
    let through = proxy.requests();
    assert!(
        through
            .iter()
            .any(|r| r.starts_with(&format!("CONNECT 127.0.0.1:{origin_port} "))),
        "the https upstream was reached through a CONNECT tunnel: {through:#?}"
    );
}

#[tokio::test]
async fn a_proxy_that_is_down_is_a_prompt_502_naming_it_without_its_password() {
    let logs = Logs::installed();
    let dir = tempfile::tempdir().unwrap();
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    registry.push_image("library/app", "1", &Image::random(&[16]));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = closed.local_addr().unwrap();
    drop(closed);
    let body = format!(
        "[[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{}\"\nconnect_timeout = \"5s\"\n{}",
        registry.url(),
        table(dir.path(), &format!("http://{down}"), "")
    );
    let addr = gateway(dir.path(), &body).await;
    let started = std::time::Instant::now();
    let response = client()
        .get(format!("http://{addr}/v2/hub/library/app/manifests/1"))
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(response.status(), 502);
    let text = response.text().await.unwrap();
    assert!(text.contains("UNAVAILABLE"), "{text}");
    assert!(
        text.contains("unreachable") && text.to_lowercase().contains("connect"),
        "the reason is given: {text}"
    );
    assert!(
        text.contains(&format!("through the upstream proxy http://{down}/")),
        "the proxy is named: {text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    assert_eq!(
        registry.total_requests(),
        0,
        "nothing went around the proxy"
    );
    assert!(
        !logs.text().contains(PASSWORD),
        "the proxy password is never logged"
    );
}

#[tokio::test]
async fn wrong_proxy_credentials_are_refused_by_the_proxy_not_leaked() {
    let logs = Logs::installed();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start(&dir.path().join("proxy"), Some((USER, "another-password")));
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    registry.push_image("library/app", "1", &Image::random(&[16]));
    let body = format!(
        "[[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{}\"\n{}",
        registry.url(),
        table(dir.path(), &proxy.url(), "")
    );
    let addr = gateway(dir.path(), &body).await;
    let response = get(&format!("http://{addr}/v2/hub/library/app/manifests/1")).await;
    assert!(!response.status().is_success(), "{}", response.status());
    let text = response.text().await.unwrap();
    assert!(!text.contains(PASSWORD), "{text}");
    assert_eq!(
        registry.total_requests(),
        0,
        "the proxy refused to carry it"
    );
    assert!(
        !proxy.requests().is_empty(),
        "the request reached the proxy"
    );
    assert!(!logs.text().contains(PASSWORD));
}

#[tokio::test]
async fn bad_upstream_proxy_settings_stop_the_gateway_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n",
        dir.path().join("data").display().to_string()
    );
    let refused = |extra: &str| {
        Config::from_toml_str(&format!("{base}{extra}"), "airlock.toml")
            .unwrap_err()
            .to_string()
    };
    let message = refused("[upstream_proxy]\nurl = \"proxy.example.edu:3128\"");
    assert!(message.contains("[upstream_proxy] url"), "{message}");
    let message = refused(
        "[upstream_proxy]\nurl = \"http://proxy.example.edu:3128\"\nno_proxy = [\"https://x.example.edu\"]",
    );
    assert!(
        message.starts_with("airlock.toml: [upstream_proxy] no_proxy entry"),
        "{message}"
    );
    let missing = dir.path().join("missing-ca.pem");
    let config = Config::from_toml_str(
        &format!(
            "{base}[upstream_proxy]\nurl = \"http://proxy.example.edu:3128\"\nca_file = {:?}",
            missing.display().to_string()
        ),
        "airlock.toml",
    )
    .unwrap();
    let message = Gateway::bind(config).await.unwrap_err().to_string();
    assert!(
        message.starts_with("[upstream_proxy] cannot read ca_file")
            && message.contains("missing-ca.pem"),
        "{message}"
    );
}

/// The egress proxy of a gateway with `[upstream_proxy]`: a tunnel to an allowed name the
/// staging node cannot resolve goes through the site's proxy, with its credentials.
#[tokio::test]
async fn egress_tunnels_go_through_the_site_proxy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let logs = Logs::installed();
    let dir = tempfile::tempdir().unwrap();
    let idp = "idp.example.test";
    let proxy = Tinyproxy::start_with_hosts(
        &dir.path().join("proxy"),
        Some((USER, PASSWORD)),
        &[(idp, std::net::Ipv4Addr::LOCALHOST.into())],
    );
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let egress_port = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().port()
    };
    gateway(
        dir.path(),
        &format!(
            "[egress]\nlisten = \"127.0.0.1:{egress_port}\"\nallow = [\"{idp}\"]\nports = [{echo_port}]\n{}",
            table(dir.path(), &proxy.url(), "")
        ),
    )
    .await;

    let mut tunnel = tokio::net::TcpStream::connect(("127.0.0.1", egress_port))
        .await
        .unwrap();
    let request = format!("CONNECT {idp}:{echo_port} HTTP/1.1\r\nHost: {idp}:{echo_port}\r\n\r\n");
    tunnel.write_all(request.as_bytes()).await.unwrap();
    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    let mut head = vec![0u8; established.len()];
    tunnel.read_exact(&mut head).await.unwrap();
    assert_eq!(head, established, "{}", String::from_utf8_lossy(&head));
    tunnel.write_all(b"ping through two proxies").await.unwrap();
    let mut echoed = vec![0u8; 24];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"ping through two proxies");
    assert!(
        proxy
            .requests()
            .contains(&format!("CONNECT {idp}:{echo_port} HTTP/1.1")),
        "{:?}",
        proxy.requests()
    );
    assert!(
        !logs.text().contains(PASSWORD),
        "the password is never logged"
    );
}
