//! Property tests of the conda parsers: `repodata.json` gives back exactly the sha256s it
//! lists and refuses any that is not 64 hex digits; the msgpack value counter agrees with
//! the decoder on every value and never panics on bytes; shard indexes, generated, mutated
//! or arbitrary, decode and rewrite without panicking.

use std::collections::HashMap;
use std::fmt::Write as _;

use proptest::prelude::*;
use rmpv::Value;

use super::repodata::parse;
use super::shards::{count_values, decode, rewrite};

fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

fn filename() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,10}-[0-9.]{1,6}-[a-z0-9_]{1,6}\\.(conda|tar\\.bz2)"
}

fn repodata_json(packages: &HashMap<String, String>, conda: &HashMap<String, String>) -> String {
    let records = |map: &HashMap<String, String>| {
        map.iter()
            .map(|(name, sha)| {
                format!(
                    r#""{name}":{{"name":"x","depends":["a >=1"],"sha256":"{sha}","md5":"00"}}"#
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        r#"{{"info":{{"subdir":"noarch"}},"packages":{{{}}},"packages.conda":{{{}}},"repodata_version":1}}"#,
        records(packages),
        records(conda)
    )
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Any msgpack value, nested a few levels.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::F64),
        any::<f32>().prop_map(Value::F32),
        "\\PC{0,40}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Binary),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(t, d)| Value::Ext(t, d)),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..8).prop_map(Value::Map),
        ]
    })
}

fn nodes(value: &Value) -> u64 {
    1 + match value {
        Value::Array(items) => items.iter().map(nodes).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| nodes(k) + nodes(v)).sum(),
        _ => 0,
    }
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).unwrap();
    out
}

fn index(base: &str, shards: &str, names: &[String]) -> Vec<u8> {
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
            Value::Map(
                names
                    .iter()
                    .map(|n| (Value::from(n.as_str()), Value::Binary(vec![7; 32])))
                    .collect(),
            ),
        ),
    ]);
    zstd::stream::encode_all(encode(&value).as_slice(), 1).unwrap()
}

