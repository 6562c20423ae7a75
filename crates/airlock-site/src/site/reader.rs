//! The reader behind [`Site::read`]: variable lookup by scope, vault decryption, `{{ var }}`
//! expansion and diagnostics that never repeat a vault plaintext, each on the file and line
//! the value came from; which variables were read, from where; and each host's connection
//! settings.

use std::cell::RefCell;
use std::collections::BTreeMap;

use airlock_ansible::connection::{Become, Machine};
use airlock_ansible::inventory::{
    Diagnostic, HostVars, Inventory, Location, Var, VarError, is_secret_name,
};
use airlock_ansible::vault::{Secret, VaultSecret};
use airlock_ansible::yaml::Mark;

#[cfg(doc)]
use super::Site;
use super::Source;

/// Where a diagnostic points: a [`Mark`] (in whichever file it was read from), or a line of
/// the inventory file.
pub(super) trait At {
    fn locate(self, inventory: &Inventory) -> Location<'_>;
}

impl At for Mark {
    fn locate(self, inventory: &Inventory) -> Location<'_> {
        inventory.locate(self)
    }
}

impl At for usize {
    fn locate(self, inventory: &Inventory) -> Location<'_> {
        Location {
            file: &inventory.file,
            line: self,
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Scope {
    Staging,
    StagingThenCluster,
    ClusterThenStaging,
}

pub(super) struct Reader<'a> {
    pub(super) inventory: &'a Inventory,
    pub(super) secret: Option<&'a VaultSecret>,
    pub(super) staging: Option<HostVars<'a>>,
    pub(super) cluster: Option<HostVars<'a>>,
    pub(super) diagnostics: Vec<Diagnostic>,
    /// Plaintexts of vault values read so far: never echoed in a diagnostic.
    pub(super) revealed: Vec<String>,
    /// Every variable a setting was read from, by name.
    used: RefCell<BTreeMap<&'a str, &'a Var>>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(inventory: &'a Inventory, secret: Option<&'a VaultSecret>) -> Self {
        let staging = inventory
            .hosts_of("staging")
            .first()
            .map(|h| inventory.vars_of(h));
        let cluster = inventory
            .hosts_of("server")
            .first()
            .map(|h| inventory.vars_of(h));
        Self {
            inventory,
            secret,
            staging,
            cluster,
            diagnostics: Vec::new(),
            revealed: Vec::new(),
            used: RefCell::default(),
        }
    }

    /// Where each variable the settings were read from was set, by name.
    pub(super) fn sources(&self) -> Vec<Source> {
        self.used
            .borrow()
            .values()
            .map(|var| {
                let at = self.inventory.locate(var.mark);
                let value = if var.value.vault_text().is_some() {
                    "<vault value>".to_owned()
                } else if is_secret_name(&var.name) {
                    "<hidden>".to_owned()
                } else {
                    var.value.to_string()
                };
                Source {
                    name: var.name.clone(),
                    value,
                    file: at.file.to_owned(),
                    line: at.line,
                }
            })
            .collect()
    }

    pub(super) fn redact(&self, message: impl Into<String>) -> String {
        let mut message = message.into();
        for secret in &self.revealed {
            message = message.replace(secret.as_str(), "<vault value>");
        }
        message
    }

    pub(super) fn error(
        &mut self,
        at: impl At,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let message = self.redact(message);
        let at = at.locate(self.inventory);
        let diagnostic = Diagnostic::error(at.file, at.line, message, help);
        self.diagnostics.push(diagnostic);
    }

    pub(super) fn warning(
        &mut self,
        at: impl At,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let message = self.redact(message);
        let at = at.locate(self.inventory);
        let diagnostic = Diagnostic::warning(at.file, at.line, message, help);
        self.diagnostics.push(diagnostic);
    }

    /// A variable's text; vault plaintexts are remembered so no diagnostic repeats them.
    pub(super) fn read(&mut self, var: &Var) -> Option<String> {
        match var.text(self.secret) {
            Ok(text) => {
                if let (Some(plain), Some(_)) = (&text, var.value.vault_text()) {
                    if !plain.trim().is_empty() {
                        self.revealed.push(plain.clone());
                    }
                }
                text
            }
            Err(e) => {
                self.var_error(var.mark, &e);
                None
            }
        }
    }

    pub(super) fn lookup(&self, scope: Scope, name: &str) -> Option<&'a Var> {
        let staging = || self.staging.as_ref().and_then(|v| v.get(name));
        let cluster = || self.cluster.as_ref().and_then(|v| v.get(name));
        let all = || self.inventory.group_var("all", name);
        let found = self.inventory.extra_var(name).or_else(|| {
            match scope {
                Scope::Staging => staging(),
                Scope::StagingThenCluster => staging().or_else(cluster),
                Scope::ClusterThenStaging => cluster().or_else(staging),
            }
            .or_else(all)
        })?;
        self.used.borrow_mut().insert(&found.name, found);
        Some(found)
    }

