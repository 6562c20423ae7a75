//! Progress bars for the passes over a bundle's bytes (`bundle create`, `verify`,
//! `import`): bytes, total and rate on stderr, drawn only when stderr is a terminal.
//! Elsewhere (logs, pipes, tests) nothing is drawn; the command's summary line says what
//! was done.

use std::io::IsTerminal as _;
use std::sync::Arc;

use airlock_bundle::Progress;
use airlock_types::Digest;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar for `what` ("verifying", "importing", "writing"), or silence off a terminal.
pub fn bar(what: &'static str) -> Arc<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Arc::new(Bar {
            what,
            bar: ProgressBar::hidden(),
        })
    } else {
        Arc::new(airlock_bundle::progress::Silent)
    }
}

struct Bar {
    what: &'static str,
    bar: ProgressBar,
}

impl Progress for Bar {
    fn start(&self, total: Option<u64>) {
        let style = match total {
            Some(total) => {
                self.bar.set_length(total);
                ProgressStyle::with_template(
                    "{prefix:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta} {msg}",
                )
                .map(|style| style.progress_chars("=> "))
            }
            None => {
                ProgressStyle::with_template("{spinner} {prefix:10} {bytes} {bytes_per_sec} {msg}")
            }
        };
        self.bar
            .set_style(style.unwrap_or_else(|_| ProgressStyle::default_bar()));
        self.bar.set_prefix(self.what);
        self.bar.set_position(0);
        self.bar.set_draw_target(ProgressDrawTarget::stderr());
    }

    fn blob(&self, digest: &Digest, _size: u64) {
        let text = digest.to_string();
        // "sha256:" and the first 12 hex digits, as registries abbreviate.
        self.bar
            .set_message(text.chars().take(19).collect::<String>());
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
