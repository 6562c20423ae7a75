//! `-e KEY=VALUE` on the command line: variables above everything the files set, and a
//! warning on each file line whose value they change.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{COMMAND_LINE, Diagnostic, Inventory, InventoryError, Owner, Var, is_secret_name};
use crate::yaml::{self, FileId, Kind, Mark};

impl Inventory {
    /// Set `name` for every host, above anything the file says (Ansible's `-e`). The value
    /// is read as YAML, so `[a, b]` and `{k: v}` give a list and a mapping.
    pub fn set_extra(&mut self, name: &str, value: &str) -> Result<(), InventoryError> {
        let origin = PathBuf::from(format!("-e {name}"));
        let file = self.command_line_file();
        let doc = yaml::parse_file(value, &origin, file)?;
        let var = Var {
            name: name.to_owned(),
            value: doc.root,
            mark: Mark::line_of(file, 0),
            owner: Owner::Group(COMMAND_LINE.to_owned()),
        };
        self.extra.retain(|v| v.name != name);
        self.extra.push(var);
        Ok(())
    }

    /// A `-e` variable, if one was given.
    pub fn extra_var(&self, name: &str) -> Option<&Var> {
        self.extra.iter().find(|v| v.name == name)
    }

    fn command_line_file(&mut self) -> FileId {
        let command_line = Path::new(COMMAND_LINE);
        let index = self
            .files
            .iter()
            .position(|f| f == command_line)
            .unwrap_or_else(|| {
                self.files.push(command_line.to_owned());
                self.files.len() - 1
            });
        FileId(u32::try_from(index).unwrap_or(u32::MAX))
    }

    /// A warning for each value in the files that a `-e` variable overrides with a different
    /// one, on the overridden line: once a change tried with `-e` is good, the file should say
    /// so. Values of secret-looking names and vault values are not shown.
    pub fn extra_overrides(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for extra in &self.extra {
            for host in &self.hosts {
                let vars = self.file_vars_of(&host.name);
                let Some(var) = vars.get(&extra.name) else {
                    continue;
                };
                if var.value.same_value(&extra.value) || !seen.insert(var.mark) {
                    continue;
                }
                let secret = is_secret_name(&extra.name);
                let given = match &extra.value.kind {
                    Kind::Scalar { .. } if !secret => format!("{}={}", extra.name, extra.value),
                    _ => extra.name.clone(),
                };
                let overridden = match &var.value.kind {
                    Kind::Scalar { .. } if !secret => format!("`{}`", var.value),
                    Kind::Vault(_) => "the vault value".to_owned(),
                    _ => "the value".to_owned(),
                };
                let at = self.locate(var.mark);
                out.push(Diagnostic::warning(
                    at.file,
                    at.line,
                    format!("`-e {given}` overrides {overridden} set here"),
                    format!(
                        "once the new value is right, write it here so the site keeps it without `-e {}`",
                        extra.name
                    ),
                ));
            }
        }
        out
    }
}
