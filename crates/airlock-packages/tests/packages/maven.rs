//! `format = "maven"` at `/repository/<name>/`: a real `mvn` resolving a plugin and an
//! artifact with all their dependencies from Debian's Maven repository (served over HTTP by
//! an in-process upstream) through the gateway, then again with the upstream stopped; and
//! hermetic tests against a fake upstream for checksum verification, metadata refresh,
//! serve-stale, snapshots, negative caching and hostile paths.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use airlock_testkit::{FakeDir, FakeFiles};
use sha1::Digest as _;

/// Debian's Maven repository: what `maven`, `libmaven-dependency-plugin-java` and `junit4`
/// install under it is the upstream of the `mvn` test.
const DEBIAN_REPO: &str = "/usr/share/maven-repo";
const DEPENDENCY_PLUGIN: &str = "org.apache.maven.plugins:maven-dependency-plugin:3.5.0";

async fn start(dir: &Path, upstream: &str, extra: &str) -> SocketAddr {
    common::start(
        dir,
        &format!(
            "[[proxy]]\nname = \"maven-test\"\nformat = \"maven\"\nupstream = \"{upstream}\"\n{extra}\n"
        ),
    )
    .await
}

fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(bytes))
}

fn sha256_hex(bytes: &[u8]) -> String {
    airlock_types::Digest::of(bytes).hex().to_owned()
}

/// Status, `X-Airlock-Cache` and body (a failure may also arrive as a broken body).
async fn fetch(url: &str) -> (u16, String, Option<Vec<u8>>) {
    let response = common::get(url).await;
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-airlock-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        cache,
        response.bytes().await.ok().map(|b| b.to_vec()),
    )
}

/// Runs `mvn -B` with a settings.xml whose only mirror is the gateway, and a fresh local
/// repository under `dir`, off the runtime's threads (the gateway serves it meanwhile).
async fn mvn(dir: &Path, addr: SocketAddr, local_repo: &str, args: &[&str]) -> Output {
    let (dir, local_repo) = (dir.to_owned(), local_repo.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || mvn_blocking(&dir, addr, &local_repo, &args))
        .await
        .unwrap()
}

