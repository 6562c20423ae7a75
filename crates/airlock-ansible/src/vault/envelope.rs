//! The AES256 vault envelope: parse, format, encrypt, decrypt.

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::VaultSecret;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

const MAGIC: &str = "$ANSIBLE_VAULT";
const ROUNDS: u32 = 10_000;
const SALT_LEN: usize = 32;
const BLOCK: usize = 16;
const LINE_WIDTH: usize = 80;

/// What went wrong reading or decrypting a vault envelope.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("not an ansible-vault envelope: the first line must start with `$ANSIBLE_VAULT;`")]
    NotVault,
    #[error(
        "unsupported vault header `{0}`: airlock reads `$ANSIBLE_VAULT;1.1;AES256` and `$ANSIBLE_VAULT;1.2;AES256;<label>`"
    )]
    UnsupportedHeader(String),
    #[error("vault body is damaged ({0}); re-encrypt the value or restore it from version control")]
    Malformed(&'static str),
    #[error(
        "wrong vault password{}: the HMAC does not match (check --vault-password-file or ANSIBLE_VAULT_PASSWORD_FILE)",
        label.as_ref().map(|l| format!(" for vault-id `{l}`")).unwrap_or_default()
    )]
    WrongPassword { label: Option<String> },
    #[error("vault-id label `{0}` is not allowed: use letters, digits, `_`, `-` or `.`, no `;`")]
    BadLabel(String),
    #[error(
        "`{0}` is not a variable name: start with a letter or `_`, then letters, digits or `_`"
    )]
    BadName(String),
}

/// A parsed envelope: header fields and the three binary parts of the body.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    label: Option<String>,
    salt: Vec<u8>,
    hmac: [u8; 32],
    ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("label", &self.label)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// True when `text` (after leading whitespace) starts like a vault envelope.
pub fn is_vault(text: &str) -> bool {
    text.trim_start().starts_with(MAGIC)
}

/// Encrypt `plaintext` into envelope text (1.1 without a label, 1.2 with one), newline-terminated.
pub fn encrypt(
    plaintext: &[u8],
    password: &VaultSecret,
    label: Option<&str>,
) -> Result<String, VaultError> {
    use rand::RngCore;
    let mut salt = [0u8; SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    Ok(Envelope::seal(plaintext, password, label, &salt)?.to_text())
}

/// Decrypt envelope text (a file's content or a `!vault |` value).
pub fn decrypt(text: &str, password: &VaultSecret) -> Result<Vec<u8>, VaultError> {
    Envelope::parse(text)?.open(password)
}

struct Keys {
    cipher: [u8; 32],
    mac: [u8; 32],
    counter: [u8; 16],
}

fn derive(password: &VaultSecret, salt: &[u8]) -> Keys {
    let mut out = [0u8; 80];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.expose(), salt, ROUNDS, &mut out);
    let mut keys = Keys {
        cipher: [0; 32],
        mac: [0; 32],
        counter: [0; 16],
    };
    keys.cipher.copy_from_slice(&out[..32]);
    keys.mac.copy_from_slice(&out[32..64]);
    keys.counter.copy_from_slice(&out[64..]);
    keys
}

