//! `airlock inventory check`: read an Ansible inventory and report every problem in it.

use std::path::PathBuf;

use airlock_ansible::inventory::Inventory;
use airlock_site::check;

use super::vault::PasswordArgs;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check an inventory (structure, vault values, site settings) and summarize the site.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The Ansible inventory (YAML).
    #[arg(short = 'i', long = "inventory", value_name = "INVENTORY")]
    pub inventory: PathBuf,
    #[command(flatten)]
    pub password: PasswordArgs,
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check(args) => check_inventory(&args),
    }
}

fn check_inventory(args: &CheckArgs) -> anyhow::Result<()> {
    let secret = args.password.secret()?;
    let inventory = Inventory::load(&args.inventory, secret.as_ref())?;
    let report = check::check(&inventory, secret.as_ref());
    for diagnostic in &report.diagnostics {
        eprintln!("{diagnostic}");
    }
    print!("{}", check::summary(&report));
    let (errors, warnings) = (report.errors(), report.warnings());
    if errors > 0 {
        anyhow::bail!(
            "{} has {errors} error(s) and {warnings} warning(s)",
            args.inventory.display()
        );
    }
    println!("ok: {warnings} warning(s)");
    Ok(())
}
