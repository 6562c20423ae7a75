//! Deploying a site: the gateway on the staging node and K3s on the cluster, over SSH.
//!
//! - [`preflight`]: what would stop a deploy, checked on every host first.
//! - [`artifacts`]: K3s release files, verified, in a local content-addressed cache.
//! - [`rpms`]: RPM packages for the nodes (`SELinux` policy, NVIDIA container toolkit): a
//!   `.repo` through the gateway, or their dependency closure resolved and downloaded on the
//!   control node.
//! - [`deploy`]: the stages of `airlock deploy`, each idempotent, with `--check` diffs;
//!   [`deploy::selinux_policy`] and [`deploy::gpu`] install those packages on the nodes.
//! - [`kubeconfig`]: the first server's kubeconfig on the control node, verifying TLS.

pub mod artifacts;
pub mod deploy;
pub mod kubeconfig;
pub mod preflight;
pub mod rpms;
