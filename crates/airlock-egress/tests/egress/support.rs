//! Shared fixtures: a proxy on an ephemeral loopback port, echo and TLS upstreams, and a
//! raw client that reads one response and reports whether the proxy closed.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use airlock_egress::{Egress, EgressPolicy, StaticResolver, UpstreamChain, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Every test body runs under this bound.
pub async fn bounded<F: Future>(secs: u64, body: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .expect("test exceeded its time bound")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A running proxy.
pub struct Proxy {
    pub addr: SocketAddr,
    pub policy: Arc<EgressPolicy>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Proxy {
    /// Bind 127.0.0.1:0 first so the config can mention the proxy's own port.
    pub async fn start(config: impl FnOnce(u16) -> Egress, resolver: StaticResolver) -> Proxy {
        Self::start_chained(config, resolver, None).await
    }

    /// [`Proxy::start`], with tunnels through a site proxy when `chain` is set.
    pub async fn start_chained(
        config: impl FnOnce(u16) -> Egress,
        resolver: StaticResolver,
        chain: Option<UpstreamChain>,
    ) -> Proxy {
        Self::start_with(config, resolver, chain, airlock_audit::Audit::disabled()).await
    }

    /// [`Proxy::start_chained`], writing its decisions to `audit` too.
    pub async fn start_with(
        config: impl FnOnce(u16) -> Egress,
        resolver: StaticResolver,
        chain: Option<UpstreamChain>,
        audit: airlock_audit::Audit,
    ) -> Proxy {
        let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut policy = EgressPolicy::from_config(&config(addr.port()))
            .expect("test config resolves")
            .with_resolver(Arc::new(resolver))
            .with_audit(audit);
        if let Some(chain) = chain {
            policy = policy.with_upstream_chain(chain);
        }
        let policy = Arc::new(policy);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(Arc::clone(&policy), listener, async {
            let _ = rx.await;
        }));
        Proxy {
            addr,
            policy,
            stop: Some(tx),
            task,
        }
    }

    /// Signal shutdown and wait for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }

    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        self.policy.metrics().write_prometheus(&mut out);
        out
    }
}

/// What the proxy answered to one raw request.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub reason: Option<String>,
    pub raw: String,
    /// The proxy closed the connection (EOF) after its response.
    pub closed: bool,
}

/// Send `request`, read until the proxy closes (or 5 s pass).
pub async fn exchange(proxy: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let _ = stream.write_all(request).await;
    read_reply(&mut stream).await
}

pub async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let mut closed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    parse_reply(&raw, closed)
}

/// Read just the response head of an accepted CONNECT (the tunnel stays open).
pub async fn read_head(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("response head in time")
            .unwrap();
        if n == 0 {
            return parse_reply(&raw, true);
        }
        raw.push(byte[0]);
    }
    parse_reply(&raw, false)
}

fn parse_reply(raw: &[u8], closed: bool) -> Reply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let reason = text
        .lines()
        .find_map(|l| l.strip_prefix("X-Airlock-Reason: "))
        .map(str::to_owned);
    Reply {
        status,
        reason,
        raw: text,
        closed,
    }
}

/// Open a tunnel through the proxy and assert the 200.
pub async fn open_tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let reply = read_head(&mut stream).await;
    assert_eq!(reply.status, 200, "CONNECT {target}: {}", reply.raw);
    stream
}

/// An upstream that echoes each connection back and half-closes when the client does.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// An upstream whose accepted sockets the test drives itself.
pub async fn manual_server() -> (SocketAddr, tokio::sync::mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if tx.send(stream).await.is_err() {
                break;
            }
        }
    });
    (addr, rx)
}

/// The usual test config: the given names and ports, loopback reachable when `internal`.
pub fn config(allow: &[&str], ports: &[u16], internal: bool) -> Egress {
    Egress {
        listen: Some(SocketAddr::from((LOOPBACK, 0))),
        allow: Some(allow.iter().map(|s| (*s).to_owned()).collect()),
        ports: Some(ports.to_vec()),
        allow_internal: internal.then(|| vec!["127.0.0.0/8".to_owned()]),
        // Tests stop proxies with tunnels still open; don't wait the production 10 s.
        drain_timeout: Some(duration("200ms")),
        ..Egress::default()
    }
}

pub fn duration(s: &str) -> airlock_types::HumanDuration {
    s.parse().unwrap()
}
