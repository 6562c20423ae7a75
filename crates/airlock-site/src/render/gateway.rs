//! `staging/airlock.toml` and the Keycloak proxy mappings that point at its egress port.

use std::net::SocketAddr;

use airlock_config::{Egress, Format, TlsMode, raw};
use airlock_types::HumanDuration;

use super::{RenderError, header};
use crate::site::{GatewayTls, OutboundProxy, Site, Staging};

/// The gateway's own configuration type, filled with what the site sets; every other key
/// keeps the gateway's default by being left out. `staging` is the replica it is for: only
/// `[server]`'s names differ between replicas.
pub(super) fn airlock_toml(
    site: &Site,
    staging: &Staging,
    logins: &Logins,
) -> Result<String, RenderError> {
    let mut extra_names = Vec::new();
    if staging.registry_host != staging.hostname {
        extra_names.push(staging.registry_host.clone());
    }
    let address = &staging.machine.address;
    if *address != staging.hostname && address != "localhost" && !extra_names.contains(address) {
        extra_names.push(address.clone());
    }
    let tls = match &site.tls {
        GatewayTls::SelfSigned => raw::Tls {
            mode: Some(TlsMode::SelfSigned),
            ..raw::Tls::default()
        },
        GatewayTls::Files { cert, key } => raw::Tls {
            mode: Some(TlsMode::Files),
            cert: Some(cert.into()),
            key: Some(key.into()),
        },
    };
    let upstream = |name: &str, url: &str| {
        url.parse().map_err(|e| RenderError::Upstream {
            name: name.to_owned(),
            url: url.to_owned(),
            reason: format!("{e}"),
        })
    };
    let mut proxies = Vec::new();
    for m in &site.mirrors {
        proxies.push(raw::Proxy {
            host: Some(m.registry.clone()),
            ..raw::Proxy::new(&m.project, Format::Oci, upstream(&m.project, &m.upstream)?)
        });
    }
    for p in &site.packages {
        proxies.push(raw::Proxy::new(
            p.name,
            p.format,
            upstream(p.name, &p.upstream)?,
        ));
    }
    let max_size = match &site.cache_max_size {
        Some(size) => {
            let value = size.parse().map_err(|e| RenderError::CacheSize {
                size: size.clone(),
                reason: format!("{e}"),
            })?;
            Some(raw::Written::spelled(value, size))
        }
        None => None,
    };
    let config = raw::Config {
        data_dir: Some(site.data_dir.clone().into()),
        server: raw::Server {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 443))),
            hostname: Some(staging.hostname.clone()),
            extra_names,
            ..raw::Server::default()
        },
        tls,
        cache: Some(raw::Cache {
            max_size,
            unused_for: Some(raw::Written::spelled(
                HumanDuration::from_secs(30 * 86400),
                "30d",
            )),
            ..raw::Cache::default()
        }),
        proxies,
        hosted: site.hosted.clone(),
        robots: logins.robots.clone(),
        egress: Some(Egress {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], site.egress.port))),
            allow: Some(site.egress.allow.clone()),
            ports: Some(vec![443]),
            ..Egress::default()
        }),
        upstream_proxy: site.upstream_proxy.as_ref().map(OutboundProxy::table),
        admin: logins.admin.clone(),
        policies: Vec::new(),
        ui: None,
        audit: None,
        storage: site.storage.clone(),
    };
    Ok(format!("{}{}", header(site, "#"), config.to_toml()))
}

/// The gateway's accounts, `[admin]` and `[[robot]]`, with argon2id hashes of the
/// inventory's password and secrets: made once per render (argon2 is slow on purpose) and
/// the same on every render and every replica, salted with the primary's name (see
/// `hash_password_stable`), so a re-deploy changes nothing and no secret reaches the
/// staging node.
pub(super) struct Logins {
    admin: Option<raw::Admin>,
    robots: Vec<raw::Robot>,
}

impl Logins {
    /// The accounts of `site`, whose primary staging host is `primary`.
    pub(super) fn of(site: &Site, primary: &Staging) -> Result<Self, RenderError> {
        let host = &primary.hostname;
        let admin = match &site.admin_password {
            Some(password) => {
                let hash = airlock_config::hash_password_stable(
                    password.0.as_bytes(),
                    &format!("{host}/admin"),
                )
                .map_err(|e| RenderError::AdminPassword {
                    reason: e.to_string(),
                })?;
                Some(raw::Admin {
                    users: vec![raw::AdminUser {
                        name: "admin".to_owned(),
                        password_hash: hash,
                    }],
                    token_ttl: None,
                })
            }
            None => None,
        };
        let robots = site
            .robots
            .iter()
            .map(|robot| {
                let context = format!("{host}/robot/{}", robot.name);
                let secret_hash =
                    airlock_config::hash_password_stable(robot.secret.0.as_bytes(), &context)
                        .map_err(|e| RenderError::RobotSecret {
                            name: robot.name.clone(),
                            reason: e.to_string(),
                        })?;
                Ok(raw::Robot {
                    name: robot.name.clone(),
                    secret_hash,
                    push: robot.push.clone(),
                    pull: robot.pull.clone(),
                })
            })
            .collect::<Result<_, RenderError>>()?;
        Ok(Self { admin, robots })
    }
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
