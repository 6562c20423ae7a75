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

/// A push marks what the store did not hold; an upstream's copy, a bundle's, or eviction
/// clears the mark; pushing what an upstream served marks nothing. The mark survives a
/// reopen of the index file.
#[tokio::test]
async fn pushed_marks_follow_where_content_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let index = MetaIndex::open(&path).unwrap();
    let (private, public, later) = (Digest::of(b"p"), Digest::of(b"q"), Digest::of(b"r"));
    assert!(
        !index.is_pushed(&private).await.unwrap(),
        "nothing pushed yet"
    );
    index.record_pushed(&private, 1).await.unwrap();
    index.record_blob(&public, 1).await.unwrap();
    index.record_pushed(&public, 1).await.unwrap();
    index.record_pushed(&later, 1).await.unwrap();
    assert!(index.is_pushed(&private).await.unwrap());
    assert!(
        !index.is_pushed(&public).await.unwrap(),
        "an upstream served it first"
    );
    index.record_pushed(&private, 1).await.unwrap();
    assert!(
        index.is_pushed(&private).await.unwrap(),
        "pushed twice, still private"
    );
    assert_eq!(index.total_size(), 3);
    drop(index);

    let index = MetaIndex::open(&path).unwrap();
    assert!(
        index.is_pushed(&private).await.unwrap(),
        "kept across a restart"
    );
    index.record_blob(&later, 1).await.unwrap();
    assert!(
        !index.is_pushed(&later).await.unwrap(),
        "an upstream served it since"
    );
    index
        .forget(vec![private.clone()], Vec::new())
        .await
        .unwrap();
    assert!(
        !index.is_pushed(&private).await.unwrap(),
        "evicted with its blob"
    );
    index.record_pushed(&public, 1).await.unwrap();
    index
        .apply(super::Batch {
            blobs: vec![(public.clone(), 1)],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!index.is_pushed(&public).await.unwrap());
}
