//! `group_vars/` and `host_vars/` beside the inventory file, found and read the way
//! ansible-core's `host_group_vars` vars plugin does (`DataLoader.find_vars_files`):
//!
//! - For a group (`ungrouped` too: hosts in no group but `all`) or host `NAME`, the first of `NAME`, `NAME.yml`, `NAME.yaml`, `NAME.json`
//!   that exists is used, and only that one: when `group_vars/all/` is a directory,
//!   `group_vars/all.yml` is not read.
//! - A directory is read whole, its entries in byte order of their names: names starting
//!   with `.` or ending with `~` are skipped, subdirectories without an extension are read
//!   the same way, files with no extension or one of the three are read, the rest ignored.
//! - Each file is YAML or JSON (JSON's `{"__ansible_vault": …}` is a vault value), possibly
//!   wholly vault-encrypted; an empty file sets nothing; anything else must be a mapping.
//!   Later files override earlier ones.
//!
//! Bounded where Ansible is not: at most [`MAX_DEPTH`] directory levels, [`MAX_ENTRIES`]
//! directory entries and [`MAX_FILE_BYTES`] a file; a directory that links back to one it is
//! inside is not followed; names that would leave the directory (`..`, `a/b`) are not looked
//! up. A bad file is a diagnostic naming it; the others are still read.

use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use super::{Diagnostic, FileId, Inventory, Owner, UNGROUPED, Var};
use crate::vault::VaultSecret;
use crate::yaml::{self, Kind, Mark, Node};

/// Extensions a variable file may have (besides none), as ansible-core's default
/// `yaml_valid_extensions`.
const EXTENSIONS: [&[u8]; 3] = [b".yml", b".yaml", b".json"];
/// How deep directories under `group_vars/NAME/` are followed.
pub(super) const MAX_DEPTH: usize = 16;
/// How many directory entries are looked at in all, so a huge tree cannot stall a command.
pub(super) const MAX_ENTRIES: usize = 20_000;
/// The largest variable file read.
pub(super) const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

