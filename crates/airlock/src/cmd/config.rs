//! `airlock config check`.

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate a configuration file and print its resolved form.
    Check {
        /// The file to check.
        file: std::path::PathBuf,
    },
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check { file } => anyhow::bail!("config check is being built: {}", file.display()),
    }
}
