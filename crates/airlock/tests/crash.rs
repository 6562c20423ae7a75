//! Crash safety of the real binary: `kill -9` during concurrent cold pulls, again and again,
//! then a restart. Every byte served at any point must match its digest, the store must hold
//! only verified blobs, interrupted downloads must be gone, and the index must agree with
//! the files once the gateway shut down cleanly.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock_testkit::{AuthMode, FakeRegistry, Image};
use airlock_types::Digest;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(config: &Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "airlock did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Fetches a blob; a complete body must be exactly right, a broken one is fine.
async fn pull(client: reqwest::Client, url: String, digest: Digest) -> bool {
    let Ok(response) = client.get(&url).send().await else {
        return false;
    };
    if response.status() != 200 {
        return false;
    }
    match response.bytes().await {
        Ok(body) => {
            assert_eq!(
                Digest::of(&body),
                digest,
                "a complete body with wrong bytes from {url}"
            );
            true
        }
        Err(_) => false,
    }
}

fn blob_files(store: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(prefixes) = std::fs::read_dir(store.join("blobs/sha256")) else {
        return files;
    };
    for prefix in prefixes {
        for file in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            files.push(file.unwrap().path());
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_cold_pulls_never_leaves_unverified_bytes() {
    let upstream = FakeRegistry::start(AuthMode::Token).await;
    let image = Image::random(&[3 << 20, 2 << 20, 1 << 20, 512 << 10, 4 << 20]);
    upstream.push_image("library/crash", "1", &image);
    upstream.throttle(Some(Duration::from_millis(2)));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace = \"2s\"\n[tls]\nmode = \"off\"\n\
             [[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{}\"\nhost = \"docker.io\"\n",
            dir.path().join("data"),
            upstream.url()
        ),
    )
    .unwrap();
    let store = dir.path().join("data/store-v1");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let blobs: Vec<(String, Digest)> = image
        .layers
        .iter()
        .map(|l| {
            let d = Digest::of(l);
            (
                format!("http://127.0.0.1:{port}/v2/hub/library/crash/blobs/{d}"),
                d,
            )
        })
        .collect();

    let (mut complete, mut broken) = (0, 0);
    for round in 0..6u64 {
        let mut child = start(&config, port);
        let temp_left = std::fs::read_dir(store.join("tmp")).map_or(0, Iterator::count);
        assert_eq!(
            temp_left, 0,
            "round {round}: startup removed unfinished downloads"
        );
        let pulls: Vec<_> = blobs
            .iter()
            .flat_map(|(url, d)| (0..2).map(move |_| (url.clone(), d.clone())))
            .map(|(url, d)| tokio::spawn(pull(client.clone(), url, d)))
            .collect();
        // Kill at a different moment each round: early, mid-stream, near the end.
        tokio::time::sleep(Duration::from_millis(40 + round * 70)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        for pull in pulls {
            if pull.await.unwrap() {
                complete += 1;
            } else {
                broken += 1;
            }
        }
        for file in blob_files(&store) {
            let bytes = std::fs::read(&file).unwrap();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(
                Digest::of(&bytes).hex(),
                name,
                "round {round}: only verified blobs in the store"
            );
        }
    }

    assert!(
        broken > 0,
        "the kills landed mid-download ({complete} complete, {broken} broken)"
    );

    upstream.throttle(None);
    let child = start(&config, port);
    for (url, digest) in &blobs {
        assert!(
            pull(client.clone(), url.clone(), digest.clone()).await,
            "after the crashes, {url} is served whole"
        );
    }
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let mut child = child;
    let status = child.wait().unwrap();
    assert!(status.success(), "clean shutdown after SIGTERM: {status}");

    let index = airlock_store::MetaIndex::open(&dir.path().join("data/index-v1.redb")).unwrap();
    let snapshot = index.snapshot().await.unwrap();
    let recorded: HashSet<String> = snapshot.blobs.keys().map(|d| d.hex().to_owned()).collect();
    let on_disk: HashSet<String> = blob_files(&store)
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(recorded, on_disk, "the index agrees with the blobs");
    let expected: HashSet<String> = blobs.iter().map(|(_, d)| d.hex().to_owned()).collect();
    assert_eq!(on_disk, expected);
}
