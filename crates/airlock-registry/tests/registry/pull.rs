//! The pull-through registry end to end over HTTP, against in-process fake upstreams:
//! routing, auth flows, redirects, error mapping, ranges, verification and revalidation.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::Server;
use airlock_config::Config;
use airlock_testkit::{AuthMode, FakeRegistry, Fault, Image, Index, Platform};
use airlock_types::Digest;

struct Running {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and hands back its directory once it has let go of it.
    async fn stop(self) -> tempfile::TempDir {
        let Running {
            dir, _stop: stop, ..
        } = self;
        drop(stop);
        tokio::time::sleep(Duration::from_millis(200)).await;
        dir
    }
}

async fn start_in(dir: tempfile::TempDir, proxies: &str) -> Running {
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n{proxies}",
        dir.path().join("data")
    );
    let config = Config::from_toml_str(&text, "test").expect("test config is valid");
    let server = Server::bind(config).await.expect("the registry starts");
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = rx.await;
    }));
    Running {
        addr,
        dir,
        _stop: tx,
    }
}

async fn start(proxies: &str) -> Running {
    start_in(tempfile::tempdir().unwrap(), proxies).await
}

fn hub(upstream: &FakeRegistry, extra: &str) -> String {
    format!(
        "[[proxy]]\nname = \"dockerhub-proxy\"\nformat = \"oci\"\nupstream = \"{}\"\nhost = \"docker.io\"\n{extra}\n",
        upstream.url()
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.unwrap()
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("OCI errors are JSON");
    (
        status,
        body["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn pull_by_project_path_is_byte_exact_and_cached() {
    let upstream = FakeRegistry::start(AuthMode::Token).await;
    let image = Image::random(&[1000, 300_000]);
    upstream.push_image("library/postgres", "15", &image);
    let gw = start(&hub(&upstream, "")).await;

    let url = gw.url("/v2/dockerhub-proxy/library/postgres/manifests/15");
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["docker-content-digest"],
        image.digest.to_string().as_str()
    );
    assert_eq!(head.headers()["content-type"], image.media_type);
    assert_eq!(
        head.headers()["content-length"],
        image.manifest.len().to_string().as_str()
    );

    let response = get(&url).await;
    assert_eq!(
        response.headers()["docker-content-digest"],
        image.digest.to_string().as_str()
    );
    assert_eq!(
        response.headers()["x-airlock-cache"],
        "hit",
        "the HEAD already cached the tag"
    );
    assert_eq!(
        response.bytes().await.unwrap(),
        image.manifest,
        "manifest bytes unchanged"
    );

    for blob in image.blobs() {
        let digest = Digest::of(blob);
        let url = gw.url(&format!(
            "/v2/dockerhub-proxy/library/postgres/blobs/{digest}"
        ));
        let head = client().head(&url).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(
            head.headers()["content-length"],
            blob.len().to_string().as_str()
        );
        let first = get(&url).await;
        assert_eq!(first.headers()["x-airlock-cache"], "miss");
        assert_eq!(
            first.headers()["docker-content-digest"],
            digest.to_string().as_str()
        );
        assert_eq!(first.bytes().await.unwrap(), blob);
        // The second request either joins the download still committing or hits the cache.
        let second = get(&url).await;
        assert_eq!(second.bytes().await.unwrap(), blob);
        let path = format!("/v2/library/postgres/blobs/{digest}");
        assert_eq!(
            upstream.count("GET", &path),
            1,
            "one upstream fetch per blob"
        );
    }
    assert_eq!(upstream.tokens_issued(), 1, "the token is cached per scope");
}

#[tokio::test]
async fn containerd_ns_routing_and_docker_hub_normalization() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[10]);
    upstream.push_image("library/nginx", "1.27", &image);
    let gw = start(&hub(&upstream, "")).await;
    for ns in ["docker.io", "registry-1.docker.io", "index.docker.io"] {
        let response = get(&gw.url(&format!("/v2/nginx/manifests/1.27?ns={ns}"))).await;
        assert_eq!(response.status(), 200, "ns={ns}");
        assert_eq!(response.bytes().await.unwrap(), image.manifest);
    }
    let response = get(&gw.url("/v2/library/nginx/manifests/1.27?ns=quay.io")).await;
    assert_eq!(error_code(response).await, (404, "NAME_UNKNOWN".into()));
    let response = get(&gw.url("/v2/library/nginx/manifests/1.27")).await;
    assert_eq!(
        error_code(response).await,
        (404, "NAME_UNKNOWN".into()),
        "no default proxy configured"
    );
}

