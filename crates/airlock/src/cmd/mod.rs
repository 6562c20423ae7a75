//! One module per subcommand.

pub mod admin;
pub mod audit;
pub mod bundle;
mod bundle_site;
pub mod config;
pub mod deploy;
pub mod gc;
pub mod inventory;
pub mod kubeconfig;
pub mod preflight;
pub mod progress;
pub mod render;
pub mod serve;
pub mod upload;
pub mod vault;
pub mod warm;
