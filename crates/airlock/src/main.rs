//! The `airlock` binary: command-line parsing, logging setup, dispatch to subcommands.
//!
//! Business logic lives in the library crates; each subcommand here is a thin adapter.

mod cmd;

use clap::{Parser, Subcommand};

/// One binary between the internet and an air-gapped K3s cluster.
#[derive(Debug, Parser)]
#[command(name = "airlock", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: OCI pull-through cache, package proxies, egress proxy.
    Serve(cmd::serve::Args),
    /// Validate gateway configuration files.
    #[command(subcommand)]
    Config(cmd::config::Command),
    /// Read and check an Ansible inventory.
    #[command(subcommand)]
    Inventory(cmd::inventory::Command),
    /// Encrypt and decrypt ansible-vault files and strings.
    #[command(subcommand)]
    Vault(cmd::vault::Command),
    /// Render every client configuration from an Ansible inventory.
    Render(cmd::render::Args),
    /// Show which endpoint and path a node will pull an image from.
    ExplainImage(cmd::render::ExplainArgs),
    /// Install the gateway and an air-gapped K3s cluster over SSH, idempotently.
    Deploy(Box<cmd::deploy::Args>),
    /// Fetch the first server's kubeconfig over SSH, pointed at its address, TLS verified.
    Kubeconfig(cmd::kubeconfig::Args),
    /// Check every host over SSH before a deploy: system, `SELinux`, disk, routes, ports.
    Preflight(cmd::preflight::Args),
    /// Bundle files for sites with no network link: create, keygen, inspect, verify, index,
    /// import.
    #[command(subcommand)]
    Bundle(cmd::bundle::Command),
    /// The admin API's accounts: hash-password.
    #[command(subcommand)]
    Admin(cmd::admin::Command),
    /// Garbage collection of hosted projects: what nothing references any more.
    Gc(cmd::gc::Args),
    /// Print the audit trail (upstream fetches, egress and policy decisions, logins, admin
    /// actions), filtered.
    Audit(cmd::audit::Args),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up `tracing` once; `RUST_LOG` overrides the default level (`info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colors only for a terminal: a log file or the journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(&args),
        Command::Audit(args) => cmd::audit::run(&args),
        Command::Config(command) => cmd::config::run(command),
        Command::Inventory(command) => cmd::inventory::run(command),
        Command::Vault(command) => cmd::vault::run(command),
        Command::Render(args) => cmd::render::run(&args),
        Command::ExplainImage(args) => cmd::render::explain(&args),
        Command::Deploy(args) => cmd::deploy::run(&args),
        Command::Preflight(args) => cmd::preflight::run(&args),
        Command::Kubeconfig(args) => cmd::kubeconfig::run(&args),
        Command::Bundle(command) => cmd::bundle::run(command),
        Command::Admin(command) => cmd::admin::run(command),
        Command::Gc(args) => cmd::gc::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
