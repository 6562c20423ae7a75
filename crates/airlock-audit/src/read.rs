//! Reading the trail back, oldest line first across the rotated files, with filters.
//!
//! The file is the gateway's, but a reader still meets whatever is in it: a line cut short
//! by a full disk, a line edited by hand, a file that is not a trail at all. Such lines are
//! reported as [`BadLine`]s (file, line number, why) and reading goes on; a line longer
//! than [`MAX_LINE`] is skipped without being held in memory.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::{Kind, Record, rotated};

/// The longest line read; the gateway's own lines are far shorter.
pub const MAX_LINE: usize = 64 * 1024;
/// Rotated files looked for at most (`.1` … `.MAX_ROTATED`).
const MAX_ROTATED: u32 = 1000;

/// A line that is not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub file: PathBuf,
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// Which records to keep; every field set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Records at or after this time.
    pub since: Option<SystemTime>,
    pub kind: Option<Kind>,
    pub proxy: Option<String>,
    /// The client address, exactly.
    pub client: Option<String>,
    /// A part of the item (`library/alpine`, a file name, a host).
    pub item: Option<String>,
    pub user: Option<String>,
}

/// A filter that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("--since {0:?} is neither a duration (30m, 2h, 7d) nor a time (2026-12-04T10:00:00Z)")]
    Since(String),
}

impl Filter {
    /// `since` as an operator writes it: a duration back from `now` (`30m`, `2h`, `7d`) or
    /// an RFC 3339 time.
    pub fn parse_since(text: &str, now: SystemTime) -> Result<SystemTime, FilterError> {
        if let Ok(ago) = humantime::parse_duration(text) {
            return Ok(now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH));
        }
        humantime::parse_rfc3339_weak(text).map_err(|_| FilterError::Since(text.to_owned()))
    }

    pub fn matches(&self, record: &Record) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        self.kind.is_none_or(|k| k == record.kind)
            && same(&self.proxy, &record.proxy)
            && same(&self.client, &record.client)
            && same(&self.user, &record.user)
            && self.item.as_ref().is_none_or(|part| {
                record
                    .item
                    .as_ref()
                    .is_some_and(|item| item.contains(part.as_str()))
            })
            && self.since.is_none_or(|since| {
                // A record whose time cannot be read is kept: a filter hides nothing it
                // cannot judge.
                humantime::parse_rfc3339_weak(&record.time).map_or(true, |t| t >= since)
            })
    }
}

/// The files of the trail at `path`, oldest first: `.N` … `.1`, then `path` itself.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut rotated_files: Vec<PathBuf> = (1..=MAX_ROTATED)
        .map(|n| rotated(path, n))
        .take_while(|p| p.exists())
        .collect();
    rotated_files.reverse();
    rotated_files.push(path.to_owned());
    rotated_files
}

/// Calls `each` for every record `filter` keeps and every bad line, oldest first. A missing
/// file is an empty trail.
pub fn read(
    path: &Path,
    filter: &Filter,
    mut each: impl FnMut(Result<Record, BadLine>),
) -> std::io::Result<()> {
    for file in files(path) {
        let handle = match std::fs::File::open(&file) {
            Ok(handle) => handle,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        read_file(&file, handle, filter, &mut each)?;
    }
    Ok(())
}

/// The newest `limit` records `filter` keeps (oldest first), and the bad lines met.
pub fn read_last(
    path: &Path,
    filter: &Filter,
    limit: usize,
) -> std::io::Result<(Vec<Record>, Vec<BadLine>)> {
    let mut kept = VecDeque::with_capacity(limit.min(4096));
    let mut bad = Vec::new();
    read(path, filter, |entry| match entry {
        Ok(record) => {
            if kept.len() == limit {
                kept.pop_front();
            }
            if limit > 0 {
                kept.push_back(record);
            }
        }
        Err(line) => {
            if bad.len() < 100 {
                bad.push(line);
            }
        }
    })?;
    Ok((kept.into(), bad))
}

fn read_file(
    path: &Path,
    file: std::fs::File,
    filter: &Filter,
    each: &mut impl FnMut(Result<Record, BadLine>),
) -> std::io::Result<()> {
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let bad = |line: u64, reason: String| BadLine {
        file: path.to_owned(),
        line,
        reason,
    };
    for number in 1.. {
        buf.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if read == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
            skip_line(&mut reader)?;
            each(Err(bad(number, format!("longer than {MAX_LINE} bytes"))));
            continue;
        }
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(text) {
            Ok(record) if filter.matches(&record) => each(Ok(record)),
            Ok(_) => {}
            Err(e) => each(Err(bad(number, format!("not an audit record: {e}")))),
        }
    }
    Ok(())
}

/// Reads past the rest of an overlong line, a buffer at a time.
fn skip_line(reader: &mut BufReader<std::fs::File>) -> std::io::Result<()> {
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(());
        }
        if let Some(at) = available.iter().position(|&b| b == b'\n') {
            reader.consume(at + 1);
            return Ok(());
        }
        let n = available.len();
        reader.consume(n);
    }
}
