//! The control node: Ansible inventory, ansible-vault, rendering client configs.
//!
//! - [`vault`]: ansible-vault 1.1/1.2 envelopes and password files.
//! - [`yaml`]: YAML with line numbers and tags, the way Ansible's loader sees it.
//! - [`inventory`]: groups, hosts, variable precedence, problems with `file:line`.
//! - [`site`]: the deployment an inventory describes, as typed settings; [`catalog`]: what
//!   Scout's sites mirror.
//! - [`check`]: `airlock inventory check`: every problem, and a summary.
//! - [`render`]: the gateway config and every client config, from one inventory.
//! - [`explain`]: which endpoint and path a node pulls an image from.
//! - [`exec`]: commands and files on the site's hosts; [`preflight`]: what would stop a deploy.
//! - [`artifacts`]: K3s release files, verified, in a local content-addressed cache.
//! - [`selinux`]: the `SELinux` packages' `.repo` through the gateway, or their dependency
//!   closure resolved and downloaded on the control node.

pub mod artifacts;
pub mod catalog;
pub mod check;
pub mod deploy;
pub mod exec;
pub mod explain;
pub mod inventory;
pub mod preflight;
pub mod render;
pub mod selinux;
pub mod site;
pub mod vault;
pub mod yaml;
