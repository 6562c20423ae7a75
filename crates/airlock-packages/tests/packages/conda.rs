//! `format = "conda"` at `/repository/<name>/`: hermetic tests against an in-process
//! channel (byte-exact repodata, 304s, packages verified against repodata's sha256, CEP-16
//! shard index rewriting, hostile input, serve-stale), and py-rattler as a real conda
//! client solving and installing through `channel_alias`, then again with the upstream
//! stopped.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use airlock_testkit::FakeFiles;
use airlock_testkit::conda::{repodata, shard_index, shard_index_urls, zstd_compress};
use airlock_types::Digest;

async fn start(dir: &std::path::Path, upstream: &str, extra: &str) -> SocketAddr {
    common::start(dir, &format!("[[proxy]]\nname = \"conda-forge\"\nformat = \"conda\"\nupstream = \"{upstream}\"\n{extra}\n")).await
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

/// Status and body (a mismatch may also arrive as a broken body).
async fn fetch(url: &str) -> (u16, Option<Vec<u8>>) {
    let response = get(url).await;
    let status = response.status().as_u16();
    (status, response.bytes().await.ok().map(|b| b.to_vec()))
}

#[tokio::test]
async fn repodata_files_are_byte_exact_refreshed_and_answer_304() {
    let upstream = FakeFiles::start().await;
    let json = repodata("noarch", &[("a-1.0-0.conda", b"a")]);
    let zst = zstd_compress(&json);
    let bz2 = b"BZh91AY&SY fake bzip2 bytes".to_vec();
    upstream.put("noarch/repodata.json", "application/json", &json);
    upstream.put("noarch/repodata.json.zst", "application/octet-stream", &zst);
    upstream.put("noarch/repodata.json.bz2", "application/x-bzip2", &bz2);
    upstream.put("channeldata.json", "application/json", b"{\"packages\":{}}");
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "").await;
    let base = format!("http://{addr}/repository/conda-forge");
    for (path, bytes) in [
        ("noarch/repodata.json", json.as_slice()),
        ("noarch/repodata.json.zst", zst.as_slice()),
        ("noarch/repodata.json.bz2", bz2.as_slice()),
        ("channeldata.json", b"{\"packages\":{}}".as_slice()),
    ] {
        let url = format!("{base}/{path}");
        for expected in ["miss", "hit"] {
            let response = get(&url).await;
            assert_eq!(response.status(), 200, "{path}");
            assert_eq!(response.headers()["x-airlock-cache"], expected, "{path}");
            assert!(
                response.headers().get("content-encoding").is_none(),
                "{path}"
            );
            let etag = response.headers()["etag"].clone();
            assert_eq!(response.bytes().await.unwrap(), bytes, "{path}");
            let again = client()
                .get(&url)
                .header("if-none-match", etag)
                .send()
                .await
                .unwrap();
            assert_eq!(again.status(), 304, "{path}");
        }
        assert_eq!(upstream.count(path), 1, "{path}");
    }
    // A 404 upstream stays a 404, and is remembered.
    for _ in 0..2 {
        assert_eq!(
            get(&format!("{base}/noarch/current_repodata.json"))
                .await
                .status(),
            404
        );
    }
    assert_eq!(upstream.count("noarch/current_repodata.json"), 1);
}

