//! What a gateway's store holds, as bundle entries: `airlock bundle index --data-dir` lists
//! it (the input for `create --since`), `airlock bundle create --from-gateway` carries it.
//!
//! - Images: every tag an OCI proxy holds, named `registry/repository:tag` (the registry is
//!   the proxy's `host`, else its upstream's), with the child manifests and blobs the store
//!   holds. A platform whose manifest or blobs are not all held is left out (a client that
//!   pulled one platform of an index leaves the others behind); an image with nothing
//!   complete is left out whole. Manifests pulled only by digest name no repository here
//!   and are left out.
//! - Package proxies: every file the proxy keeps under a path (index documents in each
//!   representation, raw and pinned files), and the package files it keeps by digest, found
//!   by the digests its documents list (hex `sha256` in `PyPI` pages, conda repodata, Helm
//!   indexes, `repomd.xml`, and in the compressed metadata those name, such as yum's
//!   primary).
//!
//! Every exported entry's bytes are in the store: what is left out is counted in
//! [`Held::left_out`] so a caller can say so.

use std::collections::btree_map::Entry as Slot;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use airlock_config::{Config, Format, ProxyConfig};
use airlock_store::Snapshot;
use airlock_store::{MetaIndex, StoreError, layout};
use airlock_types::image::canonical_registry;
use airlock_types::{Digest, media};
use serde_json::Value;
use tokio::runtime::Handle;

use crate::error::BundleError;
use crate::index::{Entry, Kind};
use crate::writer::BundleWriter;

mod names;

/// Documents larger than this are not searched for the digests they list.
const MAX_DOCUMENT: u64 = 512 * 1024 * 1024;
/// A compressed document decompresses to at most this much.
const MAX_DECOMPRESSED: u64 = 2 * 1024 * 1024 * 1024;
/// Media type of a package file kept by digest (the proxy serves it with its own).
const OCTETS: &str = "application/octet-stream";

/// What the store holds, as entries (in a stable order), and what could not be exported.
#[derive(Debug, Default)]
pub struct Held {
    pub entries: Vec<Entry>,
    /// Tags, platforms or files left out because the store does not hold all their bytes,
    /// and blobs no cached image or index names; each as a short description.
    pub left_out: Vec<String>,
}

/// Why a store could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "{}: the gateway holds its index; stop it first (or export from a copy of its data_dir)",
        .data_dir.display()
    )]
    GatewayRunning { data_dir: std::path::PathBuf },
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: StoreError,
    },
    #[error("no proxy named {0:?} in the configuration")]
    UnknownProxy(String),
    #[error("{0}")]
    Bundle(#[from] BundleError),
}

fn store_error(context: &str) -> impl FnOnce(StoreError) -> ExportError + '_ {
    move |source| ExportError::Store {
        context: context.to_owned(),
        source,
    }
}

/// A gateway's store, opened for reading (the gateway must be stopped: it holds the index).
pub struct Store {
    meta: MetaIndex,
    root: std::path::PathBuf,
}

impl Store {
    pub fn open(data_dir: &Path) -> Result<Self, ExportError> {
        let path = layout::index_path(data_dir);
        if !path.is_file() {
            return Err(ExportError::Store {
                context: format!("{}", data_dir.display()),
                source: StoreError::Io {
                    context: "no airlock index here (is it a gateway's data_dir?)".to_owned(),
                    source: std::io::ErrorKind::NotFound.into(),
                },
            });
        }
        let meta = MetaIndex::open(&path).map_err(|e| match e {
            StoreError::Locked { .. } => ExportError::GatewayRunning {
                data_dir: data_dir.to_owned(),
            },
            e => store_error("opening the gateway's index")(e),
        })?;
        Ok(Self {
            meta,
            root: layout::store_root(data_dir),
        })
    }

    fn blob(&self, digest: &Digest) -> std::io::Result<std::fs::File> {
        std::fs::File::open(layout::blob_path(&self.root, digest))
    }

