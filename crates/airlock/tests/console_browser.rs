//! The console in a real browser: headless Chromium driven through chromedriver by selenium
//! (tests/console/browser.py) against the real `airlock serve` with its self-signed TLS, an
//! image pulled through it by skopeo moments before from Debian's `docker-registry`. Logs in
//! (a wrong password first), finds the image with its size, pins it, sees it pinned and the
//! pull in the audit view. Screenshots are left in the target's test directory.

// Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
#![allow(clippy::unnecessary_debug_formatting)]

use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_testkit::{
    DockerRegistry, Image, Killed, free_port, human_bytes, require_tool, run, serve_airlock,
};

const PASSWORD: &str = "a console password";

/// The python with selenium: the test's own environment (scripts/test.sh puts it first on
/// PATH). A missing module fails the test with what to install.
fn selenium_python() -> PathBuf {
    let python = require_tool("python3", "python3");
    let probe = Command::new(&python)
        .args(["-c", "import selenium"])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "python3 cannot import selenium: run scripts/test.sh (it installs selenium into a virtual environment it puts on PATH)"
    );
    python
}

fn start_gateway(dir: &Path, upstream: &DockerRegistry, port: u16) -> Killed {
    let hash = airlock_config::hash_password(PASSWORD.as_bytes()).unwrap();
    let config = dir.join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\nhostname = \"localhost\"\n\
             [tls]\nmode = \"self-signed\"\n\
             [admin]\nusers = [{{ name = \"admin\", password_hash = \"{hash}\" }}]\n\
             [[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"{}\"\nhost = \"docker.io\"\n",
            dir.join("data"),
            upstream.url()
        ),
    )
    .unwrap();
    serve_airlock(
        Path::new(env!("CARGO_BIN_EXE_airlock")),
        &config,
        &dir.join("airlock.log"),
        port,
    )
}

#[test]
fn an_operator_logs_in_finds_the_pulled_image_pins_it_and_sees_the_pull_audited() {
    require_tool("chromium", "chromium");
    require_tool("chromedriver", "chromium-driver");
    let python = selenium_python();
    let skopeo = require_tool("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    let registry = DockerRegistry::start(dir);
    let image = Image::random(&[120_000, 80_000]);
    registry.push(&image, dir, "library/postgres", "15");

    let port = free_port();
    let _gateway = start_gateway(dir, &registry, port);
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(dir.join("data/tls/ca.crt"), certs.join("ca.crt")).unwrap();
    run(Command::new(&skopeo)
        .args(["copy", "--src-cert-dir"])
        .arg(&certs)
        .arg(format!("docker://localhost:{port}/hub/library/postgres:15"))
        .arg(format!("dir:{}", dir.join("pulled").display())));

    let size =
        image.manifest.len() as u64 + image.blobs().iter().map(|b| b.len() as u64).sum::<u64>();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let output = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser.py"))
        .arg(format!("https://localhost:{port}"))
        .args([
            "admin",
            PASSWORD,
            "hub",
            "library/postgres:15",
            &human_bytes(size),
        ])
        .arg(&shots)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the browser test failed:\n{}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(dir.join("airlock.log")).unwrap_or_default()
    );
    for shot in [
        "console-overview.png",
        "console-pinned.png",
        "console-audit.png",
    ] {
        let bytes = std::fs::read(shots.join(shot)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{shot} is a PNG");
    }
    println!("screenshots: {}", shots.display());
}
