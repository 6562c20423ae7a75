//! Through a site's outbound proxy: a real forward proxy (tinyproxy) between the egress proxy
//! and the internet. curl reaches an allowed name through both, the site proxy sees exactly
//! the tunnels airlock allowed, and each way it can fail has its own answer.

use airlock_config::UpstreamProxy;
use airlock_egress::{StaticResolver, UpstreamChain};
use airlock_testkit::tinyproxy::Tinyproxy;

use crate::clients::{BODY, curl, https_server_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{LOOPBACK, Proxy, bounded, config, exchange, ip, manual_server};

/// The identity provider's name: the site proxy resolves it, the staging node's DNS may not.
const IDP: &str = "idp.example.test";

/// The site's proxy, resolving [`IDP`] to loopback.
fn site_proxy(dir: &std::path::Path, credentials: Option<(&str, &str)>) -> Tinyproxy {
    Tinyproxy::start_with_hosts(dir, credentials, &[(IDP, LOOPBACK)])
}

/// The chain for a proxy at `url`, with `no_proxy` and optional credentials.
fn chain(url: &str, no_proxy: &[&str], credentials: Option<(&str, &str)>) -> UpstreamChain {
    let table = UpstreamProxy {
        username: credentials.map(|(user, _)| user.to_owned()),
        no_proxy: no_proxy.iter().map(|s| (*s).to_owned()).collect(),
        ..UpstreamProxy::new(url.parse().unwrap())
    };
    let settings = table.resolve().unwrap();
    UpstreamChain::new(&settings, credentials.map(|(_, password)| password)).unwrap()
}

fn connects(site: &Tinyproxy) -> Vec<String> {
    site.requests()
        .into_iter()
        .filter(|r| r.starts_with("CONNECT "))
        .collect()
}

fn connect_request(port: u16) -> Vec<u8> {
    format!("CONNECT {IDP}:{port} HTTP/1.1\r\nHost: {IDP}:{port}\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn curl_reaches_an_allowed_name_through_the_site_proxy() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let site = site_proxy(dir.path(), None);
        let (https, ca) = https_server_for(IDP).await;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca).unwrap();
        let port = https.port();
        // The staging node's DNS knows no outside name: the site proxy resolves it.
        let proxy = Proxy::start_chained(
            |_| config(&[IDP], &[port], false),
            StaticResolver::new(),
            Some(chain(&site.url(), &[], None)),
        )
        .await;

        let (ok, out, err) = curl(proxy.addr, &ca_file, &format!("https://{IDP}:{port}/")).await;
        assert!(ok, "curl through both proxies: {err}");
        assert!(out.starts_with(BODY), "{out}");
        assert_eq!(connects(&site), [format!("CONNECT {IDP}:{port} HTTP/1.1")]);

        // Refused by airlock: the site proxy never hears of it.
        let (ok, out, _) = curl(proxy.addr, &ca_file, &format!("https://other.test:{port}/")).await;
        assert!(!ok && out.contains("connect=403"), "{out}");
        let reply = exchange(proxy.addr, &connect_request(port + 1)).await;
        assert_eq!(reply.status, 403, "{}", reply.raw);
        assert_eq!(connects(&site).len(), 1, "{:?}", site.requests());
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn local_answers_are_still_checked_and_no_proxy_goes_direct() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let site = site_proxy(dir.path(), None);
        let (https, ca) = https_server_for(IDP).await;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca).unwrap();
        let port = https.port();

        // The local DNS answers an internal address: refused before the site proxy is asked.
        let resolver = StaticResolver::new().with(IDP, &[ip("10.1.2.3")]);
        let proxy = Proxy::start_chained(
            |_| config(&[IDP], &[port], false),
            resolver,
            Some(chain(&site.url(), &[], None)),
        )
        .await;
        let reply = exchange(proxy.addr, &connect_request(port)).await;
        assert_eq!(reply.status, 403, "{}", reply.raw);
        assert_eq!(reply.reason.as_deref(), Some("forbidden_address"));
        proxy.stop().await;

        // `no_proxy` names go direct, checked as always.
        let resolver = StaticResolver::new().with(IDP, &[LOOPBACK]);
        let proxy = Proxy::start_chained(
            |_| config(&[IDP], &[port], true),
            resolver,
            Some(chain(&site.url(), &[IDP], None)),
        )
        .await;
        let (ok, out, err) = curl(proxy.addr, &ca_file, &format!("https://{IDP}:{port}/")).await;
        assert!(
            ok && out.starts_with(BODY),
            "direct for no_proxy: {err}{out}"
        );
        assert!(connects(&site).is_empty(), "{:?}", site.requests());
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_site_proxys_credentials_and_failures_have_their_own_answers() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let site = site_proxy(dir.path(), Some(("airlock", "s3cret")));
        let (https, ca) = https_server_for(IDP).await;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca).unwrap();
        let port = https.port();
        let start = |chain| {
            Proxy::start_chained(
                move |_| config(&[IDP], &[port], false),
                StaticResolver::new(),
                Some(chain),
            )
        };

        let proxy = start(chain(&site.url(), &[], Some(("airlock", "s3cret")))).await;
        let (ok, out, err) = curl(proxy.addr, &ca_file, &format!("https://{IDP}:{port}/")).await;
        assert!(
            ok && out.starts_with(BODY),
            "with the right credentials: {err}{out}"
        );
        proxy.stop().await;

        for credentials in [Some(("airlock", "wrong")), None] {
            let proxy = start(chain(&site.url(), &[], credentials)).await;
            let reply = exchange(proxy.addr, &connect_request(port)).await;
            assert_eq!(reply.status, 502, "{credentials:?}: {}", reply.raw);
            assert_eq!(reply.reason.as_deref(), Some("upstream_proxy_auth"));
            proxy.stop().await;
        }

        // Nothing listens where the site proxy should be.
        let closed = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let proxy = start(chain(&url, &[], None)).await;
        let reply = exchange(proxy.addr, &connect_request(port)).await;
        assert_eq!(reply.status, 502, "{}", reply.raw);
        assert_eq!(reply.reason.as_deref(), Some("upstream_proxy_unreachable"));
        assert!(proxy.prometheus().contains("upstream_proxy_unreachable"));
        proxy.stop().await;
    })
    .await;
}

