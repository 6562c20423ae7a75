//! ansible-vault: the `$ANSIBLE_VAULT;1.1;AES256` / `1.2` envelope, files and `!vault |` strings.
//!
//! Format (ansible `parsing/vault/__init__.py`, `VaultAES256`):
//! ```text
//! $ANSIBLE_VAULT;1.1;AES256            (1.2 adds ";<vault-id label>")
//! hex( hex(salt) "\n" hex(hmac) "\n" hex(ciphertext) )   wrapped at 80 columns
//! ```
//! Keys: PBKDF2-HMAC-SHA256(password, salt, 10 000 rounds) → 80 bytes = AES key (32) ‖
//! HMAC key (32) ‖ CTR initial counter (16). The plaintext is PKCS#7-padded to 16 bytes,
//! encrypted with AES-256-CTR, and the HMAC-SHA256 covers the ciphertext. The HMAC is checked
//! in constant time before anything is decrypted.

mod envelope;
pub mod file;
mod password;

pub use envelope::{Envelope, VaultError, decrypt, encrypt, is_vault};

/// A name Ansible accepts as a variable: a letter or `_`, then letters, digits or `_`.
pub fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
pub use password::{PasswordError, VaultSecret};

/// A YAML snippet ready to paste into an inventory: `name: !vault |` and the indented envelope,
/// the same shape `ansible-vault encrypt_string --name` prints.
pub fn encrypt_string_snippet(
    name: &str,
    secret: &[u8],
    password: &VaultSecret,
    label: Option<&str>,
) -> Result<String, VaultError> {
    if !is_variable_name(name) {
        return Err(VaultError::BadName(name.to_owned()));
    }
    let envelope = encrypt(secret, password, label)?;
    let mut out = format!("{name}: !vault |\n");
    for line in envelope.lines() {
        out.push_str("          ");
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// A fresh random secret: 32 random bytes as 64 lowercase hex characters
/// (what `openssl rand -hex 32` prints, without the newline).
pub fn random_hex_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A vault-decrypted value: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Known(String),
    /// Vault-encrypted, and no vault password was given.
    Locked,
}

impl Secret {
    /// The plaintext; empty when locked (callers check [`Secret::is_locked`] first).
    pub fn expose(&self) -> &str {
        match self {
            Secret::Known(text) => text,
            Secret::Locked => "",
        }
    }

    pub fn is_locked(&self) -> bool {
        matches!(self, Secret::Locked)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Known(_) => f.write_str("Secret(<redacted>)"),
            Secret::Locked => f.write_str("Secret(<vault-encrypted>)"),
        }
    }
}
