//! The gateway's `[storage]` table from `airlock_storage_backend` and `airlock_s3_*`: read on
//! the primary staging host, rendered the same for every replica, and checked by the
//! gateway's own resolver so `render` never writes a table `airlock serve` refuses.

use std::path::PathBuf;

use airlock_ansible::yaml::Mark;
use airlock_config::raw::{Storage, Written};
use airlock_config::{Backend, StorageError};

use super::Staging;
use super::reader::{Reader, Scope};

/// Each `[storage]` key the inventory fills, and the variable it comes from.
const KEYS: [(&str, &str); 9] = [
    ("backend", "airlock_storage_backend"),
    ("k2v_endpoint", "airlock_k2v_endpoint"),
    ("bucket", "airlock_s3_bucket"),
    ("endpoint", "airlock_s3_endpoint"),
    ("region", "airlock_s3_region"),
    ("path_style", "airlock_s3_path_style"),
    ("access_key_id_file", "airlock_s3_access_key_id_file"),
    (
        "secret_access_key_file",
        "airlock_s3_secret_access_key_file",
    ),
    ("local_cache", "airlock_s3_local_cache"),
];

/// Variables that would put a key itself in the inventory, and the file variable to use.
const INLINE_SECRETS: [(&str, &str); 2] = [
    ("airlock_s3_access_key_id", "airlock_s3_access_key_id_file"),
    (
        "airlock_s3_secret_access_key",
        "airlock_s3_secret_access_key_file",
    ),
];

impl Reader<'_> {
    /// `None` when no storage variable is set: the gateway's default (`fs`), and no table.
    pub(super) fn storage(&mut self, replicas: &[Staging]) -> Option<Storage> {
        for (inline, file) in INLINE_SECRETS {
            if let Some(var) = self.lookup(Scope::Staging, inline) {
                self.error(
                    var.mark,
                    format!("`{inline}` would put an S3 key in the gateway's config"),
                    format!(
                        "write the key into a file on the control node (mode 0600) and set `{file}` to its path; deploy installs it on every staging host"
                    ),
                );
            }
        }
        self.check_replica_overrides(replicas);
        let mut table = Storage::default();
        let mut first_line: Option<Mark> = None;
        let mut set = |line: Mark| {
            first_line.get_or_insert(line);
        };
        let backend_written = match self.text(Scope::Staging, "airlock_storage_backend") {
            None => false,
            Some((text, line)) => {
                set(line);
                match text.trim() {
                    "fs" => table.backend = Some(Backend::Fs),
                    "s3" => table.backend = Some(Backend::S3),
                    other => self.error(
                        line,
                        format!("unknown `airlock_storage_backend` `{other}`"),
                        "use `fs` (files under airlock_data_dir) or `s3` (a bucket every staging host shares)",
                    ),
                }
                true
            }
        };
        if let Some((text, line)) = self.text(Scope::Staging, "airlock_s3_bucket") {
            set(line);
            table.bucket = Some(text.trim().to_owned());
        }
        if let Some((text, line)) = self.text(Scope::Staging, "airlock_s3_endpoint") {
            set(line);
            table.endpoint = Some(text.trim().to_owned());
        }
        if let Some((text, line)) = self.text(Scope::Staging, "airlock_k2v_endpoint") {
            set(line);
            table.k2v_endpoint = Some(text.trim().to_owned());
        }
        if let Some((text, line)) = self.text(Scope::Staging, "airlock_s3_region") {
            set(line);
            table.region = Some(text.trim().to_owned());
        }
        if let Some(var) = self.lookup(Scope::Staging, "airlock_s3_path_style") {
            set(var.mark);
            table.path_style = Some(self.flag(Scope::Staging, "airlock_s3_path_style", true));
        }
        table.access_key_id_file = self.credential_file("airlock_s3_access_key_id_file", &mut set);
        table.secret_access_key_file =
            self.credential_file("airlock_s3_secret_access_key_file", &mut set);
        if let Some((text, line)) = self.text(Scope::Staging, "airlock_s3_local_cache") {
            set(line);
            match text.trim().parse() {
                Ok(size) => table.local_cache = Some(Written::spelled(size, text.trim())),
                Err(e) => self.error(
                    line,
                    format!("`airlock_s3_local_cache` `{text}` is not a size: {e}"),
                    "write e.g. `50GiB`, or `0` for no hot tier",
                ),
            }
        }
        let Some(line) = first_line else {
            if replicas.len() > 1 {
                self.fs_with_replicas_warning(replicas);
            }
            return None;
        };
        if let Err(e) = table.resolve() {
            self.error(line, storage_message(&e), storage_help(&e));
            return None;
        }
        let s3 = table.backend == Some(Backend::S3);
        if !s3 && replicas.len() > 1 && !backend_written {
            self.fs_with_replicas_warning(replicas);
        }
        if s3 && replicas.len() > 1 && table.k2v_endpoint.is_none() {
            self.warning(
                line,
                format!(
                    "the {} staging hosts share the bucket's blobs but not what they know: without `airlock_k2v_endpoint` each resolves tags and fetches misses itself, and each evicts from the bucket by what it has seen",
                    replicas.len()
                ),
                "set `airlock_k2v_endpoint` to the K2V API of the Garage cluster that holds the bucket (its `[k2v_api] api_bind_addr`, e.g. `http://10.0.0.7:3904`)",
            );
        }
        Some(table)
    }

    /// A credential file: a path on the control node, installed at the same path on every
    /// staging host, so it must be absolute.
    fn credential_file(&mut self, name: &str, set: &mut impl FnMut(Mark)) -> Option<PathBuf> {
        let (text, line) = self.text(Scope::Staging, name)?;
        set(line);
        let path = text.trim();
        if !path.starts_with('/') {
            self.error(
                line,
                format!("`{name}` `{path}` is not an absolute path"),
                "name the file on the control node by its absolute path; deploy installs it at the same path on every staging host",
            );
            return None;
        }
        Some(PathBuf::from(path))
    }

    /// Several replicas on `fs` each keep a cache of their own: each fetches what it serves
    /// from the internet, and while the link is down a node that moved to another replica
    /// finds only what that one cached. Said once, unless `airlock_storage_backend: fs` says
    /// it is meant.
    fn fs_with_replicas_warning(&mut self, replicas: &[Staging]) {
        let line = self.group_line("staging");
        let names: Vec<&str> = replicas.iter().map(|r| r.machine.name.as_str()).collect();
        self.warning(
            line,
            format!(
                "the {} staging hosts ({}) keep their caches on local disk (`fs`): each fetches and holds its own copy, and while the internet link is down a node that fails over finds only what that replica cached",
                replicas.len(),
                names.join(", ")
            ),
            "share one bucket: `airlock_storage_backend: s3` with `airlock_s3_bucket` (and `airlock_s3_endpoint`, `airlock_s3_*_file`); or write `airlock_storage_backend: fs` to keep separate caches",
        );
    }

    /// The gateway config is the primary's for every replica: a storage (or hosted project,
    /// or robot) variable one replica sets for itself alone would be silently ignored, so
    /// it is an error.
    fn check_replica_overrides(&mut self, replicas: &[Staging]) {
        let names = KEYS.iter().map(|(_, var)| *var).chain(["airlock_data_dir"]);
        let names: Vec<&str> = names.chain(super::hosted::VARIABLES).collect();
        for replica in replicas.iter().skip(1) {
            let vars = self.inventory.vars_of(&replica.machine.name);
            for &name in &names {
                let Some(own) = vars.get(name) else { continue };
                let primary = self.lookup(Scope::Staging, name);
                if primary.is_some_and(|p| std::ptr::eq(p, own)) {
                    continue;
                }
                self.error(
                    own.mark,
                    format!(
                        "`{name}` is set for staging host `{}` alone; every staging host runs the first one's gateway config",
                        replica.machine.name
                    ),
                    format!("set `{name}` under `staging: vars:` (or group_vars/staging) so every staging host shares it"),
                );
            }
        }
    }
}

