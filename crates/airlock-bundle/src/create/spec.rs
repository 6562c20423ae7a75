//! `SPEC.yaml`: what `airlock bundle create` puts in a bundle.
//!
//! ```yaml
//! images:
//!   - docker.io/library/postgres:15              # all platforms of an index
//!   - ref: ghcr.io/org/app@sha256:…
//!     platforms: [linux/amd64]
//! files:
//!   - url: https://github.com/k3s-io/k3s/releases/download/v1.31.4%2Bk3s1/k3s
//!     sha256: "…"                                # required
//! ```
//!
//! Sections this airlock cannot carry yet (`python`, `rpms`, `charts`) and image `verify`
//! settings are refused by name rather than ignored: a bundle missing what the spec asked
//! for would only be found out on the isolated side.

use std::path::Path;

use airlock_ansible::yaml::{self, Node};
use airlock_types::{Digest, ImageRef};

/// A parsed spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    pub images: Vec<ImageSpec>,
    pub files: Vec<FileSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub reference: ImageRef,
    /// `os/arch` pairs to carry from an index; empty: every platform.
    pub platforms: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub url: url::Url,
    pub sha256: Digest,
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
        let mut spec = Spec {
            images: Vec::new(),
            files: Vec::new(),
        };
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
                    for item in seq(value, "images").map_err(|m| fail(value, m))? {
                        spec.images
                            .push(image(item).map_err(|m| fail(item, format!("images: {m}")))?);
                    }
                }
                "files" => {
                    for item in seq(value, "files").map_err(|m| fail(value, m))? {
                        spec.files
                            .push(file(item).map_err(|m| fail(item, format!("files: {m}")))?);
                    }
                }
                section @ ("python" | "rpms" | "charts") => {
                    return Err(fail(
                        key,
                        format!(
                            "`{section}` is not supported by this airlock's `bundle create` yet (only images and files)"
                        ),
                    ));
                }
                other => {
                    return Err(fail(
                        key,
                        format!("unknown key `{other}` (expected images, files)"),
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

fn image(node: &Node) -> Result<ImageSpec, String> {
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
            "verify" => {
                return Err(
                    "`verify` (cosign) is not supported by this airlock's `bundle create` yet"
                        .to_owned(),
                );
            }
            other => return Err(format!("unknown key `{other}` (expected ref, platforms)")),
        }
    }
    Ok(ImageSpec {
        reference: reference.ok_or("an entry needs `ref`")?,
        platforms,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, String> {
        Spec::parse(text, Path::new("spec.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_images_and_files() {
        let hex = "a".repeat(64);
        let spec = parse(&format!(
            "images:\n  - docker.io/library/postgres:15\n  - ref: ghcr.io/org/app:1\n    platforms: [linux/arm64]\nfiles:\n  - url: https://example.invalid/k3s\n    sha256: \"{hex}\"\n"
        ))
        .unwrap();
        assert_eq!(spec.images.len(), 2);
        assert_eq!(spec.images[1].platforms, ["linux/arm64"]);
        assert_eq!(spec.files[0].sha256.hex(), hex);
    }

    #[test]
    fn refuses_what_it_cannot_carry_by_name() {
        for (text, expected) in [
            (
                "python:\n  requirements: r.txt\n",
                "`python` is not supported",
            ),
            (
                "images:\n  - ref: ghcr.io/a/b:1\n    verify: {cosign_key: k.pub}\n",
                "`verify` (cosign)",
            ),
            ("images:\n  - postgres:15\n", "does not name its registry"),
            (
                "files:\n  - url: https://example.invalid/x\n",
                "needs `sha256`",
            ),
            (
                "files:\n  - url: ftp://example.invalid/x\n    sha256: x\n",
                "not http",
            ),
            ("imagess: []\n", "spec.yaml:1: unknown key `imagess`"),
            (
                "images:\n  - ref: ghcr.io/a/b:1\n    platforms: [amd64]\n",
                "not os/arch",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
