//! `group_vars/` and `host_vars/`: which files are read, in which order, with what
//! precedence, and what a bad, encrypted, looping or huge tree gives.

use std::fs;
use std::path::{Path, PathBuf};

use airlock_ansible::inventory::{Diagnostic, Inventory};
use airlock_ansible::vault::{self, VaultSecret};

const INVENTORY: &str = "\
all:
  vars:
    level: inventory all
k3s_cluster:
  children:
    server:
  vars:
    level: inventory k3s_cluster
server:
  hosts:
    cp1:
    cp2:
      level: inventory host
";

/// A directory with `inventory.yaml` and the given files (parents created).
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("inventory.yaml"), INVENTORY).unwrap();
    for (path, text) in files {
        write(&dir.path().join(path), text);
    }
    dir
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn load(dir: &Path, secret: Option<&VaultSecret>) -> Inventory {
    Inventory::load(&dir.join("inventory.yaml"), secret).unwrap()
}

fn value(inventory: &Inventory, host: &str, name: &str) -> Option<String> {
    inventory
        .vars_of(host)
        .get(name)
        .map(|v| v.text(None).unwrap().unwrap_or_default())
}

/// `file:line` of the variable `name` as host `host` sees it, relative to `dir`.
fn location(inventory: &Inventory, dir: &Path, host: &str, name: &str) -> String {
    let var = inventory.vars_of(host).get(name).unwrap();
    let at = inventory.locate(var.mark);
    let file = at.file.strip_prefix(dir).unwrap_or(at.file);
    format!("{}:{}", file.display(), at.line)
}

fn messages(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics.iter().map(ToString::to_string).collect()
}

#[test]
fn group_vars_beat_every_inventory_group_and_host_vars_beat_the_host() {
    let dir = tree(&[
        ("group_vars/all.yml", "level: group_vars all\nonly_all: a\n"),
        ("host_vars/cp1.yaml", "other: x\n"),
    ]);
    let inventory = load(dir.path(), None);
    assert!(
        inventory.diagnostics.is_empty(),
        "{:?}",
        inventory.diagnostics
    );
    // Ansible's default `precedence`: every group's inventory vars, then group_vars files.
    assert_eq!(value(&inventory, "cp1", "level").unwrap(), "group_vars all");
    assert_eq!(value(&inventory, "cp2", "level").unwrap(), "inventory host");
    assert_eq!(
        location(&inventory, dir.path(), "cp1", "level"),
        "group_vars/all.yml:1"
    );
    assert_eq!(
        location(&inventory, dir.path(), "cp1", "other"),
        "host_vars/cp1.yaml:1"
    );
    assert_eq!(
        location(&inventory, dir.path(), "cp2", "level"),
        "inventory.yaml:13"
    );

    let dir = tree(&[
        ("group_vars/all.yml", "level: group_vars all\n"),
        (
            "group_vars/k3s_cluster.yaml",
            "level: group_vars k3s_cluster\n",
        ),
        ("group_vars/server", "level: group_vars server\n"),
        ("host_vars/cp2.json", "{\"level\": \"host_vars\"}\n"),
    ]);
    let inventory = load(dir.path(), None);
    assert_eq!(
        value(&inventory, "cp1", "level").unwrap(),
        "group_vars server"
    );
    assert_eq!(value(&inventory, "cp2", "level").unwrap(), "host_vars");
}

