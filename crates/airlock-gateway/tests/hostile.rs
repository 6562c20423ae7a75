//! The gate, tried as an attacker inside the cluster would: crafted paths against every
//! package format must never make the gateway reach a host other than the proxy's
//! upstream, nor a path outside the upstream's base. A second local server stands in for
//! an internal service (cloud metadata, an admin API); its access log must stay empty.

mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use airlock_testkit::FakeFiles;
use airlock_types::Digest;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SECRET: &[u8] = b"s3cret-of-the-internal-service";
const FORMATS: [&str; 6] = ["raw", "maven", "yum", "helm", "pypi", "conda"];

/// One upstream per format, each below `/base/` of its own file server, with just enough
/// content that every format's code paths (indexes, listings, ancestors) are walked.
struct Bed {
    gateway: SocketAddr,
    canary: FakeFiles,
    upstreams: Vec<(&'static str, FakeFiles)>,
    _dir: tempfile::TempDir,
}

async fn bed() -> Bed {
    let canary = FakeFiles::start().await;
    canary.put("secret", "text/plain", SECRET);
    canary.put("latest/meta-data/creds", "text/plain", SECRET);
    let mut upstreams = Vec::new();
    let mut proxies = String::new();
    for format in FORMATS {
        let files = FakeFiles::start().await;
        files.put("base/ok.txt", "text/plain", b"fine");
        let chart = b"a chart".as_slice();
        files.put("base/charts/app-1.0.0.tgz", "application/gzip", chart);
        files.put(
            "base/index.yaml",
            "application/x-yaml",
            format!(
                "apiVersion: v1\nentries:\n  app:\n  - name: app\n    version: 1.0.0\n    digest: {}\n    urls:\n    - charts/app-1.0.0.tgz\n",
                Digest::of(chart).hex()
            )
            .as_bytes(),
        );
        let wheel = b"a wheel".as_slice();
        files.put(
            "base/files/demo-1.0-py3-none-any.whl",
            "application/zip",
            wheel,
        );
        files.put(
            "base/simple/demo/",
            "text/html",
            format!(
                "<html><body><a href=\"../../files/demo-1.0-py3-none-any.whl#sha256={}\">demo-1.0-py3-none-any.whl</a></body></html>",
                Digest::of(wheel).hex()
            )
            .as_bytes(),
        );
        files.put(
            "base/simple/",
            "text/html",
            b"<html><body><a href=\"demo/\">demo</a></body></html>",
        );
        files.put(
            "base/noarch/repodata.json",
            "application/json",
            br#"{"info":{"subdir":"noarch"},"packages":{},"packages.conda":{}}"#,
        );
        writeln!(
            proxies,
            "[[proxy]]\nname = \"{format}-proxy\"\nformat = \"{format}\"\nupstream = \"{}base/\"\nnegative_ttl = \"0s\"",
            files.url()
        )
        .unwrap();
        upstreams.push((format, files));
    }
    let dir = tempfile::tempdir().unwrap();
    let gateway = common::start(dir.path(), &proxies).await;
    Bed {
        gateway,
        canary,
        upstreams,
        _dir: dir,
    }
}

impl Bed {
    fn canary_host(&self) -> String {
        self.canary
            .url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned()
    }

    /// Nothing reached the canary, and every upstream saw only paths below its base.
    fn assert_contained(&self) {
        assert_eq!(
            self.canary.total_requests(),
            0,
            "the internal service was reached: {:?}",
            self.canary.requested_paths()
        );
        for (format, files) in &self.upstreams {
            for path in files.requested_paths() {
                assert!(
                    path.starts_with("/base/")
                        && !path
                            .split('/')
                            .any(|segment| segment == ".." || segment == "."),
                    "{format}: the upstream was asked for {path:?}, outside its base"
                );
            }
        }
    }
}

/// Status code and body of a raw answer.
fn parse(answer: &str) -> (u16, &str) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body)
}

