//! An in-memory host for unit tests: files in a map, commands recorded, answers scripted.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use super::{ExecError, Executor, Input, Mode, Output};

/// A host that exists only in memory.
#[derive(Debug, Default)]
pub struct Fake {
    host: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, (Vec<u8>, Mode)>,
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

    /// Put a file on the host.
    pub fn put(&self, path: &str, content: impl Into<Vec<u8>>) {
        self.state()
            .files
            .insert(path.to_owned(), (content.into(), Mode(0o644)));
    }

    /// A file on the host, if any.
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.state().files.get(path).map(|(c, _)| c.clone())
    }

    /// The mode a file was written with.
    pub fn mode(&self, path: &str) -> Option<Mode> {
        self.state().files.get(path).map(|(_, m)| *m)
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
            .map(|(c, _)| hex::encode(Sha256::digest(c))))
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, ExecError> {
        self.reachable()?;
        let mut state = self.state();
        state.log.push(format!("read {path}"));
        Ok(state.files.get(path).map(|(c, _)| c.clone()))
    }

    fn write(&self, path: &str, input: Input<'_>, mode: Mode) -> Result<(), ExecError> {
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
        state.files.insert(path.to_owned(), (content, mode));
        Ok(())
    }
}
