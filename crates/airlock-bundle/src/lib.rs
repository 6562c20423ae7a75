//! The bundle file that carries images and package files onto a site with no network link.
//!
//! A bundle is one tar archive (optionally split into [`volume`]s) that is at once a valid
//! OCI image layout, so `skopeo copy oci-archive:FILE:REFERENCE` reads its images, and the
//! carrier of airlock's own [`index`] of every item, with a detached Ed25519 signature of
//! that index ([`sign`]). This crate owns the index, the archive's [`layout`], writing it
//! ([`writer`]), reading it ([`reader`]) and verifying every byte offline ([`mod@verify`]);
//! [`summary`] is what `inspect` prints, and [`create`] fetches what a spec names through the
//! gateway configuration's upstreams; [`import`] puts a verified bundle into a stopped
//! gateway's store as if each item had been pulled through its proxy.

pub mod create;
pub mod error;
pub mod export;
pub mod import;
pub mod index;
pub mod layout;
pub mod progress;
pub mod reader;
pub mod sign;
pub mod summary;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verify;
pub mod volume;
pub mod writer;

pub use error::BundleError;
pub use index::{BundleIndex, Entry, INDEX_VERSION, IndexError, Kind};
pub use progress::Progress;
pub use reader::{BlobBytes, Bundle, Catalog};
pub use sign::{KeyId, PublicKey, SecretKey, Signature};
pub use verify::{Verified, verify};
pub use writer::{BundleWriter, Written};
