//! The index's reads for offline package proxies.

use airlock_types::Digest;

use super::{FileRecord, MetaIndex};

fn record(digest: Option<Digest>) -> FileRecord {
    FileRecord {
        digest,
        content_type: Some("text/html".into()),
        etag: None,
        last_modified: None,
        checked_at: 1,
    }
}

/// What an offline package proxy reads to list what it holds: a proxy's file rows under a
/// prefix (not another proxy's whose name extends it), and which digests have a blob record.
#[tokio::test]
async fn files_under_a_prefix_and_recorded_blobs() {
    let index = MetaIndex::temporary().unwrap();
    let page = Digest::of(b"page");
    for (proxy, path) in [
        ("py", "simple/a/#json"),
        ("py", "simple/b/#html"),
        ("py", "simplex"),
        ("py", "packages/x"),
        ("py2", "simple/c/#json"),
    ] {
        index
            .set_file(proxy, path, &record(Some(page.clone())))
            .await
            .unwrap();
    }
    let under: Vec<String> = index
        .files_under("py", "simple/")
        .await
        .unwrap()
        .into_iter()
        .map(|(path, record)| {
            assert_eq!(record.digest.as_ref(), Some(&page));
            path
        })
        .collect();
    assert_eq!(under, ["simple/a/#json", "simple/b/#html"]);
    assert!(index.files_under("none", "").await.unwrap().is_empty());

    let (held, absent) = (Digest::of(b"held"), Digest::of(b"absent"));
    index.record_blob(&held, 4).await.unwrap();
    assert_eq!(
        index
            .recorded_blobs(vec![absent.clone(), held.clone(), absent])
            .await
            .unwrap(),
        [held]
    );
    assert!(index.recorded_blobs(Vec::new()).await.unwrap().is_empty());
}
