//! `airlock render` and `airlock explain-image`: client configs and pull paths from an inventory.

use std::path::{Path, PathBuf};

use anyhow::Context;

use airlock_ansible::inventory::Inventory;
use airlock_site::site::Site;
use airlock_site::{explain, render};

use super::vault::PasswordArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Ansible inventory (YAML).
    #[arg(short = 'i', long = "inventory", value_name = "INVENTORY")]
    pub inventory: PathBuf,
    /// Directory to write the rendered files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub password: PasswordArgs,
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The Ansible inventory (YAML).
    #[arg(short = 'i', long = "inventory", value_name = "INVENTORY")]
    pub inventory: PathBuf,
    /// An image reference as written in a manifest, e.g. `postgres:15` or `ghcr.io/org/app@sha256:…`.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    #[command(flatten)]
    pub password: PasswordArgs,
}

/// Read the site, refusing it when the inventory has errors (warnings are printed).
pub fn load_site(inventory: &Path, password: &PasswordArgs) -> anyhow::Result<Site> {
    load_with(inventory, password, &[]).map(|(_, site)| site)
}

/// [`load_site`] with `-e KEY=VALUE` variables above the file's; also returns the inventory.
pub fn load_with(
    inventory: &Path,
    password: &PasswordArgs,
    extra: &[(String, String)],
) -> anyhow::Result<(Inventory, Site)> {
    let secret = password.secret()?;
    let loaded = airlock_site::load::load(inventory, secret.as_ref(), extra)?;
    for diagnostic in &loaded.diagnostics {
        eprintln!("{diagnostic}");
    }
    let errors = loaded.errors();
    if errors > 0 {
        anyhow::bail!(
            "{} has {errors} error(s); `airlock inventory check -i {}` lists everything",
            inventory.display(),
            inventory.display()
        );
    }
    Ok((loaded.inventory, loaded.site))
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let site = load_site(&args.inventory, &args.password)?;
    let rendered = render::render(&site)?;
    rendered
        .write_to(&args.out)
        .with_context(|| format!("writing into {}", args.out.display()))?;
    for (path, _) in &rendered.files {
        println!("{}", args.out.join(path).display());
    }
    if !rendered.private.is_empty() {
        eprintln!(
            "note: ci/<robot>/config.json hold the robots' secrets (mode 0600): copy each only to the CI runners of that robot; ci/<robot>/README.txt says how jobs use it"
        );
    }
    if site.package_proxy_mode != airlock_site::site::PackageProxyMode::Gateway {
        eprintln!(
            "note: package_proxy_mode is not `airlock`/`nexus`, so no package proxies and no clients/ files were rendered"
        );
    }
    Ok(())
}

pub fn explain(args: &ExplainArgs) -> anyhow::Result<()> {
    let site = load_site(&args.inventory, &args.password)?;
    let explanation = explain::explain(&site, &args.image)?;
    print!("{explanation}");
    if let Some(warning) = &explanation.warning {
        eprintln!("warning: {warning}");
    }
    Ok(())
}
