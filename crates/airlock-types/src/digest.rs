//! Content digests (`sha256:<hex>`) and streaming verification.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A content digest. Only `sha256` is accepted: it is what every registry and index
/// we proxy publishes, and refusing the rest keeps verification total.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form sha256:<64 lowercase hex digits>")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (only sha256)")]
    Unsupported(String),
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The 64 hex digits, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// A sha256 digest from its 64 lowercase hex digits (as indexes and checksum files
    /// publish it, without the `sha256:` prefix).
    pub fn sha256_hex(hex: &str) -> Result<Self, DigestError> {
        format!("sha256:{hex}").parse()
    }

    /// Builds a digest from raw hash output.
    pub fn from_sha256(bytes: [u8; 32]) -> Self {
        Self {
            hex: hex::encode(bytes),
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError::Malformed(s.to_owned()));
        };
        if algorithm != "sha256" {
            let known = !algorithm.is_empty()
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
            return Err(if known {
                DigestError::Unsupported(algorithm.to_owned())
            } else {
                DigestError::Malformed(s.to_owned())
            });
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::Malformed(s.to_owned()));
        }
        Ok(Self {
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes bytes as they stream past and says at the end whether they matched.
#[derive(Clone)]
pub struct Sha256Verifier {
    hasher: Sha256,
    len: u64,
}

impl Default for Sha256Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Verifier {
    pub fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            len: 0,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest::from_sha256(self.hasher.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        assert_eq!(EMPTY.parse::<Digest>().unwrap(), Digest::of(b""));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/..",
            "sha256:../../../../etc/passwd",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
        assert_eq!(
            "sha512:abcd".parse::<Digest>(),
            Err(DigestError::Unsupported("sha512".into()))
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = s.parse::<Digest>();
        }

        #[test]
        fn streaming_matches_one_shot(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut verifier = Sha256Verifier::new();
            let mut all = Vec::new();
            for chunk in &chunks {
                verifier.update(chunk);
                all.extend_from_slice(chunk);
            }
            prop_assert_eq!(verifier.len(), all.len() as u64);
            prop_assert_eq!(verifier.finish(), Digest::of(&all));
        }
    }
}
