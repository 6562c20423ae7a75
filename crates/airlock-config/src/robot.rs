//! `[[robot]]`: accounts for machines (CI pushing the site's own images), each a name, an
//! argon2id hash of its secret, and the hosted repositories it may pull from and push to,
//! as globs `<project>/<repository glob>` (`scout/*`, `scout/tools/app`). Push implies pull.
//! A robot logs in where an `[admin]` user does (`/service/token`) and gets a token for
//! what its globs allow, nothing else: no deletes, no catalog, no admin API.

use airlock_policy::Glob;

use crate::admin::AdminUser;
use crate::raw;
use crate::resolve::Invalid;

/// One `[[robot]]` account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Robot {
    /// The name and the checked hash of the secret, verified as an admin user's password.
    login: AdminUser,
    pull: Vec<Glob>,
    push: Vec<Glob>,
}

/// What a caller asks to do with a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    /// The action as Docker token scopes write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

impl Robot {
    pub fn name(&self) -> &str {
        &self.login.name
    }

    /// Whether `secret` is this robot's. Slow on purpose (argon2id): call it off the async
    /// threads.
    pub fn verify(&self, secret: &[u8]) -> bool {
        self.login.verify(secret)
    }

    /// Whether the robot may do `action` on the hosted repository `name`
    /// (`<project>/<repo>`).
    pub fn allows(&self, name: &str, action: Action) -> bool {
        let matches = |globs: &[Glob]| globs.iter().any(|glob| glob.matches(name));
        match action {
            Action::Pull => matches(&self.pull) || matches(&self.push),
            Action::Push => matches(&self.push),
            Action::Delete => false,
        }
    }

    pub(crate) fn to_raw(&self) -> raw::Robot {
        let written = |globs: &[Glob]| globs.iter().map(|g| g.as_str().to_owned()).collect();
        raw::Robot {
            name: self.login.name.clone(),
            secret_hash: self.login.password_hash().to_owned(),
            pull: written(&self.pull),
            push: written(&self.push),
        }
    }
}

/// Resolves `[[robot]]`: names unique and distinct from `[admin]` users' (a token names
/// its holder), hashes parsed, every glob inside a hosted project `is_project` knows.
pub(crate) fn resolve(
    raw: &[raw::Robot],
    admins: &[AdminUser],
    is_project: impl Fn(&str) -> bool,
) -> Result<Vec<Robot>, Invalid> {
    let mut robots: Vec<Robot> = Vec::with_capacity(raw.len());
    for table in raw {
        let name = &table.name;
        let login = AdminUser::new(name, &table.secret_hash).map_err(|e| match e {
            Invalid::AdminHash { reason, .. } => Invalid::RobotHash {
                name: name.clone(),
                reason,
            },
            _ => Invalid::RobotName { name: name.clone() },
        })?;
        if robots.iter().any(|r| r.name() == name) || admins.iter().any(|a| &a.name == name) {
            return Err(Invalid::RobotDuplicate { name: name.clone() });
        }
        let globs = |written: &[String]| -> Result<Vec<Glob>, Invalid> {
            written
                .iter()
                .map(|text| {
                    scope(text, &is_project).map_err(|why| Invalid::RobotScope {
                        name: name.clone(),
                        scope: text.clone(),
                        why,
                    })
                })
                .collect()
        };
        robots.push(Robot {
            login,
            pull: globs(&table.pull)?,
            push: globs(&table.push)?,
        });
    }
    Ok(robots)
}

/// One scope glob: a hosted project's name, a '/', and a repository glob.
fn scope(text: &str, is_project: impl Fn(&str) -> bool) -> Result<Glob, String> {
    let Some((project, repo)) = text.split_once('/') else {
        return Err("write <project>/<repository glob>, e.g. \"scout/*\"".into());
    };
    if !is_project(project) {
        return Err(format!("{project:?} is not a [[hosted]] project"));
    }
    if repo.is_empty() {
        return Err("the repository glob after '/' is empty (\"*\" means every one)".into());
    }
    Glob::repository(text).ok_or_else(|| {
        "the repository glob may hold lowercase letters, digits, '.', '_', '-', '/', '*' and '?'"
            .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn robot(pull: &[&str], push: &[&str]) -> Result<Vec<Robot>, Invalid> {
        let table = raw::Robot {
            name: "ci".into(),
            secret_hash: crate::hash_password(b"s3cret").unwrap(),
            pull: pull.iter().map(|&s| s.to_owned()).collect(),
            push: push.iter().map(|&s| s.to_owned()).collect(),
        };
        resolve(&[table], &[], |p| p == "scout" || p == "lab")
    }

    #[test]
    fn push_implies_pull_and_globs_stay_inside_their_project() {
        let robot = robot(&["lab/base"], &["scout/*"]).unwrap().remove(0);
        assert!(robot.allows("scout/tools/app", Action::Push));
        assert!(robot.allows("scout/app", Action::Pull));
        assert!(robot.allows("lab/base", Action::Pull));
        assert!(!robot.allows("lab/base", Action::Push));
        assert!(!robot.allows("lab/other", Action::Pull));
        assert!(!robot.allows("scoutx/app", Action::Push));
        assert!(!robot.allows("scout/app", Action::Delete));
        assert!(robot.verify(b"s3cret"));
        assert!(!robot.verify(b"s3cre"));
        assert_eq!(robot.to_raw().push, ["scout/*"]);
    }

    #[test]
    fn scopes_name_a_hosted_project_and_a_repository_glob() {
        for (bad, says) in [
            ("scout", "<project>/<repository glob>"),
            ("nope/*", "not a [[hosted]] project"),
            ("*/*", "not a [[hosted]] project"),
            ("scout/", "empty"),
            ("scout/App", "lowercase"),
        ] {
            let Err(e) = robot(&[], &[bad]) else {
                panic!("{bad:?} was accepted");
            };
            let e = e.to_string();
            assert!(e.contains(says) && e.contains("ci"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn names_are_unique_among_robots_and_admins() {
        let hash = crate::hash_password(b"pw").unwrap();
        let table = raw::Robot {
            name: "admin".into(),
            secret_hash: hash.clone(),
            pull: vec![],
            push: vec![],
        };
        let admin = AdminUser::new("admin", &hash).unwrap();
        let taken = resolve(std::slice::from_ref(&table), &[admin], |_| true);
        assert!(matches!(taken, Err(Invalid::RobotDuplicate { .. })));
        let twice = resolve(&[table.clone(), table.clone()], &[], |_| true);
        assert!(matches!(twice, Err(Invalid::RobotDuplicate { .. })));
        let bad_hash = raw::Robot {
            secret_hash: "hunter2".into(),
            ..table
        };
        let e = resolve(&[bad_hash], &[], |_| true).unwrap_err().to_string();
        assert!(
            e.contains("[[robot]] admin") && e.contains("secret_hash"),
            "{e}"
        );
    }
}
