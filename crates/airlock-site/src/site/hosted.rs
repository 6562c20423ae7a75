//! `airlock_hosted_projects` and `airlock_robots`: the gateway's `[[hosted]]` projects and
//! the `[[robot]]` accounts CI jobs inside the site push with. Both are lists of mappings read
//! on the primary staging host, like every gateway setting. Each entry is handed to the
//! gateway's own resolver beside the site's proxies and the entries accepted before it, so
//! `render` never writes a project or robot `airlock serve` refuses, and every refusal lands
//! on the line of the entry (or the glob) it is about.

use airlock_ansible::inventory::Var;
use airlock_ansible::yaml::{Mark, Node};
use airlock_config::{Config, Invalid, raw};

use super::reader::{Reader, Scope};
use super::values::is_plain_name;
use super::{Robot, RobotSecret};

const PROJECTS: &str = "airlock_hosted_projects";
const ROBOTS: &str = "airlock_robots";

/// The variables read here, which only the primary staging host's values make.
pub(super) const VARIABLES: [&str; 2] = [PROJECTS, ROBOTS];

/// A well-formed argon2id hash standing in for each robot's while the resolver checks names
/// and scopes: the real hash is made once, by render, since argon2 is slow on purpose.
const STAND_IN_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

/// The gateway config as far as hosted projects and robots need it: the proxies' names
/// (which a project must not take), the `admin` user (whose name a robot must not take),
/// and every entry accepted so far.
struct Gateway {
    config: raw::Config,
}

impl Gateway {
    fn new(proxies: &[String], admin: bool) -> Self {
        let upstream: raw::UpstreamUrl = "https://upstream.invalid"
            .parse()
            .expect("a literal https URL");
        let proxies = proxies
            .iter()
            .map(|name| raw::Proxy::new(name, airlock_config::Format::Oci, upstream.clone()))
            .collect();
        let admin = admin.then(|| raw::Admin {
            users: vec![raw::AdminUser {
                name: "admin".to_owned(),
                password_hash: STAND_IN_HASH.to_owned(),
            }],
            token_ttl: None,
        });
        Self {
            config: raw::Config {
                proxies,
                admin,
                ..raw::Config::default()
            },
        }
    }

    /// Keep `table` when the gateway accepts it beside everything kept before.
    fn add_hosted(&mut self, table: raw::Hosted) -> Result<(), Invalid> {
        self.config.hosted.push(table);
        self.resolve().inspect_err(|_| {
            self.config.hosted.pop();
        })
    }

    /// [`Gateway::add_hosted`] for a robot.
    fn add_robot(&mut self, table: raw::Robot) -> Result<(), Invalid> {
        self.config.robots.push(table);
        self.resolve().inspect_err(|_| {
            self.config.robots.pop();
        })
    }

    fn resolve(&self) -> Result<(), Invalid> {
        Config::from_raw(&self.config).map(drop)
    }
}

/// One mapping of a list variable, its keys already checked.
struct Entry<'a> {
    mark: Mark,
    map: &'a [(Node, Node)],
}

impl<'a> Entry<'a> {
    /// The key and value of `key`; the last wins when it repeats, as in `PyYAML`.
    fn get(&self, key: &str) -> Option<(&'a Node, &'a Node)> {
        self.map
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, v)| (k, v))
    }
}

impl<'a> Reader<'a> {
    /// `[[hosted]]` and the robots, checked beside the gateway's `proxies` and its `admin`
    /// user when it has one.
    pub(super) fn hosted(
        &mut self,
        proxies: &[String],
        admin: bool,
    ) -> (Vec<raw::Hosted>, Vec<Robot>) {
        let mut gateway = Gateway::new(proxies, admin);
        self.projects(&mut gateway);
        let robots = self.robots(&mut gateway);
        (gateway.config.hosted, robots)
    }

    fn projects(&mut self, gateway: &mut Gateway) {
        let example = "`- {name: scout, anonymous_pull: true}`";
        let keys = ["name", "anonymous_pull", "delete"];
        let (_, entries) = self.entries(PROJECTS, &keys, example);
        for entry in entries {
            let Some((name, mark)) = self.entry_name(PROJECTS, &entry, example) else {
                continue;
            };
            let table = raw::Hosted {
                name: name.clone(),
                anonymous_pull: self.entry_flag(PROJECTS, &entry, "anonymous_pull"),
                delete: self.entry_flag(PROJECTS, &entry, "delete"),
            };
            if let Err(e) = gateway.add_hosted(table) {
                self.refused(PROJECTS, &name, mark, &e);
            }
        }
    }

