//! Checksums an upstream publishes next to a file (Maven's `.sha512`/`.sha256`/`.sha1`), and
//! hashing a download against one while it streams into the store.

use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha512};

/// A hash algorithm an upstream may publish a checksum in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The file extension of a checksum file (`sha1`, `sha256`, `sha512`).
    pub fn extension(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 40,
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A checksum a file must match: algorithm and lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub hex: String,
}

impl Checksum {
    /// Reads a checksum file: the hex value alone, `<hex>  <file name>` (sha1sum style), or
    /// `SHA1(<file>)= <hex>` (openssl style). Anything else is an error.
    pub fn parse(algorithm: Algorithm, text: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(text)
            .map_err(|_| format!("the .{} file is not text", algorithm.extension()))?;
        let is_value = |token: &&str| {
            token.len() == algorithm.hex_len() && token.bytes().all(|b| b.is_ascii_hexdigit())
        };
        let mut tokens = text.split_whitespace();
        let value = tokens
            .next()
            .filter(is_value)
            .or_else(|| text.split_whitespace().last().filter(is_value))
            .ok_or_else(|| {
                format!(
                    "the .{} file holds no {}-digit hex value",
                    algorithm.extension(),
                    algorithm.hex_len()
                )
            })?;
        Ok(Self {
            algorithm,
            hex: value.to_ascii_lowercase(),
        })
    }
}

/// Hashes bytes as they arrive, in one of the [`Algorithm`]s.
pub enum Hasher {
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The lowercase hex of everything hashed.
    pub fn finish(self) -> String {
        match self {
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_files() {
        let sha1 = "a9993e364706816aba3e25717850c26c9cd0d89d";
        for text in [
            sha1.to_owned(),
            format!("{sha1}\n"),
            format!("{}  abc.jar\n", sha1.to_uppercase()),
            format!("SHA1(abc.jar)= {sha1}\n"),
        ] {
            let parsed = Checksum::parse(Algorithm::Sha1, text.as_bytes()).unwrap();
            assert_eq!(parsed.hex, sha1, "{text:?}");
        }
        for bad in ["", "abc", "<html>not found</html>", &sha1[1..]] {
            assert!(
                Checksum::parse(Algorithm::Sha1, bad.as_bytes()).is_err(),
                "{bad:?}"
            );
        }
        assert!(Checksum::parse(Algorithm::Sha256, sha1.as_bytes()).is_err());
    }

    #[test]
    fn hashers() {
        let hash = |algorithm| {
            let mut h = Hasher::new(algorithm);
            h.update(b"a");
            h.update(b"bc");
            h.finish()
        };
        assert_eq!(
            hash(Algorithm::Sha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hash(Algorithm::Sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(hash(Algorithm::Sha512).starts_with("ddaf35a193617aba"));
    }
}