#[test]
fn a_directory_is_read_whole_in_byte_order_and_hides_the_file_beside_it() {
    let dir = tree(&[
        // `all/` exists, so Ansible never reads `all.yml`.
        ("group_vars/all.yml", "shadowed: yes\n"),
        ("group_vars/all/2-first.yaml", "order: 2\ntwo: b\n"),
        ("group_vars/all/10-second.yml", "order: 10\nten: a\n"),
        ("group_vars/all/sub/z.json", "{\"order\": \"sub\"}"),
        ("group_vars/all/plain", "noext: yes\n"),
        ("group_vars/all/.hidden.yml", "hidden: yes\n"),
        ("group_vars/all/backup.yml~", "backup: yes\n"),
        ("group_vars/all/notes.txt", "notes: yes\n"),
        ("group_vars/all/conf.d/x.yml", "dotted_dir: yes\n"),
        ("group_vars/all/.git/x.yml", "hidden_dir: yes\n"),
    ]);
    let inventory = load(dir.path(), None);
    assert!(
        inventory.diagnostics.is_empty(),
        "{:?}",
        inventory.diagnostics
    );
    let vars = inventory.vars_of("cp1");
    let names: Vec<&str> = vars.names().collect();
    for absent in [
        "shadowed",
        "hidden",
        "backup",
        "notes",
        "dotted_dir",
        "hidden_dir",
    ] {
        assert!(!names.contains(&absent), "{absent} was read: {names:?}");
    }
    // Byte order: `10-second.yml`, `2-first.yaml`, `plain`, `sub/`.
    assert_eq!(value(&inventory, "cp1", "order").unwrap(), "sub");
    assert_eq!(value(&inventory, "cp1", "noext").unwrap(), "yes");
    let files: Vec<String> = inventory
        .group("all")
        .unwrap()
        .file_vars
        .iter()
        .map(|v| {
            let at = inventory.locate(v.mark);
            format!(
                "{}={}",
                at.file.strip_prefix(dir.path()).unwrap().display(),
                v.name
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            "group_vars/all/10-second.yml=order",
            "group_vars/all/10-second.yml=ten",
            "group_vars/all/2-first.yaml=order",
            "group_vars/all/2-first.yaml=two",
            "group_vars/all/plain=noext",
            "group_vars/all/sub/z.json=order",
        ]
    );
}

#[test]
fn a_bad_file_is_a_diagnostic_on_its_line_and_the_others_are_still_read() {
    let dir = tree(&[
        ("group_vars/all/1-good.yml", "good: yes\n"),
        (
            "group_vars/all/2-bad.yml",
            "fine: 1\nbroken: [1, 2\nafter: 3\n",
        ),
        ("group_vars/server.yml", "- a list\n- not a mapping\n"),
        ("host_vars/cp1.yml", "ok: yes\n"),
    ]);
    fs::write(
        dir.path().join("group_vars/all/3-binary.yml"),
        [0xff, 0xfe, 0x00],
    )
    .unwrap();
    let inventory = load(dir.path(), None);
    let found = messages(&inventory.diagnostics);
    let bad = dir.path().join("group_vars/all/2-bad.yml");
    assert!(
        found
            .iter()
            .any(|m| m.starts_with(&format!("{}:3: error:", bad.display()))
                && m.contains("is not valid YAML")),
        "{found:#?}"
    );
    let list = dir.path().join("group_vars/server.yml");
    assert!(
        found
            .iter()
            .any(|m| m.starts_with(&format!("{}:1: error:", list.display()))
                && m.contains("must be a mapping of variables, found a list")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|m| m.contains("3-binary.yml is not UTF-8 text")),
        "{found:#?}"
    );
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(value(&inventory, "cp1", "good").unwrap(), "yes");
    assert_eq!(value(&inventory, "cp1", "ok").unwrap(), "yes");
    assert_eq!(value(&inventory, "cp1", "fine"), None);
}

#[test]
fn an_encrypted_file_needs_the_password_and_says_which_file() {
    let secret = VaultSecret::new(b"test-password".to_vec());
    let envelope = vault::encrypt(b"db_password: s3cret\nlevel: vaulted\n", &secret, None).unwrap();
    let dir = tree(&[("group_vars/server/vault.yml", &envelope)]);
    let path = dir.path().join("group_vars/server/vault.yml");

    let inventory = load(dir.path(), None);
    let found = messages(&inventory.diagnostics);
    assert_eq!(
        found,
        [format!(
            "{}:1: error: {} is vault-encrypted and no vault password was given\n  help: pass --vault-password-file FILE or set ANSIBLE_VAULT_PASSWORD_FILE",
            path.display(),
            path.display()
        )]
    );
    assert_eq!(
        value(&inventory, "cp1", "level").unwrap(),
        "inventory k3s_cluster"
    );

    let inventory = load(dir.path(), Some(&secret));
    assert!(
        inventory.diagnostics.is_empty(),
        "{:?}",
        inventory.diagnostics
    );
    assert_eq!(value(&inventory, "cp1", "level").unwrap(), "vaulted");
    assert_eq!(value(&inventory, "cp1", "db_password").unwrap(), "s3cret");
    assert_eq!(inventory.vault_files(), std::slice::from_ref(&path));

    let wrong = VaultSecret::new(b"not it".to_vec());
    let inventory = load(dir.path(), Some(&wrong));
    let found = messages(&inventory.diagnostics);
    assert!(
        found.len() == 1 && found[0].contains(&format!("cannot decrypt {}", path.display())),
        "{found:#?}"
    );
    assert!(!found[0].contains("s3cret"));
}

#[test]
fn json_files_are_read_as_ansible_reads_json() {
    // Tabs and `\/` are JSON but not YAML; `__ansible_vault` objects are vault values.
    let secret = VaultSecret::new(b"test-password".to_vec());
    let envelope = vault::encrypt(b"from json", &secret, None).unwrap();
    let json = format!(
        "{{\n\t\"url\": \"https:\\/\\/example.org\\/\",\n\t\"port\": 8443,\n\t\"on\": true,\n\t\"token\": {{\"__ansible_vault\": {}}}\n}}\n",
        serde_json::to_string(&envelope).unwrap()
    );
    let dir = tree(&[
        ("host_vars/cp1.json", &json),
        ("host_vars/cp2.json", "{\"a\": [1, {\"b\": null}]}"),
    ]);
    let inventory = load(dir.path(), Some(&secret));
    assert!(
        inventory.diagnostics.is_empty(),
        "{:?}",
        inventory.diagnostics
    );
    let vars = inventory.vars_of("cp1");
    assert_eq!(
        vars.get("url").unwrap().text(None).unwrap().unwrap(),
        "https://example.org/"
    );
    assert_eq!(vars.get("port").unwrap().value.as_str(), Some("8443"));
    assert_eq!(vars.get("on").unwrap().value.as_bool(), Some(true));
    let token = vars.get("token").unwrap();
    assert_eq!(token.vault_values().len(), 1);
    assert_eq!(token.text(Some(&secret)).unwrap().unwrap(), "from json");
    let a = inventory.vars_of("cp2").get("a").unwrap().value.clone();
    assert_eq!(a.as_seq().unwrap().len(), 2);
    // Valid YAML keeps its lines.
    assert_eq!(
        location(&inventory, dir.path(), "cp2", "a"),
        "host_vars/cp2.json:1"
    );
}

#[test]
fn a_directory_loop_is_not_followed() {
    let dir = tree(&[
        ("group_vars/all/a.yml", "a: 1\n"),
        ("group_vars/all/sub/b.yml", "b: 2\n"),
    ]);
    std::os::unix::fs::symlink("..", dir.path().join("group_vars/all/sub/loop")).unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("group_vars/all"),
        dir.path().join("group_vars/all/self"),
    )
    .unwrap();
    let inventory = load(dir.path(), None);
    let found = messages(&inventory.diagnostics);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found
            .iter()
            .all(|m| m.contains("which it is inside; not followed")),
        "{found:#?}"
    );
    assert_eq!(inventory.group("all").unwrap().file_vars.len(), 2);
}

