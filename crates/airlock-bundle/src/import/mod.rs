//! `airlock bundle import`: put a bundle's images and files into a gateway's store exactly
//! as if each had been pulled through its proxy: a stopped gateway's `data_dir` ([`import`]
//! opens its store and index), or a running gateway's open store and index
//! ([`import_into`], which its admin API calls). Both run the same steps.
//!
//! In order, and nothing is written before step 5:
//! 1. the documents: the signature (by the trusted key, unless unsigned bundles are
//!    allowed) and the OCI index;
//! 2. every entry's place in the importing gateway's configuration (`plan`): images by
//!    the proxy whose `host` is their registry, files by the package proxy they name;
//! 3. every carried byte, hashed against its digest ([`mod@crate::verify`]);
//! 4. every entry the bundle does not carry is already in the store;
//! 5. the blobs the store lacks are written through its verified writer (invisible to
//!    the gateway until recorded), then every missing record (blob, manifest with its
//!    references, tag fetched now, file) in one transaction. A stopped gateway's index is
//!    opened just before, which a running gateway's lock refuses.
//!
//! What the store already holds is left as it is, so importing twice writes nothing.

mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use airlock_config::Config;
use airlock_store::{
    Batch, BlobStore, FileRecord, FsStore, ManifestRecord, MetaIndex, StoreError, TagKey,
    TagRecord, layout, unix_now,
};
use airlock_types::Digest;
use tokio::runtime::Handle;

use crate::error::BundleError;
use crate::index::{Entry, Kind};
use crate::reader::Bundle;
use crate::sign::{KeyId, PublicKey};
use crate::verify;
use plan::Target;

/// Bytes handed to the store per write.
const CHUNK: usize = 1 << 20;

/// Why a bundle was not imported. Every refusal but a store failure while writing leaves
/// the store as it was.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Bundle(#[from] BundleError),
    #[error(
        "the bundle is not signed: give --trust-key KEY.pub for a signed bundle, or --allow-unsigned to import it anyway"
    )]
    Unsigned,
    #[error(
        "no OCI proxy in the configuration serves registry {registry} (for {reference}): add a [[proxy]] with format = \"oci\" and host = \"{registry}\""
    )]
    NoRegistryProxy { registry: String, reference: String },
    #[error(
        "the bundle's file {path:?} belongs to proxy {proxy:?}, which the configuration does not have: add that package proxy (the same name as where the bundle was made)"
    )]
    UnknownProxy { proxy: String, path: String },
    #[error("the bundle's file {path:?} belongs to proxy {proxy:?}, which is an OCI proxy here")]
    NotPackageProxy { proxy: String, path: String },
    #[error("the bundle's file path {path:?} is not one a proxy serves: {reason}")]
    BadPath { path: String, reason: String },
    #[error("the bundle names image {reference:?}, which is not an image reference: {reason}")]
    BadReference { reference: String, reason: String },
    #[error(
        "the bundle expects the gateway to hold {} item(s) it does not carry, and the store at {} lacks them:\n  {}",
        missing.len(), data_dir.display(), missing.join("\n  ")
    )]
    Missing {
        data_dir: PathBuf,
        missing: Vec<String>,
    },
    #[error(
        "the gateway using {} is running: import through its admin API (`airlock bundle import --gateway URL --user NAME`) or stop it first", data_dir.display()
    )]
    GatewayRunning { data_dir: PathBuf },
    #[error("{context}: {source}")]
    Store { context: String, source: StoreError },
}

/// Which signatures to accept.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The bundle must be signed by this key.
    Key(&'a PublicKey),
    /// Any bundle, signed or not; a signature is not checked.
    AllowUnsigned,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The key whose signature was checked.
    pub trusted_key: Option<KeyId>,
    /// Entries something was written for, and entries the gateway already held whole.
    pub new_items: usize,
    pub present_items: usize,
    /// Distinct blobs written and their bytes; carried blobs the store already had.
    pub new_blobs: usize,
    pub new_bytes: u64,
    pub present_blobs: usize,
    pub present_bytes: u64,
}

