//! The bundle file that carries images and package files onto a site with no network link.
//!
//! A bundle is one tar archive (optionally split into volumes) that is at once a valid OCI
//! image layout, so `skopeo copy oci-archive:FILE:REFERENCE` reads its images, and the
//! carrier of airlock's own [`index`] of every item, with a detached Ed25519 signature of
//! that index. This crate owns the index, the archive's layout, writing and reading it, and
//! verifying every byte offline; fetching items and placing them in a store belong to the
//! commands that call it.

pub mod index;

pub use index::{BundleIndex, Entry, INDEX_VERSION, IndexError, Kind};
