//! `deploy/kubernetes/airlock.yaml` agrees with the gateway: its `ConfigMap`'s `airlock.toml`
//! passes airlock's own loader (and `airlock config check`) with a shared S3 bucket whose keys
//! are files; every file the config names is mounted, the probes and the Service reach the
//! ports the config listens on, and a real gateway run from that config answers the probe's
//! path on its listener.

use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_ansible::yaml::{Document, Node, parse_str};
use airlock_config::{Config, StorageConfig, TlsMode, raw};
use airlock_testkit::{free_port, require_tool, serve_airlock};

fn manifest_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/airlock.yaml")
}

/// The manifest's documents (separated by `---` lines, as `kubectl apply -f` reads them).
fn documents() -> Vec<Document> {
    let path = manifest_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut chunks = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            chunks.push(String::new());
        } else {
            let chunk = chunks.last_mut().unwrap();
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    chunks
        .iter()
        .map(|chunk| parse_str(chunk, &path).unwrap())
        .filter(|doc| doc.get("kind").is_some())
        .collect()
}

fn of_kind<'d>(docs: &'d [Document], kind: &str) -> &'d Node {
    let found: Vec<&Document> = docs
        .iter()
        .filter(|d| d.get("kind").and_then(Node::as_str) == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} in the manifest");
    &found[0].root
}

fn text<'n>(node: &'n Node, path: &[&str]) -> &'n str {
    let mut at = node;
    for key in path {
        at = at
            .get(key)
            .unwrap_or_else(|| panic!("no `{}` in the manifest", path.join(".")));
    }
    at.as_str()
        .unwrap_or_else(|| panic!("`{}` is not text", path.join(".")))
}

fn seq<'n>(node: &'n Node, key: &str) -> &'n [Node] {
    node.get(key)
        .and_then(Node::as_seq)
        .unwrap_or_else(|| panic!("no list `{key}`"))
}

/// The named item of a list of `{name: …}` mappings.
fn named<'n>(items: &'n [Node], name: &str) -> &'n Node {
    items
        .iter()
        .find(|i| i.get("name").and_then(Node::as_str) == Some(name))
        .unwrap_or_else(|| panic!("nothing named `{name}`"))
}

fn the_config(docs: &[Document]) -> (String, Config) {
    let toml = text(of_kind(docs, "ConfigMap"), &["data", "airlock.toml"]).to_owned();
    let config = Config::from_toml_str(&toml, "the ConfigMap's airlock.toml")
        .unwrap_or_else(|e| panic!("the gateway refuses the ConfigMap's config: {e}"));
    (toml, config)
}

fn the_container(docs: &[Document]) -> &Node {
    let containers = seq(pod_spec(docs), "containers");
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn pod_spec(docs: &[Document]) -> &Node {
    of_kind(docs, "Deployment")
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("spec"))
        .unwrap()
}

/// Where a file the container sees comes from: the volume of the mount it lies under, and
/// its path inside that mount (the `subPath` for a mount of one file).
fn mounted<'n>(docs: &'n [Document], file: &Path) -> (&'n Node, String) {
    let mounts = seq(the_container(docs), "volumeMounts");
    let mount = mounts
        .iter()
        .filter(|m| file.starts_with(text(m, &["mountPath"])))
        .max_by_key(|m| text(m, &["mountPath"]).len())
        .unwrap_or_else(|| panic!("{} is not mounted", file.display()));
    let inside = match mount.get("subPath").and_then(Node::as_str) {
        Some(sub) => {
            assert_eq!(file, Path::new(text(mount, &["mountPath"])));
            sub.to_owned()
        }
        None => file
            .strip_prefix(text(mount, &["mountPath"]))
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    };
    let volume = named(seq(pod_spec(docs), "volumes"), text(mount, &["name"]));
    (volume, inside)
}

/// A Secret volume's file: the Secret, and the key the file comes from.
fn secret_key(volume: &Node, inside: &str) -> (String, String) {
    let secret = volume.get("secret").expect("a Secret volume");
    let name = text(secret, &["secretName"]).to_owned();
    let key = match secret.get("items").and_then(Node::as_seq) {
        Some(items) => text(
            items
                .iter()
                .find(|i| text(i, &["path"]) == inside)
                .unwrap_or_else(|| panic!("no item of {name} at {inside}")),
            &["key"],
        )
        .to_owned(),
        None => inside.to_owned(),
    };
    (name, key)
}

