//! The OCI Distribution pull API over a pull-through cache: routing (project, `ns`,
//! default), manifests by tag and digest, blobs with ranges, tag lists, OCI error codes;
//! and the push side for `[[hosted]]` projects (module `hosted`).
//!
//! A handler reads like the protocol: resolve the route → look in the cache → fetch or
//! serve → record. Upstream bytes are served unchanged; what is cached was verified.

mod blob;
mod error;
mod gate;
mod hosted;
mod manifest;
mod referrers;
pub mod route;
mod tags;

use std::collections::HashMap;
use std::sync::Arc;

use airlock_config::{Config, Format, ProxyConfig};
use airlock_store::{BlobStore, MetaIndex};
use airlock_upstream::fetch::{Downloads, KeyedLocks};
use airlock_upstream::{SiteProxy, Upstream};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

pub use airlock_types::{CacheOutcome, ServedBy, UpstreamFailure};
pub use error::RegistryError;
pub use hosted::{Caller, Challenge, GcReport, Grants, SERVICE, collect_garbage};
use route::{Resolved, Routes, Target};

/// `Docker-Distribution-API-Version` value.
pub const API_VERSION: &str = "registry/2.0";

/// One configured OCI proxy.
#[derive(Debug)]
pub(crate) struct OciProxy {
    pub config: ProxyConfig,
    pub upstream: Upstream,
}

/// Resolves a pinned image to the proxy that serves it: a first component naming a proxy is
/// a project path, a registry host goes to the proxy claiming that host.
fn resolve_pin(
    routes: &Routes,
    proxies: &HashMap<String, OciProxy>,
    image: &airlock_types::ImageRef,
) -> Result<Pin, RegistryError> {
    let resolved = match image.domain() {
        Some(host) if !proxies.contains_key(host) => {
            routes.resolve(image.path().as_str(), Some(host))?
        }
        _ => routes.resolve(&image.name(), None)?,
    };
    Ok(Pin {
        proxy: resolved.proxy,
        repo: resolved.repo,
        reference: image.reference(),
    })
}

/// The pull-through registry: routes, upstream clients, store and index.
#[derive(Debug)]
pub struct Registry {
    routes: Routes,
    proxies: HashMap<String, OciProxy>,
    store: Arc<dyn BlobStore>,
    index: MetaIndex,
    downloads: Arc<Downloads>,
    /// Turns per tag or manifest digest: one upstream conversation for each at a time.
    tag_locks: KeyedLocks,
    /// The `[cache] pin` images, resolved to their proxies once at start.
    pins: Vec<Pin>,
    /// `[[policy]]`, checked before anything is fetched or served ([`gate`]).
    policy: airlock_policy::Policy,
    /// Signature checks that passed, per rule and manifest digest.
    verdicts: gate::Verdicts,
    /// `[[hosted]]` projects and their uploads under way.
    hosted: hosted::Hosted,
}

/// Why the registry could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Upstream(#[from] airlock_upstream::UpstreamError),
    #[error("[cache] pin {pin:?}: {error}")]
    Pin { pin: String, error: RegistryError },
}

/// A `[cache] pin` entry resolved to a proxy, repository and reference.
#[derive(Debug, Clone)]
pub struct Pin {
    pub proxy: String,
    pub repo: airlock_types::RepoName,
    pub reference: airlock_types::Reference,
}