    /// A setting's text, decrypted and with `{{ var }}` references resolved, and where it was
    /// set.
    pub(super) fn text(&mut self, scope: Scope, name: &str) -> Option<(String, Mark)> {
        let var = self.lookup(scope, name)?;
        let line = var.mark;
        let text = self.read(var)?;
        if var.value.vault_text().is_some() {
            // A secret is taken literally, never templated.
            return Some((text, line));
        }
        self.expand(scope, name, text, line, 0)
            .map(|text| (text, line))
    }

    pub(super) fn var_error(&mut self, line: Mark, error: &VarError) {
        let help = match error {
            VarError::NoPassword { .. } => {
                "pass --vault-password-file FILE or set ANSIBLE_VAULT_PASSWORD_FILE"
            }
            VarError::Vault { .. } => "check the vault password, or re-encrypt the value",
            VarError::NotText { .. } => "encrypt the value as text",
            VarError::NotScalar { .. } => "write it as a single value",
        };
        self.error(line, error.to_string(), help);
    }

    pub(super) fn expand(
        &mut self,
        scope: Scope,
        name: &str,
        text: String,
        line: Mark,
        depth: usize,
    ) -> Option<String> {
        if !text.contains("{{") && !text.contains("{%") {
            return Some(text);
        }
        let reference = text
            .trim()
            .strip_prefix("{{")
            .and_then(|t| t.strip_suffix("}}"))
            .map(str::trim)
            .filter(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        match reference {
            Some(reference) if depth < 8 && reference != name => {
                let var = self.lookup(scope, reference)?;
                let inner = self.read(var)?;
                if var.value.vault_text().is_some() {
                    return Some(inner);
                }
                self.expand(scope, reference, inner, line, depth + 1)
            }
            _ => {
                self.warning(
                    line,
                    format!("`{name}` is a Jinja expression airlock does not evaluate: {text}"),
                    format!("write the value of `{name}` out, or as `{{{{ other_variable }}}}`"),
                );
                None
            }
        }
    }

    pub(super) fn flag(&mut self, scope: Scope, name: &str, default: bool) -> bool {
        let Some(var) = self.lookup(scope, name) else {
            return default;
        };
        if let Some(b) = var.value.as_bool() {
            return b;
        }
        let Some((text, line)) = self.text(scope, name) else {
            return default;
        };
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" | "" => false,
            _ => {
                self.error(
                    line,
                    format!("`{name}` must be true or false, found `{text}`"),
                    format!("write `{name}: true` or `{name}: false`"),
                );
                default
            }
        }
    }

