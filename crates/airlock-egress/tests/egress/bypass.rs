//! The bypass and abuse regression suite: each case is a raw request and the exact
//! status, `X-Airlock-Reason` and close the proxy must answer with.

use std::time::Duration;

use airlock_egress::StaticResolver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{LOOPBACK, Proxy, bounded, config, echo_server, exchange, ip};

struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    reason: &'static str,
}

fn case(
    name: &'static str,
    request: impl Into<Vec<u8>>,
    status: u16,
    reason: &'static str,
) -> Case {
    Case {
        name,
        request: request.into(),
        status,
        reason,
    }
}

/// `CONNECT target HTTP/1.1` with a matching Host header.
fn connect(target: &str) -> Vec<u8> {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes()
}

/// `CONNECT target HTTP/1.1` without headers (for targets a Host header would not match).
fn bare(target: &str) -> Vec<u8> {
    format!("CONNECT {target} HTTP/1.1\r\n\r\n").into_bytes()
}

/// Names that resolve (through the test resolver) to addresses that must never be dialed.
const REBOUND: &[(&str, &str)] = &[
    ("loopback.test", "127.0.0.1"),
    ("loopback-other.test", "127.3.2.1"),
    ("metadata.test", "169.254.169.254"),
    ("private10.test", "10.0.0.1"),
    ("private172.test", "172.16.5.4"),
    ("private192.test", "192.168.1.1"),
    ("cgnat.test", "100.64.0.1"),
    ("zero.test", "0.0.0.0"),
    ("multicast.test", "224.0.0.1"),
    ("broadcast.test", "255.255.255.255"),
    ("v6loopback.test", "::1"),
    ("mapped.test", "::ffff:127.0.0.1"),
    ("mapped-public.test", "::ffff:8.8.8.8"),
    ("nat64.test", "64:ff9b::a9fe:a9fe"),
    ("sixtofour.test", "2002:7f00:1::"),
    ("teredo.test", "2001:0:4136:e378:8000:63bf:3fff:fdd2"),
    ("ula.test", "fd00::1"),
    ("linklocal6.test", "fe80::1"),
];

fn resolver() -> StaticResolver {
    let mut r = StaticResolver::new()
        .with("allowed.test", &[LOOPBACK])
        .with("sub.wild.test", &[LOOPBACK])
        .with("wild.test", &[LOOPBACK])
        .with("localhost", &[LOOPBACK])
        // One public answer and one loopback answer: the loopback one must sink it.
        .with("mixed.test", &[ip("93.184.216.34"), LOOPBACK]);
    for (name, addr) in REBOUND {
        r = r.with(name, &[ip(addr)]);
    }
    r
}

