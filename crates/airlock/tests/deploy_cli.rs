//! The control-node commands end to end: `airlock vault`, `inventory check`, `render`,
//! `explain-image`, run as a user would run them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PASSWORD: &str = "site password";

fn airlock() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_airlock"));
    command.env_remove("ANSIBLE_VAULT_PASSWORD_FILE");
    command
}

fn run(mut command: Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "airlock failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "airlock should have failed; stdout:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn password_file(dir: &Path) -> PathBuf {
    let file = dir.join("vault-pass");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    file
}

fn ansible_vault(dir: &Path) -> Command {
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join("ansible-vault").is_file())
    });
    assert!(
        found,
        "`ansible-vault` is not installed: install the Debian package `ansible-core`"
    );
    let mut command = Command::new("ansible-vault");
    command.env("HOME", dir).env("LC_ALL", "C.UTF-8");
    command
}

#[test]
fn new_secret_prints_a_snippet_that_ansible_vault_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let pass = password_file(dir.path());
    let mut command = airlock();
    command
        .args(["vault", "new-secret", "--name", "staging_k3s_token"])
        .env("ANSIBLE_VAULT_PASSWORD_FILE", &pass);
    let snippet = ok(&run(command, b""));
    assert!(
        snippet.starts_with("staging_k3s_token: !vault |\n          $ANSIBLE_VAULT;1.1;AES256\n")
    );
    // The envelope alone, unindented, is a vault file ansible-vault can read.
    let envelope: String = snippet
        .lines()
        .skip(1)
        .flat_map(|l| [l.trim(), "\n"])
        .collect();
    let file = dir.path().join("token.vault");
    std::fs::write(&file, envelope).unwrap();
    let mut decrypt = ansible_vault(dir.path());
    decrypt
        .arg("decrypt")
        .arg(&file)
        .args(["--output", "-", "--vault-password-file"])
        .arg(&pass);
    let secret = run(decrypt, b"");
    let secret = String::from_utf8(secret.stdout).unwrap();
    assert_eq!(secret.len(), 64, "{secret:?}");
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn encrypt_string_with_vault_id_and_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let pass = password_file(dir.path());
    let mut command = airlock();
    command
        .args(["vault", "encrypt-string", "--name", "db", "--vault-id"])
        .arg(format!("prod@{}", pass.display()));
    let snippet = ok(&run(command, b"s3cret\n"));
    assert!(
        snippet.contains("$ANSIBLE_VAULT;1.2;AES256;prod"),
        "{snippet}"
    );

    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "plain notes\n").unwrap();
    let mut encrypt = airlock();
    encrypt
        .args(["vault", "encrypt"])
        .arg(&file)
        .arg("--vault-password-file")
        .arg(&pass);
    ok(&run(encrypt, b""));
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .starts_with("$ANSIBLE_VAULT;1.1;AES256")
    );
    let mut view = airlock();
    view.args(["vault", "view"])
        .arg(&file)
        .arg("--vault-password-file")
        .arg(&pass);
    assert_eq!(ok(&run(view, b"")), "plain notes\n");
    let mut decrypt = airlock();
    decrypt
        .args(["vault", "decrypt"])
        .arg(&file)
        .arg("--vault-password-file")
        .arg(&pass);
    ok(&run(decrypt, b""));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "plain notes\n");
}

/// Regression: `vault decrypt --output` wrote plaintext through a predictable temporary
/// (`.<name>.airlock-tmp`, opened without `O_EXCL`, so a symlink there was followed) and left
/// it world-readable under a permissive umask.
#[cfg(unix)]
#[test]
fn vault_decrypt_output_is_0600_under_umask_000_and_follows_no_planted_symlink() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let pass = password_file(dir.path());
    let vaulted = dir.path().join("secrets.yml");
    std::fs::write(&vaulted, "k3s_token: plain-secret\n").unwrap();
    let mut encrypt = airlock();
    encrypt
        .args(["vault", "encrypt"])
        .arg(&vaulted)
        .arg("--vault-password-file")
        .arg(&pass);
    ok(&run(encrypt, b""));

    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let output = out_dir.join("secrets.plain.yml");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "not yours\n").unwrap();
    std::os::unix::fs::symlink(&victim, out_dir.join(".secrets.plain.yml.airlock-tmp")).unwrap();

    // A umask of 000 would make a default-mode file 0666.
    let mut decrypt = Command::new("sh");
    decrypt
        .arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_airlock"))
        .args(["vault", "decrypt"])
        .arg(&vaulted)
        .arg("--output")
        .arg(&output)
        .arg("--vault-password-file")
        .arg(&pass)
        .env_remove("ANSIBLE_VAULT_PASSWORD_FILE");
    ok(&run(decrypt, b""));

    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "k3s_token: plain-secret\n"
    );
    let mode = std::fs::symlink_metadata(&output)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "plaintext mode {mode:o}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not yours\n");
    let leftovers: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