impl Inventory {
    /// Read `group_vars/` and `host_vars/` next to the inventory file into the groups' and
    /// hosts' `file_vars`.
    pub(super) fn read_vars_files(&mut self, secret: Option<&VaultSecret>) {
        let base = self.file.parent().map(Path::to_owned).unwrap_or_default();
        let mut walk = Walk::default();
        let mut groups: Vec<String> = self.groups.iter().map(|g| g.name.clone()).collect();
        if !groups.iter().any(|g| g == UNGROUPED) {
            groups.push(UNGROUPED.to_owned());
        }
        let hosts: Vec<String> = self.hosts.iter().map(|h| h.name.clone()).collect();
        for (subdir, names, group) in [("group_vars", groups, true), ("host_vars", hosts, false)] {
            let dir = base.join(subdir);
            match std::fs::metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    walk.problem(Diagnostic::warning(
                        &dir,
                        0,
                        format!("{subdir} is not a directory, so it is not read"),
                        format!(
                            "make `{subdir}` a directory of variable files, as Ansible expects"
                        ),
                    ));
                    continue;
                }
                Err(_) => continue,
            }
            for name in names {
                let owner = if group {
                    Owner::Group(name.clone())
                } else {
                    Owner::Host(name.clone())
                };
                for path in walk.find(&dir, &name) {
                    let vars = self.read_vars_file(&path, &owner, secret);
                    if group && name == UNGROUPED {
                        self.group_mut(UNGROUPED, Mark::line_of(FileId::default(), 1));
                    }
                    let target = if group {
                        self.group_index
                            .get(&name)
                            .map(|&i| &mut self.groups[i].file_vars)
                    } else {
                        self.host_index
                            .get(&name)
                            .map(|&i| &mut self.hosts[i].file_vars)
                    };
                    if let Some(target) = target {
                        target.extend(vars);
                    }
                }
            }
        }
        self.diagnostics.extend(walk.diagnostics);
    }

    /// One variable file's variables; problems become diagnostics on the file.
    fn read_vars_file(
        &mut self,
        path: &Path,
        owner: &Owner,
        secret: Option<&VaultSecret>,
    ) -> Vec<Var> {
        let id = FileId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        self.files.push(path.to_owned());
        let first_line = Mark::line_of(id, 1);
        let text = match read_text(path) {
            Ok(text) => text,
            Err(problem) => {
                self.error(first_line, problem, "fix or remove the file");
                return Vec::new();
            }
        };
        let text = if crate::vault::is_vault(&text) {
            let Some(secret) = secret else {
                self.error(
                    first_line,
                    format!(
                        "{} is vault-encrypted and no vault password was given",
                        path.display()
                    ),
                    "pass --vault-password-file FILE or set ANSIBLE_VAULT_PASSWORD_FILE",
                );
                return Vec::new();
            };
            let plain = match crate::vault::decrypt(&text, secret) {
                Ok(plain) => plain,
                Err(e) => {
                    self.error(
                        first_line,
                        format!("cannot decrypt {}: {e}", path.display()),
                        "check the vault password, or re-encrypt the file with `ansible-vault encrypt`",
                    );
                    return Vec::new();
                }
            };
            self.vault_files.push(path.to_owned());
            let Ok(text) = String::from_utf8(plain) else {
                self.error(
                    first_line,
                    format!(
                        "{} decrypts to bytes that are not UTF-8 text",
                        path.display()
                    ),
                    "encrypt a YAML or JSON file",
                );
                return Vec::new();
            };
            text
        } else {
            text
        };
        // Ansible tries JSON first, then YAML; the YAML reading keeps lines, and JSON is
        // YAML but for a few corners (tabs, `\/`), where the JSON reading stands in.
        let json = serde_json::from_str::<serde_json::Value>(&text).ok();
        let root = match (yaml::parse_file(&text, path, id), json) {
            (Ok(doc), Some(_)) => from_json_objects(doc.root),
            (Ok(doc), None) => doc.root,
            (Err(_), Some(value)) => from_json(value, first_line),
            (Err(e), None) => {
                self.error(
                    e.mark,
                    format!("{} is not valid YAML: {}", path.display(), e.message),
                    "fix the YAML syntax at that position",
                );
                return Vec::new();
            }
        };
        if root.is_null() {
            return Vec::new();
        }
        if root.as_map().is_none() {
            self.error(
                root.mark,
                format!(
                    "{} must be a mapping of variables, found {}",
                    path.display(),
                    root.describe()
                ),
                "write variables as `name: value` lines",
            );
            return Vec::new();
        }
        self.read_vars(&root, owner, "file")
    }
}

fn read_text(path: &Path) -> Result<String, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{} is larger than {} MiB; it is not read",
            path.display(),
            MAX_FILE_BYTES / 1024 / 1024
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// `{"__ansible_vault": "$ANSIBLE_VAULT;…"}` in a JSON file is a vault value to Ansible's
/// JSON decoder, and `{"__ansible_unsafe": "…"}` a string.
fn from_json_objects(node: Node) -> Node {
    let Node { kind, mark } = node;
    let kind = match kind {
        Kind::Map(entries) => match entries.as_slice() {
            [(key, value)]
                if key.as_str() == Some("__ansible_vault") && value.as_str().is_some() =>
            {
                Kind::Vault(value.as_str().unwrap_or_default().to_owned())
            }
            [(key, value)]
                if key.as_str() == Some("__ansible_unsafe") && value.as_str().is_some() =>
            {
                Kind::Scalar {
                    text: value.as_str().unwrap_or_default().to_owned(),
                    plain: false,
                }
            }
            _ => Kind::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, from_json_objects(v)))
                    .collect(),
            ),
        },
        Kind::Seq(items) => Kind::Seq(items.into_iter().map(from_json_objects).collect()),
        other => other,
    };
    Node { kind, mark }
}

