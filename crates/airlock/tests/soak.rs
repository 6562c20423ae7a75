//! Soak: a mixed load against one `airlock serve` for a set time — image pulls (cold and
//! warm: a small `max_size` without grace evicts at every upkeep round), raw file downloads, egress tunnels — through
//! upstreams behind an unreliable link (5% of requests fail, 1% stall), with the gateway
//! killed (`kill -9`) and started again halfway. It samples the gateway's RSS and open
//! file descriptors, counts errors by kind, and checks every byte received against its
//! digest or its known content.
//!
//! Passes when no response ever carried wrong bytes, the gateway never exited by itself,
//! most operations succeeded, and memory and descriptors stayed flat after warm-up.
//! `AIRLOCK_SOAK_SECS` sets the length (180 by default, what `scripts/test.sh` runs);
//! `bench/soak/run.sh` runs it for 30 minutes with a release build and prints the table.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_testkit::{
    AuthMode, Chaos, FakeFiles, FakeRegistry, Image, Killed, Odds, Platform, free_port, noise,
    port_open, require_tool, wait_until,
};
use airlock_types::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMAGES: usize = 24;
const FILES: usize = 16;
const WORKERS: usize = 6;
/// The name the egress proxy admits; the gateway's own `/etc/hosts` points it at loopback.
const ECHO_NAME: &str = "echo.soak.test";

/// What the load saw, shared by the workers.
#[derive(Default)]
struct Tally {
    ok: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
    wrong_bytes: u64,
    /// When a connection to the gateway was refused: while it restarts, and never else.
    refused: Vec<Instant>,
}

impl Tally {
    fn ok(&mut self, what: &'static str) {
        *self.ok.entry(what).or_default() += 1;
    }

    fn error(&mut self, what: &str, kind: &str) {
        if kind == "connect" {
            self.refused.push(Instant::now());
        } else {
            *self.errors.entry(format!("{what}: {kind}")).or_default() += 1;
        }
    }
}

struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    after_restart: bool,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The kind of a failed request, for the tally.
fn kind(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connect".into()
    } else if error.is_body() || error.is_decode() {
        "body cut".into()
    } else {
        "request".into()
    }
}

/// GET `url`: the body, or the kind of failure.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    accept: Option<&str>,
) -> Result<Vec<u8>, String> {
    let mut request = client.get(url);
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let response = request.send().await.map_err(|e| kind(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("status {}", status.as_u16()));
    }
    Ok(response.bytes().await.map_err(|e| kind(&e))?.to_vec())
}

/// Pulls image `i` as a client does: the manifest by tag, then every blob, each checked.
async fn pull(client: &reqwest::Client, base: &str, image: &Image, i: usize, tally: &Mutex<Tally>) {
    let manifest = match fetch(
        client,
        &format!("{base}/v2/hub/soak/img{i}/manifests/1"),
        Some(image.media_type),
    )
    .await
    {
        Ok(bytes) => bytes,
        Err(kind) => return tally.lock().unwrap().error("manifest", &kind),
    };
    if Digest::of(&manifest) != image.digest {
        tally.lock().unwrap().wrong_bytes += 1;
        return;
    }
    let blobs = std::iter::once(&image.config).chain(&image.layers);
    for blob in blobs {
        let digest = Digest::of(blob);
        match fetch(
            client,
            &format!("{base}/v2/hub/soak/img{i}/blobs/{digest}"),
            None,
        )
        .await
        {
            Ok(bytes) if Digest::of(&bytes) == digest => tally.lock().unwrap().ok("blob"),
            Ok(_) => tally.lock().unwrap().wrong_bytes += 1,
            Err(kind) => return tally.lock().unwrap().error("blob", &kind),
        }
    }
    tally.lock().unwrap().ok("image");
}

/// A CONNECT tunnel through the egress proxy to the echo server: 64 KiB there and back.
async fn tunnel(egress: u16, echo: u16, tally: &Mutex<Tally>) {
    let result = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", egress))
            .await
            .map_err(|_| "connect".to_owned())?;
        let hello =
            format!("CONNECT {ECHO_NAME}:{echo} HTTP/1.1\r\nHost: {ECHO_NAME}:{echo}\r\n\r\n");
        stream
            .write_all(hello.as_bytes())
            .await
            .map_err(|_| "write".to_owned())?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if stream
                .read(&mut byte)
                .await
                .map_err(|_| "read".to_owned())?
                == 0
            {
                return Err("closed".to_owned());
            }
            head.push(byte[0]);
        }
        if !head.starts_with(b"HTTP/1.1 200") {
            return Err(format!(
                "refused: {}",
                String::from_utf8_lossy(&head[..12.min(head.len())])
            ));
        }
        let payload = noise(64 << 10, rand::random());
        stream
            .write_all(&payload)
            .await
            .map_err(|_| "write".to_owned())?;
        let mut back = vec![0u8; payload.len()];
        stream
            .read_exact(&mut back)
            .await
            .map_err(|_| "echo cut".to_owned())?;
        Ok(back == payload)
    };
    match tokio::time::timeout(Duration::from_secs(30), result).await {
        Ok(Ok(true)) => tally.lock().unwrap().ok("tunnel"),
        Ok(Ok(false)) => tally.lock().unwrap().wrong_bytes += 1,
        Ok(Err(kind)) => tally.lock().unwrap().error("tunnel", &kind),
        Err(_) => tally.lock().unwrap().error("tunnel", "timeout"),
    }
}