impl Imported {
    /// Whether the import changed nothing.
    pub fn is_noop(&self) -> bool {
        self.new_items == 0 && self.new_blobs == 0
    }
}

fn store_error(context: impl Into<String>) -> impl FnOnce(StoreError) -> ImportError {
    let context = context.into();
    move |source| ImportError::Store { context, source }
}

/// A bundle whose signature, placement in the configuration and every byte were checked
/// (steps 1 to 3): what [`Checked::write`] puts into a store.
pub struct Checked {
    bundle: Bundle,
    index: crate::index::BundleIndex,
    targets: Vec<Target>,
    trusted_key: Option<KeyId>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("entries", &self.index.entries.len())
            .field("trusted_key", &self.trusted_key)
            .finish_non_exhaustive()
    }
}

/// Steps 1 to 3: the documents, the entries' places in `config`, every carried byte.
/// Reads only the bundle.
pub fn check(bundle: &Path, config: &Config, trust: Trust<'_>) -> Result<Checked, ImportError> {
    let bundle = Bundle::open(bundle)?;
    let key = match trust {
        Trust::Key(key) => Some(key),
        Trust::AllowUnsigned => None,
    };
    let catalog = bundle.catalog()?;
    verify::check_catalog(&catalog, key)?;
    let targets = plan::plan(&catalog.index, config)?;
    let verified = verify::verify(&bundle, key)?;
    if verified.catalog.index_bytes != catalog.index_bytes {
        return Err(BundleError::BadMember {
            path: crate::layout::INDEX.to_owned(),
            reason: "it changed while the bundle was being read".to_owned(),
        }
        .into());
    }
    Ok(Checked {
        bundle,
        index: verified.catalog.index,
        targets,
        trusted_key: verified.trusted_key,
    })
}

impl Checked {
    /// Step 4 with `held` saying whether the store holds a blob: every entry the bundle
    /// does not carry must be held.
    fn check_present(
        &self,
        data_dir: &Path,
        mut held: impl FnMut(&Digest) -> Result<bool, ImportError>,
    ) -> Result<(), ImportError> {
        let mut missing = Vec::new();
        for e in self.index.entries.iter().filter(|e| !e.carried) {
            if !held(&e.digest)? {
                missing.push(format!(
                    "{} {} ({}, proxy {})",
                    e.kind,
                    e.subject(),
                    e.digest,
                    e.proxy
                ));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ImportError::Missing {
                data_dir: data_dir.to_owned(),
                missing,
            })
        }
    }

    /// Steps 4 and 5 into an open store and index (a running gateway's, or the ones the
    /// stopped path opened): the entries the bundle does not carry are checked present,
    /// the blobs the store lacks written (invisible until recorded), then every missing
    /// record in one index transaction.
    pub fn write(
        &self,
        handle: &Handle,
        data_dir: &Path,
        store: &dyn BlobStore,
        meta: &MetaIndex,
    ) -> Result<Imported, ImportError> {
        self.check_present(data_dir, |digest| {
            handle
                .block_on(store.stat(digest))
                .map(|size| size.is_some())
                .map_err(store_error(format!("reading blob {digest}")))
        })?;
        let index = &self.index;
        let mut imported = Imported {
            trusted_key: self.trusted_key,
            ..Imported::default()
        };
        let written = write_blobs(handle, &self.bundle, store, index.carried(), &mut imported)?;
        let batch = handle.block_on(records(meta, store, &index.entries, &self.targets))?;
        for (entry, target) in index.entries.iter().zip(&self.targets) {
            if written.contains(&entry.digest) || batch_names(&batch, entry, target) {
                imported.new_items += 1;
            } else {
                imported.present_items += 1;
            }
        }
        if !batch.is_empty() {
            handle
                .block_on(meta.apply(batch))
                .map_err(store_error("recording the imported items"))?;
        }
        Ok(imported)
    }
}

