//! Real tools the interop tests drive: found on `PATH`, or a loud failure naming the
//! package that brings them (tests never skip).

use std::path::PathBuf;

/// The path of `tool`; panics naming the Debian `package` when it is missing.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{tool}` is not installed: apt-get install {package} (run .ci/run)")
        })
}
