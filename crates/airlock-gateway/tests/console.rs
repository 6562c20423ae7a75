//! The console's pages over real HTTP: refused without a login, then an overview that shows
//! the pull just made (bytes from the internet, then from the cache, the upstream's
//! health), the audit trail with its filters, and the egress page; hostile query text is
//! escaped, never markup.

mod common;

use std::net::SocketAddr;

use airlock_testkit::Image;
use airlock_testkit::{AuthMode, FakeRegistry};

const PASSWORD: &str = "console-test-password";

async fn start(dir: &std::path::Path, upstream: &FakeRegistry, extra: &str) -> SocketAddr {
    let hash = airlock_config::hash_password(PASSWORD.as_bytes()).unwrap();
    common::start(
        dir,
        &format!(
            "[admin]\nusers = [{{ name = \"admin\", password_hash = \"{hash}\" }}]\n{extra}\n\
             [[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{}\"\n\
             [[proxy]]\nname = \"down\"\nformat = \"oci\"\nupstream = \"http://127.0.0.1:9/\"\n",
            upstream.url()
        ),
    )
    .await
}

async fn page(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = common::client()
        .get(format!("http://{addr}{path}"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Pulls `library/app:1` through the gateway the way a client does.
async fn pull(addr: SocketAddr, image: &Image) {
    let client = common::client();
    let manifest = client
        .get(format!("http://{addr}/v2/hub/library/app/manifests/1"))
        .header("accept", image.media_type)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200);
    for blob in image.blobs() {
        let digest = airlock_types::Digest::of(blob);
        let got = client
            .get(format!("http://{addr}/v2/hub/library/app/blobs/{digest}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.as_ref(), blob);
    }
}

#[tokio::test]
async fn the_console_shows_what_was_pulled_and_who_fetched_it() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[40_000, 30_000]);
    upstream.push_image("library/app", "1", &image);
    let addr = start(dir.path(), &upstream, "").await;

    // No login, a wrong one: sent to the login form, nothing of the page shown.
    for path in ["/ui/", "/ui/audit", "/ui/egress"] {
        let response = common::client()
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303, "{path}");
        assert_eq!(response.headers()["location"], "/ui/login", "{path}");
        let wrong = common::client()
            .get(format!("http://{addr}{path}"))
            .basic_auth("admin", Some("guess"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 303, "{path}");
        assert!(!wrong.text().await.unwrap().contains("<table"));
    }

    pull(addr, &image).await;
    pull(addr, &image).await;
    // The second proxy's upstream refuses connections: it shows as failing.
    let failed = common::client()
        .get(format!("http://{addr}/v2/down/library/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert!(failed.status().is_server_error());

    let (status, html) = page(addr, "/ui/").await;
    assert_eq!(status, 200);
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("<th scope=\"row\"><a href=\"/ui/proxies/hub\">hub</a></th>"));
    // The layers came from the internet once and from the cache once.
    let pulled: u64 =
        image.manifest.len() as u64 + image.blobs().iter().map(|b| b.len() as u64).sum::<u64>();
    assert!(html.contains("from the internet"), "{html}");
    assert!(html.contains("<svg"), "charts are inline SVG");
    assert!(html.contains("role=\"img\""));
    assert!(
        html.contains("failing"),
        "the refused upstream is failing: {html}"
    );
    assert!(
        html.contains(&format!(
            "hub: bytes, last 24 hours: {} bytes from the cache",
            airlock_testkit::human_bytes(pulled)
        )),
        "{html}"
    );
    assert!(!html.contains("<script") && !html.contains("src=\"http"));

    // The audit page lists the fetches with the client; filters narrow them.
    let (status, html) = page(addr, "/ui/audit?kind=fetch&proxy=hub").await;
    assert_eq!(status, 200);
    let digest = airlock_types::Digest::of(&image.layers[0]);
    assert!(html.contains(&format!("/blobs/{digest}")), "{html}");
    assert!(html.contains("127.0.0.1"));
    let rows = html.matches("<tr><td class=\"mono\">").count();
    // Manifest, config and two layers, fetched once each: the second pull was served from
    // the cache.
    assert_eq!(rows, 4, "{html}");
    let (_, html) = page(addr, "/ui/audit?proxy=down").await;
    assert!(html.contains("127.0.0.1:9"), "{html}");
    assert!(!html.contains("/blobs/"));

    // Hostile filter text is shown escaped; a bad `since` is an alert, not an error page.
    let (status, html) = page(
        addr,
        "/ui/audit?item=%3Cscript%3Ealert(1)%3C/script%3E&since=soon",
    )
    .await;
    assert_eq!(status, 200);
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;"));
    assert!(html.contains("role=\"alert\""));
    let (status, _) = page(addr, "/ui/audit?kind=teleport").await;
    assert_eq!(status, 200);

    // No [egress]: the egress page says so.
    let (status, html) = page(addr, "/ui/egress").await;
    assert_eq!(status, 200);
    assert!(html.contains("does not run"));
}

#[tokio::test]
async fn the_egress_page_lists_the_allowlist_and_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let addr = start(
        dir.path(),
        &upstream,
        "[egress]\nlisten = \"127.0.0.1:0\"\nallow = [\"login.example.org\", \"*.idp.example.org\"]\n",
    )
    .await;
    let (status, html) = page(addr, "/ui/egress").await;
    assert_eq!(status, 200);
    assert!(html.contains("<code>login.example.org</code>"), "{html}");
    assert!(html.contains("<code>*.idp.example.org</code>"));
    assert!(html.contains("sha256:"));
}
