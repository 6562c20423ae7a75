//! Ansible's YAML inventory: groups with `hosts`, `vars` and `children`, host variables,
//! `group_vars/` and `host_vars/` beside the file, and the precedence Ansible applies.
//!
//! With ansible-core's default `precedence` setting a host sees, lowest first: `all`'s vars in
//! the inventory file, every other group's vars in the file (parents before children), then
//! `group_vars/` files in the same group order (`all` first), then the host's vars in the
//! file, then its `host_vars/` files, then `-e`. Groups of equal depth apply in name order, as
//! Ansible sorts them; a host listed in several places keeps every variable given to it,
//! later ones winning. Every variable's [`Mark`] names the file it was read from
//! ([`Inventory::locate`]). Structural problems become [`Diagnostic`]s with the file and line
//! they are on; reading goes on past them so one run reports all.

mod diagnostic;
mod extra;
mod vars_files;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Location, Severity, sort as sort_diagnostics};

use crate::vault::{VaultError, VaultSecret};
use crate::yaml::{self, FileId, Kind, Mark, Node, YamlError};

/// The inventory file's own [`FileId`].
const INVENTORY_FILE: FileId = FileId(0);

/// Ansible's implicit group of hosts that are in no other group (but `all`).
const UNGROUPED: &str = "ungrouped";

/// What `-e` variables are shown as coming from.
const COMMAND_LINE: &str = "-e";

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
    /// Position of the key (a block scalar's value starts on the next line), in the file
    /// [`Inventory::locate`] names.
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
    /// Variables set in the inventory file.
    pub vars: Vec<Var>,
    /// Variables from `group_vars/<name>` (a file, or every file in that directory), in the
    /// order they apply.
    pub file_vars: Vec<Var>,
    pub hosts: Vec<String>,
    pub children: Vec<String>,
}

/// A host and the variables set on it directly.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub mark: Mark,
    /// Variables set in the inventory file.
    pub vars: Vec<Var>,
    /// Variables from `host_vars/<name>`, in the order they apply.
    pub file_vars: Vec<Var>,
}

