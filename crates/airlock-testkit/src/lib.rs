//! Dev-only helpers: an in-process fake OCI registry (with token auth, redirects and
//! injectable faults), static file and directory servers, a Python simple index, and
//! builders for images, multi-arch indexes, RPM repositories and
//! conda channel metadata, and the HTTP clients the integration tests use.

mod chaos;
pub mod conda;
mod daemons;
mod fake_dir;
mod fake_files;
mod fake_pypi;
mod fake_registry;
mod garage;
pub mod http;
mod image;
pub mod inventory;
pub mod netns;
mod rpm;
mod serve;
pub mod sshd;
pub mod tinyproxy;
mod tools;
pub mod wheel;

pub use chaos::{Chaos, Odds};
pub use daemons::{
    Containerd, DockerRegistry, Killed, StaticFiles, free_port, human_bytes, mirror_hosts, noise,
    port_open, serve_airlock, serve_airlock_with_env, wait_until,
};
pub use fake_dir::FakeDir;
pub use fake_files::FakeFiles;
pub use fake_pypi::{Dist, FakePypi};
pub use fake_registry::{AuthMode, FakeRegistry, Fault};
pub use garage::Garage;
pub use image::{Image, Index, Platform, tar_layer};
pub use netns::run;
pub use rpm::{RpmSpec, build_rpm, build_rpm_with_files, createrepo, dnf_install, sign_repository};
pub use tools::{ContainerdFiles, containerd_config, require_tool};
