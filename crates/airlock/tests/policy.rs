//! `[[policy]]` at the gate with real clients: Debian's `docker-registry` as the upstream,
//! the real `airlock serve` binary with self-signed TLS in front of it, and skopeo and
//! containerd's `ctr` (with a generated `hosts.toml`) pulling through it.
//!
//! A denied repository is `DENIED` naming the rule for both clients; an unsigned image
//! under `require_cosign` is refused and the signed one pulls (signatures made as
//! `cosign sign --key` makes them, since cosign is not packaged); a `mode = "log"` rule
//! lets the pull through and records it; a layer over `max_blob_size` is refused and never
//! stored. Every tool is required: a missing one fails the test with the package to install.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

#[path = "bundles/registry.rs"]
#[allow(dead_code)]
mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airlock_testkit::{
    Containerd, DockerRegistry, Image, Index, Killed as Running, Platform, free_port, require_tool,
    serve_airlock, tar_layer,
};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use registry::{Pusher, payload, sign};

const AMD64: Platform = Platform {
    os: "linux",
    arch: "amd64",
};

/// The gateway under test and what the clients need to reach it.
struct Gateway {
    _process: Running,
    port: u16,
    log: PathBuf,
    certs: PathBuf,
    hosts: PathBuf,
    data: PathBuf,
}

