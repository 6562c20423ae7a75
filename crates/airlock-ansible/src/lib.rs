//! Ansible's file formats, read the way Ansible reads them.
//!
//! - [`yaml`]: YAML with line numbers and tags, the way Ansible's loader sees it.
//! - [`vault`]: ansible-vault 1.1/1.2 envelopes and password files.
//! - [`inventory`]: groups, hosts, variable precedence, problems with `file:line`.
//! - [`connection`]: how Ansible reaches a host (address, user, port, sudo, ssh arguments).

pub mod connection;
pub mod inventory;
pub mod vault;
pub mod yaml;
