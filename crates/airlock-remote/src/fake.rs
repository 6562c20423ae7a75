//! An in-memory host for unit tests: files in a map, commands recorded, answers scripted.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use super::{ExecError, Executor, FileState, Input, Mode, Output, Perms};

/// A host that exists only in memory.
#[derive(Debug, Default)]
pub struct Fake {
    host: String,
    state: Mutex<State>,
}

#[derive(Debug, Clone)]
struct FakeFile {
    content: Vec<u8>,
    mode: Mode,
    owner: String,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, FakeFile>,
    log: Vec<String>,
    answers: Vec<(String, Output)>,
    unreachable: bool,
}

impl Fake {
    pub fn new(host: &str) -> Self {
        Self {
            host: host.to_owned(),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Put a file on the host (0644, owned by root).
    pub fn put(&self, path: &str, content: impl Into<Vec<u8>>) {
        self.put_with(path, content, 0o644, "root:root");
    }

    /// Put a file on the host with this mode and `user:group` owner.
    pub fn put_with(&self, path: &str, content: impl Into<Vec<u8>>, mode: u32, owner: &str) {
        self.state().files.insert(
            path.to_owned(),
            FakeFile {
                content: content.into(),
                mode: Mode(mode),
                owner: owner.to_owned(),
            },
        );
    }

    /// A file on the host, if any.
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.state().files.get(path).map(|f| f.content.clone())
    }

    /// The mode a file was written with.
    pub fn mode(&self, path: &str) -> Option<Mode> {
        self.state().files.get(path).map(|f| f.mode)
    }

    /// The `user:group` owning a file.
    pub fn owner(&self, path: &str) -> Option<String> {
        self.state().files.get(path).map(|f| f.owner.clone())
    }

    /// Answer every script containing `needle` with this status and stdout (first match wins).
    pub fn answer(&self, needle: &str, status: i32, stdout: &str) {
        self.state().answers.push((
            needle.to_owned(),
            Output {
                status,
                stdout: stdout.as_bytes().to_vec(),
                stderr: Vec::new(),
            },
        ));
    }

    /// Make every later call fail as an unreachable host.
    pub fn go_away(&self) {
        self.state().unreachable = true;
    }

    /// Scripts run and files written so far (`write <path>`), in order.
    pub fn log(&self) -> Vec<String> {
        self.state().log.clone()
    }

    /// Scripts run so far (not file reads and writes).
    pub fn commands(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| !l.starts_with("write ") && !l.starts_with("read "))
            .collect()
    }

    fn reachable(&self) -> Result<(), ExecError> {
        if self.state().unreachable {
            return Err(ExecError::Unreachable {
                host: self.host.clone(),
                message: "Connection refused (fake)".to_owned(),
            });
        }
        Ok(())
    }
}

impl Executor for Fake {
    fn host(&self) -> &str {
        &self.host
    }

    fn exec(&self, script: &str, _input: Input<'_>) -> Result<Output, ExecError> {
        self.reachable()?;
        let mut state = self.state();
        state.log.push(script.to_owned());
        Ok(state
            .answers
            .iter()
            .find(|(needle, _)| script.contains(needle.as_str()))
            .map(|(_, output)| output.clone())
            .unwrap_or_default())
    }

    fn sha256(&self, path: &str) -> Result<Option<String>, ExecError> {
        self.reachable()?;
        Ok(self
            .state()
            .files
            .get(path)
            .map(|f| hex::encode(Sha256::digest(&f.content))))
    }

    fn stat(&self, path: &str) -> Result<Option<FileState>, ExecError> {
        self.reachable()?;
        Ok(self.state().files.get(path).map(|f| FileState {
            sha256: hex::encode(Sha256::digest(&f.content)),
            mode: f.mode,
            owner: f.owner.clone(),
        }))
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, ExecError> {
        self.reachable()?;
        let mut state = self.state();
        state.log.push(format!("read {path}"));
        Ok(state.files.get(path).map(|f| f.content.clone()))
    }

    fn write(&self, path: &str, input: Input<'_>, perms: &Perms) -> Result<(), ExecError> {
        self.reachable()?;
        let content = match input {
            Input::None => Vec::new(),
            Input::Bytes(b) => b.to_vec(),
            Input::File(p) => std::fs::read(p).map_err(|e| ExecError::Local {
                host: self.host.clone(),
                message: format!("{}: {e}", p.display()),
            })?,
        };
        let mut state = self.state();
        state.log.push(format!("write {path}"));
        // Files are written as root: a write without an owner leaves them root's.
        let owner = perms
            .owner
            .clone()
            .unwrap_or_else(|| "root:root".to_owned());
        state.files.insert(
            path.to_owned(),
            FakeFile {
                content,
                mode: perms.mode,
                owner,
            },
        );
        Ok(())
    }
}