    pub(super) fn port(&mut self, scope: Scope, name: &str, default: u16) -> u16 {
        let Some((text, line)) = self.text(scope, name) else {
            return default;
        };
        match text.trim().parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                self.error(
                    line,
                    format!("`{name}` must be a TCP port (1-65535), found `{text}`"),
                    format!("write e.g. `{name}: {default}`"),
                );
                default
            }
        }
    }

    pub(super) fn list(&mut self, scope: Scope, name: &str) -> Vec<(String, Mark)> {
        let Some(var) = self.lookup(scope, name) else {
            return Vec::new();
        };
        if let Some(items) = var.value.as_seq() {
            let mut out = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(text) => out.push((text.to_owned(), item.mark)),
                    None if item.is_null() => {}
                    None => self.error(
                        item.mark,
                        format!(
                            "`{name}` must list plain strings, found {}",
                            item.describe()
                        ),
                        "write one name per list item",
                    ),
                }
            }
            return out;
        }
        self.text(scope, name)
            .map(|(text, line)| {
                text.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(|s| (s.to_owned(), line))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn machine(&mut self, host: &str) -> Machine {
        let vars = self.inventory.vars_of(host);
        let line = self
            .inventory
            .host(host)
            .map_or(Mark::default(), |h| h.mark);
        let get = |this: &mut Self, name: &str| -> Option<String> { this.read(vars.get(name)?) };
        let mut address = get(self, "ansible_host").unwrap_or_else(|| host.to_owned());
        // The address becomes a `--tls-san` flag, the kubeconfig's `server` and a directory
        // name on the control node: a name or an address, nothing that could leave a path.
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
        if !address.chars().all(plain) || address.trim_matches('.').is_empty() {
            self.error(
                vars.get("ansible_host").map_or(line, |v| v.mark),
                format!(
                    "host `{host}`: ansible_host `{}` is not a host name or an IP address",
                    address.escape_debug()
                ),
                "write a name such as `node1.example.edu` or an address such as `10.0.0.5`",
            );
            host.clone_into(&mut address);
        }
        let user = get(self, "ansible_user");
        let connection = get(self, "ansible_connection").unwrap_or_else(|| "ssh".to_owned());
        if !matches!(connection.as_str(), "ssh" | "local" | "paramiko" | "smart") {
            self.error(
                vars.get("ansible_connection").map_or(line, |v| v.mark),
                format!("host `{host}`: ansible_connection `{connection}` is not supported"),
                "use `ssh` (the default) or `local` for the node airlock runs on",
            );
        }
        let port = match get(self, "ansible_port") {
            None => 22,
            Some(text) => text.trim().parse::<u16>().unwrap_or_else(|_| {
                self.error(
                    vars.get("ansible_port").map_or(line, |v| v.mark),
                    format!("host `{host}`: ansible_port must be a TCP port, found `{text}`"),
                    "write e.g. `ansible_port: 22`",
                );
                22
            }),
        };
        let escalate = self.escalate(host, &vars);
        let mut ssh_args = Vec::new();
        for name in ["ansible_ssh_common_args", "ansible_ssh_extra_args"] {
            let Some(var) = vars.get(name) else { continue };
            let Some(text) = self.read(var) else { continue };
            match shell_words::split(&text) {
                Ok(words) => ssh_args.extend(words),
                Err(_) => self.error(
                    var.mark,
                    format!("host `{host}`: `{name}` has an unclosed quote"),
                    "close the quote, e.g. `-o ProxyJump=\"bastion\"`",
                ),
            }
        }
        let private_key = get(self, "ansible_ssh_private_key_file")
            .or_else(|| get(self, "ansible_private_key_file"));
        Machine {
            name: host.to_owned(),
            address,
            user,
            port,
            connection,
            escalate,
            ssh_args,
            private_key,
        }
    }

    /// `ansible_become*` of one host; only sudo is supported.
    pub(super) fn escalate(&mut self, host: &str, vars: &HostVars<'a>) -> Option<Become> {
        let var = vars.get("ansible_become")?;
        let on = if let Some(b) = var.value.as_bool() {
            b
        } else {
            let text = self.read(var).unwrap_or_default();
            matches!(
                text.trim().to_ascii_lowercase().as_str(),
                "true" | "yes" | "on" | "1"
            )
        };
        if !on {
            return None;
        }
        if let Some(var) = vars.get("ansible_become_method") {
            let method = self.read(var).unwrap_or_default();
            if !method.trim().is_empty() && method.trim() != "sudo" {
                self.error(
                    var.mark,
                    format!(
                        "host `{host}`: ansible_become_method `{}` is not supported",
                        method.trim()
                    ),
                    "airlock escalates with `sudo`; connect as root or configure sudo",
                );
            }
        }
        let user = vars
            .get("ansible_become_user")
            .and_then(|v| self.read(v))
            .map_or_else(|| "root".to_owned(), |u| u.trim().to_owned());
        let password = vars
            .get("ansible_become_password")
            .or_else(|| vars.get("ansible_become_pass"))
            .and_then(|var| self.secret_of(var));
        Some(Become { user, password })
    }

    /// A secret variable: decrypted when a vault password was given, [`Secret::Locked`]
    /// otherwise (rendering never needs secrets; deploy asks for the password).
    pub(super) fn secret_of(&mut self, var: &Var) -> Option<Secret> {
        if self.secret.is_none() && var.value.vault_text().is_some() {
            return Some(Secret::Locked);
        }
        self.read(var)
            .filter(|t| !t.is_empty())
            .map(|t| Secret::Known(t.trim_end_matches('\n').to_owned()))
    }

    pub(super) fn machines(&mut self, group: &str) -> Vec<Machine> {
        self.inventory
            .hosts_of(group)
            .into_iter()
            .map(|h| self.machine(h))
            .collect()
    }

    pub(super) fn group_line(&self, group: &str) -> usize {
        self.inventory.group(group).map_or(1, |g| g.mark.line)
    }
}
