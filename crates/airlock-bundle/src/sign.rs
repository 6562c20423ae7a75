//! Ed25519 keys and the detached signature of a bundle's index.
//!
//! Every file is one line of text (a trailing newline is fine; key files may also hold
//! `#` comment lines):
//!
//! ```text
//! NAME.key   airlock-bundle-secret-key-v1 ed25519 <64 hex digits: the 32-byte seed>
//! NAME.pub   airlock-bundle-public-key-v1 ed25519 <64 hex digits: the 32-byte public key>
//! .sig       airlock-bundle-signature-v1 ed25519 <key id> <128 hex digits: the signature>
//! ```
//!
//! The key id is the first 8 bytes of the public key's sha256, in hex: short enough to
//! print, and what lets `verify` tell "signed by another key" from "altered". The signature
//! covers the exact bytes of `airlock/index.json`, which name every item by its digest, so
//! it covers every byte of the bundle.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use airlock_types::Digest;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::error::BundleError;

const SECRET_TAG: &str = "airlock-bundle-secret-key-v1";
const PUBLIC_TAG: &str = "airlock-bundle-public-key-v1";
const SIGNATURE_TAG: &str = "airlock-bundle-signature-v1";
const ALGORITHM: &str = "ed25519";

/// A short, printable name of a public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    fn of(key: &VerifyingKey) -> Self {
        let digest = Digest::of(key.as_bytes());
        let mut id = [0u8; 8];
        hex::decode_to_slice(&digest.hex()[..16], &mut id).expect("a digest is hex");
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A signing key (`NAME.key`). Its bytes never appear in `Debug` output.
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public().id())
    }
}

