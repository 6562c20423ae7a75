//! The `PyPI` proxy's derived cache, seen through the `Packages` service that owns it: a
//! project page is parsed once per upstream page, and file downloads, warm or cold, find
//! their sha256 in the parsed page without parsing it again.

use std::sync::Arc;

use airlock_config::Config;
use airlock_packages::Packages;
use airlock_store::{BlobStore, MemoryStore, MetaIndex};
use airlock_testkit::{Dist, FakePypi};
use airlock_types::Digest;
use airlock_upstream::fetch::Downloads;
use axum::extract::State;
use http::{HeaderMap, Method, StatusCode, Uri};

async fn get(packages: &Arc<Packages>, path: &str) -> (StatusCode, Option<String>) {
    let uri: Uri = path.parse().unwrap();
    let response =
        airlock_packages::handle(State(packages.clone()), Method::GET, uri, HeaderMap::new()).await;
    let cache = response
        .headers()
        .get("x-airlock-cache")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status(), cache)
}

fn computed(packages: &Packages, table: &str) -> u64 {
    packages
        .derived_stats("pypi")
        .iter()
        .find(|t| t.name == table)
        .map_or(0, |t| t.computed)
}

#[tokio::test]
async fn file_downloads_parse_the_project_page_once() {
    let upstream = FakePypi::start().await;
    let wheels: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("demo-1.{i}-py3-none-any.whl"),
                format!("wheel {i}").into_bytes(),
            )
        })
        .collect();
    for (name, bytes) in &wheels {
        upstream.add("demo", Dist::new(name, bytes));
    }
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[[proxy]]\nname = \"pypi\"\nformat = \"pypi\"\nupstream = \"{}\"\nmetadata_ttl = \"1h\"\n",
        dir.path().display().to_string(),
        upstream.url()
    );
    let config = Config::from_toml_str(&text, "test").unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::default());
    let index = MetaIndex::open(&dir.path().join("index.redb")).unwrap();
    let downloads = Arc::new(Downloads::new(store.clone(), index.clone()));
    let packages = Arc::new(Packages::new(&config, None, &store, &index, &downloads).unwrap());

    for round in ["miss", "hit"] {
        for (name, bytes) in &wheels {
            let sha256 = Digest::of(bytes).hex().to_owned();
            let (status, cache) = get(
                &packages,
                &format!("/repository/pypi/packages/demo/{sha256}/{name}"),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(cache.as_deref(), Some(round), "{name}");
        }
    }
    assert_eq!(
        computed(&packages, "pypi-project"),
        1,
        "six downloads, one parse: {:?}",
        packages.derived_stats("pypi")
    );
    assert_eq!(upstream.count("simple/demo/"), 1);

    // A sha256 the page does not list is refused without another parse.
    let (status, _) = get(
        &packages,
        &format!(
            "/repository/pypi/packages/demo/{}/{}",
            "0".repeat(64),
            wheels[0].0
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(computed(&packages, "pypi-project"), 1);
}
