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
            panic!("`{tool}` is not installed: apt-get install {package} (run scripts/test.sh)")
        })
}

/// A private containerd's files under `dir`: its config and its socket.
pub struct ContainerdFiles {
    pub config: PathBuf,
    pub socket: PathBuf,
}

/// Writes a config for a private containerd (root, state, sockets under `dir`; only the
/// plugins `ctr pull` needs), so tests never touch the system's.
// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#[allow(clippy::unnecessary_debug_formatting)]
pub fn containerd_config(dir: &std::path::Path) -> ContainerdFiles {
    std::fs::create_dir_all(dir).unwrap();
    let socket = dir.join("c.sock");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = {:?}\nstate = {:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.devmapper\"]\n\
             [grpc]\naddress = {:?}\n[ttrpc]\naddress = {:?}\n[plugins.\"io.containerd.internal.v1.opt\"]\npath = {:?}\n",
            dir.join("root"),
            dir.join("state"),
            socket,
            dir.join("t.sock"),
            dir.join("opt"),
        ),
    )
    .unwrap();
    ContainerdFiles { config, socket }
}
