//! Conda channel fixtures: repodata.json and CEP-16 shard indexes for hermetic tests.

use airlock_types::Digest;
use rmpv::Value;

/// A `repodata.json` for `subdir` listing `(filename, bytes)` packages with their sha256
/// (`.conda` files under `packages.conda`, the rest under `packages`).
pub fn repodata(subdir: &str, packages: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = serde_json::Map::new();
    let mut conda = serde_json::Map::new();
    for (filename, bytes) in packages {
        let name = filename.split('-').next().unwrap_or(filename);
        let record = serde_json::json!({
            "name": name, "version": "1.0", "build": "0", "build_number": 0,
            "depends": [], "subdir": subdir, "size": bytes.len(),
            "sha256": Digest::of(bytes).hex(),
        });
        let map = if std::path::Path::new(filename)
            .extension()
            .is_some_and(|e| e == "conda")
        {
            &mut conda
        } else {
            &mut tar
        };
        map.insert((*filename).to_owned(), record);
    }
    serde_json::to_vec_pretty(&serde_json::json!({
        "info": {"subdir": subdir}, "packages": tar, "packages.conda": conda,
        "removed": [], "repodata_version": 1,
    }))
    .expect("json")
}

/// A zstd-compressed CEP-16 shard index naming `shards` (each by the sha256 of its bytes).
pub fn shard_index(
    subdir: &str,
    base_url: &str,
    shards_base_url: &str,
    shards: &[(&str, &[u8])],
) -> Vec<u8> {
    let entries = shards
        .iter()
        .map(|(name, bytes)| {
            let digest = Digest::of(bytes);
            let raw: Vec<u8> = (0..32)
                .map(|i| u8::from_str_radix(&digest.hex()[2 * i..2 * i + 2], 16).expect("hex"))
                .collect();
            (Value::from(*name), Value::Binary(raw))
        })
        .collect();
    let value = Value::Map(vec![
        (Value::from("version"), Value::from(1)),
        (
            Value::from("info"),
            Value::Map(vec![
                (Value::from("base_url"), Value::from(base_url)),
                (Value::from("shards_base_url"), Value::from(shards_base_url)),
                (Value::from("subdir"), Value::from(subdir)),
            ]),
        ),
        (Value::from("shards"), Value::Map(entries)),
    ]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &value).expect("msgpack");
    zstd_compress(&out)
}

/// zstd at level 3.
pub fn zstd_compress(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).expect("zstd")
}

/// Decodes a zstd-compressed shard index into `(base_url, shards_base_url)`.
pub fn shard_index_urls(bytes: &[u8]) -> (String, String) {
    let raw = zstd::stream::decode_all(bytes).expect("zstd");
    let value = rmpv::decode::read_value(&mut raw.as_slice()).expect("msgpack");
    let get = |map: &Value, key: &str| -> Value {
        map.as_map()
            .expect("map")
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v.clone())
            .expect(key)
    };
    let info = get(&value, "info");
    (
        get(&info, "base_url").as_str().expect("str").to_owned(),
        get(&info, "shards_base_url")
            .as_str()
            .expect("str")
            .to_owned(),
    )
}