#[tokio::test]
async fn default_proxy_serves_unprefixed_paths() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[10]);
    upstream.push_image("library/redis", "7", &image);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndefault_proxy = \"dockerhub-proxy\"\n[tls]\nmode = \"off\"\n{}",
        hub(&upstream, "")
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::from_toml_str(&text, "test").unwrap();
    config.data_dir = dir.path().to_owned();
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));
    let response = get(&format!("http://{addr}/v2/redis/manifests/7")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), image.manifest);
}

#[tokio::test]
async fn multi_arch_index_and_child_by_digest() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let amd = Image::from_layers(
        vec![b"amd64 layer".to_vec()],
        Platform {
            os: "linux",
            arch: "amd64",
        },
    );
    let arm = Image::from_layers(
        vec![b"arm64 layer".to_vec()],
        Platform {
            os: "linux",
            arch: "arm64",
        },
    );
    let index = Index::new(vec![
        (
            Platform {
                os: "linux",
                arch: "amd64",
            },
            amd.clone(),
        ),
        (
            Platform {
                os: "linux",
                arch: "arm64",
            },
            arm.clone(),
        ),
    ]);
    upstream.push_index("org/app", "v1", &index);
    let gw = start(&format!(
        "[[proxy]]\nname = \"ghcr-proxy\"\nformat = \"oci\"\nupstream = \"{}\"\nhost = \"ghcr.io\"\n",
        upstream.url()
    ))
    .await;
    let response = client()
        .get(gw.url("/v2/ghcr-proxy/org/app/manifests/v1"))
        .header(
            "accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(response.bytes().await.unwrap(), index.manifest);
    let child = gw.url(&format!("/v2/ghcr-proxy/org/app/manifests/{}", arm.digest));
    let response = get(&child).await;
    assert_eq!(
        response.headers()["docker-content-digest"],
        arm.digest.to_string().as_str()
    );
    assert_eq!(response.bytes().await.unwrap(), arm.manifest);
    let path = format!("/v2/org/app/manifests/{}", arm.digest);
    let again = get(&child).await;
    assert_eq!(again.headers()["x-airlock-cache"], "hit");
    assert_eq!(
        upstream.count("GET", &path),
        1,
        "a cached digest never goes upstream again"
    );
}

#[tokio::test]
async fn credentials_for_token_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    for auth in [
        AuthMode::TokenWithCredentials {
            username: "puller".into(),
            password: "s3cret".into(),
        },
        AuthMode::Basic {
            username: "puller".into(),
            password: "s3cret".into(),
        },
    ] {
        let upstream = FakeRegistry::start(auth.clone()).await;
        let image = Image::random(&[64]);
        upstream.push_image("team/tool", "1", &image);
        let extra = format!("username = \"puller\"\npassword_file = {secret:?}");
        let gw = start(&hub(&upstream, &extra)).await;
        let response = get(&gw.url("/v2/dockerhub-proxy/team/tool/manifests/1")).await;
        assert_eq!(response.status(), 200, "{auth:?}");
        let blob = gw.url(&format!(
            "/v2/dockerhub-proxy/team/tool/blobs/{}",
            Digest::of(&image.layers[0])
        ));
        assert_eq!(get(&blob).await.bytes().await.unwrap(), image.layers[0]);

        let wrong = dir.path().join("wrong");
        std::fs::write(&wrong, "nope").unwrap();
        let gw = start(&hub(
            &upstream,
            &format!("username = \"puller\"\npassword_file = {wrong:?}"),
        ))
        .await;
        let response = get(&gw.url("/v2/dockerhub-proxy/team/tool/manifests/1")).await;
        assert_eq!(
            error_code(response).await,
            (401, "UNAUTHORIZED".into()),
            "{auth:?}"
        );
    }
}

