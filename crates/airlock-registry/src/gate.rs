//! Policy at the gate: `[[policy]]` decides before a manifest or blob is fetched or served.
//!
//! - Manifests by tag or digest: `deny`/`allow` entries are checked before the cache or the
//!   upstream is consulted. A `require_cosign` rule needs the manifest's digest, so the
//!   manifest is fetched (and cached) first, then its cosign signature — the
//!   `sha256-<hex>.sig` image of the same repository, through the same cache — is checked
//!   with the rule's key before a byte is served. An index that passes admits the platform
//!   manifests it lists, which `cosign sign` does not sign one by one.
//! - Signature verdicts are remembered per rule and digest: a pass for good (within a
//!   bounded LRU), a definite refusal (no signature, none that verifies) for
//!   [`REFUSAL_TTL`] so a retrying client does not make the gateway ask the upstream each
//!   time; a check the upstream could not answer is not remembered.
//! - Blob sizes: under a `max_blob_size` rule, a manifest whose descriptors name a blob
//!   over the limit is refused (clients show a manifest's error message); a blob requested
//!   directly is checked by the size the store or an upstream `HEAD` gives, so an
//!   oversized blob is refused before it is fetched. Entries naming a whole repository
//!   apply to its blobs and its tag list too.
//!
//! A denial is `403` with OCI code `DENIED` naming the rule; it and every log-mode match are
//! recorded through [`airlock_policy::record`] (log and audit trail).

use std::time::{Duration, Instant};

use airlock_policy::{Finding, Mode, Rule, Subject, Verdict};
use airlock_types::{Digest, Reference, media};
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::error::internal;
use crate::manifest::MAX_MANIFEST;
use crate::route::Resolved;
use crate::{Registry, RegistryError};

/// How many signature verdicts are remembered (rule × manifest digest).
pub(crate) const VERDICTS: usize = 4096;

/// A cosign signature payload is a small JSON document.
const MAX_PAYLOAD: usize = 64 << 10;

/// How long a definite refusal is remembered: a signature pushed meanwhile is found after
/// at most this long.
pub(crate) const REFUSAL_TTL: Duration = Duration::from_secs(60);

/// Signature checks, by rule index and manifest digest.
pub(crate) type Verdicts = std::sync::Mutex<hashlink::LruCache<(usize, Digest), Remembered>>;

/// A remembered signature check.
#[derive(Debug, Clone)]
pub(crate) enum Remembered {
    Signed,
    Refused { reason: String, until: Instant },
}

/// Why a signature check failed, and whether asking again soon could change the answer.
struct Refusal {
    reason: String,
    /// The upstream answered (no signature, or none that verifies): worth remembering.
    definite: bool,
}

impl Refusal {
    fn definite(reason: String) -> Self {
        Self {
            reason,
            definite: true,
        }
    }

    fn transient(reason: String) -> Self {
        Self {
            reason,
            definite: false,
        }
    }
}

impl Registry {
    /// A manifest, if the policy lets it through.
    pub(crate) async fn gated_manifest(
        &self,
        resolved: &Resolved,
        reference: &Reference,
        head: bool,
        headers: &HeaderMap,
    ) -> Result<Response, RegistryError> {
        let (tag, requested) = match reference {
            Reference::Tag(tag) => (Some(tag.as_str()), None),
            Reference::Digest(digest) => (None, Some(digest)),
        };
        let subject = Subject::Manifest {
            proxy: &resolved.proxy,
            repository: resolved.repo.as_str(),
            tag,
        };
        let mut fetched: Option<Response> = None;
        let mut start = 0;
        loop {
            let evaluation = self.policy.evaluate_from(&subject, start);
            record_logged(&subject, requested, &evaluation.logged);
            let (rule, index) = match evaluation.verdict {
                Verdict::Allow => break,
                Verdict::Deny(finding) => return Err(deny(&subject, requested, finding)),
                Verdict::Verify { rule, index } => (rule, index),
            };
            // Signatures and attestations are not signed themselves.
            if tag.is_some_and(is_cosign_artifact) {
                start = index + 1;
                continue;
            }
            let response = match fetched.take() {
                Some(response) => response,
                None => self.manifest(resolved, reference, head, headers).await?,
            };
            let digest = served_digest(&response)?;
            let checked = self.signed(resolved, index, rule, &digest).await;
            match (checked, rule.mode) {
                (Ok(()), Mode::Enforce) => {
                    self.gate_descriptors(resolved, &digest).await?;
                    return Ok(response);
                }
                (Err(reason), Mode::Enforce) => {
                    let finding = Finding {
                        rule: &rule.name,
                        reason,
                    };
                    return Err(deny(&subject, Some(&digest), finding));
                }
                (Ok(()), Mode::Log) => {}
                (Err(reason), Mode::Log) => record(
                    &subject,
                    Some(&digest),
                    &Finding {
                        rule: &rule.name,
                        reason,
                    },
                    Mode::Log,
                ),
            }
            fetched = Some(response);
            start = index + 1;
        }
        let response = match fetched {
            Some(response) => response,
            None => self.manifest(resolved, reference, head, headers).await?,
        };
        self.gate_descriptors(resolved, &served_digest(&response)?)
            .await?;
        Ok(response)
    }

