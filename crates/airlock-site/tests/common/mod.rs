//! Shared helpers for the integration tests: the fixture inventory and small inline ones.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_ansible::inventory::Inventory;
use airlock_ansible::vault::VaultSecret;
use airlock_ansible::yaml::{Kind, Node};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn example_path() -> PathBuf {
    fixtures().join("inventory.example.yaml")
}

pub fn example() -> Inventory {
    Inventory::load(&example_path(), None).unwrap()
}

pub fn secret() -> VaultSecret {
    VaultSecret::from_file(&fixtures().join("vault-password"), None).unwrap()
}

pub fn parse(text: &str) -> Inventory {
    Inventory::parse_str(text, Path::new("inventory.yaml")).unwrap()
}

pub use airlock_testkit::inventory::site;

/// The Scout-shaped tree: `inventory.yaml` beside `group_vars/` and `host_vars/`.
pub fn scout_layout() -> PathBuf {
    fixtures().join("scout-layout/inventory.yaml")
}

/// The variables `ansible-inventory --host` resolves for a host of `inventory`, run from an
/// empty directory (so no `group_vars/` of the working directory is read).
pub fn ansible_host_vars(
    inventory: &Path,
    host: &str,
    extra: &[&str],
) -> serde_json::Map<String, serde_json::Value> {
    let tool = airlock_testkit::require_tool("ansible-inventory", "ansible-core");
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(tool);
    command
        .current_dir(home.path())
        .env("HOME", home.path())
        .env("LC_ALL", "C.UTF-8")
        .env_remove("ANSIBLE_CONFIG")
        .arg("-i")
        .arg(inventory)
        .arg("--vault-password-file")
        .arg(fixtures().join("vault-password"))
        .args(["--host", host]);
    for e in extra {
        command.args(["-e", e]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A value as Ansible's YAML loader (`PyYAML`, YAML 1.1) types it, vault values decrypted:
/// enough of YAML's plain-scalar rules for the fixtures (null, booleans, decimal numbers).
pub fn json_of(node: &Node, secret: &VaultSecret) -> serde_json::Value {
    use serde_json::Value;
    match &node.kind {
        _ if node.is_null() => Value::Null,
        Kind::Scalar { text, plain: true } => {
            if let Some(b) = node.as_bool() {
                Value::Bool(b)
            } else if let Ok(n) = text.parse::<i64>() {
                Value::from(n)
            } else if text.contains('.') && text.parse::<f64>().is_ok() {
                Value::from(text.parse::<f64>().unwrap())
            } else {
                Value::String(text.clone())
            }
        }
        Kind::Scalar { text, .. } => Value::String(text.clone()),
        Kind::Vault(envelope) => Value::String(decrypt(envelope, secret)),
        Kind::Seq(items) => Value::Array(items.iter().map(|n| json_of(n, secret)).collect()),
        Kind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), json_of(v, secret)))
                .collect(),
        ),
    }
}

/// What `ansible-inventory` printed, with its `{"__ansible_vault": …}` values decrypted.
pub fn decrypted(value: &serde_json::Value, secret: &VaultSecret) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(o) if o.len() == 1 && o.contains_key("__ansible_vault") => {
            Value::String(decrypt(o["__ansible_vault"].as_str().unwrap(), secret))
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), decrypted(v, secret)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| decrypted(v, secret)).collect()),
        other => other.clone(),
    }
}

fn decrypt(envelope: &str, secret: &VaultSecret) -> String {
    String::from_utf8(airlock_ansible::vault::decrypt(envelope, secret).unwrap()).unwrap()
}