    fn read(&self, digest: &Digest, max: u64) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        self.blob(digest)
            .ok()?
            .take(max + 1)
            .read_to_end(&mut bytes)
            .ok()?;
        (bytes.len() as u64 <= max).then_some(bytes)
    }

    /// Everything the store holds for `proxies` (every proxy when empty).
    pub fn held(
        &self,
        handle: &Handle,
        config: &Config,
        proxies: &[String],
    ) -> Result<Held, ExportError> {
        for name in proxies {
            if !config.proxies.iter().any(|p| &p.name == name) {
                return Err(ExportError::UnknownProxy(name.clone()));
            }
        }
        let chosen = |p: &&ProxyConfig| proxies.is_empty() || proxies.contains(&p.name);
        let snapshot = handle
            .block_on(self.meta.snapshot())
            .map_err(store_error("reading the gateway's index"))?;
        let mut held = Held::default();
        let oci: HashMap<&str, &ProxyConfig> = config
            .proxies
            .iter()
            .filter(|p| p.format == Format::Oci)
            .filter(chosen)
            .map(|p| (p.name.as_str(), p))
            .collect();
        self.images(&snapshot, &oci, &mut held);

        // Blobs no manifest names and no file row holds: package files kept by digest.
        let mut claimed: HashSet<&Digest> = snapshot.manifests.keys().collect();
        claimed.extend(snapshot.manifests.values().flat_map(|m| m.refs.iter()));
        let mut files = Vec::new();
        for proxy in config.proxies.iter().filter(|p| p.format != Format::Oci) {
            let rows = handle
                .block_on(self.meta.files_under(&proxy.name, ""))
                .map_err(store_error("reading the gateway's index"))?;
            for (path, record) in rows {
                if let Some(digest) = record.digest {
                    files.push((proxy.name.clone(), path, digest, record.content_type));
                }
            }
        }
        claimed.extend(files.iter().map(|(_, _, digest, _)| digest));
        let mut orphans: HashSet<Digest> = snapshot
            .blobs
            .keys()
            .filter(|d| !claimed.contains(d))
            .cloned()
            .collect();
        for proxy in config
            .proxies
            .iter()
            .filter(|p| p.format != Format::Oci)
            .filter(chosen)
        {
            let documents: Vec<&Digest> = files
                .iter()
                .filter(|(p, ..)| p == &proxy.name)
                .map(|(_, _, digest, _)| digest)
                .collect();
            for (proxy_name, path, digest, content_type) in
                files.iter().filter(|(p, ..)| p == &proxy.name)
            {
                match snapshot.blobs.get(digest) {
                    Some(record) => held.entries.push(Entry::package_file(
                        Kind::File,
                        proxy_name,
                        &encode_path(path),
                        digest.clone(),
                        record.size,
                        content_type
                            .as_deref()
                            .filter(|t| !t.is_empty())
                            .unwrap_or(OCTETS),
                    )),
                    None => held
                        .left_out
                        .push(format!("{proxy_name} file {path}: its bytes are not held")),
                }
            }
            let listed = self.listed(&documents, &mut orphans);
            let names = if listed.is_empty() {
                HashMap::new()
            } else {
                self.names(proxy, &files, &listed)
            };
            for digest in listed {
                let size = snapshot.blobs.get(&digest).map_or(0, |r| r.size);
                let name = names.get(&digest).map_or_else(
                    || format!("by-digest/{}", digest.hex()),
                    |name| encode_path(name),
                );
                held.entries.push(Entry::package_file(
                    Kind::Package,
                    &proxy.name,
                    &name,
                    digest,
                    size,
                    OCTETS,
                ));
            }
        }
        if proxies.is_empty() && !orphans.is_empty() {
            held.left_out.push(format!(
                "{} blobs that no cached image or index document names",
                orphans.len()
            ));
        }
        Ok(held)
    }

    /// Names for the package files `proxy`'s documents (among `files`) list, by digest;
    /// a `listed` file named that way is read in turn (a yum primary `repomd.xml` names).
    fn names(
        &self,
        proxy: &ProxyConfig,
        files: &[(String, String, Digest, Option<String>)],
        listed: &[Digest],
    ) -> HashMap<Digest, String> {
        let mut names = HashMap::new();
        let read = |names: &mut HashMap<Digest, String>, key: &str, digest: &Digest| {
            if let Some(bytes) = self.read(digest, MAX_DOCUMENT) {
                names::names_in(proxy.format, key, &bytes, MAX_DECOMPRESSED, names);
            }
        };
        for (_, key, digest, _) in files.iter().filter(|(p, ..)| p == &proxy.name) {
            read(&mut names, key, digest);
        }
        // One more round over what the documents named: each file is read once.
        let named: Vec<(Digest, String)> = listed
            .iter()
            .filter_map(|d| names.get(d).map(|name| (d.clone(), name.clone())))
            .collect();
        for (digest, name) in named {
            read(&mut names, &name, &digest);
        }
        names
    }

    /// The orphans the documents list, taken out of `orphans`; documents found this way
    /// (compressed metadata) are searched in turn.
    fn listed(&self, documents: &[&Digest], orphans: &mut HashSet<Digest>) -> Vec<Digest> {
        let mut found = Vec::new();
        let mut queue: Vec<Digest> = documents.iter().map(|d| (*d).clone()).collect();
        let mut searched = BTreeSet::new();
        while let Some(document) = queue.pop() {
            if !searched.insert(document.clone()) {
                continue;
            }
            let Some(bytes) = self.read(&document, MAX_DOCUMENT) else {
                continue;
            };
            for digest in digests_in(&bytes, MAX_DECOMPRESSED) {
                if orphans.remove(&digest) {
                    queue.push(digest.clone());
                    found.push(digest);
                }
            }
        }
        found.sort();
        found
    }

    fn images(&self, snapshot: &Snapshot, oci: &HashMap<&str, &ProxyConfig>, held: &mut Held) {
        // One tag per (proxy, repository, tag): the form for every client when there is one.
        let mut tags: BTreeMap<(&str, &str, &str), (&str, &Digest)> = BTreeMap::new();
        for (key, digest) in &snapshot.tags {
            if !oci.contains_key(key.proxy.as_str()) {
                continue;
            }
            let slot = (key.proxy.as_str(), key.repo.as_str(), key.tag.as_str());
            match tags.entry(slot) {
                Slot::Vacant(vacant) => {
                    vacant.insert((key.variant.as_str(), digest));
                }
                Slot::Occupied(mut taken) if key.variant.is_empty() => {
                    taken.insert((key.variant.as_str(), digest));
                }
                Slot::Occupied(_) => {}
            }
        }
        for ((proxy, repo, tag), (_, digest)) in tags {
            let registry = registry_of(oci[proxy]);
            let repository = format!("{registry}/{repo}");
            let reference = format!("{repository}:{tag}");
            match self.image(snapshot, proxy, &repository, digest) {
                Ok(mut entries) => {
                    let record = &snapshot.manifests[digest];
                    entries.insert(
                        0,
                        Entry::oci(
                            Kind::Image,
                            proxy,
                            &reference,
                            digest.clone(),
                            record.size,
                            &record.media_type,
                        ),
                    );
                    held.entries.extend(entries);
                }
                Err(why) => held.left_out.push(format!("{reference}: {why}")),
            }
        }
    }

    /// The child manifests and blobs of the image `root`, without the root's own entry.
    fn image(
        &self,
        snapshot: &Snapshot,
        proxy: &str,
        repository: &str,
        root: &Digest,
    ) -> Result<Vec<Entry>, String> {
        let record = snapshot
            .manifests
            .get(root)
            .filter(|_| snapshot.blobs.contains_key(root))
            .ok_or("its manifest is not held")?;
        let document = self.manifest(root)?;
        if !media::is_index(&record.media_type) {
            return Self::blobs(snapshot, proxy, repository, &document);
        }
        let mut entries = Vec::new();
        let children = document["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for child in &children {
            let Some((digest, _, media_type)) = descriptor(child) else {
                return Err("its index has a malformed descriptor".to_owned());
            };
            let complete = snapshot
                .manifests
                .get(&digest)
                .filter(|_| snapshot.blobs.contains_key(&digest))
                .ok_or_else(|| "not held".to_owned())
                .and_then(|record| {
                    let blobs = Self::blobs(snapshot, proxy, repository, &self.manifest(&digest)?)?;
                    Ok((record.size, blobs))
                });
            // Platforms a client never pulled are not here; the others still are.
            if let Ok((size, blobs)) = complete {
                entries.push(Entry::oci(
                    Kind::Manifest,
                    proxy,
                    &format!("{repository}@{digest}"),
                    digest,
                    size,
                    &media_type,
                ));
                entries.extend(blobs);
            }
        }
        if entries.is_empty() {
            return Err("no platform of its index is held whole".to_owned());
        }
        Ok(entries)
    }

    fn manifest(&self, digest: &Digest) -> Result<Value, String> {
        let bytes = self
            .read(digest, 4 * 1024 * 1024)
            .ok_or_else(|| format!("manifest {digest} cannot be read"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("manifest {digest}: {e}"))
    }

    fn blobs(
        snapshot: &Snapshot,
        proxy: &str,
        repository: &str,
        manifest: &Value,
    ) -> Result<Vec<Entry>, String> {
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        std::iter::once(&manifest["config"])
            .chain(layers.iter())
            .map(|value| {
                let (digest, size, media_type) =
                    descriptor(value).ok_or("a malformed descriptor")?;
                if !snapshot.blobs.contains_key(&digest) {
                    return Err(format!("blob {digest} is not held"));
                }
                Ok(Entry::oci(
                    Kind::Blob,
                    proxy,
                    repository,
                    digest,
                    size,
                    &media_type,
                ))
            })
            .collect()
    }

    /// Writes `entries` into `writer`: the bytes of those whose digest `since` lacks, the
    /// others as expected at the target.
    pub fn write(
        &self,
        writer: &mut BundleWriter,
        entries: Vec<Entry>,
        since: &HashSet<Digest>,
    ) -> Result<(), ExportError> {
        for entry in entries {
            if since.contains(&entry.digest) {
                writer.expect(entry)?;
                continue;
            }
            if writer.holds(&entry.digest) {
                writer.carry(entry, std::io::empty())?;
                continue;
            }
            let file = self.blob(&entry.digest).map_err(|e| ExportError::Store {
                context: format!("reading {}", entry.digest),
                source: StoreError::Io {
                    context: "open".to_owned(),
                    source: e,
                },
            })?;
            writer.carry(entry, std::io::BufReader::with_capacity(1 << 20, file))?;
        }
        Ok(())
    }
}

