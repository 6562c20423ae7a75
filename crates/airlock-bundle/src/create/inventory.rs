//! `bundle create --inventory INV`: what `airlock deploy` needs from the gateway on that
//! site once it has no link at all, as spec sections:
//!
//! - `k3s`: the site's `k3s_version` (when it names only a channel, [`k3s_version`] asks the
//!   channel now, as deploy would, and the isolated inventory must then pin that version)
//!   for the nodes' architectures, through the `k3s-releases` and `k3s-install` raw proxies;
//!   with it the release's system images.
//! - `rpms` through `rancher-k3s`: Rancher's `k3s-selinux` and `container-selinux` from the
//!   repository deploy's `.repo` file names for the nodes' EL major and the site's
//!   `k3s_selinux_channel`, with the key it names.
//! - `rpms` through `nvidia-container-toolkit`, when the site has GPU workers: the NVIDIA
//!   container toolkit for each architecture, with the key deploy's `.repo` file names.
//!
//! The nodes' architectures and EL major are not inventory variables (deploy reads them on
//! each node with `uname -m` and `/etc/os-release`), so they come from [`Nodes`]: `--arch`
//! (default `amd64`) and `--el` (default `9`). The RPM sections need the site's gateway to
//! proxy those repositories (`package_proxy_mode`); without that, deploy does not ask the
//! gateway for them and the additions say so in [`Additions::notes`].

use std::time::Duration;

pub use airlock_deploy::artifacts::DEFAULT_CHANNELS;
use airlock_deploy::artifacts::{self, ArtifactError, Http, asset_name};
use airlock_deploy::rpms::{nvidia, selinux};
use airlock_site::site::Site;

use super::spec::{K3sSpec, RpmsSpec, Spec, is_release_name};

/// The nodes' platform, which the inventory does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes {
    /// K3s architecture names (`amd64`, `arm64`, `arm`).
    pub architectures: Vec<String>,
    /// The RHEL major version of the nodes (`8`, `9`, `10`).
    pub el_major: u32,
}

impl Default for Nodes {
    fn default() -> Self {
        Self {
            architectures: vec!["amd64".to_owned()],
            el_major: 9,
        }
    }
}

/// What the inventory adds to a spec, and what the operator should know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Additions {
    pub spec: Spec,
    pub notes: Vec<String>,
}

/// Why the additions cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{0}")]
    Nodes(String),
    #[error("K3s version: {0}")]
    Version(#[from] ArtifactError),
}

/// The K3s release to carry: `k3s_version`, else the latest of `k3s_channel` asked now at
/// `channels` ([`DEFAULT_CHANNELS`] but in tests) through the site's outbound proxy, as
/// `airlock deploy` asks it, with a note saying so.
pub fn k3s_version(
    site: &Site,
    channels: &str,
) -> Result<(String, Option<String>), InventoryError> {
    if let Some(version) = &site.k3s.version {
        if !is_release_name(version) {
            return Err(ArtifactError::BadVersion(version.clone()).into());
        }
        return Ok((version.clone(), None));
    }
    let outbound = artifacts::outbound_proxy(site)?;
    let timeout = site
        .k3s
        .artifact_download_timeout
        .map_or(Duration::from_secs(60), Duration::from_secs);
    let http = Http::new(None, outbound.as_ref(), Some(timeout), false)?;
    let version = artifacts::resolve_channel(&http, channels, &site.k3s.channel)?;
    let note = format!(
        "k3s: the inventory sets no k3s_version; channel `{}` points at {version} now, so the bundle carries {version}: set `k3s_version: {version}` in the isolated site's inventory (deploy cannot ask the channel there)",
        site.k3s.channel
    );
    Ok((version, Some(note)))
}

/// The RPM architecture of a K3s one (`uname -m` on the nodes).
fn rpm_arch(arch: &str) -> &'static str {
    match arch {
        "arm64" => "aarch64",
        "arm" => "armv7hl",
        _ => "x86_64",
    }
}

