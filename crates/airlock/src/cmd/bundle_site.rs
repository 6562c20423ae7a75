//! `bundle create --inventory INV`: the site's inventory read as `airlock deploy` reads it,
//! turned into the spec sections deploy needs from an isolated gateway
//! ([`airlock_bundle::create::inventory`]), and the gateway configuration `airlock render`
//! writes for it (the proxies to warm through when `--config` is not given).

use std::path::PathBuf;

use anyhow::Context;

use airlock_bundle::create::inventory::{self, DEFAULT_CHANNELS, Nodes};
use airlock_bundle::create::spec::Spec;
use airlock_config::Config;
use airlock_site::site::Site;

use super::vault::PasswordArgs;

#[derive(Debug, clap::Args)]
pub struct SiteArgs {
    /// Also carry what `airlock deploy` needs on this inventory's site: the K3s release
    /// (`k3s_version`; a channel is asked now) for the nodes' architectures with its
    /// system images, Rancher's `SELinux` RPMs and, with GPU workers, the NVIDIA container
    /// toolkit. Without --config, the proxies are those `airlock render` writes for it.
    #[arg(short = 'i', long = "inventory", value_name = "INV")]
    pub inventory: Option<PathBuf>,
    /// The nodes' CPU architectures, as K3s names them: amd64, arm64, arm (repeatable or
    /// comma-separated; default amd64). The inventory does not say; deploy asks each node.
    #[arg(
        long = "arch",
        value_name = "ARCH",
        value_delimiter = ',',
        requires = "inventory"
    )]
    pub arch: Vec<String>,
    /// The nodes' RHEL major version (7, 8, 9, 10), for Rancher's `SELinux` repository
    /// (default 9).
    #[arg(long = "el", value_name = "N", requires = "inventory")]
    pub el: Option<u32>,
    #[command(flatten)]
    pub password: PasswordArgs,
}

/// What an inventory adds: the spec sections, and the site (for its rendered config).
pub struct Added {
    pub spec: Spec,
    pub site: Site,
}

/// The inventory's additions, or `None` without `--inventory`. Notes go to stderr.
pub fn additions(args: &SiteArgs) -> anyhow::Result<Option<Added>> {
    let Some(path) = &args.inventory else {
        return Ok(None);
    };
    let site = super::render::load_site(path, &args.password)?;
    let (version, note) = inventory::k3s_version(&site, DEFAULT_CHANNELS)
        .with_context(|| format!("choosing the K3s release for {}", path.display()))?;
    let defaults = Nodes::default();
    let nodes = Nodes {
        architectures: if args.arch.is_empty() {
            defaults.architectures
        } else {
            args.arch.clone()
        },
        el_major: args.el.unwrap_or(defaults.el_major),
    };
    let added = inventory::additions(&site, &version, &nodes)
        .with_context(|| format!("what {} needs", path.display()))?;
    for note in note.iter().chain(&added.notes) {
        eprintln!("note: {note}");
    }
    eprintln!(
        "{}: K3s {version} for {}; RPMs for EL {}",
        path.display(),
        nodes.architectures.join(", "),
        nodes.el_major
    );
    Ok(Some(Added {
        spec: added.spec,
        site,
    }))
}

/// The gateway configuration `airlock render` writes for `site` (`staging/airlock.toml`).
pub fn rendered_config(site: &Site) -> anyhow::Result<Config> {
    let rendered = airlock_site::render::render(site)?;
    let text = rendered
        .get("staging/airlock.toml")
        .context("the rendered site has no staging/airlock.toml")?;
    let origin = format!(
        "the gateway configuration rendered from {}",
        site.inventory.display()
    );
    Config::from_toml_str(text, &origin).with_context(|| origin.clone())
}
