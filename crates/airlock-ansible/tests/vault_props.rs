//! Property tests of the vault envelope: any bytes round-trip, any tampering is detected.

use airlock_ansible::vault::{Envelope, VaultError, VaultSecret};
use proptest::prelude::*;

/// `PROPTEST_CASES` (scripts/fuzz.sh) or `default`.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

fn secret(password: &str) -> VaultSecret {
    VaultSecret::new(password.as_bytes().to_vec())
}

proptest! {
    // Each case derives keys (PBKDF2, 10 000 rounds), slow in unoptimized test builds.
    #![proptest_config(config(24))]

    #[test]
    fn any_bytes_round_trip(
        plaintext in proptest::collection::vec(any::<u8>(), 0..600),
        password in "[ -~]{1,40}",
        salt in proptest::collection::vec(any::<u8>(), 32),
        label in proptest::option::of("[a-z][a-z0-9_.-]{0,15}"),
    ) {
        let env = Envelope::seal(&plaintext, &secret(&password), label.as_deref(), &salt).unwrap();
        let text = env.to_text();
        let parsed = Envelope::parse(&text).unwrap();
        prop_assert_eq!(&parsed, &env);
        prop_assert_eq!(parsed.label(), label.as_deref());
        prop_assert_eq!(parsed.open(&secret(&password)).unwrap(), plaintext);
    }

    #[test]
    fn any_change_to_the_body_is_detected(
        plaintext in proptest::collection::vec(any::<u8>(), 0..200),
        position in any::<prop::sample::Index>(),
        replacement in "[0-9a-f]",
    ) {
        let env = Envelope::seal(&plaintext, &secret("pw"), None, &[9; 32]).unwrap();
        let text = env.to_text();
        let (header, body) = text.split_once('\n').unwrap();
        let hex_positions: Vec<usize> = body
            .char_indices()
            .filter(|(_, c)| c.is_ascii_hexdigit())
            .map(|(i, _)| i)
            .collect();
        let at = hex_positions[position.index(hex_positions.len())];
        let original = &body[at..=at];
        prop_assume!(original != replacement);
        let tampered = format!("{header}\n{}{replacement}{}", &body[..at], &body[at + 1..]);
        // Either the envelope no longer parses, or the HMAC check refuses it. The one change
        // that is not tampering: the case of an inner hex digit, which decodes to the same bytes.
        match Envelope::parse(&tampered) {
            Err(_) => {}
            Ok(parsed) if parsed == env => {}
            Ok(parsed) => prop_assert!(parsed.open(&secret("pw")).is_err()),
        }
    }

    #[test]
    fn any_wrong_password_is_refused(password in "[ -~]{1,20}", other in "[ -~]{1,20}") {
        prop_assume!(password != other);
        let env = Envelope::seal(b"secret", &secret(&password), None, &[3; 32]).unwrap();
        prop_assert_eq!(
            env.open(&secret(&other)).unwrap_err(),
            VaultError::WrongPassword { label: None }
        );
    }

    #[test]
    fn parsing_junk_never_panics(text in "\\PC{0,300}") {
        let _ = Envelope::parse(&text);
        let _ = Envelope::parse(&format!("$ANSIBLE_VAULT;1.1;AES256\n{text}"));
    }
}
