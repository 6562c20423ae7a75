//! Every configuration file a site needs, rendered from one [`Site`].
//!
//! ```text
//! <out>/staging/airlock.toml                     the gateway (PRODUCT.md contract)
//! <out>/staging/<host>/airlock.toml              each staging host's, when there are several
//! <out>/nodes/registries.yaml                    K3s: mirrors with Harbor-style rewrites
//! <out>/nodes/certs.d/<registry>/hosts.toml      stock containerd: mirrors with ?ns=
//! <out>/nodes/registries.conf                    podman / CRI-O
//! <out>/keycloak-proxy-mappings.txt              Keycloak's egress proxy option
//! <out>/clients/{pip.conf,condarc,settings.xml,airlock.repo}   package clients
//! <out>/ci/<robot>/config.json                   a robot's login for CI runners (0600)
//! <out>/ci/<robot>/README.txt                    how CI jobs use it
//! ```
//! With several staging hosts, `staging/airlock.toml` is the first one's and each has its own
//! under its inventory name: the same file but for `[server]`'s names. Nodes list every one
//! as a mirror endpoint, in inventory order.
//!
//! Rendering is pure (a list of paths and contents); [`Rendered::write_to`] is the only I/O.

mod ci;
mod clients;
mod coredns;
mod gateway;
mod nodes;

pub use clients::{READ_TIMEOUT_SECS, TIMEOUT_WHY};
pub use coredns::{coredns_custom, coredns_custom_data};

use std::path::{Path, PathBuf};

use airlock_ansible::vault::file::{self, FileError};

use crate::site::{PackageProxyMode, Site, Staging};

/// Why a site could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "the inventory has no staging host, so there is no gateway to point nodes at: add a `staging` group with one host"
    )]
    NoStaging,
    #[error("`airlock_upstreams` `{name}`: `{url}` is not a URL the gateway accepts: {reason}")]
    Upstream {
        name: String,
        url: String,
        reason: String,
    },
    #[error("the cache size `{size}` is not a size the gateway accepts: {reason}")]
    CacheSize { size: String, reason: String },
    #[error("the admin password (`harbor_admin_password`) cannot be hashed: {reason}")]
    AdminPassword { reason: String },
    #[error("the secret of robot `{name}` (`airlock_robots`) cannot be hashed: {reason}")]
    RobotSecret { name: String, reason: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    WritePrivate(#[from] FileError),
}

/// Rendered files: paths relative to the output directory, and their contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub files: Vec<(PathBuf, String)>,
    /// The paths among `files` that hold secrets (robots' logins): written 0600.
    pub private: Vec<PathBuf>,
}

impl Rendered {
    /// The content of one rendered file.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(p, _)| p == Path::new(path))
            .map(|(_, c)| c.as_str())
    }

    /// Write every file under `dir`, creating directories as needed. A private file is
    /// never readable by anyone else, not even while it is written: it goes to a fresh
    /// temporary file (`O_EXCL`, mode 0600) renamed over the target, which also replaces a
    /// planted symlink instead of following it.
    pub fn write_to(&self, dir: &Path) -> Result<(), RenderError> {
        for (relative, content) in &self.files {
            let path = dir.join(relative);
            let io = |source| RenderError::Write {
                path: path.clone(),
                source,
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            if self.private.contains(relative) {
                file::write(&path, content.as_bytes(), file::Content::Plaintext)?;
            } else {
                std::fs::write(&path, content).map_err(io)?;
            }
        }
        Ok(())
    }
}

/// Render every file for `site`.
pub fn render(site: &Site) -> Result<Rendered, RenderError> {
    let staging = site.staging.as_ref().ok_or(RenderError::NoStaging)?;
    let logins = gateway::Logins::of(site, staging)?;
    let mut files = vec![(
        PathBuf::from("staging/airlock.toml"),
        gateway::airlock_toml(site, staging, &logins)?,
    )];
    if site.replicas.len() > 1 {
        for replica in &site.replicas {
            files.push((
                gateway_config_path(site, replica),
                gateway::airlock_toml(site, replica, &logins)?,
            ));
        }
    }
    files.push((
        PathBuf::from("nodes/registries.yaml"),
        nodes::registries_yaml(site),
    ));
    for mirror in &site.mirrors {
        files.push((
            PathBuf::from(format!("nodes/certs.d/{}/hosts.toml", mirror.registry)),
            nodes::hosts_toml(site, mirror),
        ));
    }
    files.push((
        PathBuf::from("nodes/registries.conf"),
        nodes::registries_conf(site),
    ));
    files.push((
        PathBuf::from("keycloak-proxy-mappings.txt"),
        gateway::keycloak_proxy_mappings(site, staging),
    ));
    if site.package_proxy_mode == PackageProxyMode::Gateway {
        files.extend(clients::all(site, staging));
    }
    let mut private = Vec::new();
    for robot in &site.robots {
        let (login, readme) = ci::robot_files(site, staging, robot);
        private.push(login.0.clone());
        files.extend([login, readme]);
    }
    Ok(Rendered { files, private })
}

/// Where [`render`] puts `replica`'s gateway config: `staging/airlock.toml` on a site with
/// one staging host, `staging/<inventory name>/airlock.toml` on a site with several.
pub fn gateway_config_path(site: &Site, replica: &Staging) -> PathBuf {
    if site.replicas.len() > 1 {
        PathBuf::from(format!("staging/{}/airlock.toml", replica.machine.name))
    } else {
        PathBuf::from("staging/airlock.toml")
    }
}

/// The registry endpoint nodes use for one staging host.
fn registry_url(staging: &Staging) -> String {
    format!("https://{}", staging.registry_host)
}

/// A header comment naming the inventory a file came from (`#` comment syntax).
fn header(site: &Site, comment: &str) -> String {
    let name = site
        .inventory
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "{comment} Rendered by `airlock render` from {name}; edit the inventory, not this file.\n"
    )
}

/// A string quoted for YAML and TOML alike (both accept JSON's double-quoted form for these).
fn quote(text: &str) -> String {
    serde_json::to_string(text).expect("strings always serialize")
}
