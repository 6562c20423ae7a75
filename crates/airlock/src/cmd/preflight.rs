//! `airlock preflight`: check every host of an inventory before deploying to it.

use std::path::PathBuf;

use airlock_deploy::preflight;
use airlock_remote::{self as exec, ssh::ControlDir};

use super::render::load_site;
use super::vault::PasswordArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Ansible inventory (YAML).
    #[arg(short = 'i', long = "inventory", value_name = "INVENTORY")]
    pub inventory: PathBuf,
    /// Check only these hosts or groups (comma-separated), like ansible's `--limit`.
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub limit: Vec<String>,
    #[command(flatten)]
    pub password: PasswordArgs,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let site = load_site(&args.inventory, &args.password)?;
    let limit: Vec<String> = args
        .limit
        .iter()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let targets = preflight::targets(&site, &limit).map_err(anyhow::Error::msg)?;
    if targets.is_empty() {
        anyhow::bail!("{} lists no hosts to check", args.inventory.display());
    }
    let control = ControlDir::create()?;
    let report = preflight::run(
        &site,
        &targets,
        |machine| exec::connect(machine, control.path()),
        preflight::tcp_probe,
    );
    print!("{report}");
    match report.problems() {
        0 => {
            println!("all checks passed on {} host(s)", targets.len());
            Ok(())
        }
        n => anyhow::bail!("{n} problem(s); fix them and run `airlock preflight` again"),
    }
}