#[tokio::test]
async fn blob_redirects_are_followed() {
    let upstream = FakeRegistry::start(AuthMode::Token).await;
    upstream.redirect_blobs(true);
    let image = Image::random(&[5000]);
    upstream.push_image("library/busybox", "1", &image);
    let gw = start(&hub(&upstream, "")).await;
    let digest = Digest::of(&image.layers[0]);
    let response = get(&gw.url(&format!(
        "/v2/dockerhub-proxy/library/busybox/blobs/{digest}"
    )))
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), image.layers[0]);
    assert_eq!(upstream.count("GET", &format!("/cdn/{}", digest.hex())), 1);
}

#[tokio::test]
async fn upstream_statuses_become_oci_errors() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[10]);
    upstream.push_image("library/a", "1", &image);
    let gw = start(&hub(&upstream, "")).await;
    let manifest = |tag: &str| gw.url(&format!("/v2/dockerhub-proxy/library/a/manifests/{tag}"));
    assert_eq!(
        error_code(get(&manifest("missing")).await).await,
        (404, "MANIFEST_UNKNOWN".into())
    );
    let blob = gw.url(&format!(
        "/v2/dockerhub-proxy/library/a/blobs/{}",
        Digest::of(b"absent")
    ));
    assert_eq!(
        error_code(get(&blob).await).await,
        (404, "BLOB_UNKNOWN".into())
    );

    upstream.fault("/manifests/1", Fault::Status(429));
    let response = get(&manifest("1")).await;
    assert_eq!(response.headers()["retry-after"], "30");
    assert_eq!(error_code(response).await, (429, "TOOMANYREQUESTS".into()));
    upstream.clear_faults();
    upstream.fault("/manifests/1", Fault::Status(403));
    assert_eq!(
        error_code(get(&manifest("1")).await).await,
        (403, "DENIED".into())
    );
    upstream.clear_faults();
    upstream.fault("/manifests/1", Fault::Status(503));
    assert_eq!(
        error_code(get(&manifest("1")).await).await,
        (502, "UNAVAILABLE".into())
    );
    upstream.clear_faults();
    upstream.fault("/manifests/1", Fault::Status(401));
    assert_eq!(
        error_code(get(&manifest("1")).await).await,
        (401, "UNAUTHORIZED".into())
    );
    upstream.clear_faults();
    assert_eq!(
        get(&manifest("1")).await.status(),
        200,
        "healed upstream works again"
    );
}

#[tokio::test]
async fn malformed_challenge_is_a_clear_error() {
    let upstream = FakeRegistry::start(AuthMode::MalformedChallenge).await;
    let gw = start(&hub(&upstream, "")).await;
    let response = get(&gw.url("/v2/dockerhub-proxy/library/a/manifests/1")).await;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 502);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("without realm"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_names_and_traversal_never_reach_upstream() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let gw = start(&hub(&upstream, "")).await;
    let cases = [
        ("/v2/dockerhub-proxy/../../etc/passwd/manifests/latest", 400),
        (
            "/v2/dockerhub-proxy/library/..%2f..%2fx/manifests/latest",
            400,
        ),
        ("/v2/dockerhub-proxy/Library/UPPER/manifests/latest", 400),
        ("/v2/dockerhub-proxy//x/manifests/latest", 400),
        ("/v2/dockerhub-proxy/library/a/manifests/..", 400),
        ("/v2/dockerhub-proxy/library/a/blobs/sha256:..%2f..", 400),
        ("/v2/dockerhub-proxy/library/a/blobs/md5:abcd", 400),
        ("/v2/evil.example.com/library/a/manifests/1", 404),
        ("/v2/library/a/manifests/1?ns=evil.example.com", 404),
        ("/v2/dockerhub-proxy/library/a/uploads/", 404),
    ];
    for (path, status) in cases {
        // Raw requests: an HTTP client library would normalize the dot segments away.
        let response = common::raw_get(gw.addr, path).await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {response}"
        );
        assert!(
            response.contains("\"errors\":[{\"code\":"),
            "{path}: {response}"
        );
    }
    let response = client()
        .put(gw.url("/v2/dockerhub-proxy/library/a/manifests/1"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (405, "UNSUPPORTED".into()));
    assert_eq!(upstream.total_requests(), 0);
}

