//! OCI 1.1 referrers: `GET /v2/<name>/referrers/<digest>[?artifactType=…]` answers an image
//! index of the manifests whose `subject` is `<digest>` (signatures, SBOMs, attestations).
//!
//! Hosted projects keep a referrer record per pushed manifest with a subject (a tag-shaped
//! key: the subject as tag, `referrer-<digest>` as variant) and build the index from the
//! manifests themselves; a fallback tag (`sha256-<hex>`, the schema for registries without
//! the API) pushed to the repository is merged in. Proxies ask their upstream, and its
//! fallback tag when the upstream has no referrers API; nothing of it is cached (the
//! answer changes whenever someone signs an image). The filter is applied here, so the
//! upstream's URL never carries a query the client wrote.

use airlock_store::TagKey;
use airlock_types::{Digest, media};
use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::Value;

use crate::error::internal;
use crate::hosted::HostedRequest;
use crate::manifest::MAX_MANIFEST;
use crate::route::Resolved;
use crate::{Query, Registry, RegistryError, with_api_version};

/// The variant prefix of a referrer record.
pub(crate) const REFERRER: &str = "referrer-";

/// A digest as tag keys write it (`sha256-<hex>`: keys cannot hold ':'), which is also the
/// fallback tag of the referrers tag schema.
pub(crate) fn digest_tag(digest: &Digest) -> String {
    digest.to_string().replace(':', "-")
}

/// The record saying `referrer` (pushed to the request's repository) names `subject`.
pub(crate) fn referrer_key(
    request: &HostedRequest<'_>,
    subject: &Digest,
    referrer: &Digest,
) -> TagKey {
    TagKey {
        proxy: request.project.name.clone(),
        repo: request.repo.to_string(),
        tag: digest_tag(subject),
        variant: format!("{REFERRER}{}", digest_tag(referrer)),
    }
}

/// The descriptor of a manifest in a referrers index: its media type, digest and size,
/// its `artifactType` (or, for an image, its config's media type) and annotations.
pub(crate) fn descriptor(media_type: &str, digest: &Digest, bytes: &[u8]) -> Value {
    let manifest: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let artifact_type = manifest
        .get("artifactType")
        .or_else(|| manifest.pointer("/config/mediaType"))
        .cloned();
    let mut descriptor = serde_json::json!({
        "mediaType": media_type,
        "digest": digest.to_string(),
        "size": bytes.len(),
    });
    if let Some(artifact_type) = artifact_type {
        descriptor["artifactType"] = artifact_type;
    }
    if let Some(annotations) = manifest.get("annotations").filter(|a| a.is_object()) {
        descriptor["annotations"] = annotations.clone();
    }
    descriptor
}

/// The referrers index of `descriptors`, keeping those of `artifactType` when the query
/// names one (and saying so in `OCI-Filters-Applied`).
fn index_response(mut descriptors: Vec<Value>, query: &Query) -> Response {
    let filter = query.get("artifactType");
    if let Some(wanted) = filter {
        descriptors.retain(|d| d.get("artifactType").and_then(Value::as_str) == Some(wanted));
    }
    let mut seen = std::collections::HashSet::new();
    descriptors.retain(|d| seen.insert(d.get("digest").and_then(Value::as_str).map(str::to_owned)));
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": descriptors,
    });
    let mut response = Response::new(Body::from(body.to_string()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media::OCI_INDEX),
    );
    if filter.is_some() {
        headers.insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    with_api_version(StatusCode::OK, response)
}

