//! `charts` through `helm` proxies: each proxy's `index.yaml` (once), then each chart
//! version at the URL the gateway rewrote it to, checked against the index's digest.

use std::collections::HashMap;
use std::path::Path;

use airlock_ansible::yaml::{self, Node};
use airlock_types::Digest;
use url::Url;

use super::{Client, Section, WarmError, listed};
use crate::create::spec::ChartSpec;

/// A Helm index larger than this is refused (large public ones are tens of MiB).
const INDEX_LIMIT: u64 = 256 * 1024 * 1024;

pub(super) async fn warm(
    client: &Client,
    charts: &[ChartSpec],
    warmed: &mut Section,
) -> Result<(), WarmError> {
    let mut indexes: HashMap<&str, (Url, Node)> = HashMap::new();
    for chart in charts {
        let proxy = chart.proxy.as_str();
        if !indexes.contains_key(proxy) {
            let url = client.proxy_url(proxy, "index.yaml")?;
            let (body, fetched) = client.document(proxy, &url, None, INDEX_LIMIT).await?;
            warmed.documents.push(fetched);
            let root = parse_index(&url, &body)?;
            indexes.insert(proxy, (url, root));
        }
        let (index_url, root) = &indexes[proxy];
        let (href, digest) = find(root, chart).map_err(|message| match message {
            Find::Absent(available) => WarmError::ChartAbsent {
                proxy: proxy.to_owned(),
                name: chart.name.clone(),
                version: chart.version.clone(),
                available,
            },
            Find::Malformed(message) => WarmError::Malformed {
                url: index_url.to_string(),
                message,
            },
        })?;
        let url = index_url.join(&href).map_err(|e| WarmError::Malformed {
            url: index_url.to_string(),
            message: format!("chart URL {href:?}: {e}"),
        })?;
        let url = client.below(proxy, url)?;
        warmed
            .files
            .push(client.file(proxy, &url, digest.as_ref()).await?);
        tracing::info!(chart = %chart.name, version = %chart.version, proxy, "warmed");
    }
    Ok(())
}

fn parse_index(url: &Url, body: &[u8]) -> Result<Node, WarmError> {
    let malformed = |message: String| WarmError::Malformed {
        url: url.to_string(),
        message,
    };
    let text = std::str::from_utf8(body)
        .map_err(|_| malformed("the Helm index is not UTF-8".to_owned()))?;
    let document = yaml::parse_str(text, Path::new("index.yaml"))
        .map_err(|e| malformed(format!("not a Helm index: {e}")))?;
    Ok(document.root)
}

/// The value of `key` in the mapping `map`.
fn get<'a>(map: &'a Node, key: &str) -> Option<&'a Node> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

enum Find {
    /// The versions the index has of the chart, for the message.
    Absent(String),
    Malformed(String),
}

/// The first URL and the digest of `chart`'s entry in the index `root`.
fn find(root: &Node, chart: &ChartSpec) -> Result<(String, Option<Digest>), Find> {
    let entries = get(root, "entries")
        .filter(|e| e.as_map().is_some())
        .ok_or_else(|| Find::Malformed("a Helm index without `entries`".to_owned()))?;
    let Some(versions) = get(entries, &chart.name).and_then(Node::as_seq) else {
        return Err(Find::Absent(format!(
            "it has no chart named {}",
            chart.name
        )));
    };
    let mut available = Vec::new();
    for entry in versions {
        let Some(version) = get(entry, "version").and_then(Node::as_str) else {
            continue;
        };
        if version != chart.version {
            available.push(version.to_owned());
            continue;
        }
        let href = get(entry, "urls")
            .and_then(Node::as_seq)
            .and_then(|urls| urls.first())
            .and_then(Node::as_str)
            .ok_or_else(|| Find::Malformed(format!("{} {version} has no `urls`", chart.name)))?;
        let digest = get(entry, "digest")
            .and_then(Node::as_str)
            .map(|hex| {
                Digest::sha256_hex(hex.trim_start_matches("sha256:")).map_err(|_| {
                    Find::Malformed(format!(
                        "{} {version}: digest {hex:?} is not sha256 hex",
                        chart.name
                    ))
                })
            })
            .transpose()?;
        return Ok((href.to_owned(), digest));
    }
    Err(Find::Absent(if available.is_empty() {
        "it lists no version of that chart".to_owned()
    } else {
        format!("it has {}", listed(&available, 20))
    }))
}