impl SecretKey {
    pub fn generate() -> Self {
        Self(SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    pub fn read(path: &Path) -> Result<Self, BundleError> {
        let seed = read_key_line(path, SECRET_TAG, "a bundle signing key (NAME.key)")?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The detached signature of `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> Signature {
        Signature {
            key: self.public().id(),
            signature: self.0.sign(bytes),
        }
    }

    fn to_text(&self) -> String {
        format!(
            "{SECRET_TAG} {ALGORITHM} {}\n",
            hex::encode(self.0.to_bytes())
        )
    }
}

/// A trusted key (`NAME.pub`).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl PublicKey {
    pub fn read(path: &Path) -> Result<Self, BundleError> {
        let bytes = read_key_line(path, PUBLIC_TAG, "a bundle public key (NAME.pub)")?;
        Self::from_bytes(&bytes, path)
    }

    /// A key given as the text of a `NAME.pub` file (the admin API's `trust_key`);
    /// `origin` names where it came from in errors.
    pub fn from_text(text: &str, origin: &Path) -> Result<Self, BundleError> {
        let bytes = parse_key_line(text, origin, PUBLIC_TAG, "a bundle public key (NAME.pub)")?;
        Self::from_bytes(&bytes, origin)
    }

    fn from_bytes(bytes: &[u8; 32], origin: &Path) -> Result<Self, BundleError> {
        VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| BundleError::BadKeyFile {
                path: origin.to_owned(),
                reason: "the key is not a valid Ed25519 public key".to_owned(),
            })
    }

    pub fn id(&self) -> KeyId {
        KeyId::of(&self.0)
    }

    /// Checks that `signature` is this key's signature of `bytes`.
    pub fn verify(&self, bytes: &[u8], signature: &Signature) -> Result<(), BundleError> {
        if signature.key != self.id() {
            return Err(BundleError::WrongKey {
                signed_by: signature.key,
                trusted: self.id(),
            });
        }
        self.0
            .verify_strict(bytes, &signature.signature)
            .map_err(|_| BundleError::BadSignature { key: signature.key })
    }

    fn to_text(&self) -> String {
        format!(
            "{PUBLIC_TAG} {ALGORITHM} {}\n",
            hex::encode(self.0.as_bytes())
        )
    }
}

/// A detached signature, as `airlock/index.json.sig` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    key: KeyId,
    signature: ed25519_dalek::Signature,
}

impl Signature {
    /// The id of the key that made it (not checked until [`PublicKey::verify`]).
    pub fn key(&self) -> KeyId {
        self.key
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        format!(
            "{SIGNATURE_TAG} {ALGORITHM} {} {}\n",
            self.key,
            hex::encode(self.signature.to_bytes())
        )
        .into_bytes()
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let bad = |reason: &str| BundleError::BadSignatureFile(reason.to_owned());
        let text = std::str::from_utf8(bytes).map_err(|_| bad("it is not text"))?;
        let line = text.strip_suffix('\n').unwrap_or(text);
        let fields: Vec<&str> = line.split(' ').collect();
        let [tag, algorithm, key, signature] = fields[..] else {
            return Err(bad(
                "it is not `airlock-bundle-signature-v1 ed25519 KEYID HEX`",
            ));
        };
        if tag != SIGNATURE_TAG {
            return Err(bad(&format!("it starts with {tag:?}, not {SIGNATURE_TAG}")));
        }
        if algorithm != ALGORITHM {
            return Err(bad(&format!(
                "algorithm {algorithm:?} is not supported (only ed25519)"
            )));
        }
        let mut id = [0u8; 8];
        hex::decode_to_slice(key, &mut id).map_err(|_| bad("the key id is not 16 hex digits"))?;
        let mut raw = [0u8; 64];
        hex::decode_to_slice(signature, &mut raw)
            .map_err(|_| bad("the signature is not 128 hex digits"))?;
        Ok(Self {
            key: KeyId(id),
            signature: ed25519_dalek::Signature::from_bytes(&raw),
        })
    }
}

/// Reads the one key line of `path`: `TAG ed25519 <64 hex digits>`.
fn read_key_line(path: &Path, tag: &str, what: &str) -> Result<[u8; 32], BundleError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| BundleError::io("reading the key", path, e))?;
    parse_key_line(&text, path, tag, what)
}

/// The key in `text`, a key file's content; `origin` names it in errors.
fn parse_key_line(
    text: &str,
    origin: &Path,
    tag: &str,
    what: &str,
) -> Result<[u8; 32], BundleError> {
    let bad = |reason: String| BundleError::BadKeyFile {
        path: origin.to_owned(),
        reason,
    };
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return Err(bad(format!(
            "expected one line `{tag} ed25519 HEX`: is it {what}?"
        )));
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields[..] {
        [found, ALGORITHM, hex] if found == tag => {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(hex, &mut bytes)
                .map_err(|_| bad("the key is not 64 hex digits".to_owned()))?;
            Ok(bytes)
        }
        [found, ..] if found == SECRET_TAG || found == PUBLIC_TAG => Err(bad(format!(
            "this is {}, not {what}",
            if found == SECRET_TAG {
                "a secret key"
            } else {
                "a public key"
            }
        ))),
        _ => Err(bad(format!("expected `{tag} ed25519 HEX`: is it {what}?"))),
    }
}

/// The files `keygen --out NAME` wrote.
#[derive(Debug)]
pub struct GeneratedKey {
    pub secret: PathBuf,
    pub public: PathBuf,
    pub id: KeyId,
}

/// Writes a fresh key pair to `NAME.key` (mode 0600, never over an existing file) and
/// `NAME.pub`.
pub fn keygen(name: &Path) -> Result<GeneratedKey, BundleError> {
    let with = |ext: &str| {
        let mut path = name.as_os_str().to_owned();
        path.push(ext);
        PathBuf::from(path)
    };
    let (secret_path, public_path) = (with(".key"), with(".pub"));
    for path in [&secret_path, &public_path] {
        if path.exists() {
            return Err(BundleError::KeyExists { path: path.clone() });
        }
    }
    let key = SecretKey::generate();
    write_new(&secret_path, key.to_text().as_bytes(), 0o600)?;
    write_new(&public_path, key.public().to_text().as_bytes(), 0o644)?;
    Ok(GeneratedKey {
        secret: secret_path,
        public: public_path,
        id: key.public().id(),
    })
}

/// Creates `path` with `mode` from the start (`O_EXCL`), so a secret is never readable by
/// others, not even for a moment.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BundleError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BundleError::KeyExists {
                path: path.to_owned(),
            },
            _ => BundleError::io("creating the key file", path, e),
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| BundleError::io("writing the key file", path, e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn keygen_signs_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let generated = keygen(&dir.path().join("site")).unwrap();
        let mode = std::fs::metadata(&generated.secret)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let secret = SecretKey::read(&generated.secret).unwrap();
        let public = PublicKey::read(&generated.public).unwrap();
        assert_eq!(public.id(), generated.id);
        assert!(!format!("{secret:?}").contains(&hex::encode(secret.0.to_bytes())));

        let signature = secret.sign(b"index");
        let parsed = Signature::parse(&signature.to_bytes()).unwrap();
        assert_eq!(parsed, signature);
        public.verify(b"index", &parsed).unwrap();
        assert!(matches!(
            public.verify(b"index!", &parsed),
            Err(BundleError::BadSignature { .. })
        ));

        let other = SecretKey::generate().public();
        let error = other.verify(b"index", &parsed).unwrap_err();
        assert!(matches!(error, BundleError::WrongKey { .. }), "{error}");
        assert!(
            error.to_string().contains(&generated.id.to_string()),
            "{error}"
        );

        let error = keygen(&dir.path().join("site")).unwrap_err();
        assert!(matches!(error, BundleError::KeyExists { .. }), "{error}");
    }

    #[test]
    fn key_files_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let generated = keygen(&dir.path().join("k")).unwrap();
        let error = PublicKey::read(&generated.secret).unwrap_err().to_string();
        assert!(
            error.contains("this is a secret key, not a bundle public key"),
            "{error}"
        );
        let error = SecretKey::read(&generated.public).unwrap_err().to_string();
        assert!(error.contains("this is a public key"), "{error}");

        let commented = dir.path().join("c.pub");
        let text = std::fs::read_to_string(&generated.public).unwrap();
        std::fs::write(&commented, format!("# site A\n{text}")).unwrap();
        PublicKey::read(&commented).unwrap();
        std::fs::write(&commented, "airlock-bundle-public-key-v1 ed25519 zz\n").unwrap();
        let error = PublicKey::read(&commented).unwrap_err().to_string();
        assert!(error.contains("not 64 hex digits"), "{error}");
    }

    #[test]
    fn malformed_signatures_are_refused() {
        for text in [
            "",
            "airlock-bundle-signature-v1 ed25519 00",
            "airlock-bundle-signature-v2 ed25519 0000000000000000 00",
            "airlock-bundle-signature-v1 rsa 0000000000000000 00",
        ] {
            assert!(Signature::parse(text.as_bytes()).is_err(), "{text}");
        }
    }
}