/// The spec sections `site`'s deploy needs, for K3s `version` on `nodes`.
pub fn additions(site: &Site, version: &str, nodes: &Nodes) -> Result<Additions, InventoryError> {
    if nodes.architectures.is_empty() {
        return Err(InventoryError::Nodes(
            "no node architecture given (amd64, arm64, arm)".to_owned(),
        ));
    }
    for arch in &nodes.architectures {
        asset_name(arch).map_err(|e| InventoryError::Nodes(e.to_string()))?;
    }
    if !(7..=10).contains(&nodes.el_major) {
        return Err(InventoryError::Nodes(format!(
            "EL major {} is not one deploy installs RPM packages on (7, 8, 9, 10)",
            nodes.el_major
        )));
    }
    let mut notes = Vec::new();
    let mut spec = Spec {
        k3s: Some(K3sSpec::new(
            version.to_owned(),
            nodes.architectures.clone(),
        )),
        ..Spec::default()
    };
    let rpm_arches: Vec<String> = nodes
        .architectures
        .iter()
        .map(|a| rpm_arch(a).to_owned())
        .collect();
    let without_proxy = |what: &str, proxy: &str| {
        format!(
            "{what}: not carried: the site's gateway has no `{proxy}` proxy (package_proxy_mode is not `airlock`), so deploy does not ask it for them"
        )
    };
    if site.has_package("rancher-k3s") {
        spec.rpms.push(RpmsSpec {
            proxy: Some("rancher-k3s".to_owned()),
            packages: selinux::PACKAGES.map(str::to_owned).to_vec(),
            repos: vec![format!("{}/", selinux::rancher_path(site, nodes.el_major))],
            arch: rpm_arches.clone(),
            keys: vec![selinux::KEY.to_owned()],
        });
    } else {
        notes.push(without_proxy("SELinux RPMs", "rancher-k3s"));
    }
    if !site.gpu_workers.is_empty() {
        if site.has_package(nvidia::PROXY) {
            for arch in &rpm_arches {
                spec.rpms.push(RpmsSpec {
                    proxy: Some(nvidia::PROXY.to_owned()),
                    packages: nvidia::PACKAGES.map(str::to_owned).to_vec(),
                    repos: vec![format!("{}/", nvidia::repo_path(arch))],
                    arch: vec![arch.clone()],
                    keys: vec![nvidia::KEY.to_owned()],
                });
            }
        } else {
            notes.push(without_proxy("the NVIDIA container toolkit", nvidia::PROXY));
        }
    }
    Ok(Additions { spec, notes })
}