/// A parsed inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub file: PathBuf,
    /// Every file variables were read from, by [`FileId`]: the inventory file first.
    files: Vec<PathBuf>,
    /// Wholly vault-encrypted variable files that were read.
    vault_files: Vec<PathBuf>,
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
    /// Read and parse an inventory file and the `group_vars/` and `host_vars/` beside it; a
    /// wholly vault-encrypted file (which Ansible also reads) is decrypted with `secret`.
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
        let mut inventory = Self::parse_str(&text, path)?;
        inventory.read_vars_files(secret);
        Ok(inventory)
    }

    /// Parse inventory text; `file` names it in diagnostics. Nothing beside it is read.
    pub fn parse_str(text: &str, file: &Path) -> Result<Self, InventoryError> {
        let doc = yaml::parse_str(text, file)?;
        let mut inventory = Self {
            file: file.to_owned(),
            files: vec![file.to_owned()],
            vault_files: Vec::new(),
            groups: Vec::new(),
            group_index: HashMap::new(),
            hosts: Vec::new(),
            host_index: HashMap::new(),
            extra: Vec::new(),
            diagnostics: Vec::new(),
        };
        let top = Mark::line_of(INVENTORY_FILE, 1);
        inventory.group_mut("all", top);
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
                top,
                "the inventory is empty",
                "start it with `all:` and the groups `staging`, `server`, `workers`, `agents`, `k3s_cluster`",
            ),
            _ => inventory.error(
                doc.root.mark,
                format!("the inventory must be a mapping of groups, found {}", doc.root.describe()),
                "write it in Ansible's YAML inventory format: `all:` then groups with `hosts:`, `vars:` and `children:`",
            ),
        }
        Ok(inventory)
    }

    fn error(&mut self, at: Mark, message: impl Into<String>, help: impl Into<String>) {
        let at = self.locate(at);
        let diagnostic = Diagnostic::error(at.file, at.line, message, help);
        self.diagnostics.push(diagnostic);
    }

    /// The file and line of a mark: `group_vars/all/versions.yaml:3`, or `-e` for a variable
    /// from the command line.
    pub fn locate(&self, mark: Mark) -> Location<'_> {
        let file = self
            .files
            .get(mark.file.0 as usize)
            .unwrap_or(&self.file)
            .as_path();
        let line = if file == Path::new(COMMAND_LINE) {
            0
        } else {
            mark.line
        };
        Location { file, line }
    }

    /// Wholly vault-encrypted variable files that were read.
    pub fn vault_files(&self) -> &[PathBuf] {
        &self.vault_files
    }

    fn name_of(&mut self, key: &Node, what: &str) -> Option<String> {
        match key.as_str() {
            Some(name) if !name.trim().is_empty() => Some(name.to_owned()),
            _ => {
                self.error(
                    key.mark,
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
                file_vars: Vec::new(),
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
                file_vars: Vec::new(),
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
                    mark,
                    "`all` cannot be a child group",
                    "every group is already inside `all`; remove this entry",
                );
            } else if self.reaches(name, parent) {
                self.error(
                    mark,
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
                node.mark,
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
                    key.mark,
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
                node.mark,
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
                    key.mark,
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
                node.mark,
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
                node.mark,
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
        // Ansible puts a host that is in no group but `all` into `ungrouped`.
        if stack.iter().all(|g| *g == "all") && self.group(UNGROUPED).is_some() {
            stack.push(UNGROUPED);
        }
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

    /// A host's variables after precedence (see the module documentation), `-e` included.
    pub fn vars_of(&self, host: &str) -> HostVars<'_> {
        let mut vars = self.file_vars_of(host);
        for var in &self.extra {
            vars.vars.insert(&var.name, var);
        }
        vars
    }

    /// A host's variables as the files set them: [`Inventory::vars_of`] without `-e`.
    pub fn file_vars_of(&self, name: &str) -> HostVars<'_> {
        let groups = self.groups_of(name);
        let host = self.host(name);
        // ansible-core's `precedence` default: all_inventory, groups_inventory,
        // all_plugins_inventory, groups_plugins_inventory; then the host, then host_vars.
        let layers = groups
            .iter()
            .map(|g| &g.vars)
            .chain(groups.iter().map(|g| &g.file_vars))
            .chain(host.iter().map(|h| &h.vars))
            .chain(host.iter().map(|h| &h.file_vars));
        let mut vars: BTreeMap<&str, &Var> = BTreeMap::new();
        for var in layers.flatten() {
            vars.insert(&var.name, var);
        }
        HostVars {
            host: name.to_owned(),
            vars,
        }
    }

    /// A group's own value of `name`: from `group_vars/` if set there, else from the file.
    pub fn group_var(&self, group: &str, name: &str) -> Option<&Var> {
        let group = self.group(group)?;
        [&group.file_vars, &group.vars]
            .into_iter()
            .find_map(|vars| vars.iter().rev().find(|v| v.name == name))
    }

    /// Every variable in the inventory file and the variable files, in the order read.
    pub fn all_vars(&self) -> impl Iterator<Item = &Var> {
        self.groups
            .iter()
            .flat_map(|g| g.vars.iter())
            .chain(self.hosts.iter().flat_map(|h| h.vars.iter()))
            .chain(self.groups.iter().flat_map(|g| g.file_vars.iter()))
            .chain(self.hosts.iter().flat_map(|h| h.file_vars.iter()))
    }
}

/// True for names whose values are secrets (`…password…`, `…token…`, `…secret…`, `…_key…`):
/// their values are never shown.
pub fn is_secret_name(name: &str) -> bool {
    ["password", "secret", "token", "_key"]
        .iter()
        .any(|s| name.contains(s))
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
