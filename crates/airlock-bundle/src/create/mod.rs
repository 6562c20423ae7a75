//! `airlock bundle create`: fetch what a [`spec::Spec`] names through the gateway
//! configuration's proxies' upstreams (their URLs, credentials, CA files, token auth and the
//! site's outbound proxy) and write it into a bundle as it streams in.
//!
//! Images come from the OCI proxy whose `host` (or upstream host) is the image's registry;
//! files from the raw proxy whose upstream URL is a prefix of the file's URL, at the path
//! that proxy would serve them under. Every manifest is checked against the digest that
//! names it; every blob and file is hashed while it is written (see [`crate::writer`]).
//! An image whose entry says `verify` must first pass its cosign signature check
//! (`cosign.rs`), and its signature image is carried with it.

mod cosign;
pub mod inventory;
pub mod spec;
mod upstream;
pub mod warm;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::SystemTime;

use airlock_config::{Config, Format, ProxyConfig};
use airlock_types::image::canonical_registry;
use airlock_types::{Digest, media};
use serde_json::Value;

use crate::error::BundleError;
use crate::export::{ExportError, Store};
use crate::index::{BundleIndex, Entry, Kind};
use crate::sign::SecretKey;
use crate::writer::{BundleWriter, Written};
use spec::{FileSpec, ImageSpec, Spec};
use upstream::Clients;

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    Bundle(#[from] BundleError),
    #[error("no proxy in the configuration serves {what}: {hint}")]
    NoProxy { what: String, hint: &'static str },
    #[error("{what}: {message}")]
    Upstream { what: String, message: String },
    #[error("{what}: the manifest is not usable: {message}")]
    BadManifest { what: String, message: String },
    #[error("{what}: refused by its cosign verification: {message}")]
    Unverified { what: String, message: String },
    #[error(
        "the spec's python, rpms, charts and k3s sections are carried from a gateway warmed with them (`warm`), and none was given"
    )]
    NotWarmed,
    #[error("{0}")]
    Export(#[from] ExportError),
}

/// The media type a file expected at the target is listed with (its bytes are not here to
/// say otherwise; the target's own record keeps the type it was stored with).
const OCTETS: &str = "application/octet-stream";

/// What to make.
pub struct Request<'a> {
    pub spec: &'a Spec,
    pub config: &'a Config,
    pub out: &'a Path,
    pub split: Option<u64>,
    pub key: Option<&'a SecretKey>,
    /// What the target already holds (`--since`): listed in the index, not carried.
    pub since: &'a Since,
    /// Gateway stores whose contents to carry (`--from-gateway`), each with the proxies
    /// to take (every proxy when empty).
    pub stores: &'a [(&'a Store, Vec<String>)],
    /// The store of a gateway [`warm`]ed with the spec's package sections, and the proxies
    /// the warming went through; required when the spec has such sections.
    pub warmed: Option<(&'a Store, &'a [String])>,
}

/// Digests the target holds, with their sizes: an index from the last bundle or from the
/// target gateway's store (`airlock bundle index`).
#[derive(Debug, Default)]
pub struct Since(HashMap<Digest, u64>);

impl Since {
    pub fn from_index(index: &BundleIndex) -> Self {
        Self(
            index
                .digests()
                .into_iter()
                .map(|(d, size)| (d.clone(), size))
                .collect(),
        )
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.0.contains_key(digest)
    }

    pub fn size(&self, digest: &Digest) -> Option<u64> {
        self.0.get(digest).copied()
    }

    pub fn digests(&self) -> HashSet<Digest> {
        self.0.keys().cloned().collect()
    }
}

/// Carries `entry` with `bytes`, or records it as expected when the target holds it.
fn put(
    writer: &mut BundleWriter,
    since: &Since,
    entry: Entry,
    bytes: &[u8],
) -> Result<(), CreateError> {
    if since.contains(&entry.digest) {
        writer.expect(entry)?;
    } else {
        writer.carry_bytes(entry, bytes)?;
    }
    Ok(())
}

