//! What a format asks of its [`Origin`](super::Origin): a [`Spec`] names the upstream
//! target, the cache key and the [`Freshness`] rule, plus for documents the `Accept` sent
//! and the bound and check applied before anything is cached.

use airlock_types::{CacheOutcome, Digest};
use airlock_upstream::Target;
use futures_util::future::BoxFuture;

use crate::PackageError;
use crate::checksum::Checksum;

/// Checks a document's bytes (and upstream `Content-Type`) before they are cached.
pub type Check<'a> = dyn Fn(&[u8], Option<&str>) -> Result<(), String> + Send + Sync + 'a;

/// One representation of a document: cached under its own key, asked for with `accept`.
#[derive(Debug, Clone, Copy)]
pub struct Variant<'a> {
    /// Distinguishes the cache entry (`<path>#<name>`; `#` never occurs in a request path).
    pub name: &'a str,
    pub accept: &'a str,
}

/// The checksum a pinned file must match, worked out only when the file has to be fetched
/// (Maven fetches a sidecar for it); `None` when the upstream publishes none.
pub type Expected<'a> =
    dyn Fn() -> BoxFuture<'a, Result<Option<Checksum>, PackageError>> + Send + Sync + 'a;

/// How long a cached file stays good, and what its bytes are verified against.
pub enum Freshness<'a> {
    /// Named by its digest (an index published it): kept forever, fetched once however
    /// many clients ask, and never sent before the whole download matched the digest.
    Immutable(&'a Digest),
    /// Never changes once cached under the spec's key (a release artifact); fetched once,
    /// checked against the expected checksum before it is committed.
    Pinned(&'a Expected<'a>),
    /// Refreshed after `metadata_ttl` with a conditional request; served stale when the
    /// upstream cannot answer.
    Ttl,
}

impl std::fmt::Debug for Freshness<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Freshness::Immutable(digest) => write!(f, "Immutable({digest})"),
            Freshness::Pinned(_) => f.write_str("Pinned"),
            Freshness::Ttl => f.write_str("Ttl"),
        }
    }
}

/// One file a format wants from its origin.
pub struct Spec<'a> {
    pub(super) source: Target,
    /// The cache key (pinned and TTL files; an immutable file is kept by its digest).
    pub(super) key: String,
    pub(super) freshness: Freshness<'a>,
    /// The media type an immutable file is served as (others keep the upstream's).
    pub(super) content_type: &'a str,
    /// `Accept` sent upstream (a document's representation).
    pub(super) accept: Option<&'a str>,
    /// For TTL files: the largest body accepted and the check it must pass to be cached.
    pub(super) checked: Option<(usize, &'a Check<'a>)>,
}

impl std::fmt::Debug for Spec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("source", &self.source.as_str())
            .field("key", &self.key)
            .field("freshness", &self.freshness)
            .finish_non_exhaustive()
    }
}

impl<'a> Spec<'a> {
    /// A file named by its `digest`, fetched from `source`.
    pub fn immutable(source: impl Into<Target>, digest: &'a Digest, content_type: &'a str) -> Self {
        let source = source.into();
        Self {
            key: source.as_str().to_owned(),
            source,
            freshness: Freshness::Immutable(digest),
            content_type,
            accept: None,
            checked: None,
        }
    }

    /// A file that never changes once cached under `key`, fetched from `source` and checked
    /// against what `expected` yields.
    pub fn pinned(
        source: impl Into<Target>,
        key: impl Into<String>,
        expected: &'a Expected<'a>,
    ) -> Self {
        Self {
            source: source.into(),
            key: key.into(),
            freshness: Freshness::Pinned(expected),
            content_type: OCTETS,
            accept: None,
            checked: None,
        }
    }

    /// The file at `path` below the upstream, refreshed by TTL and cached under `path`.
    pub fn ttl(path: &str) -> Self {
        Self::ttl_from(Target::from(path), path)
    }

    /// A file refreshed by TTL, fetched from `source` (a URL an index listed, or the
    /// configured upstream) and cached under `key`.
    pub fn ttl_from(source: Target, key: &str) -> Self {
        Self {
            source,
            key: key.to_owned(),
            freshness: Freshness::Ttl,
            content_type: OCTETS,
            accept: None,
            checked: None,
        }
    }

    /// One representation of the document at `path` (refreshed by TTL), cached on its own.
    pub fn document(path: &str, variant: &Variant<'a>) -> Self {
        Self {
            key: format!("{path}#{}", variant.name),
            accept: Some(variant.accept),
            ..Self::ttl(path)
        }
    }

    /// Only a body of at most `max` bytes that `check` accepts is cached; anything else
    /// counts as an upstream failure (the previous copy is served stale).
    #[must_use]
    pub fn checked(mut self, max: usize, check: &'a Check<'a>) -> Self {
        self.checked = Some((max, check));
        self
    }

    pub(super) fn path(&self) -> &str {
        self.source.as_str()
    }
}

/// Blobs without a known media type.
pub(super) const OCTETS: &str = "application/octet-stream";

/// A cached file: where its bytes are and how this request found them.
#[derive(Debug, Clone)]
pub struct Entry {
    pub digest: Digest,
    pub size: u64,
    /// The upstream's `Content-Type` (an immutable file's: the one the format gave).
    pub content_type: Option<String>,
    pub outcome: CacheOutcome,
}

/// A document's cached bytes, for a format to rewrite.
#[derive(Debug)]
pub struct Document {
    pub bytes: Vec<u8>,
    /// The upstream's `Content-Type`.
    pub content_type: Option<String>,
    pub cache: CacheOutcome,
}
