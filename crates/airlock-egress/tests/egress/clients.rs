//! Real clients through the proxy: curl and Python's urllib reach a local HTTPS server by
//! an allowed name, and are refused for a name off the list, a port off the list and
//! plain HTTP. A missing client is a test failure that names the package to install.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airlock_egress::StaticResolver;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

use crate::support::{LOOPBACK, Proxy, bounded, config};

pub(crate) const BODY: &str = "hello from the other side of the airlock\n";

/// An HTTPS server for `allowed.test` with its own CA; returns the address and the CA PEM.
async fn https_server() -> (SocketAddr, String) {
    https_server_for("allowed.test").await
}

/// An HTTPS server for `name` with its own CA; returns the address and the CA PEM.
pub(crate) async fn https_server_for(name: &str) -> (SocketAddr, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "airlock egress test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, ca.pem())
}

struct Setup {
    proxy: Proxy,
    https: SocketAddr,
    ca_file: tempfile::NamedTempFile,
}

async fn setup() -> Setup {
    let (https, ca_pem) = https_server().await;
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), ca_pem).unwrap();
    let port = https.port();
    let resolver = StaticResolver::new()
        .with("allowed.test", &[LOOPBACK])
        .with("evil.test", &[LOOPBACK]);
    let proxy = Proxy::start(|_| config(&["allowed.test"], &[port], true), resolver).await;
    Setup {
        proxy,
        https,
        ca_file,
    }
}

/// Run a client with proxy variables from the environment removed, under a time bound.
async fn run(program: &str, package: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(program);
    cmd.args(args).kill_on_drop(true);
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    let output = match tokio::time::timeout(Duration::from_secs(30), cmd.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => panic!(
            "cannot run `{program}` ({err}); this test needs the Debian package `{package}` \
             (apt-get install -y {package})"
        ),
        Err(elapsed) => panic!("`{program}` did not finish: {elapsed}"),
    };
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub(crate) async fn curl(proxy: SocketAddr, ca: &Path, url: &str) -> (bool, String, String) {
    let proxy = format!("http://{proxy}");
    let ca = ca.to_str().unwrap();
    run(
        "curl",
        "curl",
        &[
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--proxy",
            &proxy,
            "--cacert",
            ca,
            "--write-out",
            "\ncode=%{http_code} connect=%{http_connect}",
            url,
        ],
    )
    .await
}

#[tokio::test]
async fn curl_reaches_an_allowed_name_and_nothing_else() {
    bounded(90, async {
        let s = setup().await;
        let port = s.https.port();
        let ca = s.ca_file.path();

        let (ok, out, err) = curl(
            s.proxy.addr,
            ca,
            &format!("https://allowed.test:{port}/hello"),
        )
        .await;
        assert!(ok, "curl through the proxy failed: {err}");
        assert!(out.starts_with(BODY), "{out}");
        assert!(out.contains("code=200 connect=200"), "{out}");

        let (ok, out, err) = curl(s.proxy.addr, ca, &format!("https://evil.test:{port}/")).await;
        assert!(
            !ok && out.contains("connect=403"),
            "name off the list: {out} {err}"
        );

        let (ok, out, err) = curl(s.proxy.addr, ca, "https://allowed.test:8443/").await;
        assert!(!ok && out.contains("connect=403"), "port 8443: {out} {err}");

        // Plain HTTP through a proxy is an absolute-form GET, which is refused.
        let (_, out, err) = curl(s.proxy.addr, ca, &format!("http://allowed.test:{port}/")).await;
        assert!(out.contains("code=405"), "plain HTTP: {out} {err}");
        assert!(out.contains("only CONNECT"), "{out}");

        let mut metrics = String::new();
        s.proxy.policy.metrics().write_prometheus(&mut metrics);
        assert!(metrics.contains("reason=\"allowed\"} 1\n"), "{metrics}");
        s.proxy.stop().await;
    })
    .await;
}

const URLLIB: &str = r"
import ssl, sys, urllib.error, urllib.request
proxy, url, cafile = sys.argv[1:4]
context = ssl.create_default_context(cafile=cafile)
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({'http': proxy, 'https': proxy}),
    urllib.request.HTTPSHandler(context=context),
)
try:
    with opener.open(url, timeout=10) as response:
        print('status', response.status)
        print(response.read().decode(), end='')
except urllib.error.HTTPError as e:
    print('http-error', e.code)
except OSError as e:
    print('os-error', e)
";

async fn urllib(proxy: SocketAddr, ca: &Path, url: &str) -> String {
    let proxy = format!("http://{proxy}");
    let (ok, out, err) = run(
        "python3",
        "python3",
        &["-c", URLLIB, &proxy, url, ca.to_str().unwrap()],
    )
    .await;
    assert!(ok, "python3 failed: {err}");
    out
}

#[tokio::test]
async fn python_urllib_reaches_an_allowed_name_and_nothing_else() {
    bounded(90, async {
        let s = setup().await;
        let port = s.https.port();
        let ca = s.ca_file.path();

        let out = urllib(
            s.proxy.addr,
            ca,
            &format!("https://allowed.test:{port}/hello"),
        )
        .await;
        assert_eq!(out, format!("status 200\n{BODY}"));

        let out = urllib(s.proxy.addr, ca, &format!("https://evil.test:{port}/")).await;
        assert!(
            out.starts_with("os-error") && out.contains("403"),
            "name off the list: {out}"
        );

        let out = urllib(s.proxy.addr, ca, "https://allowed.test:8443/").await;
        assert!(
            out.starts_with("os-error") && out.contains("403"),
            "port 8443: {out}"
        );

        let out = urllib(s.proxy.addr, ca, &format!("http://allowed.test:{port}/")).await;
        assert_eq!(out, "http-error 405\n", "plain HTTP");
        s.proxy.stop().await;
    })
    .await;
}
