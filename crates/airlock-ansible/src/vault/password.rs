//! Vault passwords: read from a plain file, or from the stdout of an executable file.
//!
//! Same rules as ansible's `FileVaultSecret` / `ScriptVaultSecret`: a plain file is stripped of
//! surrounding whitespace; a script's stdout is stripped of `\r`/`\n`; a script whose name ends
//! in `-client` is asked for the vault-id with `--vault-id <label>`; empty results and non-zero
//! exits are errors.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A vault password. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct VaultSecret(Vec<u8>);

impl std::fmt::Debug for VaultSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultSecret(<redacted>)")
    }
}

/// Why no vault password could be had.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot read vault password file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run vault password script {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "vault password script {path} exited with {status}{}",
        if stderr.is_empty() { String::new() } else { format!(": {stderr}") }
    )]
    ScriptFailed {
        path: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error(
        "vault password from {path} is empty: put the password in the file, or make the script print it"
    )]
    Empty { path: PathBuf },
}

impl VaultSecret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Read a password file, running it when it is executable.
    pub fn from_file(path: &Path, vault_id: Option<&str>) -> Result<Self, PasswordError> {
        let meta = std::fs::metadata(path).map_err(|source| PasswordError::Read {
            path: path.to_owned(),
            source,
        })?;
        let bytes = if is_executable(&meta) {
            run_script(path, vault_id)?
        } else {
            let raw = std::fs::read(path).map_err(|source| PasswordError::Read {
                path: path.to_owned(),
                source,
            })?;
            raw.trim_ascii().to_vec()
        };
        if bytes.is_empty() {
            return Err(PasswordError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self(bytes))
    }
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    false
}

fn run_script(path: &Path, vault_id: Option<&str>) -> Result<Vec<u8>, PasswordError> {
    let mut command = Command::new(path);
    let is_client = path
        .file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| s.ends_with("-client"));
    if is_client {
        command.args(["--vault-id", vault_id.unwrap_or("default")]);
    }
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| PasswordError::Spawn {
            path: path.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(PasswordError::ScriptFailed {
            path: path.to_owned(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let mut out = output.stdout;
    while out.last().is_some_and(|b| matches!(b, b'\r' | b'\n')) {
        out.pop();
    }
    while out.first().is_some_and(|b| matches!(b, b'\r' | b'\n')) {
        out.remove(0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn plain_files_are_stripped_of_surrounding_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "  pass word \r\n").unwrap();
        assert_eq!(
            VaultSecret::from_file(&path, None).unwrap().expose(),
            b"pass word"
        );
        std::fs::write(&path, "\n \n").unwrap();
        assert!(matches!(
            VaultSecret::from_file(&path, None),
            Err(PasswordError::Empty { .. })
        ));
        assert!(matches!(
            VaultSecret::from_file(&dir.path().join("missing"), None),
            Err(PasswordError::Read { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn scripts_print_the_password_and_fail_loudly() {
        let dir = tempfile::tempdir().unwrap();
        let ok = script(dir.path(), "pwd.sh", "printf ' spaced \\n'");
        assert_eq!(
            VaultSecret::from_file(&ok, None).unwrap().expose(),
            b" spaced "
        );
        let empty = script(dir.path(), "empty.sh", "true");
        assert!(matches!(
            VaultSecret::from_file(&empty, None),
            Err(PasswordError::Empty { .. })
        ));
        let failing = script(dir.path(), "fail.sh", "echo 'vault locked' >&2; exit 2");
        let err = VaultSecret::from_file(&failing, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exited with") && err.contains("vault locked"),
            "{err}"
        );
        let client = script(dir.path(), "keyring-client", "echo \"$1=$2\"");
        assert_eq!(
            VaultSecret::from_file(&client, Some("prod"))
                .unwrap()
                .expose(),
            b"--vault-id=prod"
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let s = VaultSecret::new(b"topsecret".to_vec());
        assert!(!format!("{s:?}").contains("topsecret"));
    }
}
