//! Three gateways on one Garage bucket sharing their records and download leases through
//! K2V (`[storage] k2v_endpoint`): a blob missed by all three at once is fetched upstream
//! once, a tag one replica cached is served by the others with the upstream gone, and
//! containerd, given all three as mirrors, finishes a pull through the next replica when
//! the one it was using is killed mid-pull.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use airlock_testkit::{
    AuthMode, Containerd, FakeRegistry, Garage, Image, Killed, Platform, free_port, mirror_hosts,
    noise, port_open, require_tool, run, serve_airlock, tar_layer, wait_until,
};
use airlock_types::Digest;

/// Three replicas on `garage` in front of `upstream`, sharing records through K2V:
/// their ports and processes.
fn replicas(dir: &Path, garage: &Garage, upstream: &str) -> Vec<(u16, Killed)> {
    replicas_with_ttl(dir, garage, upstream, "1h")
}

/// [`replicas`] whose proxy keeps tags for `tag_ttl`.
fn replicas_with_ttl(
    dir: &Path,
    garage: &Garage,
    upstream: &str,
    tag_ttl: &str,
) -> Vec<(u16, Killed)> {
    let binary = Path::new(env!("CARGO_BIN_EXE_airlock"));
    let storage = format!(
        "local_cache = \"64MiB\"\nk2v_endpoint = \"{}\"",
        garage.k2v_endpoint
    );
    ["a", "b", "c"]
        .iter()
        .map(|name| {
            let port = free_port();
            let config = garage.gateway_config(dir, name, port, upstream, &storage, "");
            let text = std::fs::read_to_string(&config).unwrap();
            let text = text.replace("tag_ttl = \"1h\"", &format!("tag_ttl = \"{tag_ttl}\""));
            std::fs::write(&config, text).unwrap();
            let log = dir.join(format!("{name}.log"));
            (port, serve_airlock(binary, &config, &log, port))
        })
        .collect()
}

/// `curl` of `path` on the gateway at `port`: the status and the body.
fn get(port: u16, path: &str, accept: Option<&str>) -> (String, Vec<u8>) {
    let mut command = Command::new(require_tool("curl", "curl"));
    command.args(["-s", "-w", "\n%{http_code}"]);
    if let Some(accept) = accept {
        command.args(["-H", &format!("Accept: {accept}")]);
    }
    let mut body = run(command.arg(format!("http://127.0.0.1:{port}{path}"))).stdout;
    let split = body.iter().rposition(|b| *b == b'\n').unwrap();
    let status = String::from_utf8(body.split_off(split + 1)).unwrap();
    body.pop();
    (status, body)
}

