//! `airlock admin`: the admin API's accounts. `hash-password` makes the `password_hash` of
//! an `[admin] users` entry.

use std::io::Read;

use anyhow::Context;

#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Command {
    /// Read a password from stdin and print its PHC argon2id hash, for
    /// `[admin] users = [{ name = "...", password_hash = "<the hash>" }]`. One trailing
    /// newline is not part of the password; an empty password is refused.
    HashPassword,
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::HashPassword => {
            let mut input = Vec::new();
            std::io::stdin()
                .take(64 << 10)
                .read_to_end(&mut input)
                .context("reading the password from stdin")?;
            let password = strip_newline(&input);
            let hash = match airlock_config::hash_password(password) {
                Ok(hash) => hash,
                Err(airlock_config::HashError::Empty) => anyhow::bail!(
                    "the password on stdin is empty: refusing to hash it (e.g. `printf %s \"$PASSWORD\" | airlock admin hash-password`)"
                ),
                Err(e) => return Err(e.into()),
            };
            println!("{hash}");
            Ok(())
        }
    }
}

/// The password without the one line ending `echo` or a terminal adds.
pub(crate) fn strip_newline(input: &[u8]) -> &[u8] {
    let input = input.strip_suffix(b"\n").unwrap_or(input);
    input.strip_suffix(b"\r").unwrap_or(input)
}
