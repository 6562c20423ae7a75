//! `SPEC.yaml`: what `airlock bundle create` puts in a bundle.
//!
//! ```yaml
//! images:
//!   - docker.io/library/postgres:15              # all platforms of an index
//!   - ref: ghcr.io/org/app@sha256:…
//!     platforms: [linux/amd64]
//!     verify: {cosign_key: keys/org.pub}         # relative to this file's directory
//! files:
//!   - url: https://github.com/k3s-io/k3s/releases/download/v1.31.4%2Bk3s1/k3s
//!     sha256: "…"                                # required
//! python:
//!   requirements: locks/requirements.txt         # pins with --hash=sha256:…, or a pylock.toml
//!   proxy: pypi-proxy                             # default: the first pypi proxy
//! rpms:
//!   proxy: rancher-k3s                            # a yum proxy; default: the first one
//!   packages: [k3s-selinux, container-selinux]    # with their dependency closure
//!   repos: [k3s/stable/common/centos/9/noarch/]   # below the proxy; default: its root
//!   arch: [x86_64]                                # default: this machine's
//!   keys: [public.key]                            # files below the proxy (GPG keys), as they are
//! charts:
//!   - {proxy: bitnami, name: postgresql, version: 15.5.0}
//! k3s:
//!   version: v1.31.4+k3s1                         # required (a channel cannot be resolved offline)
//!   architectures: [amd64, arm64]                 # default [amd64]
//! ```
//!
//! An image with `verify` is carried only with a valid cosign signature by that key (the
//! PEM public key `cosign generate-key-pair` writes), and its signature image travels with
//! it (tagged `registry/repo:sha256-<hex>.sig`).
//!
//! Paths (`python.requirements`) are relative to the spec's directory; the lock is read
//! when the spec is (`spec/python.rs`), so its mistakes are reported with its file and line.
//! `python` and `rpms` take one mapping or a list of them. `k3s` is read in `spec/k3s.rs`.

mod k3s;
mod python;

use std::path::{Path, PathBuf};

use airlock_ansible::yaml::{self, Node};
use airlock_types::{Digest, ImageRef};

pub use k3s::{INSTALL_PROXY, K3sSpec, RELEASES_PROXY, is_release_name};
pub use python::{Pin, parse_pylock, parse_requirements};

/// A parsed spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    pub images: Vec<ImageSpec>,
    pub files: Vec<FileSpec>,
    pub python: Vec<PythonSpec>,
    pub rpms: Vec<RpmsSpec>,
    pub charts: Vec<ChartSpec>,
    /// A K3s release for the nodes (`--inventory` adds one too).
    pub k3s: Option<K3sSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub reference: ImageRef,
    /// `os/arch` pairs to carry from an index; empty: every platform.
    pub platforms: Vec<String>,
    /// Signature checks the image must pass before it is carried.
    pub verify: Option<Verify>,
}

/// An image entry's `verify` mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    /// The cosign public key (PEM), resolved against the spec's directory.
    pub cosign_key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub url: url::Url,
    pub sha256: Digest,
}

/// Python packages pinned by a lock, fetched through a `pypi` proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonSpec {
    /// The lock, as resolved against the spec's directory.
    pub requirements: PathBuf,
    /// `None`: the configuration's first `pypi` proxy.
    pub proxy: Option<String>,
    /// What the lock pins, in its order.
    pub pins: Vec<Pin>,
}

/// RPM packages by name, with their dependency closure, from a `yum` proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmsSpec {
    /// `None`: the configuration's first `yum` proxy.
    pub proxy: Option<String>,
    pub packages: Vec<String>,
    /// Repository directories below the proxy (`""` or ending in `/`); `[""]` by default.
    pub repos: Vec<String>,
    /// Architectures to resolve for (`noarch` is always taken); this machine's by default.
    pub arch: Vec<String>,
    /// Other files below the proxy to carry as they are: the GPG keys the nodes' `.repo`
    /// files name (`public.key`).
    pub keys: Vec<String>,
}

/// One chart version from a `helm` proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartSpec {
    pub proxy: String,
    pub name: String,
    pub version: String,
}

/// Why a spec cannot be used; the message names the file, line and key.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct SpecError {
    file: String,
    line: usize,
    message: String,
}

