//! Shared helpers for the integration tests: the fixture inventory and small inline ones.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use airlock_ansible::inventory::Inventory;
use airlock_ansible::vault::VaultSecret;

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
