//! The access log and the metrics name the package proxy that served each request and its
//! cache outcome (hit, miss, revalidated, stale, pass), as they do for the OCI registry.

mod common;

use std::net::SocketAddr;

use airlock_testkit::{Dist, FakePypi};
use airlock_types::Digest;

const PIP_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";

async fn start(dir: &std::path::Path, upstream: &FakePypi, extra: &str) -> SocketAddr {
    common::start(
        dir,
        &format!(
            "[[proxy]]\nname = \"pypi-proxy\"\nformat = \"pypi\"\nupstream = \"{}\"\n{extra}\n",
            upstream.url()
        ),
    )
    .await
}

use common::{client, get_accepting as get};

/// One wheel of project `alpha` on the upstream.
fn sample(upstream: &FakePypi) -> Vec<u8> {
    let wheel = b"PK stand-in for a wheel".to_vec();
    upstream.add("alpha", Dist::new("alpha-1.0-py3-none-any.whl", &wheel));
    wheel
}

/// The access log's events as ` field=value` text (strings quoted), captured by a bare
/// `tracing` subscriber installed as the process's global default: this binary holds this
/// one test, so every access-log line is its own (a thread-scoped default missed events
/// when other tests of a binary had registered the callsite first).
#[derive(Clone, Default)]
struct AccessLog(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl AccessLog {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl tracing::Subscriber for AccessLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "airlock::access"
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                use std::fmt::Write as _;
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The access log's `proxy` and `cache` and the cache and upstream-error metrics were empty
/// for every `/repository/` request: only the OCI registry marked its responses.
#[tokio::test]
async fn package_requests_are_logged_and_counted_by_proxy_and_cache_result() {
    let log = AccessLog::default();
    tracing::subscriber::set_global_default(log.clone()).expect("the only subscriber");
    let upstream = FakePypi::start().await;
    let wheel = sample(&upstream);
    // A port nothing listens on: the second proxy's upstream refuses every connection.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = start(
        dir.path(),
        &upstream,
        &format!(
            "[[proxy]]\nname = \"pypi-down\"\nformat = \"pypi\"\nupstream = \"http://{down}/\"\n"
        ),
    )
    .await;
    let page = format!("http://{addr}/repository/pypi-proxy/simple/alpha/");
    let wheel_url = format!(
        "http://{addr}/repository/pypi-proxy/packages/alpha/{}/alpha-1.0-py3-none-any.whl",
        Digest::of(&wheel).hex()
    );

    let first = get(&page, Some(PIP_ACCEPT)).await;
    assert_eq!(first.status(), 200);
    // A 304 of a rewritten index carries no body and no X-Airlock-Cache of its own.
    let not_modified = client()
        .get(&page)
        .header("accept", PIP_ACCEPT)
        .header("if-none-match", first.headers()["etag"].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    for _ in 0..2 {
        let response = get(&wheel_url, None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap(), wheel);
    }
    let head = client().head(&wheel_url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let failed = get(
        &format!("http://{addr}/repository/pypi-down/simple/alpha/"),
        Some(PIP_ACCEPT),
    )
    .await;
    assert_eq!(failed.status(), 502);
    let unknown = get(&format!("http://{addr}/repository/nowhere/x"), None).await;
    assert_eq!(unknown.status(), 404);

    let lines = log.lines();
    let served: Vec<(&str, &str)> = lines
        .iter()
        .map(|line| {
            let field = |name: &str| {
                let start = line.find(&format!(" {name}=")).unwrap() + name.len() + 2;
                let rest = &line[start..];
                &rest[..rest.find(' ').unwrap_or(rest.len())]
            };
            (field("proxy"), field("cache"))
        })
        .collect();
    assert_eq!(
        served,
        [
            ("\"pypi-proxy\"", "\"miss\""),
            ("\"pypi-proxy\"", "\"hit\""),
            ("\"pypi-proxy\"", "\"miss\""),
            ("\"pypi-proxy\"", "\"hit\""),
            ("\"pypi-proxy\"", "\"hit\""),
            ("\"pypi-down\"", "\"pass\""),
            ("\"\"", "\"\""),
        ],
        "{lines:#?}"
    );
    assert!(lines[2].contains("proxy=\"pypi-proxy\"") && lines[2].contains("cache=\"miss\""));

    let metrics = get(&format!("http://{addr}/metrics"), None)
        .await
        .text()
        .await
        .unwrap();
    for line in [
        "airlock_http_requests_total{route=\"package\",status=\"200\"} 4",
        "airlock_http_requests_total{route=\"package\",status=\"304\"} 1",
        "airlock_http_requests_total{route=\"package\",status=\"502\"} 1",
        "airlock_cache_requests_total{proxy=\"pypi-proxy\",result=\"hit\"} 3",
        "airlock_cache_requests_total{proxy=\"pypi-proxy\",result=\"miss\"} 2",
        "airlock_cache_requests_total{proxy=\"pypi-down\",result=\"pass\"} 1",
        "airlock_upstream_errors_total{proxy=\"pypi-down\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(
        !metrics.contains("airlock_upstream_errors_total{proxy=\"pypi-proxy\"}"),
        "{metrics}"
    );
}
