//! HEAD load generator for bench/registry/run.sh (std only; built with plain `rustc -O`).
//!
//! wrk 4.1 cannot measure HEAD: its response parser waits for the body that a
//! `Content-Length` announces, so every HEAD request ends as a read error. This sends HEAD
//! requests on `conns` keep-alive connections (one thread each) for `secs` seconds and
//! prints `RESULT 0 <seconds> <responses> <errors>`, the same line run.sh's wrk script prints.
//!
//! usage: headload <host:port> <path> <accept> <conns> <secs>

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: headload <host:port> <path> <accept> <conns> <secs>");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let request = format!(
        "HEAD {} HTTP/1.1\r\nHost: {}\r\nAccept: {}\r\nUser-Agent: headload\r\n\r\n",
        args[2], args[1], args[3]
    );
    let conns: usize = args[4].parse().expect("conns");
    let secs: u64 = args[5].parse().expect("secs");
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let (addr, request) = (addr.clone(), request.clone());
            let (ok, errors) = (ok.clone(), errors.clone());
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    match run_connection(&addr, request.as_bytes(), deadline, &ok) {
                        Ok(()) => {}
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "RESULT 0 {elapsed:.6} {} {}",
        ok.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
}

/// HEAD requests one after another on one connection until the deadline. A response ends at
/// the blank line after its headers; anything but a 200 is an error.
fn run_connection(
    addr: &str,
    request: &[u8],
    deadline: Instant,
    ok: &AtomicU64,
) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = vec![0u8; 16 * 1024];
    while Instant::now() < deadline {
        if stream.write_all(request).is_err() {
            return Ok(()); // closed by the server between requests (keep-alive limit): reconnect
        }
        let mut have = 0;
        let end = loop {
            if have == buf.len() {
                return Err(std::io::Error::other("response headers too large"));
            }
            let n = stream.read(&mut buf[have..])?;
            if n == 0 && have == 0 {
                return Ok(()); // closed between requests: reconnect
            }
            if n == 0 {
                return Err(std::io::Error::other("connection closed mid-response"));
            }
            have += n;
            if let Some(pos) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
        };
        if end != have {
            return Err(std::io::Error::other("bytes after a HEAD response"));
        }
        if !buf.starts_with(b"HTTP/1.1 200") {
            return Err(std::io::Error::other("status is not 200"));
        }
        ok.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
