//! `[upstream_proxy]`: the site's own outbound HTTP proxy, which every upstream request of
//! the gateway (and every download of `airlock deploy`) goes through unless `no_proxy`
//! sends it direct. The table as written is [`UpstreamProxy`]; [`UpstreamProxy::resolve`]
//! checks it once into [`UpstreamProxySettings`].
//!
//! The proxy is taken from this table only, never from `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`
//! in the environment: what the gateway reaches, and through what, is what the file says.
//! A password is never written in the file: `password_file` names a file holding it.

use std::net::IpAddr;
use std::path::PathBuf;

use airlock_types::{Cidr, CidrError};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::raw::UpstreamUrl;

/// The `[upstream_proxy]` table.
///
/// ```toml
/// [upstream_proxy]
/// url = "http://proxy.example.edu:3128"     # http:// or https://, no credentials
/// username = "airlock"                      # optional, with password_file
/// password_file = "/etc/airlock/upstream-proxy.password"
/// ca_file = "/etc/pki/site-proxy-ca.pem"    # a TLS-intercepting or https proxy's CA
/// no_proxy = ["10.0.0.0/8", ".example.edu", "mirror.example.org"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamProxy {
    /// The proxy: `http://host:port` (plain forward proxy and CONNECT) or `https://…`.
    pub url: UpstreamUrl,
    /// The user name for the proxy's Basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the proxy password (never the secret itself in TOML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) added to the trust roots of every upstream connection: the
    /// CA of a TLS-intercepting proxy, or of an `https://` proxy's own certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Hosts reached directly, not through the proxy: see [`NoProxyEntry`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_proxy: Vec<String>,
}

/// An `[upstream_proxy]` table that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamProxyError {
    #[error(
        "url {url:?} must be an http:// or https:// URL with a host (e.g. \"http://proxy.example.edu:3128\")"
    )]
    Scheme { url: String },
    #[error("url must not carry credentials; set username and password_file instead")]
    Credentials,
    #[error("url {url:?} must name only the proxy: no path, query or fragment")]
    Path { url: String },
    #[error("password_file needs a username")]
    PasswordWithoutUsername,
    #[error("username {username:?} must not be empty or contain ':'")]
    Username { username: String },
    #[error("no_proxy entry {entry:?}: {reason}")]
    NoProxy { entry: String, reason: String },
}

/// One `no_proxy` entry, with the usual semantics (Go's `httpproxy`, curl):
///
/// | written | goes direct |
/// |---|---|
/// | `*` | every host |
/// | `example.edu` | `example.edu` and every name below it |
/// | `.example.edu` or `*.example.edu` | names below `example.edu`, not the name itself |
/// | `10.0.0.5`, `::1` | that address, written as the URL's host |
/// | `10.0.0.0/8`, `fd00::/8` | addresses in that network, written as the URL's host |
///
/// Names are matched as written in the URL, case-insensitively and without a trailing
/// dot; nothing is resolved, so a name is never matched against a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoProxyEntry {
    Everything,
    Domain(String),
    Below(String),
    Network(Cidr),
}

impl NoProxyEntry {
    fn parse(entry: &str) -> Result<Self, UpstreamProxyError> {
        let refuse = |reason: &str| UpstreamProxyError::NoProxy {
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        };
        let text = entry.trim().to_ascii_lowercase();
        if text == "*" {
            return Ok(Self::Everything);
        }
        if text.is_empty() {
            return Err(refuse("is empty"));
        }
        if text.contains("://") {
            return Err(refuse(
                "write a host name, .domain, address or network (no scheme or path)",
            ));
        }
        let unbracketed = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(&text);
        match unbracketed.parse::<Cidr>() {
            Ok(cidr) => return Ok(Self::Network(cidr)),
            Err(e) if text.contains('/') => return Err(refuse(&cidr_reason(&e))),
            Err(_) => {}
        }
        if text.contains(':') {
            return Err(refuse(
                "ports are not matched: write the host name or address alone",
            ));
        }
        let (below, name) = match text.strip_prefix("*.").or_else(|| text.strip_prefix('.')) {
            Some(name) => (true, name),
            None => (false, text.as_str()),
        };
        let name = name.trim_end_matches('.');
        if !is_domain(name) {
            return Err(refuse(
                "not a host name: write e.g. \"mirror.example.edu\", \".example.edu\" or \"10.0.0.0/8\"",
            ));
        }
        Ok(if below {
            Self::Below(name.to_owned())
        } else {
            Self::Domain(name.to_owned())
        })
    }