#[tokio::test]
async fn hostile_paths_reach_no_other_host() {
    let bed = bed().await;
    // The harness sees what it should: a legitimate request reaches each upstream's base,
    // and the canary logs what reaches it.
    for (format, files) in &bed.upstreams {
        let wanted = match *format {
            "helm" => "index.yaml",
            "pypi" => "simple/demo/",
            "conda" => "noarch/repodata.json",
            _ => "ok.txt",
        };
        let answer =
            common::raw_get(bed.gateway, &format!("/repository/{format}-proxy/{wanted}")).await;
        assert_eq!(parse(&answer).0, 200, "{format}: {answer}");
        assert!(files.total_requests() > 0, "{format}");
    }
    let direct = common::get(&format!("{}secret", bed.canary.url())).await;
    assert_eq!(direct.status(), 200);
    assert_eq!(bed.canary.total_requests(), 1);
    let canary = bed.canary_host();
    let port = canary.rsplit(':').next().unwrap().to_owned();
    let before = bed.canary.total_requests();

    let hostile = [
        format!("http:{canary}/secret"),
        format!("http:0x7f.1:{port}/latest/meta-data/creds"),
        format!("https:{canary}/secret"),
        format!("HTTP:{canary}/secret"),
        format!("http:/{canary}/secret"),
        format!("http:@{canary}/secret"),
        format!("//{canary}/secret"),
        format!("%2F%2F{canary}/secret"),
        format!("http%3A{canary}/secret"),
        format!("http%3a%2f%2f{canary}/secret"),
        "http:a:99999/x".to_owned(),
        "..;/..;/secret".to_owned(),
        "a/..;/b".to_owned(),
        "ok.txt;jsessionid=1".to_owned(),
        "%2e%2e/%2e%2e/secret".to_owned(),
        ".%2e/.%2e/secret".to_owned(),
        "%252e%252e/%252e%252e/secret".to_owned(),
        "a/b/../../../secret".to_owned(),
        "simple/../../../secret".to_owned(),
        format!("simple/http:{canary}/secret"),
        format!("org/x/1.0/http:{canary}/secret"),
        format!("org/x/1.0/x-1.0.jar/..;/http:{canary}/secret"),
        format!("repodata/http:{canary}/x"),
        format!("http:{canary}/repodata/repomd.xml"),
        format!("http:{canary}/Packages/a.rpm"),
        format!("noarch/http:{canary}/secret"),
        format!("http:{canary}/noarch/repodata.json"),
        format!("_ext/http/127.0.0.1/{port}/secret"),
        format!("_ext/{canary}/secret"),
        format!("packages/demo/{}/http:{canary}/secret", "a".repeat(64)),
        format!("{}/x", "a/".repeat(70)),
        "a".repeat(2000),
    ];
    for format in FORMATS {
        for path in &hostile {
            let answer =
                common::raw_get(bed.gateway, &format!("/repository/{format}-proxy/{path}")).await;
            let (status, body) = parse(&answer);
            assert!(
                matches!(status, 400 | 404),
                "{format} {path}: answered {status}: {body}"
            );
            assert!(
                !body.contains(std::str::from_utf8(SECRET).unwrap()),
                "{format} {path}: the secret leaked"
            );
        }
    }
    assert_eq!(
        bed.canary.total_requests(),
        before,
        "{:?}",
        bed.canary.requested_paths()
    );
    // The refusal says why, so an operator reading a client's error knows what happened.
    let answer = common::raw_get(
        bed.gateway,
        &format!("/repository/raw-proxy/http:{canary}/secret"),
    )
    .await;
    assert!(answer.contains("is refused"), "{answer}");
    assert!(!answer.contains("Connection refused"), "{answer}");
    // Regression: this path used to panic a worker on the URL join.
    let answer = common::raw_get(bed.gateway, "/repository/raw-proxy/http:a:99999/x").await;
    assert_eq!(parse(&answer).0, 400, "{answer}");
    let health = common::raw_get(bed.gateway, "/healthz").await;
    assert_eq!(parse(&health).0, 200);
    assert_eq!(bed.canary.total_requests(), before);
    for (format, files) in &bed.upstreams {
        for path in files.requested_paths() {
            assert!(path.starts_with("/base/"), "{format}: {path}");
        }
    }
}

