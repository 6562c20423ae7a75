//! Ansible's YAML inventory: groups with `hosts`, `vars` and `children`, host variables, and
//! the precedence Ansible applies (`all` < parent groups < child groups < host).
//!
//! Groups of equal depth apply in name order, as Ansible sorts them; a host listed in several
//! places keeps every variable given to it, later ones winning. Structural problems become
//! [`Diagnostic`]s with the line they are on; parsing goes on past them so one run reports all.

mod diagnostic;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Severity, sort as sort_diagnostics};

use crate::vault::{VaultError, VaultSecret};
use crate::yaml::{self, Kind, Mark, Node, YamlError};

/// Why an inventory could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}\n  help: fix the YAML syntax at that position")]
    Yaml(#[from] YamlError),
    #[error(
        "inventory {} is vault-encrypted: pass --vault-password-file FILE or set ANSIBLE_VAULT_PASSWORD_FILE",
        path.display()
    )]
    Encrypted { path: PathBuf },
    #[error("cannot decrypt inventory {}: {source}", path.display())]
    Vault { path: PathBuf, source: VaultError },
    #[error("inventory {} is not UTF-8 text", path.display())]
    NotText { path: PathBuf },
}

/// A variable as written: its name, its value, where it is, and who set it.
#[derive(Debug, Clone, PartialEq)]
pub struct Var {
    pub name: String,
    pub value: Node,
    /// Position of the key (a block scalar's value starts on the next line).
    pub mark: Mark,
    pub owner: Owner,
}

/// Which group or host a variable belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Group(String),
    Host(String),
}

/// A group: its own variables, its direct hosts and child groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub mark: Mark,
    pub vars: Vec<Var>,
    pub hosts: Vec<String>,
    pub children: Vec<String>,
}

/// A host and the variables set on it directly.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub mark: Mark,
    pub vars: Vec<Var>,
}

/// A parsed inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub file: PathBuf,
    groups: Vec<Group>,
    group_index: HashMap<String, usize>,
    hosts: Vec<Host>,
    host_index: HashMap<String, usize>,
    /// `-e KEY=VALUE` on the command line: above everything the file sets.
    extra: Vec<Var>,
    /// Structural problems found while reading.
    pub diagnostics: Vec<Diagnostic>,
}

impl Inventory {
    /// Read and parse an inventory file; a wholly vault-encrypted file (which Ansible also
    /// reads) is decrypted with `secret` first.
    pub fn load(path: &Path, secret: Option<&VaultSecret>) -> Result<Self, InventoryError> {
        let bytes = std::fs::read(path).map_err(|source| InventoryError::Read {
            path: path.to_owned(),
            source,
        })?;
        let not_text = || InventoryError::NotText {
            path: path.to_owned(),
        };
        let mut text = String::from_utf8(bytes).map_err(|_| not_text())?;
        if crate::vault::is_vault(&text) {
            let secret = secret.ok_or_else(|| InventoryError::Encrypted {
                path: path.to_owned(),
            })?;
            let plain =
                crate::vault::decrypt(&text, secret).map_err(|source| InventoryError::Vault {
                    path: path.to_owned(),
                    source,
                })?;
            text = String::from_utf8(plain).map_err(|_| not_text())?;
        }
        Self::parse_str(&text, path)
    }

    /// Parse inventory text; `file` names it in diagnostics.
    pub fn parse_str(text: &str, file: &Path) -> Result<Self, InventoryError> {
        let doc = yaml::parse_str(text, file)?;
        let mut inventory = Self {
            file: file.to_owned(),
            groups: Vec::new(),
            group_index: HashMap::new(),
            hosts: Vec::new(),
            host_index: HashMap::new(),
            extra: Vec::new(),
            diagnostics: Vec::new(),
        };
        inventory.group_mut("all", Mark { line: 1, col: 1 });
        match &doc.root.kind {
            Kind::Map(entries) => {
                for (key, value) in entries {
                    let Some(name) = inventory.name_of(key, "group") else {
                        continue;
                    };
                    inventory.read_group(&name, key.mark, value, None);
                }
            }
            _ if doc.root.is_null() => inventory.error(
                1,
                "the inventory is empty",
                "start it with `all:` and the groups `staging`, `server`, `workers`, `agents`, `k3s_cluster`",
            ),
            _ => inventory.error(
                doc.root.mark.line,
                format!("the inventory must be a mapping of groups, found {}", doc.root.describe()),
                "write it in Ansible's YAML inventory format: `all:` then groups with `hosts:`, `vars:` and `children:`",
            ),
        }
        Ok(inventory)
    }

