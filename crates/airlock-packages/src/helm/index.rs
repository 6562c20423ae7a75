//! A Helm repository's `index.yaml`: every chart URL in `entries.<chart>[].urls` rewritten
//! to the gateway, and the map back from a gateway path to the URL and digest it stands for.

use std::collections::HashMap;

use airlock_types::Digest;
use reqwest::Url;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

/// Where a gateway path's chart comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chart {
    /// The absolute URL the index gave (resolved against the repository URL).
    pub url: String,
    /// The entry's `digest` (sha256 of the `.tgz`), `None` when it gives none, a malformed
    /// one, or two entries disagree.
    pub digest: Option<Digest>,
}

/// An `index.yaml` rewritten for clients of the gateway.
#[derive(Debug)]
pub(super) struct Rewritten {
    pub bytes: Vec<u8>,
    /// Gateway path below `/repository/<name>/` → the chart it serves.
    pub charts: HashMap<String, Chart>,
}

/// The prefix of gateway paths for charts on hosts other than the upstream's.
pub(super) const EXTERNAL: &str = "_ext/";

/// Parses `bytes` as a Helm repository index and rewrites its chart URLs: a URL under the
/// upstream `base` becomes `/repository/<proxy>/<path below base>`, any other http(s) URL
/// `/repository/<proxy>/_ext/<scheme>/<host>/<port>/<path>` (no `:` in it: a client path
/// never carries one). Other URLs are left as they are.
pub(super) fn rewrite(bytes: &[u8], base: &Url, proxy: &str) -> Result<Rewritten, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "index.yaml is not UTF-8".to_owned())?;
    refuse_aliases(text)?;
    let mut documents =
        YamlLoader::load_from_str(text).map_err(|e| format!("index.yaml is not YAML: {e}"))?;
    if documents.len() != 1 {
        return Err(format!(
            "index.yaml holds {} YAML documents, not one",
            documents.len()
        ));
    }
    let mut document = documents.pop().expect("one document");
    let Yaml::Hash(root) = &mut document else {
        return Err("index.yaml is not a mapping".to_owned());
    };
    if root.get(&Yaml::from_str("apiVersion")).is_none() {
        return Err("index.yaml has no apiVersion: not a Helm repository index".to_owned());
    }
    let mut charts: HashMap<String, Chart> = HashMap::new();
    match root.get_mut(&Yaml::String("entries".to_owned())) {
        None | Some(Yaml::Null) => {}
        Some(Yaml::Hash(entries)) => {
            for (name, versions) in entries.iter_mut() {
                let name = name.as_str().unwrap_or("?").to_owned();
                let Yaml::Array(versions) = versions else {
                    return Err(format!("index.yaml: entries.{name} is not a list"));
                };
                for version in versions.iter_mut() {
                    rewrite_version(version, &name, base, proxy, &mut charts)?;
                }
            }
        }
        Some(_) => return Err("index.yaml: entries is not a mapping".to_owned()),
    }
    let mut out = String::with_capacity(bytes.len() + bytes.len() / 4);
    YamlEmitter::new(&mut out)
        .dump(&document)
        .map_err(|e| format!("index.yaml could not be written back: {e:?}"))?;
    out.push('\n');
    Ok(Rewritten {
        bytes: out.into_bytes(),
        charts,
    })
}

fn rewrite_version(
    version: &mut Yaml,
    name: &str,
    base: &Url,
    proxy: &str,
    charts: &mut HashMap<String, Chart>,
) -> Result<(), String> {
    let Yaml::Hash(version) = version else {
        return Err(format!("index.yaml: an entry of {name} is not a mapping"));
    };
    let digest = match version.get(&Yaml::String("digest".to_owned())) {
        Some(Yaml::String(hex)) => Digest::sha256_hex(&hex.to_ascii_lowercase()).ok(),
        _ => None,
    };
    let Some(urls) = version.get_mut(&Yaml::String("urls".to_owned())) else {
        return Ok(());
    };
    let Yaml::Array(urls) = urls else {
        return Err(format!(
            "index.yaml: urls of an entry of {name} is not a list"
        ));
    };
    for url in urls.iter_mut() {
        let Yaml::String(reference) = url else {
            return Err(format!("index.yaml: a URL of {name} is not a string"));
        };
        let Some(path) = gateway_path(base, reference) else {
            continue;
        };
        let resolved = base
            .join(reference)
            .expect("gateway_path resolved it")
            .to_string();
        let chart = Chart {
            url: resolved,
            digest: digest.clone(),
        };
        match charts.get_mut(&path) {
            None => {
                charts.insert(path.clone(), chart);
            }
            // The same file listed twice must be the same file.
            Some(existing) if *existing != chart => existing.digest = None,
            Some(_) => {}
        }
        *url = Yaml::String(format!("/repository/{proxy}/{path}"));
    }
    Ok(())
}

