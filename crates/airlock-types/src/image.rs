//! Image references as container runtimes read them, with Docker Hub's normalization.
//!
//! Follows the reference grammar of distribution (`reference/normalize.go`): a first
//! component with a `.` or `:` (or `localhost`) is a registry host, anything else is a path
//! on Docker Hub, where one-component names live under `library/`. Docker Hub answers to
//! several host names; all of them are `docker.io` here.
//!
//! ```text
//! reference := [domain '/'] path [':' tag] ['@' digest]
//! ```

use std::fmt;
use std::str::FromStr;

use crate::{Digest, Reference, RepoName};

/// The name images use for Docker Hub, and containerd's `?ns=` for it.
pub const DOCKER_HUB: &str = "docker.io";

/// The host names Docker Hub is known by.
pub const DOCKER_HUB_ALIASES: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];

/// A registry host as images name it: lowercased, Docker Hub's aliases as `docker.io`.
pub fn canonical_registry(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        DOCKER_HUB.to_owned()
    } else {
        host
    }
}

/// A repository path as Docker Hub stores it: official images (one component) live under
/// `library/`.
pub fn docker_hub_path(path: &str) -> String {
    if path.contains('/') {
        path.to_owned()
    } else {
        format!("library/{path}")
    }
}

/// Whether the first component of a name is a registry host rather than part of a path.
pub fn names_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("empty image reference")]
    Empty,
    #[error("registry {0:?} is not a host name (letters, digits, '.', '-', an optional :port)")]
    Registry(String),
    #[error("{0}")]
    Name(crate::NameError),
    #[error("reference {0:?} is neither a tag nor a sha256 digest")]
    Tag(String),
    #[error("{0:?} after '@' is not a sha256 digest")]
    Digest(String),
}

/// An image reference: where it lives, which repository, and which tag or digest.
///
/// [`fmt::Display`] writes it as it was written; [`ImageRef::canonical`] writes the fully
/// qualified, normalized form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// The registry host as written, when the reference names one.
    domain: Option<String>,
    /// The path as written after the domain.
    path: RepoName,
    /// The canonical registry: [`canonical_registry`] of the domain, or Docker Hub.
    registry: String,
    /// The path on that registry, with `library/` on Docker Hub.
    repository: RepoName,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// The registry host as written, if any.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// The repository path as written (no registry, no `library/` added).
    pub fn path(&self) -> &RepoName {
        &self.path
    }

    /// The name as written: `[domain/]path`, without tag or digest.
    pub fn name(&self) -> String {
        match &self.domain {
            Some(domain) => format!("{domain}/{}", self.path),
            None => self.path.to_string(),
        }
    }

    /// The canonical registry host: `docker.io` for Docker Hub under any of its names.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository on that registry, `library/` included for official Docker Hub images.
    pub fn repository(&self) -> &RepoName {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What a manifest request names: the digest if there is one, else the tag, else
    /// `latest`.
    pub fn reference(&self) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => Reference::Digest(digest.clone()),
            (None, Some(tag)) => Reference::Tag(tag.clone()),
            (None, None) => Reference::Tag("latest".to_owned()),
        }
    }

    /// `registry/repository:tag` or `registry/repository@digest`.
    pub fn canonical(&self) -> String {
        let sep = if self.digest.is_some() { '@' } else { ':' };
        format!(
            "{}/{}{sep}{}",
            self.registry,
            self.repository,
            self.reference()
        )
    }
}

fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 255
        && domain.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

