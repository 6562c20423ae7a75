//! Where everything sits inside a bundle's tar archive, and the OCI `index.json` that makes
//! the archive an OCI image layout.
//!
//! ```text
//! oci-layout                  {"imageLayoutVersion":"1.0.0"}           (first)
//! blobs/sha256/<hex>          every carried manifest, config, layer and package file,
//!                             once per digest, in the order they were added
//! index.json                  OCI image index: one descriptor per carried `image` entry,
//!                             annotated org.opencontainers.image.ref.name = full reference
//! airlock/index.json.sig      detached signature of the next member's bytes (if signed)
//! airlock/index.json          airlock's index (see `crate::index`)                (last)
//! ```
//!
//! The indexes come last because a bundle is written as its items stream in; readers that
//! only need the index seek over the blobs. Nothing else may appear in the archive. The
//! archive ends with tar's end-of-archive marker (two zero blocks), which is how a reader
//! tells a complete bundle from a truncated one.

use std::collections::BTreeSet;

use airlock_types::Digest;
use serde::{Deserialize, Serialize};

use crate::index::{BundleIndex, Kind};

pub const OCI_LAYOUT: &str = "oci-layout";
pub const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
pub const OCI_INDEX: &str = "index.json";
pub const INDEX: &str = "airlock/index.json";
pub const SIGNATURE: &str = "airlock/index.json.sig";
const BLOBS: &str = "blobs/sha256/";

/// The annotation that names an image in an OCI layout; `skopeo copy oci-archive:FILE:NAME`
/// selects the manifest whose annotation equals NAME.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One member of the archive, by its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    OciLayout,
    Blob(Digest),
    OciIndex,
    Index,
    Signature,
    /// A directory that may appear in archives other tools repack (`blobs/`, …).
    Directory,
}

impl Member {
    /// What a path inside the archive is; `None` for anything a bundle never holds.
    pub fn from_path(path: &str) -> Option<Self> {
        match path.trim_start_matches("./") {
            OCI_LAYOUT => Some(Self::OciLayout),
            OCI_INDEX => Some(Self::OciIndex),
            INDEX => Some(Self::Index),
            SIGNATURE => Some(Self::Signature),
            "blobs" | "blobs/" | "blobs/sha256" | "blobs/sha256/" | "airlock" | "airlock/" => {
                Some(Self::Directory)
            }
            other => other
                .strip_prefix(BLOBS)
                .and_then(|hex| Digest::sha256_hex(hex).ok())
                .map(Self::Blob),
        }
    }
}

/// Where a blob's bytes sit in the archive.
pub fn blob_path(digest: &Digest) -> String {
    format!("{BLOBS}{}", digest.hex())
}

/// An OCI descriptor as `index.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl Descriptor {
    fn ref_name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciIndex {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
}

/// The descriptors `index.json` must hold for `index`: one per carried image entry.
pub fn image_descriptors(index: &BundleIndex) -> BTreeSet<Descriptor> {
    index
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Image && e.carried)
        .map(|e| Descriptor {
            media_type: e.media_type.clone(),
            digest: e.digest.clone(),
            size: e.size,
            annotations: [(REF_NAME.to_owned(), e.subject().to_owned())].into(),
        })
        .collect()
}

/// The OCI `index.json` for `index`.
pub fn oci_index_bytes(index: &BundleIndex) -> Vec<u8> {
    let document = OciIndex {
        schema_version: 2,
        media_type: Some(airlock_types::media::OCI_INDEX.to_owned()),
        manifests: image_descriptors(index).into_iter().collect(),
    };
    serde_json::to_vec_pretty(&document).expect("an OCI index always serializes")
}

/// Checks that an archive's `index.json` names exactly the carried images of `index`.
pub fn check_oci_index(bytes: &[u8], index: &BundleIndex) -> Result<(), String> {
    let document: OciIndex =
        serde_json::from_slice(bytes).map_err(|e| format!("it is not an OCI index: {e}"))?;
    if document.schema_version != 2 {
        return Err(format!(
            "its schemaVersion is {}, not 2",
            document.schema_version
        ));
    }
    let expected = image_descriptors(index);
    let mut found = BTreeSet::new();
    for descriptor in document.manifests {
        let name = descriptor.ref_name().unwrap_or("(no ref.name)").to_owned();
        if !expected.contains(&descriptor) {
            return Err(format!(
                "it names {name} as {} ({} bytes, {}), which airlock's index does not list as a carried image",
                descriptor.digest, descriptor.size, descriptor.media_type
            ));
        }
        found.insert(descriptor);
    }
    if let Some(missing) = expected.difference(&found).next() {
        return Err(format!(
            "it does not name the image {} ({})",
            missing.ref_name().unwrap_or_default(),
            missing.digest
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_known_by_their_paths() {
        let digest = Digest::of(b"x");
        assert_eq!(
            Member::from_path(&blob_path(&digest)),
            Some(Member::Blob(digest.clone()))
        );
        assert_eq!(
            Member::from_path(&format!("./{}", blob_path(&digest))),
            Some(Member::Blob(digest))
        );
        assert_eq!(Member::from_path("airlock/index.json"), Some(Member::Index));
        assert_eq!(Member::from_path("blobs/"), Some(Member::Directory));
        for path in [
            "blobs/sha256/abc",
            "blobs/sha512/00",
            "blobs/sha256/../../etc",
            "airlock/other.json",
            "manifest.json",
        ] {
            assert_eq!(Member::from_path(path), None, "{path}");
        }
    }
}
