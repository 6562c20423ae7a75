//! Manifests and blobs of hosted repositories: a manifest is taken only when everything
//! it references is held (a pushed image is whole or refused), and served by the tag or
//! digest it was pushed under.

use airlock_store::{TagRecord, unix_now};
use airlock_types::{Digest, Reference};
use axum::body::Body;
use axum::response::Response;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::{HostedRequest, blob_link_key, header_value, link_key, tag_key};
use crate::error::internal;
use crate::manifest::{MAX_MANIFEST, Manifest, Origin, respond};
use crate::referrers::referrer_key;
use crate::{CacheOutcome, Registry, RegistryError, with_api_version};

/// What a pushed manifest must say and may reference.
#[derive(serde::Deserialize)]
struct Pushed {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    /// An index's children: manifests, not plain blobs.
    #[serde(default)]
    manifests: Vec<Descriptor>,
    /// OCI 1.1: the manifest this one refers to (a signature's image). It need not be
    /// held: referrers may arrive before their subject.
    subject: Option<Descriptor>,
}

#[derive(serde::Deserialize)]
struct Descriptor {
    digest: Digest,
}

/// Reads a manifest body, refusing it past [`MAX_MANIFEST`] before reading further.
async fn read_manifest(body: Body) -> Result<Vec<u8>, RegistryError> {
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            RegistryError::ManifestRejected(format!("the request body broke off: {e}"))
        })?;
        if bytes.len() + chunk.len() > MAX_MANIFEST {
            return Err(RegistryError::ManifestTooLarge {
                limit: MAX_MANIFEST,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The media type of a pushed manifest: the `Content-Type` it came with, which must agree
/// with its `mediaType` field when it has one.
fn pushed_media_type(headers: &HeaderMap, pushed: &Pushed) -> Result<String, RegistryError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
        .filter(|v| !v.is_empty());
    match (content_type, &pushed.media_type) {
        (Some(sent), Some(field)) if &sent != field => Err(RegistryError::ManifestRejected(
            format!("Content-Type {sent} differs from the manifest's mediaType {field}"),
        )),
        (Some(sent), _) => Ok(sent),
        (None, Some(field)) => Ok(field.clone()),
        (None, None) => Err(RegistryError::ManifestRejected(
            "no media type: send the manifest with its Content-Type".into(),
        )),
    }
}

impl Registry {
    /// `PUT …/manifests/<tag or digest>`.
    pub(crate) async fn push_manifest(
        &self,
        request: &HostedRequest<'_>,
        reference: &Reference,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, RegistryError> {
        let bytes = read_manifest(body).await?;
        let digest = Digest::of(&bytes);
        if let Reference::Digest(named) = reference {
            if named != &digest {
                return Err(RegistryError::ContentDigestMismatch(format!(
                    "the manifest hashes to {digest}, not {named}; nothing was stored"
                )));
            }
        }
        let pushed: Pushed = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::ManifestRejected(format!("not a manifest: {e}")))?;
        if pushed.schema_version != Some(2) {
            return Err(RegistryError::ManifestRejected(
                "schemaVersion must be 2 (Docker schema 1 manifests are not taken)".into(),
            ));
        }
        let media_type = pushed_media_type(headers, &pushed)?;
        let _linking = self.hosted.writing().await;
        self.check_references(request, &pushed).await?;
        let manifest = Manifest {
            digest: digest.clone(),
            media_type: media_type.clone(),
            bytes,
        };
        self.store_manifest(&manifest, Origin::Push).await?;
        let record = TagRecord {
            digest: digest.clone(),
            media_type,
            checked_at: unix_now(),
        };
        self.index
            .set_tag(&link_key(request, &digest), &record)
            .await
            .map_err(internal)?;
        if let Reference::Tag(tag) = reference {
            self.index
                .set_tag(&tag_key(request, tag), &record)
                .await
                .map_err(internal)?;
        }
        if let Some(subject) = &pushed.subject {
            self.index
                .set_tag(&referrer_key(request, &subject.digest, &digest), &record)
                .await
                .map_err(internal)?;
        }
        tracing::info!(
            target: "airlock::hosted",
            project = %request.project.name,
            repo = %request.repo,
            reference = %reference,
            %digest,
            "manifest pushed"
        );
        let mut response = Response::new(Body::empty());
        let out = response.headers_mut();
        out.insert(
            header::LOCATION,
            header_value(&format!("/v2/{}/manifests/{digest}", request.name)),
        );
        out.insert("docker-content-digest", header_value(&digest.to_string()));
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        if let Some(subject) = &pushed.subject {
            // Tells the client the referrers API keeps this one: no fallback tag needed.
            out.insert("oci-subject", header_value(&subject.digest.to_string()));
        }
        Ok(with_api_version(StatusCode::CREATED, response))
    }

    /// Every blob `pushed` names must be linked into the repository (uploaded or mounted
    /// there) and every child manifest pushed to it, and all of them held, or the push is
    /// refused (`MANIFEST_BLOB_UNKNOWN` for both, as distribution answers). A manifest
    /// naming another repository's blob would otherwise serve it from this one.
    async fn check_references(
        &self,
        request: &HostedRequest<'_>,
        pushed: &Pushed,
    ) -> Result<(), RegistryError> {
        let blobs = pushed.config.iter().chain(&pushed.layers);
        for blob in blobs {
            if self.linked_blob(request, &blob.digest).await?.is_none() {
                return Err(RegistryError::ManifestBlobUnknown(format!(
                    "blob {} (upload or mount it into {} first)",
                    blob.digest, request.name
                )));
            }
        }
        for child in &pushed.manifests {
            let linked = self.index.tag(&link_key(request, &child.digest)).await;
            if linked.map_err(internal)?.is_none()
                || self.cached_manifest(&child.digest).await?.is_none()
            {
                return Err(RegistryError::ManifestBlobUnknown(format!(
                    "manifest {} (push it to {} first)",
                    child.digest, request.name
                )));
            }
        }
        Ok(())
    }

    /// The size of blob `digest` when it is linked into the request's repository and the
    /// store holds it.
    async fn linked_blob(
        &self,
        request: &HostedRequest<'_>,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let key = blob_link_key(request, digest);
        if self.index.tag(&key).await.map_err(internal)?.is_none() {
            return Ok(None);
        }
        self.store.stat(digest).await.map_err(internal)
    }

    /// The digest `reference` names in the request's repository, if it was pushed there.
    async fn hosted_digest(
        &self,
        request: &HostedRequest<'_>,
        reference: &Reference,
    ) -> Result<Digest, RegistryError> {
        let key = match reference {
            Reference::Tag(tag) => tag_key(request, tag),
            Reference::Digest(digest) => link_key(request, digest),
        };
        match self.index.tag(&key).await.map_err(internal)? {
            Some(record) => Ok(record.digest),
            None => Err(RegistryError::ManifestUnknown(format!(
                "{}:{reference} (nothing was pushed there)",
                request.name
            ))),
        }
    }

    /// `GET`/`HEAD …/manifests/<tag or digest>`: the bytes pushed, with their media type.
    pub(crate) async fn hosted_manifest(
        &self,
        request: &HostedRequest<'_>,
        reference: &Reference,
        head: bool,
    ) -> Result<Response, RegistryError> {
        let digest = self.hosted_digest(request, reference).await?;
        let Some(manifest) = self.cached_manifest(&digest).await? else {
            return Err(RegistryError::ManifestUnknown(format!(
                "{}@{digest} (its content is gone from the store)",
                request.name
            )));
        };
        Ok(respond(
            &manifest,
            head,
            &request.project.name,
            CacheOutcome::Hit,
        ))
    }

    /// `DELETE …/manifests/<tag or digest>`, where the project allows it: a tag goes
    /// alone; a digest goes from the repository with every tag naming it. The bytes stay
    /// until garbage collection (other repositories may hold the same content).
    pub(crate) async fn delete_manifest(
        &self,
        request: &HostedRequest<'_>,
        reference: &Reference,
    ) -> Result<Response, RegistryError> {
        if !request.project.delete {
            return Err(RegistryError::Unsupported(format!(
                "hosted project {} does not allow deletes; set delete = true in its [[hosted]] table",
                request.project.name
            )));
        }
        let digest = self.hosted_digest(request, reference).await?;
        let doomed = match reference {
            Reference::Tag(tag) => vec![tag_key(request, tag)],
            Reference::Digest(_) => self
                .index
                .tags_under(&request.project.name, Some(request.repo.as_str()))
                .await
                .map_err(internal)?
                .into_iter()
                .filter(|(_, record)| record.digest == digest)
                .map(|(key, _)| key)
                .collect(),
        };
        self.index
            .forget(Vec::new(), doomed)
            .await
            .map_err(internal)?;
        tracing::info!(
            target: "airlock::hosted",
            project = %request.project.name,
            repo = %request.repo,
            reference = %reference,
            "manifest deleted"
        );
        Ok(with_api_version(
            StatusCode::ACCEPTED,
            Response::new(Body::empty()),
        ))
    }

    /// `GET`/`HEAD …/blobs/<digest>`: from the store, when linked into the repository.
    pub(crate) async fn hosted_blob(
        &self,
        request: &HostedRequest<'_>,
        digest: &Digest,
        head: bool,
        headers: &HeaderMap,
    ) -> Result<Response, RegistryError> {
        let Some(size) = self.linked_blob(request, digest).await? else {
            return Err(RegistryError::BlobUnknown(format!(
                "{digest} in {}",
                request.name
            )));
        };
        self.index.touch(digest, size);
        let spec =
            airlock_types::range::parse(headers.get(header::RANGE).and_then(|v| v.to_str().ok()));
        // A damaged copy is removed (the log says so); a hosted blob has no upstream to
        // fetch it from again, so it must be pushed again.
        self.serve_stored(digest, size, spec, head, &request.project.name)
            .await?
            .ok_or_else(|| {
                RegistryError::BlobUnknown(format!(
                    "{digest} (its stored copy was damaged and removed; push it again)"
                ))
            })
    }
}
