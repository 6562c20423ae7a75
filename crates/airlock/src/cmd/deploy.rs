//! `airlock deploy`: install the gateway and an air-gapped K3s cluster over SSH.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use airlock_ansible::connection::Machine;
use airlock_deploy::deploy::{self, fetcher::Fetcher, report::Report};
use airlock_remote as exec;
use airlock_site::render;

use super::vault::PasswordArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Ansible inventory (YAML).
    #[arg(short = 'i', long = "inventory", value_name = "INVENTORY")]
    pub inventory: PathBuf,
    /// Show what would change (file diffs, restarts) and change nothing.
    #[arg(long)]
    pub check: bool,
    /// Only these hosts or groups (comma-separated; may be repeated).
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub limit: Vec<String>,
    /// Set an inventory variable for every host, above the file's (`KEY=VALUE`; VALUE is YAML).
    #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE", value_parser = parse_extra)]
    pub extra: Vec<(String, String)>,
    /// The airlock binary to install on the staging node (default: this one).
    #[arg(long, value_name = "FILE")]
    pub airlock_binary: Option<PathBuf>,
    /// Where downloaded K3s artifacts are kept between runs
    /// (default: `$XDG_CACHE_HOME/airlock`, or `~/.cache/airlock`).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// In a rolling upgrade (a new `k3s_version` on an installed cluster), how many agents
    /// are upgraded at once; servers always go one at a time.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub batch: u16,
    /// Seconds to wait for the gateway to answer and for nodes to become Ready.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub wait_timeout: u64,
    #[command(flatten)]
    pub password: PasswordArgs,
}

pub(crate) fn parse_extra(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    let key = key.trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("`{key}` is not a variable name"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("airlock")
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let (inventory, site) = super::render::load_with(&args.inventory, &args.password, &args.extra)?;
    let limit = (!args.limit.is_empty()).then(|| args.limit.clone());
    if let Some(limit) = &limit {
        let unknown = deploy::unknown_limits(&inventory, limit);
        anyhow::ensure!(
            unknown.is_empty(),
            "--limit names no host or group of the inventory: {}",
            unknown.join(", ")
        );
    }
    let rendered = render::render(&site)?;
    let airlock_binary = match &args.airlock_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    let progress = std::io::stderr().is_terminal();
    let mode = if args.check {
        deploy::Mode::Check
    } else {
        deploy::Mode::Apply
    };
    let options = deploy::Options {
        mode,
        limit,
        airlock_binary,
        cache_dir: args.cache_dir.clone().unwrap_or_else(default_cache_dir),
        wait_timeout: Duration::from_secs(args.wait_timeout),
        progress,
        batch: usize::from(args.batch),
    };
    let control = tempfile::Builder::new().prefix("airlock-ssh-").tempdir()?;
    let connections = exec::Connections::new(control.path());
    let connect = |machine: &Machine| connections.get(machine);
    let fetcher = Fetcher {
        site: &site,
        cache_dir: options.cache_dir.clone(),
        progress,
        notes: &|note| eprintln!("{note}"),
    };
    let report = Report::new(Box::new(std::io::stdout()), mode);
    let result = deploy::deploy(
        &site, &inventory, &rendered, &connect, &fetcher, &options, &report,
    );
    report.recap();
    drop(connections);
    result.map_err(anyhow::Error::from)
}
