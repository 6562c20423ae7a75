//! Shared helpers for the integration tests: small inline inventories.

use std::path::Path;

use airlock_ansible::inventory::Inventory;

pub fn parse(text: &str) -> Inventory {
    Inventory::parse_str(text, Path::new("inventory.yaml")).unwrap()
}

pub use airlock_testkit::inventory::site;