impl Registry {
    /// Builds the registry for every `format = "oci"` proxy in `config`, reaching upstreams
    /// through `site_proxy` (the loaded `[upstream_proxy]`) when set.
    pub fn new(
        config: &Config,
        site_proxy: Option<&SiteProxy>,
        store: Arc<dyn BlobStore>,
        index: MetaIndex,
        downloads: Arc<Downloads>,
    ) -> Result<Self, SetupError> {
        let mut routes = Routes::default();
        let mut proxies = HashMap::new();
        for proxy in config.proxies.iter().filter(|p| p.format == Format::Oci) {
            routes.add(
                &proxy.name,
                proxy.host.as_deref(),
                proxy.upstream.host_str().unwrap_or_default(),
            );
            let upstream = Upstream::new(proxy, site_proxy)?;
            proxies.insert(
                proxy.name.clone(),
                OciProxy {
                    config: proxy.clone(),
                    upstream,
                },
            );
        }
        routes.set_default(config.server.default_proxy.as_deref());
        let pins = config
            .cache
            .pin
            .iter()
            .map(|image| {
                resolve_pin(&routes, &proxies, image).map_err(|error| SetupError::Pin {
                    pin: image.to_string(),
                    error,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            routes,
            proxies,
            store,
            index,
            downloads,
            tag_locks: KeyedLocks::default(),
            pins,
            policy: config.policy.clone(),
            verdicts: std::sync::Mutex::new(hashlink::LruCache::new(gate::VERDICTS)),
            hosted: hosted::Hosted::new(&config.hosted),
        })
    }

    /// The `[cache] pin` images, each resolved to a proxy and repository.
    pub fn pins(&self) -> &[Pin] {
        &self.pins
    }

    /// Resolves `image` to the proxy and repository that serve it, as `[cache] pin` entries
    /// are (a first component naming a proxy is a project path; a registry host goes to the
    /// proxy claiming it): for pins and prefetches made at run time.
    pub fn resolve_image(&self, image: &airlock_types::ImageRef) -> Result<Pin, RegistryError> {
        resolve_pin(&self.routes, &self.proxies, image)
    }

    /// The manifest digest a pin names now, if the cache holds it.
    pub async fn pinned_digest(
        &self,
        pin: &Pin,
    ) -> Result<Option<airlock_types::Digest>, RegistryError> {
        match &pin.reference {
            airlock_types::Reference::Digest(digest) => Ok(Some(digest.clone())),
            airlock_types::Reference::Tag(tag) => {
                let key = airlock_store::TagKey {
                    proxy: pin.proxy.clone(),
                    repo: pin.repo.to_string(),
                    tag: tag.clone(),
                    variant: String::new(),
                };
                // What clients taking every manifest kind got (an index reaches every
                // platform); else what some other client got.
                let variants = self
                    .index
                    .tag_variants(&key)
                    .await
                    .map_err(|e| RegistryError::Internal(e.to_string()))?;
                Ok(variants.into_iter().next().map(|(_, r)| r.digest))
            }
        }
    }

    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    pub fn index(&self) -> &MetaIndex {
        &self.index
    }

    pub fn downloads(&self) -> &Arc<Downloads> {
        &self.downloads
    }

    pub(crate) fn proxy(&self, resolved: &Resolved) -> &OciProxy {
        &self.proxies[&resolved.proxy]
    }

    /// Whether a request to `path` may depend on who is asking (a hosted project's path,
    /// the catalog, or the API root when hosted projects exist): the gateway checks the
    /// client's login for these and passes a [`Caller`] on.
    pub fn wants_caller(&self, path: &str) -> bool {
        !self.hosted.is_empty()
            && (matches!(path, "/v2" | "/v2/" | hosted::CATALOG)
                || path
                    .strip_prefix("/v2/")
                    .and_then(|rest| rest.split_once('/'))
                    .is_some_and(|(first, _)| self.hosted.project(first).is_some()))
    }

    async fn dispatch(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Body,
        caller: &Caller,
    ) -> Result<Response, RegistryError> {
        if uri.path() == "/v2/" || uri.path() == "/v2" {
            if !matches!(*method, Method::GET | Method::HEAD) {
                return Ok(unsupported());
            }
            // Clients learn from this answer where to get tokens (containers/image and
            // Docker use the challenges of the ping only); an anonymous token is enough
            // for the proxies, so anonymous pulls carry on.
            if !self.hosted.is_empty() && *caller == Caller::Anonymous {
                return Err(RegistryError::LoginRequired {
                    why: "get a token from /service/token (anonymous for pulls)".into(),
                    challenge: Challenge::default(),
                });
            }
            return Ok(with_api_version(
                StatusCode::OK,
                axum::Json(serde_json::json!({})).into_response(),
            ));
        }
        let query = Query::parse(uri.query());
        if uri.path() == hosted::CATALOG {
            return self.catalog(method, &query, caller).await;
        }
        let Some(raw) = route::parse_path(uri.path())? else {
            return Err(RegistryError::NameUnknown {
                name: uri.path().to_owned(),
                why: "not a registry API path".into(),
            });
        };
        // A mirror request for a registry a proxy claims is that proxy's, whatever its
        // first component says.
        let mirrored = query
            .get("ns")
            .is_some_and(|ns| self.routes.claims_host(ns));
        if let Some(request) = self.hosted.request(&raw)?.filter(|_| !mirrored) {
            return self
                .hosted(request, method, &query, headers, body, caller)
                .await;
        }
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return Ok(unsupported()),
        };
        let resolved = self.routes.resolve(raw.name, query.get("ns"))?;
        let response = match raw.target {
            Target::Manifest(reference) => {
                self.gated_manifest(&resolved, &reference, head, headers)
                    .await?
            }
            Target::Blob(digest) => {
                self.gate_blob(&resolved, &digest).await?;
                self.blob(&resolved, &digest, head, headers).await?
            }
            Target::TagList => {
                self.gate_repository(&resolved)?;
                self.tags(&resolved, &query).await?
            }
            Target::Referrers(subject) => {
                self.gate_repository(&resolved)?;
                self.proxy_referrers(&resolved, &subject, &query).await?
            }
            Target::Upload(_) => return Ok(unsupported()),
        };
        Ok(response)
    }
}

/// The axum handler for everything under `/v2`: the [`Caller`] is what the gateway put in
/// the request's extensions, anonymous without one.
pub async fn serve(State(registry): State<Arc<Registry>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let caller = parts
        .extensions
        .get::<Caller>()
        .cloned()
        .unwrap_or_default();
    match registry
        .dispatch(&parts.method, &parts.uri, &parts.headers, body, &caller)
        .await
    {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// A body-less anonymous request through the registry (prefetches and pins).
pub async fn handle(
    State(registry): State<Arc<Registry>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match registry
        .dispatch(&method, &uri, &headers, Body::empty(), &Caller::Anonymous)
        .await
    {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn unsupported() -> Response {
    RegistryError::Unsupported(
        "this is a pull-through cache: only GET and HEAD are supported (push to a [[hosted]] project)"
            .into(),
    )
    .into_response()
}

pub(crate) fn with_api_version(status: StatusCode, mut response: Response) -> Response {
    *response.status_mut() = status;
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    response
}

/// Marks a response with the proxy and cache outcome.
pub(crate) fn mark(mut response: Response, proxy: &str, cache: CacheOutcome) -> Response {
    response
        .headers_mut()
        .insert("x-airlock-cache", HeaderValue::from_static(cache.as_str()));
    response.extensions_mut().insert(ServedBy {
        proxy: proxy.to_owned(),
        cache,
    });
    response
}

/// Decoded query parameters (first value wins).
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
