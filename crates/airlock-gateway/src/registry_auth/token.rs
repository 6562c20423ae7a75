//! The registry's tokens: JWTs (HS256) that say who holds them and what they grant, in the
//! claims Docker's token servers write (`access: [{type, name, actions}]`), signed with a
//! key kept in `data_dir` (0600) so tokens outlive a restart. Clients treat them as opaque;
//! only this gateway reads them, so a symmetric key is enough.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use airlock_config::Action;
use airlock_registry::{Grants, SERVICE};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The key file under `data_dir`.
const KEY_FILE: &str = "registry-token.key";
/// The issuer the tokens name.
const ISSUER: &str = "airlock";

/// Issues and checks tokens.
pub(crate) struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: std::time::Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
    access: Vec<Access>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Access {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

/// Why a token was refused (for the 401's message; the client only needs a new one).
#[derive(Debug, thiserror::Error)]
#[error("the token is not valid here ({0}); get a new one from /service/token")]
pub(crate) struct BadToken(String);

impl Tokens {
    /// The key in `data_dir`, made on first start.
    pub(crate) fn load(data_dir: &Path, ttl: std::time::Duration) -> std::io::Result<Self> {
        let path = data_dir.join(KEY_FILE);
        let key = match std::fs::read_to_string(&path) {
            Ok(text) => decode_key(text.trim()).ok_or_else(|| {
                std::io::Error::other(format!(
                    "{} is not a token key (64 hex digits); remove it to make a new one",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                crate::tls::write_private(&path, &hex::encode(key))
                    .map_err(std::io::Error::other)?;
                key.to_vec()
            }
            Err(e) => return Err(e),
        };
        Ok(Self::with_key(&key, ttl))
    }

    fn with_key(key: &[u8], ttl: std::time::Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            ttl,
        }
    }

    pub(crate) fn ttl(&self) -> std::time::Duration {
        self.ttl
    }

    /// A token for `grants`, valid from `now` (Unix seconds) for the configured time.
    pub(crate) fn issue(&self, grants: &Grants, now: u64) -> String {
        let mut access: Vec<Access> = grants
            .repositories
            .iter()
            .map(|(name, actions)| Access {
                kind: "repository".into(),
                name: name.clone(),
                actions: actions.iter().map(|a| a.as_str().to_owned()).collect(),
            })
            .collect();
        if grants.catalog {
            access.push(Access {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: vec!["*".into()],
            });
        }
        let claims = Claims {
            iss: ISSUER.into(),
            sub: grants.subject.clone(),
            aud: SERVICE.into(),
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs(),
            jti: format!("{:032x}", rand::random::<u128>()),
            access,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 over serializable claims does not fail")
    }

    /// The grants of `token`, if it is one of ours, for this service, and not expired.
    pub(crate) fn verify(&self, token: &str) -> Result<Grants, BadToken> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[SERVICE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| BadToken(e.to_string()))?;
        let mut grants = Grants {
            subject: data.claims.sub,
            repositories: BTreeMap::new(),
            catalog: false,
        };
        for access in data.claims.access {
            match access.kind.as_str() {
                "repository" => {
                    let actions: BTreeSet<Action> = access
                        .actions
                        .iter()
                        .filter_map(|a| parse_action(a))
                        .collect();
                    grants
                        .repositories
                        .entry(access.name)
                        .or_default()
                        .extend(actions);
                }
                "registry" if access.name == "catalog" => grants.catalog = true,
                _ => {}
            }
        }
        Ok(grants)
    }
}

pub(crate) fn parse_action(action: &str) -> Option<Action> {
    match action {
        "pull" => Some(Action::Pull),
        "push" => Some(Action::Push),
        "delete" => Some(Action::Delete),
        _ => None,
    }
}

fn decode_key(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok().filter(|key| key.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> Grants {
        Grants {
            subject: "ci".into(),
            repositories: [(
                "lab/app".to_owned(),
                [Action::Pull, Action::Push].into_iter().collect(),
            )]
            .into(),
            catalog: true,
        }
    }

    fn now() -> u64 {
        airlock_store::unix_now()
    }

    #[test]
    fn a_token_carries_its_grants_back() {
        let tokens = Tokens::with_key(&[7; 32], std::time::Duration::from_secs(300));
        let token = tokens.issue(&grants(), now());
        assert_eq!(tokens.verify(&token).unwrap(), grants());
    }

    #[test]
    fn expired_foreign_and_tampered_tokens_are_refused() {
        let ttl = std::time::Duration::from_secs(300);
        let tokens = Tokens::with_key(&[7; 32], ttl);
        let expired = tokens.issue(&grants(), now() - 301);
        assert!(
            tokens
                .verify(&expired)
                .unwrap_err()
                .to_string()
                .contains("Expired")
        );
        let not_yet = tokens.issue(&grants(), now() + 60);
        assert!(tokens.verify(&not_yet).is_err());
        let foreign = Tokens::with_key(&[8; 32], ttl).issue(&grants(), now());
        assert!(tokens.verify(&foreign).is_err());
        // The same claims re-encoded with "alg": "none" and no signature.
        let token = tokens.issue(&grants(), now());
        let payload = token.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(tokens.verify(&none).is_err());
        for junk in ["", "a.b.c", "not a token", &"x".repeat(10_000)] {
            assert!(tokens.verify(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn the_key_is_kept_private_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let ttl = std::time::Duration::from_secs(300);
        let first = Tokens::load(dir.path(), ttl).unwrap();
        let token = first.issue(&grants(), now());
        let again = Tokens::load(dir.path(), ttl).unwrap();
        assert!(again.verify(&token).is_ok(), "a restart keeps tokens valid");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(KEY_FILE), "short").unwrap();
        assert!(Tokens::load(dir.path(), ttl).is_err());
    }
}
