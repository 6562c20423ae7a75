//! Python wheels the tests build, and pip run as a client of an index, isolated from the
//! machine's pip configuration and proxies.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Writes one pure-Python wheel per `name==version[;requirement,...]` argument with Python's
/// zipfile, and its METADATA beside it as `<wheel>.metadata` (what a PEP 658 index serves).
const BUILD: &str = r#"
import base64, hashlib, os, sys, zipfile
out = sys.argv[1]
def wheel(name, version, requires):
    dist = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": metadata,
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: airlock-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    path = os.path.join(out, f"{name}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        for member, text in files.items():
            z.writestr(member, text)
    with open(path + ".metadata", "w") as f:
        f.write(metadata)
for arg in sys.argv[2:]:
    pin, _, requires = arg.partition(";")
    name, version = pin.split("==")
    wheel(name, version, [r for r in requires.split(",") if r])
"#;

/// Builds `NAME-VERSION-py3-none-any.whl` for each `(name, version)` into `dir/wheels`,
/// and returns that directory. Panics with a clear message when python3 cannot run.
pub fn build_wheels(dir: &Path, wheels: &[(&str, &str)]) -> PathBuf {
    let wheels: Vec<_> = wheels
        .iter()
        .map(|&(name, version)| (name, version, &[][..]))
        .collect();
    build_wheels_requiring(dir, &wheels)
}

/// [`build_wheels`] for `(name, version, requirements)`: each requirement becomes a
/// `Requires-Dist` line of the wheel's METADATA (and of `<wheel>.metadata`).
pub fn build_wheels_requiring(dir: &Path, wheels: &[(&str, &str, &[&str])]) -> PathBuf {
    let out = dir.join("wheels");
    std::fs::create_dir_all(&out).expect("create the wheels directory");
    let built =
        Command::new("python3")
            .args(["-c", BUILD])
            .arg(&out)
            .args(wheels.iter().map(|(name, version, requires)| {
                format!("{name}=={version};{}", requires.join(","))
            }))
            .output()
            .expect("python3 runs (apt-get install python3; run scripts/test.sh)");
    assert!(
        built.status.success(),
        "building wheels failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

/// Panics unless `python3 -m pip` runs.
pub fn require_pip() {
    let version = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "`python3 -m pip` is not available: apt-get install python3-pip (run scripts/test.sh)"
    );
}

/// `python3 -m pip ARGS --index-url INDEX`, with no configuration file, no proxy, no cache
/// and no retries.
pub fn pip(args: &[&str], index: &str) -> Output {
    let mut command = Command::new("python3");
    command.args(["-m", "pip"]).args(args);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("PIP_") || key.to_ascii_lowercase().ends_with("_proxy") {
            command.env_remove(key);
        }
    }
    command
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("NO_PROXY", "*")
        .args(["--index-url", index])
        .args([
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-input",
            "--retries",
            "0",
            "--timeout",
            "20",
        ]);
    command.output().expect("run python3 -m pip")
}
