//! `airlock bundle import`: put a bundle's images and files into a gateway's store exactly
//! as if each had been pulled through its proxy: a stopped gateway's `data_dir` ([`import`]
//! opens its store and index), or a running gateway's open store and index
//! ([`import_into`], which its admin API calls). Both run the same steps.
//!
//! In order, and nothing becomes visible before step 5:
//! 1. the documents, read seeking over the blobs: the signature (by the trusted key,
//!    unless unsigned bundles are allowed) and the OCI index;
//! 2. every entry's place in the importing gateway's configuration (`plan`): images by
//!    the proxy whose `host` is their registry, files by the package proxy they name;
//!    and every entry the bundle does not carry is already in the store;
//! 3. one pass over the bundle: every carried byte hashed once against its digest — the
//!    blobs the store lacks by its verified writer as they stream into its temp dir
//!    (invisible; a refusal removes them all), the others by the bundle reader. The pass must see the same documents and
//!    exactly the carried blobs ([`mod@crate::verify`]);
//! 4. the staged blobs made durable (each file synced), renamed into place, and each
//!    directory synced once ([`airlock_store::stage::publish`]);
//! 5. every missing record (blob, manifest with its references, tag fetched now, file)
//!    in one index transaction. A stopped gateway's index is opened after step 3, which
//!    a running gateway's lock refuses; temp files an interrupted import left are removed
//!    after a successful import.
//!
//! What the store already holds is left as it is, so importing twice writes nothing.

mod plan;

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_config::Config;
use airlock_store::{
    Batch, BlobStore, FileRecord, FsStore, ManifestRecord, MetaIndex, StoreError, TagKey,
    TagRecord, layout,
    stage::{self, Staged},
    unix_now,
};
use airlock_types::Digest;
use tokio::runtime::Handle;

use crate::error::BundleError;
use crate::index::{Entry, Kind};
use crate::progress::Progress;
use crate::reader::{Bundle, Catalog};
use crate::sign::{KeyId, PublicKey};
use crate::verify;
use plan::Target;

/// Bytes handed to the store per write.
const CHUNK: usize = 1 << 20;

/// Why a bundle was not imported. Every refusal leaves the store as it was, a disk that
/// fills during the byte pass included (its temp files are removed); only a store
/// failure while publishing the checked blobs or recording them can leave some blobs
/// visible (each whole and verified, none recorded if the transaction failed).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Bundle(#[from] BundleError),
    #[error(
        "the gateway keeps its blobs in the S3 bucket {bucket:?}, not under its data_dir: start it and import through it (`airlock bundle import` uploads the bundle to a running gateway)"
    )]
    StoppedS3 { bucket: String },
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
    catalog: Catalog,
    targets: Vec<Target>,
    trusted_key: Option<KeyId>,
    key: Option<PublicKey>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("entries", &self.catalog.index.entries.len())
            .field("trusted_key", &self.trusted_key)
            .finish_non_exhaustive()
    }
}

/// Steps 1 and 2: the documents and the entries' places in `config`. Reads only the
/// bundle's documents (seeking over its blobs); every byte is checked by
/// [`Checked::write`] as it streams into the store's temp dir.
pub fn check(bundle: &Path, config: &Config, trust: Trust<'_>) -> Result<Checked, ImportError> {
    check_reporting(bundle, config, trust, crate::progress::silent())
}

