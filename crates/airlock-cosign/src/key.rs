//! The public key a signature is checked against: the PEM "PUBLIC KEY" (`SubjectPublicKeyInfo`)
//! that `cosign generate-key-pair` writes as cosign.pub, ECDSA on P-256 only.

use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey as _;
use p256::pkcs8::der::pem;

use crate::CosignError;

/// A cosign public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses a PEM "PUBLIC KEY" holding an ECDSA P-256 key.
    pub fn from_pem(text: &str) -> Result<Self, CosignError> {
        let (label, _) = pem::decode_vec(text.trim().as_bytes())
            .map_err(|e| CosignError::KeyNotPem(e.to_string()))?;
        if label != "PUBLIC KEY" {
            return Err(CosignError::KeyNotPublic(label.to_owned()));
        }
        VerifyingKey::from_public_key_pem(text.trim())
            .map(Self)
            .map_err(|e| CosignError::KeyNotP256(e.to_string()))
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }
}

impl From<VerifyingKey> for PublicKey {
    fn from(key: VerifyingKey) -> Self {
        Self(key)
    }
}
