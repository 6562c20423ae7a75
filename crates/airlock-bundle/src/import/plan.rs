//! Where each entry of a bundle goes in the importing gateway: the OCI proxy that serves
//! its registry (by `host`, as containerd's `?ns=` is routed) and the repository name that
//! proxy keeps, or the package proxy named for a file. Resolved for every entry before
//! anything is written, so a bundle the configuration cannot place is refused whole.

use airlock_config::{Config, Format};
use airlock_registry::route::Routes;
use airlock_types::ImageRef;

use super::ImportError;
use crate::index::{BundleIndex, Entry, Kind};

/// Where one entry goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// An image, manifest or blob: the proxy and repository; a tag for a tagged image.
    Oci {
        proxy: String,
        repo: String,
        tag: Option<String>,
    },
    /// A package proxy's file at `path`.
    File { proxy: String, path: String },
    /// A package file the store keeps by digest (its blob is all there is to write).
    Package,
}

/// The routing table the gateway's registry builds from the same configuration.
fn routes(config: &Config) -> Routes {
    let mut routes = Routes::default();
    for proxy in config.proxies.iter().filter(|p| p.format == Format::Oci) {
        routes.add(
            &proxy.name,
            proxy.host.as_deref(),
            proxy.upstream.host_str().unwrap_or_default(),
        );
    }
    routes
}

/// Every entry's target, in index order.
pub(super) fn plan(index: &BundleIndex, config: &Config) -> Result<Vec<Target>, ImportError> {
    let routes = routes(config);
    index
        .entries
        .iter()
        .map(|entry| target(&routes, config, entry))
        .collect()
}

fn target(routes: &Routes, config: &Config, entry: &Entry) -> Result<Target, ImportError> {
    if matches!(entry.kind, Kind::File | Kind::Package) {
        let raw = entry.path.as_deref().unwrap_or_default();
        let path = file_key(raw)?;
        return match config.proxies.iter().find(|p| p.name == entry.proxy) {
            Some(proxy) if proxy.format != Format::Oci && entry.kind == Kind::Package => {
                Ok(Target::Package)
            }
            Some(proxy) if proxy.format != Format::Oci => Ok(Target::File {
                proxy: proxy.name.clone(),
                path,
            }),
            Some(_) => Err(ImportError::NotPackageProxy {
                proxy: entry.proxy.clone(),
                path,
            }),
            None => Err(ImportError::UnknownProxy {
                proxy: entry.proxy.clone(),
                path,
            }),
        };
    }
    let subject = entry.subject();
    let image: ImageRef = subject.parse().map_err(|e| ImportError::BadReference {
        reference: subject.to_owned(),
        reason: format!("{e}"),
    })?;
    let registry = image.registry();
    let resolved = routes
        .resolve(image.repository().as_str(), Some(registry))
        .map_err(|_| ImportError::NoRegistryProxy {
            registry: registry.to_owned(),
            reference: subject.to_owned(),
        })?;
    Ok(Target::Oci {
        proxy: resolved.proxy,
        repo: resolved.repo.to_string(),
        tag: (entry.kind == Kind::Image)
            .then(|| image.tag().map(str::to_owned))
            .flatten(),
    })
}