#[tokio::test]
async fn ranges_on_cached_and_missing_blobs() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[100_000]);
    upstream.push_image("library/r", "1", &image);
    let gw = start(&hub(&upstream, "")).await;
    let layer = &image.layers[0];
    let url = gw.url(&format!(
        "/v2/dockerhub-proxy/library/r/blobs/{}",
        Digest::of(layer)
    ));
    let ranged = |spec: &'static str| {
        let url = url.clone();
        async move {
            client()
                .get(&url)
                .header("range", spec)
                .send()
                .await
                .unwrap()
        }
    };
    let miss = ranged("bytes=1000-1999").await;
    assert_eq!(miss.status(), 206);
    assert_eq!(miss.headers()["content-range"], "bytes 1000-1999/100000");
    assert_eq!(miss.bytes().await.unwrap(), &layer[1000..2000]);
    // Wait for the background download to commit, then ask the cache.
    for _ in 0..100 {
        if get(&url).await.headers()["x-airlock-cache"] == "hit" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hit = ranged("bytes=99990-").await;
    assert_eq!(hit.status(), 206);
    assert_eq!(hit.headers()["content-range"], "bytes 99990-99999/100000");
    assert_eq!(hit.bytes().await.unwrap(), &layer[99_990..]);
    let suffix = ranged("bytes=-5").await;
    assert_eq!(suffix.bytes().await.unwrap(), &layer[99_995..]);
    let unsatisfiable = ranged("bytes=100000-").await;
    assert_eq!(unsatisfiable.status(), 416);
    assert_eq!(unsatisfiable.headers()["content-range"], "bytes */100000");
}

#[tokio::test]
async fn wrong_or_truncated_upstream_bytes_are_never_cached() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[200_000]);
    upstream.push_image("library/w", "1", &image);
    let gw = start(&hub(&upstream, "")).await;
    let digest = Digest::of(&image.layers[0]);
    let url = gw.url(&format!("/v2/dockerhub-proxy/library/w/blobs/{digest}"));

    for fault in [Fault::WrongBytes, Fault::Truncate(50_000)] {
        upstream.clear_faults();
        upstream.fault(&format!("/blobs/{digest}"), fault.clone());
        let response = get(&url).await;
        let body = response.bytes().await;
        assert!(
            body.is_err() || body.unwrap().as_ref() != image.layers[0].as_slice(),
            "{fault:?}: wrong bytes must not arrive whole"
        );
        let blob_file = gw
            .dir
            .path()
            .join("data/store-v1/blobs/sha256")
            .join(&digest.hex()[..2])
            .join(digest.hex());
        assert!(
            !blob_file.exists(),
            "{fault:?}: nothing unverified in the store"
        );
    }
    upstream.clear_faults();
    let healed = get(&url).await;
    assert_eq!(healed.status(), 200);
    assert_eq!(
        healed.bytes().await.unwrap(),
        image.layers[0],
        "the next request retries and succeeds"
    );

    upstream.fault("/manifests/1", Fault::WrongBytes);
    let response = get(&gw.url("/v2/dockerhub-proxy/library/w/manifests/1")).await;
    assert_eq!(
        error_code(response).await.0,
        502,
        "a manifest that does not match its announced digest"
    );
}

#[tokio::test]
async fn tags_revalidate_and_serve_stale_when_upstream_fails() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let v1 = Image::random(&[10]);
    upstream.push_image("library/t", "latest", &v1);
    let gw = start(&hub(&upstream, "tag_ttl = \"0s\"")).await;
    let url = gw.url("/v2/dockerhub-proxy/library/t/manifests/latest");
    assert_eq!(get(&url).await.headers()["x-airlock-cache"], "miss");
    let again = get(&url).await;
    assert_eq!(again.headers()["x-airlock-cache"], "revalidated");
    assert_eq!(
        upstream.count("HEAD", "/v2/library/t/manifests/latest"),
        1,
        "revalidation uses HEAD"
    );

    let v2 = Image::random(&[11]);
    upstream.push_image("library/t", "latest", &v2);
    let changed = get(&url).await;
    assert_eq!(changed.headers()["x-airlock-cache"], "miss");
    assert_eq!(
        changed.bytes().await.unwrap(),
        v2.manifest,
        "a moved tag is fetched again"
    );

    upstream.fault("/manifests/latest", Fault::Status(503));
    let stale = get(&url).await;
    assert_eq!(stale.headers()["x-airlock-cache"], "stale");
    assert!(
        stale.headers()["warning"]
            .to_str()
            .unwrap()
            .starts_with("110")
    );
    assert_eq!(stale.bytes().await.unwrap(), v2.manifest);
}

