//! Manifests by tag and by digest: byte-exact, verified, negotiated by `Accept`.
//!
//! A digest reference never goes upstream once cached. A tag is served from the cache
//! while younger than the proxy's `tag_ttl`, then revalidated with a HEAD (which Docker Hub
//! does not count as a pull); when the upstream cannot answer, the cached tag is served
//! stale with a warning.
//!
//! Upstreams answer a tag by `Accept`: a multi-platform tag is an index for a client that
//! takes indexes and one platform's manifest (or an error) for a client that does not, as
//! distribution's handler does for Docker manifest lists. So a tag is cached per class of
//! `Accept` ([`variant`]), and each class gets what the upstream gives it, never what
//! another class got.

use std::time::Duration;

use airlock_store::{ManifestRecord, TagKey, TagRecord, unix_now};
use airlock_types::{Digest, Reference, media};
use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use reqwest::Method;

use crate::error::internal;
use crate::route::Resolved;
use crate::{CacheOutcome, OciProxy, Registry, RegistryError, mark, with_api_version};

/// Distribution refuses manifests above 4 MiB; so do we, before reading further.
pub(crate) const MAX_MANIFEST: usize = 4 << 20;

/// Where stored content came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// An upstream served it: any client may pull it through a proxy.
    Upstream,
    /// A client pushed it to a hosted project.
    Push,
}

