//! `bundle create --inventory INV`: the site's inventory read as `airlock deploy` reads it,
//! turned into the spec sections deploy needs from an isolated gateway
//! ([`airlock_bundle::create::inventory`]), and the gateway configuration `airlock render`
//! writes for it (the proxies to warm through when `--config` is not given).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use tempfile::NamedTempFile;

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

/// The gateway configuration `airlock render` writes for `site` (`staging/airlock.toml`),
/// and the file holding the outbound proxy's password when the site's proxy has one: the
/// rendered configuration names the file deploy installs on the staging node, so the
/// scratch gateway gets a private copy here (0600, created exclusively, removed when the
/// returned value is dropped).
pub fn rendered_config(site: &Site) -> anyhow::Result<(Config, Option<NamedTempFile>)> {
    let rendered = airlock_site::render::render(site)?;
    let text = rendered
        .get("staging/airlock.toml")
        .context("the rendered site has no staging/airlock.toml")?;
    let origin = format!(
        "the gateway configuration rendered from {}",
        site.inventory.display()
    );
    let mut config = Config::from_toml_str(text, &origin).with_context(|| origin.clone())?;
    let password = site
        .upstream_proxy
        .as_ref()
        .and_then(|proxy| proxy.password.as_ref());
    let (Some(settings), Some(password)) = (config.upstream_proxy.as_mut(), password) else {
        return Ok((config, None));
    };
    // `tempfile` creates with O_EXCL and mode 0600.
    let mut file =
        NamedTempFile::new().context("making a file for the outbound proxy's password")?;
    file.write_all(password.expose().as_bytes())
        .and_then(|()| file.flush())
        .context("writing the outbound proxy's password")?;
    settings.password_file = Some(file.path().to_owned());
    Ok((config, Some(file)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;

    use airlock_ansible::inventory::Inventory;

    use super::*;

    #[test]
    fn the_scratch_gateway_gets_the_outbound_proxy_password_in_a_private_file() {
        let text = "all:\n  vars:\n    air_gapped: true\n\
             staging:\n  hosts:\n    staging.example.test: {ansible_host: 10.0.0.2}\n  vars:\n    staging_k3s_token: abc\n    https_proxy: http://bundler:s3cret@proxy.example.test:3128\n\
             server:\n  hosts:\n    s1.example.test: {ansible_host: 10.0.0.3}\n\
             k3s_cluster:\n  children: {server: {}}\n  vars:\n    k3s_token: t\n";
        let inventory = Inventory::parse_str(text, Path::new("inventory.yaml")).unwrap();
        let (site, diagnostics) = Site::read(&inventory, None);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
        let (config, file) = rendered_config(&site).unwrap();
        let file = file.expect("a password file");
        let settings = config.upstream_proxy.unwrap();
        assert_eq!(settings.password_file.as_deref(), Some(file.path()));
        assert_eq!(settings.username.as_deref(), Some("bundler"));
        assert_eq!(std::fs::read_to_string(file.path()).unwrap(), "s3cret");
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let path = file.path().to_owned();
        drop(file);
        assert!(!path.exists());
    }
}