/// The registry an OCI proxy's images are named under: its `host`, else its upstream's.
pub fn registry_of(proxy: &ProxyConfig) -> String {
    if let Some(host) = &proxy.host {
        return canonical_registry(host);
    }
    let host = proxy.upstream.host_str().unwrap_or_default();
    match proxy.upstream.port() {
        Some(port) => canonical_registry(&format!("{host}:{port}")),
        None => canonical_registry(host),
    }
}

fn descriptor(value: &Value) -> Option<(Digest, u64, String)> {
    Some((
        value["digest"].as_str()?.parse().ok()?,
        value["size"].as_u64()?,
        value["mediaType"].as_str().unwrap_or(OCTETS).to_owned(),
    ))
}

/// The sha256 digests a stored document names: every run of exactly 64 hex digits in its
/// text, read through gzip, zstd or xz when it is compressed (at most `limit` bytes of it,
/// in small pieces: a compression bomb costs time up to the limit, never memory).
fn digests_in(bytes: &[u8], limit: u64) -> Vec<Digest> {
    let name = match bytes {
        [0x1f, 0x8b, ..] => "document.gz",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "document.zst",
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "document.xz",
        _ => return hex_digests(bytes),
    };
    match airlock_yum::decompressed(name, bytes, limit) {
        Ok(text) => hex_digests(text),
        Err(_) => hex_digests(bytes),
    }
}