/// One keep-alive HTTP/1.1 connection that sends paths exactly as given.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Self { sender }
    }

    /// The status, or `None` when the path is not a URI at all (the server never sees it).
    async fn get(&mut self, path: &str) -> Option<u16> {
        let uri: http::Uri = path.parse().ok()?;
        let request = http::Request::get(uri)
            .header(http::header::HOST, "test")
            .body(http_body_util::Empty::new())
            .unwrap();
        self.sender.ready().await.unwrap();
        let response =
            tokio::time::timeout(Duration::from_secs(30), self.sender.send_request(request))
                .await
                .expect("the gateway answers within 30 s")
                .expect("the gateway answers (no dropped connection: no panic)");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(
            !body.windows(SECRET.len()).any(|w| w == SECRET),
            "{path}: the secret leaked"
        );
        Some(status)
    }
}

/// A random path: pieces that mean something to URL parsers, path normalizers and the
/// formats, joined at random.
fn random_path(rng: &mut StdRng, canary: &str) -> String {
    const PIECES: &[&str] = &[
        "a",
        "b.c",
        "simple",
        "packages",
        "noarch",
        "repodata",
        "repomd.xml",
        "index.yaml",
        "_ext",
        "http",
        "org",
        "1.0",
        "x.jar",
        "y.rpm",
        "z.conda",
        "demo",
        "ok.txt",
        "..",
        ".",
        "",
        "/",
        "//",
        "%2e",
        "%2E",
        "%2f",
        "%2F",
        "%5c",
        "%25",
        "%3a",
        "%3A",
        "%2B",
        "%00",
        "%20",
        ":",
        ";",
        "http:",
        "https:",
        "file:",
        "@",
        "?",
        "#",
        "~",
        "+",
        "*",
        "'",
        "!",
        "$",
        "&",
        "=",
        ",",
        "(",
        ")",
        "0x7f.1",
        "127.0.0.1",
        "[::1]",
        "%",
        "..;",
        "%c0%ae",
        "\u{e9}",
        "-SNAPSHOT",
        "maven-metadata.xml",
        ".sha1",
    ];
    let count = rng.gen_range(0..10);
    let mut path = String::new();
    for _ in 0..count {
        match rng.gen_range(0..20) {
            0 => path.push_str(canary),
            1 => write!(path, ":{}", rng.gen_range(0..70000)).unwrap(),
            _ => path.push_str(PIECES[rng.gen_range(0..PIECES.len())]),
        }
        if rng.gen_bool(0.5) {
            path.push('/');
        }
    }
    path
}

#[tokio::test]
async fn ten_thousand_random_paths_per_format_panic_nothing_and_reach_no_other_host() {
    let bed = bed().await;
    let canary = bed.canary_host();
    let mut rng = StdRng::seed_from_u64(0x0a11_10c4);
    let mut conn = Conn::open(bed.gateway).await;
    let (mut sent, mut not_uris) = (0u32, 0u32);
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for _ in 0..10_000 {
        let path = random_path(&mut rng, &canary);
        for format in FORMATS {
            match conn
                .get(&format!("/repository/{format}-proxy/{path}"))
                .await
            {
                Some(status) => {
                    sent += 1;
                    *statuses.entry(status).or_default() += 1;
                    assert!(status < 500 || status == 502, "{format} {path:?}: {status}");
                }
                None => not_uris += 1,
            }
        }
    }
    println!("sent {sent} requests ({not_uris} generated paths were not URIs): {statuses:?}");
    assert!(sent > 40_000, "too few generated paths were URIs: {sent}");
    assert!(
        statuses.get(&400).copied().unwrap_or(0) > 1000,
        "{statuses:?}"
    );
    bed.assert_contained();
    let health = common::raw_get(bed.gateway, "/healthz").await;
    assert_eq!(parse(&health).0, 200);
}
