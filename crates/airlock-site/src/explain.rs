//! `airlock explain-image`: which endpoint and path a node requests for an image reference.
//!
//! The reference is read as container runtimes read it ([`ImageRef`], with Docker Hub's
//! normalization).

use std::fmt;

use airlock_types::ImageRef;

use crate::site::{Mirror, Site};

/// Why an image reference could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("`{image}` is not an image reference: {reason}")]
    BadReference { image: String, reason: String },
    #[error("the inventory has no staging host, so nodes have no mirror to pull through")]
    NoStaging,
}

/// Where each kind of node sends the manifest request for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub image: ImageRef,
    pub mirror: Option<Mirror>,
    pub registry_host: String,
    /// The other staging hosts' registry names, in the order nodes try them after the first.
    pub fallbacks: Vec<String>,
    pub warning: Option<String>,
}

/// Explain how nodes of `site` pull `image`.
pub fn explain(site: &Site, image: &str) -> Result<Explanation, ExplainError> {
    let staging = site.staging.as_ref().ok_or(ExplainError::NoStaging)?;
    let image: ImageRef = image.parse().map_err(|e| ExplainError::BadReference {
        image: image.to_owned(),
        reason: format!("{e}"),
    })?;
    let mirror = site
        .mirrors
        .iter()
        .find(|m| m.registry == image.registry())
        .cloned();
    let warning = mirror.is_none().then(|| {
        format!(
            "no mirror covers {}: nodes without internet access cannot pull this image. Mirrored registries: {}",
            image.registry(),
            site.mirrors
                .iter()
                .map(|m| m.registry.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    Ok(Explanation {
        image,
        mirror,
        registry_host: staging.registry_host.clone(),
        fallbacks: site
            .replicas
            .iter()
            .skip(1)
            .map(|r| r.registry_host.clone())
            .collect(),
        warning,
    })
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let image = &self.image;
        let reference = image.reference();
        let manifest = |repo: &str| format!("/v2/{repo}/manifests/{reference}");
        writeln!(f, "image       {}", image.canonical())?;
        let Some(mirror) = &self.mirror else {
            writeln!(
                f,
                "unmirrored  nodes request https://{}{} directly",
                image.registry(),
                manifest(image.repository().as_str())
            )?;
            return Ok(());
        };
        let host = &self.registry_host;
        writeln!(
            f,
            "project     {} (upstream {})",
            mirror.project, mirror.upstream
        )?;
        writeln!(
            f,
            "k3s         GET https://{host}{}   (registries.yaml rewrite)",
            manifest(&format!("{}/{}", mirror.project, image.repository()))
        )?;
        writeln!(
            f,
            "containerd  GET https://{host}{}?ns={}   (certs.d hosts.toml)",
            manifest(image.repository().as_str()),
            image.registry()
        )?;
        writeln!(
            f,
            "podman/crio GET https://{host}{}   (registries.conf mirror)",
            manifest(&format!("{}/{}", mirror.project, image.repository()))
        )?;
        if !self.fallbacks.is_empty() {
            writeln!(
                f,
                "then        the same paths on {}   (when {host} does not answer, in this order)",
                self.fallbacks.join(", ")
            )?;
        }
        writeln!(
            f,
            "gateway     GET {}{}",
            mirror.upstream.trim_end_matches('/'),
            manifest(image.repository().as_str())
        )
    }
}
