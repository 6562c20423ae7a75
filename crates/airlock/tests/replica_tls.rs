//! Several staging hosts from one inventory: `airlock render` writes each replica's gateway
//! config, and real gateways started from them the way `airlock deploy` starts them (the first
//! one's CA placed in the others' `data_dir/tls`) each serve a certificate for its own names
//! that the one CA nodes trust verifies, and for no other replica's.

use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_testkit::{Killed, free_port, require_tool, serve_airlock};

const REPLICAS: [&str; 3] = [
    "north.example.test",
    "south.example.test",
    "east.example.test",
];

/// A started replica: its gateway, its loopback port and data directory.
struct Replica {
    _gateway: Killed,
    port: u16,
    data_dir: PathBuf,
}

/// `replica`'s rendered config with what a test on one machine must change: its own data
/// directory and loopback ports. Every other line is as rendered.
fn localized(rendered: &str, data_dir: &Path, port: u16) -> String {
    let mut out = String::new();
    let mut replaced = 0;
    for line in rendered.lines() {
        let line = if line.starts_with("data_dir = ") {
            replaced += 1;
            format!("data_dir = \"{}\"", data_dir.display())
        } else if line == "listen = \"0.0.0.0:443\"" {
            replaced += 1;
            format!("listen = \"127.0.0.1:{port}\"")
        } else if line == "listen = \"0.0.0.0:3128\"" {
            replaced += 1;
            format!("listen = \"127.0.0.1:{}\"", free_port())
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
    }
    assert_eq!(
        replaced, 3,
        "data_dir, listen and egress listen in:\n{rendered}"
    );
    out
}

fn start(dir: &Path, name: &str, rendered: &str, ca: Option<&Path>) -> Replica {
    let data_dir = dir.join(format!("data-{name}"));
    if let Some(ca) = ca {
        // What deploy places before the replica's gateway first starts.
        let tls = data_dir.join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        for file in ["ca.crt", "ca.key"] {
            std::fs::copy(ca.join(file), tls.join(file)).unwrap();
        }
    }
    let port = free_port();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, localized(rendered, &data_dir, port)).unwrap();
    let log = dir.join(format!("{name}.log"));
    let gateway = serve_airlock(
        Path::new(env!("CARGO_BIN_EXE_airlock")),
        &config,
        &log,
        port,
    );
    Replica {
        _gateway: gateway,
        port,
        data_dir,
    }
}

/// `GET https://<name>:<port>/healthz` with curl, `name` resolving to loopback, trusting
/// only `ca`.
fn healthz(name: &str, port: u16, ca: &Path) -> std::process::Output {
    Command::new(require_tool("curl", "curl"))
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(format!("https://{name}:{port}/healthz"))
        .output()
        .unwrap()
}

#[test]
fn each_replica_serves_its_own_name_under_the_one_site_ca() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["s3.id", "s3.secret"] {
        std::fs::write(dir.path().join(file), format!("{file}\n")).unwrap();
    }
    // Nothing listens on the discard port: the gateways start without their bucket, as
    // they do when it is down, and nothing here leaves loopback.
    let storage = format!(
        "    airlock_storage_backend: s3\n    airlock_s3_bucket: airlock\n    \
         airlock_s3_endpoint: \"http://127.0.0.1:9\"\n    airlock_s3_region: garage\n    \
         airlock_s3_access_key_id_file: {}\n    airlock_s3_secret_access_key_file: {}",
        dir.path().join("s3.id").display(),
        dir.path().join("s3.secret").display()
    );
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        airlock_testkit::inventory::replicated_site(&storage),
    )
    .unwrap();
    let out = dir.path().join("rendered");
    let render = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("render")
        .arg("-i")
        .arg(&inventory)
        .arg("--out")
        .arg(&out)
        .env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
        .output()
        .unwrap();
    assert!(
        render.status.success(),
        "{}",
        String::from_utf8_lossy(&render.stderr)
    );
    let configs: Vec<String> = REPLICAS
        .iter()
        .map(|r| std::fs::read_to_string(out.join(format!("staging/{r}/airlock.toml"))).unwrap())
        .collect();
    for (config, name) in configs.iter().zip(REPLICAS) {
        let check = Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(["config", "check"])
            .arg(out.join(format!("staging/{name}/airlock.toml")))
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(config.contains("backend = \"s3\""), "{config}");
    }

    let first = start(dir.path(), REPLICAS[0], &configs[0], None);
    let site_ca = first.data_dir.join("tls");
    let trusted = site_ca.join("ca.crt");
    let others: Vec<Replica> = REPLICAS[1..]
        .iter()
        .zip(&configs[1..])
        .map(|(name, config)| start(dir.path(), name, config, Some(&site_ca)))
        .collect();
    let replicas: Vec<&Replica> = std::iter::once(&first).chain(&others).collect();

    for (replica, name) in replicas.iter().zip(REPLICAS) {
        for served in [name.to_owned(), format!("harbor.{name}")] {
            let answer = healthz(&served, replica.port, &trusted);
            assert!(
                answer.status.success(),
                "{served} under the site CA: {}",
                String::from_utf8_lossy(&answer.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&answer.stdout), "ok\n");
        }
        // The replica kept the site CA rather than making its own.
        assert_eq!(
            std::fs::read(replica.data_dir.join("tls/ca.crt")).unwrap(),
            std::fs::read(&trusted).unwrap(),
            "{name}"
        );
    }
    // A replica's certificate is for its own names only.
    let wrong = healthz("harbor.north.example.test", others[0].port, &trusted);
    assert!(
        !wrong.status.success(),
        "south.example.test answered as north"
    );
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}