/// Makes the bundle; `handle` runs the upstream requests (call from outside the runtime).
pub fn create(
    handle: &tokio::runtime::Handle,
    request: &Request<'_>,
) -> Result<Written, CreateError> {
    create_reporting(handle, request, crate::progress::silent())
}

/// [`create`], reporting the blob bytes written to `progress`.
pub fn create_reporting(
    handle: &tokio::runtime::Handle,
    request: &Request<'_>,
    progress: std::sync::Arc<dyn crate::Progress>,
) -> Result<Written, CreateError> {
    if request.spec.needs_warming() && request.warmed.is_none() {
        return Err(CreateError::NotWarmed);
    }
    let clients = Clients::new(handle, request.config)?;
    let mut writer = BundleWriter::create(request.out, request.split, SystemTime::now())?;
    writer.set_progress(progress);
    let since = request.since;
    for image in &request.spec.images {
        carry_image(&clients, &mut writer, since, image)?;
    }
    for file in &request.spec.files {
        carry_file(&clients, &mut writer, since, file)?;
    }
    let digests = since.digests();
    let warmed = request.warmed.filter(|(_, proxies)| !proxies.is_empty());
    let stores = request
        .stores
        .iter()
        .map(|(store, proxies)| (*store, proxies.as_slice()));
    for (store, proxies) in warmed.into_iter().chain(stores) {
        let held = store.held(handle, request.config, proxies)?;
        for left_out in &held.left_out {
            tracing::warn!(%left_out, "not in the bundle: the store does not hold it whole");
        }
        store.write(&mut writer, held.entries, &digests)?;
    }
    Ok(writer.finish(request.key)?)
}

/// The OCI proxy for a registry: by its `host`, else by its upstream's host.
fn registry_proxy<'a>(config: &'a Config, registry: &str) -> Option<&'a ProxyConfig> {
    let oci = || config.proxies.iter().filter(|p| p.format == Format::Oci);
    oci()
        .find(|p| p.host.as_deref().map(canonical_registry).as_deref() == Some(registry))
        .or_else(|| {
            oci().find(|p| {
                let host = p.upstream.host_str().unwrap_or_default();
                let authority = match p.upstream.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_owned(),
                };
                canonical_registry(&authority) == registry
            })
        })
}

fn carry_image(
    clients: &Clients<'_>,
    writer: &mut BundleWriter,
    since: &Since,
    image: &ImageSpec,
) -> Result<(), CreateError> {
    let reference = &image.reference;
    let what = reference.canonical();
    let proxy = registry_proxy(clients.config(), reference.registry()).ok_or_else(|| CreateError::NoProxy {
        what: format!("registry {} (for {what})", reference.registry()),
        hint: "add an OCI [[proxy]] whose `host` is that registry, or pass the --config that has one",
    })?;
    let repository = format!("{}/{}", reference.registry(), reference.repository());
    tracing::info!(image = %what, proxy = %proxy.name, "fetching");
    let repo = reference.repository().as_str();
    let name = reference.reference().to_string();
    let (bytes, media_type) = clients.manifest(proxy, repo, &name, &what)?;
    let digest = Digest::of(&bytes);
    if let Some(expected) = reference.digest().filter(|d| **d != digest) {
        return Err(CreateError::BadManifest {
            what,
            message: format!("its bytes hash to {digest}, not {expected}"),
        });
    }
    let signature = image
        .verify
        .as_ref()
        .map(|v| {
            cosign::verify(
                clients,
                proxy,
                (&repository, repo),
                &what,
                &digest,
                &v.cosign_key,
            )
        })
        .transpose()?;
    let root = Entry::oci(
        Kind::Image,
        &proxy.name,
        &what,
        digest,
        bytes.len() as u64,
        &media_type,
    );
    put(writer, since, root, &bytes)?;
    let document: Value = serde_json::from_slice(&bytes).map_err(|e| CreateError::BadManifest {
        what: what.clone(),
        message: e.to_string(),
    })?;
    if media::is_index(&media_type) {
        carry_platforms(
            clients,
            (writer, since),
            proxy,
            (&repository, repo),
            image,
            &document,
        )?;
    } else {
        carry_blobs(
            clients,
            (writer, since),
            proxy,
            (&repository, repo),
            (&document, &HashMap::new()),
            &what,
        )?;
    }
    if let Some(signature) = &signature {
        cosign::carry(
            clients,
            (writer, since),
            proxy,
            (&repository, repo),
            signature,
        )?;
    }
    Ok(())
}

