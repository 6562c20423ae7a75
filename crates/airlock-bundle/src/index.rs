//! airlock's bundle index: what a bundle holds and what it expects the target to hold.
//!
//! This document is the contract between `airlock bundle create` (which writes it),
//! `airlock bundle import` (which reads it to place every item where its proxy would
//! have), `airlock bundle index --data-dir` (which describes a gateway's store in the same
//! shape, as input for `create --since`) and `verify` (which checks the archive against it).
//! Its exact bytes are what a bundle's signature covers.
//!
//! ```json
//! {
//!   "version": 1,
//!   "created": "2026-12-03T21:00:00Z",
//!   "entries": [
//!     { "kind": "image", "proxy": "docker-hub",
//!       "reference": "docker.io/library/postgres:15",
//!       "digest": "sha256:…", "size": 1613,
//!       "media_type": "application/vnd.oci.image.index.v1+json", "carried": true },
//!     { "kind": "manifest", "proxy": "docker-hub",
//!       "reference": "docker.io/library/postgres@sha256:…", … },
//!     { "kind": "blob", "proxy": "docker-hub",
//!       "reference": "docker.io/library/postgres", …, "carried": false },
//!     { "kind": "file", "proxy": "k3s-files",
//!       "path": "k3s-io/k3s/releases/download/v1.31.4%2Bk3s1/k3s", … }
//!   ]
//! }
//! ```
//!
//! - `image`: a root manifest (single-platform manifest or index) as a tag or digest names
//!   it; `reference` is the full reference (`registry/repository:tag` or `…@sha256:…`).
//! - `manifest`: a child manifest of an index; `reference` is `registry/repository@digest`.
//! - `blob`: a config or layer; `reference` is the repository it belongs to
//!   (`registry/repository`, no tag).
//! - `file`: a package proxy's file; `path` is where the proxy serves it, relative to the
//!   proxy's root (no leading `/`, no `.` or `..` segments, no empty segments; the empty
//!   path is the root itself: a raw proxy's upstream URL, like K3s's install script). An index
//!   document the proxy caches in several representations carries the representation's
//!   name after a `#` (`simple/numpy/#json`), as the proxy keys it.
//! - `package`: a package file the proxy keeps by its digest alone, because its cached index
//!   documents name it by that digest (wheels, conda packages, RPMs, yum metadata files);
//!   `path` is its name, for people. Importing one stores its bytes; the documents that list
//!   it make it visible.
//!
//! `carried` says whether the bytes are in this bundle (`true`) or only expected at the
//! target, which already had them when the bundle was made (`create --since`). Several
//! entries may name the same digest (a layer shared by two repositories); its bytes are
//! carried once.
//!
//! Parsing is strict: an unknown `version` is refused before anything else is read, unknown
//! fields are refused, and every entry must have the subject its kind needs.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use airlock_types::{Digest, ImageRef};
use serde::{Deserialize, Serialize};

/// The index version this airlock writes and reads.
pub const INDEX_VERSION: u32 = 1;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A root manifest named by a tag or digest.
    Image,
    /// A child manifest of an index.
    Manifest,
    /// A config or layer blob.
    Blob,
    /// A package proxy's file kept under its path (an index document, a raw or pinned
    /// file).
    File,
    /// A package file a proxy keeps by its digest alone (a wheel, a conda package, an
    /// RPM, a yum metadata file): its index documents name it by that digest.
    Package,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Manifest => "manifest",
            Kind::Blob => "blob",
            Kind::File => "file",
            Kind::Package => "package",
        }
    }

    /// Whether the subject is an image reference (else a file path).
    pub fn is_oci(self) -> bool {
        !matches!(self, Kind::File | Kind::Package)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One item of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub kind: Kind,
    /// The proxy (by its name in the gateway configuration) the item belongs to.
    pub proxy: String,
    /// For `image`, `manifest` and `blob`: the full image reference or repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// For `file`: the path under the proxy's root; for `package`, its file name or path
    /// (for people: the store keeps it by digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// Whether the bytes are in this bundle (else the target is expected to hold them).
    pub carried: bool,
}