fn mvn_blocking(dir: &Path, addr: SocketAddr, local_repo: &str, args: &[String]) -> Output {
    airlock_testkit::require_tool("mvn", "maven");
    let settings = dir.join("settings.xml");
    std::fs::write(
        &settings,
        format!(
            "<settings>\n  <mirrors>\n    <mirror>\n      <id>airlock</id>\n      <mirrorOf>*</mirrorOf>\n      <url>http://{addr}/repository/maven-test/</url>\n    </mirror>\n  </mirrors>\n</settings>\n"
        ),
    )
    .unwrap();
    Command::new("mvn")
        .arg("-B")
        .arg("-s")
        .arg(&settings)
        .arg(format!(
            "-Dmaven.repo.local={}",
            dir.join(local_repo).display()
        ))
        .args(args)
        .current_dir(dir)
        .env_remove("MAVEN_OPTS")
        .env_remove("MAVEN_ARGS")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .output()
        .unwrap_or_else(|e| panic!("mvn could not run ({e}): apt-get install maven"))
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The Debian packages the `mvn` test resolves from; a missing one fails the test by name.
fn require_debian_repository() {
    for (path, package) in [
        (
            "org/apache/maven/plugins/maven-dependency-plugin/3.5.0",
            "libmaven-dependency-plugin-java",
        ),
        ("junit/junit/4.13.2/junit-4.13.2.jar", "junit4"),
        (
            "commons-io/commons-io/2.11.0/commons-io-2.11.0.jar",
            "libcommons-io-java",
        ),
    ] {
        assert!(
            Path::new(DEBIAN_REPO).join(path).exists(),
            "{DEBIAN_REPO}/{path} is missing: apt-get install {package} (run scripts/test.sh)"
        );
    }
}

const JUNIT_JAR: &str = "junit/junit/4.13.2/junit-4.13.2.jar";

/// Requests for release artifacts (jars and poms) the upstream received.
fn artifact_requests(upstream: &FakeDir) -> u64 {
    upstream
        .requests()
        .iter()
        .filter(|(path, _)| {
            Path::new(path)
                .extension()
                .is_some_and(|e| e == "jar" || e == "pom")
        })
        .map(|(_, n)| *n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mvn_resolves_a_plugin_and_artifacts_through_the_gateway_and_offline() {
    require_debian_repository();
    let upstream = FakeDir::start(DEBIAN_REPO).await;
    let junit = std::fs::read(Path::new(DEBIAN_REPO).join(JUNIT_JAR)).unwrap();
    // Debian's repository has neither metadata nor checksums: the test adds them. First a
    // .sha256 that does not match the jar.
    upstream.put(
        "junit/junit/maven-metadata.xml",
        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata>\n  <groupId>junit</groupId>\n  <artifactId>junit</artifactId>\n  <versioning>\n    <release>4.13.2</release>\n    <versions>\n      <version>4.12</version>\n      <version>4.13.2</version>\n    </versions>\n  </versioning>\n</metadata>\n",
    );
    upstream.put(
        &format!("{JUNIT_JAR}.sha256"),
        sha256_hex(b"other bytes").as_bytes(),
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(
        dir.path(),
        &upstream.url(),
        "metadata_ttl = \"1s\"\nnegative_ttl = \"1s\"",
    )
    .await;

    // The plugin and everything it needs resolve; the jar whose checksum is wrong does not,
    // and mvn says why.
    let output = mvn(
        dir.path(),
        addr,
        "m2-tampered",
        &["dependency:get", "-Dartifact=junit:junit:4.13.2"],
    )
    .await;
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "mvn accepted a jar with a wrong checksum:\n{log}"
    );
    assert!(log.contains("502"), "{log}");
    assert!(!dir.path().join("m2-tampered").join(JUNIT_JAR).exists());
    assert_eq!(upstream.count(JUNIT_JAR), 1);

    // The upstream's checksum is fixed: mvn resolves the newest 4.x by a version range
    // (through maven-metadata.xml) and the jar, verified by the gateway and by mvn itself.
    upstream.put(
        &format!("{JUNIT_JAR}.sha256"),
        sha256_hex(&junit).as_bytes(),
    );
    upstream.put(&format!("{JUNIT_JAR}.sha1"), sha1_hex(&junit).as_bytes());
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let output = mvn(
        dir.path(),
        addr,
        "m2-first",
        &[
            "dependency:get",
            "-Dartifact=junit:junit:[4.0,5.0)",
            "-Dmaven.repo.checksumPolicy=fail",
        ],
    )
    .await;
    assert_success(&output, "mvn dependency:get through the gateway");
    assert_eq!(
        std::fs::read(dir.path().join("m2-first").join(JUNIT_JAR)).unwrap(),
        junit,
        "the jar mvn stored is the upstream's"
    );
    assert!(upstream.count("junit/junit/maven-metadata.xml") >= 1);
    assert_eq!(upstream.count(JUNIT_JAR), 2);
    assert_eq!(
        upstream.count(
            "org/apache/maven/plugins/maven-dependency-plugin/3.5.0/maven-dependency-plugin-3.5.0.jar"
        ),
        1
    );

    // The upstream goes away: a fresh local repository resolves the same from the cache
    // (maven-metadata.xml served stale, release artifacts immutable).
    upstream.fail_with(Some(503));
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let before = artifact_requests(&upstream);
    let output = mvn(
        dir.path(),
        addr,
        "m2-offline",
        &[
            &format!("{DEPENDENCY_PLUGIN}:get"),
            "-Dartifact=junit:junit:[4.0,5.0)",
        ],
    )
    .await;
    assert_success(&output, "mvn with the upstream down");
    assert_eq!(
        std::fs::read(dir.path().join("m2-offline").join(JUNIT_JAR)).unwrap(),
        junit
    );
    assert_eq!(
        artifact_requests(&upstream),
        before,
        "cached release artifacts never go upstream"
    );
}

/// A fake upstream with one release artifact, its pom, and the given checksum files.
fn artifact_upstream(upstream: &FakeFiles, jar: &[u8], sums: &[(&str, String)]) {
    let base = "com/example/lib/1.0";
    upstream.put(
        &format!("{base}/lib-1.0.jar"),
        "application/java-archive",
        jar,
    );
    for (ext, value) in sums {
        upstream.put(
            &format!("{base}/lib-1.0.jar.{ext}"),
            "text/plain",
            value.as_bytes(),
        );
    }
}

const JAR: &str = "com/example/lib/1.0/lib-1.0.jar";

#[tokio::test]
async fn artifacts_verified_by_sha1_or_sha256_are_cached_for_good() {
    for (ext, sum) in [
        ("sha1", sha1_hex(b"jar bytes")),
        ("sha256", sha256_hex(b"jar bytes")),
        // sha1sum style, with the file name after the value.
        ("sha1", format!("{}  lib-1.0.jar\n", sha1_hex(b"jar bytes"))),
    ] {
        let upstream = FakeFiles::start().await;
        artifact_upstream(&upstream, b"jar bytes", &[(ext, sum.clone())]);
        let dir = tempfile::tempdir().unwrap();
        let addr = start(dir.path(), &upstream.url(), "metadata_ttl = \"0s\"").await;
        let url = format!("http://{addr}/repository/maven-test/{JAR}");
        let (status, cache, body) = fetch(&url).await;
        assert_eq!((status, cache.as_str()), (200, "miss"), "{ext}");
        assert_eq!(body.unwrap(), b"jar bytes");
        // Even with metadata_ttl = 0 and the upstream changed, the artifact is immutable.
        upstream.put(JAR, "application/java-archive", b"other bytes");
        let (status, cache, body) = fetch(&url).await;
        assert_eq!((status, cache.as_str()), (200, "hit"), "{ext}");
        assert_eq!(body.unwrap(), b"jar bytes");
        assert_eq!(upstream.count(JAR), 1, "{ext}");
        // The checksum file itself passes through.
        let (status, _, body) = fetch(&format!("{url}.{ext}")).await;
        assert_eq!(status, 200);
        assert_eq!(body.unwrap(), sum.as_bytes());
    }
}

#[tokio::test]
async fn the_strongest_published_checksum_decides() {
    // A correct sha1 does not save bytes a published sha512 contradicts.
    let upstream = FakeFiles::start().await;
    let wrong512 = "ab".repeat(64);
    artifact_upstream(
        &upstream,
        b"jar bytes",
        &[("sha1", sha1_hex(b"jar bytes")), ("sha512", wrong512)],
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "").await;
    let url = format!("http://{addr}/repository/maven-test/{JAR}");
    let (status, _, body) = fetch(&url).await;
    assert_eq!(status, 502, "{:?}", body.map(String::from_utf8));
    assert!(upstream.count(&format!("{JAR}.sha256")) == 0);
}

#[tokio::test]
async fn a_checksum_mismatch_is_an_error_and_never_cached() {
    let upstream = FakeFiles::start().await;
    artifact_upstream(
        &upstream,
        b"tampered bytes",
        &[("sha1", sha1_hex(b"jar bytes"))],
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "metadata_ttl = \"0s\"").await;
    let url = format!("http://{addr}/repository/maven-test/{JAR}");
    for attempt in 1..=2 {
        let (status, _, body) = fetch(&url).await;
        assert_eq!(status, 502, "attempt {attempt}");
        let body = String::from_utf8(body.unwrap()).unwrap();
        assert!(
            body.contains("wrong content") && body.contains("sha1"),
            "{body}"
        );
        assert!(
            !body.contains("tampered"),
            "the wrong bytes never reach the client"
        );
        assert_eq!(upstream.count(JAR), attempt, "every attempt refetches");
    }
    // The upstream fixes its file: the next request fetches, verifies and caches it.
    upstream.put(JAR, "application/java-archive", b"jar bytes");
    let (status, cache, body) = fetch(&url).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert_eq!(body.unwrap(), b"jar bytes");
    // Also with a sha256 the store checks.
    let upstream = FakeFiles::start().await;
    artifact_upstream(
        &upstream,
        b"tampered bytes",
        &[("sha256", sha256_hex(b"jar bytes"))],
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "").await;
    let url = format!("http://{addr}/repository/maven-test/{JAR}");
    let (status, _, _) = fetch(&url).await;
    assert_eq!(status, 502);
    upstream.put(JAR, "application/java-archive", b"jar bytes");
    let (status, cache, body) = fetch(&url).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert_eq!(body.unwrap(), b"jar bytes");
}

#[tokio::test]
async fn artifacts_without_checksums_are_cached_as_they_came_and_broken_checksums_refused() {
    let upstream = FakeFiles::start().await;
    artifact_upstream(&upstream, b"jar bytes", &[]);
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "").await;
    let url = format!("http://{addr}/repository/maven-test/{JAR}");
    let (status, cache, body) = fetch(&url).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert_eq!(body.unwrap(), b"jar bytes");
    for ext in ["sha512", "sha256", "sha1"] {
        assert_eq!(
            upstream.count(&format!("{JAR}.{ext}")),
            1,
            "{ext} was asked for"
        );
    }
    upstream.fail_with(Some(503));
    let (status, cache, _) = fetch(&url).await;
    assert_eq!((status, cache.as_str()), (200, "hit"));

    // A checksum file that holds no checksum (an HTML error page) is an error, not a pass.
    let upstream = FakeFiles::start().await;
    artifact_upstream(
        &upstream,
        b"jar bytes",
        &[("sha1", "<html>rate limited</html>".to_owned())],
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "").await;
    let url = format!("http://{addr}/repository/maven-test/{JAR}");
    let (status, _, _) = fetch(&url).await;
    assert_eq!(status, 502);
    assert_eq!(
        upstream.count(JAR),
        0,
        "nothing fetched that cannot be verified"
    );

    // An upstream failing on the checksum: the artifact is not fetched unverified.
    let upstream = FakeFiles::start().await;
    artifact_upstream(&upstream, b"jar bytes", &[("sha1", sha1_hex(b"jar bytes"))]);
    upstream.fail_with(Some(500));
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "").await;
    let (status, _, _) = fetch(&format!("http://{addr}/repository/maven-test/{JAR}")).await;
    assert_eq!(status, 502);
}

const METADATA: &str = "com/example/lib/maven-metadata.xml";

fn metadata(version: &str) -> Vec<u8> {
    format!("<?xml version=\"1.0\"?>\n<metadata><groupId>com.example</groupId><artifactId>lib</artifactId><versioning><release>{version}</release><versions><version>{version}</version></versions></versioning></metadata>\n").into_bytes()
}

#[tokio::test]
async fn metadata_is_refreshed_by_ttl_and_served_stale() {
    let upstream = FakeFiles::start().await;
    upstream.put(METADATA, "application/xml", &metadata("1.0"));
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "metadata_ttl = \"1s\"").await;
    let url = format!("http://{addr}/repository/maven-test/{METADATA}");
    let (status, cache, body) = fetch(&url).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert_eq!(body.unwrap(), metadata("1.0"));
    // Within the TTL: from the cache, even though the upstream changed.
    upstream.put(METADATA, "application/xml", &metadata("1.1"));
    let (_, cache, body) = fetch(&url).await;
    assert_eq!(cache, "hit");
    assert_eq!(body.unwrap(), metadata("1.0"));
    assert_eq!(upstream.count(METADATA), 1);
    // After it: refreshed.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, cache, body) = fetch(&url).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert_eq!(body.unwrap(), metadata("1.1"));
    // Upstream down, TTL over: the cached copy, marked stale.
    upstream.fail_with(Some(503));
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, cache, body) = fetch(&url).await;
    assert_eq!((status, cache.as_str()), (200, "stale"));
    assert_eq!(body.unwrap(), metadata("1.1"));
    // Upstream answering garbage: not cached, the previous copy served stale.
    upstream.fail_with(None);
    upstream.put(METADATA, "text/html", b"<html>maintenance</html>");
    let (status, cache, body) = fetch(&url).await;
    assert_eq!((status, cache.as_str()), (200, "stale"));
    assert_eq!(body.unwrap(), metadata("1.1"));
    // Metadata at the version level too, and missing metadata is remembered.
    let version_level = "com/example/lib/1.0-SNAPSHOT/maven-metadata.xml";
    upstream.put(version_level, "application/xml", &metadata("1.0-SNAPSHOT"));
    let (status, _, body) = fetch(&format!(
        "http://{addr}/repository/maven-test/{version_level}"
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), metadata("1.0-SNAPSHOT"));
    let missing = "com/example/other/maven-metadata.xml";
    for _ in 0..2 {
        let (status, _, _) = fetch(&format!("http://{addr}/repository/maven-test/{missing}")).await;
        assert_eq!(status, 404);
    }
    assert_eq!(
        upstream.count(missing),
        1,
        "a 404 is remembered for negative_ttl"
    );
    // A malformed metadata file with nothing cached: a clear 502.
    let broken = "com/example/broken/maven-metadata.xml";
    upstream.put(broken, "application/xml", b"<metadata><versioning>");
    let (status, _, body) = fetch(&format!("http://{addr}/repository/maven-test/{broken}")).await;
    assert_eq!(status, 502);
    assert!(
        String::from_utf8(body.unwrap())
            .unwrap()
            .contains("maven-metadata.xml")
    );
}

