//! What the API does to the cache: items, purge, pins across a restart, prefetch jobs
//! (from a real docker-registry too), and hostile input.

use super::*;

#[tokio::test]
async fn hostile_and_malformed_requests_get_clear_json_errors() {
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let files = FakeFiles::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), &proxies(&registry.url(), &files.url())).await;
    let basic = |method: Method, path: &str| {
        client()
            .request(method, gateway.url(path))
            .basic_auth("admin", Some(PASSWORD))
    };
    let cases: Vec<(RequestBuilder, StatusCode, &str)> = vec![
        (
            basic(Method::GET, "/api/v1/proxies/nope/items"),
            StatusCode::NOT_FOUND,
            "no proxy is named",
        ),
        (
            basic(Method::DELETE, "/api/v1/proxies/nope/items/a:b"),
            StatusCode::NOT_FOUND,
            "no proxy is named",
        ),
        (
            basic(
                Method::DELETE,
                "/api/v1/proxies/files/items/..%2F..%2Fetc%2Fpasswd",
            ),
            StatusCode::BAD_REQUEST,
            "'..'",
        ),
        (
            basic(Method::DELETE, "/api/v1/proxies/files/items/a%5Cb"),
            StatusCode::BAD_REQUEST,
            "backslash",
        ),
        (
            basic(Method::DELETE, "/api/v1/proxies/hub/items/library/alpine"),
            StatusCode::BAD_REQUEST,
            "REPO:TAG",
        ),
        (
            basic(
                Method::DELETE,
                "/api/v1/proxies/hub/items/library/alpine:9.9",
            ),
            StatusCode::NOT_FOUND,
            "holds no item",
        ),
        (
            basic(Method::GET, "/api/v1/proxies/hub/items?limit=0"),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            basic(Method::GET, "/api/v1/proxies/hub/items?bogus=1"),
            StatusCode::BAD_REQUEST,
            "bogus",
        ),
        (
            basic(Method::POST, "/api/v1/pins").json(&json!({ "reference": "not a reference" })),
            StatusCode::BAD_REQUEST,
            "not an image reference",
        ),
        (
            basic(Method::POST, "/api/v1/pins").json(&json!({ "reference": "alpine" })),
            StatusCode::BAD_REQUEST,
            "names no registry",
        ),
        (
            basic(Method::POST, "/api/v1/pins").json(&json!({ "reference": "quay.io/x/y:1" })),
            StatusCode::NOT_FOUND,
            "quay.io",
        ),
        (
            basic(Method::POST, "/api/v1/pins").json(&json!({ "ref": "hub/a:1" })),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            basic(Method::POST, "/api/v1/pins")
                .header("content-type", "application/octet-stream")
                .body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "JSON",
        ),
        (
            basic(Method::POST, "/api/v1/pins")
                .header("content-type", "application/json")
                .body("x".repeat(300 * 1024)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "over",
        ),
        (
            basic(Method::DELETE, "/api/v1/pins/hub/library/alpine:3.19"),
            StatusCode::NOT_FOUND,
            "not pinned",
        ),
        (
            basic(Method::POST, "/api/v1/prefetch").json(&json!({})),
            StatusCode::BAD_REQUEST,
            "1 to 500",
        ),
        (
            basic(Method::POST, "/api/v1/prefetch")
                .json(&json!({ "urls": ["/repository/files/../../etc/passwd"] })),
            StatusCode::BAD_REQUEST,
            "'..'",
        ),
        (
            basic(Method::POST, "/api/v1/prefetch")
                .json(&json!({ "urls": ["file:///etc/passwd"] })),
            StatusCode::BAD_REQUEST,
            "not http",
        ),
        (
            basic(Method::POST, "/api/v1/prefetch")
                .json(&json!({ "urls": ["http://x/repository/nope/a"] })),
            StatusCode::BAD_REQUEST,
            "no package proxy",
        ),
        (
            basic(Method::POST, "/api/v1/prefetch")
                .json(&json!({ "references": ["hub/Bad Name:1"] })),
            StatusCode::BAD_REQUEST,
            "not an image reference",
        ),
        (
            basic(Method::GET, "/api/v1/jobs/12345"),
            StatusCode::NOT_FOUND,
            "no job",
        ),
        (
            basic(Method::GET, "/api/v1/jobs/..%2F1"),
            StatusCode::NOT_FOUND,
            "no job",
        ),
    ];
    for (request, status, says) in cases {
        let response = request.send().await.unwrap();
        let got = response.status();
        let url = response.url().to_string();
        let text = response.text().await.unwrap();
        assert_eq!(got, status, "{url}: {text}");
        let error: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{url}: not JSON: {text}"));
        assert!(
            error["error"].as_str().unwrap().contains(says),
            "{url}: {text}"
        );
    }
    gateway.stop().await;
}