#[test]
fn deep_and_huge_trees_are_cut_short() {
    let mut deep = PathBuf::from("group_vars/all");
    for _ in 0..40 {
        deep.push("d");
    }
    deep.push("x.yml");
    let dir = tree(&[
        (deep.to_str().unwrap(), "deep: yes\n"),
        ("group_vars/all/a.yml", "a: 1\n"),
    ]);
    let inventory = load(dir.path(), None);
    let found = messages(&inventory.diagnostics);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("nest deeper than 16 levels"),
        "{found:#?}"
    );
    assert_eq!(value(&inventory, "cp1", "a").unwrap(), "1");

    let dir = tree(&[]);
    let wide = dir.path().join("host_vars/cp1");
    fs::create_dir_all(&wide).unwrap();
    for i in 0..20_050 {
        fs::write(wide.join(format!("{i:05}.yml")), "").unwrap();
    }
    let started = std::time::Instant::now();
    let inventory = load(dir.path(), None);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let found = messages(&inventory.diagnostics);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("more than 20000 entries"), "{found:#?}");
}

#[test]
fn names_that_would_leave_the_directory_are_not_looked_up() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = "all:\n  hosts:\n    ../escape:\n    a/b:\n";
    fs::write(dir.path().join("inventory.yaml"), inventory).unwrap();
    write(&dir.path().join("escape.yml"), "escaped: yes\n");
    write(&dir.path().join("host_vars/a/b.yml"), "nested: yes\n");
    let inventory = load(dir.path(), None);
    assert!(inventory.vars_of("../escape").get("escaped").is_none());
    assert!(inventory.vars_of("a/b").get("nested").is_none());
}

