//! `[storage] backend = "s3"` with real clients: skopeo and curl (through a raw package
//! proxy) fetch through a gateway whose blobs live in a Garage bucket (single node on
//! loopback) behind a small hot tier. The bytes match, the objects are in the bucket, a warm
//! pull needs no upstream, and while the bucket is down the hot tier keeps serving, the rest
//! is 503 naming no bucket detail, and the gateway keeps running until the bucket returns.
//! Two gateways on one bucket: containerd moves to the second when the first is killed.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use airlock_store::{S3Credentials, S3Settings, S3Store};
use airlock_testkit::{
    Containerd, DockerRegistry, Garage, Image, Platform, StaticFiles, free_port, mirror_hosts,
    noise, port_open, require_tool, run, serve_airlock, serve_airlock_with_env, tar_layer,
    wait_until,
};
use airlock_types::Digest;
use object_store::ObjectStoreExt;

/// `skopeo copy` of the test image through the gateway into `dir:<into>`; whether it worked.
fn pull(skopeo: &Path, port: u16, into: &Path) -> std::process::Output {
    Command::new(skopeo)
        .args(["copy", "--src-tls-verify=false", "--retry-times=0"])
        .arg(format!("docker://127.0.0.1:{port}/hub/library/alpine:3.20"))
        .arg(format!("dir:{}", into.display()))
        .output()
        .unwrap()
}

fn assert_pulled(image: &Image, into: &Path) {
    for layer in &image.layers {
        let digest = Digest::of(layer);
        let pulled = std::fs::read(into.join(digest.hex())).unwrap();
        assert!(&pulled == layer, "layer {digest} differs");
    }
}

/// The status and body of `GET` on a blob of library/alpine through the gateway.
fn get_blob(curl: &Path, port: u16, digest: &Digest) -> (String, Vec<u8>) {
    get_blob_of(curl, port, "library/alpine", digest)
}

/// The status and body of `GET` on a blob of `repo` through the gateway.
fn get_blob_of(curl: &Path, port: u16, repo: &str, digest: &Digest) -> (String, Vec<u8>) {
    let output = run(Command::new(curl)
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!(
            "http://127.0.0.1:{port}/v2/hub/{repo}/blobs/{digest}"
        )));
    split_status(output.stdout)
}

/// curl's output with `-w "\n%{http_code}"`: the body and the status after it.
fn split_status(mut body: Vec<u8>) -> (String, Vec<u8>) {
    let split = body.iter().rposition(|b| *b == b'\n').unwrap();
    let status = String::from_utf8(body.split_off(split + 1)).unwrap();
    body.pop();
    (status, body)
}

/// An s3-backed gateway on `garage` in front of `registry`, with a hot tier of `hot`.
fn s3_gateway(
    dir: &Path,
    name: &str,
    port: u16,
    garage: &Garage,
    registry: &DockerRegistry,
    hot: &str,
    more: &str,
) -> PathBuf {
    let storage = format!("local_cache = \"{hot}\"");
    garage.gateway_config(dir, name, port, &registry.url(), &storage, more)
}

/// The bucket itself, opened with the gateway's key files (no hot tier), to look inside.
async fn look_into(garage: &Garage, dir: &Path, id_file: &Path, secret_file: &Path) -> S3Store {
    let settings = S3Settings {
        bucket: garage.bucket.clone(),
        endpoint: Some(garage.endpoint.clone()),
        region: garage.region.clone(),
        path_style: true,
        credentials: S3Credentials::load(Some(id_file), Some(secret_file)).unwrap(),
    };
    S3Store::open(&settings, &dir.join("look"), 0)
        .await
        .unwrap()
}

