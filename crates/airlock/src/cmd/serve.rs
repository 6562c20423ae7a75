//! `airlock serve`.

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Gateway configuration (TOML). Without it the embedded default runs.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("serve is being built")
}