fn image(layers: Vec<Vec<u8>>) -> Image {
    Image::from_layers(layers, Platform::LINUX_AMD64)
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_cold_requests_spread_over_three_replicas_fetch_the_blob_upstream_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let garage = Garage::start(&dir.join("garage"));
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let layer = noise(4 << 20, 7);
    let digest = Digest::of(&layer);
    upstream.push_image("library/app", "1", &image(vec![layer.clone()]));
    // About a tenth of a second per MiB: the download is still running when the last
    // request arrives.
    upstream.throttle(Some(Duration::from_millis(5)));
    let gateways = replicas(dir, &garage, &upstream.url());

    let path = format!("/v2/hub/library/app/blobs/{digest}");
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (port, path) = (gateways[i % 3].0, path.clone());
            std::thread::spawn(move || get(port, &path, None))
        })
        .collect();
    for client in clients {
        let (status, body) = client.join().unwrap();
        assert_eq!(status, "200");
        assert!(body == layer, "a client received other bytes");
    }
    let fetches = upstream.count("GET", &format!("/v2/library/app/blobs/{digest}"));
    assert!(
        fetches <= 3,
        "never more than one fetch per replica: {fetches}"
    );
    assert_eq!(fetches, 1, "one replica fetched, the others waited for it");
    let waited = ["a", "b", "c"]
        .iter()
        .map(|name| std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap())
        .filter(|log| log.contains("another replica is fetching this blob"))
        .count();
    assert_eq!(
        waited, 2,
        "the two other replicas waited for the one fetching"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_cached_through_one_replica_is_served_by_the_others_with_the_upstream_down() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let garage = Garage::start(&dir.join("garage"));
    let upstream = FakeRegistry::start(AuthMode::Token).await;
    let layer = noise(300_000, 3);
    let image = image(vec![layer.clone()]);
    upstream.push_image("library/app", "1", &image);
    let gateways = replicas(dir, &garage, &upstream.url());
    let accept = Some(image.media_type);

    let (status, manifest) = get(gateways[0].0, "/v2/hub/library/app/manifests/1", accept);
    assert_eq!(status, "200");
    assert!(manifest == image.manifest);
    let layer_path = format!("/v2/hub/library/app/blobs/{}", Digest::of(&layer));
    assert_eq!(get(gateways[0].0, &layer_path, None).0, "200");

    drop(upstream);
    for (port, _) in &gateways[1..] {
        let (status, body) = get(*port, "/v2/hub/library/app/manifests/1", accept);
        assert_eq!(status, "200", "{}", String::from_utf8_lossy(&body));
        assert_eq!(Digest::of(&body), image.digest);
        let (status, body) = get(*port, &layer_path, None);
        assert_eq!(status, "200");
        assert!(body == layer);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_whose_tag_went_stale_takes_the_check_another_replica_made_since() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let garage = Garage::start(&dir.join("garage"));
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = image(vec![noise(1000, 5)]);
    upstream.push_image("library/app", "1", &image);
    let gateways = replicas_with_ttl(dir, &garage, &upstream.url(), "3s");
    let (a, b) = (gateways[0].0, gateways[1].0);
    let accept = Some(image.media_type);
    let path = "/v2/hub/library/app/manifests/1";
    let heads = || upstream.count("HEAD", "/v2/library/app/manifests/1");

    assert_eq!(get(a, path, accept).0, "200");
    std::thread::sleep(Duration::from_secs(4));
    // B's copy (taken from A's record) is stale: B checks upstream with a HEAD.
    assert_eq!(get(b, path, accept).0, "200");
    assert_eq!(heads(), 1);
    // A's own copy is stale too, but B checked the tag a moment ago: no second HEAD.
    let (status, body) = get(a, path, accept);
    assert_eq!(status, "200");
    assert_eq!(Digest::of(&body), image.digest);
    assert_eq!(heads(), 1, "A took B's check");
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_finishes_a_pull_through_the_next_replica_when_the_first_is_killed_mid_pull() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let garage = Garage::start(&dir.join("garage"));
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let first = image(vec![tar_layer("first.bin", &noise(200_000, 1))]);
    upstream.push_image("library/app", "1", &first);
    let second = image(
        (1..=3u64)
            .map(|n| tar_layer(&format!("second-{n}.bin"), &noise(3 << 20, n + 10)))
            .collect(),
    );
    upstream.push_image("library/app", "2", &second);
    let mut gateways = replicas(dir, &garage, &upstream.url());
    let ports: Vec<u16> = gateways.iter().map(|(port, _)| *port).collect();
    let hosts = mirror_hosts(dir, &ports);

    let containerd = Containerd::start(&dir.join("containerd"));
    let output = containerd.pull(&hosts, "docker.io/library/app:1");
    assert!(output.contains(&first.digest.to_string()), "{output}");

    // The second pull is slow upstream; A (the first host) is killed once it is fetching.
    upstream.throttle(Some(Duration::from_millis(20)));
    let pull = std::thread::spawn(move || {
        let output = containerd.pull(&hosts, "docker.io/library/app:2");
        (containerd, output)
    });
    let layer_gets = || {
        second
            .layers
            .iter()
            .map(|l| upstream.count("GET", &format!("/v2/library/app/blobs/{}", Digest::of(l))))
            .sum::<u64>()
    };
    wait_until("A to fetch a layer", Duration::from_secs(60), || {
        layer_gets() > 0
    });
    let (port_a, gateway_a) = gateways.remove(0);
    drop(gateway_a);
    wait_until("A to die", Duration::from_secs(10), || !port_open(port_a));
    upstream.throttle(None);

    let (_containerd, output) = pull.join().unwrap();
    assert!(output.contains(&second.digest.to_string()), "{output}");
    assert!(output.contains("unpacking linux/amd64"), "{output}");
    let b_log = std::fs::read_to_string(dir.join("b.log")).unwrap();
    assert!(
        b_log.contains("library/app"),
        "the pull finished through B: {b_log}"
    );
}