async fn run(proxy: &Proxy, cases: Vec<Case>) {
    let mut failures = Vec::new();
    let total = cases.len();
    for case in cases {
        let reply = exchange(proxy.addr, &case.request).await;
        let ok = reply.status == case.status
            && reply.reason.as_deref() == Some(case.reason)
            && reply.closed;
        if !ok {
            failures.push(format!(
                "{}: want {} {} and close, got {} {:?} closed={} raw={:?}",
                case.name,
                case.status,
                case.reason,
                reply.status,
                reply.reason,
                reply.closed,
                reply.raw
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Bypass attempts against a proxy with the default address policy (no internal networks).
#[tokio::test]
async fn bypass_and_abuse_attempts_are_refused() {
    bounded(120, async {
        let mut allow = vec!["allowed.test", "*.wild.test", "mixed.test", "unresolvable.test"];
        allow.extend(REBOUND.iter().map(|(name, _)| *name));
        let proxy = Proxy::start(|_| config(&allow, &[443], false), resolver()).await;
        let long_line = connect(&format!("{}.test:443", "a".repeat(1100)));
        let big_headers = format!(
            "CONNECT allowed.test:443 HTTP/1.1\r\n{}\r\n",
            "X-Filler: 0123456789012345678901234567890123456789\r\n".repeat(200)
        );
        let many_headers = format!("CONNECT allowed.test:443 HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(65));
        let mut cases = vec![
            // Names and the allowlist.
            case("name off the list", connect("evil.test:443"), 403, "not_allowlisted"),
            case("subdomain of an exact entry", connect("sub.allowed.test:443"), 403, "not_allowlisted"),
            case("apex of a wildcard entry", connect("wild.test:443"), 403, "not_allowlisted"),
            case("allowed name as a prefix", connect("allowed.test.evil.test:443"), 403, "not_allowlisted"),
            case("allowed name as a suffix without dot", connect("evilallowed.test:443"), 403, "not_allowlisted"),
            case("localhost", connect("localhost:443"), 403, "not_allowlisted"),
            // IP literals in every notation.
            case("dotted IPv4", connect("127.0.0.1:443"), 403, "ip_literal"),
            case("public dotted IPv4", connect("93.184.216.34:443"), 403, "ip_literal"),
            case("decimal IPv4", connect("2130706433:443"), 403, "ip_literal"),
            case("hex IPv4", connect("0x7f000001:443"), 403, "ip_literal"),
            case("octal IPv4", connect("0177.0.0.1:443"), 403, "ip_literal"),
            case("short IPv4", connect("127.1:443"), 403, "ip_literal"),
            case("mixed hex dotted IPv4", connect("0x7f.0.0.1:443"), 403, "ip_literal"),
            case("IPv4 with trailing dot", connect("169.254.169.254.:443"), 403, "ip_literal"),
            case("bracketed IPv6", bare("[::1]:443"), 403, "ip_literal"),
            case("IPv6 with zone id", bare("[fe80::1%25eth0]:443"), 403, "ip_literal"),
            case("IPv4-mapped IPv6", bare("[::ffff:127.0.0.1]:443"), 403, "ip_literal"),
            case("bare IPv6", bare("::1:443"), 403, "ip_literal"),
            // Target syntax.
            case("userinfo", bare("user@allowed.test:443"), 400, "userinfo"),
            case("allowed name as userinfo", bare("allowed.test@evil.test:443"), 400, "userinfo"),
            case("percent-encoded dot", bare("allowed%2etest:443"), 400, "percent_encoding"),
            case("cyrillic homograph", bare("\u{430}llowed.test:443"), 400, "non_ascii"),
            case("underscore", bare("allowed_test:443"), 400, "bad_host"),
            case("double trailing dot", bare("allowed.test..:443"), 400, "bad_host"),
            case("leading dot", bare(".allowed.test:443"), 400, "bad_host"),
            case("absolute URI as CONNECT target", bare("https://allowed.test:443"), 400, "bad_target"),
            case("path after authority", bare("allowed.test:443/x"), 400, "bad_target"),
            case("missing port", bare("allowed.test"), 400, "missing_port"),
            case("empty port", bare("allowed.test:"), 400, "missing_port"),
            case("leading-zero port", bare("allowed.test:0443"), 400, "bad_port"),
            case("signed port", bare("allowed.test:+443"), 400, "bad_port"),
            case("port overflow", bare("allowed.test:65979"), 400, "bad_port"),
            case("huge port", bare("allowed.test:99999999999999999999"), 400, "bad_port"),
            case("port zero", bare("allowed.test:0"), 400, "bad_port"),
            case("port 8443", connect("allowed.test:8443"), 403, "port_not_allowed"),
            case("port 80", connect("allowed.test:80"), 403, "port_not_allowed"),
            // Methods and request forms.
            case("absolute-form http", "GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n", 405, "method_not_allowed"),
            case("absolute-form https", "GET https://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n", 405, "method_not_allowed"),
            case("origin-form", "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", 405, "method_not_allowed"),
            case("POST", "POST http://allowed.test/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, "method_not_allowed"),
            case("lowercase connect", "connect allowed.test:443 HTTP/1.1\r\n\r\n", 405, "method_not_allowed"),
            case("HTTP/2.0 version", "CONNECT allowed.test:443 HTTP/2.0\r\n\r\n", 400, "bad_version"),
            case("HTTP/0.9 style", "CONNECT allowed.test:443\r\n\r\n", 400, "bad_request"),
            case("double space", "CONNECT  allowed.test:443 HTTP/1.1\r\n\r\n", 400, "bad_request"),
            case("tab separator", "CONNECT\tallowed.test:443 HTTP/1.1\r\n\r\n", 400, "bad_request"),
            case("bare LF line endings", "CONNECT allowed.test:443 HTTP/1.1\n\n", 400, "bad_request"),
            case("NUL in request line", "CONNECT allowed.test\0:443 HTTP/1.1\r\n\r\n", 400, "bad_request"),
            case("TLS ClientHello sent to the proxy", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(), 400, "bad_request"),
            case("empty request line", "\r\n\r\n", 400, "bad_request"),
            // Headers.
            case("duplicate Host", "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\nHost: allowed.test:443\r\n\r\n", 400, "host_mismatch"),
            case("conflicting Host", "CONNECT allowed.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n", 400, "host_mismatch"),
            case("Host with another port", "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:8443\r\n\r\n", 400, "host_mismatch"),
            case("request body", "CONNECT allowed.test:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400, "body_not_allowed"),
            case("chunked body", "CONNECT allowed.test:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "body_not_allowed"),
            case("two Content-Length", "CONNECT allowed.test:443 HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", 400, "body_not_allowed"),
            case("obs-fold continuation", "CONNECT allowed.test:443 HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", 400, "bad_request"),
            case("space before colon", "CONNECT allowed.test:443 HTTP/1.1\r\nHost : allowed.test:443\r\n\r\n", 400, "bad_request"),
            case("header without colon", "CONNECT allowed.test:443 HTTP/1.1\r\nnonsense\r\n\r\n", 400, "bad_request"),
            case("non-ASCII header value", "CONNECT allowed.test:443 HTTP/1.1\r\nX: \u{e9}\r\n\r\n", 400, "bad_request"),
            case("oversized request line", long_line, 414, "request_line_too_long"),
            case("oversized header block", big_headers, 431, "headers_too_large"),
            case("too many header fields", many_headers, 431, "headers_too_large"),
            // Names that resolve somewhere they must not (DNS rebinding).
            case("name resolving to public and loopback", connect("mixed.test:443"), 403, "forbidden_address"),
            case("allowed name that does not resolve", connect("unresolvable.test:443"), 502, "resolve_failed"),
        ];
        for (name, _) in REBOUND {
            cases.push(case(name, connect(&format!("{name}:443")), 403, "forbidden_address"));
        }
        assert!(cases.len() >= 80, "the suite shrank to {}", cases.len());
        run(&proxy, cases).await;
        proxy.stop().await;
    })
    .await;
}

/// The same shapes against a proxy that may reach loopback: the good spellings tunnel,
/// and the proxy refuses to tunnel to itself.
#[tokio::test]
async fn loopback_site_allows_only_the_right_spellings() {
    bounded(60, async {
        let echo = echo_server().await;
        let resolver = StaticResolver::new()
            .with("allowed.test", &[LOOPBACK])
            .with("self.test", &[LOOPBACK])
            .with("metadata.test", &[ip("169.254.169.254")]);
        let port = echo.port();
        let proxy = Proxy::start(
            |own| {
                config(
                    &["allowed.test", "self.test", "metadata.test"],
                    &[port, own],
                    true,
                )
            },
            resolver,
        )
        .await;
        for target in [
            format!("allowed.test:{port}"),
            format!("ALLOWED.Test:{port}"),
            format!("allowed.test.:{port}"),
        ] {
            let mut stream = crate::support::open_tunnel(proxy.addr, &target).await;
            stream.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            stream.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping", "{target}");
        }
        // HTTP/1.0 without Host, as Python's http.client sends it.
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(format!("CONNECT allowed.test:{port} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(crate::support::read_head(&mut stream).await.status, 200);

        let cases = vec![
            case(
                "tunnel to the proxy itself",
                connect(&format!("self.test:{}", proxy.addr.port())),
                403,
                "proxy_loop",
            ),
            case(
                "link-local is not covered by allow_internal",
                connect(&format!("metadata.test:{port}")),
                403,
                "forbidden_address",
            ),
            case(
                "allowed name, port not listed",
                connect("allowed.test:8443"),
                403,
                "port_not_allowed",
            ),
        ];
        run(&proxy, cases).await;
        proxy.stop().await;
    })
    .await;
}

/// A client outside `clients` gets nothing, whatever it asks for.
#[tokio::test]
async fn clients_outside_the_networks_are_refused() {
    bounded(30, async {
        let proxy = Proxy::start(
            |_| {
                let mut cfg = config(&["allowed.test"], &[443], true);
                cfg.clients = Some(vec!["10.0.0.0/8".into(), "fd00::/8".into()]);
                cfg
            },
            StaticResolver::new().with("allowed.test", &[LOOPBACK]),
        )
        .await;
        run(
            &proxy,
            vec![case(
                "loopback client",
                connect("allowed.test:443"),
                403,
                "client_not_allowed",
            )],
        )
        .await;
        proxy.stop().await;
    })
    .await;
}

/// Slow and dripped headers hit the header deadline; the deadline covers the whole head.
#[tokio::test]
async fn slow_headers_hit_the_deadline() {
    bounded(30, async {
        let proxy = Proxy::start(
            |_| {
                let mut cfg = config(&["allowed.test"], &[443], false);
                cfg.header_timeout = Some(crate::support::duration("400ms"));
                cfg
            },
            StaticResolver::new(),
        )
        .await;
        // Half a request, then silence.
        let started = std::time::Instant::now();
        let reply = exchange(proxy.addr, b"CONNECT allowed.test:443 HTTP/1.1\r\n").await;
        assert_eq!(
            (reply.status, reply.reason.as_deref(), reply.closed),
            (408, Some("header_timeout"), true)
        );
        assert!(started.elapsed() < Duration::from_secs(3));

        // One byte every 50 ms: reads keep succeeding, but the deadline covers the head.
        // (Twenty bytes stay inside the proxy's linger time, so nothing is reset.)
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        for byte in b"CONNECT allowed.test:443 HTTP/1.1\r\n".iter().take(20) {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let reply = crate::support::read_reply(&mut stream).await;
        assert_eq!(
            (reply.status, reply.reason.as_deref()),
            (408, Some("header_timeout")),
            "{}",
            reply.raw
        );

        // A connection that sends nothing at all is also closed.
        let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
        let reply = crate::support::read_reply(&mut idle).await;
        assert_eq!((reply.status, reply.closed), (408, true));
        proxy.stop().await;
    })
    .await;
}