impl Spec {
    /// Whether a section names package files that are fetched by warming a gateway
    /// ([`super::warm`]) and carried from its store, rather than fetched directly.
    pub fn needs_warming(&self) -> bool {
        !(self.python.is_empty()
            && self.rpms.is_empty()
            && self.charts.is_empty()
            && self.k3s.is_none())
    }

    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: path.display().to_string(),
            line: 0,
            message: format!("cannot read the spec: {e}"),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, SpecError> {
        let fail = |node: &Node, message: String| SpecError {
            file: path.display().to_string(),
            line: node.mark.line,
            message,
        };
        let document = yaml::parse_str(text, path).map_err(|e| SpecError {
            file: path.display().to_string(),
            line: e.mark.line,
            message: e.message,
        })?;
        let mut spec = Spec::default();
        let dir = path.parent().unwrap_or(Path::new(""));
        if document.root.is_null() {
            return Ok(spec);
        }
        let Some(root) = document.root.as_map() else {
            return Err(fail(
                &document.root,
                "the spec must be a mapping".to_owned(),
            ));
        };
        for (key, value) in root {
            match key.as_str().unwrap_or_default() {
                "images" => {
                    let base = path.parent().unwrap_or(Path::new(""));
                    for item in seq(value, "images").map_err(|m| fail(value, m))? {
                        spec.images.push(
                            image(item, base).map_err(|m| fail(item, format!("images: {m}")))?,
                        );
                    }
                }
                "files" => {
                    for item in seq(value, "files").map_err(|m| fail(value, m))? {
                        spec.files
                            .push(file(item).map_err(|m| fail(item, format!("files: {m}")))?);
                    }
                }
                "python" => {
                    for item in one_or_many(value, "python").map_err(|m| fail(value, m))? {
                        let (requirements, proxy) = python_section(item, dir)
                            .map_err(|m| fail(item, format!("python: {m}")))?;
                        let pins = python::load(&requirements)?;
                        spec.python.push(PythonSpec {
                            requirements,
                            proxy,
                            pins,
                        });
                    }
                }
                "rpms" => {
                    for item in one_or_many(value, "rpms").map_err(|m| fail(value, m))? {
                        spec.rpms
                            .push(rpms(item).map_err(|m| fail(item, format!("rpms: {m}")))?);
                    }
                }
                "charts" => {
                    for item in seq(value, "charts").map_err(|m| fail(value, m))? {
                        let chart = chart(item).map_err(|m| fail(item, format!("charts: {m}")))?;
                        if spec.charts.contains(&chart) {
                            return Err(fail(
                                item,
                                format!("charts: {} {} is listed twice", chart.name, chart.version),
                            ));
                        }
                        spec.charts.push(chart);
                    }
                }
                "k3s" => {
                    spec.k3s =
                        Some(k3s::section(value).map_err(|m| fail(value, format!("k3s: {m}")))?);
                }
                other => {
                    return Err(fail(
                        key,
                        format!(
                            "unknown key `{other}` (expected images, files, python, rpms, charts, k3s)"
                        ),
                    ));
                }
            }
        }
        Ok(spec)
    }
}

fn seq<'a>(node: &'a Node, what: &str) -> Result<&'a [Node], String> {
    if node.is_null() {
        return Ok(&[]);
    }
    node.as_seq()
        .ok_or_else(|| format!("`{what}` must be a list, not {}", node.describe()))
}