#[tokio::test]
async fn snapshots_are_refreshed_and_missing_artifacts_remembered() {
    let upstream = FakeFiles::start().await;
    let snapshot = "com/example/lib/1.1-SNAPSHOT/lib-1.1-SNAPSHOT.jar";
    upstream.put(snapshot, "application/java-archive", b"build 1");
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "metadata_ttl = \"1s\"").await;
    let url = format!("http://{addr}/repository/maven-test/{snapshot}");
    let (status, _, body) = fetch(&url).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), b"build 1");
    upstream.put(snapshot, "application/java-archive", b"build 2");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, _, body) = fetch(&url).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), b"build 2", "a snapshot is redeployable");
    assert_eq!(
        upstream.count(&format!("{snapshot}.sha1")),
        0,
        "no checksum lookup for snapshots"
    );

    let missing = "com/example/lib/9.9/lib-9.9.jar";
    for _ in 0..2 {
        let (status, _, _) = fetch(&format!("http://{addr}/repository/maven-test/{missing}")).await;
        assert_eq!(status, 404);
    }
    assert_eq!(
        upstream.count(missing),
        1,
        "a missing artifact is remembered"
    );
}

#[tokio::test]
async fn hostile_paths_are_refused() {
    let upstream = FakeFiles::start().await;
    upstream.put("secret", "text/plain", b"not for clients");
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &format!("{}repo/", upstream.url()), "").await;
    for path in [
        "/repository/maven-test/../secret",
        "/repository/maven-test/com/../../secret",
        "/repository/maven-test/com/%2e%2e/%2e%2e/secret",
        "/repository/maven-test/com%2f..%2f..%2fsecret",
        "/repository/maven-test/com//example/lib/1.0/lib-1.0.jar",
        "/repository/maven-test/com/example\\lib/1.0/lib-1.0.jar",
    ] {
        let response = common::raw_get(addr, path).await;
        let status = response.split(' ').nth(1).unwrap_or("");
        assert!(status == "400" || status == "404", "{path}: {response}");
        assert!(!response.contains("not for clients"), "{path}");
    }
    assert_eq!(upstream.count("secret"), 0);
}