    fn robots(&mut self, gateway: &mut Gateway) -> Vec<Robot> {
        let example = "`- {name: ci, secret: !vault |…, push: [scout/*]}`";
        let keys = ["name", "secret", "push", "pull"];
        let (Some(var), entries) = self.entries(ROBOTS, &keys, example) else {
            return Vec::new();
        };
        let mut robots = Vec::new();
        for entry in entries {
            let Some((name, mark)) = self.entry_name(ROBOTS, &entry, example) else {
                continue;
            };
            if !is_plain_name(&name) {
                self.error(
                    mark,
                    format!("`{ROBOTS}` name `{}` is not a plain name", name.escape_debug()),
                    "use letters, digits, `.`, `-` and `_`: render writes the robot's login to ci/<name>/config.json",
                );
                continue;
            }
            let push = self.globs(&name, &entry, "push");
            let pull = self.globs(&name, &entry, "pull");
            let secret = self.robot_secret(var, &name, &entry);
            let texts = |globs: &[(String, Mark)]| -> Vec<String> {
                globs.iter().map(|(g, _)| g.clone()).collect()
            };
            let table = raw::Robot {
                name: name.clone(),
                secret_hash: STAND_IN_HASH.to_owned(),
                push: texts(&push),
                pull: texts(&pull),
            };
            if let Err(e) = gateway.add_robot(table.clone()) {
                // A refused scope is reported on the glob's own line.
                let at = match &e {
                    Invalid::RobotScope { scope, .. } => push
                        .iter()
                        .chain(&pull)
                        .find(|(g, _)| g == scope)
                        .map_or(mark, |(_, m)| *m),
                    _ => mark,
                };
                self.refused(ROBOTS, &name, at, &e);
                continue;
            }
            if let Some(secret) = secret {
                robots.push(Robot {
                    name,
                    secret,
                    push: table.push,
                    pull: table.pull,
                });
            }
        }
        robots
    }

    /// The mappings listed in `name`; other shapes and keys not in `keys` are diagnostics.
    fn entries(
        &mut self,
        name: &str,
        keys: &[&str],
        example: &str,
    ) -> (Option<&'a Var>, Vec<Entry<'a>>) {
        let Some(var) = self.lookup(Scope::Staging, name) else {
            return (None, Vec::new());
        };
        if var.value.is_null() {
            return (Some(var), Vec::new());
        }
        let Some(items) = var.value.as_seq() else {
            self.error(
                var.mark,
                format!("`{name}` must be a list, found {}", var.value.describe()),
                format!("write one mapping per item, e.g. {example}"),
            );
            return (Some(var), Vec::new());
        };
        let mut entries = Vec::new();
        for item in items {
            let Some(map) = item.as_map() else {
                self.error(
                    item.mark,
                    format!("`{name}` items must be mappings, found {}", item.describe()),
                    format!("write e.g. {example}"),
                );
                continue;
            };
            for (key, _) in map {
                if !key.as_str().is_some_and(|k| keys.contains(&k)) {
                    self.error(
                        key.mark,
                        format!("`{name}` has an unknown key `{key}`"),
                        format!("use only {}", backticked(keys)),
                    );
                }
            }
            entries.push(Entry {
                mark: item.mark,
                map,
            });
        }
        (Some(var), entries)
    }

    /// An entry's `name`, a plain string.
    fn entry_name(
        &mut self,
        var: &str,
        entry: &Entry<'_>,
        example: &str,
    ) -> Option<(String, Mark)> {
        let Some((_, value)) = entry.get("name") else {
            self.error(
                entry.mark,
                format!("an item of `{var}` has no `name`"),
                format!("write e.g. {example}"),
            );
            return None;
        };
        match value.as_str() {
            Some(text) if !text.trim().is_empty() => Some((text.trim().to_owned(), value.mark)),
            _ => {
                self.error(
                    value.mark,
                    format!("`{var}` names must be text, found {}", value.describe()),
                    format!("write e.g. {example}"),
                );
                None
            }
        }
    }

    /// An entry's boolean `key`; `None` when absent (the gateway's default, false).
    fn entry_flag(&mut self, var: &str, entry: &Entry<'_>, key: &str) -> Option<bool> {
        let (_, value) = entry.get(key)?;
        let flag = value.as_bool();
        if flag.is_none() {
            self.error(
                value.mark,
                format!(
                    "`{var}` `{key}` must be true or false, found {}",
                    value.describe()
                ),
                format!("write `{key}: true` or `{key}: false`"),
            );
        }
        flag
    }

