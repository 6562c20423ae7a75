//! Credentials go only to the configured upstream, never to other hosts an index names.

use airlock_config::Config;
use airlock_testkit::{AuthMode, FakeFiles, FakeRegistry};
use airlock_upstream::Upstream;
use reqwest::Method;
use reqwest::header::HeaderMap;

#[tokio::test]
async fn basic_credentials_and_tokens_stay_with_the_upstream() {
    let upstream = FakeRegistry::start(AuthMode::Basic {
        username: "u".into(),
        password: "pw".into(),
    })
    .await;
    let elsewhere = FakeFiles::start().await;
    elsewhere.put("file.whl", "application/octet-stream", b"wheel");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "pw").unwrap();
    let text = format!(
        "[[proxy]]\nname = \"p\"\nformat = \"oci\"\nupstream = \"{}\"\nusername = \"u\"\npassword_file = {:?}\n",
        upstream.url(),
        secret.display().to_string()
    );
    let config = Config::from_toml_str(&text, "test").unwrap();
    let client = Upstream::new(&config.proxies[0]).unwrap();
    let own = client
        .send(Method::GET, "v2/", HeaderMap::new(), "")
        .await
        .unwrap();
    assert_eq!(
        own.status(),
        200,
        "the upstream itself gets the credentials"
    );
    let foreign = format!("{}file.whl", elsewhere.url());
    let other = client
        .send(Method::GET, &foreign, HeaderMap::new(), "")
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(
        elsewhere.authorized_requests(),
        0,
        "another host never sees them"
    );
}