    /// Under a size limit, a manifest whose config or layers are too large is refused
    /// itself, by the sizes its descriptors give: clients show a manifest's error message,
    /// not always a blob's.
    async fn gate_descriptors(
        &self,
        resolved: &Resolved,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        #[derive(serde::Deserialize)]
        struct Image {
            config: Option<Descriptor>,
            #[serde(default)]
            layers: Vec<Descriptor>,
        }
        #[derive(serde::Deserialize)]
        struct Descriptor {
            size: u64,
        }
        if !self.policy.limits_blob_size(&resolved.proxy) {
            return Ok(());
        }
        let Some(manifest) = self.cached_manifest(digest).await? else {
            return Ok(());
        };
        let Ok(image) = serde_json::from_slice::<Image>(&manifest.bytes) else {
            return Ok(());
        };
        for descriptor in image.config.iter().chain(&image.layers) {
            let subject = Subject::Blob {
                proxy: &resolved.proxy,
                repository: resolved.repo.as_str(),
                size: Some(descriptor.size),
            };
            let evaluation = self.policy.evaluate(&subject);
            if let Verdict::Deny(finding) = evaluation.verdict {
                record_logged(&subject, Some(digest), &evaluation.logged);
                return Err(deny(&subject, Some(digest), finding));
            }
        }
        Ok(())
    }

    /// Checks a blob against the policy before it is served or fetched.
    pub(crate) async fn gate_blob(
        &self,
        resolved: &Resolved,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        if self.policy.is_empty() {
            return Ok(());
        }
        let size = if self.policy.limits_blob_size(&resolved.proxy) {
            self.blob_size(resolved, digest).await?
        } else {
            None
        };
        let subject = Subject::Blob {
            proxy: &resolved.proxy,
            repository: resolved.repo.as_str(),
            size,
        };
        let evaluation = self.policy.evaluate(&subject);
        record_logged(&subject, Some(digest), &evaluation.logged);
        match evaluation.verdict {
            Verdict::Deny(finding) => Err(deny(&subject, Some(digest), finding)),
            // Signatures are checked on manifests; a blob has no signature of its own.
            Verdict::Allow | Verdict::Verify { .. } => Ok(()),
        }
    }

    /// Checks a tag list against the policy: a repository denied whole lists nothing.
    pub(crate) fn gate_repository(&self, resolved: &Resolved) -> Result<(), RegistryError> {
        let subject = Subject::Repository {
            proxy: &resolved.proxy,
            repository: resolved.repo.as_str(),
        };
        let evaluation = self.policy.evaluate(&subject);
        record_logged(&subject, None, &evaluation.logged);
        match evaluation.verdict {
            Verdict::Deny(finding) => Err(deny(&subject, None, finding)),
            Verdict::Allow | Verdict::Verify { .. } => Ok(()),
        }
    }

