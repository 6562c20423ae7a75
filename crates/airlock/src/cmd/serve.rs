//! `airlock serve`: the gateway on the staging node.

use std::path::PathBuf;

use airlock_config::Config;
use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Gateway configuration (TOML). Without it the embedded default runs.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, value_enum, default_value_t = crate::LogFormat::Text, env = "AIRLOCK_LOG_FORMAT")]
    pub log_format: crate::LogFormat,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    crate::init_logging(args.log_format);
    let config = if let Some(path) = &args.config {
        Config::load(path)?
    } else {
        tracing::info!(target: "airlock::gateway", "no --config given: running the embedded default");
        Config::embedded_default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let gateway = airlock_gateway::Gateway::bind(config).await?;
        gateway.serve(shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
