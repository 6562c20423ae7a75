//! Garbage collection of hosted projects: mark, then sweep.
//!
//! Mark: per repository, everything its tags reach through the manifest records (configs,
//! layers, an index's children), then the referrers of what is reached (a signature of a
//! kept image, and its own referrers). Sweep: every other record of the repository older
//! than the grace period goes — blob links (uploads and mounts), links of manifests pushed
//! by digest that no tag reaches (so deleting a tag frees its image), referrer records of
//! what is gone; the grace period covers a push between its first blob and its tag. Then
//! content that only a push brought (the index's `pushed` marks), that nothing live in any
//! repository reaches and that was not used for the grace period is deleted. Content an
//! upstream also served is left to eviction: it only loses its links.
//!
//! A collection holds the hosted projects' write lock ([`super::Hosted::writing`]), so no
//! manifest is checked against links, and no blob is linked, while it decides.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use airlock_store::{BlobStore, MetaIndex, StoreError, TagKey, TagRecord};
use airlock_types::Digest;
use serde::{Deserialize, Serialize};

use crate::referrers::REFERRER;

/// What a collection removed, or would remove with `dry_run`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Blob links of repositories whose manifests do not reach their blob.
    pub links_removed: usize,
    /// Content deleted from the store: digest and size.
    pub removed: Vec<(Digest, u64)>,
    pub bytes_freed: u64,
}

/// Collects garbage of the hosted `projects`: see the module docs. `now` is Unix seconds.
pub(crate) async fn collect(
    store: &dyn BlobStore,
    index: &MetaIndex,
    projects: &[&str],
    grace: Duration,
    dry_run: bool,
    now: u64,
) -> Result<GcReport, StoreError> {
    let cutoff = now.saturating_sub(grace.as_secs());
    let mut live = HashSet::new();
    let mut garbage = Vec::new();
    for project in projects {
        let mut repos: BTreeMap<String, Vec<(TagKey, TagRecord)>> = BTreeMap::new();
        for (key, record) in index.tags_under(project, None).await? {
            repos
                .entry(key.repo.clone())
                .or_default()
                .push((key, record));
        }
        for records in repos.into_values() {
            let reached = mark(index, &records).await?;
            for (key, record) in records.into_iter().filter(|(k, _)| !k.variant.is_empty()) {
                if reached.contains(&record.digest) || record.checked_at >= cutoff {
                    live.insert(record.digest);
                } else {
                    garbage.push(key);
                }
            }
            live.extend(reached);
        }
    }
    let removed: Vec<(Digest, u64)> = index
        .pushed()
        .await?
        .into_iter()
        .filter(|(digest, record)| !live.contains(digest) && record.last_used < cutoff)
        .map(|(digest, record)| (digest, record.size))
        .collect();
    let report = GcReport {
        dry_run,
        links_removed: garbage.len(),
        bytes_freed: removed.iter().map(|(_, size)| size).sum(),
        removed,
    };
    if !dry_run {
        for (digest, _) in &report.removed {
            store.delete(digest).await?;
        }
        let digests = report.removed.iter().map(|(d, _)| d.clone()).collect();
        index.forget(digests, garbage).await?;
    }
    tracing::info!(
        target: "airlock::hosted",
        dry_run,
        links = report.links_removed,
        removed = report.removed.len(),
        bytes = report.bytes_freed,
        "garbage collection of hosted projects"
    );
    Ok(report)
}

/// Garbage collection of a stopped gateway's hosted `projects` (`airlock gc` on its
/// `data_dir`: holding the index, nothing pushes meanwhile).
pub async fn collect_stopped(
    store: &dyn BlobStore,
    index: &MetaIndex,
    projects: &[&str],
    grace: Duration,
    dry_run: bool,
) -> Result<GcReport, StoreError> {
    collect(
        store,
        index,
        projects,
        grace,
        dry_run,
        airlock_store::unix_now(),
    )
    .await
}

/// What one repository's `records` keep: the closure of its tags, grown by the referrers
/// of what it holds until none is new.
async fn mark(
    index: &MetaIndex,
    records: &[(TagKey, TagRecord)],
) -> Result<HashSet<Digest>, StoreError> {
    let tags = records
        .iter()
        .filter(|(key, _)| key.variant.is_empty())
        .map(|(_, record)| record.digest.clone())
        .collect();
    let mut reached = closure(index, tags).await?;
    loop {
        let referrers: Vec<Digest> = records
            .iter()
            .filter(|(key, record)| {
                key.variant.starts_with(REFERRER)
                    && !reached.contains(&record.digest)
                    && subject(key).is_some_and(|s| reached.contains(&s))
            })
            .map(|(_, record)| record.digest.clone())
            .collect();
        if referrers.is_empty() {
            return Ok(reached);
        }
        reached.extend(closure(index, referrers).await?);
    }
}