/// `airlock_evicted_blobs_total` from the gateway's `/metrics`.
async fn evictions(port: u16) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("airlock_evicted_blobs_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("airlock_evicted_blobs_total in /metrics")
}

/// Echoes every connection's bytes back.
async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    port
}

#[allow(clippy::unnecessary_debug_formatting)]
fn config(
    dir: &Path,
    port: u16,
    egress: u16,
    echo: u16,
    registry: &str,
    files: &str,
) -> std::path::PathBuf {
    let path = dir.join("airlock.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\n[tls]\nmode = \"off\"\n\
             [cache]\nmax_size = \"3MiB\"\ngrace = \"0s\"\n\
             [egress]\nlisten = \"127.0.0.1:{egress}\"\nallow = [\"{ECHO_NAME}\"]\n\
             allow_internal = [\"127.0.0.0/8\"]\nports = [{echo}]\n\
             [[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{registry}\"\nhost = \"docker.io\"\n\
             [[proxy]]\nname = \"files\"\nformat = \"raw\"\nupstream = \"{files}/\"\n",
            dir.join("data"),
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_load_keeps_memory_and_fds_flat_and_never_serves_a_wrong_byte() {
    let secs: u64 = std::env::var("AIRLOCK_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(180);
    let length = Duration::from_secs(secs);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    let registry = FakeRegistry::start(AuthMode::Token).await;
    let images: Vec<Image> = (0..IMAGES)
        .map(|i| {
            let layers = (0..3)
                .map(|n| noise(32 << 10 << ((n + i) % 4), (i * 3 + n) as u64))
                .collect();
            let image = Image::from_layers(layers, Platform::LINUX_AMD64);
            registry.push_image(&format!("soak/img{i}"), "1", &image);
            image
        })
        .collect();
    let files = FakeFiles::start().await;
    let contents: Vec<Vec<u8>> = (0..FILES)
        .map(|i| noise(48 << 10, 1000 + i as u64))
        .collect();
    for (i, bytes) in contents.iter().enumerate() {
        files.put(&format!("f/{i}.bin"), "application/octet-stream", bytes);
    }
    let odds = Odds {
        fail: 0.05,
        stall: 0.01,
        stall_for: Duration::from_secs(20),
    };
    let registry_link = Chaos::start(&registry.url(), odds).await;
    let files_link = Chaos::start(&files.url(), odds).await;
    let echo = echo_server().await;

    let (port, egress) = (free_port(), free_port());
    let config = config(
        dir,
        port,
        egress,
        echo,
        &registry_link.url(),
        &files_link.url(),
    );
    let binary = Path::new(env!("CARGO_BIN_EXE_airlock"));
    let mut process = serve(binary, &config, dir, 1, port);
    let restarted = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let start = Instant::now();
    let deadline = start + length;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let images = Arc::new(images);
    let contents = Arc::new(contents);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (tally, images, contents, client, base) = (
                tally.clone(),
                images.clone(),
                contents.clone(),
                client.clone(),
                base.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let refused = tally.lock().unwrap().refused.len();
                    let roll: u32 = rand::random::<u32>() % 10;
                    if roll < 5 {
                        let i = rand::random::<u32>() as usize % IMAGES;
                        pull(&client, &base, &images[i], i, &tally).await;
                    } else if roll < 8 {
                        let i = rand::random::<u32>() as usize % FILES;
                        let url = format!("{base}/repository/files/f/{i}.bin");
                        match fetch(&client, &url, None).await {
                            Ok(bytes) if bytes == contents[i] => tally.lock().unwrap().ok("file"),
                            Ok(_) => tally.lock().unwrap().wrong_bytes += 1,
                            Err(kind) => tally.lock().unwrap().error("file", &kind),
                        }
                    } else {
                        tunnel(egress, echo, &tally).await;
                    }
                    if tally.lock().unwrap().refused.len() > refused {
                        // The gateway is restarting: try again shortly.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();

    // Sample every two seconds; kill and restart the gateway halfway.
    let mut samples = Vec::new();
    let mut restart_at = None;
    let mut evicted = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let at = start.elapsed();
        assert!(
            process.0.try_wait().unwrap().is_none(),
            "the gateway exited by itself after {at:?}; see {}",
            dir.display()
        );
        let pid = process.0.id();
        samples.push(Sample {
            at,
            rss_kib: rss_kib(pid),
            fds: fds(pid),
            after_restart: restarted.load(std::sync::atomic::Ordering::Relaxed),
        });
        if at >= length / 2 && !restarted.swap(true, std::sync::atomic::Ordering::Relaxed) {
            evicted += evictions(port).await;
            restart_at = Some(Instant::now());
            process.0.kill().unwrap();
            process.0.wait().unwrap();
            process = serve_airlock_again(binary, &config, dir, port);
        }
    }
    for worker in workers {
        worker.await.unwrap();
    }
    evicted += evictions(port).await;

    let tally = tally.lock().unwrap();
    let (failed, stalled, forwarded) = registry_link.counts();
    let (files_failed, files_stalled, files_forwarded) = files_link.counts();
    println!(
        "\nsoak: {secs} s, {WORKERS} workers, gateway killed and restarted at {:?}",
        length / 2
    );
    println!("{:>8} {:>10} {:>6}", "t (s)", "RSS MiB", "fds");
    let every = (samples.len() / 12).max(1);
    for sample in samples.iter().step_by(every) {
        println!(
            "{:>8} {:>10.1} {:>6}",
            sample.at.as_secs(),
            sample.rss_kib as f64 / 1024.0,
            sample.fds
        );
    }
    println!("succeeded: {:?}", tally.ok);
    println!("errors by kind: {:?}", tally.errors);
    println!(
        "upstream link: registry {failed} failed / {stalled} stalled / {forwarded} forwarded; \
         files {files_failed} / {files_stalled} / {files_forwarded}"
    );
    println!("responses with wrong bytes: {}", tally.wrong_bytes);
    println!("blobs evicted (max_size 3MiB, no grace): {evicted}");

    println!(
        "connections refused while the gateway restarted: {}",
        tally.refused.len()
    );

    assert_eq!(tally.wrong_bytes, 0, "a response carried wrong bytes");
    let restart_at = restart_at.expect("the gateway was restarted");
    for refused in &tally.refused {
        assert!(
            *refused + Duration::from_secs(2) >= restart_at
                && *refused <= restart_at + Duration::from_secs(30),
            "the gateway refused a connection {:?} away from its restart",
            refused.saturating_duration_since(restart_at)
        );
    }
    let ok: u64 = tally.ok.values().sum();
    let errors: u64 = tally.errors.values().sum();
    assert!(ok > 100, "the load ran: {ok} operations succeeded");
    assert!(
        ok >= errors * 4,
        "most operations succeed through a 5% failing link: {ok} ok, {errors} failed"
    );
    assert!(failed + stalled > 0, "the link misbehaved");
    if secs >= 150 {
        // Each run ticks once a minute: both runs evicted, and what went was fetched again.
        assert!(evicted > 0, "max_size forced evictions");
    }
    // Flat after warm-up: in the second run, the last quarter holds no more than the
    // middle half did, with a little room for allocator noise.
    let second: Vec<&Sample> = samples.iter().filter(|s| s.after_restart).collect();
    let quarter = second.len() / 4;
    let (middle, last) = (
        &second[quarter..second.len() - quarter],
        &second[second.len() - quarter..],
    );
    let peak = |s: &[&Sample]| {
        (
            s.iter().map(|s| s.rss_kib).max().unwrap_or(0),
            s.iter().map(|s| s.fds).max().unwrap_or(0),
        )
    };
    let ((rss_mid, fds_mid), (rss_end, fds_end)) = (peak(middle), peak(last));
    assert!(
        rss_end <= rss_mid + rss_mid / 4 + 8 * 1024,
        "RSS grew after warm-up: {rss_mid} KiB, then {rss_end} KiB"
    );
    assert!(
        fds_end <= fds_mid + 32,
        "open fds grew after warm-up: {fds_mid}, then {fds_end}"
    );
}

/// `airlock serve` in a mount namespace of its own whose `/etc/hosts` also names
/// [`ECHO_NAME`] (egress admits names, never addresses, and refuses `localhost`, the one
/// loopback name of the machine's hosts file, as a whole top-level domain); logs to
/// `run-<run>.log`. Needs root, as the deploy tests do.
fn serve(binary: &Path, config: &Path, dir: &Path, run: u32, port: u16) -> Killed {
    let hosts = dir.join("hosts");
    let text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let text = format!("{text}\n127.0.0.1 {ECHO_NAME}\n");
    std::fs::write(&hosts, text).unwrap();
    let script = format!(
        "mount --bind '{}' /etc/hosts && exec '{}' serve --config '{}'",
        hosts.display(),
        binary.display(),
        config.display()
    );
    let gateway = Killed(
        std::process::Command::new(require_tool("unshare", "util-linux"))
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("run-{run}.log"))).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("airlock", Duration::from_secs(30), || port_open(port));
    gateway
}

/// The gateway again on the same configuration and port, once the killed one let go of it.
fn serve_airlock_again(binary: &Path, config: &Path, dir: &Path, port: u16) -> Killed {
    wait_until("the port to free", Duration::from_secs(10), || {
        !port_open(port)
    });
    serve(binary, config, dir, 2, port)
}
