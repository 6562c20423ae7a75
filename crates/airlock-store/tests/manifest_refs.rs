//! Property tests of `manifest_refs`, which reads every manifest the registry caches to
//! know what eviction must keep: it finds exactly the digests a manifest or index names,
//! in a fixed order, never panics on bytes, and never invents a reference.
//!
//! `PROPTEST_CASES` raises the case count (scripts/fuzz.sh).

use airlock_store::evict::manifest_refs;
use airlock_types::Digest;
use proptest::prelude::*;

fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest::from_sha256)
}

fn descriptor(d: &Digest) -> serde_json::Value {
    serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 1, "digest": d.to_string()})
}

/// A manifest or index with every kind of reference, some of them missing.
#[derive(Debug, Clone)]
struct Refs {
    config: Option<Digest>,
    subject: Option<Digest>,
    layers: Vec<Digest>,
    manifests: Vec<Digest>,
    blobs: Vec<Digest>,
}

fn refs() -> impl Strategy<Value = Refs> {
    (
        proptest::option::of(digest()),
        proptest::option::of(digest()),
        proptest::collection::vec(digest(), 0..5),
        proptest::collection::vec(digest(), 0..5),
        proptest::collection::vec(digest(), 0..3),
    )
        .prop_map(|(config, subject, layers, manifests, blobs)| Refs {
            config,
            subject,
            layers,
            manifests,
            blobs,
        })
}

fn document(r: &Refs) -> serde_json::Value {
    let mut doc = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"});
    if let Some(d) = &r.config {
        doc["config"] = descriptor(d);
    }
    if let Some(d) = &r.subject {
        doc["subject"] = descriptor(d);
    }
    doc["layers"] = r.layers.iter().map(descriptor).collect();
    doc["manifests"] = r.manifests.iter().map(descriptor).collect();
    doc["blobs"] = r.blobs.iter().map(descriptor).collect();
    doc["annotations"] = serde_json::json!({"digest": "sha256:not-a-reference"});
    doc
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn every_named_digest_is_found_in_order(r in refs(), pretty in any::<bool>()) {
        let doc = document(&r);
        let bytes = if pretty { serde_json::to_vec_pretty(&doc) } else { serde_json::to_vec(&doc) }.unwrap();
        let want: Vec<Digest> = r.config.iter().chain(&r.subject).chain(&r.layers).chain(&r.manifests).chain(&r.blobs).cloned().collect();
        prop_assert_eq!(manifest_refs(&bytes), want);
    }

    #[test]
    fn a_mutated_manifest_never_invents_a_reference(r in refs(), at in any::<prop::sample::Index>(), insert in prop_oneof![
        Just("{".to_owned()), Just("]".to_owned()), Just("\"digest\":".to_owned()), Just("null".to_owned()), "\\PC{0,6}",
    ], cut in any::<bool>()) {
        let mut text = serde_json::to_string(&document(&r)).unwrap();
        let mut at = at.index(text.len() + 1);
        while !text.is_char_boundary(at) { at -= 1; }
        if cut { text.truncate(at) } else { text.insert_str(at, &insert) }
        for found in manifest_refs(text.as_bytes()) {
            prop_assert!(text.contains(&found.to_string()), "{found} is not in {text}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = manifest_refs(&bytes);
    }
}

/// Nesting far past any manifest's is refused by the JSON reader's own limit (128), not
/// followed down the stack.
#[test]
fn deeply_nested_json_is_not_a_reference() {
    let deep = format!(
        "{{\"layers\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(manifest_refs(deep.as_bytes()).is_empty());
}
