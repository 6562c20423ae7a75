//! `airlock audit`: print the audit trail, oldest first, filtered.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use airlock_audit::{Filter, Kind, Record};
use airlock_config::Config;
use anyhow::Context as _;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway's configuration: the trail is its `[audit] path`. Without it (and
    /// without --file), the embedded default's.
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with = "file")]
    pub config: Option<PathBuf>,
    /// Read this trail file (its rotated `.1`, `.2`, … files too) instead.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Only records at or after this: a duration back from now (`30m`, `2h`, `7d`) or a
    /// time (`2026-12-04T10:00:00Z`).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only records of this kind: fetch, egress, policy, login or admin.
    #[arg(long)]
    pub kind: Option<Kind>,
    /// Only records of this proxy.
    #[arg(long)]
    pub proxy: Option<String>,
    /// Only records of this client address.
    #[arg(long)]
    pub client: Option<String>,
    /// Only records whose item contains this (a repository, a file name, a host).
    #[arg(long)]
    pub item: Option<String>,
    /// Only records of this admin user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only the newest N records that match.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// One JSON object per line, as stored.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let path = match (&args.file, &args.config) {
        (Some(file), _) => file.clone(),
        (None, Some(config)) => Config::load(config)?.audit.path,
        (None, None) => Config::embedded_default().audit.path,
    };
    let filter = Filter {
        since: args
            .since
            .as_deref()
            .map(|s| Filter::parse_since(s, SystemTime::now()))
            .transpose()?,
        kind: args.kind,
        proxy: args.proxy.clone(),
        client: args.client.clone(),
        item: args.item.clone(),
        user: args.user.clone(),
    };
    if !path.exists() {
        anyhow::bail!(
            "no audit trail at {}: the gateway writes it there once it runs (see --config, --file)",
            path.display()
        );
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut bad = 0u64;
    let mut print = |record: &Record| -> std::io::Result<()> {
        if args.json {
            serde_json::to_writer(&mut out, record)?;
            std::io::Write::write_all(&mut out, b"\n")
        } else {
            std::io::Write::write_all(&mut out, format!("{}\n", line(record)).as_bytes())
        }
    };
    let mut failed = None;
    let mut report_bad = |line: &airlock_audit::BadLine| {
        bad += 1;
        if bad <= 10 {
            eprintln!("warning: {line}");
        }
    };
    if let Some(n) = args.last {
        let (records, bad_lines) = airlock_audit::read_last(&path, &filter, n)
            .with_context(|| format!("reading {}", path.display()))?;
        bad_lines.iter().for_each(&mut report_bad);
        for record in &records {
            print(record)?;
        }
    } else {
        airlock_audit::read(&path, &filter, |entry| match entry {
            Ok(record) => {
                if failed.is_none() {
                    failed = print(&record).err();
                }
            }
            Err(line) => report_bad(&line),
        })
        .with_context(|| format!("reading {}", path.display()))?;
    }
    if let Some(e) = failed {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    if bad > 10 {
        eprintln!("warning: {} more lines are not audit records", bad - 10);
    }
    Ok(())
}

/// One record for people: time, kind, result, who, what, then the rest as `key=value`.
fn line(r: &Record) -> String {
    let mut text = format!("{} {:<6} {:<7}", r.time, r.kind.as_str(), r.result);
    let who = r.user.as_deref().or(r.client.as_deref()).unwrap_or("-");
    let _ = write!(text, " {who:<15}");
    for (key, value) in [
        ("proxy", r.proxy.as_deref()),
        ("action", r.action.as_deref()),
        ("item", r.item.as_deref()),
        ("digest", r.digest.as_deref()),
        ("rule", r.rule.as_deref()),
        ("reason", r.reason.as_deref()),
    ] {
        if let Some(value) = value {
            let _ = write!(text, " {key}={value}");
        }
    }
    if let Some(status) = r.status {
        let _ = write!(text, " status={status}");
    }
    if let Some(bytes) = r.bytes {
        let _ = write!(text, " bytes={bytes}");
    }
    if r.user.is_some() {
        if let Some(client) = &r.client {
            let _ = write!(text, " client={client}");
        }
    }
    text
}
