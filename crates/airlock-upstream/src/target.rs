//! The gate's one rule: **a client's path never becomes a URL's scheme, authority or parent
//! directory.** Every upstream request names its [`Target`]; this module is the only place
//! a target becomes a URL.
//!
//! - A [`Target::Path`] is relative to the proxy's upstream base. It may come from a client
//!   (through [`client_path`] first), from the config or from a format's own constants.
//!   It is refused unless it is a plain relative path (no scheme-like first segment, no
//!   `;` parameters, no empty, `.` or `..` segments, no backslashes, queries, fragments or
//!   control characters) and, once joined, the URL has the upstream's origin and lies under
//!   its base path.
//! - A [`Target::Url`] is an absolute URL airlock chose itself: the configured upstream, or
//!   a file URL a parsed index listed (`PyPI` file links, Helm `urls`, conda shard bases,
//!   yum `xml:base`). A client only ever selects among those; it never writes one. Such a URL
//!   must be `http(s)`, carry no userinfo or fragment, and name an internal address literal
//!   (loopback, private, link-local) only when the upstream itself is on one.
//!
//! Client paths are canonicalized by [`client_path`]: percent-escapes decoded once (so
//! `v1.30.4%2Bk3s1` and `v1.30.4+k3s1` are one file), and anything that could change how
//! the path is read further on refused, including escapes that decode to `%`, `/`, `\`,
//! `?`, `#` or `;` (double encoding) and `:` anywhere.

use std::net::IpAddr;

/// The longest client path accepted below a proxy, in bytes.
pub const MAX_PATH: usize = 1024;
/// The most segments a client path may have.
pub const MAX_SEGMENTS: usize = 64;

/// Where an upstream request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A path relative to the upstream base (no leading `/`), checked before it is joined.
    Path(String),
    /// An absolute URL from the config or a parsed index, never from a client.
    Url(String),
}

impl Target {
    /// The text of the target, for messages and cache keys.
    pub fn as_str(&self) -> &str {
        match self {
            Target::Path(p) | Target::Url(p) => p,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Target {
    fn from(path: &str) -> Self {
        Target::Path(path.to_owned())
    }
}

impl From<&String> for Target {
    fn from(path: &String) -> Self {
        Target::Path(path.clone())
    }
}

impl From<String> for Target {
    fn from(path: String) -> Self {
        Target::Path(path)
    }
}

/// Why a path or URL may not be requested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    pub reason: String,
}

fn refuse(reason: impl Into<String>) -> Refused {
    Refused {
        reason: reason.into(),
    }
}

/// Bytes a canonical client path may hold (after decoding), besides `/` between segments:
/// RFC 3986 unreserved characters, the sub-delimiters that carry no meaning in a path
/// (not `;`), `@`, and the space.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=@ ".contains(&b)
}

/// The canonical form of a client's path below `/repository/<name>/`: escapes decoded
/// once, every segment plain (see the module docs). `""` is the proxy's root; a trailing
/// `/` is kept (a directory).
pub fn client_path(raw: &str) -> Result<String, Refused> {
    if raw.len() > MAX_PATH {
        return Err(refuse(format!("longer than {MAX_PATH} bytes")));
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| refuse("a `%` that starts no escape"))?;
            if !plain(hex) {
                return Err(refuse(format!(
                    "an escape (%{hex:02X}) of a character paths may not carry: encoded \
                     separators, dots-in-disguise and double encoding are refused"
                )));
            }
            decoded.push(hex);
            i += 3;
            continue;
        }
        if b == b':' {
            return Err(refuse(
                "a `:` (a scheme or port in disguise; no package path needs one)",
            ));
        }
        if b == b';' {
            return Err(refuse("a `;` path parameter"));
        }
        if b != b'/' && !plain(b) {
            return Err(refuse(format!(
                "the character {:?}",
                char::from(b).escape_default().to_string()
            )));
        }
        decoded.push(b);
        i += 1;
    }
    let path = String::from_utf8(decoded).map_err(|_| refuse("bytes that are not UTF-8"))?;
    check_segments(&path)?;
    Ok(path)
}