fn mac_of(key: &[u8; 32], ciphertext: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(ciphertext);
    mac
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Envelope {
    /// Encrypt with a caller-chosen salt (tests use fixed salts; [`encrypt`] draws a random one).
    pub fn seal(
        plaintext: &[u8],
        password: &VaultSecret,
        label: Option<&str>,
        salt: &[u8],
    ) -> Result<Self, VaultError> {
        if let Some(label) = label {
            if !valid_label(label) {
                return Err(VaultError::BadLabel(label.to_owned()));
            }
        }
        let keys = derive(password, salt);
        let pad = BLOCK - plaintext.len() % BLOCK;
        let mut data = Vec::with_capacity(plaintext.len() + pad);
        data.extend_from_slice(plaintext);
        data.resize(plaintext.len() + pad, pad as u8);
        Aes256Ctr::new(&keys.cipher.into(), &keys.counter.into()).apply_keystream(&mut data);
        let hmac = mac_of(&keys.mac, &data).finalize().into_bytes().into();
        Ok(Self {
            label: label.map(str::to_owned),
            salt: salt.to_vec(),
            hmac,
            ciphertext: data,
        })
    }

    /// Parse envelope text. Whitespace around and inside the hex body is ignored, so a
    /// `!vault |` block scalar and a file read verbatim both work.
    pub fn parse(text: &str) -> Result<Self, VaultError> {
        let text = text.trim_start();
        let (header, body) = text.split_once('\n').unwrap_or((text, ""));
        let header = header.trim_end();
        let fields: Vec<&str> = header.split(';').collect();
        if fields.first().map(|f| f.trim()) != Some(MAGIC) {
            return Err(VaultError::NotVault);
        }
        let label = match fields.as_slice() {
            [_, "1.1", cipher] if cipher.trim() == "AES256" => None,
            [_, "1.2", cipher, label] if cipher.trim() == "AES256" => Some(label.trim().to_owned()),
            _ => return Err(VaultError::UnsupportedHeader(header.to_owned())),
        };
        let hex_body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let inner = hex::decode(hex_body).map_err(|_| VaultError::Malformed("body is not hex"))?;
        let inner =
            String::from_utf8(inner).map_err(|_| VaultError::Malformed("inner text is not hex"))?;
        let mut parts = inner.split('\n');
        let (Some(salt), Some(hmac), Some(ciphertext), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VaultError::Malformed("expected salt, HMAC and ciphertext"));
        };
        let salt = hex::decode(salt).map_err(|_| VaultError::Malformed("salt is not hex"))?;
        let hmac: [u8; 32] = hex::decode(hmac)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or(VaultError::Malformed("HMAC is not 32 bytes of hex"))?;
        let ciphertext =
            hex::decode(ciphertext).map_err(|_| VaultError::Malformed("ciphertext is not hex"))?;
        if salt.is_empty() {
            return Err(VaultError::Malformed("salt is empty"));
        }
        if ciphertext.is_empty() || ciphertext.len() % BLOCK != 0 {
            return Err(VaultError::Malformed(
                "ciphertext is not a whole number of AES blocks",
            ));
        }
        Ok(Self {
            label,
            salt,
            hmac,
            ciphertext,
        })
    }

    /// The vault-id label of a 1.2 envelope.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// Check the HMAC (constant time), then decrypt and strip the padding.
    pub fn open(&self, password: &VaultSecret) -> Result<Vec<u8>, VaultError> {
        let keys = derive(password, &self.salt);
        let expected = mac_of(&keys.mac, &self.ciphertext).finalize().into_bytes();
        if !bool::from(expected.as_slice().ct_eq(&self.hmac)) {
            return Err(VaultError::WrongPassword {
                label: self.label.clone(),
            });
        }
        let mut data = self.ciphertext.clone();
        Aes256Ctr::new(&keys.cipher.into(), &keys.counter.into()).apply_keystream(&mut data);
        let pad = usize::from(*data.last().ok_or(VaultError::Malformed("empty"))?);
        let padding_ok = (1..=BLOCK).contains(&pad)
            && data[data.len() - pad..]
                .iter()
                .all(|&b| usize::from(b) == pad);
        if !padding_ok {
            return Err(VaultError::Malformed("bad padding after decryption"));
        }
        data.truncate(data.len() - pad);
        Ok(data)
    }

    /// The envelope as ansible-vault writes it: header line, hex body in 80-column lines.
    pub fn to_text(&self) -> String {
        let inner = format!(
            "{}\n{}\n{}",
            hex::encode(&self.salt),
            hex::encode(self.hmac),
            hex::encode(&self.ciphertext)
        );
        let body = hex::encode(inner.as_bytes());
        let mut out = match &self.label {
            Some(label) => format!("{MAGIC};1.2;AES256;{label}\n"),
            None => format!("{MAGIC};1.1;AES256\n"),
        };
        for chunk in body.as_bytes().chunks(LINE_WIDTH) {
            out.push_str(std::str::from_utf8(chunk).expect("hex is ASCII"));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> VaultSecret {
        VaultSecret::new(s.as_bytes().to_vec())
    }

    #[test]
    fn round_trip_1_1_and_1_2() {
        for label in [None, Some("prod")] {
            let text = encrypt(b"hunter2", &pw("pass"), label).unwrap();
            let env = Envelope::parse(&text).unwrap();
            assert_eq!(env.label(), label);
            assert_eq!(decrypt(&text, &pw("pass")).unwrap(), b"hunter2");
        }
    }

    #[test]
    fn wrong_password_is_reported_as_such() {
        let text = encrypt(b"x", &pw("right"), Some("dev")).unwrap();
        let err = decrypt(&text, &pw("wrong")).unwrap_err();
        assert_eq!(
            err,
            VaultError::WrongPassword {
                label: Some("dev".into())
            }
        );
        assert!(err.to_string().contains("vault-id `dev`"));
    }

    #[test]
    fn lines_are_80_columns_and_block_padding_is_full_for_aligned_input() {
        let env = Envelope::seal(&[7u8; 16], &pw("p"), None, &[1; 32]).unwrap();
        assert_eq!(env.ciphertext.len(), 32);
        let text = env.to_text();
        assert!(text.lines().skip(1).all(|l| l.len() <= 80));
        assert!(text.starts_with("$ANSIBLE_VAULT;1.1;AES256\n"));
    }

    #[test]
    fn headers_that_are_not_aes256_are_refused() {
        assert_eq!(Envelope::parse("hello").unwrap_err(), VaultError::NotVault);
        assert!(matches!(
            Envelope::parse("$ANSIBLE_VAULT;1.0;AES\nabcd").unwrap_err(),
            VaultError::UnsupportedHeader(_)
        ));
        assert!(matches!(
            Envelope::parse("$ANSIBLE_VAULT;1.1;AES256\nzz").unwrap_err(),
            VaultError::Malformed(_)
        ));
    }

    #[test]
    fn labels_with_separators_are_refused() {
        assert!(matches!(
            encrypt(b"x", &pw("p"), Some("a;b")),
            Err(VaultError::BadLabel(_))
        ));
    }
}