/// The subject a referrer record names (its tag is the subject's `sha256-<hex>`).
fn subject(key: &TagKey) -> Option<Digest> {
    key.tag.replacen('-', ":", 1).parse().ok()
}

/// Every digest `roots` reach through manifest records.
async fn closure(index: &MetaIndex, mut stack: Vec<Digest>) -> Result<HashSet<Digest>, StoreError> {
    let mut reached = HashSet::new();
    while let Some(digest) = stack.pop() {
        if reached.contains(&digest) {
            continue;
        }
        if let Some(manifest) = index.manifest(&digest).await? {
            stack.extend(manifest.refs);
        }
        reached.insert(digest);
    }
    Ok(reached)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_store::{ManifestRecord, MemoryStore};

    const HOUR: Duration = Duration::from_secs(3600);

    fn key(repo: &str, tag: &str, variant: &str) -> TagKey {
        TagKey {
            proxy: "lab".into(),
            repo: repo.into(),
            tag: tag.into(),
            variant: variant.into(),
        }
    }

    fn record(digest: &Digest, checked_at: u64) -> TagRecord {
        TagRecord {
            digest: digest.clone(),
            media_type: String::new(),
            checked_at,
        }
    }

    fn tag(digest: &Digest) -> String {
        digest.to_string().replace(':', "-")
    }

    /// A pushed blob or manifest (`refs` makes it a manifest) linked into `repo` at `at`.
    async fn pushed(
        index: &MetaIndex,
        repo: &str,
        bytes: &[u8],
        refs: &[&Digest],
        at: u64,
    ) -> Digest {
        let digest = Digest::of(bytes);
        index
            .record_pushed(&digest, bytes.len() as u64)
            .await
            .unwrap();
        let variant = if refs.is_empty() { "blob" } else { "pushed" };
        index
            .set_tag(&key(repo, &tag(&digest), variant), &record(&digest, at))
            .await
            .unwrap();
        if !refs.is_empty() {
            let manifest = ManifestRecord {
                media_type: "m".into(),
                size: bytes.len() as u64,
                refs: refs.iter().map(|&d| d.clone()).collect(),
            };
            index.set_manifest(&digest, &manifest).await.unwrap();
        }
        digest
    }

    #[tokio::test]
    async fn an_untagged_image_goes_with_what_only_it_held_and_young_links_stay() {
        let index = MetaIndex::temporary().unwrap();
        let store = MemoryStore::new();
        // Collected two hours from now: what the index records now is two hours old.
        let later = airlock_store::unix_now() + 2 * 3600;
        let old = later - 2 * 3600;
        let shared = pushed(&index, "app", b"shared", &[], old).await;
        let only_a = pushed(&index, "app", b"only a", &[], old).await;
        let only_b = pushed(&index, "app", b"only b", &[], old).await;
        let young = pushed(&index, "app", b"uploaded a minute ago", &[], later - 60).await;
        let a = pushed(&index, "app", b"manifest a", &[&shared, &only_a], old).await;
        let b = pushed(&index, "app", b"manifest b", &[&shared, &only_b], old).await;
        index
            .set_tag(&key("app", "b", ""), &record(&b, old))
            .await
            .unwrap();
        // A signature of b, and one of a.
        let sig_b = pushed(&index, "app", b"signature of b", &[&b], old).await;
        let sig_a = pushed(&index, "app", b"signature of a", &[&a], old).await;
        for (subject, sig) in [(&b, &sig_b), (&a, &sig_a)] {
            let referrer = key("app", &tag(subject), &format!("referrer-{}", tag(sig)));
            index.set_tag(&referrer, &record(sig, old)).await.unwrap();
        }
        let report = collect(&store, &index, &["lab"], HOUR, true, later)
            .await
            .unwrap();
        let mut removed: Vec<Digest> = report.removed.iter().map(|(d, _)| d.clone()).collect();
        removed.sort();
        let mut expected = vec![only_a.clone(), a.clone(), sig_a.clone()];
        expected.sort();
        assert_eq!(removed, expected, "young {young} stays");
        assert_eq!(
            report.links_removed, 4,
            "the links of a, only a, and sig a's two"
        );
        assert!(
            index.is_pushed(&a).await.unwrap(),
            "a dry run forgets nothing"
        );

        let report = collect(&store, &index, &["lab"], HOUR, false, later)
            .await
            .unwrap();
        assert_eq!(report.removed.len(), 3);
        assert!(
            !index.is_pushed(&a).await.unwrap(),
            "forgotten with its blob"
        );
        let again = collect(&store, &index, &["lab"], HOUR, false, later)
            .await
            .unwrap();
        assert!(
            again.removed.is_empty() && again.links_removed == 0,
            "{again:?}"
        );
        let kept = index.tags_under("lab", None).await.unwrap();
        for digest in [&shared, &only_b, &young, &b, &sig_b] {
            assert!(
                kept.iter().any(|(_, r)| &r.digest == digest),
                "{digest} kept"
            );
        }
    }
}