    /// A blob's size without fetching it: the store's, else the upstream's `HEAD`.
    async fn blob_size(
        &self,
        resolved: &Resolved,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        if let Some(size) = self.store.stat(digest).await.map_err(internal)? {
            return Ok(Some(size));
        }
        let proxy = self.proxy(resolved);
        if proxy.config.offline {
            return Ok(None);
        }
        let name = &proxy.config.name;
        let path = format!("v2/{}/blobs/{digest}", resolved.repo);
        let scope = format!("repository:{}:pull", resolved.repo);
        let response = proxy
            .upstream
            .send(Method::HEAD, &path, HeaderMap::new(), &scope)
            .await
            .map_err(|e| RegistryError::from_upstream(name, &e))?;
        if response.status() != StatusCode::OK {
            return Err(RegistryError::from_upstream_status(
                name,
                response.status(),
                None,
                || RegistryError::BlobUnknown(digest.to_string()),
            ));
        }
        Ok(response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// Whether `digest` in the resolved repository carries a cosign signature by the key of
    /// rule `index`; the reason when it does not.
    async fn signed(
        &self,
        resolved: &Resolved,
        index: usize,
        rule: &Rule,
        digest: &Digest,
    ) -> Result<(), String> {
        let key = (index, digest.clone());
        match self.verdicts.lock().expect("verdicts").get(&key) {
            Some(Remembered::Signed) => return Ok(()),
            Some(Remembered::Refused { reason, until }) if Instant::now() < *until => {
                return Err(reason.clone());
            }
            _ => {}
        }
        let cosign = rule
            .require_cosign
            .as_ref()
            .expect("only require_cosign rules ask for verification");
        if let Err(refusal) = self.check_signature(resolved, &cosign.key, digest).await {
            if refusal.definite {
                let remembered = Remembered::Refused {
                    reason: refusal.reason.clone(),
                    until: Instant::now() + REFUSAL_TTL,
                };
                self.verdicts
                    .lock()
                    .expect("verdicts")
                    .insert(key, remembered);
            }
            return Err(refusal.reason);
        }
        let mut passed = vec![digest.clone()];
        passed.extend(self.platform_manifests(digest).await);
        let mut verdicts = self.verdicts.lock().expect("verdicts");
        for digest in passed {
            verdicts.insert((index, digest), Remembered::Signed);
        }
        Ok(())
    }

    /// The manifests an index (by digest, in the cache) lists.
    async fn platform_manifests(&self, digest: &Digest) -> Vec<Digest> {
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(default)]
            manifests: Vec<Descriptor>,
        }
        #[derive(serde::Deserialize)]
        struct Descriptor {
            digest: String,
        }
        let Ok(Some(manifest)) = self.cached_manifest(digest).await else {
            return Vec::new();
        };
        if manifest.media_type != media::OCI_INDEX
            && manifest.media_type != media::DOCKER_MANIFEST_LIST
        {
            return Vec::new();
        }
        serde_json::from_slice::<Index>(&manifest.bytes)
            .map(|index| {
                index
                    .manifests
                    .iter()
                    .filter_map(|d| d.digest.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reads the signature image of `digest` through the cache and checks its
    /// simple-signing layers; one that verifies is enough.
    async fn check_signature(
        &self,
        resolved: &Resolved,
        key: &airlock_cosign::PublicKey,
        digest: &Digest,
    ) -> Result<(), Refusal> {
        #[derive(serde::Deserialize)]
        struct SignatureImage {
            #[serde(default)]
            layers: Vec<Layer>,
        }
        #[derive(serde::Deserialize)]
        struct Layer {
            #[serde(rename = "mediaType")]
            media_type: String,
            digest: String,
            #[serde(default)]
            annotations: std::collections::HashMap<String, String>,
        }
        let tag = airlock_cosign::signature_tag(digest);
        let mut accept = HeaderMap::new();
        accept.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            ),
        );
        let signature = match self
            .manifest(resolved, &Reference::Tag(tag.clone()), false, &accept)
            .await
        {
            Ok(response) => body(response, MAX_MANIFEST)
                .await
                .map_err(Refusal::transient)?,
            Err(RegistryError::ManifestUnknown(_)) => {
                return Err(Refusal::definite(format!(
                    "{}@{digest} is not signed (no cosign signature at tag {tag})",
                    resolved.repo
                )));
            }
            Err(e) => {
                return Err(Refusal::transient(format!(
                    "its cosign signature could not be read: {e}"
                )));
            }
        };
        let image: SignatureImage = serde_json::from_slice(&signature).map_err(|e| {
            Refusal::definite(format!("its cosign signature image is not a manifest: {e}"))
        })?;
        let mut refusals = Vec::new();
        let mut definite = true;
        for layer in &image.layers {
            let Some(signature) = layer
                .annotations
                .get(airlock_cosign::SIGNATURE_ANNOTATION)
                .filter(|_| layer.media_type == airlock_cosign::SIMPLE_SIGNING)
            else {
                continue;
            };
            let Ok(payload_digest) = layer.digest.parse::<Digest>() else {
                refusals.push(format!("layer digest {:?} is invalid", layer.digest));
                continue;
            };
            let payload = match self
                .blob(resolved, &payload_digest, false, &HeaderMap::new())
                .await
            {
                Ok(response) => match body(response, MAX_PAYLOAD).await {
                    Ok(payload) => payload,
                    Err(reason) => {
                        refusals.push(reason);
                        definite = false;
                        continue;
                    }
                },
                Err(e) => {
                    refusals.push(format!("payload {payload_digest}: {e}"));
                    definite = definite && matches!(e, RegistryError::BlobUnknown(_));
                    continue;
                }
            };
            if Digest::of(&payload) != payload_digest {
                refusals.push(format!(
                    "payload {payload_digest} does not match its digest"
                ));
                continue;
            }
            match airlock_cosign::check(key, &payload, signature, digest) {
                Ok(_) => return Ok(()),
                Err(e) => refusals.push(e.to_string()),
            }
        }
        if refusals.is_empty() {
            return Err(Refusal::definite(format!(
                "its cosign signature image (tag {tag}) has no simple-signing layer"
            )));
        }
        Err(Refusal {
            reason: format!(
                "no cosign signature verifies with the rule's key: {}",
                refusals.join("; ")
            ),
            definite,
        })
    }
}

fn record_logged(subject: &Subject<'_>, digest: Option<&Digest>, logged: &[Finding<'_>]) {
    for finding in logged {
        record(subject, digest, finding, Mode::Log);
    }
}

/// Records a denial and makes it the client's error.
fn deny(subject: &Subject<'_>, digest: Option<&Digest>, finding: Finding<'_>) -> RegistryError {
    record(subject, digest, &finding, Mode::Enforce);
    RegistryError::PolicyDenied {
        rule: finding.rule.to_owned(),
        reason: finding.reason,
    }
}

fn record(subject: &Subject<'_>, digest: Option<&Digest>, finding: &Finding<'_>, mode: Mode) {
    let digest = digest.map(ToString::to_string);
    airlock_policy::record(&airlock_policy::Decision {
        proxy: subject.proxy(),
        item: &subject.describe(),
        digest: digest.as_deref(),
        finding,
        mode,
    });
}

/// `sha256-<hex>.sig`, `.att`, `.sbom`: the tags cosign stores its artifacts under.
fn is_cosign_artifact(tag: &str) -> bool {
    tag.strip_prefix("sha256-").is_some_and(|rest| {
        [".sig", ".att", ".sbom"]
            .iter()
            .any(|suffix| rest.strip_suffix(suffix).is_some_and(|hex| hex.len() == 64))
    })
}

/// The digest a manifest response carries (every manifest response sets it).
fn served_digest(response: &Response) -> Result<Digest, RegistryError> {
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| RegistryError::Internal("a manifest response without its digest".into()))
}

async fn body(response: Response, limit: usize) -> Result<Vec<u8>, String> {
    axum::body::to_bytes(response.into_body(), limit)
        .await
        .map(|b| b.to_vec())
        .map_err(|e| format!("its cosign signature could not be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_artifact_tags() {
        let hex = "a".repeat(64);
        assert!(is_cosign_artifact(&format!("sha256-{hex}.sig")));
        assert!(is_cosign_artifact(&format!("sha256-{hex}.att")));
        assert!(!is_cosign_artifact(&format!("sha256-{hex}")));
        assert!(!is_cosign_artifact("sha256-abc.sig"));
        assert!(!is_cosign_artifact("latest"));
    }
}