/// JSON that the YAML reader refuses, as nodes; they all carry `mark` (the JSON reader keeps
/// no positions).
fn from_json(value: serde_json::Value, mark: Mark) -> Node {
    use serde_json::Value;
    let scalar = |text: String, plain: bool| Kind::Scalar { text, plain };
    let kind = match value {
        Value::Null => scalar(String::new(), true),
        Value::Bool(b) => scalar(b.to_string(), true),
        Value::Number(n) => scalar(n.to_string(), true),
        Value::String(s) => scalar(s, false),
        Value::Array(items) => Kind::Seq(items.into_iter().map(|v| from_json(v, mark)).collect()),
        Value::Object(entries) => Kind::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = Node {
                        kind: scalar(k, false),
                        mark,
                    };
                    (key, from_json(v, mark))
                })
                .collect(),
        ),
    };
    from_json_objects(Node { kind, mark })
}

/// The search for variable files, with its bounds and the problems it met.
#[derive(Default)]
struct Walk {
    entries: usize,
    exhausted: bool,
    diagnostics: Vec<Diagnostic>,
}

impl Walk {
    fn problem(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    /// The files for `name` in `dir`, in the order they apply.
    fn find(&mut self, dir: &Path, name: &str) -> Vec<PathBuf> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Vec::new();
        }
        let mut found = Vec::new();
        for ext in ["", ".yml", ".yaml", ".json"] {
            let path = dir.join(format!("{name}{ext}"));
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                let mut inside = std::fs::canonicalize(&path).into_iter().collect();
                self.walk(&path, 1, &mut inside, &mut found);
            } else if meta.is_file() {
                found.push(path);
            } else {
                self.problem(Diagnostic::error(
                    &path,
                    0,
                    "not a regular file, so it is not read",
                    "make it a YAML or JSON file",
                ));
            }
            break;
        }
        found
    }

    fn walk(
        &mut self,
        dir: &Path,
        depth: usize,
        inside: &mut Vec<PathBuf>,
        found: &mut Vec<PathBuf>,
    ) {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                self.problem(Diagnostic::error(
                    dir,
                    0,
                    format!("cannot read the directory: {e}"),
                    "make it readable, or remove it",
                ));
                return;
            }
        };
        let mut names: Vec<OsString> = Vec::new();
        for entry in entries {
            if !self.count(dir) {
                return;
            }
            if let Ok(entry) = entry {
                names.push(entry.file_name());
            }
        }
        names.sort();
        for name in names {
            let bytes = name.as_bytes();
            if bytes.starts_with(b".") || bytes.ends_with(b"~") {
                continue;
            }
            let ext = extension(bytes);
            let path = dir.join(&name);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() && ext.is_empty() {
                self.descend(&path, depth, inside, found);
            } else if meta.is_file() && (ext.is_empty() || EXTENSIONS.contains(&ext)) {
                found.push(path);
            }
        }
    }

    fn descend(
        &mut self,
        dir: &Path,
        depth: usize,
        inside: &mut Vec<PathBuf>,
        found: &mut Vec<PathBuf>,
    ) {
        if depth >= MAX_DEPTH {
            self.problem(Diagnostic::error(
                dir,
                0,
                format!(
                    "variable directories nest deeper than {MAX_DEPTH} levels; this one is not read"
                ),
                "flatten the directory tree",
            ));
            return;
        }
        let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
        if inside.contains(&real) {
            self.problem(Diagnostic::warning(
                dir,
                0,
                format!(
                    "links back to {}, which it is inside; not followed",
                    real.display()
                ),
                "remove the link: Ansible would read the same files over and over",
            ));
            return;
        }
        inside.push(real);
        self.walk(dir, depth + 1, inside, found);
        inside.pop();
    }

    /// Count one directory entry; false (with one diagnostic) once there were too many.
    fn count(&mut self, dir: &Path) -> bool {
        if self.exhausted {
            return false;
        }
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            self.exhausted = true;
            self.problem(Diagnostic::error(
                dir,
                0,
                format!("more than {MAX_ENTRIES} entries in group_vars/ and host_vars/; the rest are not read"),
                "keep variable directories small, or move unrelated files out of them",
            ));
            return false;
        }
        true
    }
}

/// The extension as Python's `os.path.splitext` sees it: from the last `.`, unless that
/// `.` starts the name.
fn extension(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'.') {
        Some(i) if i > 0 => &name[i..],
        _ => b"",
    }
}
