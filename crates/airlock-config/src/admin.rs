//! `[admin]`: the accounts of the admin API, each a name and a PHC argon2id password hash
//! (`airlock admin hash-password` makes one). The hash is parsed once, at load time, so a
//! mistyped or foreign hash (bcrypt, argon2i, plain text) fails `airlock config check`
//! instead of every login.
//!
//! Verifying a password is deliberately slow (argon2id's memory-hard work, ~20 MiB and tens
//! of milliseconds with the default parameters): callers in async code run
//! [`AdminUser::verify`] on a blocking thread.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHashString, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHasher};

use crate::raw;
use crate::resolve::Invalid;

/// The PHC algorithm identifier accepted in `password_hash`.
const ARGON2ID: &str = "argon2id";

/// One admin account.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminUser {
    pub name: String,
    hash: PasswordHashString,
}

impl std::fmt::Debug for AdminUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl AdminUser {
    /// Parses a `[admin] users` entry: a name a basic-auth header can carry and a PHC
    /// argon2id hash with parameters argon2 accepts.
    pub fn new(name: &str, password_hash: &str) -> Result<Self, Invalid> {
        if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
            return Err(Invalid::AdminName {
                name: name.to_owned(),
            });
        }
        let bad = |reason: String| Invalid::AdminHash {
            user: name.to_owned(),
            reason,
        };
        let parsed = PasswordHash::new(password_hash).map_err(|e| {
            bad(format!(
                "it is not a PHC string ({e}); expected \"$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>\""
            ))
        })?;
        if parsed.algorithm.as_str() != ARGON2ID {
            return Err(bad(format!(
                "its algorithm is {:?}, not argon2id",
                parsed.algorithm.as_str()
            )));
        }
        if parsed.salt.is_none() || parsed.hash.is_none() {
            return Err(bad("it has no salt or no hash part".to_owned()));
        }
        argon2::Params::try_from(&parsed)
            .map_err(|e| bad(format!("its parameters are not usable: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            hash: parsed.serialize(),
        })
    }

    /// The PHC string, as written in the file.
    pub fn password_hash(&self) -> &str {
        self.hash.as_str()
    }

    /// Whether `password` is this user's. Slow on purpose: call it off the async threads.
    pub fn verify(&self, password: &[u8]) -> bool {
        let hash = self.hash.password_hash();
        Argon2::default().verify_password(password, &hash).is_ok()
    }

    pub(crate) fn to_raw(&self) -> raw::AdminUser {
        raw::AdminUser {
            name: self.name.clone(),
            password_hash: self.password_hash().to_owned(),
        }
    }
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the password is empty")]
    Empty,
    #[error("hashing the password failed: {0}")]
    Argon2(String),
}

/// A PHC argon2id hash of `password` with a fresh random salt and argon2's default
/// parameters (19 MiB, 2 passes, 1 lane: OWASP's recommended minimum).
pub fn hash_password(password: &[u8]) -> Result<String, HashError> {
    if password.is_empty() {
        return Err(HashError::Empty);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Argon2(e.to_string()))
}

/// The PHC argon2id hash of `password` with a salt derived from `context` and the password
/// itself, for configuration files that are rendered again and again (`airlock render`):
/// the same inputs give the same file, so a re-deploy changes nothing, while two sites (or
/// two users) with the same password still get different salts through `context`.
pub fn hash_password_stable(password: &[u8], context: &str) -> Result<String, HashError> {
    if password.is_empty() {
        return Err(HashError::Empty);
    }
    let mut seed = b"airlock admin salt\0".to_vec();
    seed.extend_from_slice(context.as_bytes());
    seed.push(0);
    seed.extend_from_slice(password);
    let digest = airlock_types::Digest::of(&seed);
    // 32 hex digits of the digest: 128 bits, as argon2's own random salts.
    let salt = SaltString::encode_b64(&digest.hex().as_bytes()[..32])
        .map_err(|e| HashError::Argon2(e.to_string()))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Argon2(e.to_string()))
}

/// Resolves `[admin]`: every user parsed, names unique.
pub(crate) fn resolve(raw: Option<&raw::Admin>) -> Result<Vec<AdminUser>, Invalid> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let mut users: Vec<AdminUser> = Vec::with_capacity(raw.users.len());
    for user in &raw.users {
        let user = AdminUser::new(&user.name, &user.password_hash)?;
        if users.iter().any(|u| u.name == user.name) {
            return Err(Invalid::AdminDuplicate { name: user.name });
        }
        users.push(user);
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password(b"correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        let user = AdminUser::new("admin", &hash).unwrap();
        assert!(user.verify(b"correct horse"));
        assert!(!user.verify(b"correct hors"));
        assert!(!user.verify(b""));
        assert_eq!(user.password_hash(), hash);
    }

    #[test]
    fn empty_passwords_are_refused() {
        assert!(matches!(hash_password(b""), Err(HashError::Empty)));
        assert!(matches!(
            hash_password_stable(b"", "site"),
            Err(HashError::Empty)
        ));
    }

    #[test]
    fn stable_hashes_repeat_for_the_same_site_and_differ_between_sites() {
        let once = hash_password_stable(b"correct horse", "staging.example.edu/admin").unwrap();
        let again = hash_password_stable(b"correct horse", "staging.example.edu/admin").unwrap();
        let other = hash_password_stable(b"correct horse", "other.example.edu/admin").unwrap();
        assert_eq!(once, again);
        assert_ne!(once, other);
        let user = AdminUser::new("admin", &once).unwrap();
        assert!(user.verify(b"correct horse"));
        assert!(!user.verify(b"correct horsE"));
    }

    #[test]
    fn foreign_and_broken_hashes_are_refused() {
        let argon2i =
            "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let bcrypt = "$2b$12$abcdefghijklmnopqrstuuJ2dD1uRz3V4R2HFiT/tA5rG0uTc3H1W";
        let good = hash_password(b"pw").unwrap();
        let no_hash = good.rsplit_once('$').unwrap().0.to_owned();
        let zero_passes = good.replace(",t=2,", ",t=0,");
        for (hash, says) in [
            ("hunter2", "not a PHC string"),
            ("", "not a PHC string"),
            (bcrypt, "not a PHC string"),
            (argon2i, "not argon2id"),
            (no_hash.as_str(), "no salt or no hash"),
            (zero_passes.as_str(), "parameters are not usable"),
        ] {
            let Err(err) = AdminUser::new("admin", hash) else {
                panic!("{hash:?} was accepted");
            };
            let err = err.to_string();
            assert!(err.contains(says), "{hash:?}: {err}");
            assert!(err.contains("admin"), "{err}");
        }
    }

    #[test]
    fn names_must_fit_basic_auth() {
        let hash = hash_password(b"pw").unwrap();
        for name in ["", "a:b", "a\nb"] {
            assert!(
                matches!(AdminUser::new(name, &hash), Err(Invalid::AdminName { .. })),
                "{name:?}"
            );
        }
    }
}