/// Segments: none empty (no `//`, no leading `/`), none `.` or `..`, at most
/// [`MAX_SEGMENTS`]; a trailing `/` is allowed.
fn check_segments(path: &str) -> Result<(), Refused> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return if path.is_empty() {
            Ok(())
        } else {
            Err(refuse("an empty segment"))
        };
    }
    let mut count = 0;
    for segment in trimmed.split('/') {
        count += 1;
        match segment {
            "" => return Err(refuse("an empty segment (`//` or a leading `/`)")),
            "." | ".." => return Err(refuse("a dot segment")),
            _ => {}
        }
    }
    if count > MAX_SEGMENTS {
        return Err(refuse(format!("more than {MAX_SEGMENTS} segments")));
    }
    Ok(())
}

/// A relative path airlock is about to join onto a base: RFC 3986 §4.2's rule that a
/// relative path's first segment has no `:` (else it reads as a scheme), and nothing that
/// could climb, re-root, or change what the path means.
fn check_relative(path: &str) -> Result<(), Refused> {
    if let Some(b) = path
        .bytes()
        .find(|b| b.is_ascii_control() || b"\\?#;".contains(b) || !b.is_ascii())
    {
        return Err(refuse(format!(
            "the character {:?}",
            char::from(b).escape_default().to_string()
        )));
    }
    let first = path.split('/').next().unwrap_or("");
    if first.contains(':') {
        return Err(refuse(
            "a first segment with `:` (it would read as a scheme)",
        ));
    }
    let lowered = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%00", "%25", "%3b"]
        .iter()
        .any(|t| lowered.contains(t))
    {
        return Err(refuse("an encoded separator, dot, `;` or `%`"));
    }
    check_segments(path)
}

/// `path` joined onto `base` (a directory URL, ending in `/`): refused unless the result
/// keeps `base`'s origin and lies under its path.
pub fn join(base: &url::Url, path: &str) -> Result<url::Url, Refused> {
    check_relative(path)?;
    let url = base
        .join(path)
        .map_err(|e| refuse(format!("it does not join onto the upstream URL: {e}")))?;
    if url.origin() != base.origin() {
        return Err(refuse("it would leave the upstream's origin"));
    }
    if !url.path().starts_with(base.path()) || url.query().is_some() || url.fragment().is_some() {
        return Err(refuse("it would leave the upstream's base path"));
    }
    Ok(url)
}

/// An absolute URL from the config or a parsed index, checked (see the module docs).
pub fn listed(base: &url::Url, text: &str) -> Result<url::Url, Refused> {
    let url = url::Url::parse(text).map_err(|e| refuse(format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse(format!("scheme {} is not http(s)", url.scheme())));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("it carries credentials"));
    }
    if url.fragment().is_some() {
        return Err(refuse("it carries a fragment"));
    }
    if url.origin() != base.origin() && internal(&url) && !internal(base) {
        return Err(refuse(
            "it names an internal address (loopback, private or link-local) and the \
             upstream is not on one",
        ));
    }
    Ok(url)
}