#[test]
fn vault_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let pass = password_file(dir.path());
    let mut no_password = airlock();
    no_password.args(["vault", "new-secret", "--name", "x"]);
    assert!(failed(&run(no_password, b"")).contains("--vault-password-file"));

    let file = dir.path().join("f");
    std::fs::write(&file, "data").unwrap();
    let mut encrypt = airlock();
    encrypt
        .args(["vault", "encrypt"])
        .arg(&file)
        .arg("--vault-password-file")
        .arg(&pass);
    ok(&run(encrypt, b""));
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap();
    let mut view = airlock();
    view.args(["vault", "view"])
        .arg(&file)
        .arg("--vault-password-file")
        .arg(&wrong);
    assert!(failed(&run(view, b"")).contains("wrong vault password"));

    let script = dir.path().join("fails.sh");
    std::fs::write(&script, "#!/bin/sh\necho locked >&2\nexit 3\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut scripted = airlock();
    scripted
        .args(["vault", "view"])
        .arg(&file)
        .arg("--vault-password-file")
        .arg(&script);
    let err = failed(&run(scripted, b""));
    assert!(
        err.contains("exited with") && err.contains("locked"),
        "{err}"
    );

    let mut bad_name = airlock();
    bad_name
        .args([
            "vault",
            "new-secret",
            "--name",
            "db-password",
            "--vault-password-file",
        ])
        .arg(&pass);
    assert!(failed(&run(bad_name, b"")).contains("`db-password` is not a variable name"));

    let mut empty = airlock();
    empty
        .args([
            "vault",
            "encrypt-string",
            "--name",
            "x",
            "--vault-password-file",
        ])
        .arg(&pass);
    assert!(failed(&run(empty, b"\n")).contains("empty"));
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../airlock-site/tests/fixtures")
        .join(name)
}

fn with_inventory(args: &[&str], inventory: &Path) -> Command {
    let mut command = airlock();
    command.args(args).arg("-i").arg(inventory);
    command
}

#[test]
fn inventory_check_accepts_the_example_and_prints_a_summary() {
    let mut command = with_inventory(&["inventory", "check"], &fixture("inventory.example.yaml"));
    command.env("ANSIBLE_VAULT_PASSWORD_FILE", fixture("vault-password"));
    let output = run(command, b"");
    let stdout = ok(&output);
    assert!(stdout.contains("air-gapped K3s site"), "{stdout}");
    assert!(stdout.contains("ok: 7 warning(s)"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "inventory.example.yaml:38: warning: `harbor_admin_password` is still a shell command"
        ),
        "{stderr}"
    );
}

#[test]
fn inventory_check_names_where_k3s_settings_come_from_and_warns_on_e_overrides() {
    let inventory = fixture("scout-layout/inventory.yaml");
    let versions = fixture("scout-layout/group_vars/all/versions.yaml");
    let mut command = with_inventory(&["inventory", "check"], &inventory);
    command
        .arg("--vault-password-file")
        .arg(fixture("vault-password"));
    let stdout = ok(&run(command, b""));
    let pinned = format!("k3s_version v1.31.4+k3s1 ({}:4)", versions.display());
    assert!(stdout.contains(&pinned), "{stdout}");

    let mut command = with_inventory(&["inventory", "check"], &inventory);
    command
        .arg("--vault-password-file")
        .arg(fixture("vault-password"))
        .args(["-e", "k3s_version=v1.32.0+k3s1"]);
    let output = run(command, b"");
    let stdout = ok(&output);
    assert!(stdout.contains("k3s_version v1.32.0+k3s1 (-e)"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warning = format!(
        "{}:4: warning: `-e k3s_version=v1.32.0+k3s1` overrides `v1.31.4+k3s1` set here",
        versions.display()
    );
    assert!(stderr.contains(&warning), "{stderr}");

    // Without the password the encrypted group_vars file is an error naming it.
    let command = with_inventory(&["inventory", "check"], &inventory);
    let stderr = failed(&run(command, b""));
    let vault = fixture("scout-layout/group_vars/all/vault.yml");
    let error = format!(
        "{}:1: error: {} is vault-encrypted and no vault password was given",
        vault.display(),
        vault.display()
    );
    assert!(stderr.contains(&error), "{stderr}");
}

#[test]
fn inventory_check_fails_on_a_wrong_password_naming_lines() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "wrong\n").unwrap();
    let mut command = with_inventory(&["inventory", "check"], &fixture("inventory.example.yaml"));
    command.arg("--vault-password-file").arg(&wrong);
    let stderr = failed(&run(command, b""));
    assert!(
        stderr.contains("inventory.example.yaml:11: error: wrong vault password"),
        "{stderr}"
    );
    assert!(stderr.contains("1 error(s)"), "{stderr}");
}

