//! Placeholder until the control-node commands land.

#[derive(Debug, clap::Args)]
pub struct Args {}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("render is not available in this build")
}

pub fn explain(_args: &ExplainArgs) -> anyhow::Result<()> {
    anyhow::bail!("explain-image is not available in this build")
}
