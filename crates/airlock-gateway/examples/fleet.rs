//! The fleet load generator of bench/fleet (`cargo build --release --example fleet -p
//! airlock-gateway`: an example of the gateway crate for its rustls).
//!
//! Simulates N cluster nodes pulling one image through a registry mirror, each as containerd
//! does: its own connections, the manifest (by tag, `?ns=`), then the config, then the layers
//! over `--layer-conns` parallel connections (containerd's default is 3). Nodes start at
//! random offsets spread over `--ramp` seconds. Every response's status and size are checked
//! against the manifest; a node that sees any error counts as failed and says why.
//!
//! With `--peer-addr`, K3s's embedded registry mirror (Spegel) is modelled: once any node
//! holds the whole image, a node starting its pull takes the config and layers from a peer
//! (`--peer-addr` stands in for the other nodes' mirrors) and only the manifest from the
//! gateway; the first nodes, with no peer holding the image yet, pull everything from the
//! gateway.
//!
//! With `--tls-ca FILE`, every connection to the gateway speaks TLS (rustls, as containerd
//! does, verifying the gateway's certificate against the CA in FILE); the peers of the
//! Spegel model stay plain HTTP, as embedded mirrors are.
//!
//! Prints one line per failed node (at most 20) and a summary `key=value` line that run.sh
//! turns into the table:
//! `nodes= ok= errors= bytes= gateway_bytes= peer_bytes= wall_s= p50_s= p99_s= max_s= error_kinds=...`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Clone)]
struct Args {
    addr: String,
    repo: String,
    tag: String,
    ns: String,
    nodes: usize,
    layer_conns: usize,
    ramp: f64,
    timeout: u64,
    /// Other nodes' embedded mirrors (the Spegel model); `None`: the gateway serves all.
    peer: Option<String>,
    /// TLS to the gateway, trusting this client configuration's roots.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// A client configuration trusting the certificates in the PEM file `path`.
fn tls_config(path: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| usage(&format!("--tls-ca {path}: {e}")))
    {
        let cert = cert.unwrap_or_else(|e| usage(&format!("--tls-ca {path}: {e}")));
        roots
            .add(cert)
            .unwrap_or_else(|e| usage(&format!("--tls-ca {path}: {e}")));
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Nodes that hold the whole image (finished a pull): from then on peers can serve it.
static HOLDERS: AtomicUsize = AtomicUsize::new(0);

fn parse_args() -> Args {
    let mut args = Args {
        addr: String::new(),
        repo: "library/bench".into(),
        tag: "v1".into(),
        ns: "docker.io".into(),
        nodes: 1000,
        layer_conns: 3,
        ramp: 30.0,
        timeout: 1800,
        peer: None,
        tls: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = |v: &str| {
            v.parse::<f64>()
                .unwrap_or_else(|_| usage(&format!("{flag}: {v}")))
        };
        match flag.as_str() {
            "--addr" => args.addr = value,
            "--repo" => args.repo = value,
            "--tag" => args.tag = value,
            "--ns" => args.ns = value,
            "--nodes" => args.nodes = number(&value) as usize,
            "--layer-conns" => args.layer_conns = (number(&value) as usize).max(1),
            "--ramp" => args.ramp = number(&value),
            "--timeout" => args.timeout = number(&value) as u64,
            "--peer-addr" => args.peer = Some(value),
            "--tls-ca" => args.tls = Some(tls_config(&value)),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if args.addr.is_empty() {
        usage("--addr HOST:PORT is required");
    }
    args
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "fleet: {problem}\nusage: fleet --addr HOST:PORT [--repo R] [--tag T] [--ns NS] [--nodes N] [--layer-conns C] [--ramp SECS] [--timeout SECS] [--peer-addr HOST:PORT] [--tls-ca CA.pem]"
    );
    std::process::exit(2)
}

/// A connection's bytes: plain, or through TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<Stream>,
    host: String,
}

impl Conn {
    /// Connects to `addr`, through TLS with `tls` (the server name is `addr`'s host, an IP
    /// address the gateway's certificate names).
    fn open(
        addr: &str,
        timeout: Duration,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Self, String> {
        let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(timeout)).ok();
        tcp.set_nodelay(true).ok();
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
                let name =
                    ServerName::try_from(host.to_owned()).map_err(|e| format!("tls: {e}"))?;
                let connection = rustls::ClientConnection::new(Arc::clone(config), name)
                    .map_err(|e| format!("tls: {e}"))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(connection, tcp)))
            }
        };
        Ok(Self {
            reader: BufReader::with_capacity(256 * 1024, stream),
            host: addr.to_owned(),
        })
    }

    /// GET `path`; the body is kept when `keep`, else only counted. Returns the status, the
    /// body (empty unless kept) and its length.
    fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
        keep: bool,
    ) -> Result<(u16, Vec<u8>, u64), String> {
        let accept = accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: containerd/fleet-bench\r\n{accept}\r\n",
            self.host
        );
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let mut line = String::new();
        self.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            self.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse::<u64>().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                }
            }
        }
        let mut body = Vec::new();
        let mut count = 0u64;
        if chunked {
            loop {
                line.clear();
                self.read_line(&mut line)?;
                let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| format!("bad chunk size {line:?}"))?;
                if size == 0 {
                    line.clear();
                    self.read_line(&mut line)?;
                    break;
                }
                count += self.body(size, keep, &mut body)?;
                line.clear();
                self.read_line(&mut line)?;
            }
        } else {
            let size = length.ok_or("no Content-Length")?;
            count = self.body(size, keep, &mut body)?;
        }
        Ok((status, body, count))
    }

    fn read_line(&mut self, line: &mut String) -> Result<(), String> {
        match self.reader.read_line(line) {
            Ok(0) => Err("connection closed".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    fn body(&mut self, size: u64, keep: bool, into: &mut Vec<u8>) -> Result<u64, String> {
        let mut left = size;
        let mut buf = vec![0u8; 256 * 1024];
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = self
                .reader
                .read(&mut buf[..want])
                .map_err(|e| format!("body: {e}"))?;
            if n == 0 {
                return Err(format!("body ended {left} bytes early"));
            }
            if keep {
                into.extend_from_slice(&buf[..n]);
            }
            left -= n as u64;
        }
        Ok(size)
    }
}

/// `(digest, size)` of every descriptor in a manifest: config first, then the layers.
fn descriptors(manifest: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut rest = manifest;
    while let Some(at) = rest.find("\"digest\"") {
        let object_start = rest[..at].rfind('{').unwrap_or(0);
        let object_end = rest[at..].find('}').map_or(rest.len(), |e| at + e);
        let object = &rest[object_start..object_end];
        let digest = object
            .split("\"digest\"")
            .nth(1)
            .and_then(|s| s.split('"').nth(1))
            .unwrap_or_default()
            .to_owned();
        let size = object
            .split("\"size\"")
            .nth(1)
            .and_then(|s| {
                s.trim_start_matches([':', ' '])
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0);
        out.push((digest, size));
        rest = &rest[object_end..];
    }
    out
}

/// One node's pull; returns the bytes received from the gateway and from peers.
fn pull(args: &Args) -> Result<(u64, u64), String> {
    let timeout = Duration::from_secs(args.timeout);
    let mut conn = Conn::open(&args.addr, timeout, args.tls.as_ref())?;
    let base = format!("/v2/{}", args.repo);
    let (status, manifest, _) = conn.get(
        &format!("{base}/manifests/{}?ns={}", args.tag, args.ns),
        Some(ACCEPT),
        true,
    )?;
    if status != 200 {
        return Err(format!("manifest: HTTP {status}"));
    }
    let manifest = String::from_utf8_lossy(&manifest).into_owned();
    if manifest.contains("\"manifests\"") {
        return Err("the bench image must be a single-platform manifest".into());
    }
    let mut blobs = descriptors(&manifest);
    if blobs.len() < 2 {
        return Err("manifest has no layers".into());
    }
    let (config, config_size) = blobs.remove(0);
    // The blobs come from a peer when one holds the image, else from the gateway.
    let from_peer = args.peer.is_some() && HOLDERS.load(Ordering::Relaxed) > 0;
    let (source, tls) = match (&args.peer, from_peer) {
        (Some(peer), true) => (peer.clone(), None),
        _ => (args.addr.clone(), args.tls.clone()),
    };
    if from_peer {
        conn = Conn::open(&source, timeout, None)?;
    }
    let (status, _, size) = conn.get(
        &format!("{base}/blobs/{config}?ns={}", args.ns),
        None,
        false,
    )?;
    if status != 200 || size != config_size {
        return Err(format!(
            "config: HTTP {status}, {size} of {config_size} bytes"
        ));
    }
    let queue = Arc::new(Mutex::new(blobs));
    let workers: Vec<_> = (0..args.layer_conns)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let args = args.clone();
            let base = base.clone();
            let source = source.clone();
            let tls = tls.clone();
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || -> Result<u64, String> {
                    let mut conn =
                        Conn::open(&source, Duration::from_secs(args.timeout), tls.as_ref())?;
                    let mut bytes = 0;
                    loop {
                        let next = queue.lock().unwrap().pop();
                        let Some((digest, want)) = next else {
                            return Ok(bytes);
                        };
                        let (status, _, size) = conn.get(
                            &format!("{base}/blobs/{digest}?ns={}", args.ns),
                            None,
                            false,
                        )?;
                        if status != 200 || size != want {
                            return Err(format!("layer: HTTP {status}, {size} of {want} bytes"));
                        }
                        bytes += size;
                    }
                })
                .map_err(|e| format!("thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut blob_bytes = config_size;
    for worker in workers {
        blob_bytes += worker
            .join()
            .map_err(|_| "layer thread panicked".to_owned())??;
    }
    let manifest_bytes = manifest.len() as u64;
    Ok(if from_peer {
        (manifest_bytes, blob_bytes)
    } else {
        (manifest_bytes + blob_bytes, 0)
    })
}

/// A small xorshift, seeded from the clock: start offsets only.
fn offsets(n: usize, ramp: f64) -> Vec<f64> {
    let mut x = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
        | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 * ramp
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args = parse_args();
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::with_capacity(args.nodes)));
    let nodes: Vec<_> = offsets(args.nodes, args.ramp)
        .into_iter()
        .enumerate()
        .map(|(node, offset)| {
            let (args, done, results) = (args.clone(), Arc::clone(&done), Arc::clone(&results));
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    std::thread::sleep(Duration::from_secs_f64(offset));
                    let begun = Instant::now();
                    let outcome = pull(&args);
                    let took = begun.elapsed().as_secs_f64();
                    if outcome.is_ok() {
                        HOLDERS.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    results.lock().unwrap().push((node, took, outcome));
                })
                .expect("spawn a node thread")
        })
        .collect();
    for node in nodes {
        let _ = node.join();
    }
    let wall = started.elapsed().as_secs_f64();
    let results = results.lock().unwrap();
    let mut times: Vec<f64> = Vec::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let (mut gateway_bytes, mut peer_bytes) = (0u64, 0u64);
    let mut shown = 0;
    for (node, took, outcome) in results.iter() {
        match outcome {
            Ok((gateway, peer)) => {
                times.push(*took);
                gateway_bytes += gateway;
                peer_bytes += peer;
            }
            Err(e) => {
                let kind = e.split(':').next().unwrap_or(e).to_owned();
                *kinds.entry(kind).or_default() += 1;
                if shown < 20 {
                    eprintln!("node {node}: {e}");
                    shown += 1;
                }
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let errors = results.len() - times.len();
    let kinds: Vec<String> = kinds
        .iter()
        .map(|(k, n)| format!("{}:{n}", k.replace(' ', "_")))
        .collect();
    println!(
        "nodes={} ok={} errors={errors} bytes={} gateway_bytes={gateway_bytes} peer_bytes={peer_bytes} wall_s={wall:.2} p50_s={:.2} p99_s={:.2} max_s={:.2} error_kinds={}",
        args.nodes,
        times.len(),
        gateway_bytes + peer_bytes,
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        times.last().copied().unwrap_or(0.0),
        if kinds.is_empty() {
            "-".to_owned()
        } else {
            kinds.join(",")
        },
    );
}
