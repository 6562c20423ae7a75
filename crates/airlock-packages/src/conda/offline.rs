//! An offline proxy's repodata ([`crate::offline`]): `repodata.json`,
//! `current_repodata.json` and `repodata.json.zst` are the cached upstream document with
//! only the packages the store holds; the `.bz2` copy and the CEP-16 shard index are not
//! served (they would list the rest; clients fall back to `repodata.json`). A subdir with
//! no cached `repodata.json` is an empty one, so conda still finds the channel.

use std::sync::Arc;

use airlock_types::{CacheOutcome, ClientRequest, Digest};
use axum::response::Response;
use serde_json::Value;

use super::repodata::{MAX_REPODATA, checker};
use crate::derived::{Table, blocking};
use crate::offline::Held;
use crate::{Origin, PackageError, Spec};

/// Filtered documents kept per proxy (a few subdirs × representations).
const VIEWS_KEPT: usize = 8;
/// Listed sha256s kept per proxy, by document.
const LISTS_KEPT: usize = 8;

/// The document's path and digest, and the digest of the held set it was filtered by.
type ViewKey = (String, Digest, Digest);

/// The package maps of a repodata document.
const MAPS: [&str; 2] = ["packages", "packages.conda"];

/// `<subdir>/<name>` for `repodata.json`, `current_repodata.json` and `repodata.json.zst`,
/// filtered to held packages; `None` for a file an offline proxy does not serve.
pub(super) async fn serve(
    origin: &Origin,
    subdir: &str,
    name: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    let (source, compress) = match name {
        "repodata.json" | "current_repodata.json" => (name, false),
        "repodata.json.zst" => ("repodata.json", true),
        _ => {
            return Err(PackageError::NotFoundUpstream {
                path: format!(
                    "{subdir}/{name} (repository {} is offline and lists only what it holds \
                     in {subdir}/repodata.json)",
                    origin.config().name
                ),
            });
        }
    };
    let path = format!("{subdir}/{source}");
    let json = match view(origin, subdir, source).await {
        Ok(json) => json,
        Err(PackageError::Offline { .. }) if source == "repodata.json" => Arc::new(empty(subdir)),
        Err(error) => return Err(error),
    };
    let (bytes, content_type) = if compress {
        let json = json.clone();
        let zst = blocking(move || zstd::stream::encode_all(json.as_slice(), 3))
            .await?
            .map_err(|e| PackageError::Internal(format!("compressing {path}: {e}")))?;
        (zst, "application/zstd")
    } else {
        (Vec::clone(&json), "application/json")
    };
    Ok(Origin::serve_derived(
        bytes,
        content_type,
        request,
        CacheOutcome::Hit,
    ))
}

/// The cached `<subdir>/<source>` (for `repodata.json`, its `.zst` copy when only that was
/// fetched, as conda and rattler do by default), filtered to held packages;
/// [`PackageError::Offline`] when neither was cached.
async fn view(origin: &Origin, subdir: &str, source: &str) -> Result<Arc<Vec<u8>>, PackageError> {
    let json = format!("{subdir}/{source}");
    let zst = format!("{json}.zst");
    let cached = origin
        .entry(Spec::ttl(&json).checked(MAX_REPODATA, &checker(origin, subdir)))
        .await;
    let (entry, path, compressed) = match cached {
        Ok(entry) => (entry, json.as_str(), false),
        Err(PackageError::Offline { .. }) if source == "repodata.json" => {
            (origin.entry(Spec::ttl(&zst)).await?, zst.as_str(), true)
        }
        Err(error) => return Err(error),
    };
    let lists: Arc<Table<(String, Digest), Vec<Digest>>> =
        origin
            .derived
            .table("conda-offline-listed", LISTS_KEPT, None);
    let read = || async {
        let bytes = origin
            .read_stored(&entry.digest, MAX_REPODATA as u64)
            .await?;
        blocking(move || {
            if compressed {
                parse(&decompress(&bytes)?)
            } else {
                parse(&bytes)
            }
        })
        .await?
        .map_err(|e| corrupt(origin, path, &e))
    };
    let listed = lists
        .get_or_compute((path.to_owned(), entry.digest.clone()), || async {
            Ok::<_, PackageError>(listed(&read().await?))
        })
        .await?;
    let held = origin.held(listed.iter().cloned()).await?;
    let views: Arc<Table<ViewKey, Vec<u8>>> =
        origin.derived.table("conda-offline-view", VIEWS_KEPT, None);
    let key = (path.to_owned(), entry.digest.clone(), held.key().clone());
    views
        .get_or_compute(key, || async {
            let mut document = read().await?;
            blocking(move || {
                keep_held(&mut document, &held);
                serde_json::to_vec(&document)
            })
            .await?
            .map_err(|e| PackageError::Internal(format!("writing {path}: {e}")))
        })
        .await
}

