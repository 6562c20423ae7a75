//! `airlock vault`: ansible-vault compatible encryption of files and inventory values.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use airlock_ansible::vault::file::Content;
use airlock_ansible::vault::{self, VaultSecret};

/// Where the vault password comes from; shared by every command that reads vault data.
#[derive(Debug, Clone, clap::Args)]
pub struct PasswordArgs {
    /// File holding the vault password, or an executable that prints it.
    #[arg(long, env = "ANSIBLE_VAULT_PASSWORD_FILE", value_name = "FILE")]
    pub vault_password_file: Option<PathBuf>,
    /// Vault-id label for new values (writes a 1.2 envelope); `LABEL@FILE` also names the
    /// password file, as with ansible.
    #[arg(long, value_name = "LABEL")]
    pub vault_id: Option<String>,
}

impl PasswordArgs {
    /// The label to write into new envelopes.
    pub fn label(&self) -> Option<&str> {
        self.vault_id
            .as_deref()
            .map(|id| id.split_once('@').map_or(id, |(label, _)| label))
    }

    fn file(&self) -> Option<PathBuf> {
        match self.vault_id.as_deref().and_then(|id| id.split_once('@')) {
            Some((_, file)) => Some(PathBuf::from(file)),
            None => self.vault_password_file.clone(),
        }
    }

    /// The password, if a password file was given.
    pub fn secret(&self) -> anyhow::Result<Option<VaultSecret>> {
        let Some(file) = self.file() else {
            return Ok(None);
        };
        Ok(Some(VaultSecret::from_file(&file, self.label())?))
    }

    /// The password; an error naming both ways to give one when there is none.
    pub fn require_secret(&self) -> anyhow::Result<VaultSecret> {
        self.secret()?.context(
            "no vault password: pass --vault-password-file FILE (or --vault-id LABEL@FILE), \
             or set ANSIBLE_VAULT_PASSWORD_FILE",
        )
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Encrypt a secret read from stdin; print a `NAME: !vault |` snippet for the inventory.
    EncryptString {
        /// Variable name for the snippet.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Keep a trailing newline on the secret (by default one is removed, so
        /// `echo "$X" | airlock vault encrypt-string` stores exactly `$X`).
        #[arg(long)]
        keep_newline: bool,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Generate a random 32-byte hex secret and print it encrypted as a `NAME: !vault |` snippet.
    NewSecret {
        /// Variable name for the snippet.
        #[arg(long, value_name = "NAME")]
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Decrypt a vault file in place (or to --output; `-` is stdout).
    Decrypt {
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Encrypt a file in place (or to --output; `-` is stdout).
    Encrypt {
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Print a vault file's plaintext.
    View {
        file: PathBuf,
        #[command(flatten)]
        password: PasswordArgs,
    },
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::EncryptString {
            name,
            keep_newline,
            password,
        } => {
            let mut secret = Vec::new();
            std::io::stdin()
                .read_to_end(&mut secret)
                .context("reading the secret from stdin")?;
            if !keep_newline {
                strip_one_newline(&mut secret);
            }
            if secret.is_empty() {
                bail!(
                    "the secret on stdin is empty: pipe the value in, e.g. `printf %s \"$X\" | airlock vault encrypt-string --name {name}`"
                );
            }
            print_snippet(&name, &secret, &password)
        }
        Command::NewSecret { name, password } => {
            let secret = vault::random_hex_secret();
            print_snippet(&name, secret.as_bytes(), &password)
        }
        Command::Decrypt {
            file,
            output,
            password,
        } => {
            let text = read_text(&file)?;
            let plain = vault::decrypt(&text, &password.require_secret()?)
                .with_context(|| format!("decrypting {}", file.display()))?;
            write_out(
                output.as_deref().unwrap_or(&file),
                &plain,
                Content::Plaintext,
            )
        }
        Command::Encrypt {
            file,
            output,
            password,
        } => {
            let plain =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            if vault::is_vault(&String::from_utf8_lossy(&plain)) {
                bail!("{} is already vault-encrypted", file.display());
            }
            let text = vault::encrypt(&plain, &password.require_secret()?, password.label())?;
            write_out(
                output.as_deref().unwrap_or(&file),
                text.as_bytes(),
                Content::Envelope,
            )
        }
        Command::View { file, password } => {
            let text = read_text(&file)?;
            let plain = vault::decrypt(&text, &password.require_secret()?)
                .with_context(|| format!("decrypting {}", file.display()))?;
            write_out(Path::new("-"), &plain, Content::Plaintext)
        }
    }
}

fn strip_one_newline(secret: &mut Vec<u8>) {
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
}

fn print_snippet(name: &str, secret: &[u8], password: &PasswordArgs) -> anyhow::Result<()> {
    let snippet =
        vault::encrypt_string_snippet(name, secret, &password.require_secret()?, password.label())?;
    write_out(Path::new("-"), snippet.as_bytes(), Content::Envelope)
}

fn read_text(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// Write to stdout for `-`, else replace the file atomically (see
/// [`airlock_ansible::vault::file`]: a fresh 0600 temporary, renamed into place).
fn write_out(path: &Path, bytes: &[u8], content: Content) -> anyhow::Result<()> {
    if path == Path::new("-") {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(bytes)?;
        return Ok(stdout.flush()?);
    }
    Ok(vault::file::write(path, bytes, content)?)
}