/// Polls a job until every item finished (bounded).
async fn wait_for_job(gateway: &Running, job: u64) -> Value {
    for _ in 0..300 {
        let status: Value = client()
            .get(gateway.url(&format!("/api/v1/jobs/{job}")))
            .basic_auth("admin", Some(PASSWORD))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["state"] != "running" {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job} did not finish in 30 s");
}

async fn start_job(gateway: &Running, body: &Value) -> u64 {
    let response = client()
        .post(gateway.url("/api/v1/prefetch"))
        .basic_auth("admin", Some(PASSWORD))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json::<Value>().await.unwrap()["job"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn prefetch_lists_pins_and_purge_work_on_what_is_cached() {
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[3000, 5000]);
    registry.push_image("library/alpine", "3.19", &image);
    let files = FakeFiles::start().await;
    files.put("base/dir/a.txt", "text/plain", b"a file");
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), &proxies(&registry.url(), &files.url())).await;

    let job = start_job(
        &gateway,
        &json!({
            "references": ["hub/library/alpine:3.19", "hub/library/missing:1"],
            "urls": ["http://gateway.example/repository/files/dir/a.txt"],
        }),
    )
    .await;
    let status = wait_for_job(&gateway, job).await;
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(status["done"], 2, "{status}");
    let items = status["items"].as_array().unwrap();
    assert_eq!(items[0]["state"], "done");
    let image_bytes =
        (image.manifest.len() + image.blobs().iter().map(|b| b.len()).sum::<usize>()) as u64;
    assert_eq!(items[0]["bytes"], image_bytes, "{status}");
    assert_eq!(items[1]["state"], "failed");
    assert!(
        items[1]["error"].as_str().unwrap().contains("404"),
        "{status}"
    );
    assert_eq!(items[2]["bytes"], 6);

    let get = |path: &str| {
        client()
            .get(gateway.url(path))
            .basic_auth("admin", Some(PASSWORD))
    };
    // The image is listed with its size, the file with its own.
    let listed: Value = get("/api/v1/proxies/hub/items?q=alpine")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["items"][0]["name"], "library/alpine:3.19",
        "{listed}"
    );
    assert_eq!(listed["items"][0]["size"], image_bytes, "{listed}");
    assert_eq!(listed["items"][0]["digest"], image.digest.to_string());
    let none: Value = get("/api/v1/proxies/hub/items?q=postgres")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["items"], json!([]));
    let listed: Value = get("/api/v1/proxies/files/items")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["name"], "dir/a.txt", "{listed}");
    assert_eq!(listed["items"][0]["size"], 6);
    let proxies: Value = get("/api/v1/proxies")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hub = &proxies["proxies"][0];
    assert_eq!(hub["name"], "hub");
    assert_eq!(hub["size"], image_bytes, "{proxies}");
    assert_eq!(hub["items"], 1);
    assert!(
        hub["health"]["upstream_errors"].as_u64().is_some(),
        "{proxies}"
    );

    // Pages: one item each, the cursor leads on.
    registry.push_image("library/alpine", "3.20", &image);
    assert_eq!(
        common::get(&gateway.url("/v2/hub/library/alpine/manifests/3.20"))
            .await
            .status(),
        StatusCode::OK
    );
    let first: Value = get("/api/v1/proxies/hub/items?limit=1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"][0]["name"], "library/alpine:3.19", "{first}");
    let cursor = first["next"].as_str().unwrap();
    let second: Value = get(&format!(
        "/api/v1/proxies/hub/items?limit=1&cursor={cursor}"
    ))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        second["items"][0]["name"], "library/alpine:3.20",
        "{second}"
    );
    assert_eq!(second["next"], Value::Null);

    // Purge the file: gone from the list, fetched again on the next request.
    let before = files.count("base/dir/a.txt");
    let response = client()
        .delete(gateway.url("/api/v1/proxies/files/items/dir/a.txt"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let listed: Value = get("/api/v1/proxies/files/items")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"], json!([]));
    assert_eq!(
        common::get(&gateway.url("/repository/files/dir/a.txt"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(files.count("base/dir/a.txt"), before + 1);

    // Purging one tag leaves the other tag's blobs (the same image) served.
    let response = client()
        .delete(gateway.url("/api/v1/proxies/hub/items/library/alpine:3.19"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(registry);
    for blob in image.blobs() {
        let digest = airlock_types::Digest::of(blob);
        let response =
            common::get(&gateway.url(&format!("/v2/hub/library/alpine/blobs/{digest}"))).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    gateway.stop().await;
}

#[tokio::test]
async fn runtime_pins_survive_a_restart() {
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let files = FakeFiles::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tables = format!(
        "[cache]\npin = [\"hub/library/postgres:15\"]\n{}",
        proxies(&registry.url(), &files.url())
    );
    let gateway = start(dir.path(), &tables).await;
    let pin = |reference: &str| {
        client()
            .post(gateway.url("/api/v1/pins"))
            .basic_auth("admin", Some(PASSWORD))
            .json(&json!({ "reference": reference }))
            .send()
    };
    assert_eq!(
        pin("hub/library/alpine:3.19").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        pin("hub/library/alpine:3.19").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        pin("hub/library/busybox:1").await.unwrap().status(),
        StatusCode::CREATED
    );
    let response = client()
        .delete(gateway.url("/api/v1/pins/hub/library/busybox:1"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // A configuration pin cannot be removed at run time.
    let response = client()
        .delete(gateway.url("/api/v1/pins/hub/library/postgres:15"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    gateway.stop().await;

    let gateway = start(dir.path(), &tables).await;
    let pins: Value = client()
        .get(gateway.url("/api/v1/pins"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        pins["runtime"],
        json!(["hub/library/alpine:3.19"]),
        "{pins}"
    );
    assert_eq!(pins["config"], json!(["hub/library/postgres:15"]), "{pins}");
    gateway.stop().await;
}

/// A prefetch of a multi-platform image from a real `docker-registry` upstream, then every
/// manifest and blob served with that upstream stopped.
#[tokio::test]
async fn a_prefetched_image_is_served_with_the_upstream_stopped() {
    let skopeo = airlock_testkit::require_tool("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let upstream = airlock_testkit::DockerRegistry::start(dir.path());
    let platform = |arch| airlock_testkit::Platform { os: "linux", arch };
    let index = airlock_testkit::Index::new(vec![
        (
            platform("amd64"),
            Image::from_layers(vec![b"amd64 layer".repeat(500)], platform("amd64")),
        ),
        (
            platform("arm64"),
            Image::from_layers(vec![b"arm64 layer".repeat(700)], platform("arm64")),
        ),
    ]);
    let layout = dir.path().join("layout");
    index.write_oci_layout(&layout, "1.0").unwrap();
    let pushed = tokio::process::Command::new(&skopeo)
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1.0", layout.display()))
        .arg(format!("docker://127.0.0.1:{}/team/app:1.0", upstream.port))
        .output()
        .await
        .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let files = FakeFiles::start().await;
    let gateway = start(
        &dir.path().join("gateway"),
        &proxies(upstream.url().trim_end_matches('/'), &files.url()),
    )
    .await;
    let job = start_job(&gateway, &json!({ "references": ["hub/team/app:1.0"] })).await;
    let status = wait_for_job(&gateway, job).await;
    assert_eq!(status["state"], "done", "{status}");
    // Everything the image is, read back with the upstream stopped: skopeo recompressed
    // the layers on push, so the upstream's manifests say what the image is now.
    drop(upstream);
    let base = gateway.url("/v2/hub/team/app");
    // What docker and containerd accept: every manifest kind.
    let accept = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    let response = common::get_accepting(&format!("{base}/manifests/1.0"), Some(accept)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let top = response.bytes().await.unwrap();
    let mut served = top.len();
    let top: Value = serde_json::from_slice(&top).unwrap();
    let children = top["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2, "{top}");
    for child in children {
        let digest = child["digest"].as_str().unwrap();
        let response = common::get(&format!("{base}/manifests/{digest}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let manifest = response.bytes().await.unwrap();
        served += manifest.len();
        let manifest: Value = serde_json::from_slice(&manifest).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        for blob in std::iter::once(&manifest["config"]).chain(layers) {
            let digest: airlock_types::Digest = blob["digest"].as_str().unwrap().parse().unwrap();
            let response = common::get(&format!("{base}/blobs/{digest}")).await;
            assert_eq!(response.status(), StatusCode::OK, "{digest}");
            let bytes = response.bytes().await.unwrap();
            assert_eq!(airlock_types::Digest::of(&bytes), digest);
            served += bytes.len();
        }
    }
    assert_eq!(status["bytes"], served as u64, "{status}");

    // A tag never fetched fails now; the proxy's health says when and what.
    let failed = common::get_accepting(&format!("{base}/manifests/2.0"), Some(accept)).await;
    assert!(failed.status().is_server_error(), "{}", failed.status());
    let proxies: Value = client()
        .get(gateway.url("/api/v1/proxies"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hub = &proxies["proxies"][0];
    let last = &hub["health"]["last_upstream_error"];
    assert_eq!(last["status"], failed.status().as_u16(), "{proxies}");
    assert_eq!(last["path"], "/v2/hub/team/app/manifests/2.0", "{proxies}");
    assert!(
        hub["health"]["upstream_errors"].as_u64().unwrap() >= 1,
        "{proxies}"
    );
    // The read-back above came from the cache; the prefetch's own requests were misses.
    let ratio = hub["hit_ratio"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio < 1.0, "{proxies}");
    gateway.stop().await;
}
