//! Interop with the real `ansible-vault` (Debian package `ansible-core`), both directions, for
//! files, `!vault |` strings and vault-ids. A machine without it fails these tests loudly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_ansible::vault::{self, Envelope, VaultSecret};

const PASSWORD: &str = "correct horse battery staple";

fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
    assert!(
        found,
        "`{name}` is not installed: these interop tests need the Debian package `ansible-core` \
         (apt-get install -y ansible-core)"
    );
    let mut command = Command::new(name);
    command.env("LC_ALL", "C.UTF-8").env("ANSIBLE_NOCOLOR", "1");
    command
}

fn checked(output: Output, what: &str) -> Vec<u8> {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pass"), format!("{PASSWORD}\n")).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn password_file(&self) -> PathBuf {
        self.path("pass")
    }

    fn secret(&self) -> VaultSecret {
        VaultSecret::from_file(&self.password_file(), None).unwrap()
    }

    fn ansible_vault(&self) -> Command {
        let mut command = tool("ansible-vault");
        command.env("HOME", self.dir.path());
        command
    }
}

fn vault_id_arg(label: &str, file: &Path) -> String {
    format!("{label}@{}", file.display())
}

#[test]
fn ansible_vault_decrypts_files_airlock_encrypted() {
    let site = Site::new();
    let plaintext: Vec<u8> = (0u8..=255).chain(b"tail\n".iter().copied()).collect();
    for label in [None, Some("prod")] {
        let file = site.path("secret.bin");
        std::fs::write(
            &file,
            vault::encrypt(&plaintext, &site.secret(), label).unwrap(),
        )
        .unwrap();
        let mut command = site.ansible_vault();
        command.arg("decrypt").arg(&file).args(["--output", "-"]);
        match label {
            Some(label) => command
                .arg("--vault-id")
                .arg(vault_id_arg(label, &site.password_file())),
            None => command
                .arg("--vault-password-file")
                .arg(site.password_file()),
        };
        let out = checked(command.output().unwrap(), "ansible-vault decrypt");
        assert_eq!(out, plaintext, "label {label:?}");
    }
}

#[test]
fn airlock_decrypts_files_ansible_vault_encrypted() {
    let site = Site::new();
    for label in [None, Some("dev")] {
        let file = site.path("plain.txt");
        std::fs::write(&file, "line one\nline two: ünïcode\n").unwrap();
        let mut command = site.ansible_vault();
        command.arg("encrypt").arg(&file);
        match label {
            Some(label) => command
                .arg("--vault-id")
                .arg(vault_id_arg(label, &site.password_file())),
            None => command
                .arg("--vault-password-file")
                .arg(site.password_file()),
        };
        checked(command.output().unwrap(), "ansible-vault encrypt");
        let text = std::fs::read_to_string(&file).unwrap();
        let envelope = Envelope::parse(&text).unwrap();
        assert_eq!(envelope.label(), label);
        assert_eq!(
            envelope.open(&site.secret()).unwrap(),
            "line one\nline two: ünïcode\n".as_bytes()
        );
    }
}

#[test]
fn ansible_reads_airlock_encrypted_strings_from_yaml() {
    let site = Site::new();
    for label in [None, Some("prod")] {
        let snippet =
            vault::encrypt_string_snippet("db_password", b"p@ss: w0rd!", &site.secret(), label)
                .unwrap();
        let vars = site.path("vars.yml");
        std::fs::write(&vars, &snippet).unwrap();
        let mut command = tool("ansible");
        command
            .env("HOME", site.dir.path())
            .args([
                "localhost",
                "-c",
                "local",
                "-i",
                "localhost,",
                "-m",
                "debug",
            ])
            .args(["-a", "var=db_password", "-e"])
            .arg(format!("@{}", vars.display()));
        match label {
            Some(label) => command
                .arg("--vault-id")
                .arg(vault_id_arg(label, &site.password_file())),
            None => command
                .arg("--vault-password-file")
                .arg(site.password_file()),
        };
        let out = String::from_utf8(checked(command.output().unwrap(), "ansible debug")).unwrap();
        assert!(
            out.contains(r#""db_password": "p@ss: w0rd!""#),
            "ansible printed: {out}"
        );
    }
}

#[test]
fn airlock_reads_strings_ansible_vault_encrypted() {
    let site = Site::new();
    for label in [None, Some("stage")] {
        let mut command = site.ansible_vault();
        command.args(["encrypt_string", "--stdin-name", "token"]);
        match label {
            Some(label) => command
                .arg("--vault-id")
                .arg(vault_id_arg(label, &site.password_file())),
            None => command
                .arg("--vault-password-file")
                .arg(site.password_file()),
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"0123abcd").unwrap();
        drop(child.stdin.take());
        let out = checked(
            child.wait_with_output().unwrap(),
            "ansible-vault encrypt_string",
        );
        let yaml = String::from_utf8(out).unwrap();
        let doc = airlock_ansible::yaml::parse_str(&yaml, Path::new("snippet.yml")).unwrap();
        let value = doc.get("token").expect("token key");
        let envelope = value.vault_text().expect("a !vault value");
        let parsed = Envelope::parse(envelope).unwrap();
        assert_eq!(parsed.label(), label);
        assert_eq!(parsed.open(&site.secret()).unwrap(), b"0123abcd");
    }
}

#[test]
fn executable_password_files_work_for_both_tools() {
    let site = Site::new();
    let script = site.path("pwd.sh");
    std::fs::write(&script, format!("#!/bin/sh\necho '{PASSWORD}'\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let secret = VaultSecret::from_file(&script, None).unwrap();
    let file = site.path("f");
    std::fs::write(&file, vault::encrypt(b"via script", &secret, None).unwrap()).unwrap();
    let out = checked(
        site.ansible_vault()
            .arg("decrypt")
            .arg(&file)
            .args(["--output", "-"])
            .arg("--vault-password-file")
            .arg(&script)
            .output()
            .unwrap(),
        "ansible-vault decrypt",
    );
    assert_eq!(out, b"via script");
}
