//! `[[hosted]]` projects: `/v2/<project>/<repo>/…` that clients push to, beside the
//! proxies. The push side of the OCI Distribution API: uploads ([`upload`]), manifests
//! checked against what the store holds ([`push`]), tag lists and the catalog ([`list`]).
//!
//! Tags live in the metadata index under the project's name, as a proxy's do. Each
//! manifest pushed to a repository also gets a link record (a [`TagKey`] with the
//! [`LINK`] variant), so a digest reference answers only in the repositories it was pushed
//! to, a delete by digest can remove it from one repository, and eviction keeps what
//! hosted projects hold ([`Registry::hosted_roots`]).
//!
//! Auth, for now: pulls need a login unless the project has `anonymous_pull`; every write
//! needs HTTP basic credentials of an `[admin]` user, which the gateway checks and passes
//! on as a [`Caller`]. Docker token auth and `[[robot]]` accounts with per-project scopes
//! come next and replace the basic challenge.

mod list;
mod push;
pub(crate) mod upload;

use std::collections::HashMap;

use airlock_config::HostedConfig;
use airlock_store::TagKey;
use airlock_types::{Digest, RepoName};
use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method};

use crate::route::{RawRequest, Target};
use crate::{Query, Registry, RegistryError};

pub(crate) use upload::upload_range;

/// The catalog of hosted repositories.
pub(crate) const CATALOG: &str = "/v2/_catalog";

/// The variant of a link record: the manifest a tag-shaped key names was pushed to its
/// repository. Tags themselves have the empty variant.
const LINK: &str = "pushed";

/// The variant of a blob link record: the blob was uploaded or mounted into the
/// repository. A repository serves, mounts from and builds manifests of its linked blobs
/// only, so a blob of a closed project cannot be read through another one by digest.
const BLOB_LINK: &str = "blob";

/// Who is asking, as the gateway established it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Caller {
    /// No credentials (or empty ones, as containers/image sends after a basic challenge).
    #[default]
    Anonymous,
    /// An `[admin]` user whose password was checked.
    User(String),
}

/// The hosted projects and their uploads under way.
#[derive(Debug, Default)]
pub(crate) struct Hosted {
    projects: HashMap<String, HostedConfig>,
    uploads: upload::Uploads,
}

/// A request to a hosted project's repository.
#[derive(Debug)]
pub(crate) struct HostedRequest<'a> {
    pub project: &'a HostedConfig,
    pub repo: RepoName,
    /// `<project>/<repo>`, as the client wrote it (for `Location` headers).
    pub name: &'a str,
    pub target: Target,
}

impl Hosted {
    pub(crate) fn new(config: &[HostedConfig]) -> Self {
        Self {
            projects: config.iter().map(|h| (h.name.clone(), h.clone())).collect(),
            uploads: upload::Uploads::default(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.projects.is_empty()
    }

    pub(crate) fn project(&self, name: &str) -> Option<&HostedConfig> {
        self.projects.get(name)
    }

    /// The request `raw` makes of a hosted project, when its first component names one.
    pub(crate) fn request<'a>(
        &'a self,
        raw: &RawRequest<'a>,
    ) -> Result<Option<HostedRequest<'a>>, RegistryError> {
        let Some((first, repo)) = raw.name.split_once('/') else {
            return Ok(None);
        };
        let Some(project) = self.project(first) else {
            return Ok(None);
        };
        let repo = repo
            .parse()
            .map_err(|_| RegistryError::NameInvalid(raw.name.to_owned()))?;
        Ok(Some(HostedRequest {
            project,
            repo,
            name: raw.name,
            target: raw.target.clone(),
        }))
    }

    /// Whether `caller` may make a request with `method` of `project`.
    fn authorize(
        project: &HostedConfig,
        method: &Method,
        caller: &Caller,
    ) -> Result<(), RegistryError> {
        let read = matches!(*method, Method::GET | Method::HEAD);
        match caller {
            Caller::User(_) => Ok(()),
            Caller::Anonymous if read && project.anonymous_pull => Ok(()),
            Caller::Anonymous if read => Err(RegistryError::LoginRequired(format!(
                "pulling from hosted project {} needs a login (it has no anonymous_pull)",
                project.name
            ))),
            Caller::Anonymous => Err(RegistryError::LoginRequired(format!(
                "pushing to hosted project {} needs an [admin] login (docker login, skopeo --dest-creds)",
                project.name
            ))),
        }
    }