#[test]
fn inventory_check_reports_a_missing_inventory_and_bad_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let stderr = failed(&run(with_inventory(&["inventory", "check"], &missing), b""));
    assert!(
        stderr.contains("cannot read inventory") && stderr.contains("nope.yaml"),
        "{stderr}"
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "all:\n  vars: [\n").unwrap();
    let stderr = failed(&run(with_inventory(&["inventory", "check"], &bad), b""));
    assert!(stderr.contains("bad.yaml:"), "{stderr}");
}

#[test]
fn render_writes_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut command = with_inventory(&["render"], &fixture("inventory.example.yaml"));
    command
        .arg("--out")
        .arg(&out)
        .arg("--vault-password-file")
        .arg(fixture("vault-password"));
    let stdout = ok(&run(command, b""));
    for file in [
        "staging/airlock.toml",
        "nodes/registries.yaml",
        "nodes/certs.d/docker.io/hosts.toml",
        "nodes/registries.conf",
        "keycloak-proxy-mappings.txt",
        "clients/pip.conf",
        "clients/condarc",
        "clients/settings.xml",
        "clients/airlock.repo",
    ] {
        assert!(
            out.join(file).is_file(),
            "{file} missing; printed:\n{stdout}"
        );
    }
}

#[test]
fn render_needs_no_password_when_no_rendered_setting_is_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut command = with_inventory(&["render"], &fixture("inventory.example.yaml"));
    command.arg("--out").arg(&out);
    ok(&run(command, b""));
    assert!(out.join("staging/airlock.toml").is_file());
}

#[test]
fn render_refuses_an_inventory_with_errors() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        "all:\n  vars:\n    air_gapped: true\nserver:\n  hosts:\n    cp.example.org:\n",
    )
    .unwrap();
    let mut command = with_inventory(&["render"], &inventory);
    command.arg("--out").arg(dir.path().join("out"));
    let stderr = failed(&run(command, b""));
    assert!(
        stderr.contains(
            "inventory.yaml:3: error: `air_gapped` is true but the inventory has no `staging` group"
        ),
        "{stderr}"
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn explain_image_shows_every_runtime_path() {
    let explain = |image: &str| {
        let mut command = with_inventory(&["explain-image"], &fixture("inventory.example.yaml"));
        command
            .arg(image)
            .arg("--vault-password-file")
            .arg(fixture("vault-password"));
        run(command, b"")
    };
    let out = ok(&explain("postgres:15"));
    assert!(
        out.contains("image       docker.io/library/postgres:15"),
        "{out}"
    );
    assert!(out.contains(
        "k3s         GET https://harbor.staging.example.edu/v2/dockerhub-proxy/library/postgres/manifests/15"
    ), "{out}");
    assert!(out.contains(
        "containerd  GET https://harbor.staging.example.edu/v2/library/postgres/manifests/15?ns=docker.io"
    ), "{out}");
    assert!(
        out.contains(
            "gateway     GET https://registry-1.docker.io/v2/library/postgres/manifests/15"
        )
    );

    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let out = ok(&explain(&format!("ghcr.io/org/app@{digest}")));
    assert!(
        out.contains(&format!("/v2/ghcr-proxy/org/app/manifests/{digest}")),
        "{out}"
    );

    let out = ok(&explain("registry.k8s.io/pause:3.9"));
    assert!(out.contains("/v2/k8s-proxy/pause/manifests/3.9"), "{out}");

    let output = explain("registry.example.com/team/tool:1");
    let out = ok(&output);
    assert!(out.contains("unmirrored"), "{out}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: no mirror covers registry.example.com"),
        "{stderr}"
    );

    let stderr = failed(&explain("Not A Reference"));
    assert!(stderr.contains("is not an image reference"), "{stderr}");
}
