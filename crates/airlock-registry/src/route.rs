//! Which configured upstream a `/v2/…` request goes to, and under which repository name.
//!
//! Three ways in, all to configured proxies only:
//! - Harbor project paths: `/v2/<proxy>/<repo>/…` (K3s `registries.yaml` rewrites);
//! - containerd mirrors: `/v2/<repo>/…?ns=<registry host>` matched to a proxy's `host`;
//! - the default proxy for unprefixed paths (Docker's `registry-mirrors`).
//!
//! A name that matches none of them is `NAME_UNKNOWN`; nothing is ever fetched from a host
//! the configuration does not name.

use std::collections::HashMap;

use airlock_types::image::{DOCKER_HUB, canonical_registry, docker_hub_path};
use airlock_types::{Digest, Reference, RepoName};

use crate::error::RegistryError;

/// What the path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Manifest(Reference),
    Blob(Digest),
    TagList,
    /// `blobs/uploads/` (a new upload) or `blobs/uploads/<id>` (one under way): hosted
    /// projects only.
    Upload(Option<String>),
    /// `referrers/<digest>`: the manifests whose subject is the digest (OCI 1.1).
    Referrers(Digest),
}

/// A parsed `/v2/<name>/…` path, before the proxy is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest<'a> {
    pub name: &'a str,
    pub target: Target,
}

/// A request resolved to one proxy and the repository name its upstream knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub proxy: String,
    pub repo: RepoName,
    /// The name as the client sent it (for `tags/list` answers and pagination links).
    pub client_name: String,
}

/// Splits `/v2/<name>/{manifests/<ref>|blobs/<digest>|tags/list|blobs/uploads/[<id>]}`;
/// `None` for other paths.
pub fn parse_path(path: &str) -> Result<Option<RawRequest<'_>>, RegistryError> {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Ok(None);
    };
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Some(RawRequest {
            name,
            target: Target::TagList,
        }));
    }
    let upload = rest
        .strip_suffix("/blobs/uploads")
        .map(|name| (name, ""))
        .or_else(|| rest.rsplit_once("/blobs/uploads/"));
    if let Some((name, id)) = upload.filter(|(_, id)| !id.contains('/')) {
        return Ok(Some(RawRequest {
            name,
            target: Target::Upload((!id.is_empty()).then(|| id.to_owned())),
        }));
    }
    let Some((head, last)) = rest.rsplit_once('/') else {
        return Ok(None);
    };
    let Some((name, kind)) = head.rsplit_once('/') else {
        return Ok(None);
    };
    let target = match kind {
        "manifests" => Target::Manifest(
            last.parse()
                .map_err(|_| RegistryError::ManifestInvalid(last.to_owned()))?,
        ),
        "blobs" => Target::Blob(
            last.parse()
                .map_err(|_| RegistryError::DigestInvalid(last.to_owned()))?,
        ),
        "referrers" => Target::Referrers(
            last.parse()
                .map_err(|_| RegistryError::DigestInvalid(last.to_owned()))?,
        ),
        _ => return Ok(None),
    };
    Ok(Some(RawRequest { name, target }))
}

/// One OCI proxy as routing sees it.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    pub name: String,
    /// Docker Hub: single-component names get `library/`.
    pub docker_hub: bool,
}

/// The routing table built from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    by_name: HashMap<String, RouteEntry>,
    by_host: HashMap<String, String>,
    default: Option<String>,
}

impl Routes {
    /// Adds an OCI proxy with its public host (if any) and upstream host.
    pub fn add(&mut self, name: &str, host: Option<&str>, upstream_host: &str) {
        let docker_hub = host.is_some_and(|h| canonical_registry(h) == DOCKER_HUB)
            || canonical_registry(upstream_host) == DOCKER_HUB;
        self.by_name.insert(
            name.to_owned(),
            RouteEntry {
                name: name.to_owned(),
                docker_hub,
            },
        );
        if let Some(host) = host {
            self.by_host
                .insert(canonical_registry(host), name.to_owned());
        }
    }

    /// Whether a proxy claims registry `host` (what containerd sends as `?ns=`).
    pub fn claims_host(&self, host: &str) -> bool {
        self.by_host.contains_key(&canonical_registry(host))
    }

    pub fn set_default(&mut self, name: Option<&str>) {
        self.default = name.map(str::to_owned);
    }

