//! `airlock config check` refuses what `airlock serve` would refuse at start, the
//! `[upstream_proxy]` files included, and never prints the proxy password.

use std::process::Command;

fn check(file: &std::path::Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["config", "check"])
        .arg(file)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn upstream_proxy_files_are_checked_and_the_password_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("proxy.password");
    std::fs::write(&secret, "n0t-for-eyes\n").unwrap();
    let config = dir.path().join("airlock.toml");
    let table = |ca: &str| {
        format!(
            "[upstream_proxy]\nurl = \"http://proxy.example.edu:3128\"\nusername = \"airlock\"\npassword_file = {:?}\n{ca}no_proxy = [\".example.edu\"]\n",
            secret.display().to_string()
        )
    };
    std::fs::write(&config, table("")).unwrap();
    let (ok, text) = check(&config);
    assert!(ok, "{text}");
    assert!(text.contains("[upstream_proxy]"), "{text}");
    assert!(!text.contains("n0t-for-eyes"), "{text}");

    let missing = dir.path().join("missing-ca.pem");
    std::fs::write(
        &config,
        table(&format!("ca_file = {:?}\n", missing.display().to_string())),
    )
    .unwrap();
    let (ok, text) = check(&config);
    assert!(!ok, "{text}");
    assert!(
        text.contains("[upstream_proxy] cannot read ca_file") && text.contains("missing-ca.pem"),
        "{text}"
    );

    std::fs::write(
        &config,
        "[upstream_proxy]\nurl = \"http://airlock:n0t-for-eyes@proxy.example.edu:3128\"\n",
    )
    .unwrap();
    let (ok, text) = check(&config);
    assert!(!ok, "{text}");
    assert!(
        text.contains("[upstream_proxy] url must not carry credentials"),
        "{text}"
    );
    assert!(!text.contains("n0t-for-eyes"), "{text}");
}

#[test]
fn policy_mistakes_name_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("airlock.toml");
    let proxy = "[[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"https://registry-1.docker.io\"\n";
    let key = dir.path().join("cosign.pub");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    for (rule, says) in [
        ("deny = [\"Library/Evil\"]\n", "\"Library/Evil\""),
        (
            "proxy = \"ghcr\"\ndeny = [\"a\"]\n",
            "proxy \"ghcr\" names no [[proxy]]",
        ),
        (
            &format!(
                "require_cosign = {{ repositories = [\"org/*\"], key = {:?} }}\n",
                key.display().to_string()
            ),
            "require_cosign key",
        ),
    ] {
        std::fs::write(
            &config,
            format!("{proxy}[[policy]]\nname = \"gate\"\n{rule}"),
        )
        .unwrap();
        let (ok, text) = check(&config);
        assert!(!ok, "{text}");
        assert!(
            text.contains("[[policy]] gate") && text.contains(says),
            "{rule}: {text}"
        );
    }
    std::fs::write(
        &config,
        format!("{proxy}[[policy]]\nname = \"gate\"\ndeny = [\"library/evil*\"]\n"),
    )
    .unwrap();
    let (ok, text) = check(&config);
    assert!(ok, "{text}");
    assert!(
        text.contains("[[policy]]") && text.contains("library/evil*"),
        "{text}"
    );
}
