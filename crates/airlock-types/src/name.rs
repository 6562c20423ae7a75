//! Repository names and references, validated against the distribution grammar.
//!
//! ```text
//! name       := component ('/' component)*          (at most 255 bytes)
//! component  := alnum+ (separator alnum+)*
//! separator  := '.' | '_' | '__' | '-'+
//! tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! ```
//! (distribution `reference/regexp.go`). The grammar excludes `..`, empty components,
//! leading or trailing separators, and anything that could escape a path.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

/// A repository name that matched the grammar.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// Why a name or reference was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error(
        "repository name {0:?} is invalid (lowercase letters, digits and single separators between path components)"
    )]
    Repo(String),
    #[error("reference {0:?} is neither a tag nor a sha256 digest")]
    Reference(String),
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl FromStr for RepoName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 255 || !s.split('/').all(valid_component) {
            return Err(NameError::Repo(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What a manifest request names: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            return s
                .parse()
                .map(Reference::Digest)
                .map_err(|_| NameError::Reference(s.to_owned()));
        }
        let bytes = s.as_bytes();
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let ok = !bytes.is_empty()
            && bytes.len() <= 128
            && word(bytes[0])
            && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
        if ok {
            Ok(Reference::Tag(s.to_owned()))
        } else {
            Err(NameError::Reference(s.to_owned()))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => fmt::Display::fmt(d, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_real_names() {
        for good in [
            "library/nginx",
            "nginx",
            "k8ssandra/cass-management-api",
            "elasticsearch/elasticsearch",
            "a/b/c/d",
            "my_repo/with__double",
            "dash---es/x.y",
        ] {
            assert!(good.parse::<RepoName>().is_ok(), "{good}");
        }
    }

    #[test]
    fn refuses_path_tricks() {
        for bad in [
            "", "..", "../etc", "a/../b", "a//b", "/a", "a/", "A/b", "a/.b", "a/b.", "a/b?x",
            "a%2fb", "a\\b", "a/b c", "a/_b", "a/b___c", "a/b.-c", "./a",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?}");
        }
        assert!("a".repeat(256).parse::<RepoName>().is_err());
    }

    #[test]
    fn references() {
        assert_eq!(
            "latest".parse::<Reference>().unwrap(),
            Reference::Tag("latest".into())
        );
        assert!(matches!(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse::<Reference>(),
            Ok(Reference::Digest(_))
        ));
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "sha256:zz",
            &"t".repeat(129),
            "..",
            "a b",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn valid_names_never_escape(s in "[a-z0-9._/-]{0,40}") {
            if let Ok(name) = s.parse::<RepoName>() {
                prop_assert!(name.components().all(|c| c != ".." && c != "." && !c.is_empty()));
            }
        }
    }
}
