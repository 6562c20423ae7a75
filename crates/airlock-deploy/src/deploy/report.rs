//! What deploy did, host by host, as it happens, and a recap at the end (like Ansible's).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::Mutex;

use super::Mode;

/// Tasks per host by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub ok: usize,
    pub changed: usize,
    pub failed: usize,
}

/// Prints task outcomes as they happen and counts them per host.
pub struct Report {
    out: Mutex<Box<dyn Write + Send>>,
    counts: Mutex<BTreeMap<String, Counts>>,
    mode: Mode,
}

impl Report {
    /// In [`Mode::Check`], outcomes read "would change" instead of "changed".
    pub fn new(out: Box<dyn Write + Send>, mode: Mode) -> Self {
        Self {
            out: Mutex::new(out),
            counts: Mutex::new(BTreeMap::new()),
            mode,
        }
    }

    fn print(&self, text: &str) {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    fn count(&self, host: &str, f: impl FnOnce(&mut Counts)) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(counts.entry(host.to_owned()).or_default());
    }

    /// A host takes part even if no task ran on it yet (so the recap lists it).
    pub fn host(&self, host: &str) {
        self.count(host, |_| {});
    }

    pub fn stage(&self, name: &str, what: &str) {
        self.print(&format!("\n== {name}: {what}"));
    }

    pub fn ok(&self, host: &str, task: &str) {
        self.count(host, |c| c.ok += 1);
        self.print(&format!("ok: {host}: {task}"));
    }

    /// A change made (or, in check mode, one that would be made), with optional detail
    /// (a diff) printed under it.
    pub fn changed(&self, host: &str, task: &str, detail: Option<&str>) {
        self.count(host, |c| c.changed += 1);
        let verb = if self.mode == Mode::Check {
            "would change"
        } else {
            "changed"
        };
        let mut text = format!("{verb}: {host}: {task}");
        if let Some(detail) = detail.filter(|d| !d.is_empty()) {
            text.push('\n');
            text.push_str(detail.trim_end());
        }
        self.print(&text);
    }

    pub fn skipped(&self, host: &str, task: &str) {
        self.host(host);
        self.print(&format!("skipped: {host}: {task}"));
    }

    pub fn failed(&self, host: &str, task: &str, error: &str) {
        self.count(host, |c| c.failed += 1);
        self.print(&format!("failed: {host}: {task}\n{error}"));
    }

    pub fn note(&self, text: &str) {
        self.print(text);
    }

    pub fn counts(&self) -> BTreeMap<String, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The recap: one line per host, `<host> : ok=N changed=N failed=N`.
    pub fn recap(&self) {
        let counts = self.counts();
        let width = counts.keys().map(String::len).max().unwrap_or(0);
        let mut text = String::from("\nRECAP");
        if self.mode == Mode::Check {
            text.push_str(" (check mode: nothing was changed)");
        }
        for (host, c) in &counts {
            let _ = write!(
                text,
                "\n{host:<width$} : ok={} changed={} failed={}",
                c.ok, c.changed, c.failed
            );
        }
        self.print(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn recap_counts_per_host() {
        let sink = Sink::default();
        let report = Report::new(Box::new(sink.clone()), Mode::Apply);
        report.ok("a", "x");
        report.changed("a", "y", Some("+new"));
        report.failed("bb", "z", "boom");
        report.host("c");
        report.recap();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("changed: a: y\n+new"), "{text}");
        assert!(text.contains("a  : ok=1 changed=1 failed=0"), "{text}");
        assert!(text.contains("bb : ok=0 changed=0 failed=1"), "{text}");
        assert!(text.contains("c  : ok=0 changed=0 failed=0"), "{text}");
    }
}