#[tokio::test]
async fn tag_list_with_pagination_under_the_client_name() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[10]);
    for tag in ["a", "b", "c"] {
        upstream.push_image("library/l", tag, &image);
    }
    let gw = start(&hub(&upstream, "")).await;
    let list: serde_json::Value = get(&gw.url("/v2/dockerhub-proxy/library/l/tags/list"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["name"], "dockerhub-proxy/library/l");
    assert_eq!(list["tags"], serde_json::json!(["a", "b", "c"]));
    let missing = get(&gw.url("/v2/dockerhub-proxy/library/nothing/tags/list")).await;
    assert_eq!(error_code(missing).await, (404, "NAME_UNKNOWN".into()));
}

#[tokio::test]
async fn concurrent_cold_requests_share_one_upstream_fetch() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[4 << 20]);
    upstream.push_image("library/big", "1", &image);
    let gw = start(&hub(&upstream, "")).await;
    let digest = Digest::of(&image.layers[0]);
    let url = gw.url(&format!("/v2/dockerhub-proxy/library/big/blobs/{digest}"));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await.bytes().await.unwrap() })
        })
        .collect();
    for task in tasks {
        assert_eq!(Digest::of(&task.await.unwrap()), digest);
    }
    assert_eq!(
        upstream.count("GET", &format!("/v2/library/big/blobs/{digest}")),
        1
    );
}

#[tokio::test]
async fn starts_and_serves_cache_with_upstream_unreachable() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[10]);
    upstream.push_image("library/o", "1", &image);
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().to_owned();
    let gw = start_in(dir, &hub(&upstream, "tag_ttl = \"0s\"")).await;
    let path = "/v2/dockerhub-proxy/library/o/manifests/1";
    assert_eq!(get(&gw.url(path)).await.status(), 200);
    let layer = format!(
        "/v2/dockerhub-proxy/library/o/blobs/{}",
        Digest::of(&image.layers[0])
    );
    assert_eq!(get(&gw.url(&layer)).await.status(), 200);
    let Running {
        dir, _stop: stop, ..
    } = gw;
    drop(stop);
    drop(upstream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(dir.path(), keep);
    let dead = "[[proxy]]\nname = \"dockerhub-proxy\"\nformat = \"oci\"\nupstream = \"http://127.0.0.1:1\"\nhost = \"docker.io\"\ntag_ttl = \"0s\"\n";
    let gw = start_in(dir, dead).await;
    let response = get(&gw.url(path)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-airlock-cache"], "stale");
    assert_eq!(response.bytes().await.unwrap(), image.manifest);
    assert_eq!(
        get(&gw.url(&layer)).await.bytes().await.unwrap(),
        image.layers[0]
    );
}

#[tokio::test]
async fn concurrent_cold_tag_requests_share_one_upstream_fetch() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[10]);
    upstream.push_image("library/popular", "1", &image);
    let gw = start(&hub(&upstream, "")).await;
    let url = gw.url("/v2/dockerhub-proxy/library/popular/manifests/1");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await.bytes().await.unwrap() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), image.manifest);
    }
    assert_eq!(upstream.count("GET", "/v2/library/popular/manifests/1"), 1);

    let by_digest = gw.url(&format!(
        "/v2/dockerhub-proxy/library/popular/manifests/{}",
        image.digest
    ));
    let other = start(&hub(&upstream, "")).await;
    let by_digest_elsewhere = other.url(&format!(
        "/v2/dockerhub-proxy/library/popular/manifests/{}",
        image.digest
    ));
    drop(by_digest);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let url = by_digest_elsewhere.clone();
            tokio::spawn(async move { get(&url).await.bytes().await.unwrap() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), image.manifest);
    }
    let path = format!("/v2/library/popular/manifests/{}", image.digest);
    assert_eq!(
        upstream.count("GET", &path),
        1,
        "concurrent misses of one digest: one fetch"
    );
}