/// An image entry; `base` is the spec's directory, which relative key paths start from.
fn image(node: &Node, base: &Path) -> Result<ImageSpec, String> {
    let parse = |text: &str| -> Result<ImageRef, String> {
        let reference: ImageRef = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
        if reference.domain().is_none() {
            return Err(format!(
                "{text:?} does not name its registry: write it in full (docker.io/library/postgres:15)"
            ));
        }
        Ok(reference)
    };
    if let Some(text) = node.as_str() {
        return Ok(ImageSpec {
            reference: parse(text)?,
            platforms: Vec::new(),
            verify: None,
        });
    }
    let Some(map) = node.as_map() else {
        return Err(format!(
            "an entry must be a reference or a mapping, not {}",
            node.describe()
        ));
    };
    let mut reference = None;
    let mut platforms = Vec::new();
    let mut checks = None;
    for (key, value) in map {
        match key.as_str().unwrap_or_default() {
            "ref" => {
                let text = value.as_str().ok_or("`ref` must be a string")?;
                reference = Some(parse(text)?);
            }
            "platforms" => {
                for platform in seq(value, "platforms")? {
                    let text = platform
                        .as_str()
                        .ok_or("a platform must be a string like linux/amd64")?;
                    if text.split('/').count() != 2 || text.split('/').any(str::is_empty) {
                        return Err(format!("platform {text:?} is not os/arch (linux/amd64)"));
                    }
                    platforms.push(text.to_owned());
                }
            }
            "verify" => checks = Some(verify(value, base)?),
            other => {
                return Err(format!(
                    "unknown key `{other}` (expected ref, platforms, verify)"
                ));
            }
        }
    }
    Ok(ImageSpec {
        reference: reference.ok_or("an entry needs `ref`")?,
        platforms,
        verify: checks,
    })
}

fn verify(node: &Node, base: &Path) -> Result<Verify, String> {
    let map = node
        .as_map()
        .ok_or("`verify` must be a mapping like {cosign_key: keys/org.pub}")?;
    let mut cosign_key = None;
    for (key, value) in map {
        match key.as_str().unwrap_or_default() {
            "cosign_key" => {
                let text = value
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .ok_or("`verify.cosign_key` must be the path of a cosign public key")?;
                cosign_key = Some(base.join(text));
            }
            other => {
                return Err(format!(
                    "unknown key `verify.{other}` (expected cosign_key)"
                ));
            }
        }
    }
    Ok(Verify {
        cosign_key: cosign_key.ok_or("`verify` needs `cosign_key`")?,
    })
}

fn file(node: &Node) -> Result<FileSpec, String> {
    let map = node
        .as_map()
        .ok_or("an entry must be a mapping with `url` and `sha256`")?;
    let (mut url, mut sha256) = (None, None);
    for (key, value) in map {
        let text = value.as_str();
        match key.as_str().unwrap_or_default() {
            "url" => {
                let text = text.ok_or("`url` must be a string")?;
                let parsed = url::Url::parse(text).map_err(|e| format!("url {text:?}: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(format!("url {text:?} is not http or https"));
                }
                url = Some(parsed);
            }
            "sha256" => {
                let text = text.ok_or("`sha256` must be a string")?;
                sha256 = Some(
                    Digest::sha256_hex(text)
                        .map_err(|_| format!("sha256 {text:?} is not 64 lowercase hex digits"))?,
                );
            }
            other => return Err(format!("unknown key `{other}` (expected url, sha256)")),
        }
    }
    Ok(FileSpec {
        url: url.ok_or("an entry needs `url`")?,
        sha256: sha256.ok_or("an entry needs `sha256`: every file is verified")?,
    })
}

/// A mapping, or a list of mappings.
fn one_or_many<'a>(node: &'a Node, what: &str) -> Result<&'a [Node], String> {
    if node.as_map().is_some() {
        return Ok(std::slice::from_ref(node));
    }
    seq(node, what).map_err(|_| {
        format!(
            "`{what}` must be a mapping or a list of them, not {}",
            node.describe()
        )
    })
}

/// A string of a mapping's `key`.
fn text<'a>(value: &'a Node, key: &str) -> Result<&'a str, String> {
    value
        .as_str()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| format!("`{key}` must be a non-empty string"))
}

/// A list of strings (or one string) of a mapping's `key`.
fn texts(value: &Node, key: &str) -> Result<Vec<String>, String> {
    if let Some(one) = value.as_str() {
        return Ok(vec![one.to_owned()]);
    }
    seq(value, key)?
        .iter()
        .map(|item| text(item, key).map(str::to_owned))
        .collect()
}

/// A name that can be a path segment and an RPM or chart name: `[A-Za-z0-9._+-]`, not
/// starting with `.` or `-`.
fn plain_name(name: &str, what: &str) -> Result<(), String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-');
    if name.starts_with(['.', '-']) || !name.chars().all(fine) {
        return Err(format!("{what} {name:?} is not a plain name"));
    }
    Ok(())
}

