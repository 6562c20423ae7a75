//! Yum repository metadata, read the same way by the gateway's yum proxy and by the control
//! node's `SELinux` package resolver.
//!
//! - [`Repomd`]: `repodata/repomd.xml`, the list of a snapshot's metadata files, each with
//!   the checksum of its compressed bytes.
//! - [`decompressed`]: a metadata file's bytes decompressed by its name's extension (`.gz`,
//!   `.zst`, `.xz`, `.bz2`, or plain `.xml`), refusing more than a given size.
//! - [`read_primary`]: every `<package>` of `primary.xml`, streamed to a callback, with only
//!   the locations and checksums ([`Detail::Locations`]) or also versions, provides,
//!   requires and files ([`Detail::Everything`]).
//! - [`filter_packages`] and [`rewrite_repomd`]: metadata rewritten to a subset of its
//!   packages, for a gateway that serves only what it holds.
//! - [`Evr`], [`rpmvercmp`] and [`Dep`]: rpm's versions and how a provide satisfies a
//!   requirement.
//!
//! Nothing here fetches or trusts: callers check each file against the checksum that lists
//! it before reading it.

mod compression;
mod filter;
mod primary;
mod repomd;
mod version;
mod xz;

pub use compression::{Decompressed, decompressed};
pub use filter::{
    EMPTY_FILELISTS, EMPTY_OTHER, EMPTY_PRIMARY, EMPTY_REPOMD, Regenerated, filter_packages, gzip,
    rewrite_repomd,
};
pub use primary::{Dep, Detail, Package, read_primary};
pub use repomd::{Entry, Repomd};
pub use version::{Evr, rpmvercmp};

/// Why metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RepodataError {
    /// Not well-formed XML, or not the document it should be.
    #[error("{0}")]
    Malformed(String),
    /// Decompressed, it is larger than the caller allows.
    #[error("decompresses to more than {0} bytes")]
    TooLarge(u64),
    /// The file name's extension names no compression airlock reads.
    #[error("unknown compression `{0}` (airlock reads .gz, .zst, .xz, .bz2 and .xml)")]
    UnknownCompression(String),
    /// The compressed stream is corrupt.
    #[error("cannot decompress: {0}")]
    Decompress(String),
}

/// A checksum as metadata gives it: the algorithm (`sha256`, `sha1`, …) and its hex value,
/// both lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checksum {
    /// `sha256`, `sha512`, `sha1`, …
    pub kind: String,
    /// Lowercase hex (not checked to be hex: callers compare it or refuse it).
    pub hex: String,
}

impl Checksum {
    fn new(kind: &str, hex: &str) -> Self {
        Self {
            kind: kind.trim().to_ascii_lowercase(),
            hex: hex.trim().to_ascii_lowercase(),
        }
    }
}

/// The unescaped value of attribute `name` (qualified, e.g. `xml:base`).
fn attribute(
    element: &quick_xml::events::BytesStart<'_>,
    name: &[u8],
) -> Result<Option<String>, RepodataError> {
    for attribute in element.attributes() {
        let attribute =
            attribute.map_err(|e| RepodataError::Malformed(format!("bad XML attribute: {e}")))?;
        if attribute.key.as_ref() == name {
            let value = attribute
                .unescape_value()
                .map_err(|e| RepodataError::Malformed(format!("bad XML attribute: {e}")))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}