/// A `.zst` copy, decompressed within the bound a `repodata.json` has.
fn decompress(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .map_err(|e| format!("not zstd: {e}"))?
        .take(MAX_REPODATA as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not valid zstd: {e}"))?;
    if out.len() > MAX_REPODATA {
        return Err(format!("decompresses to more than {MAX_REPODATA} bytes"));
    }
    Ok(out)
}

fn parse(bytes: &[u8]) -> Result<Value, String> {
    let document: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    if !document.is_object() {
        return Err("not a JSON object".to_owned());
    }
    Ok(document)
}

/// The sha256 of every package the document lists with a well-formed one.
fn listed(document: &Value) -> Vec<Digest> {
    MAPS.iter()
        .filter_map(|map| document.get(map)?.as_object())
        .flat_map(|packages| packages.values())
        .filter_map(sha256_of)
        .collect()
}

fn sha256_of(record: &Value) -> Option<Digest> {
    Digest::sha256_hex(&record.get("sha256")?.as_str()?.to_ascii_lowercase()).ok()
}

/// Drops every package the store does not hold (and any without a usable sha256: it could
/// not be served anyway).
fn keep_held(document: &mut Value, held: &Held) {
    for map in MAPS {
        if let Some(packages) = document.get_mut(map).and_then(Value::as_object_mut) {
            packages.retain(|_, record| sha256_of(record).is_some_and(|d| held.contains(&d)));
        }
    }
}

/// A subdir with nothing cached: no packages, but a channel conda can read.
fn empty(subdir: &str) -> Vec<u8> {
    let document = serde_json::json!({
        "info": {"subdir": subdir},
        "packages": {},
        "packages.conda": {},
        "removed": [],
        "repodata_version": 1,
    });
    serde_json::to_vec(&document).expect("a JSON value serializes")
}

fn corrupt(origin: &Origin, path: &str, detail: &str) -> PackageError {
    PackageError::Internal(format!(
        "the cached {path} of repository {} cannot be read: {detail}",
        origin.config().name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn only_held_packages_stay() {
        let (a, b) = ("aa".repeat(32), "bb".repeat(32));
        let mut document: Value = serde_json::from_str(&format!(
            r#"{{"info":{{"subdir":"noarch"}},"packages":{{"a-1-0.tar.bz2":{{"sha256":"{a}","depends":["b"]}},"b-1-0.tar.bz2":{{"sha256":"{b}"}},"c-1-0.tar.bz2":{{"md5":"x"}}}},"packages.conda":{{"a-2-0.conda":{{"sha256":"{}"}}}},"removed":["z-1-0.tar.bz2"]}}"#,
            a.to_uppercase()
        ))
        .unwrap();
        assert_eq!(listed(&document).len(), 3);
        let held = Held::new(HashSet::from([Digest::sha256_hex(&a).unwrap()]));
        keep_held(&mut document, &held);
        let names = |map: &str| -> Vec<String> {
            document[map].as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(names("packages"), ["a-1-0.tar.bz2"]);
        assert_eq!(names("packages.conda"), ["a-2-0.conda"]);
        assert_eq!(document["packages"]["a-1-0.tar.bz2"]["depends"][0], "b");
        assert_eq!(document["removed"][0], "z-1-0.tar.bz2");
        let empty: Value = serde_json::from_slice(&empty("linux-64")).unwrap();
        assert_eq!(empty["info"]["subdir"], "linux-64");
        assert!(empty["packages"].as_object().unwrap().is_empty());
    }

    #[test]
    fn corrupt_documents_are_errors() {
        for bad in ["", "[1]", "{\"packages\": ", "\u{feff}x"] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
