//! `HTTP_PROXY` and friends in the environment are ignored: upstreams are reached as the
//! configuration says. The test re-runs itself as a child process with the variables set
//! (pointing at a port nothing listens on), so no other test sees them.

use std::process::Command;

use airlock_config::Config;
use airlock_testkit::FakeFiles;
use airlock_upstream::Upstream;
use reqwest::Method;
use reqwest::header::HeaderMap;

const CHILD: &str = "AIRLOCK_TEST_ENVIRONMENT_PROXY_CHILD";
const NAME: &str = "environment_proxies_are_ignored";

#[test]
fn environment_proxies_are_ignored() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", NAME, "--nocapture"])
        .env(CHILD, "1");
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env(var, &nowhere);
    }
    for var in ["NO_PROXY", "no_proxy"] {
        command.env_remove(var);
    }
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the child ran the test: {text}");
}

fn child() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let files = FakeFiles::start().await;
        files.put("file", "text/plain", b"direct");
        // The control: a client that reads the environment goes to the dead proxy.
        let default = reqwest::Client::new()
            .get(format!("{}file", files.url()))
            .send()
            .await;
        assert!(
            default.is_err(),
            "the environment's proxy is in effect for reqwest's default"
        );
        let text = format!(
            "[[proxy]]\nname = \"p\"\nformat = \"raw\"\nupstream = \"{}\"\n",
            files.url()
        );
        let config = Config::from_toml_str(&text, "test").unwrap();
        let upstream = Upstream::new(&config.proxies[0], None).unwrap();
        let response = upstream
            .send(Method::GET, "file", HeaderMap::new(), "")
            .await
            .expect("reached directly");
        assert_eq!(response.status(), 200);
        assert_eq!(files.count("file"), 1);
    });
}
