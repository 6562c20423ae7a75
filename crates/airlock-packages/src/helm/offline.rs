//! An offline proxy's `index.yaml` ([`crate::offline`]): the cached upstream index, rewritten
//! as always, with only the chart versions whose `.tgz` the store holds; a chart left with
//! none goes. With no index cached, an empty one.

use std::sync::Arc;

use airlock_types::{CacheOutcome, ClientRequest, Digest};
use axum::response::Response;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

use super::{INDEX, YAML, current, index::Rewritten};
use crate::derived::{Table, blocking};
use crate::offline::Held;
use crate::{Origin, PackageError};

/// Filtered indexes kept per proxy: the current one, and the previous while the held set
/// changes.
const VIEWS_KEPT: usize = 2;
/// What Helm reads as a repository with no charts.
const EMPTY: &str = "apiVersion: v1\nentries: {}\n";

/// `index.yaml` listing only held charts.
pub(super) async fn serve_index(
    origin: &Origin,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    let bytes = match current(origin).await {
        Ok((rewritten, _)) => view(origin, &rewritten).await?,
        Err(PackageError::Offline { .. }) => EMPTY.as_bytes().to_vec(),
        Err(error) => return Err(error),
    };
    Ok(Origin::serve_derived(
        bytes,
        YAML,
        request,
        CacheOutcome::Hit,
    ))
}

async fn view(origin: &Origin, rewritten: &Arc<Rewritten>) -> Result<Vec<u8>, PackageError> {
    let held = origin
        .held(rewritten.charts.values().filter_map(|c| c.digest.clone()))
        .await?;
    let views: Arc<Table<(Digest, Digest), Vec<u8>>> =
        origin.derived.table("helm-offline-view", VIEWS_KEPT, None);
    let key = (Digest::of(&rewritten.bytes), held.key().clone());
    let rewritten = rewritten.clone();
    let view = views
        .get_or_compute(key, || async {
            blocking(move || keep_held(&rewritten.bytes, &held))
                .await?
                .map_err(|detail| PackageError::Internal(format!("{INDEX}: {detail}")))
        })
        .await?;
    Ok(Vec::clone(&view))
}

/// The rewritten index `bytes` with only the versions whose `digest` is held.
fn keep_held(bytes: &[u8], held: &Held) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let mut documents = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let mut document = documents.pop().ok_or("no YAML document")?;
    if let Yaml::Hash(root) = &mut document {
        if let Some(Yaml::Hash(entries)) = root.get_mut(&Yaml::String("entries".to_owned())) {
            for versions in entries.values_mut() {
                if let Yaml::Array(versions) = versions {
                    versions.retain(|version| is_held(version, held));
                }
            }
            entries.retain(|_, versions| !matches!(versions, Yaml::Array(v) if v.is_empty()));
        }
    }
    let mut out = String::with_capacity(bytes.len());
    YamlEmitter::new(&mut out)
        .dump(&document)
        .map_err(|e| format!("could not be written back: {e:?}"))?;
    out.push('\n');
    Ok(out.into_bytes())
}

fn is_held(version: &Yaml, held: &Held) -> bool {
    version["digest"]
        .as_str()
        .and_then(|hex| Digest::sha256_hex(&hex.to_ascii_lowercase()).ok())
        .is_some_and(|digest| held.contains(&digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn only_held_versions_and_charts_stay() {
        let (a, b) = ("aa".repeat(32), "bb".repeat(32));
        let index = format!(
            "apiVersion: v1\nentries:\n  app:\n  - name: app\n    version: 2.0.0\n    digest: {b}\n    urls: [/repository/h/app-2.0.0.tgz]\n  - name: app\n    version: 1.0.0\n    digest: {}\n    urls: [/repository/h/app-1.0.0.tgz]\n  other:\n  - name: other\n    version: 1.0.0\n    urls: [/repository/h/other-1.0.0.tgz]\ngenerated: x\n",
            a.to_uppercase()
        );
        let held = Held::new(HashSet::from([Digest::sha256_hex(&a).unwrap()]));
        let out = keep_held(index.as_bytes(), &held).unwrap();
        let doc = &YamlLoader::load_from_str(std::str::from_utf8(&out).unwrap()).unwrap()[0];
        let app = doc["entries"]["app"].as_vec().unwrap();
        assert_eq!(app.len(), 1);
        assert_eq!(app[0]["version"].as_str(), Some("1.0.0"));
        assert!(doc["entries"]["other"].is_badvalue(), "no held version");
        assert_eq!(doc["generated"].as_str(), Some("x"));
        let empty = keep_held(EMPTY.as_bytes(), &held).unwrap();
        let doc = &YamlLoader::load_from_str(std::str::from_utf8(&empty).unwrap()).unwrap()[0];
        assert!(doc["entries"].as_hash().unwrap().is_empty());
    }
}