#[test]
fn a_blob_the_bucket_damaged_is_removed_and_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let curl = require_tool("curl", "curl");
    let garage = Garage::start(&dir.join("garage"));
    let registry = DockerRegistry::start(dir);
    let image = Image::random(&[300_000]);
    registry.push(&image, dir, "library/alpine", "3.20");
    let port = free_port();
    // No hot tier: every read goes to the bucket.
    let config = s3_gateway(dir, "data", port, &garage, &registry, "0", "");
    let _gateway = serve_airlock(
        Path::new(env!("CARGO_BIN_EXE_airlock")),
        &config,
        &dir.join("airlock.log"),
        port,
    );
    let layer = &image.layers[0];
    let digest = Digest::of(layer);
    let fetches = || {
        registry
            .requests()
            .iter()
            .filter(|line| line.contains(&format!("\"GET /v2/library/alpine/blobs/{digest}")))
            .count()
    };
    let (status, body) = get_blob(&curl, port, &digest);
    assert_eq!(status, "200");
    assert!(&body == layer);
    assert_eq!(fetches(), 1);

    // Something rewrites the object in the bucket with other bytes of the same length.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (id_file, secret_file) = (dir.join("s3.id"), dir.join("s3.secret"));
    runtime.block_on(async {
        let store = look_into(&garage, dir, &id_file, &secret_file).await;
        let forged = object_store::PutPayload::from(vec![0u8; layer.len()]);
        store
            .bucket()
            .put(&S3Store::key(&digest), forged)
            .await
            .unwrap();
    });

    // The client gets the right bytes, fetched again; the bucket holds them again.
    let (status, body) = get_blob(&curl, port, &digest);
    assert_eq!(status, "200", "{}", String::from_utf8_lossy(&body));
    assert!(&body == layer, "the damaged copy was not served");
    assert_eq!(fetches(), 2, "fetched again from the upstream");
    let log = std::fs::read_to_string(dir.join("airlock.log")).unwrap();
    assert!(log.contains("the stored copy is damaged"), "{log}");
    let stored = runtime.block_on(async {
        let store = look_into(&garage, dir, &id_file, &secret_file).await;
        airlock_store::read_all(&store, &digest).await.unwrap()
    });
    assert!(
        stored.as_ref() == Some(layer),
        "the bucket holds the right bytes again"
    );
}

