//! Where things live under `data_dir`. The one module that builds store paths.
//!
//! ```text
//! <data_dir>/
//! ├── store-v1/
//! │   ├── blobs/sha256/ab/abcdef0123…   committed blobs, verified, named by digest
//! │   └── tmp/<random>.part             writes in progress; removed at startup
//! ├── s3-v1/{tmp,hot}/                 backend = "s3": writes being verified, and the
//! │                                     hot tier of bucket objects (laid out as store-v1)
//! ├── index-v1.redb                     metadata: tags → digests, media types, times;
//! │                                     its key/record schema is versioned inside (index.rs)
//! ├── uploads/<random>.bundle           bundles the admin API receives, while they are
//! │                                     verified and imported; removed at startup
//! └── tls/                              generated CA and server certificate
//! ```
//! A change of layout bumps the `-v1` suffix; an old layout is then left alone, not misread.
//! The index file keeps its name across schema changes: it is upgraded in place, because
//! a fresh one would forget every blob the store holds.

use std::path::{Path, PathBuf};

use airlock_types::Digest;

pub const STORE_DIR: &str = "store-v1";
pub const INDEX_FILE: &str = "index-v1.redb";
pub const TLS_DIR: &str = "tls";
pub const UPLOADS_DIR: &str = "uploads";

pub fn store_root(data_dir: &Path) -> PathBuf {
    data_dir.join(STORE_DIR)
}

pub fn index_path(data_dir: &Path) -> PathBuf {
    data_dir.join(INDEX_FILE)
}

/// Local state of the s3 backend: writes being verified (`tmp/`) and the hot tier (`hot/`).
pub fn s3_local_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("s3-v1")
}

pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(TLS_DIR)
}

pub fn uploads_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(UPLOADS_DIR)
}

/// Where the committed blob `digest` lives under a store root (read-only checks use it).
pub fn blob_path(store_root: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    store_root
        .join("blobs")
        .join(digest.algorithm())
        .join(&hex[..2])
        .join(hex)
}

pub(crate) fn temp_dir(store_root: &Path) -> PathBuf {
    store_root.join("tmp")
}

pub(crate) const TEMP_SUFFIX: &str = ".part";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_fan_out_by_prefix() {
        let digest = Digest::of(b"");
        assert_eq!(
            blob_path(Path::new("/d/store-v1"), &digest),
            Path::new(
                "/d/store-v1/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            )
        );
    }
}
