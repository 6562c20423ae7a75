//! `airlock kubeconfig`: the first server's kubeconfig, for `kubectl` on the control node.

use std::path::PathBuf;

use airlock_deploy::kubeconfig::{self, Plan};
use airlock_remote as exec;

use super::vault::PasswordArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Ansible inventory (YAML).
    #[arg(short = 'i', long = "inventory", value_name = "INVENTORY")]
    pub inventory: PathBuf,
    /// Where to write it (default: `local_kubeconfig_yaml`, else Scout's
    /// `<repository>/.kube/scout/<server address>/config`).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write it without checking that the API server's certificate verifies against it.
    #[arg(long)]
    pub no_verify: bool,
    /// Set an inventory variable for every host, above the file's (`KEY=VALUE`; VALUE is YAML).
    #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE", value_parser = super::deploy::parse_extra)]
    pub extra: Vec<(String, String)>,
    #[command(flatten)]
    pub password: PasswordArgs,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let (inventory, site) = super::render::load_with(&args.inventory, &args.password, &args.extra)?;
    let plan = Plan::new(&site, &inventory, args.out.as_deref()).ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no `server` hosts: there is no cluster to get a kubeconfig from",
            args.inventory.display()
        )
    })?;
    let control = tempfile::Builder::new().prefix("airlock-ssh-").tempdir()?;
    let connections = exec::Connections::new(control.path());
    let text = kubeconfig::fetch(
        connections.get(&plan.server).as_ref(),
        &plan.remote,
        &plan.url,
    )?;
    drop(connections);
    if !args.no_verify {
        kubeconfig::verify(&text).map_err(|reason| {
            anyhow::anyhow!(
                "the API server's certificate does not verify for {}: {reason}\n  what to do: run `airlock deploy` (it adds the address with --tls-san), or pass --no-verify to write the file anyway",
                plan.url
            )
        })?;
    }
    kubeconfig::write(&plan.local, &text)?;
    println!(
        "wrote {} (server {}, from {}:{})",
        plan.local.display(),
        plan.url,
        plan.server.name,
        plan.remote
    );
    Ok(())
}
