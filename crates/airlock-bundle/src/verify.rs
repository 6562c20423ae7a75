//! Verifying a bundle offline, every byte: what `airlock bundle verify` runs, and what
//! `import` will run before anything becomes visible.
//!
//! In order, cheapest refusal first:
//! 1. the documents (seeking over blobs): the index parses, the signature (when a trust key
//!    is given) is that key's signature of the index's exact bytes, and the OCI
//!    `index.json` names exactly the carried images;
//! 2. every member in one pass: every blob hashes to its digest, and the documents read in
//!    this pass are the ones checked in step 1;
//! 3. the archive's blobs are exactly the index's carried digests, with the same sizes.

use airlock_types::Digest;

use crate::error::BundleError;
use crate::layout;
use crate::reader::{BlobBytes, Bundle, Catalog, Scan};
use crate::sign::{KeyId, PublicKey};

/// What a successful verification established.
#[derive(Debug)]
pub struct Verified {
    pub catalog: Catalog,
    /// The key whose signature was checked, when a trust key was given.
    pub trusted_key: Option<KeyId>,
    /// Distinct blobs in the archive, and their bytes.
    pub blobs: usize,
    pub blob_bytes: u64,
}

/// Checks the documents of a bundle: signature (if `trust` is given) and the OCI index.
pub fn check_catalog(
    catalog: &Catalog,
    trust: Option<&PublicKey>,
) -> Result<Option<KeyId>, BundleError> {
    let trusted_key = match trust {
        Some(key) => {
            let signature = catalog.signature.as_ref().ok_or(BundleError::Unsigned)?;
            key.verify(&catalog.index_bytes, signature)?;
            Some(key.id())
        }
        None => None,
    };
    layout::check_oci_index(&catalog.oci_index, &catalog.index)
        .map_err(BundleError::OciIndexDisagrees)?;
    Ok(trusted_key)
}

/// Verifies every byte of `bundle`; `on_blob` sees each blob's bytes as they stream (see
/// [`Bundle::scan`]).
pub fn verify_with(
    bundle: &Bundle,
    trust: Option<&PublicKey>,
    on_blob: impl FnMut(&Digest, u64, &mut BlobBytes<'_>) -> Result<(), BundleError>,
) -> Result<Verified, BundleError> {
    let first = bundle.catalog()?;
    check_catalog(&first, trust)?;
    bundle
        .progress()
        .start(Some(first.index.carried().values().sum()));
    let scan = bundle.scan(on_blob)?;
    let trusted_key = check_scan(&first, &scan, trust)?;
    let Scan { catalog, blobs } = scan;
    Ok(Verified {
        trusted_key,
        blobs: blobs.len(),
        blob_bytes: blobs.values().sum(),
        catalog,
    })
}

/// Checks what a full pass saw: the documents are the ones `first` read (and checked),
/// and the archive's blobs are exactly the carried ones.
pub(crate) fn check_scan(
    first: &Catalog,
    scan: &Scan,
    trust: Option<&PublicKey>,
) -> Result<Option<KeyId>, BundleError> {
    let catalog = &scan.catalog;
    if catalog.index_bytes != first.index_bytes
        || catalog.signature != first.signature
        || catalog.oci_index != first.oci_index
    {
        return Err(BundleError::BadMember {
            path: layout::INDEX.to_owned(),
            reason: "it changed while the bundle was being read".to_owned(),
        });
    }
    let trusted_key = check_catalog(catalog, trust)?;
    check_blobs(catalog, &scan.blobs)?;
    Ok(trusted_key)
}

/// Verifies every byte of `bundle`.
pub fn verify(bundle: &Bundle, trust: Option<&PublicKey>) -> Result<Verified, BundleError> {
    verify_with(bundle, trust, |_, _, _| Ok(()))
}

/// The archive holds exactly the carried digests, at their sizes.
fn check_blobs(
    catalog: &Catalog,
    blobs: &std::collections::BTreeMap<Digest, u64>,
) -> Result<(), BundleError> {
    let carried = catalog.index.carried();
    for (digest, &size) in &carried {
        match blobs.get(*digest) {
            None => {
                let entry = catalog
                    .index
                    .entries
                    .iter()
                    .find(|e| e.digest == **digest)
                    .expect("a carried digest comes from an entry");
                return Err(BundleError::MissingBlob {
                    digest: (*digest).clone(),
                    what: format!(
                        "{} {} of proxy {}",
                        entry.kind,
                        entry.subject(),
                        entry.proxy
                    ),
                });
            }
            Some(&held) if held != size => {
                return Err(BundleError::SizeMismatch {
                    digest: (*digest).clone(),
                    expected: size,
                    actual: held,
                });
            }
            Some(_) => {}
        }
    }
    if let Some(digest) = blobs.keys().find(|d| !carried.contains_key(d)) {
        return Err(BundleError::UnlistedBlob {
            digest: digest.clone(),
        });
    }
    Ok(())
}
