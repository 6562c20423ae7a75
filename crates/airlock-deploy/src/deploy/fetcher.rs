//! The control node's [`ArtifactSource`]: K3s releases and RPM packages fetched into the
//! local cache, directly from their upstreams or through the gateway's raw proxies, and
//! verified there before any node sees them.

use std::path::PathBuf;
use std::time::Duration;

use airlock_site::site::Site;

use super::{ArtifactSource, GatewayLink, SourceError};
use crate::artifacts::{self, GatewayAccess, Http, K3sArtifacts, Sources};
use crate::rpms::{self, CachedRpm};

/// K3s artifacts and RPM packages for the cache in `cache_dir`.
pub struct Fetcher<'a> {
    pub site: &'a Site,
    pub cache_dir: PathBuf,
    /// Progress bars for downloads.
    pub progress: bool,
    /// Where a line for the operator goes (which route a release took, what is left to the
    /// nodes' own repositories).
    pub notes: &'a (dyn Fn(&str) + Sync),
}

impl ArtifactSource for Fetcher<'_> {
    fn k3s(&self, arch: &str, gateway: Option<&GatewayLink>) -> Result<K3sArtifacts, SourceError> {
        let access = gateway.map(|g| GatewayAccess {
            base: format!("https://{}/repository", g.staging.hostname),
            resolve: g
                .staging
                .machine
                .address
                .parse()
                .ok()
                .map(|ip| std::net::SocketAddr::new(ip, super::staging::PORT)),
            ca_pem: g.ca.clone(),
        });
        let sources = Sources::for_site(self.site, access)?;
        let k3s = &self.site.k3s;
        let fetched = artifacts::fetch_k3s(
            &sources,
            k3s.version.as_deref(),
            &k3s.channel,
            arch,
            &self.cache_dir,
            k3s.artifact_download_timeout.map(Duration::from_secs),
            self.progress,
        )?;
        (self.notes)(&format!(
            "k3s {} for {arch}: {} ({})",
            fetched.version, fetched.route, fetched.binary.url
        ));
        Ok(fetched)
    }

    fn rpms(
        &self,
        repos: &[String],
        packages: &[&str],
        arch: &str,
    ) -> Result<Vec<CachedRpm>, SourceError> {
        let outbound = artifacts::outbound_proxy(self.site)?;
        let http = Http::new(
            None,
            outbound.as_ref(),
            self.site
                .k3s
                .artifact_download_timeout
                .map(Duration::from_secs),
            self.progress,
        )?;
        let closure = rpms::resolve_closure(repos, packages, arch, &http)?;
        for left in &closure.left_to_os {
            (self.notes)(&format!(
                "note: {} is left to the node's own repositories",
                left.requirement
            ));
        }
        Ok(rpms::download_rpms(&closure, &self.cache_dir, &http)?)
    }
}
