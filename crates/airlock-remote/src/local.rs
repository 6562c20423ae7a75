//! `ansible_connection: local`: commands run on the control node itself.

use std::process::{Command, Stdio};

use super::{ExecError, Executor, Input, Output};
use airlock_ansible::connection::Become;

/// The control node, as a host of the inventory.
#[derive(Debug, Clone)]
pub struct Local {
    host: String,
    escalate: Option<Become>,
}

impl Local {
    pub fn new(host: &str, escalate: Option<Become>) -> Self {
        Self {
            host: host.to_owned(),
            escalate,
        }
    }
}

impl Executor for Local {
    fn host(&self) -> &str {
        &self.host
    }

    fn exec(&self, script: &str, input: Input<'_>) -> Result<Output, ExecError> {
        let is_root = current_uid() == Some(0);
        let (argv, password) = super::command_line(script, self.escalate.as_ref(), is_root);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ExecError::Local {
                host: self.host.clone(),
                message: format!("cannot start {}: {e}", argv[0]),
            })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let feeder = super::feed(stdin, password, input);
        let output = child.wait_with_output().map_err(|e| ExecError::Local {
            host: self.host.clone(),
            message: format!("waiting for {}: {e}", argv[0]),
        })?;
        feeder.join(&self.host)?;
        Ok(Output {
            status: output.status.code().unwrap_or(-1),
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }
}

/// The real user id of this process (from `/proc/self/status`).
fn current_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mode, Perms};

    #[test]
    fn runs_scripts_and_places_files() {
        let dir = tempfile::tempdir().unwrap();
        let local = Local::new("localhost", None);
        assert_eq!(local.run("echo hello").unwrap(), "hello\n");
        let err = local.run("echo broken >&2; exit 4").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("status 4") && text.contains("broken"),
            "{text}"
        );

        let path = dir.path().join("sub/file.txt");
        let path = path.to_str().unwrap();
        assert_eq!(local.sha256(path).unwrap(), None);
        assert_eq!(local.read(path).unwrap(), None);
        local
            .write(path, Input::Bytes(b"content\n"), &Perms::mode(0o640))
            .unwrap();
        assert_eq!(local.read(path).unwrap().unwrap(), b"content\n");
        assert_eq!(
            local.sha256(path).unwrap().unwrap(),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"content\n"))
        );
        let mode = std::fs::metadata(path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o640
        );
        assert!(!std::path::Path::new(&format!("{path}.airlock-tmp")).exists());
    }

    /// Regression: files went through `<path>.airlock-tmp`, opened with `cat >`, so a symlink
    /// planted at that name sent the content (as root) wherever it pointed.
    #[test]
    fn a_symlink_at_the_old_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let path = dir.path().join("token");
        std::os::unix::fs::symlink(&victim, dir.path().join("token.airlock-tmp")).unwrap();
        let local = Local::new("localhost", None);
        let path = path.to_str().unwrap();
        local
            .write(path, Input::Bytes(b"secret"), &Perms::mode(0o600))
            .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(std::fs::read(path).unwrap(), b"secret");
        let state = local.stat(path).unwrap().unwrap();
        assert_eq!(state.mode, Mode(0o600));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temporary left: {names:?}");
    }

    #[test]
    fn a_symlink_at_the_target_is_reported_as_such_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "same").unwrap();
        let path = dir.path().join("conf");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let local = Local::new("localhost", None);
        let path = path.to_str().unwrap();
        assert_eq!(local.stat(path).unwrap().unwrap().mode, Mode(0o777));
        local
            .write(path, Input::Bytes(b"same"), &Perms::mode(0o644))
            .unwrap();
        assert!(std::fs::symlink_metadata(path).unwrap().is_file());
        assert_eq!(local.stat(path).unwrap().unwrap().mode, Mode(0o644));
    }

    #[test]
    fn streams_a_local_file() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("big");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&source, &data).unwrap();
        let local = Local::new("localhost", None);
        let target = dir.path().join("copy");
        local
            .write(
                target.to_str().unwrap(),
                Input::File(&source),
                &Perms::mode(0o755),
            )
            .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), data);
    }
}