    /// Whether `caller` may read `project`.
    fn readable(project: &HostedConfig, caller: &Caller) -> bool {
        Self::authorize(project, &Method::GET, caller).is_ok()
    }
}

/// The tag record of `tag` in a hosted repository.
fn tag_key(request: &HostedRequest<'_>, tag: &str) -> TagKey {
    TagKey {
        proxy: request.project.name.clone(),
        repo: request.repo.to_string(),
        tag: tag.to_owned(),
        variant: String::new(),
    }
}

/// The link record saying `digest` was pushed to the request's repository. Digests are
/// written `<algorithm>-<hex>`: tag keys cannot hold ':'.
fn link_key(request: &HostedRequest<'_>, digest: &Digest) -> TagKey {
    digest_key(&request.project.name, request.repo.as_str(), digest, LINK)
}

/// The link record saying blob `digest` was uploaded or mounted into the request's
/// repository.
fn blob_link_key(request: &HostedRequest<'_>, digest: &Digest) -> TagKey {
    digest_key(
        &request.project.name,
        request.repo.as_str(),
        digest,
        BLOB_LINK,
    )
}

fn digest_key(project: &str, repo: &str, digest: &Digest, variant: &str) -> TagKey {
    TagKey {
        proxy: project.to_owned(),
        repo: repo.to_owned(),
        tag: digest.to_string().replace(':', "-"),
        variant: variant.to_owned(),
    }
}

impl Registry {
    /// A request to a hosted project: authorized, then dispatched by method and target.
    pub(crate) async fn hosted(
        &self,
        request: HostedRequest<'_>,
        method: &Method,
        query: &Query,
        headers: &HeaderMap,
        body: Body,
        caller: &Caller,
    ) -> Result<Response, RegistryError> {
        Hosted::authorize(request.project, method, caller)?;
        let head = *method == Method::HEAD;
        match (method.clone(), request.target.clone()) {
            (Method::GET | Method::HEAD, Target::Manifest(reference)) => {
                self.hosted_manifest(&request, &reference, head).await
            }
            (Method::PUT, Target::Manifest(reference)) => {
                self.push_manifest(&request, &reference, headers, body)
                    .await
            }
            (Method::DELETE, Target::Manifest(reference)) => {
                self.delete_manifest(&request, &reference).await
            }
            (Method::GET | Method::HEAD, Target::Blob(digest)) => {
                self.hosted_blob(&request, &digest, head, headers).await
            }
            (Method::GET, Target::TagList) => self.hosted_tags(&request, query).await,
            (Method::POST, Target::Upload(None)) => {
                self.start_upload(&request, query, body, caller).await
            }
            (Method::PATCH, Target::Upload(Some(id))) => {
                self.patch_upload(&request, &id, headers, body).await
            }
            (Method::PUT, Target::Upload(Some(id))) => {
                self.finish_upload(&request, &id, query, headers, body)
                    .await
            }
            (Method::GET, Target::Upload(Some(id))) => self.upload_status(&request, &id).await,
            (Method::DELETE, Target::Upload(Some(id))) => self.cancel_upload(&request, &id).await,
            (Method::DELETE, Target::Blob(_)) => Err(RegistryError::Unsupported(
                "blobs are removed by garbage collection, not by DELETE".into(),
            )),
            (method, _) => Err(RegistryError::Unsupported(format!(
                "{method} is not part of the API at {}",
                request.name
            ))),
        }
    }

    /// Drops the uploads nobody touched for an hour, with their temporary bytes: for the
    /// gateway's upkeep round (a new upload does it too). Returns how many went.
    pub fn drop_abandoned_uploads(&self) -> usize {
        let dropped = self.hosted.uploads.sweep();
        if dropped > 0 {
            tracing::info!(target: "airlock::hosted", dropped, "abandoned uploads dropped");
        }
        dropped
    }

    /// What hosted projects hold: every tagged and every pushed manifest, for eviction to
    /// keep with everything they reference.
    pub async fn hosted_roots(&self) -> Result<Vec<Digest>, RegistryError> {
        let mut roots = Vec::new();
        for project in self.hosted.projects.keys() {
            let records = self
                .index
                .tags_under(project, None)
                .await
                .map_err(crate::error::internal)?;
            roots.extend(records.into_iter().map(|(_, record)| record.digest));
        }
        Ok(roots)
    }
}

/// A header value built from ASCII the registry wrote (paths of valid names, digests).
fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).expect("names and digests are header-safe")
}