    fn error(&mut self, line: usize, message: impl Into<String>, help: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::error(&self.file, line, message, help));
    }

    fn name_of(&mut self, key: &Node, what: &str) -> Option<String> {
        match key.as_str() {
            Some(name) if !name.trim().is_empty() => Some(name.to_owned()),
            _ => {
                self.error(
                    key.mark.line,
                    format!(
                        "a {what} name must be a non-empty string, found {}",
                        key.describe()
                    ),
                    format!("write the {what} name as a plain key"),
                );
                None
            }
        }
    }

    fn group_mut(&mut self, name: &str, mark: Mark) -> &mut Group {
        let index = if let Some(&i) = self.group_index.get(name) {
            i
        } else {
            self.groups.push(Group {
                name: name.to_owned(),
                mark,
                vars: Vec::new(),
                hosts: Vec::new(),
                children: Vec::new(),
            });
            self.group_index
                .insert(name.to_owned(), self.groups.len() - 1);
            self.groups.len() - 1
        };
        &mut self.groups[index]
    }

    fn host_mut(&mut self, name: &str, mark: Mark) -> &mut Host {
        let index = if let Some(&i) = self.host_index.get(name) {
            i
        } else {
            self.hosts.push(Host {
                name: name.to_owned(),
                mark,
                vars: Vec::new(),
            });
            self.host_index
                .insert(name.to_owned(), self.hosts.len() - 1);
            self.hosts.len() - 1
        };
        &mut self.hosts[index]
    }

    fn read_group(&mut self, name: &str, mark: Mark, node: &Node, parent: Option<&str>) {
        self.group_mut(name, mark);
        if let Some(parent) = parent {
            if name == "all" {
                self.error(
                    mark.line,
                    "`all` cannot be a child group",
                    "every group is already inside `all`; remove this entry",
                );
            } else if self.reaches(name, parent) {
                self.error(
                    mark.line,
                    format!("group `{name}` would contain itself through `{parent}`"),
                    "remove one of the `children:` entries that form the cycle",
                );
            } else {
                let parent_group = self.group_mut(parent, mark);
                if !parent_group.children.iter().any(|c| c == name) {
                    parent_group.children.push(name.to_owned());
                }
            }
        }
        if node.is_null() {
            return;
        }
        let Some(entries) = node.as_map() else {
            self.error(
                node.mark.line,
                format!(
                    "group `{name}` must be a mapping, found {}",
                    node.describe()
                ),
                "a group holds `hosts:`, `vars:` and `children:`",
            );
            return;
        };
        for (key, value) in entries {
            match key.as_str() {
                Some("hosts") => self.read_hosts(name, value),
                Some("vars") => {
                    let vars = self.read_vars(value, &Owner::Group(name.to_owned()), "vars");
                    self.group_mut(name, mark).vars.extend(vars);
                }
                Some("children") => self.read_children(name, value),
                other => self.error(
                    key.mark.line,
                    format!(
                        "unknown key `{}` in group `{name}`",
                        other.unwrap_or("<non-string>")
                    ),
                    format!(
                        "a group has only `hosts`, `vars` and `children`; to set a variable, put it under `{name}: vars:`"
                    ),
                ),
            }
        }
    }

    fn read_hosts(&mut self, group: &str, node: &Node) {
        if node.is_null() {
            return;
        }
        let Some(entries) = node.as_map() else {
            self.error(
                node.mark.line,
                format!(
                    "`{group}.hosts` must be a mapping of host names, found {}",
                    node.describe()
                ),
                "write each host as a key: `hosts:` then `  node1.example.edu:`",
            );
            return;
        };
        for (key, value) in entries {
            let Some(host) = self.name_of(key, "host") else {
                continue;
            };
            if host.contains('[') && host.contains(':') && host.contains(']') {
                self.error(
                    key.mark.line,
                    format!("host range `{host}` is not supported"),
                    "list each host on its own line",
                );
                continue;
            }
            self.host_mut(&host, key.mark);
            let group_entry = self.group_mut(group, key.mark);
            if !group_entry.hosts.contains(&host) {
                group_entry.hosts.push(host.clone());
            }
            let vars = self.read_vars(value, &Owner::Host(host.clone()), "host");
            self.host_mut(&host, key.mark).vars.extend(vars);
        }
    }

    fn read_children(&mut self, group: &str, node: &Node) {
        if node.is_null() {
            return;
        }
        let Some(entries) = node.as_map() else {
            self.error(
                node.mark.line,
                format!(
                    "`{group}.children` must be a mapping of group names, found {}",
                    node.describe()
                ),
                "write each child group as a key: `children:` then `  workers:`",
            );
            return;
        };
        for (key, value) in entries {
            if let Some(child) = self.name_of(key, "group") {
                self.read_group(&child, key.mark, value, Some(group));
            }
        }
    }

    fn read_vars(&mut self, node: &Node, owner: &Owner, what: &str) -> Vec<Var> {
        if node.is_null() {
            return Vec::new();
        }
        let Some(entries) = node.as_map() else {
            self.error(
                node.mark.line,
                format!(
                    "{what} variables must be a mapping, found {}",
                    node.describe()
                ),
                "write variables as `name: value` lines",
            );
            return Vec::new();
        };
        let mut vars = Vec::new();
        for (key, value) in entries {
            if let Some(name) = self.name_of(key, "variable") {
                vars.push(Var {
                    name,
                    value: value.clone(),
                    mark: key.mark,
                    owner: owner.clone(),
                });
            }
        }
        vars
    }

    /// True when `from` is `to` or contains it through `children`.
    fn reaches(&self, from: &str, to: &str) -> bool {
        let mut seen = HashSet::new();
        let mut stack = vec![from];
        while let Some(name) = stack.pop() {
            if name == to {
                return true;
            }
            if seen.insert(name) {
                if let Some(group) = self.group(name) {
                    stack.extend(group.children.iter().map(String::as_str));
                }
            }
        }
        false
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.group_index.get(name).map(|&i| &self.groups[i])
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.host_index.get(name).map(|&i| &self.hosts[i])
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Every host of a group and its descendants, in order of first appearance.
    pub fn hosts_of(&self, group: &str) -> Vec<&str> {
        if group == "all" {
            return self.hosts.iter().map(|h| h.name.as_str()).collect();
        }
        let mut found = Vec::new();
        let mut seen_groups = HashSet::new();
        let mut stack = vec![group];
        while let Some(name) = stack.pop() {
            if !seen_groups.insert(name) {
                continue;
            }
            if let Some(g) = self.group(name) {
                for host in &g.hosts {
                    if !found.contains(&host.as_str()) {
                        found.push(host.as_str());
                    }
                }
                stack.extend(g.children.iter().rev().map(String::as_str));
            }
        }
        let order: HashMap<&str, usize> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.as_str(), i))
            .collect();
        found.sort_by_key(|h| order.get(h).copied().unwrap_or(usize::MAX));
        found
    }

    fn parents(&self, group: &str) -> Vec<&str> {
        let mut parents: Vec<&str> = self
            .groups
            .iter()
            .filter(|g| g.children.iter().any(|c| c == group))
            .map(|g| g.name.as_str())
            .collect();
        if parents.is_empty() && group != "all" {
            parents.push("all");
        }
        parents
    }

    /// Ansible's group depth: `all` is 0, every other group one more than its deepest parent.
    fn depth(&self, group: &str, memo: &mut HashMap<String, usize>) -> usize {
        if group == "all" {
            return 0;
        }
        if let Some(&d) = memo.get(group) {
            return d;
        }
        // Cycles were refused while reading; the placeholder guards against surprises.
        memo.insert(group.to_owned(), 1);
        let depth = 1 + self
            .parents(group)
            .into_iter()
            .map(|p| self.depth(p, memo))
            .max()
            .unwrap_or(0);
        memo.insert(group.to_owned(), depth);
        depth
    }

    /// Groups a host belongs to, directly or through children, in the order their variables
    /// apply (by depth, then name), starting with `all`.
    pub fn groups_of(&self, host: &str) -> Vec<&Group> {
        let mut member: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = self
            .groups
            .iter()
            .filter(|g| g.hosts.iter().any(|h| h == host))
            .map(|g| g.name.as_str())
            .collect();
        while let Some(name) = stack.pop() {
            if member.insert(name) {
                stack.extend(self.parents(name));
            }
        }
        member.insert("all");
        let mut memo = HashMap::new();
        let mut groups: Vec<(usize, &Group)> = member
            .into_iter()
            .filter_map(|name| self.group(name))
            .map(|g| (self.depth(&g.name, &mut memo), g))
            .collect();
        groups.sort_by(|(da, a), (db, b)| (da, &a.name).cmp(&(db, &b.name)));
        groups.into_iter().map(|(_, g)| g).collect()
    }

    /// A host's variables after precedence: group variables by depth, then the host's own.
    pub fn vars_of(&self, host: &str) -> HostVars<'_> {
        let mut vars: BTreeMap<&str, &Var> = BTreeMap::new();
        for group in self.groups_of(host) {
            for var in &group.vars {
                vars.insert(&var.name, var);
            }
        }
        if let Some(h) = self.host(host) {
            for var in &h.vars {
                vars.insert(&var.name, var);
            }
        }
        for var in &self.extra {
            vars.insert(&var.name, var);
        }
        HostVars {
            host: host.to_owned(),
            vars,
        }
    }

    /// Set `name` for every host, above anything the file says (Ansible's `-e`). The value
    /// is read as YAML, so `[a, b]` and `{k: v}` give a list and a mapping.
    pub fn set_extra(&mut self, name: &str, value: &str) -> Result<(), InventoryError> {
        let origin = PathBuf::from(format!("-e {name}"));
        let doc = yaml::parse_str(value, &origin)?;
        let var = Var {
            name: name.to_owned(),
            value: doc.root,
            mark: Mark { line: 0, col: 0 },
            owner: Owner::Group("-e".to_owned()),
        };
        self.extra.retain(|v| v.name != name);
        self.extra.push(var);
        Ok(())
    }

    /// A `-e` variable, if one was given.
    pub fn extra_var(&self, name: &str) -> Option<&Var> {
        self.extra.iter().find(|v| v.name == name)
    }

    /// Every variable in the file, in the order written.
    pub fn all_vars(&self) -> impl Iterator<Item = &Var> {
        self.groups
            .iter()
            .flat_map(|g| g.vars.iter())
            .chain(self.hosts.iter().flat_map(|h| h.vars.iter()))
    }
}

