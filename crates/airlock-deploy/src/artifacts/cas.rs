//! The control node's content-addressed cache: verified bytes under their sha256.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{ArtifactError, Body, Fetched, cache_error};

/// The content-addressed store: `<root>/sha256/<hex>`, temporaries in `<root>/tmp/`.
#[derive(Debug)]
pub(crate) struct Cas {
    root: PathBuf,
}

impl Cas {
    pub(crate) fn open(root: &Path) -> Result<Self, ArtifactError> {
        for dir in [root.join("sha256"), root.join("tmp")] {
            std::fs::create_dir_all(&dir).map_err(cache_error(&dir))?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn temp(&self) -> Result<tempfile::NamedTempFile, ArtifactError> {
        let dir = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix("download-")
            .tempfile_in(&dir)
            .map_err(cache_error(&dir))
    }

    pub(crate) fn blob(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    /// The blob `sha256`, hashed again; a blob whose bytes changed is removed.
    pub(crate) fn verified(&self, sha256: &str) -> Option<PathBuf> {
        let path = self.blob(sha256);
        match sha256_of_file(&path) {
            Ok(actual) if actual == sha256 => Some(path),
            Ok(actual) => {
                tracing::warn!("cached {} hashes to {actual}: removing it", path.display());
                let _ = std::fs::remove_file(&path);
                None
            }
            Err(_) => None,
        }
    }

    /// Moves verified bytes into `sha256/<hex>`: synced, renamed, directory synced.
    pub(crate) fn commit(&self, fetched: Fetched) -> Result<PathBuf, ArtifactError> {
        let target = self.blob(&fetched.sha256);
        match fetched.body {
            Body::Memory(bytes, _) => {
                let mut file = self.temp()?;
                file.write_all(&bytes).map_err(cache_error(file.path()))?;
                persist(file, &target)?;
            }
            Body::File(file, _) => persist(file, &target)?,
        }
        Ok(target)
    }
}

/// Syncs `file`, renames it to `target` and syncs `target`'s directory.
pub(crate) fn persist(file: tempfile::NamedTempFile, target: &Path) -> Result<(), ArtifactError> {
    file.as_file()
        .sync_all()
        .map_err(cache_error(file.path()))?;
    file.persist(target)
        .map_err(|e| cache_error(target)(e.error))?;
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(cache_error(dir))?;
    }
    Ok(())
}

pub(crate) fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}
