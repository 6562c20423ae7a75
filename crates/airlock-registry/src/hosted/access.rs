//! Who may do what in hosted projects. The gateway establishes the [`Caller`] — nobody, or
//! the bearer of a token it issued at `/service/token` for what the account may do — and
//! the registry checks every request against it. A refusal is a 401 whose Bearer challenge
//! names the scope a token needs, so clients know what to ask for.

use std::collections::{BTreeMap, BTreeSet};

use airlock_config::{Action, HostedConfig};
use http::Method;

use crate::RegistryError;

/// The `service` of the registry's tokens: what challenges name and tokens are issued for.
pub const SERVICE: &str = "airlock";

/// Who is asking, as the gateway established it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Caller {
    /// No token (the challenge tells the client where to get one).
    #[default]
    Anonymous,
    /// An `[admin]` user acting in-process: every action on every project.
    Admin(String),
    /// The bearer of a valid token: what it grants and nothing more.
    Token(Grants),
}

/// What a token grants: its holder (empty for an anonymous token), actions per repository
/// (`<project>/<repo>`), and the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub subject: String,
    pub repositories: BTreeMap<String, BTreeSet<Action>>,
    pub catalog: bool,
}

impl Grants {
    pub fn allows(&self, name: &str, action: Action) -> bool {
        self.repositories
            .get(name)
            .is_some_and(|actions| actions.contains(&action))
    }
}

/// What a 401 asks for: the scope a token must carry, and why the token sent failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    pub scope: Option<String>,
    /// `invalid_token` or `insufficient_scope` (RFC 6750), when a token was sent.
    pub error: Option<&'static str>,
}

impl Challenge {
    /// The `WWW-Authenticate` value without its realm, which the gateway adds (it knows
    /// the address the client used): `Bearer service="airlock",scope="…",error="…"`.
    pub fn header(&self) -> String {
        let scope = self
            .scope
            .as_ref()
            .map(|scope| format!(",scope=\"{scope}\""));
        let error = self.error.map(|error| format!(",error=\"{error}\""));
        format!(
            "Bearer service=\"{SERVICE}\"{}{}",
            scope.unwrap_or_default(),
            error.unwrap_or_default()
        )
    }
}

/// The action a request with `method` makes of a repository; DELETE of a manifest or tag
/// is [`Action::Delete`], every other write (uploads included) [`Action::Push`].
pub(crate) fn action(method: &Method, deletes_content: bool) -> Action {
    match *method {
        Method::GET | Method::HEAD => Action::Pull,
        Method::DELETE if deletes_content => Action::Delete,
        _ => Action::Push,
    }
}

/// Whether `caller` may do `action` on `name` (`<project>/<repo>`) of `project`:
/// anonymous pulls where the project allows them, anything for an admin, what a token
/// grants for its bearer.
pub(crate) fn allowed(project: &HostedConfig, name: &str, action: Action, caller: &Caller) -> bool {
    if action == Action::Pull && project.anonymous_pull {
        return true;
    }
    match caller {
        Caller::Admin(_) => true,
        Caller::Token(grants) => grants.allows(name, action),
        Caller::Anonymous => false,
    }
}

/// [`allowed`], or the 401 that tells the client which token to fetch.
pub(crate) fn authorize(
    project: &HostedConfig,
    name: &str,
    action: Action,
    caller: &Caller,
) -> Result<(), RegistryError> {
    if allowed(project, name, action, caller) {
        return Ok(());
    }
    let actions = match action {
        Action::Pull => "pull",
        Action::Push => "pull,push",
        Action::Delete => "delete",
    };
    let (why, error) = match caller {
        Caller::Token(grants) => (
            format!(
                "the token of {:?} does not allow {} on {name}",
                grants.subject,
                action.as_str()
            ),
            Some("insufficient_scope"),
        ),
        _ => (
            format!(
                "{} {name} needs a token from /service/token (docker login, skopeo login)",
                action.as_str()
            ),
            None,
        ),
    };
    Err(RegistryError::LoginRequired {
        why,
        challenge: Challenge {
            scope: Some(format!("repository:{name}:{actions}")),
            error,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(anonymous_pull: bool) -> HostedConfig {
        HostedConfig {
            name: "lab".into(),
            anonymous_pull,
            delete: true,
        }
    }

    fn token(name: &str, actions: &[Action]) -> Caller {
        Caller::Token(Grants {
            subject: "ci".into(),
            repositories: [(name.to_owned(), actions.iter().copied().collect())].into(),
            catalog: false,
        })
    }

    #[test]
    fn tokens_allow_what_they_grant_and_anonymous_pulls_where_open() {
        let push = token("lab/app", &[Action::Pull, Action::Push]);
        assert!(allowed(&project(false), "lab/app", Action::Push, &push));
        assert!(!allowed(&project(false), "lab/other", Action::Push, &push));
        assert!(!allowed(&project(false), "lab/app", Action::Delete, &push));
        assert!(!allowed(
            &project(false),
            "lab/app",
            Action::Pull,
            &Caller::Anonymous
        ));
        assert!(allowed(
            &project(true),
            "lab/app",
            Action::Pull,
            &Caller::Anonymous
        ));
        assert!(!allowed(
            &project(true),
            "lab/app",
            Action::Push,
            &Caller::Anonymous
        ));
        assert!(allowed(
            &project(false),
            "lab/x",
            Action::Delete,
            &Caller::Admin("a".into())
        ));
    }

    #[test]
    fn refusals_challenge_for_the_scope_needed() {
        let Err(RegistryError::LoginRequired { challenge, .. }) =
            authorize(&project(false), "lab/app", Action::Push, &Caller::Anonymous)
        else {
            panic!("allowed");
        };
        assert_eq!(
            challenge.header(),
            "Bearer service=\"airlock\",scope=\"repository:lab/app:pull,push\""
        );
        let pull_only = token("lab/app", &[Action::Pull]);
        let Err(RegistryError::LoginRequired { challenge, why }) =
            authorize(&project(false), "lab/app", Action::Push, &pull_only)
        else {
            panic!("allowed");
        };
        assert_eq!(challenge.error, Some("insufficient_scope"));
        assert!(why.contains("\"ci\""), "{why}");
    }
}