#[test]
fn group_vars_that_is_a_file_is_a_warning() {
    let dir = tree(&[("group_vars", "level: nope\n")]);
    let inventory = load(dir.path(), None);
    let found = messages(&inventory.diagnostics);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("group_vars is not a directory"),
        "{found:#?}"
    );
}

#[test]
fn extra_vars_that_change_a_file_are_warned_about_on_that_line() {
    let dir = tree(&[
        (
            "group_vars/all/versions.yaml",
            "# pins\nk3s_version: v1.31.4+k3s1\nhelm: v3\n",
        ),
        ("host_vars/cp2.yml", "k3s_token: plain-secret\n"),
    ]);
    let mut inventory = load(dir.path(), None);
    inventory.set_extra("k3s_version", "v1.32.0+k3s1").unwrap();
    inventory.set_extra("helm", "v3").unwrap();
    inventory.set_extra("k3s_token", "other-secret").unwrap();
    inventory.set_extra("unset_before", "x").unwrap();
    let found = messages(&inventory.extra_overrides());
    let versions = dir.path().join("group_vars/all/versions.yaml");
    let host = dir.path().join("host_vars/cp2.yml");
    assert_eq!(
        found,
        [
            format!(
                "{}:2: warning: `-e k3s_version=v1.32.0+k3s1` overrides `v1.31.4+k3s1` set here\n  help: once the new value is right, write it here so the site keeps it without `-e k3s_version`",
                versions.display()
            ),
            format!(
                "{}:1: warning: `-e k3s_token` overrides the value set here\n  help: once the new value is right, write it here so the site keeps it without `-e k3s_token`",
                host.display()
            ),
        ]
    );
    let var = inventory.vars_of("cp1").get("k3s_version").unwrap();
    assert_eq!(inventory.locate(var.mark).to_string(), "-e");
}

#[test]
fn hosts_in_no_group_get_group_vars_ungrouped() {
    let dir = tempfile::tempdir().unwrap();
    let inventory =
        "all:\n  hosts:\n    lone:\n    both:\n  children:\n    g:\n      hosts:\n        both:\n";
    fs::write(dir.path().join("inventory.yaml"), inventory).unwrap();
    write(
        &dir.path().join("group_vars/ungrouped.yml"),
        "u: from ungrouped\n",
    );
    let inventory = load(dir.path(), None);
    assert!(
        inventory.diagnostics.is_empty(),
        "{:?}",
        inventory.diagnostics
    );
    assert_eq!(value(&inventory, "lone", "u").unwrap(), "from ungrouped");
    assert_eq!(value(&inventory, "both", "u"), None);
}
