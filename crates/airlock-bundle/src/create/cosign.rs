//! `verify: {cosign_key: FILE}`: an image is carried only when its repository holds a cosign
//! signature, by that key, for the root manifest digest its reference resolved to; the
//! signature image then travels in the bundle, tagged `registry/repo:sha256-<hex>.sig`, so
//! the isolated side can check it again and `bundle import` places it like any image.
//!
//! The checks themselves are `airlock_cosign`'s; this module fetches what they need.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use airlock_config::ProxyConfig;
use airlock_cosign::{PublicKey, SIGNATURE_ANNOTATION, SIMPLE_SIGNING};
use airlock_types::{Digest, media};
use serde_json::Value;

use super::upstream::Clients;
use super::{CreateError, Since, carry_blobs, descriptor};
use crate::index::{Entry, Kind};
use crate::writer::BundleWriter;

/// Largest payload read: cosign's are a few hundred bytes.
const MAX_PAYLOAD: u64 = 1 << 20;

/// A signature image whose signature verified, ready to be carried.
pub struct Verified {
    /// `registry/repo:sha256-<hex>.sig`.
    reference: String,
    manifest: Vec<u8>,
    media_type: String,
    document: Value,
    /// Payloads read for the check (each matched its digest): carried without a second
    /// download.
    payloads: HashMap<Digest, Vec<u8>>,
}

/// Fetches the signature of the image `what` (root manifest `image`) from the repository
/// `(repository, repo)` and checks it with the key at `key_path`.
pub fn verify(
    clients: &Clients<'_>,
    proxy: &ProxyConfig,
    (repository, repo): (&str, &str),
    what: &str,
    image: &Digest,
    key_path: &Path,
) -> Result<Verified, CreateError> {
    let refuse = |message: String| CreateError::Unverified {
        what: what.to_owned(),
        message,
    };
    let key = std::fs::read_to_string(key_path)
        .map_err(|e| format!("cannot read the cosign key {}: {e}", key_path.display()))
        .and_then(|text| {
            PublicKey::from_pem(&text)
                .map_err(|e| format!("the cosign key {}: {e}", key_path.display()))
        })
        .map_err(refuse)?;
    let tag = airlock_cosign::signature_tag(image);
    let reference = format!("{repository}:{tag}");
    tracing::info!(image = %what, signature = %reference, "checking the cosign signature");
    let (manifest, media_type) = clients
        .manifest_if_present(proxy, repo, &tag, &reference)?
        .ok_or_else(|| {
            refuse(format!(
                "it is not signed: the registry has no cosign signature tag {tag} for {image}"
            ))
        })?;
    let document: Value = serde_json::from_slice(&manifest)
        .ok()
        .filter(|_| !media::is_index(&media_type))
        .ok_or_else(|| {
            refuse(format!(
                "the signature {reference} is not an image manifest"
            ))
        })?;
    let layers = document["layers"].as_array().cloned().unwrap_or_default();
    let mut refusals = Vec::new();
    let mut payloads = HashMap::new();
    for (n, layer) in layers.iter().enumerate() {
        if layer["mediaType"].as_str() != Some(SIMPLE_SIGNING) {
            continue;
        }
        let layer_what = format!("{reference} layer {}", n + 1);
        let layer_key = (layer, &key, image);
        match check_layer(clients, proxy, repo, layer_key, &mut payloads, &layer_what)? {
            Ok(()) => {
                return Ok(Verified {
                    reference,
                    manifest,
                    media_type,
                    document,
                    payloads,
                });
            }
            Err(why) => refusals.push(format!("layer {}: {why}", n + 1)),
        }
    }
    if refusals.is_empty() {
        return Err(refuse(format!(
            "the signature {reference} has no {SIMPLE_SIGNING} layer"
        )));
    }
    Err(refuse(format!(
        "no signature in {reference} is valid for the key {}: {}",
        key_path.display(),
        refusals.join("; ")
    )))
}

/// One simple-signing layer: `Ok(Err(why))` when its signature is refused, `Err` when the
/// upstream failed (which ends `create` rather than counting as a bad signature). The
/// payload read is kept in `payloads`.
fn check_layer(
    clients: &Clients<'_>,
    proxy: &ProxyConfig,
    repo: &str,
    (layer, key, image): (&Value, &PublicKey, &Digest),
    payloads: &mut HashMap<Digest, Vec<u8>>,
    what: &str,
) -> Result<Result<(), String>, CreateError> {
    let Some(signature) = layer["annotations"][SIGNATURE_ANNOTATION].as_str() else {
        return Ok(Err(format!("it has no {SIGNATURE_ANNOTATION} annotation")));
    };
    let descriptor = descriptor(layer, what)?;
    if descriptor.size > MAX_PAYLOAD {
        return Ok(Err(format!(
            "its payload is {} bytes, more than a signature payload can be",
            descriptor.size
        )));
    }
    let mut payload = Vec::new();
    clients
        .blob(proxy, repo, &descriptor.digest, what)?
        .take(MAX_PAYLOAD + 1)
        .read_to_end(&mut payload)
        .map_err(|e| CreateError::Upstream {
            what: what.to_owned(),
            message: e.to_string(),
        })?;
    if Digest::of(&payload) != descriptor.digest || payload.len() as u64 != descriptor.size {
        return Err(CreateError::BadManifest {
            what: what.to_owned(),
            message: format!(
                "the upstream sent a payload that hashes to {}, {} bytes",
                Digest::of(&payload),
                payload.len()
            ),
        });
    }
    let checked = airlock_cosign::check(key, &payload, signature, image)
        .map(drop)
        .map_err(|e| e.to_string());
    payloads.insert(descriptor.digest, payload);
    Ok(checked)
}

/// Carries the signature image: its manifest under its tag, then its config and payloads
/// as the image's other blobs are carried (the writer checks each against the digest the
/// verified manifest names, so these are the bytes that were verified).
pub fn carry(
    clients: &Clients<'_>,
    (writer, since): (&mut BundleWriter, &Since),
    proxy: &ProxyConfig,
    repos: (&str, &str),
    verified: &Verified,
) -> Result<(), CreateError> {
    let entry = Entry::oci(
        Kind::Image,
        &proxy.name,
        &verified.reference,
        Digest::of(&verified.manifest),
        verified.manifest.len() as u64,
        &verified.media_type,
    );
    super::put(writer, since, entry, &verified.manifest)?;
    carry_blobs(
        clients,
        (writer, since),
        proxy,
        repos,
        (&verified.document, &verified.payloads),
        &verified.reference,
    )
}