impl Entry {
    /// An `image`, `manifest` or `blob` entry.
    pub fn oci(
        kind: Kind,
        proxy: &str,
        reference: &str,
        digest: Digest,
        size: u64,
        media_type: &str,
    ) -> Self {
        Self {
            kind,
            proxy: proxy.to_owned(),
            reference: Some(reference.to_owned()),
            path: None,
            digest,
            size,
            media_type: media_type.to_owned(),
            carried: true,
        }
    }

    /// A `file` entry.
    pub fn file(proxy: &str, path: &str, digest: Digest, size: u64, media_type: &str) -> Self {
        Self::package_file(Kind::File, proxy, path, digest, size, media_type)
    }

    /// A `file` or `package` entry.
    pub fn package_file(
        kind: Kind,
        proxy: &str,
        path: &str,
        digest: Digest,
        size: u64,
        media_type: &str,
    ) -> Self {
        Self {
            kind,
            proxy: proxy.to_owned(),
            reference: None,
            path: Some(path.to_owned()),
            digest,
            size,
            media_type: media_type.to_owned(),
            carried: true,
        }
    }

    /// The reference or path, whichever the kind has.
    pub fn subject(&self) -> &str {
        self.reference
            .as_deref()
            .or(self.path.as_deref())
            .unwrap_or("")
    }

    /// Checks that the entry names the subject its kind needs, and that it is well formed.
    pub fn validate(&self) -> Result<(), String> {
        if self.proxy.is_empty() {
            return Err("its proxy name is empty".to_owned());
        }
        if self.media_type.is_empty() {
            return Err("its media type is empty".to_owned());
        }
        match (self.kind, &self.reference, &self.path) {
            // The proxy's root: what a raw proxy serves for its upstream URL itself.
            (Kind::File, None, Some(path)) if path.is_empty() => Ok(()),
            (Kind::File | Kind::Package, None, Some(path)) => validate_path(path),
            (kind @ (Kind::File | Kind::Package), _, _) => {
                Err(format!("a {kind} entry needs a `path` and no `reference`"))
            }
            (kind, Some(reference), None) => validate_reference(kind, reference, &self.digest),
            (kind, _, _) => Err(format!("an {kind} entry needs a `reference` and no `path`")),
        }
    }
}

fn validate_reference(kind: Kind, reference: &str, digest: &Digest) -> Result<(), String> {
    let parsed: ImageRef = reference
        .parse()
        .map_err(|e| format!("reference {reference:?}: {e}"))?;
    if parsed.domain().is_none() {
        return Err(format!(
            "reference {reference:?} does not name its registry (write it in full, e.g. docker.io/library/postgres:15)"
        ));
    }
    if let Some(named) = parsed.digest().filter(|named| *named != digest) {
        return Err(format!(
            "reference {reference:?} names {named} but the entry's digest is {digest}"
        ));
    }
    let named = parsed.tag().is_some() || parsed.digest().is_some();
    match kind {
        Kind::Image if !named => Err(format!(
            "image reference {reference:?} has neither a tag nor a digest"
        )),
        Kind::Manifest if parsed.digest().is_none() => Err(format!(
            "manifest reference {reference:?} must name its digest (repository@sha256:…)"
        )),
        Kind::Blob if named => Err(format!(
            "blob reference {reference:?} must be a repository, without tag or digest"
        )),
        _ => Ok(()),
    }
}

/// A file path must stay under its proxy's root whatever joins it later.
fn validate_path(path: &str) -> Result<(), String> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path.chars().any(char::is_control)
        || path
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..");
    if bad {
        return Err(format!(
            "path {path:?} is not a relative path of non-empty segments without `.` or `..`"
        ));
    }
    Ok(())
}

/// The whole index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleIndex {
    pub version: u32,
    #[serde(with = "rfc3339")]
    pub created: SystemTime,
    pub entries: Vec<Entry>,
}