#[test]
fn the_configmap_holds_a_config_the_gateway_accepts_with_a_shared_bucket() {
    let docs = documents();
    let (toml, config) = the_config(&docs);
    let StorageConfig::S3(s3) = &config.storage else {
        panic!("[storage] is not s3: {:?}", config.storage)
    };
    assert!(!s3.bucket.is_empty());
    // One pod's eviction would delete from the bucket what the others still serve.
    assert_eq!(
        (config.cache.max_size, config.cache.unused_for),
        (None, None),
        "replicas on one bucket evict nothing"
    );
    let (Some(id), Some(secret)) = (&s3.access_key_id_file, &s3.secret_access_key_file) else {
        panic!("the S3 keys must come from files: {s3:?}")
    };
    for line in toml.lines().map(str::trim_start) {
        assert!(
            !line.starts_with("access_key_id =") && !line.starts_with("secret_access_key ="),
            "a key written in the config: {line}"
        );
    }
    // The keys are files of a Secret the manifest refers to, never defines.
    for file in [id, secret] {
        let (volume, inside) = mounted(&docs, file);
        let (name, key) = secret_key(volume, &inside);
        assert_eq!(name, "airlock-s3", "{}", file.display());
        assert!(!key.is_empty());
    }
    assert!(
        docs.iter()
            .all(|d| d.get("kind").and_then(Node::as_str) != Some("Secret")),
        "no Secret is written in the manifest"
    );

    // The binary's own check, as an operator runs it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("airlock.toml");
    std::fs::write(&file, &toml).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn probes_ports_and_mounts_agree_with_the_config() {
    let docs = documents();
    let (_, config) = the_config(&docs);
    let container = the_container(&docs);
    let port_of = |name: &str| -> u16 {
        text(named(seq(container, "ports"), name), &["containerPort"])
            .parse()
            .unwrap()
    };
    // Named ports keep the probes and the Service on what the config listens on.
    assert_eq!(port_of("https"), config.server.listen.port());
    let egress = config.egress.as_ref().expect("[egress]");
    assert_eq!(port_of("egress"), egress.listen.port());
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = container.get(probe).and_then(|p| p.get("httpGet")).unwrap();
        assert_eq!(text(get, &["path"]), "/healthz", "{probe}");
        let port = text(get, &["port"]);
        let port: u16 = port.parse().unwrap_or_else(|_| port_of(port));
        assert_eq!(port, config.server.listen.port(), "{probe}");
        let scheme = if config.tls.mode == TlsMode::Off {
            "HTTP"
        } else {
            "HTTPS"
        };
        assert_eq!(text(get, &["scheme"]), scheme, "{probe}");
    }
    let service = of_kind(&docs, "Service");
    let spec = service.get("spec").unwrap();
    let pod_labels = of_kind(&docs, "Deployment")
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .unwrap();
    for (key, value) in spec.get("selector").and_then(Node::as_map).unwrap() {
        assert_eq!(
            pod_labels.get(key.as_str().unwrap()).and_then(Node::as_str),
            value.as_str(),
            "the Service selects the pods"
        );
    }
    for port in seq(spec, "ports") {
        let target = text(port, &["targetPort"]);
        let target: u16 = target.parse().unwrap_or_else(|_| port_of(target));
        assert!(
            [config.server.listen.port(), egress.listen.port()].contains(&target),
            "Service port {} goes nowhere the gateway listens",
            text(port, &["port"])
        );
    }

    // Three replicas, non-root, on a read-only root: the gateway writes only its data
    // directory, which is the pod's own.
    let deployment = of_kind(&docs, "Deployment");
    assert_eq!(text(deployment, &["spec", "replicas"]), "3");
    let pod = pod_spec(&docs);
    assert_eq!(
        pod.get("securityContext")
            .and_then(|s| s.get("runAsNonRoot"))
            .and_then(Node::as_bool),
        Some(true)
    );
    let own = container.get("securityContext").unwrap();
    assert_eq!(
        own.get("readOnlyRootFilesystem").and_then(Node::as_bool),
        Some(true)
    );
    assert_eq!(
        own.get("allowPrivilegeEscalation").and_then(Node::as_bool),
        Some(false)
    );
    let (data, _) = mounted(&docs, &config.data_dir);
    assert!(data.get("emptyDir").is_some(), "data_dir is an emptyDir");
    // The container runs the mounted config.
    let args: Vec<&str> = seq(container, "args")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = args.iter().position(|a| *a == "--config").unwrap();
    let (volume, key) = mounted(&docs, Path::new(args[at + 1]));
    assert_eq!(
        text(volume, &["configMap", "name"]),
        text(of_kind(&docs, "ConfigMap"), &["metadata", "name"])
    );
    assert_eq!(key, "airlock.toml");
    if config.tls.mode == TlsMode::Files {
        for file in [&config.tls.cert, &config.tls.key] {
            let file = file.as_ref().unwrap();
            let (volume, inside) = mounted(&docs, file);
            let (name, _) = secret_key(volume, &inside);
            assert_eq!(name, "airlock-tls", "{}", file.display());
        }
    }
}

/// The probe's path on a gateway run from the `ConfigMap`'s config: only what one machine needs
/// changes (loopback ports, a scratch data directory and key files, a generated certificate,
/// a bucket address nothing listens on).
#[test]
fn a_gateway_run_from_the_configmap_answers_the_probe() {
    let docs = documents();
    let (_, config) = the_config(&docs);
    let probe = the_container(&docs)
        .get("readinessProbe")
        .and_then(|p| p.get("httpGet"))
        .unwrap();
    let path = text(probe, &["path"]);
    let dir = tempfile::tempdir().unwrap();
    let mut raw = config.to_raw();
    let port = free_port();
    raw.data_dir = Some(dir.path().join("data"));
    raw.server.listen = Some(([127, 0, 0, 1], port).into());
    raw.tls = raw::Tls {
        mode: Some(TlsMode::SelfSigned),
        ..raw::Tls::default()
    };
    if let Some(egress) = raw.egress.as_mut() {
        egress.listen = Some(([127, 0, 0, 1], free_port()).into());
    }
    let storage = raw.storage.as_mut().unwrap();
    storage.endpoint = Some("http://127.0.0.1:9".to_owned());
    for (file, name) in [
        (&mut storage.access_key_id_file, "access-key-id"),
        (&mut storage.secret_access_key_file, "secret-access-key"),
    ] {
        let local = dir.path().join(name);
        std::fs::write(&local, format!("{name}\n")).unwrap();
        *file = Some(local);
    }
    let file = dir.path().join("airlock.toml");
    std::fs::write(&file, raw.to_toml()).unwrap();
    let log = dir.path().join("gateway.log");
    let _gateway = serve_airlock(Path::new(env!("CARGO_BIN_EXE_airlock")), &file, &log, port);
    let answer = Command::new(require_tool("curl", "curl"))
        .args(["-sS", "-k", "--max-time", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&answer.stdout),
        "200",
        "{}\n{}",
        String::from_utf8_lossy(&answer.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