/// A manifest as served: exact bytes, their digest and media type.
pub(crate) struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// The client's `Accept` media types, without parameters.
fn accepted(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

fn acceptable(accept: &[String], media_type: &str) -> bool {
    accept.is_empty() || accept.iter().any(|a| a == "*/*" || a == media_type)
}

/// Short names of the manifest kinds a tag variant is made of, in a fixed order.
const KINDS: [(&str, &str); 4] = [
    (media::OCI_INDEX, "oci-index"),
    (media::OCI_MANIFEST, "oci-manifest"),
    (media::DOCKER_MANIFEST_LIST, "docker-list"),
    (media::DOCKER_MANIFEST_V2, "docker-manifest"),
];

/// The class of `accept` a cached tag is kept under: which known manifest kinds it names.
/// Empty for a client that accepts them all (or anything), as most do; other media types
/// are ignored, so a client cannot mint more than a handful of variants per tag.
fn variant(accept: &[String]) -> String {
    if accept.is_empty() || accept.iter().any(|a| a == "*/*") {
        return String::new();
    }
    let named: Vec<&str> = KINDS
        .iter()
        .filter(|(media_type, _)| accept.iter().any(|a| a == media_type))
        .map(|(_, short)| *short)
        .collect();
    match named.len() {
        0 => "other".to_owned(),
        n if n == KINDS.len() => String::new(),
        _ => named.join("+"),
    }
}

fn upstream_accept(accept: &[String]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = if accept.is_empty() || accept.iter().any(|a| a == "*/*") {
        airlock_upstream::accept_header(media::ALL_MANIFESTS)
    } else {
        HeaderValue::from_str(&accept.join(", "))
            .unwrap_or_else(|_| airlock_upstream::accept_header(media::ALL_MANIFESTS))
    };
    headers.insert(header::ACCEPT, value);
    headers
}

fn scope(resolved: &Resolved) -> String {
    format!("repository:{}:pull", resolved.repo)
}

impl Registry {
    pub(crate) async fn manifest(
        &self,
        resolved: &Resolved,
        reference: &Reference,
        head: bool,
        headers: &HeaderMap,
    ) -> Result<Response, RegistryError> {
        let proxy = self.proxy(resolved);
        let accept = accepted(headers);
        match reference {
            Reference::Digest(digest) => {
                if let Some(manifest) = self.proxied_manifest(digest).await? {
                    return Ok(respond(
                        &manifest,
                        head,
                        &proxy.config.name,
                        CacheOutcome::Hit,
                    ));
                }
                // Concurrent misses of one digest wait for the first fetch, then hit.
                let _turn = self.tag_locks.lock(&digest.to_string()).await;
                if let Some(manifest) = self.proxied_manifest(digest).await? {
                    return Ok(respond(
                        &manifest,
                        head,
                        &proxy.config.name,
                        CacheOutcome::Hit,
                    ));
                }
                if proxy.config.offline {
                    return Err(offline_miss(
                        &proxy.config.name,
                        &format!("{}@{digest}", resolved.repo),
                    ));
                }
                let manifest = self
                    .fetch_manifest(proxy, resolved, &digest.to_string(), &accept)
                    .await?;
                if &manifest.digest != digest {
                    return Err(RegistryError::BadUpstreamContent {
                        proxy: proxy.config.name.clone(),
                        detail: format!(
                            "asked for {digest}, received content with digest {}",
                            manifest.digest
                        ),
                    });
                }
                self.store_manifest(&manifest, Origin::Upstream).await?;
                Ok(respond(
                    &manifest,
                    head,
                    &proxy.config.name,
                    CacheOutcome::Miss,
                ))
            }
            Reference::Tag(tag) => {
                self.manifest_by_tag(proxy, resolved, tag, head, &accept)
                    .await
            }
        }
    }

    async fn manifest_by_tag(
        &self,
        proxy: &OciProxy,
        resolved: &Resolved,
        tag: &str,
        head: bool,
        accept: &[String],
    ) -> Result<Response, RegistryError> {
        let name = &proxy.config.name;
        let key = TagKey {
            proxy: name.clone(),
            repo: resolved.repo.to_string(),
            tag: tag.to_owned(),
            variant: variant(accept),
        };
        if let Some((record, manifest)) = self.cached_tag(&key, accept).await? {
            if proxy.is_fresh(&record) {
                return Ok(respond(&manifest, head, name, CacheOutcome::Hit));
            }
        }
        // One upstream conversation per tag: concurrent requests wait here, then find
        // what the first one fetched.
        let _turn = self
            .tag_locks
            .lock(&format!("{}/{}:{tag}", key.proxy, key.repo))
            .await;
        let cached = self.cached_tag(&key, accept).await?;
        if let Some((record, manifest)) = cached {
            if proxy.is_fresh(&record) {
                return Ok(respond(&manifest, head, name, CacheOutcome::Hit));
            }
            // Another replica on the bucket may have checked it since.
            if let Some(manifest) = self.checked_by_peer(proxy, &key, &record, accept).await? {
                return Ok(respond(&manifest, head, name, CacheOutcome::Hit));
            }
            let age = Duration::from_secs(unix_now().saturating_sub(record.checked_at));
            match self.revalidate(proxy, resolved, tag, accept, &record).await {
                Revalidation::Current => {
                    let refreshed = TagRecord {
                        checked_at: unix_now(),
                        ..record
                    };
                    self.index
                        .set_tag(&key, &refreshed)
                        .await
                        .map_err(internal)?;
                    return Ok(respond(&manifest, head, name, CacheOutcome::Revalidated));
                }
                Revalidation::Gone => {
                    return Err(RegistryError::ManifestUnknown(format!(
                        "{}:{tag}",
                        resolved.repo
                    )));
                }
                Revalidation::Unreachable(why) => {
                    tracing::warn!(
                        target: "airlock::registry",
                        proxy = %name,
                        repo = %resolved.repo,
                        tag,
                        age_secs = age.as_secs(),
                        reason = %why,
                        "serving cached tag stale: upstream could not revalidate it"
                    );
                    let mut response = respond(&manifest, head, name, CacheOutcome::Stale);
                    response.headers_mut().insert(
                        header::WARNING,
                        HeaderValue::from_static("110 airlock \"Response is Stale\""),
                    );
                    return Ok(response);
                }
                Revalidation::Changed => {}
            }
        }
        if proxy.config.offline {
            // No upstream to ask what this class of client gets: what another class got
            // serves it when the client takes that media type (a tag a bundle carried is
            // held for the catch-all class only).
            if let Some(manifest) = self.other_variant(&key, accept).await? {
                return Ok(respond(&manifest, head, name, CacheOutcome::Hit));
            }
            return Err(offline_miss(name, &format!("{}:{tag}", resolved.repo)));
        }
        let manifest = self.fetch_manifest(proxy, resolved, tag, accept).await?;
        self.store_manifest(&manifest, Origin::Upstream).await?;
        let record = TagRecord {
            digest: manifest.digest.clone(),
            media_type: manifest.media_type.clone(),
            checked_at: unix_now(),
        };
        self.index.set_tag(&key, &record).await.map_err(internal)?;
        Ok(respond(&manifest, head, name, CacheOutcome::Miss))
    }

    /// The manifest of a fresh record another replica wrote for `key` after `stale`, when
    /// the client accepts it and it is cached.
    async fn checked_by_peer(
        &self,
        proxy: &OciProxy,
        key: &TagKey,
        stale: &TagRecord,
        accept: &[String],
    ) -> Result<Option<Manifest>, RegistryError> {
        match self.index.fresher_tag(key, stale).await.map_err(internal)? {
            Some(record) if proxy.is_fresh(&record) && acceptable(accept, &record.media_type) => {
                self.cached_manifest(&record.digest).await
            }
            _ => Ok(None),
        }
    }

    /// A cached manifest another variant of the tag points at that the client accepts
    /// (the catch-all variant first).
    async fn other_variant(
        &self,
        key: &TagKey,
        accept: &[String],
    ) -> Result<Option<Manifest>, RegistryError> {
        let variants = self.index.tag_variants(key).await.map_err(internal)?;
        for (_, record) in variants {
            if acceptable(accept, &record.media_type) {
                if let Some(manifest) = self.cached_manifest(&record.digest).await? {
                    return Ok(Some(manifest));
                }
            }
        }
        Ok(None)
    }

    /// The cached manifest a tag points at, if the client accepts its media type.
    async fn cached_tag(
        &self,
        key: &TagKey,
        accept: &[String],
    ) -> Result<Option<(TagRecord, Manifest)>, RegistryError> {
        match self.index.tag(key).await.map_err(internal)? {
            Some(record) if acceptable(accept, &record.media_type) => Ok(self
                .cached_manifest(&record.digest)
                .await?
                .map(|m| (record, m))),
            _ => Ok(None),
        }
    }

    async fn revalidate(
        &self,
        proxy: &OciProxy,
        resolved: &Resolved,
        tag: &str,
        accept: &[String],
        record: &TagRecord,
    ) -> Revalidation {
        let path = format!("v2/{}/manifests/{tag}", resolved.repo);
        let response = match proxy
            .upstream
            .send(
                Method::HEAD,
                &path,
                upstream_accept(accept),
                &scope(resolved),
            )
            .await
        {
            Ok(response) => response,
            Err(e) => return Revalidation::Unreachable(e.to_string()),
        };
        match response.status().as_u16() {
            200 => {
                let digest = response
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<Digest>().ok());
                if digest.as_ref() == Some(&record.digest) {
                    Revalidation::Current
                } else {
                    Revalidation::Changed
                }
            }
            404 => Revalidation::Gone,
            status => Revalidation::Unreachable(format!("upstream answered {status}")),
        }
    }

    pub(crate) async fn cached_manifest(
        &self,
        digest: &Digest,
    ) -> Result<Option<Manifest>, RegistryError> {
        let Some(record) = self.index.manifest(digest).await.map_err(internal)? else {
            return Ok(None);
        };
        let Some(bytes) = airlock_store::read_all(self.store.as_ref(), digest)
            .await
            .map_err(internal)?
        else {
            return Ok(None);
        };
        self.index.touch(digest, bytes.len() as u64);
        Ok(Some(Manifest {
            digest: digest.clone(),
            media_type: record.media_type,
            bytes,
        }))
    }

    /// A manifest a proxy may serve by digest: not one only a push brought (a proxy asks
    /// its upstream for that digest instead, so no closed project is read through it).
    pub(crate) async fn proxied_manifest(
        &self,
        digest: &Digest,
    ) -> Result<Option<Manifest>, RegistryError> {
        if self.index.is_pushed(digest).await.map_err(internal)? {
            return Ok(None);
        }
        self.cached_manifest(digest).await
    }

    /// Stores a manifest and its record; `origin` says whether an upstream served it or
    /// a client pushed it (see [`Self::proxied_manifest`]).
    pub(crate) async fn store_manifest(
        &self,
        manifest: &Manifest,
        origin: Origin,
    ) -> Result<(), RegistryError> {
        airlock_store::put(self.store.as_ref(), &manifest.digest, &manifest.bytes)
            .await
            .map_err(internal)?;
        let size = manifest.bytes.len() as u64;
        match origin {
            Origin::Upstream => self.index.record_blob(&manifest.digest, size).await,
            Origin::Push => self.index.record_pushed(&manifest.digest, size).await,
        }
        .map_err(internal)?;
        let record = ManifestRecord {
            media_type: manifest.media_type.clone(),
            size,
            refs: airlock_store::evict::manifest_refs(&manifest.bytes),
        };
        self.index
            .set_manifest(&manifest.digest, &record)
            .await
            .map_err(internal)
    }

    pub(crate) async fn fetch_manifest(
        &self,
        proxy: &OciProxy,
        resolved: &Resolved,
        reference: &str,
        accept: &[String],
    ) -> Result<Manifest, RegistryError> {
        let name = &proxy.config.name;
        let path = format!("v2/{}/manifests/{reference}", resolved.repo);
        let response = proxy
            .upstream
            .send(
                Method::GET,
                &path,
                upstream_accept(accept),
                &scope(resolved),
            )
            .await
            .map_err(|e| RegistryError::from_upstream(name, &e))?;
        let status = response.status();
        if status != StatusCode::OK {
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Err(RegistryError::from_upstream_status(
                name,
                status,
                retry_after,
                || RegistryError::ManifestUnknown(format!("{}:{reference}", resolved.repo)),
            ));
        }
        let bad = |detail: String| RegistryError::BadUpstreamContent {
            proxy: name.clone(),
            detail,
        };
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
        let bytes = airlock_upstream::read_body(response, MAX_MANIFEST)
            .await
            .map_err(|e| RegistryError::body(name, "manifest", &e))?;
        let digest = Digest::of(&bytes);
        if let Some(announced) = announced {
            if let Ok(announced) = announced.parse::<Digest>() {
                if announced != digest {
                    return Err(bad(format!(
                        "upstream announced {announced}, content hashes to {digest}"
                    )));
                }
            }
        }
        let media_type = content_type
            .filter(|t| !t.is_empty() && t != "application/json" && t != "text/plain")
            .or_else(|| media_type_field(&bytes))
            .unwrap_or_else(|| media::OCI_MANIFEST.to_owned());
        Ok(Manifest {
            digest,
            media_type,
            bytes,
        })
    }
}

