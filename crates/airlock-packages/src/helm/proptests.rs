//! Property tests of the `index.yaml` rewrite: generated indexes map every chart URL to a
//! gateway path and back, the rewritten index is YAML again, and arbitrary or mutated
//! indexes never panic.

use std::fmt::Write as _;

use proptest::prelude::*;
use reqwest::Url;
use yaml_rust2::YamlLoader;

use super::index::{EXTERNAL, rewrite};

fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

fn base() -> Url {
    Url::parse("https://charts.example.com/stable/").unwrap()
}

/// A chart version: name, version, digest, and URLs relative, under the base, or elsewhere.
#[derive(Debug, Clone)]
struct Version {
    name: String,
    number: String,
    digest: String,
    urls: Vec<String>,
}

fn version() -> impl Strategy<Value = Version> {
    (
        "[a-z][a-z0-9-]{0,10}",
        "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}",
        "[0-9a-f]{64}",
        proptest::collection::vec(
            prop_oneof![
                "[a-z0-9-]{1,10}\\.tgz",
                "https://charts\\.example\\.com/stable/[a-z]{1,5}/[a-z0-9-]{1,10}\\.tgz",
                "https://[a-z]{1,8}\\.example\\.org(:[0-9]{2,4})?/[a-z/]{0,10}[a-z]\\.tgz",
                "oci://[a-z]{1,8}\\.example/[a-z]{1,8}",
            ],
            1..3,
        ),
    )
        .prop_map(|(name, number, digest, urls)| Version {
            name,
            number,
            digest,
            urls,
        })
}

fn render(versions: &[Version]) -> String {
    let mut out = String::from("apiVersion: v1\nentries:\n");
    for v in versions {
        let _ = write!(
            out,
            "  {}:\n  - name: {}\n    version: {}\n    digest: {}\n    urls:\n",
            v.name, v.name, v.number, v.digest
        );
        for url in &v.urls {
            let _ = writeln!(out, "    - {url}");
        }
    }
    out + "generated: \"2024-01-01T00:00:00Z\"\n"
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn every_http_url_maps_to_a_gateway_path_and_back(versions in proptest::collection::vec(version(), 0..5)) {
        // One version per chart name: later ones of the same name replace earlier ones.
        let mut seen = std::collections::HashSet::new();
        let versions: Vec<Version> = versions.into_iter().filter(|v| seen.insert(v.name.clone())).collect();
        let rewritten = rewrite(render(&versions).as_bytes(), &base(), "h").unwrap();
        let text = String::from_utf8(rewritten.bytes.clone()).unwrap();
        let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
        for v in &versions {
            let urls = doc["entries"][v.name.as_str()][0]["urls"].as_vec().unwrap();
            prop_assert_eq!(urls.len(), v.urls.len());
            for (sent, now) in v.urls.iter().zip(urls) {
                let now = now.as_str().unwrap();
                // A URL the gateway would not serve (not http, or a path it refuses, like
                // an empty segment) is left as it was.
                let Some(path) = now.strip_prefix("/repository/h/") else {
                    prop_assert_eq!(now, sent);
                    prop_assert!(sent.starts_with("oci://") || sent.matches("//").count() > 1);
                    continue;
                };
                let chart = &rewritten.charts[path];
                prop_assert_eq!(&chart.url, &base().join(sent).unwrap().to_string());
                prop_assert!(!path.contains(':') && !path.contains(".."));
                let external = !chart.url.starts_with(base().as_str());
                prop_assert_eq!(path.starts_with(EXTERNAL), external);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let _ = rewrite(text.as_bytes(), &base(), "h");
    }

    #[test]
    fn mutated_indexes_never_panic(versions in proptest::collection::vec(version(), 1..3), at in any::<prop::sample::Index>(), insert in prop_oneof![
        Just("&a ".to_owned()), Just("*a".to_owned()), Just("- ".to_owned()), Just(": ".to_owned()),
        Just("\n  ".to_owned()), Just("[".to_owned()), Just("{".to_owned()), Just("!!binary ".to_owned()),
        Just("\"".to_owned()), Just("---\n".to_owned()), "\\PC{0,8}",
    ], cut in any::<bool>()) {
        let mut text = render(&versions);
        let mut at = at.index(text.len() + 1);
        while !text.is_char_boundary(at) { at -= 1; }
        if cut { text.truncate(at) } else { text.insert_str(at, &insert) }
        if let Ok(rewritten) = rewrite(text.as_bytes(), &base(), "h") {
            // Whatever is accepted is written back as YAML again.
            let again = String::from_utf8(rewritten.bytes).unwrap();
            prop_assert!(YamlLoader::load_from_str(&again).is_ok());
        }
    }
}

/// Deep nesting must be refused or handled, not overflow the stack of the thread that
/// reads it (a blocking-pool thread has 2 MiB).
#[test]
fn deeply_nested_indexes_do_not_overflow_the_stack() {
    for depth in [1_000, 100_000] {
        let block = format!("apiVersion: v1\nx: {}a\n", "- ".repeat(depth));
        let flow = format!("apiVersion: v1\nx: {}\n", "[".repeat(depth));
        let result = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                (
                    rewrite(block.as_bytes(), &base(), "h").is_ok(),
                    rewrite(flow.as_bytes(), &base(), "h").is_ok(),
                )
            })
            .unwrap()
            .join();
        assert!(result.is_ok(), "depth {depth}");
    }
}