impl Gateway {
    /// `airlock serve` with one Docker Hub proxy in front of `upstream_port` and `policy`.
    fn start(dir: &Path, upstream_port: u16, policy: &str) -> Self {
        let port = free_port();
        let data = dir.join("airlock-data");
        let config = dir.join("airlock.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\nhostname = \"localhost\"\n[tls]\nmode = \"self-signed\"\n\
                 [[proxy]]\nname = \"dockerhub-proxy\"\nformat = \"oci\"\nupstream = \"http://127.0.0.1:{upstream_port}\"\nhost = \"docker.io\"\n\
                 {policy}"
            ),
        )
        .unwrap();
        let log = dir.join("airlock.log");
        let process = serve_airlock(
            Path::new(env!("CARGO_BIN_EXE_airlock")),
            &config,
            &log,
            port,
        );
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::copy(data.join("tls/ca.crt"), certs.join("ca.crt")).unwrap();
        let hosts = dir.join("certs.d");
        std::fs::create_dir_all(hosts.join("docker.io")).unwrap();
        // `server` is a closed loopback port: a failed mirror must not fall back anywhere.
        std::fs::write(
            hosts.join("docker.io/hosts.toml"),
            format!(
                "server = \"https://127.0.0.1:9\"\n\n[host.\"https://localhost:{port}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = {:?}\n",
                data.join("tls/ca.crt")
            ),
        )
        .unwrap();
        Self {
            _process: process,
            port,
            log,
            certs,
            hosts,
            data,
        }
    }

    /// `skopeo copy` of `repo:tag` through the Harbor project path into a fresh directory.
    fn skopeo(&self, dir: &Path, image: &str) -> Output {
        let out = dir.join(format!("skopeo-{}", image.replace(['/', ':'], "_")));
        Command::new(require_tool("skopeo", "skopeo"))
            .args(["copy", "--src-cert-dir"])
            .arg(&self.certs)
            .arg(format!(
                "docker://localhost:{}/dockerhub-proxy/{image}",
                self.port
            ))
            .arg(format!("dir:{}", out.display()))
            .output()
            .unwrap()
    }

    /// `curl` of a registry API path, trusting the gateway's CA: status line and body.
    fn curl(&self, path: &str) -> String {
        let output = Command::new(require_tool("curl", "curl"))
            .args(["--silent", "--show-error", "--include", "--cacert"])
            .arg(self.certs.join("ca.crt"))
            .arg(format!("https://localhost:{}{path}", self.port))
            .output()
            .unwrap();
        text(&output)
    }

    /// `ctr images pull docker.io/<image>` through the `hosts.toml` mirror.
    fn ctr(&self, containerd: &Containerd, image: &str) -> Output {
        Command::new(require_tool("ctr", "containerd"))
            .arg("--address")
            .arg(&containerd.socket)
            .args([
                "--namespace",
                "airlock-test",
                "images",
                "pull",
                "--snapshotter",
                "native",
                "--hosts-dir",
            ])
            .arg(&self.hosts)
            .arg(format!("docker.io/{image}"))
            .output()
            .unwrap()
    }

    /// The gateway's log (plain text: colors are for terminals only).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// The audit trail's lines.
    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.data.join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Whether the store holds a blob with these bytes.
    fn stores(&self, bytes: &[u8]) -> bool {
        let hex = airlock_types::Digest::of(bytes).hex().to_owned();
        airlock_store::layout::store_root(&self.data)
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .exists()
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn succeeded(output: &Output, what: &str) {
    assert!(output.status.success(), "{what} failed: {}", text(output));
}

fn refused(output: &Output, what: &str, says: &[&str]) -> String {
    let text = text(output);
    assert!(!output.status.success(), "{what} was let through: {text}");
    for s in says {
        assert!(text.contains(s), "{what}: {s:?} not in {text}");
    }
    text
}

fn image(name: &str) -> Image {
    Image::from_layers(
        vec![tar_layer(&format!("{name}.txt"), name.as_bytes())],
        AMD64,
    )
}

#[test]
fn denied_repositories_log_mode_and_blob_sizes_with_skopeo_and_containerd() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let upstream = DockerRegistry::start(dir);
    let push = Pusher::new(upstream.port);
    for name in ["evil", "hello", "watched"] {
        push.image(&format!("library/{name}"), "1", &image(name));
    }
    // One layer of 64 KiB random bytes: over the limit, and no gzip makes it smaller.
    let big = Image::random(&[64 << 10]);
    push.image("library/big", "1", &big);

    let gateway = Gateway::start(
        dir,
        upstream.port,
        "[[policy]]\nname = \"watch\"\ndeny = [\"library/watched\"]\nmode = \"log\"\n\
         [[policy]]\nname = \"no-evil\"\nproxy = \"dockerhub-proxy\"\ndeny = [\"library/evil*\"]\n\
         [[policy]]\nname = \"small-blobs\"\nmax_blob_size = \"32KiB\"\n",
    );

    // skopeo reads the DENIED error's message, rule and reason.
    let output = gateway.skopeo(dir, "library/evil:1");
    refused(
        &output,
        "skopeo library/evil",
        &["denied", "no-evil", "library/evil*"],
    );
    succeeded(
        &gateway.skopeo(dir, "library/hello:1"),
        "skopeo library/hello",
    );

    // containerd resolves with HEAD (no body to carry the message): it sees the 403.
    let containerd = Containerd::start(&dir.join("containerd"));
    let output = gateway.ctr(&containerd, "library/evil:1");
    refused(&output, "ctr library/evil", &["403 Forbidden"]);
    let output = gateway.ctr(&containerd, "library/hello:1");
    succeeded(&output, "ctr library/hello");
    assert!(
        text(&output).contains("unpacking linux/amd64"),
        "{}",
        text(&output)
    );

    // mode = "log": the pull goes through, and the match is recorded.
    succeeded(
        &gateway.skopeo(dir, "library/watched:1"),
        "skopeo library/watched",
    );
    succeeded(
        &gateway.ctr(&containerd, "library/watched:1"),
        "ctr library/watched",
    );

    // The big layer is refused by its size before it is fetched, and never stored.
    let output = gateway.skopeo(dir, "library/big:1");
    refused(
        &output,
        "skopeo library/big",
        &["denied", "small-blobs", "max_blob_size 32KiB"],
    );
    // Asked for directly, the blob is refused on the size the upstream's HEAD gives: the
    // upstream's own access log shows that HEAD, and no GET.
    let big_layer = airlock_types::Digest::of(&big.layers[0]);
    let answer = gateway.curl(&format!(
        "/v2/dockerhub-proxy/library/big/blobs/{big_layer}"
    ));
    assert!(
        answer.starts_with("HTTP/2 403")
            && answer.contains("DENIED")
            && answer.contains("small-blobs"),
        "{answer}"
    );
    let blob_requests: Vec<String> = upstream
        .requests()
        .into_iter()
        .filter(|line| line.contains(&format!("/v2/library/big/blobs/{big_layer}")))
        .collect();
    assert!(
        !blob_requests.is_empty() && blob_requests.iter().all(|line| line.contains("\"HEAD ")),
        "{blob_requests:?}"
    );
    assert!(
        !gateway.stores(&big.layers[0]),
        "the refused blob was stored"
    );
    assert!(gateway.stores(&big.manifest), "the manifest itself passed");

    // Each denial and log-mode match is a `policy` line in the audit trail, with the client.
    let trail = gateway.audit();
    for (rule, result, item) in [
        ("no-evil", "deny", "library/evil:1"),
        ("watch", "log", "library/watched:1"),
        ("small-blobs", "deny", "library/big"),
    ] {
        assert!(
            trail.iter().any(|line| line["kind"] == "policy"
                && line["rule"] == rule
                && line["result"] == result
                && line["item"] == item
                && line["client"] == "127.0.0.1"),
            "no audit line for {rule} ({result}, {item}): {trail:#?}"
        );
    }
    // `airlock audit` finds them by kind.
    let listed = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["audit", "--kind", "policy", "--config"])
        .arg(dir.join("airlock.toml"))
        .output()
        .unwrap();
    succeeded(&listed, "airlock audit --kind policy");
    let listed = text(&listed);
    for rule in ["rule=no-evil", "rule=watch", "rule=small-blobs"] {
        assert!(listed.contains(rule), "{rule} not in {listed}");
    }
    assert!(!listed.contains(" fetch "), "{listed}");
    let log = gateway.log();
    assert!(
        log.lines()
            .any(|l| l.contains("airlock::policy") && l.contains("rule=\"no-evil\"")),
        "{log}"
    );
    drop(containerd);
}

