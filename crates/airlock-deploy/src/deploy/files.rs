//! Placing a file on a host only when it differs (content, mode or owner), and showing the
//! difference.

use std::fmt::Write as _;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use super::Mode;
use super::report::Report;
use super::selinux_policy::RPM_DIR;
use crate::rpms::CachedRpm;
use airlock_remote::{ExecError, Executor, FileState, Input, Perms, quote};

/// Who owns what deploy places, unless a spec says otherwise: deploy runs as root, and a
/// file another user owns could be rewritten by that user.
pub const ROOT: &str = "root:root";

/// A file as it should be on a host.
#[derive(Debug, Clone)]
pub struct FileSpec {
    pub path: String,
    pub source: Source,
    pub perms: Perms,
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
            perms: Perms::owned(mode, ROOT),
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
            perms: Perms::owned(mode, ROOT),
            opaque: true,
        }
    }

    /// The same file owned by `owner` (`user:group`) instead of root.
    #[must_use]
    pub fn owned_by(mut self, owner: &str) -> Self {
        self.perms.owner = Some(owner.to_owned());
        self
    }

    pub fn sha256(&self) -> String {
        match &self.source {
            Source::Text(text) => hex::encode(Sha256::digest(text.as_bytes())),
            Source::Local { sha256, .. } => sha256.clone(),
        }
    }
}

/// Make `spec` true on the host. Returns whether the file changed (in check mode: would
/// change); the report gets one line, with a unified diff for text files and a line for a
/// wrong mode or owner. Any difference rewrites the whole file (a fresh temporary, renamed),
/// never a `chmod` in place, which would follow a symlink planted at the path.
pub fn ensure(
    exec: &dyn Executor,
    spec: &FileSpec,
    mode: Mode,
    report: &Report,
) -> Result<bool, ExecError> {
    let host = exec.host();
    let current = exec.stat(&spec.path)?;
    let wanted = spec.sha256();
    let same_content = current.as_ref().is_some_and(|c| c.sha256 == wanted);
    let perms = perms_detail(current.as_ref(), &spec.perms);
    if same_content && perms.is_none() {
        report.ok(host, &spec.path);
        return Ok(false);
    }
    let mut detail = if same_content {
        String::new()
    } else {
        match (&spec.source, spec.opaque) {
            (Source::Text(text), false) => {
                let old = match current {
                    Some(_) => exec.read(&spec.path)?.unwrap_or_default(),
                    None => Vec::new(),
                };
                diff(&spec.path, &String::from_utf8_lossy(&old), text)
            }
            _ => match &current {
                Some(old) => format!("    sha256 {} -> {wanted}\n", short(&old.sha256)),
                None => format!("    new file, sha256 {wanted}\n"),
            },
        }
    };
    if let Some(perms) = perms {
        detail.push_str(&perms);
    }
    if mode == Mode::Apply {
        match &spec.source {
            Source::Text(text) => {
                exec.write(&spec.path, Input::Bytes(text.as_bytes()), &spec.perms)?;
            }
            Source::Local { path, .. } => exec.write(&spec.path, Input::File(path), &spec.perms)?,
        }
    }
    report.changed(host, &spec.path, Some(detail.trim_end()));
    Ok(true)
}

/// Make `path` a directory with `mode` (parents created, root's). Returns whether it changed.
pub fn ensure_dir(
    exec: &dyn Executor,
    path: &str,
    mode: u32,
    run: Mode,
    report: &Report,
) -> Result<bool, ExecError> {
    let host = exec.host();
    let p = quote(path);
    let wanted = airlock_remote::Mode(mode);
    let current = exec.run(&format!(
        "if [ -d {p} ] && [ ! -L {p} ]; then stat -c %a {p}; else echo absent; fi"
    ))?;
    let current = current.trim();
    let detail = match u32::from_str_radix(current, 8) {
        Ok(m) if m == mode => {
            report.ok(host, &format!("{path}/"));
            return Ok(false);
        }
        Ok(m) => format!("    mode {} -> {wanted}", airlock_remote::Mode(m)),
        Err(_) => format!("    new directory, mode {wanted}"),
    };
    if run == Mode::Apply {
        exec.run(&format!("mkdir -p {p} && chmod {wanted} {p}"))?;
    }
    report.changed(host, &format!("{path}/"), Some(&detail));
    Ok(true)
}

/// Make sure no file is at `path`. Returns whether one was (in check mode: would be) removed.
pub fn ensure_absent(
    exec: &dyn Executor,
    path: &str,
    mode: Mode,
    report: &Report,
) -> Result<bool, ExecError> {
    if exec.stat(path)?.is_none() {
        return Ok(false);
    }
    if mode == Mode::Apply {
        exec.run(&format!("rm -f {}", quote(path)))?;
    }
    report.changed(exec.host(), path, Some("    removed (no longer needed)"));
    Ok(true)
}