/// Imports `bundle` into a running gateway's open `store` and `meta` index: the same
/// steps as [`import`], nothing visible before every check passed. `handle` runs the
/// store's work (call from a blocking thread, not from the runtime's workers).
pub fn import_into(
    handle: &Handle,
    bundle: &Path,
    config: &Config,
    trust: Trust<'_>,
    store: &dyn BlobStore,
    meta: &MetaIndex,
) -> Result<Imported, ImportError> {
    check(bundle, config, trust)?.write(handle, &config.data_dir, store, meta)
}

/// Imports `bundle` into the store of the stopped gateway `config` describes; `handle`
/// runs the store's work (call from outside the runtime). A running gateway's index lock
/// refuses it with [`ImportError::GatewayRunning`].
pub fn import(
    handle: &Handle,
    bundle: &Path,
    config: &Config,
    trust: Trust<'_>,
) -> Result<Imported, ImportError> {
    let checked = check(bundle, config, trust)?;
    let data_dir = &config.data_dir;
    let store_root = layout::store_root(data_dir);
    // Read-only: nothing under `data_dir` is created before every check passed.
    checked.check_present(data_dir, |digest| {
        Ok(layout::blob_path(&store_root, digest).is_file())
    })?;
    std::fs::create_dir_all(data_dir).map_err(|e| {
        store_error(format!("creating {}", data_dir.display()))(StoreError::Io {
            context: "create_dir_all".to_owned(),
            source: e,
        })
    })?;
    let meta = MetaIndex::open(&layout::index_path(data_dir)).map_err(|e| match e {
        StoreError::Locked { .. } => ImportError::GatewayRunning {
            data_dir: data_dir.clone(),
        },
        e => store_error("opening the gateway's index")(e),
    })?;
    let store = handle
        .block_on(FsStore::open(&store_root))
        .map_err(store_error("opening the gateway's store"))?;
    checked.write(handle, data_dir, &store, &meta)
}

/// Whether a running gateway holds the index under `data_dir` (its lock refuses a second
/// opener). Reads and changes nothing in `data_dir`.
pub fn gateway_running(data_dir: &Path) -> Result<bool, ImportError> {
    MetaIndex::is_held(&layout::index_path(data_dir))
        .map_err(store_error("checking whether a gateway holds the index"))
}

/// Writes the carried blobs the store lacks, in a second pass over the verified bundle
/// (the store checks each digest again as it commits). Returns the digests written.
fn write_blobs(
    handle: &Handle,
    bundle: &Bundle,
    store: &dyn BlobStore,
    carried: BTreeMap<&Digest, u64>,
    imported: &mut Imported,
) -> Result<BTreeSet<Digest>, ImportError> {
    let mut absent = BTreeSet::new();
    for (digest, size) in carried {
        let present = handle
            .block_on(store.stat(digest))
            .map_err(store_error(format!("reading blob {digest}")))?;
        if present.is_some() {
            imported.present_blobs += 1;
            imported.present_bytes += size;
        } else {
            absent.insert(digest.clone());
        }
    }
    let mut written = BTreeSet::new();
    let mut failed = None;
    let scanned = bundle.scan(|digest, size, bytes| {
        if !absent.contains(digest) {
            return Ok(());
        }
        if let Err(e) = handle.block_on(write_blob(store, digest, bytes)) {
            failed = Some((digest.clone(), e));
            return Err(BundleError::WriterFailed);
        }
        written.insert(digest.clone());
        imported.new_blobs += 1;
        imported.new_bytes += size;
        Ok(())
    });
    if let Some((digest, e)) = failed {
        return Err(store_error(format!("writing blob {digest} into the store"))(e));
    }
    scanned?;
    Ok(written)
}

async fn write_blob(
    store: &dyn BlobStore,
    digest: &Digest,
    bytes: &mut dyn Read,
) -> Result<(), StoreError> {
    let mut writer = store.create(Some(digest)).await?;
    let mut buffer = vec![0; CHUNK];
    loop {
        let read = bytes.read(&mut buffer).map_err(|source| StoreError::Io {
            context: format!("reading {digest} from the bundle"),
            source,
        })?;
        if read == 0 {
            break;
        }
        writer.write(&buffer[..read]).await?;
    }
    writer.commit().await?;
    Ok(())
}

