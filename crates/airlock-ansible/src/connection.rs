//! How Ansible reaches a host: `ansible_host`, `ansible_user`, `ansible_port`,
//! `ansible_connection`, `ansible_become*` and the ssh argument variables, as one value the
//! executors connect with.

use crate::vault::Secret;

/// A host and how to reach it over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    pub address: String,
    pub user: Option<String>,
    pub port: u16,
    pub connection: String,
    /// `ansible_become`: run commands as another user (root) through sudo.
    pub escalate: Option<Become>,
    /// `ansible_ssh_common_args` then `ansible_ssh_extra_args`, split like a shell would.
    pub ssh_args: Vec<String>,
    /// `ansible_ssh_private_key_file` (or `ansible_private_key_file`).
    pub private_key: Option<String>,
}

impl Machine {
    /// Whether commands run on the control node itself (`ansible_connection: local`).
    pub fn is_local(&self) -> bool {
        self.connection == "local"
    }
}

/// Privilege escalation with sudo (`ansible_become_user`, `ansible_become_password`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Become {
    pub user: String,
    pub password: Option<Secret>,
}
