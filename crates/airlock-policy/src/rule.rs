//! One `[[policy]]` table: as written ([`RuleTable`], what serde reads and `airlock config
//! check` writes back) and resolved ([`Rule`], every entry parsed and the cosign key read),
//! with each refusal a [`RuleError`] naming the rule.

use std::path::PathBuf;

use airlock_cosign::PublicKey;
use airlock_types::ByteSize;
use serde::{Deserialize, Serialize};

use crate::glob::Glob;
use crate::pattern::{FilePattern, Pattern, PypiPattern, RepoPattern};

/// `[[policy]]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTable {
    pub name: String,
    /// Only requests to this proxy; absent, every proxy whose format can read the entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// OCI: `deny` and `allow` name only manifests pulled by a tag matching one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// OCI: blobs larger than this are refused before they are fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blob_size: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_cosign: Option<CosignTable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// `require_cosign = { repositories = [...], key = "cosign.pub" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignTable {
    pub repositories: Vec<String>,
    /// The PEM public key (cosign.pub); a relative path is relative to the working directory.
    pub key: PathBuf,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Its decision stands.
    #[default]
    Enforce,
    /// Dry run: a would-be denial is recorded, and the request goes on to the next rule.
    Log,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Log => "log",
        }
    }
}

/// What kind of proxy a request or an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Oci,
    Pypi,
    /// conda, Maven, yum, Helm, raw: names and versions compared as written.
    Files,
}

/// A `[[policy]]` rule that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("[[policy]] name {name:?} is invalid: use letters, digits, '-', '_' or '.'")]
    Name { name: String },
    #[error("[[policy]] name {name:?} is used twice; names must be unique")]
    Duplicate { name: String },
    #[error("[[policy]] {rule}: proxy {proxy:?} names no [[proxy]]")]
    UnknownProxy { rule: String, proxy: String },
    #[error("[[policy]] {rule}: {entry}: {reason}")]
    Entry {
        rule: String,
        entry: String,
        reason: String,
    },
    #[error("[[policy]] {rule}: {key} is only for oci proxies, and proxy {proxy:?} is not one")]
    OnlyOci {
        rule: String,
        key: &'static str,
        proxy: String,
    },
    #[error(
        "[[policy]] {rule}: the rule does nothing; give deny, allow, max_blob_size or require_cosign"
    )]
    Empty { rule: String },
    #[error("[[policy]] {rule}: tags restricts deny and allow; give one of them")]
    TagsAlone { rule: String },
    #[error("[[policy]] {rule}: require_cosign key {path}: {reason}")]
    Key {
        rule: String,
        path: String,
        reason: String,
    },
}

/// The cosign requirement of a rule, its key read and parsed.
#[derive(Debug, Clone)]
pub struct RequireCosign {
    pub repositories: Vec<Glob>,
    pub key: PublicKey,
}

/// A resolved `[[policy]]` rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub proxy: Option<String>,
    pub deny: Vec<Pattern>,
    pub allow: Vec<Pattern>,
    pub tags: Vec<Glob>,
    pub max_blob_size: Option<ByteSize>,
    pub require_cosign: Option<RequireCosign>,
    pub mode: Mode,
    /// The table as written, for `airlock config check`.
    pub table: RuleTable,
}

