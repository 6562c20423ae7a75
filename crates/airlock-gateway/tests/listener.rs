//! Listener hygiene (security review, issue 11 item 5): the gateway sheds half-sent
//! requests after `header_timeout` and idle connections after `idle_timeout`, with and
//! without TLS, keeps answering while it does, caps connections per client and in all,
//! and refuses oversized request heads. Everything runs on loopback with second-scale
//! timeouts.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_config::Config;
use airlock_gateway::Gateway;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Room for scheduling on a loaded two-core machine, plus the one second a closed
/// connection may take to say goodbye.
const SLACK: Duration = Duration::from_millis(2500);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Running {
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts a gateway on loopback with these `[server]` keys and extra tables.
async fn start_with(tls: bool, server: &str, tables: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\nhostname = \"localhost\"\n{server}\n\
         [tls]\nmode = \"{}\"\n{tables}",
        dir.path().join("data"),
        if tls { "self-signed" } else { "off" }
    );
    let config = Config::from_toml_str(&text, "test").expect("test config is valid");
    let gateway = Gateway::bind(config).await.expect("gateway binds");
    let addr = gateway.local_addr();
    let tls = gateway.ca_pem().map(connector);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway.serve(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        tls,
        _dir: dir,
        _stop: stop,
    }
}

async fn start(tls: bool, server: &str) -> Running {
    start_with(tls, server, "").await
}

/// A TLS client that trusts only the gateway's generated CA.
fn connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

impl Running {
    /// A connection to the gateway, TLS handshake done when TLS is on.
    async fn connect(&self) -> Box<dyn Stream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        match &self.tls {
            Some(tls) => Box::new(
                tls.connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await
                    .expect("TLS handshake with the gateway"),
            ),
            None => Box::new(tcp),
        }
    }

    /// `GET path` on a fresh connection: the status and body.
    async fn get(&self, path: &str) -> (u16, String) {
        let mut stream = self.connect().await;
        request(&mut stream, path, "").await
    }
}

/// Sends a keep-alive `GET path` with `headers` (each line ending in CRLF) on `stream` and
/// reads one response: the status and body.
async fn request(stream: &mut Box<dyn Stream>, path: &str, headers: &str) -> (u16, String) {
    let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    read_response(stream).await
}

async fn read_response(stream: &mut Box<dyn Stream>) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_len, length) = loop {
        let n = stream.read(&mut chunk).await.expect("response");
        assert!(n > 0, "connection closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            break (end + 4, length);
        }
    };
    while buf.len() < head_len + length {
        let n = stream.read(&mut chunk).await.expect("response body");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text[9..12].parse().unwrap();
    (status, text[head_len..head_len + length].to_owned())
}