/// A range on a blob miss whose upstream sends no `Content-Length` used to be answered 200
/// with the bytes from the range start: a shifted body labelled as the whole blob.
#[tokio::test]
async fn range_on_miss_without_upstream_length_never_serves_shifted_body_as_whole() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[300_000]);
    upstream.push_image("library/chunked", "1", &image);
    upstream.chunked_blobs(true);
    // Slow enough that the request arrives while the size is still unknown.
    upstream.throttle(Some(Duration::from_millis(40)));
    let gw = start(&hub(&upstream, "")).await;
    let layer = &image.layers[0];
    let url = gw.url(&format!(
        "/v2/dockerhub-proxy/library/chunked/blobs/{}",
        Digest::of(layer)
    ));
    for (spec, start, end) in [
        ("bytes=1000-1999", 1000, 2000),
        ("bytes=5000-", 5000, layer.len()),
    ] {
        let response = client()
            .get(&url)
            .header("range", spec)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap();
        match status {
            206 => {
                assert_eq!(
                    headers["content-range"],
                    format!("bytes {start}-{}/{}", end - 1, layer.len()).as_str()
                );
                assert_eq!(body, &layer[start..end], "{spec}: the asked-for bytes");
            }
            200 => {
                if let Some(length) = headers.get("content-length") {
                    assert_eq!(length, layer.len().to_string().as_str());
                }
                assert_eq!(body.len(), layer.len(), "{spec}: a 200 is the whole blob");
                assert_eq!(body, layer.as_slice(), "{spec}: a 200 starts at byte 0");
            }
            other => panic!("{spec}: unexpected status {other}"),
        }
    }
    assert_eq!(
        upstream.count(
            "GET",
            &format!("/v2/library/chunked/blobs/{}", Digest::of(layer))
        ),
        1,
        "both requests share one upstream download"
    );
}

/// A client refusing indexes used to replace the multi-arch index cached for a tag with the
/// single-platform manifest the upstream gave it, and nodes of every other architecture then
/// got that manifest until `tag_ttl` ran out.
#[tokio::test]
async fn tag_cache_is_not_keyed_by_the_kind_of_manifest() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let platform = |arch| Platform { os: "linux", arch };
    let amd = Image::from_layers(vec![b"amd64".to_vec()], platform("amd64"));
    let arm = Image::from_layers(vec![b"arm64".to_vec()], platform("arm64"));
    let index = Index::new(vec![
        (platform("amd64"), amd.clone()),
        (platform("arm64"), arm.clone()),
    ]);
    upstream.push_index("library/multi", "1", &index);
    let gw = start(&hub(&upstream, "tag_ttl = \"1h\"")).await;
    let url = gw.url("/v2/dockerhub-proxy/library/multi/manifests/1");
    // containerd's Accept, and one of a client that knows no index type.
    let index_capable = "application/vnd.docker.distribution.manifest.v2+json, \
        application/vnd.docker.distribution.manifest.list.v2+json, \
        application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";
    let single_only = "application/vnd.docker.distribution.manifest.v2+json, \
        application/vnd.oci.image.manifest.v1+json";
    let fetch = |accept: &'static str, head: bool| {
        let url = url.clone();
        async move {
            let request = if head {
                client().head(&url)
            } else {
                client().get(&url)
            };
            let response = request.header("accept", accept).send().await.unwrap();
            assert_eq!(response.status(), 200, "{accept}");
            let cache = response.headers()["x-airlock-cache"]
                .to_str()
                .unwrap()
                .to_owned();
            let digest = response.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_owned();
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            (cache, digest, content_type, response.bytes().await.unwrap())
        }
    };

    let (cache, _, content_type, body) = fetch(index_capable, false).await;
    assert_eq!(
        (cache.as_str(), content_type.as_str()),
        ("miss", index.media_type)
    );
    assert_eq!(body, index.manifest);

    let (cache, digest, content_type, body) = fetch(single_only, false).await;
    assert_eq!(
        cache, "miss",
        "another kind of client is another upstream answer"
    );
    assert_eq!(
        digest,
        amd.digest.to_string(),
        "what the upstream gives for that Accept"
    );
    assert_eq!(content_type, amd.media_type);
    assert_eq!(body, amd.manifest);

    for head in [true, false] {
        let (cache, digest, content_type, body) = fetch(index_capable, head).await;
        assert_eq!(cache, "hit");
        assert_eq!(
            digest,
            index.digest.to_string(),
            "head={head}: still the index"
        );
        assert_eq!(content_type, index.media_type);
        if !head {
            assert_eq!(body, index.manifest, "byte-exact");
        }
        let (cache, digest, _, _) = fetch(single_only, head).await;
        assert_eq!(cache, "hit");
        assert_eq!(digest, amd.digest.to_string());
    }
    assert_eq!(
        upstream.count("GET", "/v2/library/multi/manifests/1"),
        2,
        "one upstream fetch per kind of client, then the cache"
    );
}

