//! `staging/airlock.toml` and the Keycloak proxy mappings that point at its egress port.

use serde::Serialize;

use super::header;
use crate::site::{GatewayTls, Site, Staging};

#[derive(Serialize)]
struct Config<'a> {
    data_dir: &'a str,
    server: Server<'a>,
    tls: Tls<'a>,
    cache: Cache<'a>,
    #[serde(rename = "proxy")]
    proxies: Vec<Proxy<'a>>,
    egress: Egress<'a>,
}

#[derive(Serialize)]
struct Server<'a> {
    listen: &'a str,
    hostname: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    extra_names: Vec<&'a str>,
}

#[derive(Serialize)]
struct Tls<'a> {
    mode: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
}

#[derive(Serialize)]
struct Cache<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_size: Option<&'a str>,
    unused_for: &'a str,
}

#[derive(Serialize)]
struct Proxy<'a> {
    name: &'a str,
    format: &'a str,
    upstream: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
}

#[derive(Serialize)]
struct Egress<'a> {
    listen: String,
    allow: &'a [String],
    ports: [u16; 1],
}

pub(super) fn airlock_toml(site: &Site, staging: &Staging) -> String {
    let mut extra_names = Vec::new();
    if staging.registry_host != staging.hostname {
        extra_names.push(staging.registry_host.as_str());
    }
    let address = staging.machine.address.as_str();
    if address != staging.hostname && address != "localhost" && !extra_names.contains(&address) {
        extra_names.push(address);
    }
    let tls = match &site.tls {
        GatewayTls::SelfSigned => Tls {
            mode: "self-signed",
            cert: None,
            key: None,
        },
        GatewayTls::Files { cert, key } => Tls {
            mode: "files",
            cert: Some(cert),
            key: Some(key),
        },
    };
    let mut proxies: Vec<Proxy> = site
        .mirrors
        .iter()
        .map(|m| Proxy {
            name: &m.project,
            format: "oci",
            upstream: &m.upstream,
            host: Some(&m.registry),
        })
        .collect();
    proxies.extend(site.packages.iter().map(|p| Proxy {
        name: p.name,
        format: p.format,
        upstream: &p.upstream,
        host: None,
    }));
    let config = Config {
        data_dir: &site.data_dir,
        server: Server {
            listen: "0.0.0.0:443",
            hostname: &staging.hostname,
            extra_names,
        },
        tls,
        cache: Cache {
            max_size: site.cache_max_size.as_deref(),
            unused_for: "30d",
        },
        proxies,
        egress: Egress {
            listen: format!("0.0.0.0:{}", site.egress.port),
            allow: &site.egress.allow,
            ports: [443],
        },
    };
    let body = toml::to_string(&config).expect("the gateway config always serializes");
    format!("{}{body}", header(site, "#"))
}

/// Keycloak's `spi-connections-http-client-default-proxy-mappings`: one
/// `<host regex>;http://<staging>:<port>` per allowed host, comma-joined.
pub(super) fn keycloak_proxy_mappings(site: &Site, staging: &Staging) -> String {
    let proxy = format!("http://{}:{}", staging.hostname, site.egress.port);
    let mappings: Vec<String> = site
        .egress
        .allow
        .iter()
        .map(|host| format!("{};{proxy}", host_regex(host)))
        .collect();
    if mappings.is_empty() {
        String::new()
    } else {
        format!("{}\n", mappings.join(","))
    }
}

/// The regex for one egress allowlist entry, matching exactly the names the egress proxy
/// admits: `a.b` only `a.b`; `*.a.b` one or more labels below `a.b`, never `a.b` itself.
///
/// Keycloak matches a pattern against the whole host name (Java `Matcher.matches()`); the
/// anchors say so for any other reader. Dots are written `[.]`, not `\.`: Keycloak reads the
/// option as a `MicroProfile` Config list, which strips one level of backslashes, so a `\.`
/// would arrive as "any character". No `,` either: it separates the mappings.
fn host_regex(entry: &str) -> String {
    let (prefix, name) = match entry.strip_prefix("*.") {
        Some(name) => ("(?:[A-Za-z0-9_-]+[.])+", name),
        None => ("", entry),
    };
    let mut out = format!("^{prefix}");
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            out.push(c);
        } else {
            // Host names hold nothing else but dots; a class keeps any other byte literal
            // without a backslash.
            out.push('[');
            out.push(c);
            out.push(']');
        }
    }
    out.push('$');
    out
}

#[cfg(test)]
mod tests {
    use super::host_regex;

    /// Java's `Pattern.matcher(host).matches()`: the whole host, not a substring.
    fn java_matches(pattern: &str, host: &str) -> bool {
        let re = regex_automata::meta::Regex::new(pattern).unwrap();
        let input = regex_automata::Input::new(host).anchored(regex_automata::Anchored::Yes);
        re.find(input).is_some_and(|m| m.end() == host.len())
    }

    #[test]
    fn exact_entries_match_only_that_host() {
        let re = host_regex("login.microsoftonline.com");
        assert_eq!(re, "^login[.]microsoftonline[.]com$");
        assert!(java_matches(&re, "login.microsoftonline.com"));
        for other in [
            "loginXmicrosoftonline.com",
            "evil-login.microsoftonline.com",
            "a.login.microsoftonline.com",
            "login.microsoftonline.com.evil.org",
        ] {
            assert!(!java_matches(&re, other), "{other}");
        }
    }

    /// Regression: `*.x` became `^\*\.x$`, which matches only the literal name `*.x`.
    #[test]
    fn wildcard_entries_match_subdomains_at_any_depth() {
        let re = host_regex("*.github.com");
        for host in ["api.github.com", "a.b.github.com", "x-1.github.com"] {
            assert!(java_matches(&re, host), "{re} should match {host}");
        }
        for host in [
            "github.com",
            ".github.com",
            "evilgithub.com",
            "api.github.com.evil.org",
            "api.githubXcom",
            "*.github.com",
        ] {
            assert!(!java_matches(&re, host), "{re} should not match {host}");
        }
    }

    #[test]
    fn the_rendered_option_maps_each_allowed_host_to_the_gateway() {
        let mut site = crate::testing::site();
        site.egress.allow = vec!["login.microsoftonline.com".into(), "*.github.com".into()];
        let staging = site.staging.clone().unwrap();
        let text = super::keycloak_proxy_mappings(&site, &staging);
        let proxy = format!("http://{}:{}", staging.hostname, site.egress.port);
        let mappings: Vec<(&str, &str)> = text
            .trim_end()
            .split(',')
            .map(|m| m.split_once(';').unwrap())
            .collect();
        assert_eq!(mappings.len(), 2, "{text}");
        let route = |host: &str| {
            mappings
                .iter()
                .find(|(re, _)| java_matches(re, host))
                .map(|(_, p)| *p)
        };
        assert_eq!(route("login.microsoftonline.com"), Some(proxy.as_str()));
        assert_eq!(route("api.github.com"), Some(proxy.as_str()));
        assert_eq!(route("github.com"), None);
        assert_eq!(route("example.org"), None);
    }

    #[test]
    fn patterns_survive_microprofile_list_parsing() {
        for entry in ["*.github.com", "login.microsoftonline.com"] {
            let re = host_regex(entry);
            assert!(!re.contains('\\') && !re.contains(','), "{re}");
        }
    }
}