/// Every run of exactly 64 hex digits `text` gives, as a sha256 digest, until it ends or
/// fails (a stream past its bound, a corrupt one: what was read still counts).
fn hex_digests(mut text: impl Read) -> Vec<Digest> {
    let mut found = Vec::new();
    let mut run = Vec::with_capacity(65);
    let mut buffer = vec![0; 64 * 1024];
    let mut end_run = |run: &mut Vec<u8>| {
        if run.len() == 64 {
            let hex = String::from_utf8_lossy(run).to_ascii_lowercase();
            if let Ok(digest) = Digest::sha256_hex(&hex) {
                found.push(digest);
            }
        }
        run.clear();
    };
    loop {
        let n = match text.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &buffer[..n] {
            if byte.is_ascii_hexdigit() {
                // Longer than a digest: remember only that it is too long.
                if run.len() <= 64 {
                    run.push(byte);
                }
            } else {
                end_run(&mut run);
            }
        }
    }
    end_run(&mut run);
    found
}

/// A file row's key as a bundle path: characters a client path never carries escaped, so
/// the import's decoding gives the key back; a `#representation` suffix (`#json`, a Helm
/// chart's `#sha256:<hex>`) is kept as it is, since the import does not decode it.
fn encode_path(key: &str) -> String {
    let (path, representation) = match key.split_once('#') {
        Some((path, name)) => (path, Some(name)),
        None => (key, None),
    };
    let mut out = String::with_capacity(key.len());
    for c in path.chars() {
        if c.is_ascii_alphanumeric()
            || matches!(c, '/' | '-' | '_' | '.' | '~' | '+' | '@' | '=' | ',')
        {
            out.push(c);
        } else {
            let mut buffer = [0; 4];
            for byte in c.encode_utf8(&mut buffer).bytes() {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    if let Some(name) = representation {
        out.push('#');
        out.push_str(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_runs_of_exactly_64_digits_are_digests() {
        let a = Digest::of(b"a");
        let text = format!(
            "{{\"sha256\": \"{}\"}} {}0 x{}",
            a.hex(),
            Digest::of(b"b").hex(),
            Digest::of(b"c").hex().to_ascii_uppercase()
        );
        assert_eq!(
            hex_digests(text.as_bytes()),
            vec![a.clone(), Digest::of(b"c")]
        );
        // A run at the very end counts; a run split across reads is one run.
        let tail = format!("x {}", a.hex());
        let reader = std::io::Read::chain(&tail.as_bytes()[..40], &tail.as_bytes()[40..]);
        assert_eq!(hex_digests(reader), vec![a]);
    }

    #[test]
    fn compressed_documents_are_read_through() {
        use std::io::Write;
        let a = Digest::of(b"a");
        let text = format!("<checksum>{}</checksum>", a.hex());
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(text.as_bytes()).unwrap();
        let gzip = encoder.finish().unwrap();
        assert_eq!(digests_in(&gzip, 1024), vec![a.clone()]);
        assert_eq!(digests_in(text.as_bytes(), 1024), vec![a]);
    }

    #[test]
    fn a_compression_bomb_is_read_only_to_the_limit() {
        use std::io::Write;
        // 64 MiB of zeros and then a digest, in a few KiB: past a 1 MiB limit the digest is
        // never reached; with room for it, it is.
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b'0'; 1024 * 1024];
        for _ in 0..64 {
            encoder.write_all(&zeros).unwrap();
            encoder.write_all(b" ").unwrap();
        }
        let a = Digest::of(b"a");
        encoder.write_all(a.hex().as_bytes()).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 512 * 1024, "{}", bomb.len());
        assert!(digests_in(&bomb, 1024 * 1024).is_empty());
        assert_eq!(digests_in(&bomb, 128 * 1024 * 1024), vec![a]);
    }

    #[test]
    fn file_keys_survive_the_import_decoding() {
        let chart = format!("app-1.0.0.tgz#{}", Digest::of(b"chart"));
        for key in [
            "simple/numpy/#json",
            "v1.31.4+k3s1/k3s",
            "a b/c(d)!",
            &chart,
        ] {
            let encoded = encode_path(key);
            let decoded = airlock_upstream::target::client_path(
                encoded.split_once('#').map_or(encoded.as_str(), |(p, _)| p),
            );
            let expected = key.split_once('#').map_or(key, |(p, _)| p);
            assert_eq!(
                decoded.as_deref().ok(),
                Some(expected),
                "{key} as {encoded}"
            );
            assert_eq!(
                encoded.split_once('#').map(|(_, name)| name),
                key.split_once('#').map(|(_, name)| name),
                "{key} as {encoded}"
            );
        }
    }
}
