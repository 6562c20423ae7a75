//! The audit trail: one JSON line per upstream fetch, egress decision, policy decision,
//! login and admin action, appended to a file that rotates by size.
//!
//! It answers, after the fact, "who brought this in from the internet, and when?": every
//! request the gateway sends to an upstream is one `fetch` line carrying the client whose
//! request caused it. The client is known through a [`Context`] the HTTP layer puts around
//! each request ([`Context::scope`]); code that hands work to another task carries it along
//! ([`Context::current`], then `scope` in the task). A fetch outside any context (there are
//! none in the gateway today) would be written with no client rather than not at all.
//!
//! Writing never fails a request: a line that cannot be written is reported in the log (and
//! counted, [`Audit::write_errors`]) and serving goes on. Lines are written whole with one
//! `write` on a file opened for appending, so concurrent writers never interleave them.

mod context;
mod read;
mod record;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

pub use context::Context;
pub use read::{BadLine, Filter, FilterError, MAX_LINE, files, read, read_last};
pub use record::{Kind, Record};

/// Where the trail goes and when it rotates (`[audit]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub path: PathBuf,
    /// The file is rotated before a line would take it past this size.
    pub max_size: u64,
    /// Rotated files kept (`audit.jsonl.1` … `.keep`); older ones are removed.
    pub keep: u32,
}

/// A handle on the trail; cheap to clone. [`Audit::disabled`] writes nothing.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    writer: Mutex<writer::Writer>,
    errors: AtomicU64,
}

impl Audit {
    /// The trail described by `settings`; its directory is created and the file opened now,
    /// so a path the gateway cannot write is a start-up error.
    pub fn open(settings: &Settings) -> std::io::Result<Self> {
        let writer = writer::Writer::open(settings)?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                writer: Mutex::new(writer),
                errors: AtomicU64::new(0),
            })),
        })
    }

    /// A handle that records nothing (tests, and tools that run no gateway).
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// The file written, if any.
    pub fn path(&self) -> Option<PathBuf> {
        let inner = self.inner.as_ref()?;
        let writer = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        Some(writer.path().to_owned())
    }

    /// Appends `record` as one line (its `time` is set now if empty).
    pub fn record(&self, mut record: Record) {
        let Some(inner) = &self.inner else { return };
        if record.time.is_empty() {
            record.time = record::now();
        }
        let mut line = serde_json::to_vec(&record).expect("a record always serializes");
        line.push(b'\n');
        let result = inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append(&line);
        if let Err(error) = result {
            let count = inner.errors.fetch_add(1, Ordering::Relaxed);
            // The first failure, then one in a thousand: a full disk must not flood the log.
            if count % 1000 == 0 {
                tracing::error!(target: "airlock::audit", %error, failures = count + 1, "cannot write the audit trail");
            }
        }
    }

    /// Lines that could not be written since start.
    pub fn write_errors(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.errors.load(Ordering::Relaxed))
    }
}

/// The rotated file `n` of `path` (`audit.jsonl.1` is the newest rotated one).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests;
