//! `airlock gc`: garbage collection of hosted projects. A running gateway (it holds the
//! index) is asked through its admin API (`POST /api/v1/gc`); a stopped one on `fs`
//! storage is collected here, on its `data_dir`.

use std::path::PathBuf;

use airlock_config::{Config, StorageConfig};
use airlock_registry::GcReport;
use airlock_store::{FsStore, MetaIndex, layout};
use airlock_types::HumanDuration;
use anyhow::{Context, bail};

/// Remove what hosted projects no longer reference.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway's configuration (its `data_dir`, hosted projects and listener).
    #[arg(long, value_name = "GATEWAY.toml")]
    config: PathBuf,
    /// Only report what would go.
    #[arg(long)]
    dry_run: bool,
    /// Keep uploads and mounts nothing references yet for this long: a push between its
    /// blobs and its manifest is safe this long.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    grace: HumanDuration,
    /// The running gateway's URL (default: from the config's `[server] listen`).
    #[arg(long, value_name = "URL")]
    gateway: Option<url::Url>,
    /// The admin user to log in as when the gateway runs (password from the
    /// `AIRLOCK_ADMIN_PASSWORD` environment variable or `--password-file`).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// A file holding the admin password (one line).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let running = MetaIndex::is_held(&layout::index_path(&config.data_dir))
        .context("checking whether a gateway holds the index")?;
    let report = if running {
        let target = super::upload::Target {
            config: &config,
            gateway: args.gateway.as_ref(),
            user: args.user.as_deref(),
            password_file: args.password_file.as_deref(),
        };
        let body = serde_json::json!({ "dry_run": args.dry_run, "grace": args.grace });
        let answer = runtime.block_on(super::upload::admin_post(
            &target,
            "api/v1/gc",
            &body,
            "garbage collection",
        ))?;
        serde_json::from_value(answer).context("reading the gateway's garbage collection report")?
    } else {
        runtime.block_on(collect_stopped(&config, args))?
    };
    print(&report);
    Ok(())
}

async fn collect_stopped(config: &Config, args: &Args) -> anyhow::Result<GcReport> {
    if config.storage != StorageConfig::Fs {
        bail!(
            "the gateway is stopped and its storage is not fs: start it and run airlock gc again (it then goes through the admin API)"
        );
    }
    let store = FsStore::open(layout::store_root(&config.data_dir))
        .await
        .context("opening the gateway's store")?;
    let index = MetaIndex::open(&layout::index_path(&config.data_dir))
        .context("opening the gateway's index")?;
    let projects: Vec<&str> = config.hosted.iter().map(|h| h.name.as_str()).collect();
    airlock_registry::collect_garbage(&store, &index, &projects, args.grace.0, args.dry_run)
        .await
        .context("garbage collection")
}

fn print(report: &GcReport) {
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for (digest, size) in &report.removed {
        println!("{digest}\t{size}");
    }
    eprintln!(
        "{verb} {} blobs ({} bytes) and {} unreferenced links",
        report.removed.len(),
        report.bytes_freed,
        report.links_removed
    );
}
