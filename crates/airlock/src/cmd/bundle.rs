//! `airlock bundle`: the file that carries images and package files onto a site with no
//! network link. `create`, `keygen`, `inspect`, `verify`,
//! `index` and `import` (into a stopped gateway's `data_dir`, or through a running
//! gateway's admin API).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use airlock_bundle::summary::{human_bytes, summarize};
use airlock_bundle::{Bundle, PublicKey};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Fetch the images and files SPEC.yaml names through the proxies' upstreams in
    /// GATEWAY.toml, the package files its python, rpms, charts and k3s sections name
    /// through a scratch gateway running those proxies (so they travel with the index
    /// documents they came with, at the paths clients and `airlock deploy` ask for), what
    /// deploy needs on an inventory's site (--inventory), and what a stopped gateway's store
    /// holds (--from-gateway), and write them into a bundle. An image entry with
    /// `verify: {cosign_key: FILE}` is carried only with a valid cosign signature by that
    /// key, and its `sha256-<hex>.sig` signature image travels with it.
    Create(CreateArgs),
    /// Write a new signing key pair: NAME.key (mode 0600; keep it on the connected side)
    /// and NAME.pub (give it to the isolated site for `--trust-key`).
    Keygen {
        /// Base name of the two files.
        #[arg(long, value_name = "NAME")]
        out: PathBuf,
    },
    /// Summarize a bundle: entries by kind and proxy, sizes, images, files, signature.
    Inspect {
        /// The bundle (its first volume when split).
        file: PathBuf,
    },
    /// Check every byte of a bundle offline: every blob against its digest, the index
    /// against the archive, and the signature when a trust key is given.
    Verify {
        /// The bundle (its first volume when split).
        file: PathBuf,
        /// Require a valid signature by this key (NAME.pub from `airlock bundle keygen`);
        /// an unsigned bundle is then refused.
        #[arg(long, value_name = "KEY.pub")]
        trust_key: Option<PathBuf>,
    },
    /// Verify a bundle (signature and every byte), then write its images and files into
    /// the gateway's store as if each had been pulled through its proxy: directly into its
    /// `data_dir` when the gateway is stopped, through its admin API when it runs.
    Import(ImportArgs),
    /// Print a bundle's index (JSON): every entry's kind, proxy, reference or path, digest,
    /// size, media type and whether its bytes are carried. With `--data-dir`, what a
    /// stopped gateway's store holds, in the same form (the input for `create --since`).
    #[command(group(clap::ArgGroup::new("source").required(true).args(["file", "data_dir"])))]
    Index {
        /// The bundle (its first volume when split).
        file: Option<PathBuf>,
        /// A stopped gateway's data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// The gateway's configuration, for its proxies (default: the embedded default).
        #[arg(long, value_name = "GATEWAY.toml", requires = "data_dir")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["spec", "from_gateway", "inventory"])))]
pub struct CreateArgs {
    /// What to carry (images, files, python, rpms, charts, k3s); relative paths in it (a
    /// `cosign_key`, a `requirements` lock) are relative to this file.
    #[arg(long, value_name = "SPEC.yaml")]
    spec: Option<PathBuf>,
    /// Also carry everything this stopped gateway's store holds (pre-warm a connected
    /// gateway with the clients' own resolution, then export).
    #[arg(long, value_name = "DATA_DIR")]
    from_gateway: Option<PathBuf>,
    /// With --from-gateway: only these proxies' items (repeatable; default: every proxy).
    #[arg(long = "proxy", value_name = "NAME", requires = "from_gateway")]
    proxies: Vec<String>,
    /// Carry only what the target lacks: digests this index lists (`airlock bundle index`
    /// of the last bundle, or of the target gateway's store) are listed, not carried.
    #[arg(long, value_name = "INDEX.json")]
    since: Option<PathBuf>,
    /// The bundle to write (its first volume when split).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Gateway configuration whose proxies' upstreams to fetch from (default: the one
    /// `airlock render` writes for --inventory, else the embedded default configuration).
    #[arg(long, value_name = "GATEWAY.toml")]
    config: Option<PathBuf>,
    /// Sign the bundle's index with this key (NAME.key from `airlock bundle keygen`).
    #[arg(long, value_name = "KEY")]
    sign_key: Option<PathBuf>,
    /// Split into volumes of this size (e.g. 4GiB): FILE, FILE.001, FILE.002, ...
    #[arg(long, value_name = "SIZE")]
    split: Option<airlock_types::ByteSize>,
    #[command(flatten)]
    site: super::bundle_site::SiteArgs,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("trust").required(true).args(["trust_key", "allow_unsigned"])))]