/// The `manifests` of an index's bytes (empty for anything else).
fn index_entries(bytes: &[u8]) -> Vec<Value> {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|index| index.get("manifests").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

impl Registry {
    /// `GET …/referrers/<digest>` of a hosted repository.
    pub(crate) async fn hosted_referrers(
        &self,
        request: &HostedRequest<'_>,
        subject: &Digest,
        query: &Query,
    ) -> Result<Response, RegistryError> {
        let records = self
            .index
            .tags_under(&request.project.name, Some(request.repo.as_str()))
            .await
            .map_err(internal)?;
        let tag = digest_tag(subject);
        let mut descriptors = Vec::new();
        for (key, record) in records.iter().filter(|(key, _)| key.tag == tag) {
            if key.variant.starts_with(REFERRER) {
                if let Some(manifest) = self.cached_manifest(&record.digest).await? {
                    descriptors.push(descriptor(
                        &manifest.media_type,
                        &manifest.digest,
                        &manifest.bytes,
                    ));
                }
            } else if key.variant.is_empty() {
                // The fallback tag, for clients that wrote one.
                if let Some(manifest) = self.cached_manifest(&record.digest).await? {
                    descriptors.extend(index_entries(&manifest.bytes));
                }
            }
        }
        Ok(index_response(descriptors, query))
    }

    /// `GET …/referrers/<digest>` through a proxy: the upstream's referrers API, else its
    /// fallback tag, else none.
    pub(crate) async fn proxy_referrers(
        &self,
        resolved: &Resolved,
        subject: &Digest,
        query: &Query,
    ) -> Result<Response, RegistryError> {
        let proxy = self.proxy(resolved);
        if proxy.config.offline {
            return Ok(index_response(Vec::new(), query));
        }
        let name = &proxy.config.name;
        let path = format!("v2/{}/referrers/{subject}", resolved.repo);
        let mut accept = HeaderMap::new();
        accept.insert(header::ACCEPT, HeaderValue::from_static(media::OCI_INDEX));
        let scope = format!("repository:{}:pull", resolved.repo);
        let response = proxy
            .upstream
            .send(Method::GET, path.as_str(), accept, &scope)
            .await
            .map_err(|e| RegistryError::from_upstream(name, &e))?;
        match response.status() {
            StatusCode::OK => {
                let bytes = airlock_upstream::read_body(response, MAX_MANIFEST)
                    .await
                    .map_err(|e| RegistryError::body(name, "referrers index", &e))?;
                Ok(index_response(index_entries(&bytes), query))
            }
            StatusCode::NOT_FOUND => {
                let fallback = self
                    .fetch_manifest(
                        proxy,
                        resolved,
                        &digest_tag(subject),
                        &[media::OCI_INDEX.to_owned()],
                    )
                    .await;
                match fallback {
                    Ok(manifest) => Ok(index_response(index_entries(&manifest.bytes), query)),
                    Err(RegistryError::ManifestUnknown(_)) => Ok(index_response(Vec::new(), query)),
                    Err(other) => Err(other),
                }
            }
            status => Err(RegistryError::from_upstream_status(
                name,
                status,
                None,
                || RegistryError::ManifestUnknown(format!("referrers of {subject}")),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_carry_the_artifact_type_or_the_config_media_type() {
        let artifact = br#"{"schemaVersion":2,"artifactType":"application/spdx+json","config":{"mediaType":"application/vnd.oci.empty.v1+json"},"annotations":{"a":"b"}}"#;
        let digest = Digest::of(artifact);
        let d = descriptor(media::OCI_MANIFEST, &digest, artifact);
        assert_eq!(d["artifactType"], "application/spdx+json");
        assert_eq!(d["annotations"]["a"], "b");
        assert_eq!(d["size"], artifact.len());
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.example.sig"}}"#;
        let d = descriptor(media::OCI_MANIFEST, &Digest::of(image), image);
        assert_eq!(d["artifactType"], "application/vnd.example.sig");
        assert!(d.get("annotations").is_none());
        let d = descriptor(media::OCI_MANIFEST, &digest, b"not json");
        assert!(d.get("artifactType").is_none());
    }

    #[test]
    fn entries_of_anything_but_an_index_are_none() {
        assert!(index_entries(b"{}").is_empty());
        assert!(index_entries(b"[1,2]").is_empty());
        assert!(index_entries(b"{\"manifests\": 3}").is_empty());
        assert_eq!(index_entries(br#"{"manifests":[{"digest":"x"}]}"#).len(), 1);
    }
}
