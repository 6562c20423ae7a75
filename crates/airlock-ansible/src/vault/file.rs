//! Vault files on disk: what `airlock vault decrypt|encrypt` writes.
//!
//! Plaintext must never be readable by anyone else, not even for a moment, and a planted
//! symlink must never redirect it. So every output is written to a fresh temporary file in
//! the target's directory (random name, `O_CREAT|O_EXCL`, mode 0600 from creation whatever
//! the umask), then renamed over the target: a rename replaces a symlink at the target
//! instead of following it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// What is being written, which decides the final permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Decrypted secrets: always 0600, even when the file replaced was readable by more.
    Plaintext,
    /// A vault envelope: 0600 when new; an existing file keeps its permissions (an inventory
    /// the team reads stays readable).
    Envelope,
}

/// Why a vault file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot create a temporary file in {}: {source}", dir.display())]
    Create {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot replace {}: {source}", path.display())]
    Replace {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Replace `path` with `bytes` atomically, with the permissions `content` calls for.
pub fn write(path: &Path, bytes: &[u8], content: Content) -> Result<(), FileError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // tempfile opens with O_EXCL and mode 0600 (never wider, as a umask only removes bits).
    let mut file = tempfile::Builder::new()
        .prefix(".airlock-vault-")
        .tempfile_in(dir)
        .map_err(|source| FileError::Create {
            dir: dir.to_owned(),
            source,
        })?;
    let write_err = |source| FileError::Write {
        path: path.to_owned(),
        source,
    };
    if content == Content::Envelope {
        // symlink_metadata: the permissions of a symlink's target are not this file's.
        let existing = std::fs::symlink_metadata(path)
            .ok()
            .filter(std::fs::Metadata::is_file);
        if let Some(meta) = existing {
            // Set while the file is still empty, so no content is ever more exposed than
            // the final file.
            file.as_file()
                .set_permissions(meta.permissions())
                .map_err(write_err)?;
        }
    }
    file.write_all(bytes).map_err(write_err)?;
    file.as_file().sync_all().map_err(write_err)?;
    file.persist(path).map_err(|e| FileError::Replace {
        path: path.to_owned(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn plaintext_is_0600_even_over_a_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.yml");
        std::fs::write(&path, "$ANSIBLE_VAULT;1.1;AES256\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&path, b"token: x\n", Content::Plaintext).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"token: x\n");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }

    #[test]
    fn envelopes_keep_an_existing_files_permissions_and_are_0600_when_new() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("group_vars.yml");
        std::fs::write(&shared, "plain").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&shared, b"$ANSIBLE_VAULT", Content::Envelope).unwrap();
        assert_eq!(mode(&shared), 0o640);
        let new = dir.path().join("new.yml");
        write(&new, b"$ANSIBLE_VAULT", Content::Envelope).unwrap();
        assert_eq!(mode(&new), 0o600);
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let path = dir.path().join("out");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write(&path, b"plain", Content::Plaintext).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(mode(&path), 0o600);
    }
}