/// A tmpfs mounted on `dir` until dropped (lazily unmounted, so open files do not hold it).
/// Mounting needs root, as the suite runs (`scripts/test.sh`).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "airlock-test"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root; the suite runs as root"
        );
        Self(dir.to_owned())
    }

    /// Bytes free on the filesystem, as `stat -f` reports them.
    fn free(&self) -> u64 {
        let out = std::process::Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(&self.0)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().unwrap());
        fields.next().unwrap() * fields.next().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_serves_what_it_holds_refuses_what_cannot_fit_and_recovers() {
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let small = Image::random(&[256 << 10]);
    let big = Image::random(&[6 << 20]);
    upstream.push_image("library/small", "1", &small);
    upstream.push_image("library/big", "1", &big);
    let small_path = format!("/v2/library/small/blobs/{}", Digest::of(&small.layers[0]));
    let through = |path: &str| path.replacen("/v2/", "/v2/dockerhub-proxy/", 1);
    let big_digest = Digest::of(&big.layers[0]);
    let big_path = format!("/v2/library/big/blobs/{big_digest}");
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("data"), "32m");
    let gw = start_in(dir, &hub(&upstream, "")).await;
    let small_url = gw.url(&through(&small_path));
    let big_url = gw.url(&through(&big_path));
    assert_eq!(
        get(&small_url).await.bytes().await.unwrap(),
        small.layers[0]
    );

    // Leave 5 MiB free: less than the big layer and the headroom beside it.
    let filler = gw.dir.path().join("data/filler");
    std::fs::write(&filler, vec![0u8; (disk.free() - (5 << 20)) as usize]).unwrap();
    let refused = get(&big_url).await;
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("disk is full"), "{message}");
    // What it holds is still served, and nothing of the refused blob stays behind.
    assert_eq!(
        get(&small_url).await.bytes().await.unwrap(),
        small.layers[0]
    );
    assert_eq!(get(&big_url).await.status(), 503, "not stored, asked again");
    assert_eq!(upstream.count("GET", &big_path), 2);

    // The index survives a restart on the full disk: the small layer is a hit.
    let gw = start_in(gw.stop().await, &hub(&upstream, "")).await;
    let small_url = gw.url(&through(&small_path));
    let big_url = gw.url(&through(&big_path));
    assert_eq!(
        get(&small_url).await.bytes().await.unwrap(),
        small.layers[0]
    );
    assert_eq!(upstream.count("GET", &small_path), 1);

    // Space returns: the big layer is stored, then served without the upstream.
    std::fs::remove_file(&filler).unwrap();
    let fetched = get(&big_url).await;
    assert_eq!(fetched.status(), 200);
    assert_eq!(Digest::of(&fetched.bytes().await.unwrap()), big_digest);
    assert_eq!(get(&big_url).await.bytes().await.unwrap(), big.layers[0]);
    assert_eq!(upstream.count("GET", &big_path), 3);

    let dir = gw.stop().await;
    drop(disk);
    drop(dir);
}