#[test]
fn require_cosign_refuses_unsigned_images_and_pulls_signed_ones() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let upstream = DockerRegistry::start(dir);
    let push = Pusher::new(upstream.port);
    let org = SigningKey::random(&mut rand::rngs::OsRng);
    let stranger = SigningKey::random(&mut rand::rngs::OsRng);
    let key = dir.join("cosign.pub");
    std::fs::write(
        &key,
        org.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();

    let signed = image("signed");
    push.image("org/signed", "1", &signed);
    let signed_payload = payload("docker.io/org/signed", &signed.digest);
    push.signature(
        "org/signed",
        &signed.digest,
        &[(signed_payload.clone(), sign(&org, &signed_payload))],
    );
    // A multi-platform index: cosign signs the index, not each platform's manifest.
    let arm64 = Platform {
        os: "linux",
        arch: "arm64",
    };
    let arm = Image::from_layers(vec![tar_layer("arch", b"arm64\n")], arm64);
    let multi = Index::new(vec![(AMD64, image("multi-amd64")), (arm64, arm.clone())]);
    push.index("org/multi", "2", &multi);
    let multi_payload = payload("docker.io/org/multi", &multi.digest);
    push.signature(
        "org/multi",
        &multi.digest,
        &[(multi_payload.clone(), sign(&org, &multi_payload))],
    );
    push.image("org/unsigned", "1", &image("unsigned"));
    let forged = image("forged");
    push.image("org/forged", "1", &forged);
    let forged_payload = payload("docker.io/org/forged", &forged.digest);
    push.signature(
        "org/forged",
        &forged.digest,
        &[(forged_payload.clone(), sign(&stranger, &forged_payload))],
    );
    push.image("library/other", "1", &image("other"));

    let gateway = Gateway::start(
        dir,
        upstream.port,
        &format!(
            "[[policy]]\nname = \"signed-org\"\nrequire_cosign = {{ repositories = [\"org/*\"], key = {key:?} }}\n"
        ),
    );
    let containerd = Containerd::start(&dir.join("containerd"));

    succeeded(&gateway.skopeo(dir, "org/signed:1"), "skopeo org/signed");
    let output = gateway.ctr(&containerd, "org/signed:1");
    succeeded(&output, "ctr org/signed");
    assert!(
        text(&output).contains(&signed.digest.to_string()),
        "{}",
        text(&output)
    );
    // A platform manifest is not signed itself: asked for alone, it is refused…
    let arm_by_digest = format!("org/multi@{}", arm.digest);
    refused(
        &gateway.skopeo(dir, &arm_by_digest),
        "skopeo org/multi's arm64 manifest before its index",
        &["signed-org", "is not signed"],
    );
    // …and admitted once its index verified: containerd resolves the index by tag, then
    // fetches its platform's manifest by digest.
    let output = gateway.ctr(&containerd, "org/multi:2");
    succeeded(&output, "ctr org/multi");
    assert!(
        text(&output).contains("unpacking linux/amd64"),
        "{}",
        text(&output)
    );
    succeeded(
        &gateway.skopeo(dir, &arm_by_digest),
        "skopeo org/multi's arm64 manifest after its index",
    );
    // By digest too.
    succeeded(
        &gateway.skopeo(dir, &format!("org/signed@{}", signed.digest)),
        "skopeo org/signed by digest",
    );

    let output = gateway.skopeo(dir, "org/unsigned:1");
    refused(
        &output,
        "skopeo org/unsigned",
        &["signed-org", "is not signed"],
    );
    let output = gateway.skopeo(dir, "org/forged:1");
    refused(
        &output,
        "skopeo org/forged",
        &["signed-org", "does not verify"],
    );
    refused(
        &gateway.ctr(&containerd, "org/unsigned:1"),
        "ctr org/unsigned",
        &["403 Forbidden"],
    );
    let trail = gateway.audit();
    assert!(
        trail.iter().any(|line| line["kind"] == "policy"
            && line["rule"] == "signed-org"
            && line["result"] == "deny"
            && line["item"] == "org/unsigned:1"
            && line["status"] == 403),
        "{trail:#?}"
    );
    // Outside the rule's repositories nothing is asked.
    succeeded(
        &gateway.skopeo(dir, "library/other:1"),
        "skopeo library/other",
    );
    drop(containerd);
}