#[tokio::test]
async fn packages_are_verified_against_repodata_and_never_cached_wrong() {
    let upstream = FakeFiles::start().await;
    let good_conda = b"a .conda archive".to_vec();
    let good_tar = b"a .tar.bz2 archive".to_vec();
    let mut json: serde_json::Value = serde_json::from_slice(&repodata(
        "linux-64",
        &[
            ("good-1.0-0.conda", &good_conda),
            ("good-1.0-0.tar.bz2", &good_tar),
            ("bad-1.0-0.conda", b"what repodata promises"),
            ("nosha-1.0-0.conda", b"x"),
        ],
    ))
    .unwrap();
    json["packages.conda"]["nosha-1.0-0.conda"]
        .as_object_mut()
        .unwrap()
        .remove("sha256");
    let json = serde_json::to_vec(&json).unwrap();
    upstream.put("linux-64/repodata.json", "application/json", &json);
    upstream.put(
        "linux-64/good-1.0-0.conda",
        "application/octet-stream",
        &good_conda,
    );
    upstream.put(
        "linux-64/good-1.0-0.tar.bz2",
        "application/x-bzip2",
        &good_tar,
    );
    upstream.put(
        "linux-64/bad-1.0-0.conda",
        "application/octet-stream",
        b"tampered",
    );
    upstream.put(
        "linux-64/nosha-1.0-0.conda",
        "application/octet-stream",
        b"x",
    );
    upstream.put(
        "linux-64/unlisted-1.0-0.conda",
        "application/octet-stream",
        b"y",
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "").await;
    let base = format!("http://{addr}/repository/conda-forge/linux-64");

    for (file, bytes) in [
        ("good-1.0-0.conda", &good_conda),
        ("good-1.0-0.tar.bz2", &good_tar),
    ] {
        for expected in ["miss", "hit"] {
            let response = get(&format!("{base}/{file}")).await;
            assert_eq!(response.status(), 200, "{file}");
            assert_eq!(response.headers()["x-airlock-cache"], expected);
            assert_eq!(
                response.headers()["etag"].to_str().unwrap(),
                format!("\"{}\"", Digest::of(bytes))
            );
            assert_eq!(&response.bytes().await.unwrap(), bytes);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(upstream.count(&format!("linux-64/{file}")), 1);
    }
    // Repodata is fetched once for all of them.
    assert_eq!(upstream.count("linux-64/repodata.json"), 1);

    for attempt in 1..=2 {
        let (status, body) = fetch(&format!("{base}/bad-1.0-0.conda")).await;
        assert!(
            status == 502 || body.as_deref() != Some(b"tampered".as_slice()),
            "a mismatch never arrives whole"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            upstream.count("linux-64/bad-1.0-0.conda"),
            attempt,
            "never cached"
        );
    }
    for file in ["nosha-1.0-0.conda", "unlisted-1.0-0.conda"] {
        let response = get(&format!("{base}/{file}")).await;
        assert_eq!(response.status(), 404, "{file}");
        let text = response.text().await.unwrap();
        assert!(text.contains("cannot verify"), "{text}");
        assert_eq!(upstream.count(&format!("linux-64/{file}")), 0, "{file}");
    }
}

#[tokio::test]
async fn shard_index_urls_are_rewritten_and_shards_verified_by_name() {
    let upstream = FakeFiles::start().await;
    let shard = zstd_compress(b"\x80 a msgpack shard");
    let other = zstd_compress(b"\x80 another shard");
    let shard_hex = Digest::of(&shard).hex().to_owned();
    // Absolute URLs pointing at the upstream (shards on a path of its own).
    let index = shard_index(
        "noarch",
        &format!("{}noarch/", upstream.url()),
        &format!("{}shard-store/", upstream.url()),
        &[("a", &shard)],
    );
    upstream.put(
        "noarch/repodata_shards.msgpack.zst",
        "application/octet-stream",
        &index,
    );
    upstream.put(
        &format!("shard-store/{shard_hex}.msgpack.zst"),
        "application/octet-stream",
        &shard,
    );
    let wrong_name = "0".repeat(64);
    upstream.put(
        &format!("shard-store/{wrong_name}.msgpack.zst"),
        "application/octet-stream",
        &other,
    );
    // Relative URLs stay as they are.
    let relative = shard_index("linux-64", "./", "./shards/", &[("b", &other)]);
    upstream.put(
        "linux-64/repodata_shards.msgpack.zst",
        "application/octet-stream",
        &relative,
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "").await;
    let base = format!("http://{addr}/repository/conda-forge");

    let response = get(&format!("{base}/noarch/repodata_shards.msgpack.zst")).await;
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].clone();
    let served = response.bytes().await.unwrap();
    assert_eq!(
        shard_index_urls(&served),
        (
            "/repository/conda-forge/noarch/".to_owned(),
            "/repository/conda-forge/noarch/shards/".to_owned()
        )
    );
    let again = get(&format!("{base}/noarch/repodata_shards.msgpack.zst")).await;
    assert_eq!(
        again.bytes().await.unwrap(),
        served,
        "re-encoded deterministically"
    );
    let not_modified = client()
        .get(format!("{base}/noarch/repodata_shards.msgpack.zst"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);

    let relative_served = get(&format!("{base}/linux-64/repodata_shards.msgpack.zst"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        shard_index_urls(&relative_served),
        ("./".to_owned(), "./shards/".to_owned())
    );

    for expected in ["miss", "hit"] {
        let response = get(&format!("{base}/noarch/shards/{shard_hex}.msgpack.zst")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-airlock-cache"], expected);
        assert_eq!(response.bytes().await.unwrap(), shard);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        upstream.count(&format!("shard-store/{shard_hex}.msgpack.zst")),
        1
    );
    let (status, body) = fetch(&format!("{base}/noarch/shards/{wrong_name}.msgpack.zst")).await;
    assert!(status == 502 || body.as_deref() != Some(other.as_slice()));
    assert_eq!(
        get(&format!("{base}/noarch/shards/NOTAHASH.msgpack.zst"))
            .await
            .status(),
        400
    );
}

#[tokio::test]
async fn hostile_input_is_refused_and_nothing_wrong_is_cached() {
    let upstream = FakeFiles::start().await;
    upstream.put(
        "linux-64/repodata.json",
        "application/json",
        b"{\"packages\": [1, 2]}",
    );
    upstream.put("linux-64/x-1.0-0.conda", "application/octet-stream", b"x");
    upstream.put(
        "noarch/repodata_shards.msgpack.zst",
        "application/octet-stream",
        b"not zstd",
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "").await;
    let base = format!("http://{addr}/repository/conda-forge");
    for path in [
        "Linux-64/repodata.json",
        "linux-64/../noarch/repodata.json",
        "linux%2f64/repodata.json",
        "linux-64/%2e%2e/x.conda",
        "linux.64/repodata.json",
    ] {
        let status = get(&format!("{base}/{path}")).await.status();
        assert!(status == 400 || status == 404, "{path}: {status}");
    }
    assert_eq!(
        get(&format!("{base}/linux-64/evil.exe")).await.status(),
        404
    );
    assert_eq!(get(&format!("{base}/a/b/c/d")).await.status(), 404);

    // Malformed repodata: refused, not cached; the packages it would vouch for too.
    let response = get(&format!("{base}/linux-64/repodata.json")).await;
    assert_eq!(response.status(), 502);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("repodata.json is not valid")
    );
    assert_eq!(
        get(&format!("{base}/linux-64/x-1.0-0.conda"))
            .await
            .status(),
        502
    );
    assert_eq!(upstream.count("linux-64/x-1.0-0.conda"), 0);
    assert_eq!(
        get(&format!("{base}/noarch/repodata_shards.msgpack.zst"))
            .await
            .status(),
        502
    );

    // Once upstream is fixed, the good copy is fetched at once (nothing bad was cached).
    let fixed = repodata("linux-64", &[("x-1.0-0.conda", b"x")]);
    upstream.put("linux-64/repodata.json", "application/json", &fixed);
    let response = get(&format!("{base}/linux-64/repodata.json")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), fixed);
    assert_eq!(
        get(&format!("{base}/linux-64/x-1.0-0.conda"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn cached_channel_is_served_stale_when_the_upstream_fails() {
    let upstream = FakeFiles::start().await;
    let package = b"package bytes".to_vec();
    let json = repodata("noarch", &[("p-1.0-0.tar.bz2", &package)]);
    upstream.put("noarch/repodata.json", "application/json", &json);
    upstream.put("noarch/p-1.0-0.tar.bz2", "application/x-bzip2", &package);
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "metadata_ttl = \"1s\"").await;
    let base = format!("http://{addr}/repository/conda-forge/noarch");
    assert_eq!(get(&format!("{base}/p-1.0-0.tar.bz2")).await.status(), 200);
    upstream.fail_with(Some(503));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let response = get(&format!("{base}/repodata.json")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-airlock-cache"], "stale");
    assert_eq!(response.bytes().await.unwrap(), json);
    let response = get(&format!("{base}/p-1.0-0.tar.bz2")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), package);
}

/// Builds a channel of hand-made `.tar.bz2` packages and indexes it with py-rattler (plain
/// repodata, `.zst` and CEP-16 shards).
const CHANNEL_BUILDER: &str = r#"
import asyncio, hashlib, io, json, os, sys, tarfile
from rattler.index import index_fs
root = sys.argv[1]
def pkg(subdir, name, version, depends):
    d = os.path.join(root, subdir)
    os.makedirs(d, exist_ok=True)
    with tarfile.open(os.path.join(d, f"{name}-{version}-0.tar.bz2"), "w:bz2") as t:
        def add(path, data):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        content = f"{name} {version}\n".encode()
        add("info/index.json", json.dumps({"name": name, "version": version, "build": "0",
            "build_number": 0, "depends": depends, "subdir": subdir}).encode())
        add("info/paths.json", json.dumps({"paths_version": 1, "paths": [{
            "_path": f"share/{name}.txt", "path_type": "hardlink",
            "sha256": hashlib.sha256(content).hexdigest(), "size_in_bytes": len(content)}]}).encode())
        add(f"share/{name}.txt", content)
pkg("noarch", "airlock-app", "1.0", ["airlock-lib >=2"])
pkg("noarch", "airlock-lib", "2.1", [])
os.makedirs(os.path.join(root, "linux-64"), exist_ok=True)
asyncio.run(index_fs(root, write_zst=True, write_shards=True))
# See CLIENT: skip finalization, which py-rattler's threads can crash.
sys.stdout.flush()
os._exit(0)
"#;

/// Solves and installs `airlock-app` from channel `conda-forge` under `channel_alias`,
/// reading plain repodata, `.zst`, or CEP-16 shards; prints the installed files.
const CLIENT: &str = r#"
import asyncio, os, sys
from rattler import Channel, ChannelConfig, Gateway, SourceConfig, solve, install
alias, mode, work = sys.argv[1:4]
async def main():
    config = SourceConfig(zstd_enabled=(mode != "plain"), bz2_enabled=False,
                          sharded_enabled=(mode == "shards"))
    gateway = Gateway(cache_dir=os.path.join(work, "repodata-cache"), default_config=config)
    channel = Channel("conda-forge", ChannelConfig(channel_alias=alias))
    records = await solve(sources=[channel], specs=["airlock-app"], gateway=gateway,
                          platforms=["linux-64", "noarch"])
    prefix = os.path.join(work, "prefix")
    await install(records, prefix, cache_dir=os.path.join(work, "pkgs"), show_progress=False)
    for name in ("airlock-app", "airlock-lib"):
        print(open(os.path.join(prefix, "share", name + ".txt")).read().strip())
asyncio.run(main())
# py-rattler 0.28's background threads can crash the interpreter while it finalizes
# (SIGSEGV / "PyGILState_Release … finalizing") after all work is done: skip finalization.
sys.stdout.flush()
os._exit(0)
"#;

fn python(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let mut command = std::process::Command::new("python3");
    command.args(args);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.to_ascii_lowercase().ends_with("_proxy") || key.starts_with("CONDA") {
            command.env_remove(key);
        }
    }
    command.env("NO_PROXY", "*").output().expect("run python3")
}

/// `python3 -m http.server`, stopped (and reaped) when dropped.
struct StaticServer(std::process::Child);

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port for the static server.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_rattler_solves_and_installs_through_channel_alias_then_with_the_upstream_stopped() {
    let check = std::process::Command::new("python3")
        .args(["-c", "import rattler.index"])
        .output();
    assert!(
        check.is_ok_and(|o| o.status.success()),
        "py-rattler is not installed: python3 -m pip install py-rattler (run scripts/test.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let channel = dir.path().join("channels").join("forge");
    std::fs::create_dir_all(&channel).unwrap();
    let script = dir.path().join("build_channel.py");
    std::fs::write(&script, CHANNEL_BUILDER).unwrap();
    let built = python(&[script.as_os_str(), channel.as_os_str()]);
    assert!(
        built.status.success(),
        "building the channel: {}\n{}",
        built.status,
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(channel.join("noarch/repodata_shards.msgpack.zst").exists());

    // The upstream: the channel tree served statically by a real HTTP server.
    let port = free_port();
    let mut server = Some(StaticServer(
        std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir.path().join("channels"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("upstream.log")).unwrap())
            .spawn()
            .unwrap(),
    ));
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let addr = start(
        dir.path(),
        &format!("http://127.0.0.1:{port}/forge/"),
        "metadata_ttl = \"1s\"",
    )
    .await;
    let alias = format!("http://{addr}/repository/");
    let client = dir.path().join("client.py");
    std::fs::write(&client, CLIENT).unwrap();

    let run = |mode: &str, round: &str| {
        let work = dir.path().join(format!("{round}-{mode}"));
        let (client, alias, mode) = (client.clone(), alias.clone(), mode.to_owned());
        tokio::task::spawn_blocking(move || {
            python(&[
                client.as_os_str(),
                alias.as_ref(),
                mode.as_ref(),
                work.as_os_str(),
            ])
        })
    };
    for round in ["online", "offline"] {
        if round == "offline" {
            drop(server.take());
            // Past metadata_ttl: repodata must come from the cache, stale.
            tokio::time::sleep(Duration::from_millis(2100)).await;
        }
        for mode in ["plain", "zst", "shards"] {
            let output = run(mode, round).await.unwrap();
            assert!(
                output.status.success(),
                "{round} {mode}: {}\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                "airlock-app 1.0\nairlock-lib 2.1\n",
                "{round} {mode}"
            );
        }
    }
    // Every kind of channel file went through the gateway to the real upstream.
    let log = std::fs::read_to_string(dir.path().join("upstream.log")).unwrap();
    for fetched in [
        "GET /forge/noarch/repodata.json ",
        "GET /forge/noarch/repodata.json.zst ",
        "GET /forge/noarch/repodata_shards.msgpack.zst ",
        "GET /forge/noarch/shards/",
        "GET /forge/noarch/airlock-app-1.0-0.tar.bz2 ",
        "GET /forge/noarch/airlock-lib-2.1-0.tar.bz2 ",
    ] {
        assert!(log.contains(fetched), "{fetched} not in\n{log}");
    }
    assert_eq!(
        log.matches("GET /forge/noarch/airlock-app-1.0-0.tar.bz2 ")
            .count(),
        1,
        "packages are fetched once: {log}"
    );
}

/// A zstd frame of `blocks` RLE blocks of 128 KiB zeros: four bytes per 128 KiB, so a
/// few hundred KiB claim gigabytes.
fn zstd_bomb(blocks: u32) -> Vec<u8> {
    // Magic, a descriptor without content size, a 128 KiB window.
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
    for i in 0..blocks {
        let header = ((128 * 1024) << 3) | (1 << 1) | u32::from(i + 1 == blocks);
        frame.extend_from_slice(&header.to_le_bytes()[..3]);
        frame.push(0);
    }
    frame
}

#[tokio::test]
async fn byte_identical_shard_indexes_of_two_proxies_are_rewritten_for_each() {
    let upstream = FakeFiles::start().await;
    let shard = zstd_compress(b"\x80 a shard both channels share");
    let shard_hex = Digest::of(&shard).hex().to_owned();
    // The same bytes behind both channels: an absolute base_url, relative shards.
    let index = shard_index(
        "noarch",
        "https://conda.example/forge/noarch/",
        "./shards/",
        &[("a", &shard)],
    );
    for channel in ["a", "b"] {
        upstream.put(
            &format!("{channel}/noarch/repodata_shards.msgpack.zst"),
            "application/octet-stream",
            &index,
        );
        upstream.put(
            &format!("{channel}/noarch/shards/{shard_hex}.msgpack.zst"),
            "application/octet-stream",
            &shard,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let url = upstream.url();
    let addr = common::start(
        dir.path(),
        &format!(
            "[[proxy]]\nname = \"forge-a\"\nformat = \"conda\"\nupstream = \"{url}a/\"\n\
             [[proxy]]\nname = \"forge-b\"\nformat = \"conda\"\nupstream = \"{url}b/\"\n"
        ),
    )
    .await;
    for name in ["forge-a", "forge-b"] {
        let response = get(&format!(
            "http://{addr}/repository/{name}/noarch/repodata_shards.msgpack.zst"
        ))
        .await;
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(
            shard_index_urls(&response.bytes().await.unwrap()),
            (
                format!("/repository/{name}/noarch/"),
                "./shards/".to_owned()
            ),
            "{name} serves its own rewrite"
        );
    }
    // Relative shards are fetched from each proxy's own upstream.
    let response = get(&format!(
        "http://{addr}/repository/forge-b/noarch/shards/{shard_hex}.msgpack.zst"
    ))
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), shard);
    assert_eq!(
        upstream.count(&format!("b/noarch/shards/{shard_hex}.msgpack.zst")),
        1
    );
    assert_eq!(
        upstream.count(&format!("a/noarch/shards/{shard_hex}.msgpack.zst")),
        0
    );
}

#[tokio::test]
async fn a_zstd_bomb_shard_index_is_refused_quickly_and_never_cached() {
    let upstream = FakeFiles::start().await;
    // 4 GiB of zeros claimed by 128 KiB.
    let bomb = zstd_bomb(32 * 1024);
    upstream.put(
        "noarch/repodata_shards.msgpack.zst",
        "application/octet-stream",
        &bomb,
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), &upstream.url(), "").await;
    let url = format!("http://{addr}/repository/conda-forge/noarch/repodata_shards.msgpack.zst");
    let started = std::time::Instant::now();
    let response = get(&url).await;
    assert_eq!(response.status(), 502);
    let text = response.text().await.unwrap();
    assert!(text.contains("decompresses to more than"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "reading stops at the bound: {:?}",
        started.elapsed()
    );
    // Nothing was cached: the fixed index is fetched at once and served.
    let index = shard_index("noarch", "./", "./shards/", &[]);
    upstream.put(
        "noarch/repodata_shards.msgpack.zst",
        "application/octet-stream",
        &index,
    );
    let response = get(&url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.count("noarch/repodata_shards.msgpack.zst"), 2);
}

#[tokio::test]
async fn rewritten_shard_indexes_stay_bounded_per_proxy() {
    let upstream = FakeFiles::start().await;
    let subdirs: Vec<String> = (0..12).map(|i| format!("sub-{i}")).collect();
    for subdir in &subdirs {
        upstream.put(
            &format!("{subdir}/repodata_shards.msgpack.zst"),
            "application/octet-stream",
            &shard_index(subdir, "https://conda.example/x/", "./shards/", &[]),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let name = "forge-bounded";
    let (addr, packages) = common::start_with_packages(
        dir.path(),
        &format!(
            "[[proxy]]\nname = \"{name}\"\nformat = \"conda\"\nupstream = \"{}\"\n",
            upstream.url()
        ),
    )
    .await;
    for subdir in &subdirs {
        let response = get(&format!(
            "http://{addr}/repository/{name}/{subdir}/repodata_shards.msgpack.zst"
        ))
        .await;
        assert_eq!(response.status(), 200, "{subdir}");
    }
    let stats = packages.derived_stats(name);
    let table = stats
        .iter()
        .find(|t| t.name == "conda-shard-index")
        .unwrap();
    assert_eq!(table.computed, 12, "each index rewritten once: {stats:?}");
    assert!(
        table.kept <= table.capacity && table.capacity < 12,
        "{stats:?}"
    );
}