/// The gateway path (below `/repository/<name>/`) for a chart URL of the index, `None` for
/// one the gateway does not serve (not http(s), or a path it would refuse).
fn gateway_path(base: &Url, reference: &str) -> Option<String> {
    let url = base.join(reference).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.fragment().is_some() {
        return None;
    }
    let under_base = url.origin() == base.origin()
        && url.query().is_none()
        && url.path().starts_with(base.path());
    let path = if under_base {
        url.path()[base.path().len()..].to_owned()
    } else {
        format!(
            "{EXTERNAL}{}/{}/{}{}",
            url.scheme(),
            url.host_str()?,
            url.port_or_known_default()?,
            url.path()
        )
    };
    // Keyed as a client's request for it will read once canonical.
    let path = airlock_upstream::target::client_path(&path).ok()?;
    let servable =
        !path.is_empty() && !path.ends_with('/') && (!under_base || !path.starts_with(EXTERNAL));
    servable.then_some(path)
}

/// YAML aliases could expand a small document into an enormous one; Helm indexes have none.
fn refuse_aliases(text: &str) -> Result<(), String> {
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => return Ok(()),
            Ok((Event::Alias(_), mark)) => {
                return Err(format!(
                    "index.yaml uses a YAML alias (line {}), which a Helm index never needs",
                    mark.line()
                ));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("index.yaml is not YAML: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn base() -> Url {
        Url::parse("https://charts.example.com/stable/").unwrap()
    }

    #[test]
    fn urls_are_rewritten_and_mapped_back() {
        let index = format!(
            "apiVersion: v1\nentries:\n  app:\n  - name: app\n    version: 1.0.0\n    digest: {DIGEST}\n    urls:\n    - app-1.0.0.tgz\n    - https://charts.example.com/stable/sub/app-1.0.0.tgz\n    - https://github.com/o/r/releases/download/app-1.0.0/app-1.0.0.tgz\n    - http://mirror.example.org:8080/app-1.0.0.tgz\n    - oci://registry.example.com/app\n    description: \"multi\\nline: text\"\n    appVersion: \"1.10\"\n  empty: []\ngenerated: \"2024-01-01T00:00:00Z\"\n"
        );
        let rewritten = rewrite(index.as_bytes(), &base(), "helm-x").unwrap();
        let text = String::from_utf8(rewritten.bytes).unwrap();
        let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
        let urls: Vec<&str> = doc["entries"]["app"][0]["urls"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap())
            .collect();
        assert_eq!(
            urls,
            [
                "/repository/helm-x/app-1.0.0.tgz",
                "/repository/helm-x/sub/app-1.0.0.tgz",
                "/repository/helm-x/_ext/https/github.com/443/o/r/releases/download/app-1.0.0/app-1.0.0.tgz",
                "/repository/helm-x/_ext/http/mirror.example.org/8080/app-1.0.0.tgz",
                "oci://registry.example.com/app",
            ]
        );
        assert_eq!(
            doc["entries"]["app"][0]["description"].as_str(),
            Some("multi\nline: text")
        );
        assert_eq!(
            doc["entries"]["app"][0]["appVersion"].as_str(),
            Some("1.10")
        );
        assert_eq!(doc["generated"].as_str(), Some("2024-01-01T00:00:00Z"));
        let chart = &rewritten.charts["_ext/https/github.com/443/o/r/releases/download/app-1.0.0/app-1.0.0.tgz"];
        assert_eq!(
            chart.url,
            "https://github.com/o/r/releases/download/app-1.0.0/app-1.0.0.tgz"
        );
        assert_eq!(chart.digest.as_ref().unwrap().hex(), DIGEST);
        assert_eq!(
            rewritten.charts["app-1.0.0.tgz"].url,
            "https://charts.example.com/stable/app-1.0.0.tgz"
        );
        assert_eq!(rewritten.charts.len(), 4);
    }

    #[test]
    fn hostile_or_odd_urls_are_not_served() {
        for reference in [
            "../outside.tgz",
            "https://charts.example.com/stable/_ext/evil.example/x.tgz",
            "https://h.example/a%2f..%2fb.tgz",
            "https://h.example/",
            "ftp://h.example/x.tgz",
            "https://h.example/x.tgz#frag",
        ] {
            let path = gateway_path(&base(), reference);
            if reference == "../outside.tgz" {
                // Outside the base: served as an external URL of the same host.
                assert_eq!(
                    path.as_deref(),
                    Some("_ext/https/charts.example.com/443/outside.tgz")
                );
            } else {
                assert_eq!(path, None, "{reference}");
            }
        }
    }

    #[test]
    fn malformed_indexes_are_refused() {
        for (bad, why) in [
            ("entries: [unclosed", "not YAML"),
            ("- a\n- b\n", "not a mapping"),
            ("apiVersion: v1\nentries: 3\n", "entries is not a mapping"),
            ("apiVersion: v1\nentries:\n  a: 1\n", "not a list"),
            (
                "apiVersion: v1\nentries:\n  a:\n  - urls: x\n",
                "not a list",
            ),
            ("entries: {}\n", "apiVersion"),
            ("apiVersion: v1\nx: &a [1]\ny: *a\n", "alias"),
            ("apiVersion: v1\n---\napiVersion: v1\n", "documents"),
        ] {
            let error = rewrite(bad.as_bytes(), &base(), "p").unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
        assert!(
            rewrite(b"\xff\xfe", &base(), "p")
                .unwrap_err()
                .contains("UTF-8")
        );
    }
}
