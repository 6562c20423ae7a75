//! The allowlist: exact names and explicit `*.example.com` subdomain entries.
//!
//! Entries are parsed strictly so that a Squid-ism or a URL pasted into the config fails
//! at load time with a message that says how to write it, instead of silently matching
//! nothing (or too much). The digest lets operators check which list a running proxy uses.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

use crate::host::{HostError, HostName, canonicalize};

/// One entry that cannot be accepted, with the entry as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress.allow entry {entry:?}: {problem}")]
pub struct AllowlistError {
    pub entry: String,
    pub problem: EntryProblem,
}

/// What is wrong with an allowlist entry, phrased as what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("empty entry; remove it")]
    Empty,
    #[error("surrounding whitespace; write the bare name")]
    Whitespace,
    #[error("looks like a URL; write only the host name, e.g. \"{0}\"")]
    Url(String),
    #[error("carries a port; write \"{0}\" and list ports under egress.ports")]
    Port(String),
    #[error(
        "a leading dot is Squid's subdomain form; write \"{0}\" for the name itself and \"*.{0}\" for its subdomains"
    )]
    LeadingDot(String),
    #[error(
        "IP addresses cannot be allowed; the proxy admits names only and checks what they resolve to"
    )]
    IpLiteral,
    #[error("'*' is only allowed as the whole first label, as in \"*.example.com\"")]
    MisplacedWildcard,
    #[error("would admit a whole top-level domain; list the names you need")]
    TopLevelDomain,
    #[error("{0}")]
    Host(HostError),
}

/// A parsed allowlist. Matching is exact on canonical names; `*.d` matches names below `d`
/// (any depth) and never `d` itself.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    exact: BTreeSet<String>,
    /// Stored with the leading dot (".example.com") so matching is one `ends_with`.
    suffixes: BTreeSet<String>,
}

impl Allowlist {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowlistError> {
        let mut list = Self::default();
        for entry in entries {
            let entry = entry.as_ref();
            match parse_entry(entry).map_err(|problem| AllowlistError {
                entry: entry.to_owned(),
                problem,
            })? {
                Entry::Exact(name) => list.exact.insert(name.as_str().to_owned()),
                Entry::Subdomains(name) => list.suffixes.insert(format!(".{name}")),
            };
        }
        Ok(list)
    }

