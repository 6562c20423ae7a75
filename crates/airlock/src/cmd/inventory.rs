//! `airlock inventory check`: read an Ansible inventory (with its `group_vars/`, `host_vars/`
//! and `-e` variables) and report every problem in it.

use std::path::PathBuf;

use anyhow::Context as _;

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
    /// Set an inventory variable for every host, above the files' (`KEY=VALUE`; VALUE is
    /// YAML); a warning names each file line it changes.
    #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE", value_parser = super::deploy::parse_extra)]
    pub extra: Vec<(String, String)>,
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
    let mut inventory = Inventory::load(&args.inventory, secret.as_ref())?;
    for (name, value) in &args.extra {
        inventory
            .set_extra(name, value)
            .with_context(|| format!("-e {name}=…"))?;
    }
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
