//! py-rattler against an offline `conda` proxy: of two versions of a dependency upstream,
//! the solver sees only the one fetched before (plain repodata, `.zst`, and with CEP-16
//! shards enabled, which an offline proxy does not serve).

#![allow(clippy::unnecessary_debug_formatting)]

use std::process::Command;
use std::time::Duration;

use super::{shown, start, unreachable};
use crate::common;

const PROXY: &str = "name = \"conda-forge\"\nformat = \"conda\"";

/// A channel of hand-made `.tar.bz2` packages indexed with py-rattler: `airlock-app 1.0`
/// needing `airlock-lib >=2`, of which there are `2.1` and `3.0`.
const CHANNEL: &str = r#"
import asyncio, hashlib, io, json, os, sys, tarfile
from rattler.index import index_fs
root = sys.argv[1]
def pkg(name, version, depends):
    d = os.path.join(root, "noarch")
    os.makedirs(d, exist_ok=True)
    with tarfile.open(os.path.join(d, f"{name}-{version}-0.tar.bz2"), "w:bz2") as t:
        def add(path, data):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        content = f"{name} {version}\n".encode()
        add("info/index.json", json.dumps({"name": name, "version": version, "build": "0",
            "build_number": 0, "depends": depends, "subdir": "noarch"}).encode())
        add("info/paths.json", json.dumps({"paths_version": 1, "paths": [{
            "_path": f"share/{name}.txt", "path_type": "hardlink",
            "sha256": hashlib.sha256(content).hexdigest(), "size_in_bytes": len(content)}]}).encode())
        add(f"share/{name}.txt", content)
pkg("airlock-app", "1.0", ["airlock-lib >=2"])
pkg("airlock-lib", "2.1", [])
pkg("airlock-lib", "3.0", [])
os.makedirs(os.path.join(root, "linux-64"), exist_ok=True)
asyncio.run(index_fs(root, write_zst=True, write_shards=True))
sys.stdout.flush()
os._exit(0)
"#;

/// Solves `specs` (comma-separated) from channel `conda-forge` under `channel_alias` and
/// installs them; prints each installed record as `name version`.
const CLIENT: &str = r#"
import asyncio, os, sys
from rattler import Channel, ChannelConfig, Gateway, SourceConfig, solve, install
alias, mode, work, specs = sys.argv[1:5]
async def main():
    config = SourceConfig(zstd_enabled=(mode != "plain"), bz2_enabled=False,
                          sharded_enabled=(mode == "shards"))
    gateway = Gateway(cache_dir=os.path.join(work, "repodata-cache"), default_config=config)
    channel = Channel("conda-forge", ChannelConfig(channel_alias=alias))
    records = await solve(sources=[channel], specs=specs.split(","), gateway=gateway,
                          platforms=["linux-64", "noarch"])
    await install(records, os.path.join(work, "prefix"), cache_dir=os.path.join(work, "pkgs"),
                  show_progress=False)
    for record in sorted(records, key=lambda r: r.name.normalized):
        print(record.name.normalized, record.version)
asyncio.run(main())
# py-rattler's background threads can crash the interpreter while it finalizes.
sys.stdout.flush()
os._exit(0)
"#;

fn python(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let mut command = Command::new("python3");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_rattler_solves_with_only_the_held_packages() {
    let check = Command::new("python3")
        .args(["-c", "import rattler.index"])
        .output();
    assert!(
        check.is_ok_and(|o| o.status.success()),
        "py-rattler is not installed: python3 -m pip install py-rattler (run scripts/test.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let channel = dir.path().join("channels/forge");
    std::fs::create_dir_all(&channel).unwrap();
    let script = dir.path().join("channel.py");
    std::fs::write(&script, CHANNEL).unwrap();
    let built = python(&[script.as_os_str(), channel.as_os_str()]);
    assert!(
        built.status.success(),
        "building the channel: {}",
        shown(&built)
    );
    let port = common::closed_port();
    let server = StaticServer(
        Command::new("python3")
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
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = dir.path().join("client.py");
    std::fs::write(&client, CLIENT).unwrap();
    let run = |alias: String, mode: &str, work: &str, specs: &str| {
        let work = dir.path().join(work);
        let (client, mode, specs) = (client.clone(), mode.to_owned(), specs.to_owned());
        tokio::task::spawn_blocking(move || {
            python(&[
                client.as_os_str(),
                alias.as_ref(),
                mode.as_ref(),
                work.as_os_str(),
                specs.as_ref(),
            ])
        })
    };

    let online = start(
        dir.path(),
        PROXY,
        &format!("http://127.0.0.1:{port}/forge/"),
        false,
    )
    .await;
    let alias = format!("http://{}/repository/", online.addr);
    let output = run(alias, "zst", "online", "airlock-app,airlock-lib 2.1.*")
        .await
        .unwrap();
    assert!(output.status.success(), "online: {}", shown(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "airlock-app 1.0\nairlock-lib 2.1\n"
    );
    online.stop().await;
    drop(server);

    let offline = start(dir.path(), PROXY, &unreachable("forge/"), true).await;
    let alias = format!("http://{}/repository/", offline.addr);
    let repodata: serde_json::Value =
        common::get(&format!("{alias}conda-forge/noarch/repodata.json"))
            .await
            .json()
            .await
            .unwrap();
    let mut listed: Vec<&String> = repodata["packages"].as_object().unwrap().keys().collect();
    listed.sort();
    assert_eq!(
        listed,
        ["airlock-app-1.0-0.tar.bz2", "airlock-lib-2.1-0.tar.bz2"]
    );
    for mode in ["plain", "zst", "shards"] {
        // Unpinned: upstream's newest lib (3.0) would be chosen, and could not be downloaded.
        let output = run(
            alias.clone(),
            mode,
            &format!("offline-{mode}"),
            "airlock-app",
        )
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "offline {mode}: {}",
            shown(&output)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "airlock-app 1.0\nairlock-lib 2.1\n",
            "{mode}"
        );
    }
    let output = run(alias, "plain", "unheld", "airlock-lib >=3")
        .await
        .unwrap();
    assert!(
        !output.status.success(),
        "3.0 is not held: {}",
        shown(&output)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("airlock-lib >=3"),
        "the solver names what it cannot satisfy: {}",
        shown(&output)
    );
    offline.stop().await;
}
