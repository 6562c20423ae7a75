//! Offline error paths: a proxy with nothing cached lists nothing (and is no 500), a cached
//! document damaged in the store is an error naming it (never a listing), and hostile paths
//! are refused.

use airlock_testkit::FakeFiles;
use airlock_testkit::conda::repodata;

use super::helm::{chart, index, versions};
use super::unreachable;
use crate::common;

/// One proxy of every format, offline, over an empty data directory.
const ALL: &str = "[[proxy]]\nname = \"py\"\nformat = \"pypi\"\nupstream = \"{U}\"\noffline = true\n\
    [[proxy]]\nname = \"co\"\nformat = \"conda\"\nupstream = \"{U}\"\noffline = true\n\
    [[proxy]]\nname = \"el\"\nformat = \"yum\"\nupstream = \"{U}\"\noffline = true\n\
    [[proxy]]\nname = \"ch\"\nformat = \"helm\"\nupstream = \"{U}\"\noffline = true\n\
    [[proxy]]\nname = \"mv\"\nformat = \"maven\"\nupstream = \"{U}\"\noffline = true\n\
    [[proxy]]\nname = \"rw\"\nformat = \"raw\"\nupstream = \"{U}\"\noffline = true\n";

async fn text(url: &str, accept: Option<&str>) -> (u16, String) {
    let response = common::get_accepting(url, accept).await;
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn nothing_cached_is_an_empty_listing() {
    let dir = tempfile::tempdir().unwrap();
    let running = common::start_stoppable(dir.path(), &ALL.replace("{U}", &unreachable(""))).await;
    let base = format!("http://{}/repository", running.addr);

    let (status, body) = text(
        &format!("{base}/py/simple/"),
        Some("application/vnd.pypi.simple.v1+json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let root: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(root["projects"], serde_json::json!([]));
    let (status, body) = text(&format!("{base}/py/simple/"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = text(&format!("{base}/py/simple/absent/"), None).await;
    assert_eq!(
        status, 404,
        "a project not held is not on this index: {body}"
    );
    assert!(body.contains("offline"), "{body}");

    for subdir in ["noarch", "linux-64"] {
        let (status, body) = text(&format!("{base}/co/{subdir}/repodata.json"), None).await;
        assert_eq!(status, 200, "{body}");
        let repodata: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(repodata["info"]["subdir"], subdir);
        assert_eq!(repodata["packages"], serde_json::json!({}));
        let zst = common::get(&format!("{base}/co/{subdir}/repodata.json.zst")).await;
        assert_eq!(zst.status(), 200);
        let json = zstd::stream::decode_all(&zst.bytes().await.unwrap()[..]).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&json).unwrap(),
            repodata
        );
        for unserved in [
            "repodata.json.bz2",
            "repodata_shards.msgpack.zst",
            "current_repodata.json",
        ] {
            let (status, body) = text(&format!("{base}/co/{subdir}/{unserved}"), None).await;
            assert_eq!(status, 404, "{unserved}: {body}");
        }
    }

    for root in ["", "9/x86_64/"] {
        let repomd = common::get(&format!("{base}/el/{root}repodata/repomd.xml")).await;
        assert_eq!(repomd.status(), 200);
        let repomd = airlock_yum::Repomd::parse(&repomd.bytes().await.unwrap()).unwrap();
        let primary = common::get(&format!("{base}/el/{root}{}", repomd.primary().href)).await;
        assert_eq!(primary.status(), 200);
        let xml = airlock_yum::decompressed("p.xml.gz", &primary.bytes().await.unwrap(), 1 << 20)
            .unwrap()
            .read_all()
            .unwrap();
        assert!(String::from_utf8_lossy(&xml).contains("packages=\"0\""));
        let (status, _) = text(&format!("{base}/el/{root}repodata/repomd.xml.asc"), None).await;
        assert_eq!(status, 404);
    }

    let (status, body) = text(&format!("{base}/ch/index.yaml"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(versions(body.as_bytes()).is_empty(), "{body}");

    // Maven and raw list nothing: a file not held is a 404 that says why.
    for path in ["mv/org/x/y/1.0/y-1.0.pom", "rw/file.txt"] {
        let (status, body) = text(&format!("{base}/{path}"), None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("offline"), "{body}");
    }
    running.stop().await;
}

#[tokio::test]
async fn a_damaged_cached_document_is_an_error_not_a_listing() {
    let upstream = FakeFiles::start().await;
    let one = chart("app", "1.0.0");
    let helm_index = index(&[("app", "1.0.0", &one)]);
    let conda_repodata = repodata("noarch", &[("a-1.0-0.conda", b"a")]);
    upstream.put("charts/index.yaml", "application/x-yaml", &helm_index);
    upstream.put(
        "forge/noarch/repodata.json",
        "application/json",
        &conda_repodata,
    );
    let proxies = |charts: &str, forge: &str, offline: bool| {
        format!(
            "[[proxy]]\nname = \"ch\"\nformat = \"helm\"\nupstream = \"{charts}\"\noffline = {offline}\n\
             [[proxy]]\nname = \"co\"\nformat = \"conda\"\nupstream = \"{forge}\"\noffline = {offline}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let online = common::start_stoppable(
        dir.path(),
        &proxies(
            &format!("{}charts/", upstream.url()),
            &format!("{}forge/", upstream.url()),
            false,
        ),
    )
    .await;
    let base = format!("http://{}/repository", online.addr);
    for path in ["ch/index.yaml", "co/noarch/repodata.json"] {
        assert_eq!(
            common::get(&format!("{base}/{path}")).await.status(),
            200,
            "{path}"
        );
    }
    online.stop().await;
    drop(upstream);

    for (bytes, path) in [
        (&helm_index, "ch/index.yaml"),
        (&conda_repodata, "co/noarch/repodata.json"),
    ] {
        let blob = common::blob_file(dir.path(), bytes);
        let mut damaged = std::fs::read(&blob).unwrap();
        damaged[10] ^= 0x20;
        std::fs::write(&blob, &damaged).unwrap();
        let offline = common::start_stoppable(
            dir.path(),
            &proxies(&unreachable("charts/"), &unreachable("forge/"), true),
        )
        .await;
        let (status, body) =
            text(&format!("http://{}/repository/{path}", offline.addr), None).await;
        assert_eq!(status, 500, "{path}: {body}");
        assert!(body.contains("damaged"), "{path}: {body}");
        offline.stop().await;
    }
}

#[tokio::test]
async fn hostile_paths_are_refused_offline() {
    let dir = tempfile::tempdir().unwrap();
    let running = common::start_stoppable(dir.path(), &ALL.replace("{U}", &unreachable(""))).await;
    for path in [
        "/repository/py/simple/../../etc/passwd/",
        "/repository/py/simple/%2e%2e/",
        "/repository/py/simple/a%2fb/",
        "/repository/co/../noarch/repodata.json",
        "/repository/co/%2e%2e/repodata.json",
        "/repository/co/Noarch/repodata.json",
        "/repository/co/noarch/..%2f..%2frepodata.json",
        "/repository/el/../../repodata/repomd.xml",
        "/repository/el/%2e%2e/repodata/repomd.xml",
        "/repository/el/repodata/..%2f..%2fetc%2fpasswd",
        "/repository/ch/..%2findex.yaml",
        "/repository/ch/_ext/https/evil.example/443/x.tgz",
    ] {
        let answer = common::raw_get(running.addr, path).await;
        let status: u16 = answer[9..12].parse().unwrap();
        assert!(
            status == 400 || status == 404,
            "{path}: {}",
            answer.lines().next().unwrap_or_default()
        );
    }
    running.stop().await;
}