    /// Whether a request to `host` (a URL's host: a name or an address) goes direct.
    pub fn matches(&self, host: &url::Host<&str>) -> bool {
        match (self, host) {
            (Self::Everything, _) => true,
            (Self::Network(cidr), url::Host::Ipv4(ip)) => cidr.contains(IpAddr::V4(*ip)),
            (Self::Network(cidr), url::Host::Ipv6(ip)) => cidr.contains(IpAddr::V6(*ip)),
            (Self::Domain(domain), url::Host::Domain(name)) => {
                let name = normalize(name);
                name == *domain || is_below(&name, domain)
            }
            (Self::Below(domain), url::Host::Domain(name)) => is_below(&normalize(name), domain),
            _ => false,
        }
    }
}

impl std::fmt::Display for NoProxyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Everything => f.write_str("*"),
            Self::Domain(d) => f.write_str(d),
            Self::Below(d) => write!(f, ".{d}"),
            Self::Network(cidr) => write!(f, "{cidr}"),
        }
    }
}

fn cidr_reason(error: &CidrError) -> String {
    match error {
        CidrError::Syntax(_) => {
            "write a host name, .domain, address or network (no scheme or path)".to_owned()
        }
        other => other.to_string(),
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn is_below(name: &str, domain: &str) -> bool {
    name.len() > domain.len() + 1
        && name.ends_with(domain)
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
}

fn is_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A resolved `[upstream_proxy]`: the proxy URL and the hosts that go direct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamProxySettings {
    /// `http(s)://host[:port]/`, without credentials.
    pub url: Url,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub no_proxy: Vec<NoProxyEntry>,
    /// The table as written (what `config check` prints).
    pub table: UpstreamProxy,
}

impl UpstreamProxySettings {
    /// Whether a request to `url` goes through the proxy (its host is in no `no_proxy`
    /// entry). A URL without a host never does.
    pub fn proxies(&self, url: &Url) -> bool {
        url.host()
            .is_some_and(|host| !self.no_proxy.iter().any(|entry| entry.matches(&host)))
    }
}

impl UpstreamProxy {
    /// A table with only `url` set.
    pub fn new(url: UpstreamUrl) -> Self {
        Self {
            url,
            username: None,
            password_file: None,
            ca_file: None,
            no_proxy: Vec::new(),
        }
    }

    /// Validate and resolve. Files are read when the client is built, not here.
    pub fn resolve(&self) -> Result<UpstreamProxySettings, UpstreamProxyError> {
        let url = self.url.url();
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(UpstreamProxyError::Scheme { url: shown(url) });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UpstreamProxyError::Credentials);
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(UpstreamProxyError::Path { url: shown(url) });
        }
        match (&self.username, &self.password_file) {
            (None, Some(_)) => return Err(UpstreamProxyError::PasswordWithoutUsername),
            (Some(user), _) if user.is_empty() || user.contains(':') => {
                return Err(UpstreamProxyError::Username {
                    username: user.clone(),
                });
            }
            _ => {}
        }
        let no_proxy = self
            .no_proxy
            .iter()
            .map(|entry| NoProxyEntry::parse(entry))
            .collect::<Result<_, _>>()?;
        Ok(UpstreamProxySettings {
            url: url.clone(),
            username: self.username.clone(),
            password_file: self.password_file.clone(),
            ca_file: self.ca_file.clone(),
            no_proxy,
            table: self.clone(),
        })
    }
}