#[test]
fn pulls_through_a_bucket_keep_working_while_the_hot_tier_covers_a_bucket_outage() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let skopeo = require_tool("skopeo", "skopeo");
    let curl = require_tool("curl", "curl");
    let mut garage = Garage::start(&dir.join("garage"));

    let registry = DockerRegistry::start(dir);
    // A small layer that fits the 1 MiB hot tier and a large one that does not.
    let image = Image::random(&[200_000, 3_000_000]);
    registry.push(&image, dir, "library/alpine", "3.20");
    // Asked for only while the bucket is down.
    let other = Image::random(&[150_000]);
    registry.push(&other, dir, "library/other", "1");

    // A raw package proxy beside it, its upstream a static file server.
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let (small_file, large_file) = (noise(100_000, 7), noise(2_000_000, 8));
    std::fs::write(files.join("small.bin"), &small_file).unwrap();
    std::fs::write(files.join("large.bin"), &large_file).unwrap();
    let files_server = StaticFiles::start(&files, &dir.join("files.log"));
    let raw = format!(
        "[[proxy]]\nname = \"files\"\nformat = \"raw\"\nupstream = \"{}\"\n",
        files_server.url()
    );
    let port = free_port();
    let config = s3_gateway(dir, "data", port, &garage, &registry, "1MiB", &raw);
    let (id_file, secret_file) = (dir.join("s3.id"), dir.join("s3.secret"));
    // A proxy named in the environment goes nowhere: the bucket is reached directly, as
    // every upstream is (only [upstream_proxy] routes the gateway's requests).
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut gateway = serve_airlock_with_env(
        Path::new(env!("CARGO_BIN_EXE_airlock")),
        &config,
        &dir.join("airlock.log"),
        port,
        &[
            ("HTTP_PROXY", &nowhere),
            ("http_proxy", &nowhere),
            ("HTTPS_PROXY", &nowhere),
            ("ALL_PROXY", &nowhere),
        ],
    );

    let cold = pull(&skopeo, port, &dir.join("cold"));
    assert!(
        cold.status.success(),
        "{}",
        String::from_utf8_lossy(&cold.stderr)
    );
    assert_pulled(&image, &dir.join("cold"));

    let file_url = |name: &str| format!("http://127.0.0.1:{port}/repository/files/{name}");
    let fetched = |name: &str| {
        let output = run(Command::new(&curl)
            .args(["-s", "-w", "\n%{http_code}"])
            .arg(file_url(name)));
        split_status(output.stdout)
    };
    for (name, bytes) in [("small.bin", &small_file), ("large.bin", &large_file)] {
        let (status, body) = fetched(name);
        assert_eq!(status, "200", "{name}");
        assert!(&body == bytes, "{name} differs");
    }

    // Every layer and file is an object in the bucket, under its digest.
    let bucket = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = look_into(&garage, dir, &id_file, &secret_file).await;
        let mut sizes = Vec::new();
        for blob in image.layers.iter().chain([&small_file, &large_file]) {
            let head = store.bucket().head(&S3Store::key(&Digest::of(blob))).await;
            sizes.push(head.unwrap().size);
        }
        sizes
    });
    let expected: Vec<u64> = image
        .layers
        .iter()
        .chain([&small_file, &large_file])
        .map(|l| l.len() as u64)
        .collect();
    assert_eq!(bucket, expected);

    // Warm, with the upstream gone: everything comes from the bucket and the hot tier.
    let upstream_port = registry.port;
    drop(registry);
    let warm = pull(&skopeo, port, &dir.join("warm"));
    assert!(
        warm.status.success(),
        "{}",
        String::from_utf8_lossy(&warm.stderr)
    );
    assert_pulled(&image, &dir.join("warm"));

    // /metrics shows the hot tier: within its 1 MiB, some reads answered from it.
    let metrics = String::from_utf8(
        run(Command::new(&curl)
            .arg("-sSf")
            .arg(format!("http://127.0.0.1:{port}/metrics")))
        .stdout,
    )
    .unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("airlock_hot_tier_budget_bytes"), 1 << 20);
    let held = value("airlock_hot_tier_bytes");
    assert!(held > 0 && held <= 1 << 20, "{held}");
    assert!(value("airlock_hot_tier_reads_total") > 0);
    assert!(value("airlock_hot_tier_fills_total") >= 2);

    // The bucket goes down: the small layer is served from the hot tier, the large one is
    // a 503 the client can retry, and the gateway does not exit.
    let _registry = DockerRegistry::start_on(dir, upstream_port);
    garage.stop();
    let (small, large) = (Digest::of(&image.layers[0]), Digest::of(&image.layers[1]));
    let (status, body) = get_blob(&curl, port, &small);
    assert_eq!(status, "200");
    assert!(body == image.layers[0]);
    let (status, body) = get_blob(&curl, port, &large);
    assert_eq!(status, "503", "{}", String::from_utf8_lossy(&body));
    let (status, body) = fetched("small.bin");
    assert_eq!(status, "200", "the small file is in the hot tier");
    assert!(body == small_file);
    let (status, body) = fetched("large.bin");
    assert_eq!(status, "503", "{}", String::from_utf8_lossy(&body));
    let cold = Digest::of(&other.layers[0]);
    let (status, body) = get_blob_of(&curl, port, "library/other", &cold);
    assert_eq!(status, "503", "a miss with the bucket down");
    // The client hears that storage is unavailable, not where the bucket is.
    let text = String::from_utf8_lossy(&body);
    let endpoint = garage.endpoint.trim_start_matches("http://");
    assert!(text.contains("UNAVAILABLE"), "{text}");
    assert!(
        !text.contains(endpoint) && !text.contains("blobs/sha256"),
        "{text}"
    );
    assert!(
        gateway.0.try_wait().unwrap().is_none(),
        "the gateway keeps running"
    );

    // The bucket returns: everything is served again.
    garage.resume();
    let again = pull(&skopeo, port, &dir.join("again"));
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_pulled(&image, &dir.join("again"));
}