fn python_section(node: &Node, dir: &Path) -> Result<(PathBuf, Option<String>), String> {
    let map = node
        .as_map()
        .ok_or("an entry must be a mapping with `requirements`")?;
    let (mut requirements, mut proxy) = (None, None);
    for (key, value) in map {
        match key.as_str().unwrap_or_default() {
            "requirements" => requirements = Some(dir.join(text(value, "requirements")?)),
            "proxy" => proxy = Some(text(value, "proxy")?.to_owned()),
            other => {
                return Err(format!(
                    "unknown key `{other}` (expected requirements, proxy)"
                ));
            }
        }
    }
    let requirements = requirements
        .ok_or("needs `requirements`: a requirements.txt with --hash pins, or a pylock.toml")?;
    Ok((requirements, proxy))
}

/// Whether a relative path stays below a proxy's root.
fn below_proxy(path: &str) -> bool {
    !(path.starts_with('/')
        || path.contains("://")
        || path.contains(['\\', '?', '#', '%'])
        || path.chars().any(char::is_control)
        || path.split('/').any(|s| s == ".." || s == "."))
}

fn rpms(node: &Node) -> Result<RpmsSpec, String> {
    let map = node
        .as_map()
        .ok_or("an entry must be a mapping with `packages`")?;
    let mut spec = RpmsSpec {
        proxy: None,
        packages: Vec::new(),
        repos: Vec::new(),
        arch: Vec::new(),
        keys: Vec::new(),
    };
    for (key, value) in map {
        match key.as_str().unwrap_or_default() {
            "proxy" => spec.proxy = Some(text(value, "proxy")?.to_owned()),
            "packages" => {
                for name in texts(value, "packages")? {
                    plain_name(&name, "package")?;
                    if spec.packages.contains(&name) {
                        return Err(format!("package {name:?} is listed twice"));
                    }
                    spec.packages.push(name);
                }
            }
            "keys" => {
                for key in texts(value, "keys")? {
                    if !below_proxy(&key) || key.ends_with('/') || key.contains("//") {
                        return Err(format!(
                            "key {key:?} must be a file below the proxy (like public.key)"
                        ));
                    }
                    spec.keys.push(key);
                }
            }
            "repos" => {
                for repo in texts(value, "repos")? {
                    let repo = repo.trim_start_matches("./");
                    if !below_proxy(repo) {
                        return Err(format!(
                            "repo {repo:?} must be a directory below the proxy (like el/9/x86_64/)"
                        ));
                    }
                    let mut repo = repo.to_owned();
                    if !repo.is_empty() && !repo.ends_with('/') {
                        repo.push('/');
                    }
                    spec.repos.push(repo);
                }
            }
            "arch" => {
                for arch in texts(value, "arch")? {
                    plain_name(&arch, "arch")?;
                    spec.arch.push(arch);
                }
            }
            other => {
                return Err(format!(
                    "unknown key `{other}` (expected proxy, packages, repos, arch, keys)"
                ));
            }
        }
    }
    if spec.packages.is_empty() {
        return Err("needs `packages`: the RPM names to carry".to_owned());
    }
    if spec.repos.is_empty() {
        spec.repos.push(String::new());
    }
    if spec.arch.is_empty() {
        spec.arch.push(std::env::consts::ARCH.to_owned());
    }
    Ok(spec)
}

fn chart(node: &Node) -> Result<ChartSpec, String> {
    let map = node
        .as_map()
        .ok_or("an entry must be a mapping with `proxy`, `name` and `version`")?;
    let (mut proxy, mut name, mut version) = (None, None, None);
    for (key, value) in map {
        let key = key.as_str().unwrap_or_default();
        match key {
            "proxy" => proxy = Some(text(value, key)?.to_owned()),
            "name" => {
                let text = text(value, key)?;
                plain_name(text, "chart name")?;
                name = Some(text.to_owned());
            }
            "version" => {
                let text = text(value, key)?;
                plain_name(text, "chart version")?;
                version = Some(text.to_owned());
            }
            other => {
                return Err(format!(
                    "unknown key `{other}` (expected proxy, name, version)"
                ));
            }
        }
    }
    Ok(ChartSpec {
        proxy: proxy.ok_or("an entry needs `proxy` (a helm proxy of the configuration)")?,
        name: name.ok_or("an entry needs `name`")?,
        version: version.ok_or("an entry needs `version`: charts are carried by exact version")?,
    })
}

#[cfg(test)]
mod tests;