pub struct ImportArgs {
    /// The bundle (its first volume when split).
    file: PathBuf,
    /// The gateway's configuration: its `data_dir` receives the items, its proxies place
    /// them (images by the proxy whose `host` is their registry, files by proxy name).
    /// When the gateway runs (it holds the `data_dir`), the bundle is uploaded to it.
    #[arg(long, value_name = "GATEWAY.toml")]
    config: PathBuf,
    /// Require a valid signature by this key (NAME.pub from `airlock bundle keygen`).
    #[arg(long, value_name = "KEY.pub")]
    trust_key: Option<PathBuf>,
    /// Import without checking a signature (the bundle may be unsigned).
    #[arg(long)]
    allow_unsigned: bool,
    /// The running gateway's URL, for the upload (default: from the config's `[server]
    /// listen`, loopback for a wildcard address; https with the gateway's CA when it has
    /// TLS).
    #[arg(long, value_name = "URL")]
    gateway: Option<url::Url>,
    /// The `[admin]` user to upload as (the password comes from the
    /// `AIRLOCK_ADMIN_PASSWORD` environment variable or `--password-file`).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// A file holding the admin password (one line).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

fn import(args: &ImportArgs) -> anyhow::Result<()> {
    use airlock_bundle::import::{self, ImportError, Trust};

    let config = airlock_config::Config::load(&args.config)?;
    let key = args.trust_key.as_deref().map(PublicKey::read).transpose()?;
    let trust = match &key {
        Some(key) => Trust::Key(key),
        None => Trust::AllowUnsigned,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let stopped = if import::gateway_running(&config.data_dir)? {
        None
    } else {
        let progress = super::progress::bar("importing");
        match import::import_reporting(runtime.handle(), &args.file, &config, trust, progress) {
            // The gateway started while the bundle was being verified.
            Err(ImportError::GatewayRunning { .. }) => None,
            result => Some(result.with_context(|| {
                format!(
                    "importing {} into the stopped gateway's data_dir {}",
                    args.file.display(),
                    config.data_dir.display()
                )
            })?),
        }
    };
    let (imported, key) = if let Some(imported) = stopped {
        let key = imported.trusted_key.as_ref().map(ToString::to_string);
        (imported, key)
    } else {
        let target = super::upload::Target {
            config: &config,
            gateway: args.gateway.as_ref(),
            user: args.user.as_deref(),
            password_file: args.password_file.as_deref(),
        };
        let (url, summary) = runtime
            .block_on(super::upload::upload(
                &args.file,
                &target,
                args.trust_key.as_deref(),
            ))
            .with_context(|| format!("importing {}", args.file.display()))?;
        eprintln!(
            "{}: uploaded {} to the running gateway at {url}",
            args.file.display(),
            human_bytes(summary.received_bytes)
        );
        let imported = import::Imported {
            trusted_key: None,
            new_items: summary.new_items,
            present_items: summary.present_items,
            new_blobs: summary.new_blobs,
            new_bytes: summary.new_bytes,
            present_blobs: summary.present_blobs,
            present_bytes: summary.present_bytes,
        };
        (imported, summary.trusted_key)
    };
    print_imported(&args.file, &imported, key.as_deref());
    Ok(())
}

fn print_imported(
    file: &std::path::Path,
    counts: &airlock_bundle::import::Imported,
    key: Option<&str>,
) {
    let signature = match key {
        Some(key) => format!("signature by trusted key {key} is valid"),
        None => "signature not checked (--allow-unsigned)".to_owned(),
    };
    if counts.is_noop() {
        println!(
            "{}: nothing to import: the gateway already holds all {} items; {signature}",
            file.display(),
            counts.present_items,
        );
    } else {
        println!(
            "{}: imported {} items ({} blobs, {}); {} items already present ({} blobs, {}); {signature}",
            file.display(),
            counts.new_items,
            counts.new_blobs,
            human_bytes(counts.new_bytes),
            counts.present_items,
            counts.present_blobs,
            human_bytes(counts.present_bytes),
        );
    }
}

fn create(args: &CreateArgs) -> anyhow::Result<()> {
    // One line per image and file fetched, on stderr (`RUST_LOG` adjusts).
    crate::init_logging(crate::LogFormat::Text);
    let mut spec = match &args.spec {
        Some(path) => airlock_bundle::create::spec::Spec::load(path)?,
        None => airlock_bundle::create::spec::Spec::default(),
    };
    let added = super::bundle_site::additions(&args.site)?;
    // `_password` keeps the outbound proxy's password file until the bundle is written.
    let (config, _password) = match (&args.config, &added) {
        (None, Some(added)) => super::bundle_site::rendered_config(&added.site)?,
        (path, _) => (gateway_config(path.as_deref())?, None),
    };
    if let Some(added) = added {
        spec.merge(added.spec);
    }
    let since = match &args.since {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let index = airlock_bundle::BundleIndex::parse(&bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            airlock_bundle::create::Since::from_index(&index)
        }
        None => airlock_bundle::create::Since::default(),
    };
    let store = args
        .from_gateway
        .as_deref()
        .map(airlock_bundle::export::Store::open)
        .transpose()?;
    let stores: Vec<_> = store
        .iter()
        .map(|store| (store, args.proxies.clone()))
        .collect();
    let key = args
        .sign_key
        .as_deref()
        .map(airlock_bundle::SecretKey::read)
        .transpose()?;
    let scratch = if spec.needs_warming() {
        let scratch = super::warm::warm_scratch(&config, &spec, &args.out)?;
        let w = &scratch.warmed;
        eprintln!(
            "warmed through a scratch gateway: python {} files, rpms {} packages, charts {}, k3s {} files and {} images ({} with their index documents)",
            w.python.files.len(),
            w.rpms.files.len(),
            w.charts.files.len(),
            w.k3s.files.len(),
            w.images.len(),
            human_bytes(w.python.bytes() + w.rpms.bytes() + w.charts.bytes() + w.k3s.bytes()),
        );
        // The K3s release's system images travel like the spec's own.
        for image in &w.images {
            if !spec.images.iter().any(|i| i.reference == image.reference) {
                spec.images.push(image.clone());
            }
        }
        Some(scratch)
    } else {
        None
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let request = airlock_bundle::create::Request {
        spec: &spec,
        config: &config,
        out: &args.out,
        split: args.split.map(|s| s.0),
        key: key.as_ref(),
        since: &since,
        stores: &stores,
        warmed: scratch.as_ref().map(|s| (&s.store, s.proxies.as_slice())),
    };
    let progress = super::progress::bar("writing");
    let written = airlock_bundle::create::create_reporting(runtime.handle(), &request, progress)
        .with_context(|| format!("creating the bundle {}", args.out.display()))?;
    let carried = written.index.carried();
    eprintln!(
        "wrote {} ({} volume{}): {} entries, {} blobs ({}){}",
        args.out.display(),
        written.volumes.len(),
        if written.volumes.len() == 1 { "" } else { "s" },
        written.index.entries.len(),
        carried.len(),
        human_bytes(carried.values().sum()),
        key.map(|k| format!(", signed by key {}", k.public().id()))
            .unwrap_or_default()
    );
    Ok(())
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Create(args) => create(&args),
        Command::Keygen { out } => {
            let key = airlock_bundle::sign::keygen(&out)?;
            eprintln!(
                "wrote {} (secret, mode 0600) and {} (public); key id {}",
                key.secret.display(),
                key.public.display(),
                key.id
            );
            Ok(())
        }
        Command::Inspect { file } => {
            let bundle = open(&file)?;
            let catalog = bundle
                .catalog()
                .with_context(|| format!("reading {}", file.display()))?;
            print!("{}", summarize(&catalog, bundle.volumes()));
            Ok(())
        }
        Command::Verify { file, trust_key } => verify(&file, trust_key.as_deref()),
        Command::Import(args) => import(&args),
        Command::Index {
            file: Some(file), ..
        } => {
            let catalog = open(&file)?
                .catalog()
                .with_context(|| format!("reading {}", file.display()))?;
            std::io::stdout()
                .write_all(&catalog.index_bytes)
                .context("writing the index to stdout")
        }
        Command::Index {
            data_dir, config, ..
        } => {
            let data_dir = data_dir.context("give a bundle FILE or --data-dir DIR")?;
            store_index(&data_dir, config.as_deref())
        }
    }
}

fn gateway_config(path: Option<&std::path::Path>) -> anyhow::Result<airlock_config::Config> {
    Ok(match path {
        Some(path) => airlock_config::Config::load(path)?,
        None => airlock_config::Config::embedded_default(),
    })
}

/// `bundle index --data-dir`: what a stopped gateway's store holds, every entry expected.
fn store_index(data_dir: &std::path::Path, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config = gateway_config(config)?;
    let store = airlock_bundle::export::Store::open(data_dir)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let held = store.held(runtime.handle(), &config, &[])?;
    for left_out in &held.left_out {
        eprintln!("not listed: {left_out}");
    }
    let mut index = airlock_bundle::BundleIndex::new(std::time::SystemTime::now());
    index.entries = held
        .entries
        .into_iter()
        .map(|entry| airlock_bundle::Entry {
            carried: false,
            ..entry
        })
        .collect();
    index.validate()?;
    std::io::stdout()
        .write_all(&index.to_bytes())
        .context("writing the index to stdout")
}

fn open(file: &std::path::Path) -> anyhow::Result<Bundle> {
    Bundle::open(file).with_context(|| format!("opening the bundle {}", file.display()))
}

fn verify(file: &std::path::Path, trust_key: Option<&std::path::Path>) -> anyhow::Result<()> {
    let trust = trust_key.map(PublicKey::read).transpose()?;
    let mut bundle = open(file)?;
    bundle.set_progress(super::progress::bar("verifying"));
    let verified = airlock_bundle::verify(&bundle, trust.as_ref())
        .with_context(|| format!("{} failed verification", file.display()))?;
    let signature = match (&verified.trusted_key, &verified.catalog.signature) {
        (Some(key), _) => format!("signature by trusted key {key} is valid"),
        (None, Some(signature)) => format!(
            "signed by key {}, signature NOT checked (give --trust-key KEY.pub)",
            signature.key()
        ),
        (None, None) => "unsigned".to_owned(),
    };
    println!(
        "{}: ok: {} entries; {} blobs ({}) match their digests; {signature}",
        file.display(),
        verified.catalog.index.entries.len(),
        verified.blobs,
        human_bytes(verified.blob_bytes),
    );
    Ok(())
}
