//! The control node: Ansible inventory, ansible-vault, rendering client configs.
//!
//! - [`vault`]: ansible-vault 1.1/1.2 envelopes and password files.
//! - [`yaml`]: YAML with line numbers and tags, the way Ansible's loader sees it.
//! - [`inventory`]: groups, hosts, variable precedence, checks with `file:line`.
//! - [`render`]: the gateway config and every client config, from one inventory.
//! - [`explain`]: which endpoint and path a node pulls an image from.

pub mod vault;
pub mod yaml;