/// Reads until the server closes the connection (EOF or reset); true if it did so within
/// `limit`. Any bytes the server sends first are ignored.
async fn closed_within(stream: &mut Box<dyn Stream>, limit: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    timeout(limit, async {
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .is_ok()
}

/// The value of a sample line in `/metrics`, e.g. `airlock_connections_open`.
fn metric(text: &str, sample: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// 200 clients each send part of a request head (every tenth sends nothing at all) and
/// stall. Each must be closed once `header_timeout` has passed, not before and not much
/// after, while `/healthz` keeps answering on new connections throughout.
async fn half_sent_requests_are_closed(tls: bool) {
    const STALLED: usize = 200;
    let header_timeout = Duration::from_secs(1);
    let gw = Arc::new(start(tls, "header_timeout = \"1s\"\nidle_timeout = \"30s\"").await);
    let mut stalls = tokio::task::JoinSet::new();
    for i in 0..STALLED {
        let gw = gw.clone();
        stalls.spawn(async move {
            let mut stream = gw.connect().await;
            // The server's clock starts no earlier than this (after its side of the
            // handshake), so the close can be held to "not before the timeout".
            let connected = Instant::now();
            if i % 10 != 0 {
                stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
                    .await
                    .unwrap();
                stream.flush().await.unwrap();
            }
            let closed = closed_within(&mut stream, header_timeout + SLACK + SLACK).await;
            (closed, connected.elapsed())
        });
    }
    let polling_until = Instant::now() + header_timeout + SLACK;
    let mut answered = 0;
    while Instant::now() < polling_until {
        let (status, body) = timeout(Duration::from_secs(2), gw.get("/healthz"))
            .await
            .expect("/healthz answers while 200 connections stall");
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut slowest = Duration::ZERO;
    let mut fastest = Duration::MAX;
    while let Some(joined) = stalls.join_next().await {
        let (closed, after) = joined.unwrap();
        assert!(
            closed,
            "a stalled connection was still open after {after:?}"
        );
        slowest = slowest.max(after);
        fastest = fastest.min(after);
    }
    eprintln!(
        "tls={tls}: {STALLED} stalled connections closed after {fastest:?}..{slowest:?}; /healthz answered {answered} times meanwhile"
    );
    assert!(
        fastest >= header_timeout.mul_f32(0.9),
        "closed before the header timeout: {fastest:?}"
    );
    assert!(
        slowest <= header_timeout + SLACK,
        "closed too late: {slowest:?}"
    );
    assert!(answered >= 5, "/healthz answered only {answered} times");

    let (_, metrics) = gw.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "airlock_connections_timed_out_total{reason=\"header_timeout\"}"
        ),
        Some(STALLED as u64),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "airlock_connections_open"),
        Some(1),
        "only the /metrics request itself is left"
    );
    assert_eq!(metric(&metrics, "airlock_connection_clients"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_stayed_open_plain() {
    half_sent_requests_are_closed(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_stayed_open_tls() {
    half_sent_requests_are_closed(true).await;
}

/// A later request on a keep-alive connection gets the header timeout too, counted from
/// its first byte, not from when the connection went idle.
#[tokio::test]
async fn slow_second_request_head_is_closed_after_header_timeout() {
    let gw = start(false, "header_timeout = \"1s\"\nidle_timeout = \"30s\"").await;
    let mut stream = gw.connect().await;
    assert_eq!(request(&mut stream, "/healthz", "").await.0, 200);
    // Idle for longer than the header timeout: not a reason to close.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(1) + SLACK).await);
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_idle_timeout() {
    for tls in [false, true] {
        let gw = start(tls, "header_timeout = \"10s\"\nidle_timeout = \"1s\"").await;
        let mut stream = gw.connect().await;
        assert_eq!(request(&mut stream, "/healthz", "").await.0, 200);
        let idle = Instant::now();
        assert!(
            closed_within(&mut stream, Duration::from_secs(1) + SLACK).await,
            "tls={tls}: idle connection still open"
        );
        let after = idle.elapsed();
        assert!(
            after >= Duration::from_millis(900),
            "tls={tls}: closed after {after:?}"
        );
        let (_, metrics) = gw.get("/metrics").await;
        assert_eq!(
            metric(
                &metrics,
                "airlock_connections_timed_out_total{reason=\"idle_timeout\"}"
            ),
            Some(1),
            "{metrics}"
        );
    }
}

/// HTTP/2 (prior knowledge, as the auto builder accepts it on plain TCP): an idle
/// connection is closed after `idle_timeout` too.
#[tokio::test]
async fn idle_http2_connections_are_closed_after_idle_timeout() {
    let gw = start(false, "header_timeout = \"10s\"\nidle_timeout = \"1s\"").await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    // `String` is a body type hyper accepts, so no body crate is needed for an empty GET.
    let request = http::Request::get("http://test/healthz")
        .body(String::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    drop(response);
    let idle = Instant::now();
    timeout(Duration::from_secs(1) + SLACK, connection)
        .await
        .expect("idle HTTP/2 connection closed")
        .unwrap()
        .ok();
    assert!(idle.elapsed() >= Duration::from_millis(900));
}

/// An upstream that answers every request after `delay`.
async fn slow_upstream(delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nslow\n",
                    )
                    .await;
            });
        }
    });
    addr
}

/// Neither timeout cuts a request that is still being worked on.
#[tokio::test]
async fn a_slow_request_in_flight_outlives_both_timeouts() {
    let upstream = slow_upstream(Duration::from_millis(2500)).await;
    let gw = start_with(
        false,
        "header_timeout = \"1s\"\nidle_timeout = \"1s\"",
        &format!(
            "[[proxy]]\nname = \"slow\"\nformat = \"raw\"\nupstream = \"http://{upstream}/\"\n"
        ),
    )
    .await;
    let started = Instant::now();
    let (status, body) = gw.get("/repository/slow/file.txt").await;
    assert_eq!((status, body.as_str()), (200, "slow\n"));
    assert!(started.elapsed() >= Duration::from_millis(2500));
}

#[tokio::test]
async fn per_client_cap_refuses_the_next_connection_until_one_closes() {
    let gw = start(
        false,
        "max_connections = 10\nmax_connections_per_client = 3\nheader_timeout = \"30s\"",
    )
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = gw.connect().await;
        assert_eq!(request(&mut stream, "/healthz", "").await.0, 200);
        open.push(stream);
    }
    let mut refused = gw.connect().await;
    assert!(
        closed_within(&mut refused, Duration::from_secs(1)).await,
        "the fourth connection from 127.0.0.1 is closed at once"
    );
    for stream in &mut open {
        assert_eq!(
            request(stream, "/healthz", "").await.0,
            200,
            "the first three still work"
        );
    }
    drop(open.pop());
    // The server notices the close on its next read; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut stream = gw.connect().await;
        if request_or_closed(&mut stream).await == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after one connection closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, metrics) = request(&mut open[0], "/metrics", "").await;
    assert!(
        metric(
            &metrics,
            "airlock_connections_refused_total{reason=\"max_connections_per_client\"}"
        )
        .is_some_and(|n| n >= 1),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "airlock_connections_open"), Some(2));
}

