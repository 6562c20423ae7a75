//! `offline = true`: a proxy's cache filled through a real upstream, then the same data
//! directory started again offline with the upstream on a closed port. Every listing holds
//! only what the store holds, and real clients (pip, dnf, py-rattler) resolve to it; Helm's
//! index over HTTP. Then the error paths: nothing cached, a damaged cached document,
//! hostile paths.

mod conda;
mod errors;
mod helm;
mod pypi;
mod yum;

use std::path::Path;

use crate::common;

/// Starts `proxy` (one `[[proxy]]` table without its `upstream`) on `dir`'s data with
/// `upstream`, offline or not.
pub async fn start(dir: &Path, proxy: &str, upstream: &str, offline: bool) -> common::Stoppable {
    common::start_stoppable(
        dir,
        &format!("[[proxy]]\n{proxy}\nupstream = \"{upstream}\"\noffline = {offline}\n"),
    )
    .await
}

/// An upstream URL on a loopback port nothing listens on, with `path` below it.
pub fn unreachable(path: &str) -> String {
    format!("http://127.0.0.1:{}/{path}", common::closed_port())
}

/// Output of a client run, for assertion messages.
pub fn shown(output: &std::process::Output) -> String {
    format!(
        "{}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