/// The variables one host sees.
#[derive(Debug, Clone)]
pub struct HostVars<'a> {
    pub host: String,
    vars: BTreeMap<&'a str, &'a Var>,
}

impl<'a> HostVars<'a> {
    pub fn get(&self, name: &str) -> Option<&'a Var> {
        self.vars.get(name).copied()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().copied()
    }
}

/// Why a variable's text could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarError {
    #[error("`{name}` is vault-encrypted and no vault password was given")]
    NoPassword { name: String },
    #[error("`{name}`: {source}")]
    Vault { name: String, source: VaultError },
    #[error("`{name}` decrypts to bytes that are not UTF-8 text")]
    NotText { name: String },
    #[error("`{name}` must be a single value, found {found}")]
    NotScalar { name: String, found: &'static str },
}

impl Var {
    /// The variable's text: scalars as written, vault values decrypted; `None` when empty.
    pub fn text(&self, secret: Option<&VaultSecret>) -> Result<Option<String>, VarError> {
        match &self.value.kind {
            _ if self.value.is_null() => Ok(None),
            Kind::Scalar { text, .. } => Ok(Some(text.clone())),
            Kind::Vault(envelope) => {
                let secret = secret.ok_or_else(|| VarError::NoPassword {
                    name: self.name.clone(),
                })?;
                let plain =
                    crate::vault::decrypt(envelope, secret).map_err(|source| VarError::Vault {
                        name: self.name.clone(),
                        source,
                    })?;
                String::from_utf8(plain)
                    .map(Some)
                    .map_err(|_| VarError::NotText {
                        name: self.name.clone(),
                    })
            }
            Kind::Seq(_) | Kind::Map(_) => Err(VarError::NotScalar {
                name: self.name.clone(),
                found: self.value.describe(),
            }),
        }
    }

    /// Every `!vault` value inside this variable (itself, or nested in lists and mappings).
    pub fn vault_values(&self) -> Vec<&Node> {
        fn walk<'n>(node: &'n Node, out: &mut Vec<&'n Node>) {
            match &node.kind {
                Kind::Vault(_) => out.push(node),
                Kind::Seq(items) => items.iter().for_each(|n| walk(n, out)),
                Kind::Map(entries) => entries.iter().for_each(|(_, v)| walk(v, out)),
                Kind::Scalar { .. } => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.value, &mut out);
        out
    }
}

#[cfg(test)]
mod tests;
