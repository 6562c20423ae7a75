//! Offline views: a proxy with `offline = true` fetches nothing, so an index listing files it
//! does not hold would send clients after downloads that can only fail. Each format filters
//! the last cached upstream document down to what the store holds, beside its own code:
//!
//! - `pypi`: project pages list only files whose bytes are held (`pypi/offline.rs`); the
//!   root lists the projects with a cached page that holds at least one file.
//! - `conda`: `repodata.json`, `current_repodata.json` and `repodata.json.zst` list only
//!   held packages; the CEP-16 shard index and `.bz2` are not served (clients fall back to
//!   `repodata.json`).
//! - `yum`: `repomd.xml` is regenerated with primary, filelists and other filtered to held
//!   packages; it is unsigned (`repomd.xml.asc` answers 404).
//! - `helm`: `index.yaml` lists only held chart versions.
//! - `maven` and `raw`: nothing lists files, so there is nothing to filter.
//!
//! With nothing cached, a view is an empty listing, not an error. Views are derived per
//! upstream document and [`Held`] set, so a file added to the store (a bundle import) shows
//! at the next request.

use std::collections::HashSet;

use airlock_types::Digest;

/// The files of one listing that the store holds, and a digest naming exactly that set
/// (part of the key of every view derived from it).
#[derive(Debug)]
pub(crate) struct Held {
    digests: HashSet<Digest>,
    key: Digest,
}

impl Held {
    pub(crate) fn new(digests: HashSet<Digest>) -> Self {
        let mut names: Vec<&str> = digests.iter().map(Digest::hex).collect();
        names.sort_unstable();
        let key = Digest::of(names.join("\n").as_bytes());
        Self { digests, key }
    }

    pub(crate) fn contains(&self, digest: &Digest) -> bool {
        self.digests.contains(digest)
    }

    pub(crate) fn key(&self) -> &Digest {
        &self.key
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}