    /// Resolves the client's name (and `?ns=`) to a proxy and upstream repository.
    pub fn resolve(&self, name: &str, ns: Option<&str>) -> Result<Resolved, RegistryError> {
        let client_name = name.to_owned();
        let entry_and_repo = if let Some(ns) = ns {
            let proxy = self.by_host.get(&canonical_registry(ns)).ok_or_else(|| {
                RegistryError::NameUnknown {
                    name: name.to_owned(),
                    why: format!("no proxy is configured for registry {ns:?}"),
                }
            })?;
            (&self.by_name[proxy], name)
        } else if let Some(entry) = name
            .split_once('/')
            .and_then(|(first, _)| self.by_name.get(first))
        {
            (entry, &name[entry.name.len() + 1..])
        } else if let Some(default) = &self.default {
            (&self.by_name[default], name)
        } else {
            return Err(RegistryError::NameUnknown {
                name: name.to_owned(),
                why: "the first path component names no proxy project and no default proxy is set"
                    .into(),
            });
        };
        let (entry, repo) = entry_and_repo;
        let repo = if entry.docker_hub {
            docker_hub_path(repo)
        } else {
            repo.to_owned()
        };
        let repo: RepoName = repo
            .parse()
            .map_err(|_| RegistryError::NameInvalid(name.to_owned()))?;
        Ok(Resolved {
            proxy: entry.name.clone(),
            repo,
            client_name,
        })
    }
}

#[cfg(test)]
mod proptests {
    //! Generated and hostile `/v2/` paths: parsing never panics, what it accepts reads
    //! back to what was written, and a resolved repository is always a valid name under a
    //! configured proxy, never a path that climbs out of one.

    use proptest::prelude::*;

    use super::*;

