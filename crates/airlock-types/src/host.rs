//! Host names as the proxy compares them: one canonical form, computed once.
//!
//! Both the request parser and the allowlist go through [`canonicalize`], so a name can
//! never match in one place and be spelled differently in another. Anything that could be
//! read as an IP address by some resolver (`127.1`, `0x7f000001`, `[::1]`) is refused here,
//! before DNS, because the allowlist admits names only.

use std::fmt;

/// A host name in canonical form: ASCII letters, digits, hyphens and dots, lowercased,
/// one trailing dot removed, every label 1–63 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(String);

impl HostName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of dot-separated labels (`login.example.com` has 3).
    pub fn label_count(&self) -> usize {
        self.0.split('.').count()
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a string is not a host name the proxy will consider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the host name is empty")]
    Empty,
    #[error("the host name is longer than 253 characters")]
    TooLong,
    #[error("the host name contains non-ASCII characters (use the punycode form, xn--…)")]
    NonAscii,
    #[error("the host name contains percent-encoding")]
    PercentEncoded,
    #[error("the host name carries userinfo (`user@host`)")]
    Userinfo,
    #[error("the host is an IP address; only names are accepted")]
    IpLiteral,
    #[error(
        "the host name contains the character {0:?}; only letters, digits, '-' and '.' are allowed"
    )]
    BadCharacter(char),
    #[error("the host name has an empty label (`..`, or a leading dot)")]
    EmptyLabel,
    #[error("a label of the host name is longer than 63 characters")]
    LabelTooLong,
    #[error("a label of the host name starts or ends with '-'")]
    HyphenEdge,
}

/// Canonicalize a host name, refusing IP literals in every notation.
pub fn canonicalize(raw: &str) -> Result<HostName, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if !raw.is_ascii() {
        return Err(HostError::NonAscii);
    }
    if raw.contains('@') {
        return Err(HostError::Userinfo);
    }
    // `[v6]`, bare v6 and zone ids: any colon left in a host is an address, never a name.
    if raw.starts_with('[') || raw.contains(':') {
        return Err(HostError::IpLiteral);
    }
    if raw.contains('%') {
        return Err(HostError::PercentEncoded);
    }
    let name = raw.strip_suffix('.').unwrap_or(raw);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.len() > 253 {
        return Err(HostError::TooLong);
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(HostError::BadCharacter(bad));
    }
    let name = name.to_ascii_lowercase();
    for label in name.split('.') {
        if label.is_empty() {
            return Err(HostError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(HostError::LabelTooLong);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostError::HyphenEdge);
        }
    }
    // WHATWG URL's "ends in a number" rule: resolvers read `127.1`, `2130706433`,
    // `0177.0.0.1` and `0x7f.1` as IPv4. No real top-level domain is numeric.
    let last = name.rsplit('.').next().unwrap_or_default();
    if looks_numeric(last) {
        return Err(HostError::IpLiteral);
    }
    Ok(HostName(name))
}

fn looks_numeric(label: &str) -> bool {
    if label.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    label
        .strip_prefix("0x")
        .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form() {
        assert_eq!(
            canonicalize("Login.MicrosoftOnline.COM.").unwrap().as_str(),
            "login.microsoftonline.com"
        );
        assert_eq!(canonicalize("xn--80ak6aa92e.com").unwrap().label_count(), 2);
        assert_eq!(
            canonicalize("127.0.0.1.nip.io").unwrap().as_str(),
            "127.0.0.1.nip.io"
        );
        assert_eq!(canonicalize("localhost").unwrap().as_str(), "localhost");
    }

    #[test]
    fn ip_literals_in_every_notation() {
        for raw in [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f000001",
            "0x7F.0.0.1",
            "0177.0.0.1",
            "1.2.3.4.",
            "[::1]",
            "::1",
            "[fe80::1%25eth0]",
            "[::ffff:127.0.0.1]",
            "a.0x",
        ] {
            let got = canonicalize(raw);
            assert_eq!(got, Err(HostError::IpLiteral), "{raw}");
        }
    }

    #[test]
    fn refused_shapes() {
        let cases: &[(&str, HostError)] = &[
            ("", HostError::Empty),
            (".", HostError::Empty),
            ("a..b", HostError::EmptyLabel),
            (".a.b", HostError::EmptyLabel),
            ("a.b..", HostError::EmptyLabel),
            ("user@a.b", HostError::Userinfo),
            ("a%2eb", HostError::PercentEncoded),
            ("\u{430}pple.com", HostError::NonAscii),
            ("a_b.com", HostError::BadCharacter('_')),
            ("a b.com", HostError::BadCharacter(' ')),
            ("-a.com", HostError::HyphenEdge),
            ("a-.com", HostError::HyphenEdge),
        ];
        for (raw, want) in cases {
            assert_eq!(canonicalize(raw), Err(*want), "{raw:?}");
        }
        assert_eq!(canonicalize(&"a".repeat(64)), Err(HostError::LabelTooLong));
        let long = vec!["a".repeat(50); 6].join(".");
        assert_eq!(canonicalize(&long), Err(HostError::TooLong));
    }
}
