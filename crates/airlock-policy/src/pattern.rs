//! What a `deny` or `allow` entry names, per kind of proxy:
//!
//! - OCI: a repository glob, optionally `:tag-glob` (`library/evil*`, `org/app:*-rc*`),
//!   matched against the repository the upstream knows (`library/nginx` on Docker Hub);
//! - `PyPI`: a project name (glob allowed) with an optional PEP 440 specifier set
//!   (`requests`, `requests==2.31.0`, `numpy<1.20`, `urllib3>=2,<2.2`), names compared in
//!   their PEP 503 normal form;
//! - the other package formats: a name glob with an optional `==version-glob`
//!   (`openssl==3.0.*`, `org.example:lib==1.2.3`), compared as written.

use std::fmt;
use std::str::FromStr;

use pep440_rs::{Version, VersionSpecifiers};

use crate::glob::Glob;

/// An OCI entry: repository glob and optional tag glob.
#[derive(Debug, Clone)]
pub struct RepoPattern {
    pub repository: Glob,
    pub tag: Option<Glob>,
}

fn repository_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c)
}

fn tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._-".contains(c)
}

impl Glob {
    /// A glob over repository names (`org/*`), as `[[robot]]` scopes write them.
    pub fn repository(text: &str) -> Option<Self> {
        Self::parse(text, repository_char)
    }
}

impl RepoPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (repository, tag) = match text.split_once(':') {
            Some((repository, tag)) => (repository, Some(tag)),
            None => (text, None),
        };
        let repository = Glob::parse(repository, repository_char).ok_or_else(|| {
            format!(
                "{repository:?} is not a repository glob (lowercase letters, digits, '.', '_', '-', '/', '*', '?')"
            )
        })?;
        let tag = tag
            .map(|tag| {
                Glob::parse(tag, tag_char).ok_or_else(|| {
                    format!("{tag:?} is not a tag glob (letters, digits, '.', '_', '-', '*', '?')")
                })
            })
            .transpose()?;
        Ok(Self { repository, tag })
    }

    /// Whether the entry names `repository` (and, when it has a tag glob, `tag`).
    pub fn matches(&self, repository: &str, tag: Option<&str>) -> bool {
        self.repository.matches(repository)
            && match &self.tag {
                None => true,
                Some(glob) => tag.is_some_and(|tag| glob.matches(tag)),
            }
    }
}

/// A `PyPI` entry: normalized name glob and a PEP 440 specifier set (empty: every version).
#[derive(Debug, Clone)]
pub struct PypiPattern {
    pub name: Glob,
    pub versions: VersionSpecifiers,
}

/// Where a PEP 508 requirement's version part starts.
fn split_spec(text: &str) -> (&str, &str) {
    let at = text
        .find(|c: char| "<>=!~ ".contains(c))
        .unwrap_or(text.len());
    (text[..at].trim(), text[at..].trim())
}

impl PypiPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, spec) = split_spec(text);
        let name = Glob::parse(&airlock_types::pypi::fold_separators(name), |c| {
            c.is_ascii_alphanumeric() || c == '-'
        })
        .ok_or_else(|| format!("{name:?} is not a Python project name (glob)"))?;
        let versions = if spec.is_empty() {
            VersionSpecifiers::empty()
        } else {
            VersionSpecifiers::from_str(spec)
                .map_err(|e| format!("{spec:?} is not a PEP 440 version specifier: {e}"))?
        };
        Ok(Self { name, versions })
    }

    /// Whether the entry names project `name` at `version`. A version that is not PEP 440
    /// matches only an entry without a specifier.
    pub fn matches(&self, name: &str, version: &str) -> bool {
        if !self
            .name
            .matches(&airlock_types::pypi::fold_separators(name))
        {
            return false;
        }
        if self.versions.is_empty() {
            return true;
        }
        Version::from_str(version).is_ok_and(|v| self.versions.contains(&v))
    }
}

/// An entry for conda, Maven, yum, Helm and raw files: name glob, optional version glob.
#[derive(Debug, Clone)]
pub struct FilePattern {
    pub name: Glob,
    pub version: Option<Glob>,
}

fn file_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._-+:".contains(c)
}

impl FilePattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, version) = match text.split_once("==") {
            Some((name, version)) => (name.trim(), Some(version.trim())),
            None => (text.trim(), None),
        };
        let name = Glob::parse(name, file_char).ok_or_else(|| {
            format!(
                "{name:?} is not a package name glob (write name or name==version, a glob each)"
            )
        })?;
        let version = version
            .map(|v| {
                Glob::parse(v, file_char)
                    .ok_or_else(|| format!("{v:?} is not a version glob (write name==1.2.*)"))
            })
            .transpose()?;
        Ok(Self { name, version })
    }

    pub fn matches(&self, name: &str, version: &str) -> bool {
        self.name.matches(name) && self.version.as_ref().is_none_or(|v| v.matches(version))
    }
}

/// One `deny` or `allow` entry, read for every kind of proxy it can name.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub written: String,
    pub oci: Option<RepoPattern>,
    pub pypi: Option<PypiPattern>,
    pub file: Option<FilePattern>,
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_patterns_with_and_without_tags() {
        let p = RepoPattern::parse("library/evil*").unwrap();
        assert!(p.matches("library/evil", Some("1")));
        assert!(p.matches("library/evil-2", None));
        assert!(!p.matches("library/good", Some("1")));
        let p = RepoPattern::parse("org/app:*-rc*").unwrap();
        assert!(p.matches("org/app", Some("2.0-rc1")));
        assert!(!p.matches("org/app", Some("2.0")));
        assert!(!p.matches("org/app", None), "a digest has no tag to match");
        for bad in ["", "Library/x", "a b", "a:", "a:b c", "a:b:c"] {
            assert!(RepoPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pypi_patterns_normalize_names_and_read_pep_440() {
        let p = PypiPattern::parse("Requests==2.31.0").unwrap();
        assert!(p.matches("requests", "2.31.0"));
        assert!(p.matches("REQUESTS", "2.31"), "2.31 == 2.31.0 in PEP 440");
        assert!(!p.matches("requests", "2.31.1"));
        let p = PypiPattern::parse("urllib3>=2,<2.2").unwrap();
        assert!(p.matches("urllib3", "2.1.0"));
        assert!(!p.matches("urllib3", "2.2.0"));
        assert!(!p.matches("urllib3", "1.26.18"));
        let p = PypiPattern::parse("zope.interface").unwrap();
        assert!(p.matches("zope-interface", "anything"));
        assert!(p.matches("Zope_Interface", "6.0"));
        let p = PypiPattern::parse("numpy <1.20").unwrap();
        assert!(p.matches("numpy", "1.19.5"));
        assert!(
            !p.matches("numpy", "not-a-version"),
            "unparsable versions fail specifiers"
        );
        for bad in ["", "requests==", "requests>>2", "numpy<1.20;", "a/b"] {
            assert!(PypiPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_patterns_take_exact_versions_or_globs() {
        let p = FilePattern::parse("openssl==3.0.*").unwrap();
        assert!(p.matches("openssl", "3.0.13"));
        assert!(!p.matches("openssl", "3.1.0"));
        assert!(!p.matches("libssl", "3.0.13"));
        let p = FilePattern::parse("org.example:lib").unwrap();
        assert!(p.matches("org.example:lib", "1"));
        for bad in ["", "numpy<1.20", "a==", "a b"] {
            assert!(FilePattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
