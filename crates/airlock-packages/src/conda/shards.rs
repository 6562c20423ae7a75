//! CEP-16 sharded repodata: `<subdir>/repodata_shards.msgpack.zst` (a zstd-compressed
//! msgpack map `{version, info: {base_url, shards_base_url, subdir, …}, shards: {name →
//! sha256}}`) and the shards it names, `<subdir>/shards/<sha256>.msgpack.zst`.
//!
//! The index is cached as upstream sent it (after checking it decodes) and served
//! rewritten: an absolute `base_url` / `shards_base_url` becomes this proxy's path, so
//! clients fetch packages and shards here; relative ones stay. The rewritten index is
//! re-encoded deterministically (same input, same bytes: the map order and value types of
//! the original are kept) and kept in memory per upstream index digest. Shards are
//! immutable and verified against the sha256 in their name, fetched from wherever the
//! upstream index said shards live.

use std::io::Read;
use std::sync::{Arc, Mutex};

use airlock_types::Digest;
use airlock_upstream::Target;
use axum::response::Response;
use http::HeaderMap;
use rmpv::Value;

use crate::{Origin, PackageError};

/// The compressed index (conda-forge's are a few MiB).
const MAX_INDEX: usize = 64 * 1024 * 1024;
/// The decompressed index.
const MAX_INDEX_DECODED: u64 = 256 * 1024 * 1024;
/// Rewritten indexes kept in memory.
const INDEXES_KEPT: usize = 8;

/// An upstream index, rewritten for clients, and where its shards live upstream.
struct Rewritten {
    bytes: Vec<u8>,
    /// The upstream shards base: a URL, or a path relative to the proxy's upstream.
    shards_base: String,
}

static INDEXES: Mutex<Vec<(Digest, Arc<Rewritten>)>> = Mutex::new(Vec::new());

fn decode(bytes: &[u8]) -> Result<Value, String> {
    let mut decoded = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .map_err(|e| format!("shard index is not zstd: {e}"))?
        .take(MAX_INDEX_DECODED + 1)
        .read_to_end(&mut decoded)
        .map_err(|e| format!("shard index is not valid zstd: {e}"))?;
    if decoded.len() as u64 > MAX_INDEX_DECODED {
        return Err(format!(
            "shard index decompresses to more than {MAX_INDEX_DECODED} bytes"
        ));
    }
    let value = rmpv::decode::read_value(&mut decoded.as_slice())
        .map_err(|e| format!("shard index is not msgpack: {e}"))?;
    let info = field(&value, "info").ok_or("shard index has no info map")?;
    if !info.is_map() {
        return Err("shard index info is not a map".to_owned());
    }
    for key in ["base_url", "shards_base_url"] {
        if field(info, key).is_some_and(|v| !v.is_str()) {
            return Err(format!("shard index info.{key} is not a string"));
        }
    }
    if !field(&value, "shards").is_some_and(Value::is_map) {
        return Err("shard index has no shards map".to_owned());
    }
    Ok(value)
}

fn field<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn field_mut<'a>(map: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    match map {
        Value::Map(entries) => entries
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn is_absolute(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://") || url.starts_with("//")
}

/// Rewrites absolute URLs in `info` to `local` (this proxy's `<subdir>/` path) and says
/// where shards live upstream (`index_url` resolves relative ones).
fn rewrite(bytes: &[u8], local: &str, index_url: &reqwest::Url) -> Result<Rewritten, String> {
    let mut value = decode(bytes)?;
    let info = field_mut(&mut value, "info").ok_or("shard index has no info map")?;
    let upstream_shards = field(info, "shards_base_url")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("./shards/")
        .to_owned();
    let shards_base = with_slash(
        index_url
            .join(&upstream_shards)
            .map_err(|e| format!("shard index shards_base_url {upstream_shards:?}: {e}"))?
            .as_str(),
    );
    for (key, target) in [
        ("base_url", local.to_owned()),
        ("shards_base_url", format!("{local}shards/")),
    ] {
        if let Some(slot) = field_mut(info, key) {
            if slot.as_str().is_some_and(is_absolute) {
                *slot = Value::from(target);
            }
        }
    }
    let mut encoded = Vec::new();
    rmpv::encode::write_value(&mut encoded, &value).map_err(|e| e.to_string())?;
    let bytes = zstd::stream::encode_all(encoded.as_slice(), 3).map_err(|e| e.to_string())?;
    Ok(Rewritten { bytes, shards_base })
}

fn with_slash(url: &str) -> String {
    if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    }
}