impl FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(image: &str) -> Result<Self, Self::Err> {
        if image.is_empty() {
            return Err(ImageRefError::Empty);
        }
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => {
                let parsed = digest
                    .parse::<Digest>()
                    .map_err(|_| ImageRefError::Digest(digest.to_owned()))?;
                (name, Some(parsed))
            }
            None => (image, None),
        };
        let (name, tag) = match name.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => match tag.parse::<Reference>() {
                Ok(Reference::Tag(tag)) => (name, Some(tag)),
                _ => return Err(ImageRefError::Tag(tag.to_owned())),
            },
            _ => (name, None),
        };
        let (domain, path) = match name.split_once('/') {
            Some((first, rest)) if names_registry(first) => {
                if !valid_domain(first) {
                    return Err(ImageRefError::Registry(first.to_owned()));
                }
                (Some(first.to_owned()), rest)
            }
            _ => (None, name),
        };
        let path: RepoName = path.parse().map_err(ImageRefError::Name)?;
        let registry = domain
            .as_deref()
            .map_or_else(|| DOCKER_HUB.to_owned(), canonical_registry);
        let repository = if registry == DOCKER_HUB {
            docker_hub_path(path.as_str())
                .parse()
                .map_err(ImageRefError::Name)?
        } else {
            path.clone()
        };
        Ok(Self {
            domain,
            path,
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(domain) = &self.domain {
            write!(f, "{domain}/")?;
        }
        write!(f, "{}", self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(image: &str) -> (String, String, String) {
        let r: ImageRef = image.parse().unwrap();
        (
            r.registry().to_owned(),
            r.repository().to_string(),
            r.reference().to_string(),
        )
    }

    fn digest() -> String {
        format!("sha256:{}", "a".repeat(64))
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
        assert_eq!(
            parse("registry-1.docker.io/nginx").1,
            "library/nginx",
            "every Docker Hub alias gets library/"
        );
        assert_eq!(parse("Docker.IO/library/x:1").0, "docker.io");
        let r: ImageRef = "docker.io/postgres".parse().unwrap();
        assert_eq!(r.canonical(), "docker.io/library/postgres:latest");
        assert_eq!(r.to_string(), "docker.io/postgres", "Display is as written");
    }

    #[test]
    fn registries_ports_and_digests() {
        let digest = digest();
        assert_eq!(
            parse(&format!("ghcr.io/org/app@{digest}")),
            ("ghcr.io".into(), "org/app".into(), digest.clone())
        );
        let both: ImageRef = format!("localhost:5000/app:1.0@{digest}").parse().unwrap();
        assert_eq!(both.reference().to_string(), digest);
        assert_eq!(both.tag(), Some("1.0"));
        assert_eq!(both.domain(), Some("localhost:5000"));
        assert_eq!(both.canonical(), format!("localhost:5000/app@{digest}"));
        assert_eq!(parse("registry.k8s.io/pause:3.9").1, "pause");
        assert_eq!(parse("localhost/app").0, "localhost");
        let project: ImageRef = "dockerhub-proxy/library/postgres:15".parse().unwrap();
        assert_eq!(project.domain(), None, "a proxy name is not a host");
        assert_eq!(project.name(), "dockerhub-proxy/library/postgres");
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "nginx:bad tag",
            "x@sha256:zz",
            "x@latest",
            "nginx:",
            ":tag",
            "bad host.io/x",
            "/x",
            "x/",
            "ghcr.io/",
            "a/../b",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn display_parses_back_to_the_same(
            domain in proptest::option::of("(localhost|[a-z0-9]{1,8}\\.[a-z]{2,3})(:[0-9]{1,5})?"),
            path in "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,2}",
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"),
            digest in proptest::option::of("[0-9a-f]{64}"),
        ) {
            let mut text = domain.map(|d| format!("{d}/")).unwrap_or_default() + &path;
            if let Some(tag) = tag {
                text = format!("{text}:{tag}");
            }
            if let Some(hex) = digest {
                text = format!("{text}@sha256:{hex}");
            }
            let image: ImageRef = text.parse().unwrap();
            prop_assert_eq!(image.to_string(), text.clone());
            prop_assert_eq!(&image.to_string().parse::<ImageRef>().unwrap(), &image);
            // The canonical form is a fixed point: it names the same image.
            let canonical: ImageRef = image.canonical().parse().unwrap();
            prop_assert_eq!(canonical.canonical(), image.canonical());
            prop_assert_eq!(canonical.registry(), image.registry());
            prop_assert_eq!(canonical.repository(), image.repository());
        }

        #[test]
        fn hostile_input_never_panics(s in "\\PC{0,80}") {
            if let Ok(image) = s.parse::<ImageRef>() {
                prop_assert_eq!(image.to_string().parse::<ImageRef>().unwrap(), image.clone());
                prop_assert!(image.repository().components().all(|c| c != ".." && !c.is_empty()));
            }
        }

        #[test]
        fn hostile_bytes_near_the_grammar_never_panic(s in "[a-zA-Z0-9./:@_-]{0,60}") {
            if let Ok(image) = s.parse::<ImageRef>() {
                prop_assert_eq!(image.to_string(), s);
                let canonical: ImageRef = image.canonical().parse().unwrap();
                prop_assert_eq!(canonical.repository(), image.repository());
            }
        }
    }
}