/// The report lines for an existing file whose mode or owner is not the wanted one.
fn perms_detail(current: Option<&FileState>, wanted: &Perms) -> Option<String> {
    let current = current?;
    let mut out = String::new();
    if current.mode != wanted.mode {
        let _ = writeln!(out, "    mode {} -> {}", current.mode, wanted.mode);
    }
    if let Some(owner) = wanted.owner.as_deref().filter(|o| *o != current.owner) {
        let _ = writeln!(out, "    owner {} -> {owner}", current.owner);
    }
    (!out.is_empty()).then_some(out)
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

/// Place the gateway's CA (when the node needs it: dnf reaches the gateway over TLS), then
/// the `.repo` file pointing at the gateway's yum proxy; returns the `dnf` command that
/// installs `packages` from it.
pub fn install_through_repo(
    exec: &dyn Executor,
    ca: Option<(&str, &str)>,
    repo: (&str, String),
    packages: &[&str],
    mode: Mode,
    report: &Report,
) -> Result<String, ExecError> {
    if let Some((path, pem)) = ca {
        ensure(exec, &FileSpec::text(path, pem, 0o644), mode, report)?;
    }
    ensure(exec, &FileSpec::text(repo.0, repo.1, 0o644), mode, report)?;
    Ok(format!("dnf -y install {}", packages.join(" ")))
}

/// Copy RPMs resolved on the control node into [`RPM_DIR`] on the host; returns the `dnf`
/// command that installs them from there.
pub fn install_from_files(
    exec: &dyn Executor,
    rpms: &[CachedRpm],
    mode: Mode,
    report: &Report,
) -> Result<String, ExecError> {
    let mut paths = Vec::new();
    for rpm in rpms {
        let path = format!("{RPM_DIR}/{}", rpm.package.file_name);
        let spec = FileSpec::local(&path, rpm.path.clone(), rpm.sha256.clone(), 0o644);
        ensure(exec, &spec, mode, report)?;
        paths.push(quote(&path));
    }
    Ok(format!("dnf -y install {}", paths.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_remote::fake::Fake;

    fn report() -> Report {
        Report::new(Box::new(std::io::sink()), Mode::Apply)
    }

    type Sink = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

    /// A report whose output the test can read.
    fn captured(mode: Mode) -> (Sink, Report) {
        struct W(Sink);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        (sink.clone(), Report::new(Box::new(W(sink)), mode))
    }

    #[test]
    fn writes_only_what_differs() {
        let host = Fake::new("n1");
        let spec = FileSpec::text("/etc/x.conf", "a\nb\n", 0o600);
        let r = report();
        assert!(ensure(&host, &spec, Mode::Apply, &r).unwrap());
        assert_eq!(host.file("/etc/x.conf").unwrap(), b"a\nb\n");
        assert_eq!(host.mode("/etc/x.conf"), Some(airlock_remote::Mode(0o600)));
        assert!(!ensure(&host, &spec, Mode::Apply, &r).unwrap());
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
        let (sink, r) = captured(Mode::Check);
        assert!(ensure(&host, &spec, Mode::Check, &r).unwrap());
        assert_eq!(host.file("/etc/x.conf").unwrap(), b"a\nb\n");
        let text = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
        assert!(text.contains("would change: n1: /etc/x.conf"), "{text}");
        assert!(text.contains("-b\n+c"), "{text}");
    }

    /// Regression: a file with the wanted content counted as up to date whatever its mode
    /// or owner, so a key left world-readable (or owned by another user) stayed that way.
    #[test]
    fn right_content_with_wrong_mode_or_owner_is_changed_and_fixed() {
        let host = Fake::new("n1");
        host.put_with("/etc/airlock/tls.key", "KEY\n", 0o644, "root:root");
        let spec =
            FileSpec::text("/etc/airlock/tls.key", "KEY\n", 0o600).owned_by("airlock:airlock");
        let (sink, r) = captured(Mode::Check);
        assert!(
            ensure(&host, &spec, Mode::Check, &r).unwrap(),
            "check mode sees it"
        );
        let text = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("would change: n1: /etc/airlock/tls.key"),
            "{text}"
        );
        assert!(text.contains("mode 0644 -> 0600"), "{text}");
        assert!(
            text.contains("owner root:root -> airlock:airlock"),
            "{text}"
        );
        assert_eq!(
            host.mode("/etc/airlock/tls.key"),
            Some(airlock_remote::Mode(0o644)),
            "check changes nothing"
        );

        assert!(ensure(&host, &spec, Mode::Apply, &report()).unwrap());
        assert_eq!(
            host.mode("/etc/airlock/tls.key"),
            Some(airlock_remote::Mode(0o600))
        );
        assert_eq!(
            host.owner("/etc/airlock/tls.key").unwrap(),
            "airlock:airlock"
        );
        assert!(!ensure(&host, &spec, Mode::Apply, &report()).unwrap());

        host.put_with("/etc/x.conf", "a\n", 0o644, "nobody:nogroup");
        let root_owned = FileSpec::text("/etc/x.conf", "a\n", 0o644);
        assert!(ensure(&host, &root_owned, Mode::Apply, &report()).unwrap());
        assert_eq!(host.owner("/etc/x.conf").unwrap(), "root:root");
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
        assert!(ensure(&host, &spec, Mode::Apply, &r).unwrap());
        assert_eq!(
            host.file("/usr/local/bin/k3s").unwrap(),
            b"\x7fELF stand-in"
        );
        assert!(!ensure(&host, &spec, Mode::Apply, &r).unwrap());
        assert!(
            !host.log().iter().any(|l| l.starts_with("read")),
            "{:?}",
            host.log()
        );
    }
}
