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
/// `<anchored, escaped host regex>;http://<staging>:<port>` per allowed host, comma-joined.
pub(super) fn keycloak_proxy_mappings(site: &Site, staging: &Staging) -> String {
    let proxy = format!("http://{}:{}", staging.hostname, site.egress.port);
    let mappings: Vec<String> = site
        .egress
        .allow
        .iter()
        .map(|host| format!("^{}$;{proxy}", escape_regex(host)))
        .collect();
    if mappings.is_empty() {
        String::new()
    } else {
        format!("{}\n", mappings.join(","))
    }
}

fn escape_regex(host: &str) -> String {
    let mut out = String::with_capacity(host.len() + 8);
    for c in host.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn regexes_escape_dots() {
        assert_eq!(super::escape_regex("a.b-c.com"), r"a\.b-c\.com");
    }
}
