//! What can go wrong making, reading or verifying a bundle, named for the operator.

use std::path::PathBuf;

use airlock_types::Digest;

use crate::index::IndexError;
use crate::sign::KeyId;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    // I/O errors are part of the message rather than a `source`, so an error chain
    // printed in full does not say them twice.
    #[error("{action} {}: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("reading the bundle {} ({volumes} volume(s)): {error}", path.display())]
    Read {
        path: PathBuf,
        volumes: usize,
        error: std::io::Error,
    },
    #[error("{0}")]
    Index(#[from] IndexError),

    // Volumes.
    #[error("volume {} is missing, but {} exists: copy every volume next to the first", missing.display(), later.display())]
    VolumeMissing { missing: PathBuf, later: PathBuf },
    #[error(
        "volume {} is {actual} bytes but the volumes before it are {expected} bytes each: it is truncated (or the volumes come from different bundles)",
        path.display()
    )]
    VolumeSize {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error(
        "the bundle {} ends before its end-of-archive marker: its last volume is truncated, or a later volume ({}) is missing",
        path.display(), next.display()
    )]
    Truncated { path: PathBuf, next: PathBuf },
    #[error("the bundle {} has data after its end-of-archive marker", path.display())]
    TrailingData { path: PathBuf },
    #[error("a split size must be at least {min} bytes (got {got})")]
    SplitTooSmall { min: u64, got: u64 },
    #[error(
        "splitting into volumes of {split} bytes needs more than {max} volumes: choose a larger split size"
    )]
    TooManyVolumes { split: u64, max: usize },

    // Members of the archive.
    #[error(
        "the archive holds {path:?}, which is not part of a bundle (only oci-layout, index.json, blobs/sha256/<hex> and airlock/)"
    )]
    UnexpectedMember { path: String },
    #[error("the archive holds {path:?} twice")]
    DuplicateMember { path: String },
    #[error("the archive has no {path}: it is not an airlock bundle, or it is truncated")]
    MissingMember { path: &'static str },
    #[error("{path} in the archive is not valid: {reason}")]
    BadMember { path: String, reason: String },

    // Bytes.
    #[error("blob {expected} does not match its digest: its bytes hash to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} is {actual} bytes, but {expected} were expected")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("the index lists {digest} ({what}) as carried, but the archive does not hold it")]
    MissingBlob { digest: Digest, what: String },
    #[error("the archive holds blob {digest}, which the index does not list as carried")]
    UnlistedBlob { digest: Digest },
    #[error("the OCI index.json does not agree with airlock's index: {0}")]
    OciIndexDisagrees(String),
    #[error("the bundle writer already failed (on an earlier item); start the bundle again")]
    WriterFailed,

    // Keys and signatures.
    #[error("{}: {reason}", path.display())]
    BadKeyFile { path: PathBuf, reason: String },
    #[error("{} already exists: remove it or choose another --out name", path.display())]
    KeyExists { path: PathBuf },
    #[error("the bundle's signature file is malformed: {0}")]
    BadSignatureFile(String),
    #[error("the bundle is not signed, and a trust key was given: refusing an unsigned bundle")]
    Unsigned,
    #[error("the bundle is signed by key {signed_by}, not by the trusted key {trusted}")]
    WrongKey { signed_by: KeyId, trusted: KeyId },
    #[error(
        "the bundle's signature by key {key} does not match its index: the index or the signature was altered"
    )]
    BadSignature { key: KeyId },
}

impl BundleError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        error: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            error,
        }
    }
}

/// Carries a [`BundleError`] through an `io::Read` or `io::Write` implementation, so the
/// tar crate's copy loops stop on it and the caller gets the original error back.
pub(crate) fn into_io(error: BundleError) -> std::io::Error {
    std::io::Error::other(error)
}

/// Recovers a [`BundleError`] carried by [`into_io`], or wraps a plain I/O error.
pub(crate) fn from_io(
    error: std::io::Error,
    wrap: impl FnOnce(std::io::Error) -> BundleError,
) -> BundleError {
    if error
        .get_ref()
        .is_some_and(<dyn std::error::Error + Send + Sync>::is::<BundleError>)
    {
        *error
            .into_inner()
            .expect("checked above")
            .downcast::<BundleError>()
            .expect("checked above")
    } else {
        wrap(error)
    }
}
