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
//! Auth ([`access`]): pulls need a token unless the project has `anonymous_pull`; every
//! write needs one that grants it. The gateway issues tokens at `/service/token` for
//! `[admin]` users and `[[robot]]` accounts and passes their grants on as a [`Caller`].

pub(crate) mod access;
mod gc;
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

pub use access::{Caller, Challenge, Grants, SERVICE};
pub use gc::{GcReport, collect_stopped as collect_garbage};
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

/// The hosted projects and their uploads under way.
#[derive(Debug, Default)]
pub(crate) struct Hosted {
    projects: HashMap<String, HostedConfig>,
    uploads: upload::Uploads,
    /// Held shared by what links content (uploads, mounts, manifest pushes) and exclusively
    /// by garbage collection, which must not decide while a link is being made.
    links: tokio::sync::RwLock<()>,
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
            links: tokio::sync::RwLock::default(),
        }
    }

    /// The shared hold of a request that links content (see [`Self::links`]).
    pub(crate) async fn writing(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.links.read().await
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

    /// Whether `caller` may see `project`'s repositories in the catalog: where anyone may
    /// pull, or with a token that grants the catalog (an admin's).
    fn listable(project: &HostedConfig, caller: &Caller) -> bool {
        project.anonymous_pull
            || match caller {
                Caller::Admin(_) => true,
                Caller::Token(grants) => grants.catalog,
                Caller::Anonymous => false,
            }
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
        tag: crate::referrers::digest_tag(digest),
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
        let deletes = matches!(request.target, Target::Manifest(_));
        access::authorize(
            request.project,
            request.name,
            access::action(method, deletes),
            caller,
        )?;
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
            (Method::GET, Target::Referrers(subject)) => {
                self.hosted_referrers(&request, &subject, query).await
            }
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

    /// The hosted project the repository `name` (`<project>/<repo>`) belongs to, if any.
    pub fn hosted_project_of(&self, name: &str) -> Option<&HostedConfig> {
        let (project, _) = name.split_once('/')?;
        self.hosted.project(project)
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

    /// Garbage collection of the hosted projects, a mark and sweep: links older than
    /// `grace` that nothing tagged reaches go, and content only a push brought that
    /// nothing reaches. With `dry_run`, only the report.
    pub async fn collect_garbage(
        &self,
        grace: std::time::Duration,
        dry_run: bool,
    ) -> Result<GcReport, RegistryError> {
        let _exclusive = self.hosted.links.write().await;
        let projects: Vec<&str> = self.hosted.projects.keys().map(String::as_str).collect();
        gc::collect(
            self.store.as_ref(),
            &self.index,
            &projects,
            grace,
            dry_run,
            airlock_store::unix_now(),
        )
        .await
        .map_err(crate::error::internal)
    }

    /// What hosted projects hold: every tagged and pushed manifest, referrer and linked
    /// blob, for eviction to keep with everything they reference (garbage collection, not
    /// eviction, decides what hosted projects no longer need).
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