/// A URL for an error message: never its credentials.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<UpstreamProxySettings, String> {
        let table: UpstreamProxy = toml::from_str(text).map_err(|e| e.to_string())?;
        table.resolve().map_err(|e| e.to_string())
    }

    fn direct(no_proxy: &[&str], url: &str) -> bool {
        let settings = UpstreamProxy {
            no_proxy: no_proxy.iter().map(|s| (*s).to_owned()).collect(),
            ..UpstreamProxy::new("http://proxy.example.edu:3128".parse().unwrap())
        }
        .resolve()
        .unwrap();
        !settings.proxies(&Url::parse(url).unwrap())
    }

    #[test]
    fn a_minimal_table_proxies_everything() {
        let settings = table("url = \"http://proxy.example.edu:3128\"").unwrap();
        assert_eq!(settings.url.as_str(), "http://proxy.example.edu:3128/");
        assert!(settings.proxies(&Url::parse("https://registry-1.docker.io/v2/").unwrap()));
        assert!(settings.proxies(&Url::parse("http://127.0.0.1:5000/v2/").unwrap()));
    }

    #[test]
    fn no_proxy_follows_the_usual_semantics() {
        assert!(direct(&["example.edu"], "https://example.edu/"));
        assert!(direct(&["example.edu"], "https://a.b.example.edu/"));
        assert!(direct(&["Example.EDU."], "https://mirror.example.edu./x"));
        assert!(!direct(&["example.edu"], "https://badexample.edu/"));
        assert!(direct(&[".example.edu"], "https://a.example.edu/"));
        assert!(!direct(&[".example.edu"], "https://example.edu/"));
        assert!(direct(&["*.example.edu"], "https://a.example.edu/"));
        assert!(!direct(&["*.example.edu"], "https://example.edu/"));
        assert!(direct(&["10.0.0.0/8"], "http://10.20.0.5:8080/"));
        assert!(!direct(&["10.0.0.0/8"], "http://11.0.0.1/"));
        assert!(direct(&["127.0.0.1"], "http://127.0.0.1:5000/"));
        assert!(!direct(&["127.0.0.1"], "http://127.0.0.2:5000/"));
        assert!(direct(&["fd00::/8"], "http://[fd00::1]/"));
        assert!(direct(&["::1"], "http://[::1]:80/"));
        assert!(direct(&["*"], "https://anything.example.org/"));
        // Names are never resolved: a network does not match a name.
        assert!(!direct(&["127.0.0.0/8"], "http://localhost/"));
        assert!(!direct(&["localhost"], "http://127.0.0.1/"));
    }

    #[test]
    fn refuses_bad_tables_with_the_reason() {
        let bad = |text: &str| table(text).unwrap_err();
        assert!(bad("url = \"socks5://p:1080\"").contains("http:// or https://"));
        assert!(bad("url = \"not a url\"").contains("not a url"));
        let creds = bad("url = \"http://user:s3cret@proxy:3128\"");
        assert!(creds.contains("password_file"), "{creds}");
        assert!(!creds.contains("s3cret"), "{creds}");
        assert!(bad("url = \"http://proxy:3128/path\"").contains("no path"));
        assert!(bad("url = \"http://p:1\"\npassword_file = \"/x\"").contains("username"));
        assert!(bad("url = \"http://p:1\"\nusername = \"a:b\"").contains("username"));
        assert!(bad("url = \"http://p:1\"\nproxy = \"x\"").contains("unknown field"));
        for (entry, reason) in [
            ("", "empty"),
            ("http://example.edu", "no scheme"),
            ("example.edu/path", "no scheme"),
            ("10.0.0.1/8", "10.0.0.0/8"),
            ("example.edu:443", "ports"),
            ("exa mple.edu", "not a host name"),
            ("-bad.example", "not a host name"),
        ] {
            let message = bad(&format!("url = \"http://p:1\"\nno_proxy = [\"{entry}\"]"));
            assert!(message.contains("no_proxy entry"), "{entry}: {message}");
            assert!(message.contains(reason), "{entry}: {message}");
        }
    }
}