#[test]
fn an_https_site_proxy_cannot_carry_tunnels() {
    let settings = UpstreamProxy::new("https://proxy.example.edu:3129".parse().unwrap())
        .resolve()
        .unwrap();
    let err = UpstreamChain::new(&settings, None).unwrap_err().to_string();
    assert!(err.contains("only through an http:// proxy"), "{err}");
}

/// A site proxy that answers badly: a refusal, an endless head, a reply that is no HTTP.
/// Each is `upstream_proxy_refused`, and a good answer's trailing bytes reach the client.
#[tokio::test]
async fn bad_answers_from_the_site_proxy_are_refusals() {
    bounded(60, async {
        let (addr, mut accepted) = manual_server().await;
        let proxy = Proxy::start_chained(
            |_| config(&[IDP], &[443], false),
            StaticResolver::new(),
            Some(chain(&format!("http://{addr}"), &[], None)),
        )
        .await;
        let endless = vec![b'x'; 20 * 1024];
        for answer in [
            &b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"[..],
            &endless,
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        ] {
            let addr = proxy.addr;
            let client = tokio::spawn(async move { exchange(addr, &connect_request(443)).await });
            let mut site = accepted.recv().await.unwrap();
            read_request_head(&mut site).await;
            let _ = site.write_all(answer).await;
            let reply = client.await.unwrap();
            assert_eq!(reply.status, 502, "{}", reply.raw);
            assert_eq!(reply.reason.as_deref(), Some("upstream_proxy_refused"));
        }

        let addr = proxy.addr;
        let client = tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(&connect_request(443)).await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 256];
            while !seen.ends_with(b"server speaks first") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..n]);
            }
            String::from_utf8(seen).unwrap()
        });
        let mut site = accepted.recv().await.unwrap();
        let head = read_request_head(&mut site).await;
        assert!(
            head.starts_with(&format!("CONNECT {IDP}:443 HTTP/1.1\r\n")),
            "{head}"
        );
        assert!(
            !head.contains("Proxy-Authorization"),
            "no credentials configured: {head}"
        );
        site.write_all(b"HTTP/1.1 200 Connection established\r\n\r\nserver speaks first")
            .await
            .unwrap();
        let seen = client.await.unwrap();
        assert_eq!(
            seen,
            "HTTP/1.1 200 Connection established\r\n\r\nserver speaks first"
        );
        proxy.stop().await;
    })
    .await;
}

async fn read_request_head(stream: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the egress proxy closed before its request ended");
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(head).unwrap()
}
