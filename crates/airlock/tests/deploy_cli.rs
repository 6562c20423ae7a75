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
        .map(|l| format!("{}\n", l.trim()))
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
