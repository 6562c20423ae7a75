//! Placing a file on a host only when its content differs, and showing the difference.

use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use super::report::Report;
use crate::exec::{ExecError, Executor, Input, Mode};

/// A file as it should be on a host.
#[derive(Debug, Clone)]
pub struct FileSpec {
    pub path: String,
    pub source: Source,
    pub mode: Mode,
    /// Shown in reports instead of a diff (secrets, binaries).
    pub opaque: bool,
}

/// Where the content comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Text(String),
    /// A local file (a binary: streamed, never loaded whole) and its sha256.
    Local {
        path: PathBuf,
        sha256: String,
    },
}

impl FileSpec {
    pub fn text(path: &str, content: impl Into<String>, mode: u32) -> Self {
        Self {
            path: path.to_owned(),
            source: Source::Text(content.into()),
            mode: Mode(mode),
            opaque: false,
        }
    }

    pub fn local(path: &str, local: PathBuf, sha256: String, mode: u32) -> Self {
        Self {
            path: path.to_owned(),
            source: Source::Local {
                path: local,
                sha256,
            },
            mode: Mode(mode),
            opaque: true,
        }
    }

    pub fn sha256(&self) -> String {
        match &self.source {
            Source::Text(text) => hex::encode(Sha256::digest(text.as_bytes())),
            Source::Local { sha256, .. } => sha256.clone(),
        }
    }
}

/// Make `spec` true on the host. Returns whether the file changed (in check mode: would
/// change); the report gets one line, with a unified diff for text files.
pub fn ensure(
    exec: &dyn Executor,
    spec: &FileSpec,
    check: bool,
    report: &Report,
) -> Result<bool, ExecError> {
    let host = exec.host();
    let current = exec.sha256(&spec.path)?;
    let wanted = spec.sha256();
    if current.as_deref() == Some(wanted.as_str()) {
        report.ok(host, &spec.path);
        return Ok(false);
    }
    let detail = match (&spec.source, spec.opaque) {
        (Source::Text(text), false) => {
            let old = match current {
                Some(_) => exec.read(&spec.path)?.unwrap_or_default(),
                None => Vec::new(),
            };
            Some(diff(&spec.path, &String::from_utf8_lossy(&old), text))
        }
        _ => Some(match current {
            Some(old) => format!("    sha256 {} -> {wanted}", short(&old)),
            None => format!("    new file, sha256 {wanted}"),
        }),
    };
    if !check {
        match &spec.source {
            Source::Text(text) => {
                exec.write(&spec.path, Input::Bytes(text.as_bytes()), spec.mode)?;
            }
            Source::Local { path, .. } => exec.write(&spec.path, Input::File(path), spec.mode)?,
        }
    }
    report.changed(host, &spec.path, detail.as_deref());
    Ok(true)
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

/// A unified diff of a file's old and new text.
pub fn diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path} (on host)"), &format!("{path} (wanted)"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fake::Fake;

    fn report() -> Report {
        Report::new(Box::new(std::io::sink()), false)
    }

    #[test]
    fn writes_only_what_differs() {
        let host = Fake::new("n1");
        let spec = FileSpec::text("/etc/x.conf", "a\nb\n", 0o600);
        let r = report();
        assert!(ensure(&host, &spec, false, &r).unwrap());
        assert_eq!(host.file("/etc/x.conf").unwrap(), b"a\nb\n");
        assert_eq!(host.mode("/etc/x.conf"), Some(Mode(0o600)));
        assert!(!ensure(&host, &spec, false, &r).unwrap());
        assert_eq!(
            host.log().iter().filter(|l| l.starts_with("write")).count(),
            1
        );
        assert_eq!(r.counts()["n1"].changed, 1);
        assert_eq!(r.counts()["n1"].ok, 1);
    }

    #[test]
    fn check_mode_changes_nothing_and_shows_the_diff() {
        let host = Fake::new("n1");
        host.put("/etc/x.conf", "a\nb\n");
        let spec = FileSpec::text("/etc/x.conf", "a\nc\n", 0o644);
        let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct W(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let r = Report::new(Box::new(W(sink.clone())), true);
        assert!(ensure(&host, &spec, true, &r).unwrap());
        assert_eq!(host.file("/etc/x.conf").unwrap(), b"a\nb\n");
        let text = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
        assert!(text.contains("would change: n1: /etc/x.conf"), "{text}");
        assert!(text.contains("-b\n+c"), "{text}");
    }

    #[test]
    fn binaries_are_compared_by_hash_and_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("k3s");
        std::fs::write(&local, b"\x7fELF stand-in").unwrap();
        let sha = hex::encode(Sha256::digest(b"\x7fELF stand-in"));
        let host = Fake::new("n1");
        let spec = FileSpec::local("/usr/local/bin/k3s", local, sha, 0o755);
        let r = report();
        assert!(ensure(&host, &spec, false, &r).unwrap());
        assert_eq!(
            host.file("/usr/local/bin/k3s").unwrap(),
            b"\x7fELF stand-in"
        );
        assert!(!ensure(&host, &spec, false, &r).unwrap());
        assert!(
            !host.log().iter().any(|l| l.starts_with("read")),
            "{:?}",
            host.log()
        );
    }
}