    pub fn allows(&self, host: &HostName) -> bool {
        let host = host.as_str();
        self.exact.contains(host) || self.suffixes.iter().any(|s| host.ends_with(s.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    /// Canonical entries, sorted, duplicates removed.
    pub fn entries(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .exact
            .iter()
            .cloned()
            .chain(self.suffixes.iter().map(|s| format!("*{s}")))
            .collect();
        all.sort();
        all
    }

    /// `sha256:` of the sorted canonical entries, each followed by a newline — the same as
    /// `printf '%s\n' ENTRIES... | LC_ALL=C sort -u | sha256sum`.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for entry in self.entries() {
            hasher.update(entry.as_bytes());
            hasher.update(b"\n");
        }
        let mut out = String::from("sha256:");
        for byte in hasher.finalize() {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }
}

enum Entry {
    Exact(HostName),
    Subdomains(HostName),
}

fn parse_entry(entry: &str) -> Result<Entry, EntryProblem> {
    if entry.is_empty() {
        return Err(EntryProblem::Empty);
    }
    if entry.trim() != entry {
        return Err(EntryProblem::Whitespace);
    }
    if let Some((_, rest)) = entry.split_once("://") {
        let host = rest.split(['/', ':', '?', '#']).next().unwrap_or_default();
        return Err(EntryProblem::Url(host.to_owned()));
    }
    if entry.contains('/') {
        let host = entry.split('/').next().unwrap_or_default();
        return Err(EntryProblem::Url(host.to_owned()));
    }
    if entry.starts_with('[') || entry.matches(':').count() > 1 {
        return Err(EntryProblem::IpLiteral);
    }
    if let Some((host, port)) = entry.rsplit_once(':')
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(EntryProblem::Port(host.to_owned()));
    }
    if let Some(rest) = entry.strip_prefix('.') {
        return Err(EntryProblem::LeadingDot(rest.to_owned()));
    }
    let (wildcard, name) = match entry.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, entry),
    };
    if name.contains('*') {
        return Err(EntryProblem::MisplacedWildcard);
    }
    let name = canonicalize(name).map_err(|e| match e {
        HostError::IpLiteral => EntryProblem::IpLiteral,
        other => EntryProblem::Host(other),
    })?;
    // A single label is a top-level domain on the internet: `com` or `*.com`.
    if name.label_count() < 2 {
        return Err(EntryProblem::TopLevelDomain);
    }
    Ok(if wildcard {
        Entry::Subdomains(name)
    } else {
        Entry::Exact(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(s: &str) -> HostName {
        canonicalize(s).unwrap()
    }

    #[test]
    fn exact_and_subdomain_matching() {
        let list = Allowlist::parse(&["login.microsoftonline.com", "*.github.com"]).unwrap();
        assert!(list.allows(&host("login.microsoftonline.com")));
        assert!(!list.allows(&host("x.login.microsoftonline.com")));
        assert!(!list.allows(&host("microsoftonline.com")));
        assert!(list.allows(&host("api.github.com")));
        assert!(list.allows(&host("a.b.github.com")));
        assert!(!list.allows(&host("github.com")));
        assert!(!list.allows(&host("evilgithub.com")));
        assert!(!list.allows(&host("github.com.evil.net")));
    }

    #[test]
    fn refuses_with_a_hint() {
        let cases: &[(&str, EntryProblem)] = &[
            ("", EntryProblem::Empty),
            (" a.com", EntryProblem::Whitespace),
            ("https://a.com/x", EntryProblem::Url("a.com".into())),
            ("a.com/x", EntryProblem::Url("a.com".into())),
            ("a.com:443", EntryProblem::Port("a.com".into())),
            (".a.com", EntryProblem::LeadingDot("a.com".into())),
            ("*.com", EntryProblem::TopLevelDomain),
            ("com", EntryProblem::TopLevelDomain),
            ("*", EntryProblem::MisplacedWildcard),
            ("a.*.com", EntryProblem::MisplacedWildcard),
            ("*a.com", EntryProblem::MisplacedWildcard),
            ("*.*.a.com", EntryProblem::MisplacedWildcard),
            ("10.0.0.1", EntryProblem::IpLiteral),
            ("[::1]", EntryProblem::IpLiteral),
            ("::1", EntryProblem::IpLiteral),
            ("0x7f000001", EntryProblem::IpLiteral),
            ("b\u{fc}cher.de", EntryProblem::Host(HostError::NonAscii)),
            ("a_b.com", EntryProblem::Host(HostError::BadCharacter('_'))),
        ];
        for (entry, want) in cases {
            let err = Allowlist::parse(&[*entry]).unwrap_err();
            assert_eq!(&err.problem, want, "{entry:?}");
        }
        let shown = Allowlist::parse(&[".example.com"]).unwrap_err().to_string();
        assert!(shown.contains("\"*.example.com\""), "{shown}");
    }

    #[test]
    fn digest_is_order_and_case_independent() {
        let a = Allowlist::parse(&["b.example.com", "A.example.com", "*.c.org"]).unwrap();
        let b = Allowlist::parse(&[
            "*.C.org",
            "a.example.com",
            "b.example.com.",
            "a.example.com",
        ])
        .unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.entries(), ["*.c.org", "a.example.com", "b.example.com"]);
        // printf '' | sha256sum
        assert_eq!(
            Allowlist::default().digest(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_canonical_entries_reparse(entry in "\\PC{0,40}") {
            if let Ok(list) = Allowlist::parse(&[entry.as_str()]) {
                let canonical = list.entries();
                let again = Allowlist::parse(&canonical).unwrap();
                prop_assert_eq!(again.entries(), canonical);
            }
        }

        #[test]
        fn generated_names_match_themselves_only(
            labels in proptest::collection::vec("[a-z][a-z0-9-]{0,10}[a-z]", 2..5),
        ) {
            let name = labels.join(".");
            let list = Allowlist::parse(&[name.as_str()]).unwrap();
            prop_assert!(list.allows(&host(&name)));
            prop_assert!(list.allows(&host(&name.to_ascii_uppercase())));
            let sub = format!("x.{name}");
            prop_assert!(!list.allows(&host(&sub)));
            let wild = Allowlist::parse(&[format!("*.{name}")]).unwrap();
            prop_assert!(wild.allows(&host(&sub)));
            prop_assert!(!wild.allows(&host(&name)));
        }
    }
}