    fn config(default: u32) -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default);
        ProptestConfig::with_cases(cases)
    }

    fn routes() -> Routes {
        let mut r = Routes::default();
        r.add("hub", Some("docker.io"), "registry-1.docker.io");
        r.add("ghcr", Some("ghcr.io"), "ghcr.io");
        r.set_default(Some("hub"));
        r
    }

    fn name() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-z0-9]+([._-][a-z0-9]+)?", 1..4).prop_map(|c| c.join("/"))
    }

    fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,60}",
            "[a-z./%_:@-]{0,40}",
            name().prop_map(|n| format!("{n}/../../etc")),
            name().prop_map(|n| format!("ghcr/../{n}")),
            name().prop_map(|n| format!("{n}//x")),
            name().prop_map(|n| format!("%2e%2e/{n}")),
        ]
    }

    proptest! {
        #![proptest_config(config(256))]

        #[test]
        fn written_paths_parse_back(name in name(), tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", hex in "[0-9a-f]{64}") {
            let path = format!("/v2/{name}/manifests/{tag}");
            let p = parse_path(&path).unwrap().unwrap();
            prop_assert_eq!((p.name, p.target), (name.as_str(), Target::Manifest(Reference::Tag(tag))));
            let path = format!("/v2/{name}/blobs/sha256:{hex}");
            let p = parse_path(&path).unwrap().unwrap();
            prop_assert_eq!(p.target, Target::Blob(Digest::sha256_hex(&hex).unwrap()));
            let path = format!("/v2/{name}/tags/list");
            let p = parse_path(&path).unwrap().unwrap();
            prop_assert_eq!((p.name, p.target), (name.as_str(), Target::TagList));
        }

        #[test]
        fn hostile_paths_never_panic_or_escape(raw in hostile(), ns in proptest::option::of(prop_oneof!["docker.io", "ghcr.io", "\\PC{0,20}"])) {
            for path in [format!("/v2/{raw}/manifests/latest"), format!("/v2/{raw}"), format!("/v2/x/blobs/{raw}")] {
                let Ok(Some(request)) = parse_path(&path) else { continue };
                let Ok(resolved) = routes().resolve(request.name, ns.as_deref()) else { continue };
                let repo = resolved.repo.as_str();
                prop_assert!(["hub", "ghcr"].contains(&resolved.proxy.as_str()));
                prop_assert!(!repo.split('/').any(|c| c.is_empty() || c == "." || c == ".."), "{repo}");
                prop_assert!(!repo.contains('%') && !repo.contains(':') && !repo.starts_with('/'), "{repo}");
                let reparsed = repo.parse::<RepoName>().ok();
                prop_assert_eq!(reparsed.as_ref(), Some(&resolved.repo));
            }
        }

        #[test]
        fn project_paths_resolve_below_their_proxy(name in name()) {
            let r = routes().resolve(&format!("ghcr/{name}"), None).unwrap();
            prop_assert_eq!((r.proxy.as_str(), r.repo.as_str()), ("ghcr", name.as_str()));
            let r = routes().resolve(&name, Some("ghcr.io")).unwrap();
            prop_assert_eq!((r.proxy.as_str(), r.repo.as_str()), ("ghcr", name.as_str()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        let mut r = Routes::default();
        r.add("dockerhub-proxy", Some("docker.io"), "registry-1.docker.io");
        r.add("ghcr-proxy", Some("ghcr.io"), "ghcr.io");
        r
    }

    #[test]
    fn parses_paths() {
        let p = parse_path("/v2/dockerhub-proxy/library/postgres/manifests/15")
            .unwrap()
            .unwrap();
        assert_eq!(p.name, "dockerhub-proxy/library/postgres");
        assert_eq!(p.target, Target::Manifest(Reference::Tag("15".into())));
        let p = parse_path("/v2/a/b/tags/list").unwrap().unwrap();
        assert_eq!((p.name, p.target), ("a/b", Target::TagList));
        assert!(parse_path("/v2/").unwrap().is_none());
        assert!(parse_path("/v2/x/uploads/abc").unwrap().is_none());
        let p = parse_path("/v2/scout/app/blobs/uploads/").unwrap().unwrap();
        assert_eq!((p.name, p.target), ("scout/app", Target::Upload(None)));
        let p = parse_path("/v2/scout/app/blobs/uploads/abc")
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.name, p.target),
            ("scout/app", Target::Upload(Some("abc".into())))
        );
        assert!(matches!(
            parse_path("/v2/a/blobs/sha256:nothex"),
            Err(RegistryError::DigestInvalid(_))
        ));
        assert!(matches!(
            parse_path("/v2/a/manifests/-bad"),
            Err(RegistryError::ManifestInvalid(_))
        ));
    }

    #[test]
    fn harbor_project_paths() {
        let r = routes()
            .resolve("dockerhub-proxy/library/postgres", None)
            .unwrap();
        assert_eq!(
            (r.proxy.as_str(), r.repo.as_str()),
            ("dockerhub-proxy", "library/postgres")
        );
        let r = routes().resolve("dockerhub-proxy/nginx", None).unwrap();
        assert_eq!(r.repo.as_str(), "library/nginx");
        let r = routes().resolve("ghcr-proxy/org/app", None).unwrap();
        assert_eq!(
            (r.proxy.as_str(), r.repo.as_str()),
            ("ghcr-proxy", "org/app")
        );
        let r = routes().resolve("ghcr-proxy/app", None).unwrap();
        assert_eq!(r.repo.as_str(), "app", "only Docker Hub gets library/");
    }

    #[test]
    fn containerd_ns() {
        for ns in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "Docker.IO",
        ] {
            let r = routes().resolve("nginx", Some(ns)).unwrap();
            assert_eq!(
                (r.proxy.as_str(), r.repo.as_str()),
                ("dockerhub-proxy", "library/nginx"),
                "{ns}"
            );
        }
        let r = routes().resolve("org/app", Some("ghcr.io")).unwrap();
        assert_eq!(r.proxy, "ghcr-proxy");
        assert!(matches!(
            routes().resolve("x/y", Some("evil.example")),
            Err(RegistryError::NameUnknown { .. })
        ));
    }

    #[test]
    fn default_proxy_and_unknown_names() {
        assert!(matches!(
            routes().resolve("library/nginx", None),
            Err(RegistryError::NameUnknown { .. })
        ));
        assert!(matches!(
            routes().resolve("nginx", None),
            Err(RegistryError::NameUnknown { .. })
        ));
        let mut r = routes();
        r.set_default(Some("dockerhub-proxy"));
        assert_eq!(
            r.resolve("nginx", None).unwrap().repo.as_str(),
            "library/nginx"
        );
        assert_eq!(
            r.resolve("bitnami/redis", None).unwrap().repo.as_str(),
            "bitnami/redis"
        );
    }

    #[test]
    fn path_tricks_are_invalid_names() {
        for name in [
            "dockerhub-proxy/../etc/passwd",
            "dockerhub-proxy/library/../../x",
            "dockerhub-proxy/",
            "dockerhub-proxy//x",
            "dockerhub-proxy/a%2f..%2fb",
            "dockerhub-proxy/UPPER",
        ] {
            assert!(
                matches!(
                    routes().resolve(name, None),
                    Err(RegistryError::NameInvalid(_))
                ),
                "{name}"
            );
        }
    }
}
