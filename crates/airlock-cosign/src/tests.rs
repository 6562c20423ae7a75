use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};

use super::*;

/// Keys of the wrong kind, made with `openssl` for these tests.
const P384_PEM: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEnXnovxtiubEU6xoxS5u1R5ISOWRkf0jN
ookpnilezoIfu7/hZG5xBh2a7Ie8XwNSnUj0tmxO0tJuSROQ4m81mmTsTvPnAH2z
zFshGXzutjSHOIkI7NC1B8w7qnfW/Fsh
-----END PUBLIC KEY-----
";
const SECP256K1_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAEZeRdIJqNjKaDM6RQ0Ke2VH9EP4wuNpPr
5Eo01Z7atwu3sOLM16U9hd7XJ9EqzO7F/St3kfLu3k0ay0f9r+ur2g==
-----END PUBLIC KEY-----
";
const ED25519_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAWwPkJ+NG4GrNwfA4l6eQ+rQUnhjCBXxGDiQv1kZJ/jw=
-----END PUBLIC KEY-----
";

fn image() -> Digest {
    Digest::of(b"the image manifest")
}

fn payload_for(digest: &str, kind: &str) -> Vec<u8> {
    serde_json::json!({
        "critical": {
            "identity": {"docker-reference": "registry.test/team/app"},
            "image": {"docker-manifest-digest": digest},
            "type": kind,
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

struct Signer {
    key: SigningKey,
}

impl Signer {
    fn new() -> Self {
        Self {
            key: SigningKey::random(&mut rand::rngs::OsRng),
        }
    }

    fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    fn public(&self) -> PublicKey {
        PublicKey::from_pem(&self.public_pem()).unwrap()
    }

    fn sign(&self, payload: &[u8]) -> String {
        let signature: Signature = self.key.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }
}

#[test]
fn a_good_signature_for_the_image_is_accepted() {
    let signer = Signer::new();
    let payload = payload_for(&image().to_string(), SIGNATURE_TYPE);
    let checked = check(&signer.public(), &payload, &signer.sign(&payload), &image()).unwrap();
    assert_eq!(checked.digest, image().to_string());
    assert_eq!(checked.reference.as_deref(), Some("registry.test/team/app"));
    assert_eq!(
        signature_tag(&image()),
        format!("sha256-{}.sig", image().hex())
    );
}

#[test]
fn a_high_s_signature_is_accepted_as_cosign_does() {
    // Go's crypto/ecdsa does not normalize S; half of cosign's signatures have a high S.
    let signer = Signer::new();
    let payload = payload_for(&image().to_string(), SIGNATURE_TYPE);
    let signed: Signature = signer.key.sign(&payload);
    let (r, s) = signed.split_scalars();
    let negated = Signature::from_scalars(r, -s).unwrap();
    // `normalize_s` answers `Some` only for a high S.
    let high = [signed, negated]
        .into_iter()
        .find(|sig| sig.normalize_s().is_some())
        .unwrap();
    let annotation = base64::engine::general_purpose::STANDARD.encode(high.to_der().as_bytes());
    check(&signer.public(), &payload, &annotation, &image()).unwrap();
}

#[test]
fn another_key_or_a_changed_payload_does_not_verify() {
    let signer = Signer::new();
    let stranger = Signer::new();
    let payload = payload_for(&image().to_string(), SIGNATURE_TYPE);
    let signature = signer.sign(&payload);
    assert_eq!(
        check(&stranger.public(), &payload, &signature, &image()),
        Err(CosignError::SignatureMismatch)
    );
    for at in [0, payload.len() / 2, payload.len() - 1] {
        let mut flipped = payload.clone();
        flipped[at] ^= 0x01;
        assert_eq!(
            check(&signer.public(), &flipped, &signature, &image()),
            Err(CosignError::SignatureMismatch),
            "byte {at} flipped"
        );
    }
}

#[test]
fn a_signed_payload_for_another_image_or_type_is_refused() {
    let signer = Signer::new();
    let other = Digest::of(b"another manifest");
    let payload = payload_for(&other.to_string(), SIGNATURE_TYPE);
    let error = check(&signer.public(), &payload, &signer.sign(&payload), &image()).unwrap_err();
    assert_eq!(
        error,
        CosignError::OtherImage {
            signed: other.to_string(),
            image: image()
        }
    );
    assert!(error.to_string().contains(&other.to_string()), "{error}");
    // The bare hex (no algorithm) is not the digest either.
    let payload = payload_for(image().hex(), SIGNATURE_TYPE);
    let error = check(&signer.public(), &payload, &signer.sign(&payload), &image()).unwrap_err();
    assert!(matches!(error, CosignError::OtherImage { .. }), "{error}");

    let payload = payload_for(&image().to_string(), "atomic container signature");
    let error = check(&signer.public(), &payload, &signer.sign(&payload), &image()).unwrap_err();
    assert!(matches!(error, CosignError::WrongType { .. }), "{error}");
}

#[test]
fn malformed_payloads_are_named() {
    let signer = Signer::new();
    for (payload, expected) in [
        (&b"not json"[..], "expected ident"),
        (b"[]", "no `critical` object"),
        (
            b"{\"critical\": {\"type\": \"x\"}}",
            "docker-manifest-digest",
        ),
        (
            b"{\"critical\": {\"image\": {\"docker-manifest-digest\": \"sha256:00\"}}}",
            "`critical.type`",
        ),
    ] {
        let error = check(&signer.public(), payload, &signer.sign(payload), &image()).unwrap_err();
        assert!(matches!(error, CosignError::BadPayload(_)), "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[test]
fn garbage_signatures_are_refused_by_kind() {
    let signer = Signer::new();
    let payload = payload_for(&image().to_string(), SIGNATURE_TYPE);
    let error = check(&signer.public(), &payload, "not base64!", &image()).unwrap_err();
    assert!(
        matches!(error, CosignError::SignatureNotBase64(_)),
        "{error}"
    );
    let not_der = base64::engine::general_purpose::STANDARD.encode([0x30, 0x03, 0x02, 0x01]);
    assert_eq!(
        check(&signer.public(), &payload, &not_der, &image()),
        Err(CosignError::SignatureNotDer)
    );
    // A raw r||s signature (64 bytes) is not the DER form cosign writes.
    let raw: Signature = signer.key.sign(&payload);
    let raw = base64::engine::general_purpose::STANDARD.encode(raw.to_bytes());
    assert_eq!(
        check(&signer.public(), &payload, &raw, &image()),
        Err(CosignError::SignatureNotDer)
    );
    // Surrounding whitespace (a trailing newline) is tolerated.
    let padded = format!("{}\n", signer.sign(&payload));
    check(&signer.public(), &payload, &padded, &image()).unwrap();
}

#[test]
fn keys_of_the_wrong_kind_are_refused_by_kind() {
    for (pem, expected) in [
        (P384_PEM, "not an ECDSA P-256"),
        (SECP256K1_PEM, "not an ECDSA P-256"),
        (ED25519_PEM, "not an ECDSA P-256"),
    ] {
        let error = PublicKey::from_pem(pem).unwrap_err();
        assert!(matches!(error, CosignError::KeyNotP256(_)), "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
    let private = P384_PEM.replace("PUBLIC KEY", "ENCRYPTED SIGSTORE PRIVATE KEY");
    let error = PublicKey::from_pem(&private).unwrap_err();
    assert_eq!(
        error,
        CosignError::KeyNotPublic("ENCRYPTED SIGSTORE PRIVATE KEY".to_owned())
    );
    for garbage in [
        "",
        "hello",
        "-----BEGIN PUBLIC KEY-----\n%%%%\n-----END PUBLIC KEY-----\n",
    ] {
        let error = PublicKey::from_pem(garbage).unwrap_err();
        assert!(
            matches!(error, CosignError::KeyNotPem(_)),
            "{garbage:?}: {error}"
        );
    }
    // Well-formed PEM around bytes that are no key at all.
    let error = PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
        .unwrap_err();
    assert!(matches!(error, CosignError::KeyNotP256(_)), "{error}");
}