/// The records the index lacks (or holds differently) for the bundle's entries.
async fn records(
    meta: &MetaIndex,
    store: &dyn BlobStore,
    entries: &[Entry],
    targets: &[Target],
) -> Result<Batch, ImportError> {
    let now = unix_now();
    let mut batch = Batch::default();
    let sizes: BTreeMap<&Digest, u64> = entries.iter().map(|e| (&e.digest, e.size)).collect();
    let recorded: BTreeSet<Digest> = meta
        .recorded_blobs(sizes.keys().map(|d| (*d).clone()).collect())
        .await
        .map_err(store_error("reading the gateway's index"))?
        .into_iter()
        .collect();
    batch.blobs = sizes
        .iter()
        .filter(|(d, _)| !recorded.contains(**d))
        .map(|(d, size)| ((*d).clone(), *size))
        .collect();
    let mut manifests = BTreeSet::new();
    for (entry, target) in entries.iter().zip(targets) {
        let read = store_error("reading the gateway's index");
        match target {
            Target::Oci { proxy, repo, tag } => {
                if matches!(entry.kind, Kind::Image | Kind::Manifest)
                    && manifests.insert(entry.digest.clone())
                {
                    let current = meta.manifest(&entry.digest).await.map_err(read)?;
                    if current.is_none_or(|m| m.media_type != entry.media_type) {
                        batch
                            .manifests
                            .push((entry.digest.clone(), manifest(store, entry).await?));
                    }
                }
                if let Some(tag) = tag {
                    let key = TagKey {
                        proxy: proxy.clone(),
                        repo: repo.clone(),
                        tag: tag.clone(),
                        variant: String::new(),
                    };
                    let current = meta
                        .tag(&key)
                        .await
                        .map_err(store_error("reading the gateway's index"))?;
                    if current.is_none_or(|t| {
                        t.digest != entry.digest || t.media_type != entry.media_type
                    }) {
                        let record = TagRecord {
                            digest: entry.digest.clone(),
                            media_type: entry.media_type.clone(),
                            checked_at: now,
                        };
                        batch.tags.push((key, record));
                    }
                }
            }
            // The blob (recorded above) is the whole of a package file.
            Target::Package => {}
            Target::File { proxy, path } => {
                let current = meta.file(proxy, path).await.map_err(read)?;
                if current.is_none_or(|f| f.digest.as_ref() != Some(&entry.digest)) {
                    let record = FileRecord {
                        digest: Some(entry.digest.clone()),
                        content_type: Some(entry.media_type.clone()),
                        etag: None,
                        last_modified: None,
                        checked_at: now,
                    };
                    batch.files.push((proxy.clone(), path.clone(), record));
                }
            }
        }
    }
    Ok(batch)
}

/// A manifest's record as the registry makes it when it stores a pulled manifest.
async fn manifest(store: &dyn BlobStore, entry: &Entry) -> Result<ManifestRecord, ImportError> {
    let bytes = airlock_store::read_all(store, &entry.digest)
        .await
        .map_err(store_error(format!("reading manifest {}", entry.digest)))?
        .ok_or_else(|| {
            store_error("reading the gateway's store")(StoreError::NotFound(entry.digest.clone()))
        })?;
    Ok(ManifestRecord {
        media_type: entry.media_type.clone(),
        size: bytes.len() as u64,
        refs: airlock_store::evict::manifest_refs(&bytes),
    })
}

/// Whether `batch` writes a record for `entry`.
fn batch_names(batch: &Batch, entry: &Entry, target: &Target) -> bool {
    let digest = &entry.digest;
    batch.blobs.iter().any(|(d, _)| d == digest)
        || match target {
            Target::Oci { tag, .. } => {
                batch
                    .manifests
                    .iter()
                    .any(|(d, _)| d == digest && entry.kind != Kind::Blob)
                    || tag.as_ref().is_some_and(|tag| {
                        batch
                            .tags
                            .iter()
                            .any(|(k, r)| &k.tag == tag && &r.digest == digest)
                    })
            }
            Target::File { proxy, path } => {
                batch.files.iter().any(|(p, f, _)| p == proxy && f == path)
            }
            Target::Package => false,
        }
}