/// Whether `url` names an internal address literal or `localhost`.
fn internal(url: &url::Url) -> bool {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            return name == "localhost" || name.ends_with(".localhost");
        }
        None => return true,
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> url::Url {
        url::Url::parse("https://files.example.org/repo/").unwrap()
    }

    #[test]
    fn client_paths_are_canonical() {
        for (raw, canonical) in [
            ("k3s", "k3s"),
            ("v1.30.4%2Bk3s1/k3s", "v1.30.4+k3s1/k3s"),
            ("v1.30.4+k3s1/k3s", "v1.30.4+k3s1/k3s"),
            ("simple/", "simple/"),
            ("a/b-c_d.e~f/g+h", "a/b-c_d.e~f/g+h"),
            ("with%20space", "with space"),
            ("", ""),
        ] {
            assert_eq!(client_path(raw).as_deref(), Ok(canonical), "{raw}");
        }
    }

    #[test]
    fn hostile_client_paths_are_refused() {
        for bad in [
            "http:127.0.0.1:8080/secret",
            "http:0x7f.1:8080/latest/meta-data/creds",
            "https:evil.example/x",
            "http:a:99999/x",
            "HTTP:/x",
            "file:/etc/passwd",
            "a/http:b/c",
            "..;/x",
            "a/..;/b",
            "a;b=c/d",
            "../x",
            "a/../b",
            "a//b",
            "/a",
            "./a",
            "a/.",
            "a/%2e%2e/b",
            "%2E%2E",
            "a%2Fb",
            "a%5Cb",
            "a%25%32%65",
            "%252e%252e/x",
            "a%3Fb",
            "a%23b",
            "a%3Bb",
            "a%3Ab",
            "a%00",
            "a%",
            "a%zz",
            "a\\b",
            "a/\u{0}",
            "a?b",
            "a#b",
            "caf\u{e9}",
            "a%C3%A9",
            "//evil.example/x",
        ] {
            assert!(client_path(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(client_path(&"a/".repeat(MAX_SEGMENTS + 1)).is_err());
        assert!(client_path(&"a".repeat(MAX_PATH + 1)).is_err());
    }

    #[test]
    fn joins_stay_under_the_base() {
        assert_eq!(
            join(&base(), "a/b.txt").unwrap().as_str(),
            "https://files.example.org/repo/a/b.txt"
        );
        assert_eq!(
            join(&base(), "v1+k3s1/with space").unwrap().as_str(),
            "https://files.example.org/repo/v1+k3s1/with%20space"
        );
        assert_eq!(join(&base(), "").unwrap(), base());
        for bad in [
            "http:127.0.0.1:8080/x",
            "http:/x",
            "//evil.example/x",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/%2e%2e/x",
            "..;/x",
            "a?x=1",
            "a#f",
            "a\\..\\x",
        ] {
            assert!(join(&base(), bad).is_err(), "{bad:?} was joined");
        }
        // A colon after the first segment is a plain character (OCI digests).
        assert!(join(&base(), "v2/library/x/blobs/sha256:ab").is_ok());
    }

    #[test]
    fn listed_urls() {
        let ok = [
            "https://files.pythonhosted.org/packages/ab/x-1.whl",
            "https://files.example.org/elsewhere/x",
            "http://mirror.example.net:8080/x.rpm",
        ];
        for url in ok {
            assert!(listed(&base(), url).is_ok(), "{url}");
        }
        for bad in [
            "file:///etc/passwd",
            "gopher://x/",
            "https://user:pw@files.example.org/x",
            "https://files.example.org/x#frag",
            "http://127.0.0.1:8080/secret",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://10.1.2.3/x",
            "http://localhost:9000/x",
            "relative/path",
        ] {
            assert!(listed(&base(), bad).is_err(), "{bad:?} was accepted");
        }
        // A site-internal mirror may list files on other internal hosts.
        let internal_base = url::Url::parse("http://10.0.0.5/pypi/").unwrap();
        assert!(listed(&internal_base, "http://10.0.0.6/files/x.whl").is_ok());
    }

    /// Whatever a client sends, what reaches the join is under the base or refused.
    fn arbitrary_path() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "a",
            "b.c",
            "..",
            ".",
            "",
            "/",
            "%2e",
            "%2E",
            "%2f",
            "%25",
            "%3a",
            "%2B",
            ":",
            ";",
            "http:",
            "https:",
            "//",
            "\\",
            "?",
            "#",
            "@",
            "127.0.0.1",
            ":8080",
            "%00",
            "x%20y",
            "~",
            "+",
            "*",
            "'",
            "file:",
        ]);
        prop::collection::vec(pieces, 0..12).prop_map(|p| p.concat())
    }

    proptest! {
        #[test]
        fn generated_paths_never_leave_the_base(raw in arbitrary_path()) {
            if let Ok(path) = client_path(&raw) {
                let url = join(&base(), &path).expect("a canonical client path joins");
                prop_assert_eq!(url.origin(), base().origin());
                prop_assert!(url.path().starts_with("/repo/"));
                prop_assert!(!url.path().contains("/../") && !url.path().contains("/./"));
            }
            if let Ok(url) = join(&base(), &raw) {
                prop_assert_eq!(url.origin(), base().origin());
                prop_assert!(url.path().starts_with("/repo/"));
            }
        }

        #[test]
        fn any_bytes_are_judged_without_panic(raw in ".{0,64}") {
            let _ = client_path(&raw);
            let _ = join(&base(), &raw);
            let _ = listed(&base(), &raw);
        }
    }
}
