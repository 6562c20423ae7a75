//! A subdir's `repodata.json`: served byte-exact, and the source of the sha256 every package
//! is verified against.
//!
//! The filename → sha256 map is kept in the proxy's derived tables per subdir and repodata
//! *content* (keyed by its digest, so a refresh that changes nothing reuses it and a
//! changed file builds a new one), for the last [`MAPS_KEPT`] repodata files. A package
//! request then costs one metadata-index lookup (is repodata.json still fresh?) and one
//! hash-map lookup; the file is parsed once per change, when it is fetched (the check that
//! keeps a malformed one out of the cache builds the map) or after a restart, and never on
//! an async worker thread: a repodata.json can be hundreds of MiB.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use airlock_types::ClientRequest;
use airlock_types::Digest;
use axum::response::Response;
use serde::Deserialize;

use crate::derived::{Table, blocking, in_place};
use crate::{Entry, Origin, PackageError, Spec};

/// conda-forge's largest repodata.json is a few hundred MiB.
pub(super) const MAX_REPODATA: usize = 1024 * 1024 * 1024;
/// Package maps kept per proxy (one per subdir in use, typically `noarch` and a platform,
/// and the previous one while a refresh is picked up).
const MAPS_KEPT: usize = 4;
/// The derived table holding them.
const TABLE: &str = "conda-repodata";

pub(super) type Sha256Map = HashMap<String, [u8; 32]>;

/// The subdir and the digest of its repodata.json.
type Key = (String, Digest);

#[derive(Deserialize)]
struct Repodata {
    #[serde(default)]
    packages: HashMap<String, Record>,
    #[serde(default, rename = "packages.conda")]
    conda: HashMap<String, Record>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(default)]
    sha256: Option<String>,
}

/// Parses repodata.json into the filename → sha256 map; entries without a sha256 are left
/// out (refused when asked for), a malformed sha256 or document is an error.
pub(super) fn parse(bytes: &[u8]) -> Result<Sha256Map, String> {
    let repodata: Repodata =
        serde_json::from_slice(bytes).map_err(|e| format!("repodata.json is not valid: {e}"))?;
    let mut map = HashMap::with_capacity(repodata.packages.len() + repodata.conda.len());
    for (filename, record) in repodata.packages.into_iter().chain(repodata.conda) {
        let Some(hex) = record.sha256 else { continue };
        let sha = decode_hex(&hex)
            .ok_or_else(|| format!("repodata.json gives {filename} a malformed sha256 {hex:?}"))?;
        map.insert(filename, sha);
    }
    Ok(map)
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    // `from_str_radix` alone would take a sign: "+a+b…" is not a sha256.
    if bytes.len() != 64 || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

fn maps(origin: &Origin) -> Arc<Table<Key, Sha256Map>> {
    origin.derived.table(TABLE, MAPS_KEPT, None)
}

/// Checks repodata.json before it is cached (off the async threads), keeping the map it
/// parsed; content already parsed is not parsed again.
pub(super) fn checker(
    origin: &Origin,
    subdir: &str,
) -> impl Fn(&[u8], Option<&str>) -> Result<(), String> + Send + Sync + use<> {
    let maps = maps(origin);
    let subdir = subdir.to_owned();
    move |bytes, _| {
        in_place(|| {
            let key = (subdir.clone(), Digest::of(bytes));
            if maps.get(&key).is_none() {
                maps.fill(key, parse(bytes)?);
            }
            Ok(())
        })
    }
}

/// Refreshes `<subdir>/repodata.json` (checked before it is cached) and returns its digest.
async fn refresh(origin: &Origin, subdir: &str) -> Result<Digest, PackageError> {
    let path = format!("{subdir}/repodata.json");
    let Entry {
        digest, outcome: _, ..
    } = origin
        .entry(Spec::ttl(&path).checked(MAX_REPODATA, &checker(origin, subdir)))
        .await?;
    Ok(digest)
}

/// `<subdir>/repodata.json`, byte-exact.
pub(super) async fn serve(
    origin: &Origin,
    subdir: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    let path = format!("{subdir}/repodata.json");
    origin
        .get(
            Spec::ttl(&path).checked(MAX_REPODATA, &checker(origin, subdir)),
            request,
        )
        .await
}

/// The filename → sha256 map of the subdir's current repodata.json: parsed once per
/// content, however many package requests ask at the same time.
async fn sha256_map(origin: &Origin, subdir: &str) -> Result<Arc<Sha256Map>, PackageError> {
    let digest = refresh(origin, subdir).await?;
    maps(origin)
        .get_or_compute((subdir.to_owned(), digest.clone()), || async {
            let bytes = origin.read_stored(&digest, MAX_REPODATA as u64).await?;
            blocking(move || parse(&bytes))
                .await?
                .map_err(|detail| PackageError::Upstream {
                    proxy: origin.config().name.clone(),
                    path: format!("{subdir}/repodata.json"),
                    detail,
                })
        })
        .await
}

/// A package, verified against the sha256 its subdir's repodata.json gives it.
pub(super) async fn serve_package(
    origin: &Origin,
    subdir: &str,
    file: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    let map = sha256_map(origin, subdir).await?;
    let path = format!("{subdir}/{file}");
    let Some(sha) = map.get(file) else {
        return Err(PackageError::NotFoundUpstream {
            path: format!(
                "{path} (not listed with a sha256 in {subdir}/repodata.json, so airlock cannot verify it)"
            ),
        });
    };
    let hex = sha.iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    let digest = Digest::sha256_hex(&hex).map_err(|e| PackageError::Internal(format!("{e}")))?;
    let content_type = if std::path::Path::new(file)
        .extension()
        .is_some_and(|e| e == "conda")
    {
        "application/octet-stream"
    } else {
        "application/x-bzip2"
    };
    origin
        .get(Spec::immutable(&path, &digest, content_type), request)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_maps_and_skips_missing_sha256() {
        let sha = "ab".repeat(32);
        let text = format!(
            r#"{{"info":{{"subdir":"noarch"}},"packages":{{"a-1-0.tar.bz2":{{"sha256":"{sha}","name":"a"}},"b-1-0.tar.bz2":{{"md5":"x"}}}},"packages.conda":{{"c-1-0.conda":{{"sha256":"{sha}"}}}}}}"#
        );
        let map = parse(text.as_bytes()).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map["a-1-0.tar.bz2"], [0xab; 32]);
        assert!(!map.contains_key("b-1-0.tar.bz2"));
    }

    #[test]
    fn rejects_hostile_repodata() {
        for bad in [
            "not json",
            r#"{"packages": []}"#,
            r#"{"packages": {"a-1-0.conda": {"sha256": 5}}}"#,
            r#"{"packages": {"a-1-0.conda": {"sha256": "zz"}}}"#,
            r#"{"packages.conda": {"a-1-0.conda": "x"}}"#,
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
