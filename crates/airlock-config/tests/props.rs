//! Property tests of the TOML configuration reader: arbitrary text and mutations of the
//! shipped examples never panic, and whatever is accepted prints (`airlock config check`)
//! a resolved form that reads back to the same resolved form.
//!
//! `PROPTEST_CASES` raises the case count (scripts/fuzz.sh).

use std::path::Path;

use airlock_config::Config;
use proptest::prelude::*;

fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// The embedded default and every example the repository ships.
fn seeds() -> Vec<String> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seeds = vec![Config::embedded_default().to_toml()];
    for entry in std::fs::read_dir(&examples).expect("examples/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            seeds.push(std::fs::read_to_string(path).unwrap());
        }
    }
    assert!(seeds.len() >= 3, "examples/ lost its configs");
    seeds
}

/// Accepted text prints a canonical form that is a fixed point.
fn check_canonical(text: &str) -> Result<(), TestCaseError> {
    if let Ok(parsed) = Config::from_toml_str(text, "fuzz") {
        let printed = parsed.to_toml();
        let again = Config::from_toml_str(&printed, "printed").map_err(|e| {
            TestCaseError::fail(format!("the printed form is refused: {e}\n{printed}"))
        })?;
        prop_assert_eq!(again.to_toml(), printed);
    }
    Ok(())
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\n[[proxy]]\n".to_owned()),
        Just("\n[cache]\nmax_size = \"1KB\"\n".to_owned()),
        Just(" = ".to_owned()),
        Just("\"".to_owned()),
        Just("'''".to_owned()),
        Just("[".to_owned()),
        Just("ttl = \"-5m\"\n".to_owned()),
        Just("max_size = \"99999999999999999999TB\"\n".to_owned()),
        Just("upstream = \"http://[::1\"\n".to_owned()),
        Just("allow = [\"*.\", \"..\", \"a..b\"]\n".to_owned()),
        Just("\u{0}".to_owned()),
        "\\PC{0,10}",
    ]
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn mutated_examples_never_panic(seed in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), insert in fragment(), cut in any::<bool>()) {
        let seeds = seeds();
        let mut text = seeds[seed.index(seeds.len())].clone();
        let mut at = at.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        if cut { text.truncate(at) } else { text.insert_str(at, &insert) }
        check_canonical(&text)?;
    }

    #[test]
    fn arbitrary_text_never_panics(text in prop_oneof!["\\PC{0,300}", "[\\[\\]a-z_=\" \\n.0-9]{0,200}"]) {
        check_canonical(&text)?;
    }
}

#[test]
fn the_seeds_are_canonical_after_one_print() {
    for seed in seeds() {
        let printed = Config::from_toml_str(&seed, "seed").unwrap().to_toml();
        assert_eq!(
            Config::from_toml_str(&printed, "printed")
                .unwrap()
                .to_toml(),
            printed
        );
    }
}