fn url() -> reqwest::Url {
    reqwest::Url::parse("https://up.example/ch/noarch/repodata_shards.msgpack.zst").unwrap()
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn repodata_gives_back_its_sha256s(
        packages in proptest::collection::hash_map(filename(), any::<[u8; 32]>(), 0..8),
        conda in proptest::collection::hash_map(filename(), any::<[u8; 32]>(), 0..8),
        upper in any::<bool>(),
    ) {
        let as_hex = |m: &HashMap<String, [u8; 32]>| -> HashMap<String, String> {
            m.iter().map(|(k, v)| (k.clone(), if upper { hex(v).to_uppercase() } else { hex(v) })).collect()
        };
        let map = parse(repodata_json(&as_hex(&packages), &as_hex(&conda)).as_bytes()).unwrap();
        let mut want = packages.clone();
        want.extend(conda);
        prop_assert_eq!(map, want);
    }

    #[test]
    fn a_sha256_that_is_not_64_hex_digits_is_refused(name in filename(), sha in prop_oneof![
        "[0-9a-f]{0,63}", "[0-9a-f]{65,70}", "[0-9a-f]{62}[g-z+ -]{2}", "(\\+[0-9a-f]){32}", "[0-9a-f]{60}é",
    ]) {
        let packages = HashMap::from([(name, sha)]);
        prop_assert!(parse(repodata_json(&packages, &HashMap::new()).as_bytes()).is_err());
    }

    #[test]
    fn mutated_repodata_never_panics(packages in proptest::collection::hash_map(filename(), any::<[u8; 32]>(), 1..4), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let text = repodata_json(&packages.iter().map(|(k, v)| (k.clone(), hex(v))).collect(), &HashMap::new());
        let mut bytes = text.into_bytes();
        let cut = at.index(bytes.len());
        let _ = parse(&bytes[..cut]);
        bytes[cut] = byte;
        if let Ok(map) = parse(&bytes) {
            prop_assert!(map.len() <= packages.len());
        }
    }

    #[test]
    fn counted_values_match_the_decoder(value in value()) {
        let bytes = encode(&value);
        prop_assert_eq!(count_values(&bytes, u64::MAX), Ok(nodes(&value)));
        prop_assert!(count_values(&bytes, nodes(&value) - 1).is_err());
        // Every cut is an error: a value never ends early.
        let cut = bytes.len() / 2;
        prop_assert!(count_values(&bytes[..cut], u64::MAX).is_err());
    }

    #[test]
    fn arbitrary_msgpack_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        // The counter is the stricter of the two (it refuses the reserved marker 0xc1 and
        // deep nesting): what it accepts, the decoder reads, with as many values.
        if let Ok(counted) = count_values(&bytes, 1 << 20) {
            let value = rmpv::decode::read_value(&mut bytes.as_slice());
            prop_assert_eq!(value.map(|v| nodes(&v)).ok(), Some(counted));
        }
        let _ = decode(&zstd::stream::encode_all(bytes.as_slice(), 1).unwrap());
        let _ = decode(&bytes);
    }

    #[test]
    fn shard_indexes_rewrite_absolute_urls_only(
        base in prop_oneof!["https://[a-z]{1,8}\\.example/[a-z/]{0,10}", "\\./", "[a-z]{0,5}/?"],
        shards in prop_oneof!["https://[a-z]{1,8}\\.example/[a-z/]{0,10}", "\\./shards/", ""],
        names in proptest::collection::vec("[a-z][a-z0-9-]{0,12}", 0..6),
    ) {
        let local = "/repository/c/noarch/";
        let rewritten = rewrite(&index(&base, &shards, &names), local, &url()).unwrap();
        let value = decode(&rewritten.bytes).unwrap();
        let info = value.as_map().unwrap()[1].1.as_map().unwrap();
        let get = |key: &str| info.iter().find(|(k, _)| k.as_str() == Some(key)).unwrap().1.as_str().unwrap().to_owned();
        let expect = |sent: &str, local: String| if sent.starts_with("https://") { local } else { sent.to_owned() };
        prop_assert_eq!(get("base_url"), expect(&base, local.to_owned()));
        prop_assert_eq!(get("shards_base_url"), expect(&shards, format!("{local}shards/")));
        prop_assert!(rewritten.shards_base.ends_with('/'));
        prop_assert!(rewritten.shards_base.starts_with("https://"));
        // Deterministic: the same index gives the same bytes.
        let again = rewrite(&index(&base, &shards, &names), local, &url()).unwrap();
        prop_assert_eq!(again.bytes, rewritten.bytes);
    }

    #[test]
    fn mutated_shard_indexes_never_panic(names in proptest::collection::vec("[a-z]{1,8}", 0..4), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let compressed = index("./", "./shards/", &names);
        let mut raw = zstd::stream::decode_all(compressed.as_slice()).unwrap();
        let i = at.index(raw.len());
        raw[i] = byte;
        let mutated = zstd::stream::encode_all(raw.as_slice(), 1).unwrap();
        let _ = rewrite(&mutated, "/repository/c/noarch/", &url());
        let _ = rewrite(&mutated[..at.index(mutated.len())], "/repository/c/noarch/", &url());
    }
}

/// Regression: `from_str_radix` takes a leading sign, so a sha256 of 32 `+x` pairs was read
/// as a digest instead of refused as malformed.
#[test]
fn a_signed_sha256_is_refused() {
    let packages = HashMap::from([("a-1-0.conda".to_owned(), "+a".repeat(32))]);
    let error = parse(repodata_json(&packages, &HashMap::new()).as_bytes()).unwrap_err();
    assert!(error.contains("malformed sha256"), "{error}");
}

/// Regression: 100,000 nested one-element arrays (100 KB) overflowed the 2 MiB stack of a
/// blocking-pool thread in the msgpack decoder (whose own limit is 1,024 levels).
#[test]
fn deeply_nested_shard_indexes_do_not_overflow_the_stack() {
    let nested = [vec![0x91_u8; 100_000], vec![0xc0]].concat();
    let compressed = zstd::stream::encode_all(nested.as_slice(), 1).unwrap();
    let joined = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || decode(&compressed).is_err())
        .unwrap()
        .join();
    assert_eq!(joined.ok(), Some(true));
}
