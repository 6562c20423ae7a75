//! Benchmark helper for `bench/egress/run.sh`: the egress proxy on its own, a byte source
//! upstream, and a client that measures tunnels through any CONNECT proxy (or none).
//!
//! ```text
//! egress-bench proxy  LISTEN NAME=IP PORT LOGFILE   # airlock egress, NAME allowed on PORT
//! egress-bench source LISTEN                        # sends N zero bytes per connection
//! egress-bench throughput PROXY|direct TARGET ADDR PARALLEL BYTES_EACH
//! egress-bench rate       PROXY|direct TARGET ADDR CONCURRENCY SECONDS
//! egress-bench idle       PROXY TARGET COUNT          # holds COUNT tunnels until stdin closes
//! ```
//! The source protocol: the client sends a big-endian u64 N, the source sends N bytes and
//! closes. Built with `--features test-resolver` (it maps NAME to a loopback address).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use airlock_egress::{Egress, EgressPolicy, StaticResolver, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or_else(|| format!("missing argument {i}"))
    };
    match args.first().map(String::as_str) {
        Some("proxy") => runtime.block_on(proxy(&arg(1)?, &arg(2)?, arg(3)?.parse()?, &arg(4)?)),
        Some("source") => runtime.block_on(source(&arg(1)?)),
        Some("throughput") => runtime.block_on(throughput(
            Via::parse(&arg(1)?)?,
            &arg(2)?,
            arg(3)?.parse()?,
            arg(4)?.parse()?,
            arg(5)?.parse()?,
        )),
        Some("rate") => runtime.block_on(rate(
            Via::parse(&arg(1)?)?,
            &arg(2)?,
            arg(3)?.parse()?,
            arg(4)?.parse()?,
            arg(5)?.parse()?,
        )),
        Some("idle") => runtime.block_on(idle(arg(1)?.parse()?, &arg(2)?, arg(3)?.parse()?)),
        _ => Err("usage: see the header of examples/egress-bench.rs".into()),
    }
}

async fn proxy(listen: &str, map: &str, port: u16, log: &str) -> Result<()> {
    let (name, ip) = map.split_once('=').ok_or("NAME=IP")?;
    let file = std::fs::File::create(log)?;
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    let config = Egress {
        listen: Some(listen.parse()?),
        allow: Some(vec![name.to_owned()]),
        ports: Some(vec![port]),
        allow_internal: Some(vec!["127.0.0.0/8".to_owned()]),
        max_connections: Some(20_000),
        max_connections_per_client: Some(20_000),
        ..Egress::default()
    };
    let policy = EgressPolicy::from_config(&config)?
        .with_resolver(Arc::new(StaticResolver::new().with(name, &[ip.parse()?])));
    let listener = TcpListener::bind(policy.listen()).await?;
    serve(Arc::new(policy), listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

async fn source(listen: &str) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(mut remaining) = stream.read_u64().await else {
                return;
            };
            // Sized to the request so that tiny transfers (the rate test) stay cheap.
            let chunk = vec![0u8; remaining.min(256 * 1024) as usize];
            while remaining > 0 {
                let n = remaining.min(chunk.len() as u64) as usize;
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                remaining -= n as u64;
            }
            let _ = stream.shutdown().await;
            let mut rest = [0u8; 64];
            while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
        });
    }
}

#[derive(Clone, Copy)]
enum Via {
    Direct,
    Proxy(SocketAddr),
}

impl Via {
    fn parse(s: &str) -> Result<Self> {
        Ok(if s == "direct" {
            Via::Direct
        } else {
            Via::Proxy(s.parse()?)
        })
    }
}

/// Open a stream to the source: directly to `addr`, or through `CONNECT target`.
async fn open(via: Via, target: &str, addr: SocketAddr) -> Result<TcpStream> {
    let Via::Proxy(proxy) = via else {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        return Ok(stream);
    };
    let mut stream = TcpStream::connect(proxy).await?;
    stream.set_nodelay(true)?;
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 4096 {
            return Err("proxy closed before answering".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        return Err(format!("proxy refused: {}", String::from_utf8_lossy(&head)).into());
    }
    Ok(stream)
}

async fn fetch(via: Via, target: &str, addr: SocketAddr, bytes: u64) -> Result<u64> {
    let mut stream = open(via, target, addr).await?;
    stream.write_u64(bytes).await?;
    let mut buf = vec![0u8; bytes.clamp(1, 256 * 1024) as usize];
    let mut got = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    if got != bytes {
        return Err(format!("short transfer: {got} of {bytes}").into());
    }
    Ok(got)
}

async fn throughput(
    via: Via,
    target: &str,
    addr: SocketAddr,
    parallel: usize,
    each: u64,
) -> Result<()> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let target = target.to_owned();
        tasks.spawn(async move { fetch(via, &target, addr, each).await });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{:.1}", total as f64 / secs / 1e6);
    Ok(())
}

async fn rate(
    via: Via,
    target: &str,
    addr: SocketAddr,
    concurrency: usize,
    seconds: u64,
) -> Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (done, failed, target) = (Arc::clone(&done), Arc::clone(&failed), target.to_owned());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                match fetch(via, &target, addr, 1).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!("rate: {failed} tunnels failed");
    }
    println!(
        "{:.0}",
        done.load(Ordering::Relaxed) as f64 / seconds as f64
    );
    Ok(())
}

async fn idle(proxy: SocketAddr, target: &str, count: usize) -> Result<()> {
    let mut held = Vec::with_capacity(count);
    let addr: SocketAddr = "127.0.0.1:9".parse()?;
    for _ in 0..count {
        held.push(open(Via::Proxy(proxy), target, addr).await?);
    }
    println!("ready {}", held.len());
    // Hold the tunnels until the script closes stdin.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    drop(held);
    Ok(())
}
