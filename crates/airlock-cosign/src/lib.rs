//! Checks cosign "simple signing" image signatures against an ECDSA P-256 public key.
//!
//! `cosign sign --key cosign.key IMAGE` stores its signature as an OCI image at the tag
//! [`signature_tag`] (`sha256-<hex>.sig`) of the image's repository. Each layer of media type
//! [`SIMPLE_SIGNING`] is a JSON [`Payload`] naming the signed manifest digest; the layer's
//! annotation [`SIGNATURE_ANNOTATION`] is the base64 of an ASN.1 DER ECDSA signature over
//! the payload's exact bytes (SHA-256). [`check`] accepts a layer only when the signature
//! verifies with the key and the payload is a cosign image signature for the expected digest.
//!
//! The crate is pure (no files, no network) so that `airlock bundle create`, the isolated
//! side and the gateway's policy all check signatures the same way.

mod key;
mod payload;

pub use key::PublicKey;
pub use payload::Payload;

use airlock_types::Digest;
use base64::Engine as _;
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier as _;

/// Media type of a signature image's layers that carry a signed payload.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 DER signature over the layer's payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign container image signature payload.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The tag cosign stores `image`'s signatures under, in the image's own repository.
pub fn signature_tag(image: &Digest) -> String {
    format!("{}-{}.sig", image.algorithm(), image.hex())
}

/// Why a signature was not accepted. Messages complete "the signature …" or "the key …" in
/// an operator's error; they never include key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignError {
    #[error("the key is not a PEM file: {0}")]
    KeyNotPem(String),
    #[error(
        "the key file holds a PEM \"{0}\", not a \"PUBLIC KEY\" (give the public key, cosign.pub, not the private cosign.key)"
    )]
    KeyNotPublic(String),
    #[error("the key is not an ECDSA P-256 public key ({0}); cosign key pairs are P-256")]
    KeyNotP256(String),
    #[error("the signature annotation is not base64: {0}")]
    SignatureNotBase64(String),
    #[error("the signature is not an ASN.1 DER ECDSA P-256 signature")]
    SignatureNotDer,
    #[error(
        "the signature does not verify with the key (signed by another key, or the payload was changed)"
    )]
    SignatureMismatch,
    #[error("the signed payload is not a cosign simple-signing document: {0}")]
    BadPayload(String),
    #[error("the signed payload's type is {found:?}, not {SIGNATURE_TYPE:?}")]
    WrongType { found: String },
    #[error("the signed payload is for the manifest {signed}, not for this image's {image}")]
    OtherImage { signed: String, image: Digest },
}

/// Checks one signature layer: `signature` (the [`SIGNATURE_ANNOTATION`] value) must verify
/// `payload` (the layer's bytes) with `key`, and the payload must be a cosign image signature
/// for `image`. The signature is checked before the payload is trusted to say anything.
pub fn check(
    key: &PublicKey,
    payload: &[u8],
    signature: &str,
    image: &Digest,
) -> Result<Payload, CosignError> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|e| CosignError::SignatureNotBase64(e.to_string()))?;
    let signature = Signature::from_der(&der).map_err(|_| CosignError::SignatureNotDer)?;
    // No low-S rule: cosign (Go's crypto/ecdsa) signs with either S, and verifies both.
    key.verifying_key()
        .verify(payload, &signature)
        .map_err(|_| CosignError::SignatureMismatch)?;
    let payload = Payload::parse(payload)?;
    if payload.kind != SIGNATURE_TYPE {
        return Err(CosignError::WrongType {
            found: payload.kind,
        });
    }
    if payload.digest != image.to_string() {
        return Err(CosignError::OtherImage {
            signed: payload.digest,
            image: image.clone(),
        });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests;
