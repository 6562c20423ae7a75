//! Test images (`airlock_testkit`'s builders) put into a bundle, entry by entry, as
//! `airlock bundle create` does: for this crate's tests and the `airlock` binary's, behind
//! the `testing` feature, so `airlock-testkit` does not depend on this crate.

use airlock_testkit::{Image, Index};
use airlock_types::ImageRef;

use crate::{BundleError, BundleWriter, Entry, Kind};

const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// `registry/repository` of a full reference.
pub fn repository_of(reference: &str) -> String {
    let parsed: ImageRef = reference.parse().expect("a full image reference");
    format!("{}/{}", parsed.registry(), parsed.repository())
}

fn carry_blobs(
    writer: &mut BundleWriter,
    proxy: &str,
    repository: &str,
    image: &Image,
) -> Result<(), BundleError> {
    for (i, blob) in image.blobs().into_iter().enumerate() {
        let media_type = if i == 0 { CONFIG } else { LAYER };
        let digest = airlock_types::Digest::of(blob);
        let entry = Entry::oci(
            Kind::Blob,
            proxy,
            repository,
            digest,
            blob.len() as u64,
            media_type,
        );
        writer.carry_bytes(entry, blob)?;
    }
    Ok(())
}

/// Carries a single-platform image tagged `reference` (a full reference).
pub fn carry_image(
    writer: &mut BundleWriter,
    proxy: &str,
    reference: &str,
    image: &Image,
) -> Result<(), BundleError> {
    let repository = repository_of(reference);
    let root = Entry::oci(
        Kind::Image,
        proxy,
        reference,
        image.digest.clone(),
        image.manifest.len() as u64,
        image.media_type,
    );
    writer.carry_bytes(root, &image.manifest)?;
    carry_blobs(writer, proxy, &repository, image)
}

/// Carries a multi-platform index tagged `reference`, its child manifests and their blobs.
pub fn carry_index(
    writer: &mut BundleWriter,
    proxy: &str,
    reference: &str,
    index: &Index,
) -> Result<(), BundleError> {
    let repository = repository_of(reference);
    let root = Entry::oci(
        Kind::Image,
        proxy,
        reference,
        index.digest.clone(),
        index.manifest.len() as u64,
        index.media_type,
    );
    writer.carry_bytes(root, &index.manifest)?;
    for (_, image) in &index.images {
        let child = Entry::oci(
            Kind::Manifest,
            proxy,
            &format!("{repository}@{}", image.digest),
            image.digest.clone(),
            image.manifest.len() as u64,
            image.media_type,
        );
        writer.carry_bytes(child, &image.manifest)?;
        carry_blobs(writer, proxy, &repository, image)?;
    }
    Ok(())
}