/// [`check`], with the byte pass [`Checked::write`] runs reporting to `progress`.
pub fn check_reporting(
    bundle: &Path,
    config: &Config,
    trust: Trust<'_>,
    progress: Arc<dyn Progress>,
) -> Result<Checked, ImportError> {
    let mut bundle = Bundle::open(bundle)?;
    bundle.set_progress(progress);
    let key = match trust {
        Trust::Key(key) => Some(key),
        Trust::AllowUnsigned => None,
    };
    let catalog = bundle.catalog()?;
    let trusted_key = verify::check_catalog(&catalog, key)?;
    let targets = plan::plan(&catalog.index, config)?;
    Ok(Checked {
        bundle,
        catalog,
        targets,
        trusted_key,
        key: key.cloned(),
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
        for e in self.catalog.index.entries.iter().filter(|e| !e.carried) {
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

    /// Steps 3 to 5 into an open store and index (a running gateway's, or the ones the
    /// stopped path opened): the entries the bundle does not carry are checked present;
    /// one pass over the bundle hashes every carried byte and streams the blobs the store
    /// lacks into its temp dir; only when the whole bundle checked out are they made
    /// durable and visible together, then every missing record written in one index
    /// transaction. A refusal in the pass removes every temp file it wrote.
    pub fn write(
        &self,
        handle: &Handle,
        data_dir: &Path,
        store: &dyn BlobStore,
        meta: &MetaIndex,
    ) -> Result<Imported, ImportError> {
        self.write_opening(handle, data_dir, store, || Ok(meta))
    }

    /// [`Checked::write`] with the index opened by `open_meta` only after the byte pass
    /// (opening rewrites a stopped gateway's index file, which a refusal must not touch).
    fn write_opening<M: Borrow<MetaIndex>>(
        &self,
        handle: &Handle,
        data_dir: &Path,
        store: &dyn BlobStore,
        open_meta: impl FnOnce() -> Result<M, ImportError>,
    ) -> Result<Imported, ImportError> {
        self.check_present(data_dir, |digest| {
            handle
                .block_on(store.stat(digest))
                .map(|size| size.is_some())
                .map_err(store_error(format!("reading blob {digest}")))
        })?;
        let index = &self.catalog.index;
        let mut imported = Imported {
            trusted_key: self.trusted_key,
            ..Imported::default()
        };
        let staged = self.stage_blobs(handle, store, index.carried(), &mut imported)?;
        let meta = open_meta()?;
        let meta = meta.borrow();
        let written: BTreeSet<Digest> = handle
            .block_on(stage::publish(staged))
            .map_err(store_error("making the imported blobs durable"))?
            .into_iter()
            .map(|c| c.digest)
            .collect();
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

impl Checked {
    /// Step 3: one pass over the bundle, every carried byte hashed once, the blobs the
    /// store lacks staged in its temp dir (their digests checked by its writer) (invisible; removed again if anything fails). The
    /// documents read in the pass must be the ones checked before it.
    fn stage_blobs(
        &self,
        handle: &Handle,
        store: &dyn BlobStore,
        carried: BTreeMap<&Digest, u64>,
        imported: &mut Imported,
    ) -> Result<Vec<Box<dyn Staged>>, ImportError> {
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
        let mut staged = Vec::new();
        let mut failed = None;
        let total = self.catalog.index.carried().values().sum();
        self.bundle.progress().start(Some(total));
        let scanned = self.bundle.scan(|digest, size, bytes| {
            // A digest is staged once: the scan refuses a member that appears twice.
            if !absent.remove(digest) {
                return Ok(());
            }
            // The store's writer hashes every byte against the digest: the scan need not.
            bytes.checked_by_caller();
            match handle.block_on(stage_blob(store, digest, size, bytes)) {
                Ok(Stage::Staged(blob)) => staged.push(blob),
                Ok(Stage::Mismatch(actual)) => {
                    return Err(BundleError::DigestMismatch {
                        expected: digest.clone(),
                        actual,
                    });
                }
                // The scan reads on and refuses the blob: it ended early or failed.
                Ok(Stage::Unread) => return Ok(()),
                Err(e) => {
                    failed = Some((digest.clone(), e));
                    return Err(BundleError::WriterFailed);
                }
            }
            imported.new_blobs += 1;
            imported.new_bytes += size;
            Ok(())
        });
        if let Some((digest, e)) = failed {
            return Err(store_error(format!("writing blob {digest} into the store"))(e));
        }
        let scanned = scanned?;
        verify::check_scan(&self.catalog, &scanned, self.key.as_ref())?;
        Ok(staged)
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
    import_reporting(handle, bundle, config, trust, crate::progress::silent())
}

/// [`import`], with the pass over the bundle's bytes reporting to `progress`.
pub fn import_reporting(
    handle: &Handle,
    bundle: &Path,
    config: &Config,
    trust: Trust<'_>,
    progress: Arc<dyn Progress>,
) -> Result<Imported, ImportError> {
    if let airlock_config::StorageConfig::S3(s3) = &config.storage {
        return Err(ImportError::StoppedS3 {
            bucket: s3.bucket.clone(),
        });
    }
    let checked = check_reporting(bundle, config, trust, progress)?;
    let data_dir = &config.data_dir;
    let store_root = layout::store_root(data_dir);
    // Read-only: nothing under `data_dir` is created before the documents checked out.
    checked.check_present(data_dir, |digest| {
        Ok(layout::blob_path(&store_root, digest).is_file())
    })?;
    // A refusal in the byte pass leaves no trace: not even the empty store it opened.
    let created = !data_dir.exists();
    let result = open_and_write(handle, &checked, data_dir);
    if result.is_err() && created {
        let _ = std::fs::remove_dir_all(data_dir);
    }
    result
}

/// The stopped path's write: the store opened, the index only after the byte pass (its
/// lock then keeps a gateway from starting); after a successful import, temp files an
/// interrupted one left are removed.
fn open_and_write(
    handle: &Handle,
    checked: &Checked,
    data_dir: &Path,
) -> Result<Imported, ImportError> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        store_error(format!("creating {}", data_dir.display()))(StoreError::Io {
            context: "create_dir_all".to_owned(),
            source: e,
        })
    })?;
    let store = handle
        .block_on(FsStore::open(layout::store_root(data_dir)))
        .map_err(store_error("opening the gateway's store"))?;
    let open_meta = || {
        MetaIndex::open(&layout::index_path(data_dir)).map_err(|e| match e {
            StoreError::Locked { .. } => ImportError::GatewayRunning {
                data_dir: data_dir.to_owned(),
            },
            e => store_error("opening the gateway's index")(e),
        })
    };
    let mut meta = None;
    let imported =
        checked.write_opening(handle, data_dir, &store, || Ok(meta.insert(open_meta()?)))?;
    if meta.is_some() {
        // Holding the index's lock, no gateway is writing: what is left in the temp dir is
        // an interrupted import's or download's.
        handle
            .block_on(store.clean_temp())
            .map_err(store_error("removing the store's leftover temp files"))?;
    }
    Ok(imported)
}

/// Whether a running gateway holds the index under `data_dir` (its lock refuses a second
/// opener). Reads and changes nothing in `data_dir`.
pub fn gateway_running(data_dir: &Path) -> Result<bool, ImportError> {
    MetaIndex::is_held(&layout::index_path(data_dir))
        .map_err(store_error("checking whether a gateway holds the index"))
}

/// What became of one blob streamed into the store.
enum Stage {
    /// Whole, its digest checked by the store's writer, invisible until published.
    Staged(Box<dyn Staged>),
    /// Whole, and not the digest's: these bytes hash to this.
    Mismatch(Digest),
    /// The bundle's bytes ended early or could not be read; the scan says which.
    Unread,
}

/// Streams one blob's `size` bytes into a store writer, which checks them against `digest`,
/// and stages it. The writer's temp file is gone unless the blob was staged.
async fn stage_blob(
    store: &dyn BlobStore,
    digest: &Digest,
    size: u64,
    bytes: &mut dyn Read,
) -> Result<Stage, StoreError> {
    let mut writer = store.create(Some(digest)).await?;
    let mut buffer = vec![0; CHUNK];
    loop {
        let Ok(read) = bytes.read(&mut buffer) else {
            return Ok(Stage::Unread);
        };
        if read == 0 {
            break;
        }
        writer.write(&buffer[..read]).await?;
    }
    if writer.written() != size {
        return Ok(Stage::Unread);
    }
    match writer.stage().await {
        Ok(staged) => Ok(Stage::Staged(staged)),
        Err(StoreError::DigestMismatch { actual, .. }) => Ok(Stage::Mismatch(actual)),
        Err(e) => Err(e),
    }
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