/// The resolver's message with the inventory's variable names beside the table's keys.
fn storage_message(error: &StorageError) -> String {
    let mut text = format!("the gateway's [storage]: {error}");
    for (key, var) in KEYS {
        if text.contains(var) {
            continue;
        }
        // The key as a word of its own: `endpoint`, not the end of `k2v_endpoint`.
        let found = text.match_indices(key).map(|(at, _)| at).find(|&at| {
            let before = text[..at].chars().next_back();
            let after = text[at + key.len()..].chars().next();
            let apart = |c: Option<char>| !c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            apart(before) && apart(after)
        });
        if let Some(at) = found {
            text.insert_str(at + key.len(), &format!(" (`{var}`)"));
        }
    }
    text
}

fn storage_help(error: &StorageError) -> &'static str {
    match error {
        StorageError::OnlyForS3 { .. } => {
            "set `airlock_storage_backend: s3`, or remove the `airlock_s3_*` variables"
        }
        StorageError::NoBucket | StorageError::Bucket { .. } => {
            "set `airlock_s3_bucket` to the bucket's name, e.g. `airlock`"
        }
        StorageError::Endpoint {
            key: "k2v_endpoint",
            ..
        } => "write `airlock_k2v_endpoint` as e.g. `http://10.0.0.7:3904`",
        StorageError::Endpoint { .. } => {
            "write `airlock_s3_endpoint` as e.g. `http://10.0.0.7:3900` (none: AWS)"
        }
        StorageError::Region => "set `airlock_s3_region`, e.g. `garage` or `us-east-1`",
        StorageError::InlineSecret { .. } => {
            "use `airlock_s3_access_key_id_file` and `airlock_s3_secret_access_key_file`"
        }
    }
}
