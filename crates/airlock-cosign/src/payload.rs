//! The "simple signing" payload a cosign signature covers (containers/image's
//! `containers-signature(5)` format, as cosign writes it):
//!
//! ```json
//! {"critical": {"identity": {"docker-reference": "registry/repo"},
//!               "image": {"docker-manifest-digest": "sha256:…"},
//!               "type": "cosign container image signature"},
//!  "optional": {…}}
//! ```
//!
//! Only `critical` binds: the digest is the manifest the signature is for. The
//! `docker-reference` is reported, not enforced, since mirrors and proxies rename
//! repositories while the digest stays the same (as `cosign verify` does).

use serde_json::Value;

use crate::CosignError;

/// The fields of a payload that a check relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// `critical.image.docker-manifest-digest`, as written (`sha256:<hex>`).
    pub digest: String,
    /// `critical.type`.
    pub kind: String,
    /// `critical.identity.docker-reference`, when present.
    pub reference: Option<String>,
}

impl Payload {
    pub fn parse(bytes: &[u8]) -> Result<Self, CosignError> {
        let bad = |message: &str| CosignError::BadPayload(message.to_owned());
        let document: Value =
            serde_json::from_slice(bytes).map_err(|e| CosignError::BadPayload(e.to_string()))?;
        let critical = document
            .get("critical")
            .filter(|c| c.is_object())
            .ok_or_else(|| bad("it has no `critical` object"))?;
        let digest = critical
            .pointer("/image/docker-manifest-digest")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("it has no `critical.image.docker-manifest-digest` string"))?;
        let kind = critical
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("it has no `critical.type` string"))?;
        let reference = critical
            .pointer("/identity/docker-reference")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Self {
            digest: digest.to_owned(),
            kind: kind.to_owned(),
            reference,
        })
    }
}