/// The subdir's index, refreshed (checked before it is cached) and rewritten.
async fn index(
    origin: &Origin,
    subdir: &str,
) -> Result<(Arc<Rewritten>, &'static str), PackageError> {
    let path = format!("{subdir}/repodata_shards.msgpack.zst");
    let check = |bytes: &[u8], _: Option<&str>| decode(bytes).map(drop);
    let (digest, _, cache) = origin
        .refreshed_digest(&path, Some((MAX_INDEX, &check)))
        .await?;
    {
        let mut kept = INDEXES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = kept.iter().position(|(d, _)| *d == digest) {
            let entry = kept.remove(at);
            let found = entry.1.clone();
            kept.insert(0, entry);
            return Ok((found, cache));
        }
    }
    let bytes = origin.read_stored(&digest, MAX_INDEX as u64).await?;
    let local = format!("/repository/{}/{subdir}/", origin.config().name);
    let index_url = origin
        .upstream_base()
        .join(&path)
        .map_err(|e| PackageError::Internal(format!("{path}: {e}")))?;
    let rewritten =
        rewrite(&bytes, &local, &index_url).map_err(|detail| PackageError::Upstream {
            proxy: origin.config().name.clone(),
            path: path.clone(),
            detail,
        })?;
    let rewritten = Arc::new(rewritten);
    let mut kept = INDEXES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    kept.retain(|(d, _)| *d != digest);
    kept.insert(0, (digest, rewritten.clone()));
    kept.truncate(INDEXES_KEPT);
    Ok((rewritten, cache))
}

/// `<subdir>/repodata_shards.msgpack.zst`, rewritten.
pub(super) async fn serve_index(
    origin: &Origin,
    subdir: &str,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, PackageError> {
    let (index, cache) = index(origin, subdir).await?;
    Ok(Origin::serve_derived(
        index.bytes.clone(),
        "application/octet-stream",
        head,
        headers,
        cache,
    ))
}

/// `<subdir>/shards/<sha256>.msgpack.zst`, verified against its name.
pub(super) async fn serve_shard(
    origin: &Origin,
    subdir: &str,
    file: &str,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, PackageError> {
    let hex = file
        .strip_suffix(".msgpack.zst")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        .ok_or_else(|| {
            PackageError::BadPath(format!("{subdir}/shards/{file} (not <sha256>.msgpack.zst)"))
        })?;
    let digest: Digest = format!("sha256:{hex}")
        .parse()
        .map_err(|e| PackageError::Internal(format!("{e}")))?;
    let (index, _) = index(origin, subdir).await?;
    let location = Target::Url(format!("{}{file}", index.shards_base));
    origin
        .immutable(location, &digest, "application/octet-stream", head, headers)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_bytes(base: &str, shards: &str) -> Vec<u8> {
        let value = Value::Map(vec![
            (Value::from("version"), Value::from(1)),
            (
                Value::from("info"),
                Value::Map(vec![
                    (Value::from("base_url"), Value::from(base)),
                    (Value::from("shards_base_url"), Value::from(shards)),
                    (Value::from("subdir"), Value::from("noarch")),
                ]),
            ),
            (
                Value::from("shards"),
                Value::Map(vec![(Value::from("a"), Value::Binary(vec![1; 32]))]),
            ),
        ]);
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &value).unwrap();
        zstd::stream::encode_all(out.as_slice(), 3).unwrap()
    }

    #[test]
    fn absolute_urls_are_rewritten_relative_kept() {
        let url = reqwest::Url::parse("https://up.example/ch/noarch/repodata_shards.msgpack.zst")
            .unwrap();
        let abs = rewrite(
            &index_bytes(
                "https://cdn.example/ch/noarch/",
                "https://cdn.example/shards/",
            ),
            "/repository/c/noarch/",
            &url,
        )
        .unwrap();
        let value = decode(&abs.bytes).unwrap();
        let info = field(&value, "info").unwrap();
        assert_eq!(
            field(info, "base_url").unwrap().as_str(),
            Some("/repository/c/noarch/")
        );
        assert_eq!(
            field(info, "shards_base_url").unwrap().as_str(),
            Some("/repository/c/noarch/shards/")
        );
        assert_eq!(abs.shards_base, "https://cdn.example/shards/");
        assert_eq!(
            field(&value, "shards").unwrap().as_map().unwrap()[0].1,
            Value::Binary(vec![1; 32])
        );

        let rel = rewrite(
            &index_bytes("./", "./shards/"),
            "/repository/c/noarch/",
            &url,
        )
        .unwrap();
        let value = decode(&rel.bytes).unwrap();
        assert_eq!(
            field(field(&value, "info").unwrap(), "base_url")
                .unwrap()
                .as_str(),
            Some("./")
        );
        assert_eq!(rel.shards_base, "https://up.example/ch/noarch/shards/");
        let again = rewrite(
            &index_bytes("./", "./shards/"),
            "/repository/c/noarch/",
            &url,
        )
        .unwrap();
        assert_eq!(rel.bytes, again.bytes, "deterministic");
    }

    #[test]
    fn hostile_indexes_are_refused() {
        assert!(decode(b"not zstd").is_err());
        let not_msgpack = zstd::stream::encode_all(&b"\xc1\xc1"[..], 3).unwrap();
        assert!(decode(&not_msgpack).is_err());
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &Value::from(5)).unwrap();
        assert!(decode(&zstd::stream::encode_all(out.as_slice(), 3).unwrap()).is_err());
    }
}