/// A GET /healthz that tolerates a connection the server closes unanswered (None).
async fn request_or_closed(stream: &mut Box<dyn Stream>) -> Option<u16> {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .ok()?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).await.ok()?;
    (n >= 12).then(|| String::from_utf8_lossy(&buf[9..12]).parse().ok())?
}

#[tokio::test]
async fn total_cap_refuses_connections_beyond_max_connections() {
    let gw = start(
        false,
        "max_connections = 2\nmax_connections_per_client = 2\nheader_timeout = \"30s\"",
    )
    .await;
    let mut first = gw.connect().await;
    assert_eq!(request(&mut first, "/healthz", "").await.0, 200);
    let _second = gw.connect().await;
    let mut third = gw.connect().await;
    assert!(closed_within(&mut third, Duration::from_secs(1)).await);
    let (_, metrics) = request(&mut first, "/metrics", "").await;
    assert_eq!(
        metric(
            &metrics,
            "airlock_connections_refused_total{reason=\"max_connections\"}"
        ),
        Some(1),
        "{metrics}"
    );
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    for tls in [false, true] {
        let gw = start(tls, "max_header_size = \"16KiB\"").await;
        let fits = format!("X-Big: {}\r\n", "a".repeat(12 << 10));
        let mut stream = gw.connect().await;
        assert_eq!(
            request(&mut stream, "/healthz", &fits).await.0,
            200,
            "tls={tls}: 12KiB fits in 16KiB"
        );
        let too_big = format!("X-Big: {}\r\n", "a".repeat(20 << 10));
        let mut stream = gw.connect().await;
        assert_eq!(
            request(&mut stream, "/healthz", &too_big).await.0,
            431,
            "tls={tls}"
        );
        assert!(closed_within(&mut stream, Duration::from_secs(1)).await);
    }
}

#[test]
fn listener_limits_are_validated_at_load() {
    let invalid = |server: &str| {
        Config::from_toml_str(&format!("[server]\n{server}"), "t.toml")
            .unwrap_err()
            .to_string()
    };
    assert!(invalid("header_timeout = \"0s\"").contains("[server] header_timeout"));
    assert!(invalid("idle_timeout = \"0s\"").contains("[server] idle_timeout"));
    assert!(invalid("max_connections = 0").contains("at least 1"));
    assert!(
        invalid("max_connections = 8\nmax_connections_per_client = 9")
            .contains("max_connections_per_client (9) is above max_connections (8)")
    );
    assert!(invalid("max_header_size = \"1KiB\"").contains("out of range"));
}

/// Shutdown still drains: a request in flight when shutdown starts is answered in full,
/// idle connections are closed, and `serve` returns once the last connection is gone.
#[tokio::test]
async fn shutdown_drains_requests_in_flight_and_closes_idle_connections() {
    let upstream = slow_upstream(Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"10s\"\n\
         [tls]\nmode = \"off\"\n\
         [[proxy]]\nname = \"slow\"\nformat = \"raw\"\nupstream = \"http://{upstream}/\"\n",
        dir.path().join("data")
    );
    let gateway = Gateway::bind(Config::from_toml_str(&text, "test").unwrap())
        .await
        .unwrap();
    let addr = gateway.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(gateway.serve(async {
        let _ = stopped.await;
    }));
    let mut idle: Box<dyn Stream> = Box::new(TcpStream::connect(addr).await.unwrap());
    assert_eq!(request(&mut idle, "/healthz", "").await.0, 200);
    let mut busy: Box<dyn Stream> = Box::new(TcpStream::connect(addr).await.unwrap());
    busy.write_all(b"GET /repository/slow/file.txt HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    stop.send(()).unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(1)).await,
        "an idle connection is closed at shutdown"
    );
    let (status, body) = read_response(&mut busy).await;
    assert_eq!((status, body.as_str()), (200, "slow\n"));
    timeout(Duration::from_secs(5), served)
        .await
        .expect("serve returns once drained")
        .unwrap()
        .unwrap();
    let drained = stopping.elapsed();
    assert!(
        drained < Duration::from_secs(5),
        "drained in {drained:?}, not at the grace period's end"
    );
}