impl Rule {
    /// Resolves a table. `family_of` tells the format of a configured proxy (`None`: no
    /// such proxy); the cosign key is read from disk here, once.
    pub fn resolve(
        table: &RuleTable,
        family_of: impl Fn(&str) -> Option<Family>,
    ) -> Result<Self, RuleError> {
        let rule = table.name.clone();
        let valid_name = !rule.is_empty()
            && rule.len() <= 64
            && rule
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_name {
            return Err(RuleError::Name { name: rule });
        }
        let family = match &table.proxy {
            None => None,
            Some(proxy) => Some(family_of(proxy).ok_or_else(|| RuleError::UnknownProxy {
                rule: rule.clone(),
                proxy: proxy.clone(),
            })?),
        };
        let only_oci = |key: &'static str| match (&table.proxy, family) {
            (Some(proxy), Some(Family::Pypi | Family::Files)) => Err(RuleError::OnlyOci {
                rule: rule.clone(),
                key,
                proxy: proxy.clone(),
            }),
            _ => Ok(()),
        };
        if !table.tags.is_empty() {
            only_oci("tags")?;
        }
        if table.max_blob_size.is_some() {
            only_oci("max_blob_size")?;
        }
        if table.require_cosign.is_some() {
            only_oci("require_cosign")?;
        }
        if table.deny.is_empty()
            && table.allow.is_empty()
            && table.max_blob_size.is_none()
            && table.require_cosign.is_none()
        {
            return Err(RuleError::Empty { rule });
        }
        if !table.tags.is_empty() && table.deny.is_empty() && table.allow.is_empty() {
            return Err(RuleError::TagsAlone { rule });
        }
        let entry_error = |entry: &str, reason: String| RuleError::Entry {
            rule: rule.clone(),
            entry: format!("{entry:?}"),
            reason,
        };
        let patterns = |entries: &[String]| {
            entries
                .iter()
                .map(|entry| parse_pattern(entry, family).map_err(|r| entry_error(entry, r)))
                .collect::<Result<Vec<_>, _>>()
        };
        let deny = patterns(&table.deny)?;
        let allow = patterns(&table.allow)?;
        let tags = table
            .tags
            .iter()
            .map(|tag| {
                RepoPattern::parse(&format!("x:{tag}"))
                    .ok()
                    .and_then(|p| p.tag)
                    .ok_or_else(|| entry_error(tag, "not a tag glob".to_owned()))
            })
            .collect::<Result<_, _>>()?;
        let require_cosign = match &table.require_cosign {
            None => None,
            Some(cosign) => Some(resolve_cosign(&rule, cosign, &entry_error)?),
        };
        Ok(Self {
            name: rule,
            proxy: table.proxy.clone(),
            deny,
            allow,
            tags,
            max_blob_size: table.max_blob_size,
            require_cosign,
            mode: table.mode.unwrap_or_default(),
            table: table.clone(),
        })
    }
}

fn resolve_cosign(
    rule: &str,
    cosign: &CosignTable,
    entry_error: &dyn Fn(&str, String) -> RuleError,
) -> Result<RequireCosign, RuleError> {
    if cosign.repositories.is_empty() {
        return Err(entry_error(
            "require_cosign",
            "repositories is empty; name the repository globs that must be signed".to_owned(),
        ));
    }
    let repositories = cosign
        .repositories
        .iter()
        .map(|repo| match RepoPattern::parse(repo) {
            Ok(RepoPattern {
                repository,
                tag: None,
            }) => Ok(repository),
            Ok(_) => Err(entry_error(repo, "a signature covers every tag".to_owned())),
            Err(reason) => Err(entry_error(repo, reason)),
        })
        .collect::<Result<_, _>>()?;
    let key_error = |reason: String| RuleError::Key {
        rule: rule.to_owned(),
        path: cosign.key.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&cosign.key).map_err(|e| key_error(e.to_string()))?;
    let key = PublicKey::from_pem(&text).map_err(|e| key_error(e.to_string()))?;
    Ok(RequireCosign { repositories, key })
}

/// Reads an entry for every family it can name (only `family` when the rule names a proxy).
fn parse_pattern(entry: &str, family: Option<Family>) -> Result<Pattern, String> {
    let oci = RepoPattern::parse(entry);
    let pypi = PypiPattern::parse(entry);
    let file = FilePattern::parse(entry);
    match family {
        Some(Family::Oci) => oci.map(|p| Pattern {
            written: entry.to_owned(),
            oci: Some(p),
            pypi: None,
            file: None,
        }),
        Some(Family::Pypi) => pypi.map(|p| Pattern {
            written: entry.to_owned(),
            oci: None,
            pypi: Some(p),
            file: None,
        }),
        Some(Family::Files) => file.map(|p| Pattern {
            written: entry.to_owned(),
            oci: None,
            pypi: None,
            file: Some(p),
        }),
        None => {
            if let (Err(oci), Err(pypi), Err(file)) = (&oci, &pypi, &file) {
                return Err(format!(
                    "no proxy format reads it (oci: {oci}; pypi: {pypi}; others: {file})"
                ));
            }
            Ok(Pattern {
                written: entry.to_owned(),
                oci: oci.ok(),
                pypi: pypi.ok(),
                file: file.ok(),
            })
        }
    }
}
