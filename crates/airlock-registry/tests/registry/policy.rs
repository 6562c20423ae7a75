//! `[[policy]]` at the registry's gate, against a counting in-process upstream: what is
//! denied never reaches the upstream, an oversized blob is refused on its `HEAD` size
//! without a `GET`, and denials are OCI `DENIED` naming the rule.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use airlock_config::Config;
use airlock_testkit::{AuthMode, FakeRegistry, Image};

use crate::common::Server;

async fn start(dir: &std::path::Path, upstream: &FakeRegistry, policy: &str) -> String {
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n\
         [[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{}\"\nhost = \"docker.io\"\n{policy}",
        dir.join("data"),
        upstream.url()
    );
    let config = Config::from_toml_str(&text, "test").expect("test config is valid");
    let server = Server::bind(config).await.expect("the registry starts");
    let addr = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));
    format!("http://{addr}")
}

async fn denied(response: reqwest::Response, rule: &str) -> String {
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains(&format!("policy rule \"{rule}\"")),
        "{message}"
    );
    message
}

#[tokio::test]
async fn denied_repositories_never_reach_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let evil = Image::random(&[100]);
    upstream.push_image("library/evil", "1", &evil);
    upstream.push_image("library/evil", "rc-1", &evil);
    let base = start(
        dir.path(),
        &upstream,
        "[[policy]]\nname = \"no-evil\"\ndeny = [\"library/evil:1\", \"library/evil2\"]\n\
         [[policy]]\nname = \"no-rc\"\ndeny = [\"library/*\"]\ntags = [\"rc-*\"]\n",
    )
    .await;
    let client = reqwest::Client::new();
    let message = denied(
        client
            .get(format!("{base}/v2/hub/evil/manifests/1"))
            .send()
            .await
            .unwrap(),
        "no-evil",
    )
    .await;
    assert!(message.contains("library/evil:1"), "{message}");
    // A HEAD has no body to carry the JSON: the status is what the client sees.
    let head = client
        .head(format!("{base}/v2/hub/evil/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 403);
    denied(
        client
            .get(format!("{base}/v2/hub/evil/manifests/rc-1"))
            .send()
            .await
            .unwrap(),
        "no-rc",
    )
    .await;
    // Blobs of a repository denied whole; a tag-restricted entry does not name blobs.
    denied(
        client
            .get(format!("{base}/v2/hub/evil2/blobs/{}", evil.digest))
            .send()
            .await
            .unwrap(),
        "no-evil",
    )
    .await;
    denied(
        client
            .get(format!("{base}/v2/hub/evil2/tags/list"))
            .send()
            .await
            .unwrap(),
        "no-evil",
    )
    .await;
    assert_eq!(upstream.total_requests(), 0, "nothing denied went upstream");
    // The same image by digest is not a tag pull: no entry names it.
    let response = client
        .get(format!("{base}/v2/hub/evil/manifests/{}", evil.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn oversized_blobs_are_refused_before_they_are_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[4096, 100]);
    upstream.push_image("library/app", "1", &image);
    let base = start(
        dir.path(),
        &upstream,
        "[[policy]]\nname = \"small\"\nmax_blob_size = \"1KiB\"\n",
    )
    .await;
    let client = reqwest::Client::new();
    let big = airlock_types::Digest::of(&image.layers[0]);
    let small = airlock_types::Digest::of(&image.layers[1]);
    let path = |d: &airlock_types::Digest| format!("/v2/library/app/blobs/{d}");
    let message = denied(
        client
            .get(format!("{base}/v2/hub/app/blobs/{big}"))
            .send()
            .await
            .unwrap(),
        "small",
    )
    .await;
    assert!(
        message.contains("larger than max_blob_size 1KiB"),
        "{message}"
    );
    assert_eq!(upstream.count("HEAD", &path(&big)), 1, "its size was asked");
    assert_eq!(
        upstream.count("GET", &path(&big)),
        0,
        "it was never fetched"
    );
    let response = client
        .get(format!("{base}/v2/hub/app/blobs/{small}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), image.layers[1]);
    // The manifest names the big layer: it is refused by its descriptor.
    denied(
        client
            .get(format!("{base}/v2/hub/app/manifests/1"))
            .send()
            .await
            .unwrap(),
        "small",
    )
    .await;
    assert_eq!(upstream.count("GET", &path(&big)), 0);
}

/// A cosign public key nobody holds the private half of: nothing verifies with it.
const UNUSED_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEIujsGzWqkbzMNAOZsfs8ioBoJDWM
Yvk83F07rBiYuhfWfmkSXomcMMbFpNcpeHJunVjLxA+Tf4vRiSibImU4Lg==
-----END PUBLIC KEY-----
";

#[tokio::test]
async fn an_unsigned_image_is_refused_and_the_refusal_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cosign.pub");
    std::fs::write(&key, UNUSED_KEY).unwrap();
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[100]);
    upstream.push_image("org/app", "1", &image);
    let base = start(
        dir.path(),
        &upstream,
        &format!(
            "[[policy]]\nname = \"signed\"\nrequire_cosign = {{ repositories = [\"org/*\"], key = {key:?} }}\n"
        ),
    )
    .await;
    let client = reqwest::Client::new();
    let signature = format!(
        "/v2/org/app/manifests/{}",
        airlock_cosign::signature_tag(&image.digest)
    );
    for _ in 0..3 {
        let message = denied(
            client
                .get(format!("{base}/v2/hub/org/app/manifests/1"))
                .send()
                .await
                .unwrap(),
            "signed",
        )
        .await;
        assert!(message.contains("is not signed"), "{message}");
    }
    assert_eq!(
        upstream.count("GET", &signature),
        1,
        "a definite refusal is remembered, not asked again"
    );
    // By digest: the same verdict, from memory.
    denied(
        client
            .get(format!("{base}/v2/hub/org/app/manifests/{}", image.digest))
            .send()
            .await
            .unwrap(),
        "signed",
    )
    .await;
    assert_eq!(upstream.count("GET", &signature), 1);
}
