//! `airlock explain-image`: which endpoint and path a node requests for an image reference.
//!
//! Follows the reference grammar of distribution (`reference/normalize.go`): a first
//! component with a `.` or `:` (or `localhost`) is a registry, anything else is Docker Hub,
//! where one-component names live under `library/`.

use std::fmt;

use airlock_types::{Reference, RepoName};

use crate::catalog::DOCKER_HUB_ALIASES;
use crate::site::{Mirror, Site};

/// Why an image reference could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("`{image}` is not an image reference: {reason}")]
    BadReference { image: String, reason: String },
    #[error("the inventory has no staging host, so nodes have no mirror to pull through")]
    NoStaging,
}

/// An image reference split the way container runtimes split it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub reference: String,
}

impl ImageRef {
    pub fn parse(image: &str) -> Result<Self, ExplainError> {
        let bad = |reason: &str| ExplainError::BadReference {
            image: image.to_owned(),
            reason: reason.to_owned(),
        };
        let (name, digest) = match image.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (image, None),
        };
        let (name, tag) = match name.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (name, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_ascii_lowercase(), rest.to_owned())
            }
            _ => ("docker.io".to_owned(), name.to_owned()),
        };
        let registry = if DOCKER_HUB_ALIASES.contains(&registry.as_str()) {
            "docker.io".to_owned()
        } else {
            registry
        };
        let path = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let repository: RepoName = path.parse().map_err(|e| bad(&format!("{e}")))?;
        let reference = match (digest, tag) {
            (Some(d), _) => d,
            (None, Some(t)) => t,
            (None, None) => "latest",
        };
        let reference: Reference = reference.parse().map_err(|e| bad(&format!("{e}")))?;
        if let (Some(_), Some(t)) = (digest, tag) {
            t.parse::<Reference>().map_err(|e| bad(&format!("{e}")))?;
        }
        Ok(Self {
            registry,
            repository: repository.as_str().to_owned(),
            reference: reference.to_string(),
        })
    }

    /// `registry/repository:tag` or `registry/repository@digest`.
    pub fn canonical(&self) -> String {
        let sep = if self.reference.contains(':') {
            '@'
        } else {
            ':'
        };
        format!(
            "{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }
}

/// Where each kind of node sends the manifest request for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub image: ImageRef,
    pub mirror: Option<Mirror>,
    pub registry_host: String,
    pub warning: Option<String>,
}

/// Explain how nodes of `site` pull `image`.
pub fn explain(site: &Site, image: &str) -> Result<Explanation, ExplainError> {
    let staging = site.staging.as_ref().ok_or(ExplainError::NoStaging)?;
    let image = ImageRef::parse(image)?;
    let mirror = site
        .mirrors
        .iter()
        .find(|m| m.registry == image.registry)
        .cloned();
    let warning = mirror.is_none().then(|| {
        format!(
            "no mirror covers {}: nodes without internet access cannot pull this image. Mirrored registries: {}",
            image.registry,
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
        warning,
    })
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let image = &self.image;
        let manifest = |repo: &str| format!("/v2/{repo}/manifests/{}", image.reference);
        writeln!(f, "image       {}", image.canonical())?;
        let Some(mirror) = &self.mirror else {
            writeln!(
                f,
                "unmirrored  nodes request https://{}{} directly",
                image.registry,
                manifest(&image.repository)
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
            manifest(&format!("{}/{}", mirror.project, image.repository))
        )?;
        writeln!(
            f,
            "containerd  GET https://{host}{}?ns={}   (certs.d hosts.toml)",
            manifest(&image.repository),
            image.registry
        )?;
        writeln!(
            f,
            "podman/crio GET https://{host}{}   (registries.conf mirror)",
            manifest(&format!("{}/{}", mirror.project, image.repository))
        )?;
        writeln!(
            f,
            "gateway     GET {}{}",
            mirror.upstream.trim_end_matches('/'),
            manifest(&image.repository)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(image: &str) -> (String, String, String) {
        let r = ImageRef::parse(image).unwrap();
        (r.registry, r.repository, r.reference)
    }

    #[test]
    fn docker_hub_names_are_normalized() {
        assert_eq!(
            parse("postgres:15"),
            ("docker.io".into(), "library/postgres".into(), "15".into())
        );
        assert_eq!(
            parse("index.docker.io/bitnami/redis"),
            ("docker.io".into(), "bitnami/redis".into(), "latest".into())
        );
    }

    #[test]
    fn registries_ports_and_digests() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse(&format!("ghcr.io/org/app@{digest}")),
            ("ghcr.io".into(), "org/app".into(), digest.clone())
        );
        assert_eq!(parse(&format!("localhost:5000/app:1.0@{digest}")).2, digest);
        assert_eq!(parse("registry.k8s.io/pause:3.9").1, "pause");
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in ["", "UPPER/case", "a//b", "nginx:bad tag", "x@sha256:zz"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