impl Spec {
    /// Adds `other`'s sections to this spec; `other`'s `k3s` is taken only when this spec
    /// has none (a spec's own release wins), and an image already listed is not added again.
    pub fn merge(&mut self, other: Spec) {
        for image in other.images {
            if !self.images.iter().any(|i| i.reference == image.reference) {
                self.images.push(image);
            }
        }
        self.files.extend(other.files);
        self.python.extend(other.python);
        for rpms in other.rpms {
            if !self.rpms.contains(&rpms) {
                self.rpms.push(rpms);
            }
        }
        for chart in other.charts {
            if !self.charts.contains(&chart) {
                self.charts.push(chart);
            }
        }
        if self.k3s.is_none() {
            self.k3s = other.k3s;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use airlock_ansible::inventory::Inventory;

    use super::*;

    /// A site with the gateway proxying packages, and optionally a GPU worker.
    fn site(gpu: bool, extra_vars: &str) -> Site {
        let gpu = if gpu {
            "gpu_workers:\n  hosts:\n    g1.example.test: {ansible_host: 10.0.0.5}\nagents:\n  children: {workers: {}, gpu_workers: {}}\n"
        } else {
            "agents:\n  children: {workers: {}}\n"
        };
        let text = format!(
            "all:\n  vars:\n    air_gapped: true\n    package_proxy_mode: airlock\n{extra_vars}\
             staging:\n  hosts:\n    staging.example.test: {{ansible_host: 10.0.0.2}}\n  vars:\n    staging_k3s_token: abc\n\
             server:\n  hosts:\n    s1.example.test: {{ansible_host: 10.0.0.3}}\n\
             workers:\n  hosts:\n    w1.example.test: {{ansible_host: 10.0.0.4}}\n\
             {gpu}\
             k3s_cluster:\n  children: {{server: {{}}, agents: {{}}}}\n  vars:\n    k3s_token: s3cret\n"
        );
        let inventory = Inventory::parse_str(&text, Path::new("inventory.yaml")).unwrap();
        let (site, diagnostics) = Site::read(&inventory, None);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
        site
    }

    fn proxies(spec: &Spec) -> Vec<(&str, &str)> {
        spec.rpms
            .iter()
            .map(|r| (r.proxy.as_deref().unwrap(), r.repos[0].as_str()))
            .collect()
    }

    #[test]
    fn a_gpu_worker_adds_the_nvidia_toolkit() {
        let nodes = Nodes {
            architectures: vec!["amd64".into(), "arm64".into()],
            el_major: 9,
        };
        let added = additions(&site(true, ""), "v1.31.4+k3s1", &nodes).unwrap();
        assert!(added.notes.is_empty(), "{:?}", added.notes);
        let k3s = added.spec.k3s.as_ref().unwrap();
        assert_eq!(
            (
                k3s.version.as_str(),
                k3s.proxy.as_str(),
                k3s.install_proxy.as_str()
            ),
            ("v1.31.4+k3s1", "k3s-releases", "k3s-install")
        );
        assert_eq!(k3s.architectures, ["amd64", "arm64"]);
        assert_eq!(
            proxies(&added.spec),
            [
                ("rancher-k3s", "k3s/stable/common/centos/9/noarch/"),
                ("nvidia-container-toolkit", "stable/rpm/x86_64/"),
                ("nvidia-container-toolkit", "stable/rpm/aarch64/"),
            ]
        );
        assert_eq!(
            added.spec.rpms[0].packages,
            ["k3s-selinux", "container-selinux"]
        );
        assert_eq!(added.spec.rpms[0].arch, ["x86_64", "aarch64"]);
        assert_eq!(added.spec.rpms[0].keys, ["public.key"]);
        assert_eq!(added.spec.rpms[2].arch, ["aarch64"]);
        assert_eq!(added.spec.rpms[2].keys, ["gpgkey"]);
        assert!(
            added.spec.rpms[1]
                .packages
                .contains(&"nvidia-container-toolkit".to_owned())
        );
    }

    #[test]
    fn without_gpu_workers_there_is_no_toolkit() {
        let added = additions(
            &site(false, "    k3s_selinux_channel: latest\n"),
            "v1.31.4+k3s1",
            &Nodes {
                architectures: vec!["amd64".into()],
                el_major: 8,
            },
        )
        .unwrap();
        assert_eq!(
            proxies(&added.spec),
            [("rancher-k3s", "k3s/latest/common/centos/8/noarch/")]
        );
    }

    #[test]
    fn a_site_without_package_proxies_says_what_is_not_carried() {
        let text = airlock_testkit::inventory::SMALL_SITE;
        let inventory = Inventory::parse_str(text, Path::new("inventory.yaml")).unwrap();
        let (site, _) = Site::read(&inventory, None);
        let added = additions(&site, "v1.31.4+k3s1", &Nodes::default()).unwrap();
        assert!(added.spec.rpms.is_empty());
        assert!(added.spec.k3s.is_some());
        assert!(
            added.notes[0].contains("SELinux RPMs: not carried"),
            "{:?}",
            added.notes
        );
    }

    #[test]
    fn refuses_nodes_deploy_cannot_serve() {
        let site = site(false, "");
        for (nodes, expected) in [
            (
                Nodes {
                    architectures: vec!["x86_64".into()],
                    el_major: 9,
                },
                "unknown architecture `x86_64`",
            ),
            (
                Nodes {
                    architectures: Vec::new(),
                    el_major: 9,
                },
                "no node architecture",
            ),
            (
                Nodes {
                    architectures: vec!["amd64".into()],
                    el_major: 6,
                },
                "EL major 6",
            ),
        ] {
            let error = additions(&site, "v1.31.4+k3s1", &nodes).unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn a_pinned_version_is_used_as_it_is() {
        let pinned = site(false, "    k3s_version: v1.30.2+k3s2\n");
        assert_eq!(
            k3s_version(&pinned, "http://127.0.0.1:9/").unwrap(),
            ("v1.30.2+k3s2".to_owned(), None)
        );
    }

    /// A channel server on loopback: one answer, `status` with `location`.
    fn channel_server(status: &str, location: &str) -> String {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/channels", listener.local_addr().unwrap());
        let answer = format!(
            "HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            stream.write_all(answer.as_bytes()).unwrap();
        });
        url
    }

    #[test]
    fn a_channel_is_resolved_now_and_the_choice_said() {
        let site = site(false, "    k3s_channel: v1.31\n");
        let url = channel_server(
            "302 Found",
            "https://github.com/k3s-io/k3s/releases/tag/v1.31.4%2Bk3s1",
        );
        let (version, note) = k3s_version(&site, &url).unwrap();
        assert_eq!(version, "v1.31.4+k3s1");
        let note = note.unwrap();
        assert!(note.contains("channel `v1.31`"), "{note}");
        assert!(note.contains("set `k3s_version: v1.31.4+k3s1`"), "{note}");
        let url = channel_server("200 OK", "nowhere");
        let error = k3s_version(&site, &url).unwrap_err().to_string();
        assert!(error.contains("expected a redirect"), "{error}");
    }

    #[test]
    fn merging_keeps_the_spec_s_own_release() {
        let mut spec = Spec {
            k3s: Some(K3sSpec::new("v1.30.0+k3s1".into(), vec!["arm64".into()])),
            ..Spec::default()
        };
        let added = additions(&site(true, ""), "v1.31.4+k3s1", &Nodes::default()).unwrap();
        spec.merge(added.spec.clone());
        spec.merge(added.spec);
        assert_eq!(spec.k3s.unwrap().version, "v1.30.0+k3s1");
        assert_eq!(spec.rpms.len(), 2);
    }
}
