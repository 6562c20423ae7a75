//! Garage, an S3-compatible object store, as a single-node cluster on loopback: the real
//! bucket the s3 backend's tests run against.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::daemons::{Killed, free_port, port_open, wait_until};
use crate::tools::require_tool;

/// A running `garage server` with one bucket and one key allowed to use it; killed on drop.
pub struct Garage {
    process: Option<Killed>,
    cli: Cli,
    s3_port: u16,
    /// `http://127.0.0.1:<port>`, the S3 API.
    pub endpoint: String,
    /// `http://127.0.0.1:<port>`, the K2V API on the same buckets.
    pub k2v_endpoint: String,
    pub region: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

impl Garage {
    /// Starts a node whose config, metadata and data live under `dir`, lays out the
    /// cluster, and creates bucket `airlock` and a key that owns it.
    // Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
    #[allow(clippy::unnecessary_debug_formatting)]
    pub fn start(dir: &Path) -> Self {
        let binary = require_tool("garage", "garage (cargo install garage --locked)");
        std::fs::create_dir_all(dir).unwrap();
        let (rpc, s3, k2v, admin) = (free_port(), free_port(), free_port(), free_port());
        let config = dir.join("garage.toml");
        let rpc_secret = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        std::fs::write(
            &config,
            format!(
                "metadata_dir = {:?}\n\
                 data_dir = {:?}\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{rpc_secret}\"\n\
                 [s3_api]\n\
                 s3_region = \"garage\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\n\
                 [k2v_api]\n\
                 api_bind_addr = \"127.0.0.1:{k2v}\"\n\
                 [admin]\n\
                 api_bind_addr = \"127.0.0.1:{admin}\"\n",
                dir.join("meta"),
                dir.join("data"),
            ),
        )
        .unwrap();
        let cli = Cli { binary, config };
        let process = cli.server();
        wait_until("garage's rpc port", Duration::from_secs(30), || {
            port_open(rpc)
        });
        let node = cli.node_id();
        cli.run(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        cli.run(&["layout", "apply", "--version", "1"]);
        cli.run(&["bucket", "create", "airlock"]);
        let key = cli.run(&["key", "create", "airlock-test"]);
        let field = |label: &str| {
            key.lines()
                .find_map(|line| line.trim().strip_prefix(label))
                .map_or_else(
                    || panic!("no {label} in `garage key create`:\n{key}"),
                    |v| v.trim().to_owned(),
                )
        };
        let (key_id, secret) = (field("Key ID:"), field("Secret key:"));
        cli.run(&[
            "bucket", "allow", "--read", "--write", "--owner", "airlock", "--key", &key_id,
        ]);
        wait_until("garage's S3 API", Duration::from_secs(30), || port_open(s3));
        wait_until("garage's K2V API", Duration::from_secs(30), || {
            port_open(k2v)
        });
        Self {
            process: Some(process),
            cli,
            s3_port: s3,
            endpoint: format!("http://127.0.0.1:{s3}"),
            k2v_endpoint: format!("http://127.0.0.1:{k2v}"),
            region: "garage".to_owned(),
            bucket: "airlock".to_owned(),
            key_id,
            secret,
        }
    }
}

impl Garage {
    /// An s3-backed gateway's configuration, written to `<dir>/<name>.toml`: `data_dir`
    /// `<dir>/<name>`, plain HTTP on `port`, the access key in files beside it, `storage`
    /// appended to the `[storage]` table (`local_cache`, `k2v_endpoint`), one OCI proxy `hub`
    /// for docker.io in front of `upstream` (a URL), and `more` after it.
    #[allow(clippy::unnecessary_debug_formatting)]
    pub fn gateway_config(
        &self,
        dir: &Path,
        name: &str,
        port: u16,
        upstream: &str,
        storage: &str,
        more: &str,
    ) -> PathBuf {
        let (id_file, secret_file) = (dir.join("s3.id"), dir.join("s3.secret"));
        std::fs::write(&id_file, &self.key_id).unwrap();
        std::fs::write(&secret_file, &self.secret).unwrap();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\n[tls]\nmode = \"off\"\n\
                 [storage]\nbackend = \"s3\"\nbucket = \"{}\"\nendpoint = \"{}\"\nregion = \"{}\"\n\
                 access_key_id_file = {id_file:?}\nsecret_access_key_file = {secret_file:?}\n{storage}\n\
                 [[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{upstream}\"\n\
                 host = \"docker.io\"\ntag_ttl = \"1h\"\n{more}",
                dir.join(name),
                self.bucket,
                self.endpoint,
                self.region,
            ),
        )
        .unwrap();
        config
    }

    /// Kills the server (`kill -9`): the bucket becomes unreachable until [`Self::resume`].
    pub fn stop(&mut self) {
        self.process = None;
        wait_until("garage to stop", Duration::from_secs(30), || {
            !port_open(self.s3_port)
        });
    }

    /// Starts the server again on the same ports and data: the bucket is back as it was.
    pub fn resume(&mut self) {
        assert!(self.process.is_none(), "garage is running");
        self.process = Some(self.cli.server());
        wait_until("garage's S3 API", Duration::from_secs(30), || {
            port_open(self.s3_port)
        });
    }
}

struct Cli {
    binary: PathBuf,
    config: PathBuf,
}

impl Cli {
    /// `garage server`, its log appended to `garage.log` beside the config.
    fn server(&self) -> Killed {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.with_file_name("garage.log"))
            .unwrap();
        Killed(
            Command::new(&self.binary)
                .arg("-c")
                .arg(&self.config)
                .arg("server")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    /// Runs `garage -c CONFIG args`; panics with its output when it fails.
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "garage {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// The node's id from `garage status`, retried while the node comes up (bounded).
    fn node_id(&self) -> String {
        let mut id = None;
        wait_until("garage status", Duration::from_secs(30), || {
            let output = Command::new(&self.binary)
                .arg("-c")
                .arg(&self.config)
                .arg("status")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            // The first column of the node's row is a hex id (16 characters shown).
            id = stdout
                .lines()
                .filter_map(|line| line.split_whitespace().next())
                .find(|word| word.len() >= 16 && word.chars().all(|c| c.is_ascii_hexdigit()))
                .map(str::to_owned);
            output.status.success() && id.is_some()
        });
        id.expect("waited for it")
    }
}