/// The child manifests of an index (those of the entry's platforms) and their blobs.
fn carry_platforms(
    clients: &Clients<'_>,
    (writer, since): (&mut BundleWriter, &Since),
    proxy: &ProxyConfig,
    (repository, repo): (&str, &str),
    image: &ImageSpec,
    document: &Value,
) -> Result<(), CreateError> {
    let what = image.reference.canonical();
    let children = document["manifests"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut carried = 0;
    for child in &children {
        let descriptor = descriptor(child, &what)?;
        let platform = format!(
            "{}/{}",
            child["platform"]["os"].as_str().unwrap_or_default(),
            child["platform"]["architecture"]
                .as_str()
                .unwrap_or_default()
        );
        if !image.platforms.is_empty() && !image.platforms.contains(&platform) {
            continue;
        }
        let child_what = format!("{repository}@{} ({platform})", descriptor.digest);
        let (bytes, _) =
            clients.manifest(proxy, repo, &descriptor.digest.to_string(), &child_what)?;
        if Digest::of(&bytes) != descriptor.digest || bytes.len() as u64 != descriptor.size {
            return Err(CreateError::BadManifest {
                what: child_what,
                message: format!(
                    "the upstream sent bytes that hash to {}, {} bytes",
                    Digest::of(&bytes),
                    bytes.len()
                ),
            });
        }
        let entry = Entry::oci(
            Kind::Manifest,
            &proxy.name,
            &format!("{repository}@{}", descriptor.digest),
            descriptor.digest,
            descriptor.size,
            &descriptor.media_type,
        );
        put(writer, since, entry, &bytes)?;
        let document: Value =
            serde_json::from_slice(&bytes).map_err(|e| CreateError::BadManifest {
                what: child_what.clone(),
                message: e.to_string(),
            })?;
        carry_blobs(
            clients,
            (writer, since),
            proxy,
            (repository, repo),
            (&document, &HashMap::new()),
            &child_what,
        )?;
        carried += 1;
    }
    if carried == 0 {
        return Err(CreateError::BadManifest {
            what,
            message: format!("it has no manifest for the platforms {:?}", image.platforms),
        });
    }
    Ok(())
}

struct Descriptor {
    media_type: String,
    digest: Digest,
    size: u64,
}

fn descriptor(value: &Value, what: &str) -> Result<Descriptor, CreateError> {
    let bad = |message: &str| CreateError::BadManifest {
        what: what.to_owned(),
        message: message.to_owned(),
    };
    Ok(Descriptor {
        media_type: value["mediaType"]
            .as_str()
            .unwrap_or("application/octet-stream")
            .to_owned(),
        digest: value["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| bad("a descriptor has no sha256 digest"))?,
        size: value["size"]
            .as_u64()
            .ok_or_else(|| bad("a descriptor has no size"))?,
    })
}

/// The config and layers of `manifest`; blobs in `fetched` (already read and checked
/// against their digest) are carried from there instead of fetched again.
fn carry_blobs(
    clients: &Clients<'_>,
    (writer, since): (&mut BundleWriter, &Since),
    proxy: &ProxyConfig,
    (repository, repo): (&str, &str),
    (manifest, fetched): (&Value, &HashMap<Digest, Vec<u8>>),
    what: &str,
) -> Result<(), CreateError> {
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let blobs = std::iter::once(&manifest["config"]).chain(layers.iter());
    for value in blobs {
        let descriptor = descriptor(value, what)?;
        let entry = Entry::oci(
            Kind::Blob,
            &proxy.name,
            repository,
            descriptor.digest.clone(),
            descriptor.size,
            &descriptor.media_type,
        );
        if since.contains(&descriptor.digest) {
            writer.expect(entry)?;
            continue;
        }
        if writer.holds(&descriptor.digest) {
            writer.carry(entry, std::io::empty())?;
            continue;
        }
        if let Some(bytes) = fetched.get(&descriptor.digest) {
            writer.carry_bytes(entry, bytes)?;
            continue;
        }
        let body = clients.blob(proxy, repo, &descriptor.digest, what)?;
        writer.carry(entry, body)?;
    }
    Ok(())
}

/// The raw proxy whose upstream URL is a prefix of `url`, and the path under it.
fn file_proxy<'a>(config: &'a Config, url: &url::Url) -> Option<(&'a ProxyConfig, String)> {
    config
        .proxies
        .iter()
        .filter(|p| p.format == Format::Raw)
        .find_map(|p| {
            let mut base = p.upstream.as_str().to_owned();
            if !base.ends_with('/') {
                base.push('/');
            }
            let path = url.as_str().strip_prefix(&base)?;
            Some((p, path.to_owned()))
        })
}

fn carry_file(
    clients: &Clients<'_>,
    writer: &mut BundleWriter,
    since: &Since,
    file: &FileSpec,
) -> Result<(), CreateError> {
    let url = &file.url;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CreateError::Upstream {
            what: url.to_string(),
            message: "a file URL with a query or fragment cannot be served by a raw proxy"
                .to_owned(),
        });
    }
    let (proxy, path) = file_proxy(clients.config(), url).ok_or_else(|| CreateError::NoProxy {
        what: url.to_string(),
        hint: "add a raw [[proxy]] whose `upstream` is a prefix of the URL",
    })?;
    if let Some(size) = since.size(&file.sha256) {
        let entry = Entry::file(&proxy.name, &path, file.sha256.clone(), size, OCTETS);
        writer.expect(entry)?;
        return Ok(());
    }
    tracing::info!(%url, proxy = %proxy.name, "fetching");
    let (size, media_type, body) = clients.file(proxy, &path, url.as_str())?;
    let entry = Entry::file(&proxy.name, &path, file.sha256.clone(), size, &media_type);
    writer.carry(entry, body)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_sections_need_a_warmed_store() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("site.bundle");
        let spec = Spec::parse(
            "charts:\n  - {proxy: c, name: x, version: 1.0.0}\n",
            Path::new("spec.yaml"),
        )
        .unwrap();
        let config = Config::embedded_default();
        let request = Request {
            spec: &spec,
            config: &config,
            out: &out,
            split: None,
            key: None,
            since: &Since::default(),
            stores: &[],
            warmed: None,
        };
        let error = create(runtime.handle(), &request).unwrap_err();
        assert!(matches!(error, CreateError::NotWarmed), "{error}");
        assert!(!out.exists());
    }

    #[test]
    fn registries_and_files_map_to_their_proxies() {
        let config = Config::from_toml_str(
            r#"
[[proxy]]
name = "hub"
format = "oci"
upstream = "https://registry-1.docker.io"
[[proxy]]
name = "local"
format = "oci"
upstream = "http://127.0.0.1:5000"
[[proxy]]
name = "gh"
format = "raw"
upstream = "https://github.com/k3s-io"
"#,
            "test",
        )
        .unwrap();
        assert_eq!(registry_proxy(&config, "docker.io").unwrap().name, "hub");
        assert_eq!(
            registry_proxy(&config, "127.0.0.1:5000").unwrap().name,
            "local"
        );
        assert!(registry_proxy(&config, "ghcr.io").is_none());
        let url = url::Url::parse("https://github.com/k3s-io/k3s/releases/download/v1%2Bk3s1/k3s")
            .unwrap();
        let (proxy, path) = file_proxy(&config, &url).unwrap();
        assert_eq!(
            (proxy.name.as_str(), path.as_str()),
            ("gh", "k3s/releases/download/v1%2Bk3s1/k3s")
        );
        let elsewhere = url::Url::parse("https://github.com/k3s-io-evil/x").unwrap();
        assert!(file_proxy(&config, &elsewhere).is_none());
    }

    #[test]
    fn the_reference_names_the_entry() {
        let reference: airlock_types::ImageRef = "docker.io/postgres:15".parse().unwrap();
        assert_eq!(reference.canonical(), "docker.io/library/postgres:15");
    }
}