impl OciProxy {
    /// Whether a cached tag may be served without asking the upstream.
    fn is_fresh(&self, record: &TagRecord) -> bool {
        let age = Duration::from_secs(unix_now().saturating_sub(record.checked_at));
        // Whole seconds: fresh for at least `tag_ttl`, up to a second more (0: never).
        let ttl = self.config.tag_ttl.0;
        (age <= ttl && !ttl.is_zero()) || self.config.offline
    }
}

enum Revalidation {
    Current,
    Changed,
    Gone,
    Unreachable(String),
}

/// The `mediaType` field of a manifest, for upstreams that send a generic content type.
fn media_type_field(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Probe>(bytes).ok()?.media_type
}

fn offline_miss(proxy: &str, what: &str) -> RegistryError {
    RegistryError::ManifestUnknown(format!(
        "{what} (proxy {proxy} is offline and does not hold it)"
    ))
}

pub(crate) fn respond(
    manifest: &Manifest,
    head: bool,
    proxy: &str,
    cache: CacheOutcome,
) -> Response {
    let body = if head {
        Body::empty()
    } else {
        Body::from(manifest.bytes.clone())
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    let digest = manifest.digest.to_string();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&manifest.media_type)
            .unwrap_or(HeaderValue::from_static(media::OCI_MANIFEST)),
    );
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(manifest.bytes.len()),
    );
    headers.insert(
        "docker-content-digest",
        HeaderValue::from_str(&digest).expect("digests are header-safe"),
    );
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{digest}\"")).expect("digests are header-safe"),
    );
    mark(with_api_version(StatusCode::OK, response), proxy, cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant_of(accept: &[&str]) -> String {
        variant(&accept.iter().map(|&a| a.to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn variants_name_the_manifest_kinds_a_client_takes() {
        assert_eq!(variant_of(&[]), "");
        assert_eq!(variant_of(&["*/*"]), "");
        assert_eq!(
            variant_of(media::ALL_MANIFESTS),
            "",
            "all kinds is the same as anything"
        );
        assert_eq!(variant_of(&[media::DOCKER_MANIFEST_V2]), "docker-manifest");
        assert_eq!(
            variant_of(&[media::DOCKER_MANIFEST_V2, media::OCI_MANIFEST]),
            variant_of(&[media::OCI_MANIFEST, media::DOCKER_MANIFEST_V2]),
            "order does not matter"
        );
        assert_eq!(
            variant_of(&[media::OCI_INDEX, "application/x-one", "application/x-two"]),
            "oci-index",
            "unknown types do not mint variants"
        );
        assert_eq!(variant_of(&["application/x-one"]), "other");
    }
}
