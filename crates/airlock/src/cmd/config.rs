//! `airlock config check`.

use airlock_config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate a configuration file and print its resolved form (defaults filled in).
    Check {
        /// The file to check.
        file: std::path::PathBuf,
    },
    /// Print the embedded default configuration.
    Default,
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check { file } => {
            let config = Config::load(&file)?;
            // The files `serve` reads at start: a missing CA or password file fails here too.
            if let Some(proxy) = &config.upstream_proxy {
                let site = airlock_upstream::SiteProxy::load(proxy)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                if config.egress.is_some()
                    && let Err(err) =
                        airlock_egress::UpstreamChain::new(site.settings(), site.password())
                {
                    eprintln!("{}: warning: {err}", file.display());
                }
            }
            eprintln!("{}: ok ({} proxies)", file.display(), config.proxies.len());
            print!("{}", config.to_toml());
        }
        Command::Default => print!("{}", airlock_config::DEFAULT_TOML),
    }
    Ok(())
}