/// The key a package proxy keeps a file under: the canonical form it keys a client's
/// request by (escapes decoded once, so `…/v1.31.4%2Bk3s1/k3s` is found as
/// `…/v1.31.4+k3s1/k3s`), with a document's `#representation` suffix kept as it is.
fn file_key(raw: &str) -> Result<String, ImportError> {
    let bad = |reason: String| ImportError::BadPath {
        path: raw.to_owned(),
        reason,
    };
    let (path, representation) = match raw.split_once('#') {
        Some((path, name)) => (path, Some(name)),
        None => (raw, None),
    };
    let mut key =
        airlock_upstream::target::client_path(path).map_err(|refused| bad(refused.to_string()))?;
    if let Some(name) = representation {
        // `json`, `release`, a Helm chart's `sha256:<hex>`: names the proxies give.
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | ':');
        if name.is_empty() || name.len() > 128 || !name.chars().all(plain) {
            return Err(bad(format!(
                "the representation name {name:?} after `#` is not a short plain name"
            )));
        }
        key.push('#');
        key.push_str(name);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_types::Digest;

    fn config() -> Config {
        Config::from_toml_str(
            r#"
[[proxy]]
name = "hub"
format = "oci"
upstream = "http://127.0.0.1:9"
host = "docker.io"

[[proxy]]
name = "ghcr"
format = "oci"
upstream = "http://127.0.0.1:9"
host = "ghcr.io"

[[proxy]]
name = "k3s-files"
format = "raw"
upstream = "http://127.0.0.1:9/releases"
"#,
            "test",
        )
        .unwrap()
    }

    fn image(reference: &str) -> Entry {
        Entry::oci(
            Kind::Image,
            "elsewhere",
            reference,
            Digest::of(b"m"),
            1,
            "x",
        )
    }

    #[test]
    fn images_go_to_the_proxy_serving_their_registry_whatever_proxy_made_them() {
        let config = config();
        let routes = routes(&config);
        assert_eq!(
            target(&routes, &config, &image("docker.io/library/app:1")).unwrap(),
            Target::Oci {
                proxy: "hub".into(),
                repo: "library/app".into(),
                tag: Some("1".into()),
            }
        );
        let child = Entry::oci(
            Kind::Manifest,
            "ghcr",
            &format!("ghcr.io/org/multi@{}", Digest::of(b"m")),
            Digest::of(b"m"),
            1,
            "x",
        );
        assert_eq!(
            target(&routes, &config, &child).unwrap(),
            Target::Oci {
                proxy: "ghcr".into(),
                repo: "org/multi".into(),
                tag: None,
            }
        );
        let error = target(&routes, &config, &image("quay.io/org/app:1")).unwrap_err();
        assert!(error.to_string().contains("quay.io"), "{error}");
    }

    #[test]
    fn files_go_to_the_package_proxy_they_name() {
        let config = config();
        let routes = routes(&config);
        let file = |proxy: &str| Entry::file(proxy, "v1%2Bk3s1/k3s", Digest::of(b"f"), 1, "x");
        assert_eq!(
            target(&routes, &config, &file("k3s-files")).unwrap(),
            Target::File {
                proxy: "k3s-files".into(),
                path: "v1+k3s1/k3s".into(),
            }
        );
        let unknown = target(&routes, &config, &file("nope")).unwrap_err();
        assert!(unknown.to_string().contains("\"nope\""), "{unknown}");
        let oci = target(&routes, &config, &file("hub")).unwrap_err();
        assert!(matches!(oci, ImportError::NotPackageProxy { .. }), "{oci}");
    }

    #[test]
    fn a_document_keeps_its_representation_and_a_package_file_needs_only_its_blob() {
        let config = config();
        let routes = routes(&config);
        let file = |path: &str| Entry::file("k3s-files", path, Digest::of(b"f"), 1, "x");
        assert_eq!(
            target(&routes, &config, &file("simple/numpy/#json")).unwrap(),
            Target::File {
                proxy: "k3s-files".into(),
                path: "simple/numpy/#json".into(),
            }
        );
        // A Helm chart is kept under the digest its index gives.
        let chart = format!("app-1.0.0.tgz#{}", Digest::of(b"chart"));
        assert_eq!(
            target(&routes, &config, &file(&chart)).unwrap(),
            Target::File {
                proxy: "k3s-files".into(),
                path: chart.clone(),
            }
        );
        for bad in [
            "simple/numpy/#",
            "simple/#a/b",
            "simple/#a#b",
            "x/..%2F#json",
            "x#sha256%3Aab",
            "x#a/b",
        ] {
            let error = target(&routes, &config, &file(bad)).unwrap_err();
            assert!(
                matches!(error, ImportError::BadPath { .. }),
                "{bad}: {error}"
            );
        }
        let package = |proxy: &str| {
            Entry::package_file(Kind::Package, proxy, "a-1.whl", Digest::of(b"p"), 1, "x")
        };
        assert_eq!(
            target(&routes, &config, &package("k3s-files")).unwrap(),
            Target::Package
        );
        let oci = target(&routes, &config, &package("hub")).unwrap_err();
        assert!(matches!(oci, ImportError::NotPackageProxy { .. }), "{oci}");
    }
}