/// Why bytes are not a bundle index this airlock can use.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the bundle index is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("the bundle index has no numeric `version`")]
    NoVersion,
    #[error(
        "the bundle index is version {found}; this airlock reads version {INDEX_VERSION}: use an airlock at least as new as the one that made the bundle"
    )]
    UnsupportedVersion { found: u64 },
    #[error("the bundle index is malformed: {0}")]
    Malformed(serde_json::Error),
    #[error("bundle index entry {number} ({kind} {subject:?}): {reason}")]
    BadEntry {
        /// 1-based, as a person counts.
        number: usize,
        kind: Kind,
        subject: String,
        reason: String,
    },
    #[error(
        "bundle index entries {first} and {second} both describe {kind} {subject:?} but disagree on its digest, size or media type"
    )]
    Conflict {
        first: usize,
        second: usize,
        kind: Kind,
        subject: String,
    },
    #[error(
        "bundle index entries {first} and {second} name {digest} with different sizes ({first_size} and {second_size} bytes)"
    )]
    SizeConflict {
        first: usize,
        second: usize,
        digest: Digest,
        first_size: u64,
        second_size: u64,
    },
}

impl BundleIndex {
    /// An empty index created now.
    pub fn new(created: SystemTime) -> Self {
        Self {
            version: INDEX_VERSION,
            created,
            entries: Vec::new(),
        }
    }

    /// Parses and validates an index.
    pub fn parse(bytes: &[u8]) -> Result<Self, IndexError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(IndexError::NotJson)?;
        let version = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or(IndexError::NoVersion)?;
        if version != u64::from(INDEX_VERSION) {
            return Err(IndexError::UnsupportedVersion { found: version });
        }
        let index: Self = serde_json::from_value(value).map_err(IndexError::Malformed)?;
        index.validate()?;
        Ok(index)
    }

    /// The bytes written into a bundle (pretty JSON, so `bundle index` output reads well).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("an index always serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Checks every entry, and that entries naming the same thing or digest agree.
    pub fn validate(&self) -> Result<(), IndexError> {
        let mut subjects: BTreeMap<(Kind, &str, &str, Option<&Digest>), usize> = BTreeMap::new();
        let mut sizes: BTreeMap<&Digest, (usize, u64)> = BTreeMap::new();
        for (i, entry) in self.entries.iter().enumerate() {
            let number = i + 1;
            entry.validate().map_err(|reason| IndexError::BadEntry {
                number,
                kind: entry.kind,
                subject: entry.subject().to_owned(),
                reason,
            })?;
            // The same subject may appear twice only as an exact duplicate: a tag or a file
            // path names one digest; a repository holds many blobs.
            let blob_digest = (entry.kind == Kind::Blob).then_some(&entry.digest);
            let key = (
                entry.kind,
                entry.proxy.as_str(),
                entry.subject(),
                blob_digest,
            );
            if let Some(&first) = subjects.get(&key) {
                if self.entries[first - 1] != *entry {
                    return Err(IndexError::Conflict {
                        first,
                        second: number,
                        kind: entry.kind,
                        subject: entry.subject().to_owned(),
                    });
                }
            } else {
                subjects.insert(key, number);
            }
            match sizes.get(&entry.digest) {
                Some(&(first, first_size)) if first_size != entry.size => {
                    return Err(IndexError::SizeConflict {
                        first,
                        second: number,
                        digest: entry.digest.clone(),
                        first_size,
                        second_size: entry.size,
                    });
                }
                Some(_) => {}
                None => {
                    sizes.insert(&entry.digest, (number, entry.size));
                }
            }
        }
        Ok(())
    }

    /// Every distinct digest whose bytes the bundle carries, with its size.
    pub fn carried(&self) -> BTreeMap<&Digest, u64> {
        self.entries
            .iter()
            .filter(|e| e.carried)
            .map(|e| (&e.digest, e.size))
            .collect()
    }

    /// Every distinct digest the index names, carried or expected, with its size.
    pub fn digests(&self) -> BTreeMap<&Digest, u64> {
        self.entries.iter().map(|e| (&e.digest, e.size)).collect()
    }
}

/// `created` as RFC 3339 in UTC, to the second.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`created` {text:?} is not an RFC 3339 UTC time like 2026-01-31T12:00:00Z: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests;
