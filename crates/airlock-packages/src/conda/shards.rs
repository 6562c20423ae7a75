//! CEP-16 sharded repodata: `<subdir>/repodata_shards.msgpack.zst` (a zstd-compressed
//! msgpack map `{version, info: {base_url, shards_base_url, subdir, …}, shards: {name →
//! sha256}}`) and the shards it names, `<subdir>/shards/<sha256>.msgpack.zst`.
//!
//! The index is cached as upstream sent it (after checking it decodes) and served
//! rewritten: an absolute `base_url` / `shards_base_url` becomes this proxy's path, so
//! clients fetch packages and shards here; relative ones stay. The rewritten index is
//! re-encoded deterministically (same input, same bytes: the map order and value types of
//! the original are kept) and kept in the proxy's derived tables by the index's upstream
//! URL (its subdir) and digest: the rewrite depends on the proxy, where the index lives
//! and its bytes, so two proxies with byte-identical indexes each get their own. Shards are
//! immutable and verified against the sha256 in their name, fetched from wherever the
//! upstream index said shards live.
//!
//! Decoding is bounded three times: the decompressed size ([`MAX_INDEX_DECODED`]; a small
//! zstd frame can claim gigabytes), the number of msgpack values ([`MAX_VALUES`]; each
//! becomes a tree node of tens of bytes, so a few MiB of one-byte values would otherwise
//! expand to gigabytes in memory) and their nesting ([`MAX_DEPTH`]; the decoder recurses
//! once per level).

use std::io::Read;
use std::sync::Arc;

use airlock_types::Digest;
use airlock_types::{CacheOutcome, ClientRequest};
use airlock_upstream::Target;
use axum::response::Response;
use rmpv::Value;

use crate::derived::{blocking, in_place};
use crate::{Entry, Origin, PackageError, Spec};

/// The compressed index (conda-forge's are a few MiB).
const MAX_INDEX: usize = 64 * 1024 * 1024;
/// The decompressed index: its sha256s do not compress, so a real index decompresses to
/// little more than its compressed size (conda-forge's largest to a few MiB).
const MAX_INDEX_DECODED: u64 = 32 * 1024 * 1024;
/// Msgpack values in the decompressed index: a real one has two per package name (a
/// few tens of thousands), so this leaves ample room and bounds the tree to a few hundred
/// MiB at most.
const MAX_VALUES: u64 = 4 * 1024 * 1024;
/// Arrays and maps nested in one another: a real index nests three deep. The decoder and
/// the encoder recurse once per level, and a blocking-pool thread has 2 MiB of stack.
const MAX_DEPTH: usize = 32;
/// Rewritten indexes kept per proxy (one per subdir in use, typically `noarch` and one
/// platform, plus the previous copy while a refresh is picked up).
const INDEXES_KEPT: usize = 4;
/// The derived table holding them.
const TABLE: &str = "conda-shard-index";

/// An upstream index, rewritten for clients, and where its shards live upstream.
pub(super) struct Rewritten {
    pub(super) bytes: Vec<u8>,
    /// The upstream shards base: a URL, or a path relative to the proxy's upstream.
    pub(super) shards_base: String,
}

/// The index's upstream URL and the digest of its upstream bytes.
type Key = (String, Digest);

