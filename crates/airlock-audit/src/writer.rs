//! The file: appended to, rotated by size (`audit.jsonl` → `.1` → … → `.keep`, the oldest
//! removed).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::{Settings, rotated};

#[derive(Debug)]
pub(crate) struct Writer {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
}

impl Writer {
    pub(crate) fn open(settings: &Settings) -> std::io::Result<Self> {
        if let Some(dir) = settings.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = open(&settings.path)?;
        let mut size = file.metadata()?.len();
        // A line a crash cut short would swallow the next one written: end it first.
        if size > 0 && !ends_with_newline(&settings.path)? {
            file.write_all(b"\n")?;
            size += 1;
        }
        Ok(Self {
            path: settings.path.clone(),
            max_size: settings.max_size,
            keep: settings.keep,
            file: Some(file),
            size,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one whole line, rotating first when it would take the file past `max_size`
    /// (a line longer than `max_size` still gets a file of its own).
    pub(crate) fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        // A failed rotation left no file open: try again now.
        if self.file.is_none() {
            let file = open(&self.path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path).or_else(not_found_is_ok)?;
        } else {
            std::fs::remove_file(rotated(&self.path, self.keep)).or_else(not_found_is_ok)?;
            for n in (1..self.keep).rev() {
                std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1))
                    .or_else(not_found_is_ok)?;
            }
            std::fs::rename(&self.path, rotated(&self.path, 1)).or_else(not_found_is_ok)?;
        }
        let file = open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }
}

fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = File::open(path)?;
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Opened for appending; readable by owner and group only (it names clients and users).
fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn not_found_is_ok(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}