    /// A robot's `push` or `pull`: a list of `<project>/<repository glob>`, each with its line.
    fn globs(&mut self, robot: &str, entry: &Entry<'_>, key: &str) -> Vec<(String, Mark)> {
        let Some((_, value)) = entry.get(key) else {
            return Vec::new();
        };
        let help = format!(
            "write e.g. `{key}: [scout/*]`: a project of `{PROJECTS}`, `/`, a repository glob"
        );
        let Some(items) = value.as_seq() else {
            if !value.is_null() {
                self.error(
                    value.mark,
                    format!(
                        "`{ROBOTS}` `{robot}`: `{key}` must be a list, found {}",
                        value.describe()
                    ),
                    help,
                );
            }
            return Vec::new();
        };
        let mut globs = Vec::new();
        for item in items {
            match item.as_str() {
                Some(text) => globs.push((text.trim().to_owned(), item.mark)),
                None => self.error(
                    item.mark,
                    format!(
                        "`{ROBOTS}` `{robot}`: `{key}` must list text, found {}",
                        item.describe()
                    ),
                    help.clone(),
                ),
            }
        }
        globs
    }

    /// A robot's `secret`, decrypted when it is a `!vault` value (as it should be). Trailing
    /// newlines are dropped: `echo … | airlock vault encrypt-string` leaves one, and no login
    /// prompt can send it.
    fn robot_secret(
        &mut self,
        list: &'a Var,
        robot: &str,
        entry: &Entry<'_>,
    ) -> Option<RobotSecret> {
        let help = format!(
            "make one with `airlock vault new-secret --name secret` and paste it under `{robot}`'s `secret:`"
        );
        let Some((key, value)) = entry.get("secret") else {
            self.error(
                entry.mark,
                format!("`{ROBOTS}` `{robot}` has no `secret`"),
                help,
            );
            return None;
        };
        // The value read as a variable of its own, so decryption and its diagnostics (and
        // the promise never to repeat a plaintext) are the reader's usual ones.
        let nested = Var {
            name: ROBOTS.to_owned(),
            value: value.clone(),
            mark: key.mark,
            owner: list.owner.clone(),
        };
        let text = match self.read(&nested) {
            Some(text) => text.trim_end_matches(['\n', '\r']).to_owned(),
            None if value.is_null() => String::new(),
            None => return None,
        };
        if text.is_empty() {
            self.error(
                key.mark,
                format!("`{ROBOTS}` `{robot}`: `secret` is empty"),
                help,
            );
            return None;
        }
        if let Some(kind) = crate::check::placeholder_kind(&text) {
            self.error(
                key.mark,
                format!("`{ROBOTS}` `{robot}`: `secret` is still {kind}"),
                help,
            );
            return None;
        }
        Some(RobotSecret(text))
    }

    /// The gateway resolver's refusal of one entry, on its line.
    fn refused(&mut self, var: &str, name: &str, at: Mark, error: &Invalid) {
        let help = match error {
            Invalid::HostedName { .. } => {
                "use lowercase letters, digits, `-`, `_` and `.`, e.g. `scout`"
            }
            Invalid::HostedNameTaken { .. } => {
                "list each project once, under a name no proxy project (`dockerhub-proxy`, `pypi-proxy`, …) has"
            }
            Invalid::RobotDuplicate { .. } => {
                "list each robot once, under a name other than `admin` (the gateway's admin user)"
            }
            Invalid::RobotScope { .. } => {
                "write `<project>/<repository glob>` with a project of `airlock_hosted_projects`, e.g. `scout/*`"
            }
            _ => "see the gateway's `[[hosted]]` and `[[robot]]` in the README",
        };
        self.error(
            at,
            format!("`{var}` `{name}`: the gateway would refuse it: {error}"),
            help,
        );
    }
}

/// `a`, `b`, `c`: the keys an entry may have, for a help text.
fn backticked(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    quoted.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stand-in must pass the resolver's hash check, or every robot would be refused.
    #[test]
    fn the_stand_in_hash_is_one_the_gateway_accepts() {
        airlock_config::AdminUser::new("ci", STAND_IN_HASH).unwrap();
    }

    #[test]
    fn a_refused_entry_is_not_kept() {
        let mut gateway = Gateway::new(&["dockerhub-proxy".to_owned()], true);
        let project = |name: &str| raw::Hosted {
            name: name.to_owned(),
            ..raw::Hosted::default()
        };
        gateway.add_hosted(project("scout")).unwrap();
        assert!(matches!(
            gateway.add_hosted(project("dockerhub-proxy")),
            Err(Invalid::HostedNameTaken { .. })
        ));
        assert!(matches!(
            gateway.add_hosted(project("scout")),
            Err(Invalid::HostedNameTaken { .. })
        ));
        let robot = |name: &str| raw::Robot {
            name: name.to_owned(),
            secret_hash: STAND_IN_HASH.to_owned(),
            push: vec!["scout/*".to_owned()],
            pull: Vec::new(),
        };
        assert!(matches!(
            gateway.add_robot(robot("admin")),
            Err(Invalid::RobotDuplicate { .. })
        ));
        gateway.add_robot(robot("ci")).unwrap();
        assert_eq!(gateway.config.hosted.len(), 1);
        assert_eq!(gateway.config.robots.len(), 1);
    }
}