#[test]
fn containerd_moves_to_the_next_gateway_when_one_is_killed_and_gets_the_blobs_the_first_stored() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let garage = Garage::start(&dir.join("garage"));
    let registry = DockerRegistry::start(dir);
    let layers: Vec<Vec<u8>> = (1..=3u8)
        .map(|n| tar_layer(&format!("layer-{n}.bin"), &vec![n; 400_000]))
        .collect();
    let image = Image::from_layers(layers, Platform::LINUX_AMD64);
    registry.push(&image, dir, "library/app", "1");

    // Two gateways on one bucket, each with its own data_dir.
    let (port_a, port_b) = (free_port(), free_port());
    let binary = Path::new(env!("CARGO_BIN_EXE_airlock"));
    let config_a = s3_gateway(dir, "a", port_a, &garage, &registry, "64MiB", "");
    let config_b = s3_gateway(dir, "b", port_b, &garage, &registry, "64MiB", "");
    let gateway_a = serve_airlock(binary, &config_a, &dir.join("a.log"), port_a);
    let _gateway_b = serve_airlock(binary, &config_b, &dir.join("b.log"), port_b);
    let hosts = mirror_hosts(dir, &[port_a, port_b]);

    // The first pull goes through A, the first host: A fetches and stores the layers.
    let containerd = Containerd::start(&dir.join("containerd-1"));
    let output = containerd.pull(&hosts, "docker.io/library/app:1");
    assert!(output.contains(&image.digest.to_string()), "{output}");
    drop(containerd);
    let layer_gets = |registry: &DockerRegistry| {
        registry
            .requests()
            .iter()
            .filter(|line| line.contains("\"GET /v2/library/app/blobs/"))
            .count()
    };
    let fetched = layer_gets(&registry);
    assert_eq!(fetched, 4, "config and three layers, once each");
    let b_log = std::fs::read_to_string(dir.join("b.log")).unwrap();
    assert!(
        !b_log.contains("library/app"),
        "B was not asked yet: {b_log}"
    );

    // A dies (kill -9). A fresh containerd with the same hosts.toml pulls through B, which
    // finds every blob A stored in the bucket: the upstream sees no blob request again.
    drop(gateway_a);
    wait_until("gateway A to die", Duration::from_secs(10), || {
        !port_open(port_a)
    });
    let containerd = Containerd::start(&dir.join("containerd-2"));
    let output = containerd.pull(&hosts, "docker.io/library/app:1");
    assert!(output.contains(&image.digest.to_string()), "{output}");
    assert!(output.contains("unpacking linux/amd64"), "{output}");
    assert_eq!(
        layer_gets(&registry),
        fetched,
        "B served the layers from the bucket"
    );
    let b_log = std::fs::read_to_string(dir.join("b.log")).unwrap();
    assert!(
        b_log.contains("library/app"),
        "the pull went through B: {b_log}"
    );
}

/// A hosted upload whose bytes do not hash to the digest the client named leaves nothing
/// in the bucket (its writer commits the object as it stages, under the bytes' own
/// digest); one that matches is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_hosted_upload_leaves_nothing_in_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let garage = Garage::start(&dir.join("garage"));
    let port = free_port();
    let hash = airlock_config::hash_password(b"pw").unwrap();
    let more = format!(
        "[admin]\nusers = [{{ name = \"admin\", password_hash = \"{hash}\" }}]\n[[hosted]]\nname = \"lab\"\n"
    );
    let config = garage.gateway_config(dir, "data", port, "http://127.0.0.1:9/", "", &more);
    let _gateway = serve_airlock(
        Path::new(env!("CARGO_BIN_EXE_airlock")),
        &config,
        &dir.join("airlock.log"),
        port,
    );
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let token: serde_json::Value = http
        .get(url(
            "/service/token?service=airlock&scope=repository:lab/app:pull,push",
        ))
        .basic_auth("admin", Some("pw"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let upload = |bytes: Vec<u8>, named: Digest| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let started = http
                .post(url("/v2/lab/app/blobs/uploads/"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let location = started.headers()["location"].to_str().unwrap().to_owned();
            http.put(url(&format!("{location}?digest={named}")))
                .bearer_auth(&token)
                .body(bytes)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let (refused, kept) = (noise(70_000, 61), noise(70_000, 62));
    let status = upload(refused.clone(), Digest::of(b"something else")).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    let status = upload(kept.clone(), Digest::of(&kept)).await;
    assert_eq!(status, reqwest::StatusCode::CREATED);

    let store = look_into(&garage, dir, &dir.join("s3.id"), &dir.join("s3.secret")).await;
    use airlock_store::BlobStore as _;
    assert_eq!(store.stat(&Digest::of(&refused)).await.unwrap(), None);
    assert_eq!(store.stat(&Digest::of(&kept)).await.unwrap(), Some(70_000));
}
