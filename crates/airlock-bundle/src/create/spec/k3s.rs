//! A spec's `k3s` section: one K3s release for the architectures of a site's nodes, as
//! `airlock deploy` fetches it through the gateway's raw proxies.
//!
//! ```yaml
//! k3s:
//!   version: v1.31.4+k3s1        # required: a channel cannot be resolved on the isolated side
//!   architectures: [amd64]       # amd64, arm64, arm (K3s's names); default [amd64]
//!   proxy: k3s-releases          # raw proxy of the release assets (this name by default)
//!   install_proxy: k3s-install   # raw proxy whose root is the install script (this name by default)
//! ```

use airlock_ansible::yaml::Node;
use airlock_deploy::artifacts::asset_name;

/// One K3s release, carried for some architectures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sSpec {
    /// A release name (`v1.31.4+k3s1`).
    pub version: String,
    /// K3s architecture names (`amd64`, `arm64`, `arm`), each once.
    pub architectures: Vec<String>,
    /// The raw proxy serving release assets as `<version>/<asset>`.
    pub proxy: String,
    /// The raw proxy whose root is the install script.
    pub install_proxy: String,
}

/// The raw proxy `airlock deploy` asks for release assets.
pub const RELEASES_PROXY: &str = "k3s-releases";
/// The raw proxy `airlock deploy` asks for the install script (at its root).
pub const INSTALL_PROXY: &str = "k3s-install";

impl K3sSpec {
    /// `version` for `architectures` through the proxies `airlock deploy` uses.
    pub fn new(version: String, architectures: Vec<String>) -> Self {
        Self {
            version,
            architectures,
            proxy: RELEASES_PROXY.to_owned(),
            install_proxy: INSTALL_PROXY.to_owned(),
        }
    }
}

/// `v1.31.4+k3s1`, `v1.32.0-rc1+k3s2`: a release name, safe as one path segment.
pub fn is_release_name(version: &str) -> bool {
    version.starts_with('v')
        && version.contains("+k3s")
        && version.len() < 64
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b))
}

pub(super) fn section(node: &Node) -> Result<K3sSpec, String> {
    let map = node
        .as_map()
        .ok_or("`k3s` must be a mapping with `version` (and `architectures`)")?;
    let mut version = None;
    let mut architectures = Vec::new();
    let mut spec = K3sSpec::new(String::new(), Vec::new());
    for (key, value) in map {
        match key.as_str().unwrap_or_default() {
            "version" => {
                let text = super::text(value, "version")?;
                if !is_release_name(text) {
                    return Err(format!(
                        "version {text:?} is not a K3s release name (like v1.31.4+k3s1); a channel cannot be carried"
                    ));
                }
                version = Some(text.to_owned());
            }
            "architectures" => {
                let listed = super::texts(value, "architectures")?;
                if listed.is_empty() {
                    return Err("`architectures` is empty (leave it out for [amd64])".to_owned());
                }
                for arch in listed {
                    asset_name(&arch).map_err(|e| e.to_string())?;
                    if architectures.contains(&arch) {
                        return Err(format!("architecture {arch:?} is listed twice"));
                    }
                    architectures.push(arch);
                }
            }
            "proxy" => super::text(value, "proxy")?.clone_into(&mut spec.proxy),
            "install_proxy" => {
                super::text(value, "install_proxy")?.clone_into(&mut spec.install_proxy);
            }
            other => {
                return Err(format!(
                    "unknown key `{other}` (expected version, architectures, proxy, install_proxy)"
                ));
            }
        }
    }
    spec.version = version.ok_or("needs `version` (like v1.31.4+k3s1)")?;
    if architectures.is_empty() {
        architectures.push("amd64".to_owned());
    }
    spec.architectures = architectures;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Spec;
    use super::*;

    fn parse(text: &str) -> Result<Spec, String> {
        Spec::parse(text, Path::new("spec.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_a_release_with_defaults() {
        let spec = parse("k3s:\n  version: v1.31.4+k3s1\n").unwrap();
        assert_eq!(
            spec.k3s,
            Some(K3sSpec::new("v1.31.4+k3s1".into(), vec!["amd64".into()]))
        );
        assert!(spec.needs_warming());
        let spec = parse(
            "k3s: {version: v1.32.0-rc1+k3s2, architectures: [arm64, arm], proxy: rel, install_proxy: inst}\n",
        )
        .unwrap()
        .k3s
        .unwrap();
        assert_eq!(spec.architectures, ["arm64", "arm"]);
        assert_eq!(
            (spec.proxy.as_str(), spec.install_proxy.as_str()),
            ("rel", "inst")
        );
    }

    #[test]
    fn refuses_what_deploy_could_not_use_by_line() {
        for (text, expected) in [
            (
                "k3s:\n  architectures: [amd64]\n",
                "spec.yaml:2: k3s: needs `version`",
            ),
            ("k3s:\n  version: stable\n", "not a K3s release name"),
            (
                "k3s:\n  version: v1.31.4+k3s1/../x\n",
                "not a K3s release name",
            ),
            (
                "k3s:\n  version: [v1]\n",
                "`version` must be a non-empty string",
            ),
            (
                "k3s:\n  version: v1.31.4+k3s1\n  architectures: [x86_64]\n",
                "unknown architecture `x86_64`: K3s publishes amd64, arm64 and arm",
            ),
            (
                "k3s:\n  version: v1.31.4+k3s1\n  architectures: [amd64, amd64]\n",
                "listed twice",
            ),
            (
                "k3s:\n  version: v1.31.4+k3s1\n  architectures: []\n",
                "is empty",
            ),
            (
                "k3s:\n  version: v1.31.4+k3s1\n  channel: stable\n",
                "unknown key `channel`",
            ),
            (
                "k3s: [v1.31.4+k3s1]\n",
                "spec.yaml:1: k3s: `k3s` must be a mapping",
            ),
            (
                "k3s:\n  version: v1.31.4+k3s1\n  proxy: ''\n",
                "`proxy` must be a non-empty string",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