pub(super) fn decode(bytes: &[u8]) -> Result<Value, String> {
    let mut decoded = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .map_err(|e| format!("shard index is not zstd: {e}"))?
        .take(MAX_INDEX_DECODED + 1)
        .read_to_end(&mut decoded)
        .map_err(|e| format!("shard index is not valid zstd: {e}"))?;
    if decoded.len() as u64 > MAX_INDEX_DECODED {
        return Err(format!(
            "shard index decompresses to more than {MAX_INDEX_DECODED} bytes; refused"
        ));
    }
    count_values(&decoded, MAX_VALUES)?;
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

/// Walks the first msgpack value of `bytes` without building it, and refuses one with
/// more than `max` values (counting every array and map element) or that claims more
/// values or bytes than `bytes` holds.
pub(super) fn count_values(bytes: &[u8], max: u64) -> Result<u64, String> {
    let truncated = || "shard index is not msgpack: it ends early".to_owned();
    let mut at = 0usize;
    // Values still to read; each takes at least one byte, so more than remain is a lie.
    let mut pending: u64 = 1;
    let mut seen: u64 = 0;
    // Values still to read in each array or map being read, innermost last.
    let mut open: Vec<u64> = Vec::new();
    let take = |at: &mut usize, n: usize| -> Result<u64, String> {
        let end = at.checked_add(n).filter(|end| *end <= bytes.len());
        let end = end.ok_or_else(truncated)?;
        let value = bytes[*at..end]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        *at = end;
        Ok(value)
    };
    while pending > 0 {
        pending -= 1;
        seen += 1;
        if let Some(left) = open.last_mut() {
            *left -= 1;
        }
        if seen > max {
            return Err(format!(
                "shard index holds more than {max} msgpack values; refused"
            ));
        }
        let marker = bytes.get(at).copied().ok_or_else(truncated)?;
        at += 1;
        // (bytes of length field, bytes of payload beyond it, values it contains)
        let (length, fixed, children): (usize, usize, u64) = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0, 0),
            0x80..=0x8f => (0, 0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, 0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (0, usize::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (1, 0, 0),
            0xc5 | 0xda => (2, 0, 0),
            0xc6 | 0xdb => (4, 0, 0),
            // ext 8/16/32: a length, then a type byte and the data.
            0xc7 => (1, 1, 0),
            0xc8 => (2, 1, 0),
            0xc9 => (4, 1, 0),
            // Numbers, and fixext 1/2/4/8/16 (a type byte and the data).
            0xcc | 0xd0 => (0, 1, 0),
            0xcd | 0xd1 | 0xd4 => (0, 2, 0),
            0xca | 0xce | 0xd2 => (0, 4, 0),
            0xcb | 0xcf | 0xd3 => (0, 8, 0),
            0xd5 => (0, 3, 0),
            0xd6 => (0, 5, 0),
            0xd7 => (0, 9, 0),
            0xd8 => (0, 17, 0),
            0xdc => (2, 0, 1),
            0xdd => (4, 0, 1),
            0xde => (2, 0, 2),
            0xdf => (4, 0, 2),
            0xc1 => return Err("shard index is not msgpack: marker 0xc1".to_owned()),
        };
        let counted = if length > 0 {
            take(&mut at, length)?
        } else {
            0
        };
        let children = if matches!(marker, 0xdc..=0xdf) {
            // array/map 16/32: the length counts elements (map: pairs).
            counted * children
        } else {
            let skip = usize::try_from(counted).map_err(|_| truncated())? + fixed;
            take_bytes(&mut at, skip, bytes.len()).ok_or_else(truncated)?;
            children
        };
        pending += children;
        if children > 0 {
            if open.len() == MAX_DEPTH {
                return Err(format!(
                    "shard index nests arrays and maps deeper than {MAX_DEPTH}; refused"
                ));
            }
            open.push(children);
        }
        while open.last() == Some(&0) {
            open.pop();
        }
        if pending > (bytes.len() - at) as u64 {
            return Err(truncated());
        }
    }
    Ok(seen)
}

fn take_bytes(at: &mut usize, n: usize, len: usize) -> Option<()> {
    let end = at.checked_add(n).filter(|end| *end <= len)?;
    *at = end;
    Some(())
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
pub(super) fn rewrite(
    bytes: &[u8],
    local: &str,
    index_url: &reqwest::Url,
) -> Result<Rewritten, String> {
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

/// The subdir's index, refreshed (checked before it is cached) and rewritten: once per
/// upstream index, off the async threads, however many requests ask at the same time.
async fn index(
    origin: &Origin,
    subdir: &str,
) -> Result<(Arc<Rewritten>, CacheOutcome), PackageError> {
    let path = format!("{subdir}/repodata_shards.msgpack.zst");
    let local = format!("/repository/{}/{subdir}/", origin.config().name);
    let index_url = origin
        .upstream_base()
        .join(&path)
        .map_err(|e| PackageError::Internal(format!("{path}: {e}")))?;
    let table = origin
        .derived
        .table::<Key, Rewritten>(TABLE, INDEXES_KEPT, None);
    // The check rewrites what it decodes and keeps the result, so a fetched index is
    // decoded once, not once to check it and again to serve it.
    let check = |bytes: &[u8], _: Option<&str>| {
        in_place(|| {
            let key = (index_url.to_string(), Digest::of(bytes));
            if table.get(&key).is_none() {
                table.fill(key, rewrite(bytes, &local, &index_url)?);
            }
            Ok(())
        })
    };
    let Entry {
        digest,
        outcome: cache,
        ..
    } = origin
        .entry(Spec::ttl(&path).checked(MAX_INDEX, &check))
        .await?;
    let key = (index_url.to_string(), digest.clone());
    let rewritten = table
        .get_or_compute(key, || async {
            let bytes = origin.read_stored(&digest, MAX_INDEX as u64).await?;
            let (local, index_url) = (local.clone(), index_url.clone());
            blocking(move || rewrite(&bytes, &local, &index_url))
                .await?
                .map_err(|detail| PackageError::Upstream {
                    proxy: origin.config().name.clone(),
                    path: path.clone(),
                    detail,
                })
        })
        .await?;
    Ok((rewritten, cache))
}

/// `<subdir>/repodata_shards.msgpack.zst`, rewritten.
pub(super) async fn serve_index(
    origin: &Origin,
    subdir: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    let (index, cache) = index(origin, subdir).await?;
    Ok(Origin::serve_derived(
        index.bytes.clone(),
        "application/octet-stream",
        request,
        cache,
    ))
}

/// `<subdir>/shards/<sha256>.msgpack.zst`, verified against its name.
pub(super) async fn serve_shard(
    origin: &Origin,
    subdir: &str,
    file: &str,
    request: &ClientRequest,
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
    let digest = Digest::sha256_hex(hex).map_err(|e| PackageError::Internal(format!("{e}")))?;
    let (index, _) = index(origin, subdir).await?;
    let location = Target::Url(format!("{}{file}", index.shards_base));
    origin
        .get(
            Spec::immutable(location, &digest, "application/octet-stream"),
            request,
        )
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

    /// A zstd frame of `blocks` RLE blocks of 128 KiB of `byte` each: four bytes of input
    /// per 128 KiB of output, so a few hundred KiB claim gigabytes.
    pub(crate) fn zstd_bomb(blocks: u32, byte: u8) -> Vec<u8> {
        // Magic, a descriptor without content size, a 128 KiB window.
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
        for i in 0..blocks {
            let last = u32::from(i + 1 == blocks);
            // Block size << 3 | type RLE (1) << 1 | last block.
            let header = ((128 * 1024) << 3) | (1 << 1) | last;
            frame.extend_from_slice(&header.to_le_bytes()[..3]);
            frame.push(byte);
        }
        frame
    }

    #[test]
    fn the_bomb_is_real_zstd() {
        let out = zstd::stream::decode_all(zstd_bomb(3, 7).as_slice()).unwrap();
        assert_eq!(out.len(), 3 * 128 * 1024);
        assert!(out.iter().all(|b| *b == 7));
    }

    #[test]
    fn a_zstd_bomb_is_refused_quickly_after_a_bounded_read() {
        // 4 GiB claimed by 128 KiB of input.
        let bomb = zstd_bomb(32 * 1024, 0);
        assert!(bomb.len() < MAX_INDEX);
        let started = std::time::Instant::now();
        let error = decode(&bomb).unwrap_err();
        assert!(error.contains("decompresses to more than"), "{error}");
        // Reading stops at the bound (32 MiB), not after 4 GiB.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_value_bomb_is_refused_before_the_tree_is_built() {
        // Five million nils: 5 MB of msgpack, over 300 MB as a value tree.
        let count: u32 = 5_000_000;
        let mut msgpack = vec![0xdd];
        msgpack.extend_from_slice(&count.to_be_bytes());
        msgpack.resize(msgpack.len() + count as usize, 0xc0);
        let error = decode(&zstd::stream::encode_all(msgpack.as_slice(), 1).unwrap()).unwrap_err();
        assert!(error.contains("msgpack values"), "{error}");
    }

    #[test]
    fn values_are_counted_without_building_them() {
        let mut out = Vec::new();
        let value = Value::Map(vec![
            (
                Value::from("a"),
                Value::Array(vec![Value::from(1), Value::Nil]),
            ),
            (Value::from("b"), Value::Binary(vec![0; 40])),
            (Value::from(-100_000), Value::F64(1.5)),
            (Value::from(u64::MAX), Value::Ext(3, vec![1, 2, 3])),
            (Value::from("c".repeat(300)), Value::Ext(1, vec![0; 16])),
        ]);
        rmpv::encode::write_value(&mut out, &value).unwrap();
        assert_eq!(count_values(&out, 100), Ok(13));
        assert!(count_values(&out, 12).is_err(), "over the bound");
        for cut in 0..out.len() {
            assert!(count_values(&out[..cut], 100).is_err(), "cut at {cut}");
        }
        // An array that claims four billion elements in five bytes.
        assert!(count_values(&[0xdd, 0xff, 0xff, 0xff, 0xff], u64::MAX).is_err());
        assert!(count_values(&[0xc1], 10).is_err());
        let index = index_bytes("./", "./shards/");
        let decoded = zstd::stream::decode_all(index.as_slice()).unwrap();
        assert_eq!(count_values(&decoded, 100), Ok(15));
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
