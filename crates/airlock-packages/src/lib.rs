//! Package proxies at Nexus's paths, `/repository/<name>/…`, on the same store, upstream
//! client and one-fetch-per-miss machinery as the registry.
//!
//! Every format has the same shape: a module that maps a request path to a [`Spec`] — an
//! immutable file with a known digest, a pinned release artifact, or a file refreshed by
//! TTL — and asks its [`Origin`] for it ([`Origin::get`]). Formats: `raw`, `pypi`, `conda`,
//! `maven`, `yum` and `helm`.

mod checksum;
mod conda;
mod derived;
mod error;
mod gate;
mod helm;
mod maven;
mod offline;
mod origin;
mod pypi;
mod raw;
mod yum;

use std::collections::HashMap;
use std::sync::Arc;

use airlock_config::{Config, Format};
use airlock_store::{BlobStore, MetaIndex};
use airlock_types::{CacheOutcome, ClientRequest, ServedBy};
use airlock_upstream::Upstream;
use airlock_upstream::fetch::Downloads;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, Uri};

pub use derived::TableStats;
pub use error::PackageError;
pub use origin::{Check, Document, Entry, Expected, Freshness, Origin, Spec, Variant};

/// The formats this version serves.
pub const SERVED_FORMATS: &[Format] = &[
    Format::Raw,
    Format::Pypi,
    Format::Conda,
    Format::Maven,
    Format::Yum,
    Format::Helm,
];

/// Every configured package proxy, by name.
#[derive(Debug)]
pub struct Packages {
    proxies: HashMap<String, Origin>,
    /// `[[policy]]`, checked on file downloads before anything is fetched or served.
    policy: airlock_policy::Policy,
}

impl Packages {
    /// Builds the package proxies of `config` (formats in [`SERVED_FORMATS`]), reaching
    /// upstreams through `site_proxy` (the loaded `[upstream_proxy]`) when set.
    pub fn new(
        config: &Config,
        site_proxy: Option<&airlock_upstream::SiteProxy>,
        store: &Arc<dyn BlobStore>,
        index: &MetaIndex,
        downloads: &Arc<Downloads>,
    ) -> Result<Self, airlock_upstream::UpstreamError> {
        let mut proxies = HashMap::new();
        for proxy in config
            .proxies
            .iter()
            .filter(|p| SERVED_FORMATS.contains(&p.format))
        {
            let origin = Origin::new(
                proxy.clone(),
                Upstream::new(proxy, site_proxy)?,
                store.clone(),
                index.clone(),
                downloads.clone(),
            )?;
            proxies.insert(proxy.name.clone(), origin);
        }
        Ok(Self {
            proxies,
            policy: config.policy.clone(),
        })
    }

    async fn dispatch(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Response, PackageError> {
        let request =
            ClientRequest::from_http(method, headers).ok_or(PackageError::MethodNotAllowed)?;
        let rest = uri
            .path()
            .strip_prefix("/repository/")
            .ok_or(PackageError::NotFound)?;
        let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
        let origin = self
            .proxies
            .get(name)
            .ok_or_else(|| PackageError::UnknownRepository(name.to_owned()))?;
        let path = airlock_upstream::target::client_path(path)
            .map_err(|refused| PackageError::BadPath(format!("{path:?} ({refused})")))?;
        gate::check(&self.policy, name, origin.config().format, &path)?;
        match origin.config().format {
            Format::Raw => raw::serve(origin, &path, &request).await,
            Format::Pypi => pypi::serve(origin, &path, &request).await,
            Format::Conda => conda::serve(origin, &path, &request).await,
            Format::Maven => maven::serve(origin, &path, &request).await,
            Format::Yum => yum::serve(origin, &path, &request).await,
            Format::Helm => helm::serve(origin, &path, &request).await,
            // OCI proxies live under /v2/, never in this map.
            Format::Oci => Err(PackageError::NotFound),
        }
    }
}

/// The axum handler for everything under `/repository/`. Every response of a configured
/// proxy is marked with its name and cache outcome ([`ServedBy`]) for the access log and
/// the metrics; one that failed on the upstream also carries
/// [`airlock_types::UpstreamFailure`] (set where the error becomes a response).
pub async fn handle(
    axum::extract::State(packages): axum::extract::State<Arc<Packages>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut response = match packages.dispatch(&method, &uri, &headers).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    if let Some(proxy) = packages.proxy_of(&uri) {
        let cache = outcome_of(&response);
        response.extensions_mut().insert(ServedBy {
            proxy: proxy.to_owned(),
            cache,
        });
    }
    response
}

impl Packages {
    /// What the proxy named `proxy` derived from its cached documents, table by table
    /// (empty for an unknown proxy or one that derived nothing yet).
    #[must_use]
    pub fn derived_stats(&self, proxy: &str) -> Vec<TableStats> {
        self.proxies
            .get(proxy)
            .map_or_else(Vec::new, |origin| origin.derived.stats())
    }

    /// Forgets every upstream 404 the proxies remember: after a bundle import added files
    /// to the store, a path that was missing upstream may be held now.
    pub fn forget_missing(&self) {
        for origin in self.proxies.values() {
            origin.forget_missing();
        }
    }

    /// The configured proxy a `/repository/` path names, if any.
    fn proxy_of(&self, uri: &Uri) -> Option<&str> {
        let rest = uri.path().strip_prefix("/repository/")?;
        let name = rest.split_once('/').map_or(rest, |(name, _)| name);
        self.proxies
            .get_key_value(name)
            .map(|(name, _)| name.as_str())
    }
}

/// How a response relates to the cache: the typed outcome the origin marked it with, else
/// the `X-Airlock-Cache` a format set on a response it built. An error the origin did not
/// mark never got an answer from the cache: `pass`.
fn outcome_of(response: &Response) -> CacheOutcome {
    if let Some(outcome) = response.extensions().get::<CacheOutcome>() {
        return *outcome;
    }
    if response.status().is_client_error() || response.status().is_server_error() {
        return CacheOutcome::Pass;
    }
    response
        .headers()
        .get("x-airlock-cache")
        .and_then(|value| value.to_str().ok())
        .and_then(CacheOutcome::parse)
        .unwrap_or(CacheOutcome::Pass)
}
