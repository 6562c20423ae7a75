//! A Scout-shaped tree (`inventory.yaml` beside `group_vars/` and `host_vars/`, pinned
//! versions, a vault-encrypted file, a `!vault` value, a JSON file): airlock resolves every
//! host's variables as `ansible-inventory` does, with and without `-e`, and
//! `inventory check` says where each K3s setting came from.

mod common;

use airlock_ansible::inventory::Inventory;
use airlock_site::check::{check, summary};

fn layout(extra: &[(&str, &str)]) -> Inventory {
    let mut inventory = Inventory::load(&common::scout_layout(), Some(&common::secret())).unwrap();
    for (name, value) in extra {
        inventory.set_extra(name, value).unwrap();
    }
    inventory
}

/// Every host: the same variable names and values (vault values decrypted) as Ansible's.
fn assert_same_as_ansible(extra: &[(&str, &str)]) {
    let secret = common::secret();
    let inventory = layout(extra);
    assert!(
        inventory.diagnostics.is_empty(),
        "{:?}",
        inventory.diagnostics
    );
    let cli: Vec<String> = extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cli: Vec<&str> = cli.iter().map(String::as_str).collect();
    assert_eq!(inventory.hosts().len(), 6);
    for host in inventory.hosts() {
        let theirs = common::ansible_host_vars(&common::scout_layout(), &host.name, &cli);
        let theirs = common::decrypted(&serde_json::Value::Object(theirs), &secret);
        let vars = inventory.vars_of(&host.name);
        let ours: serde_json::Map<String, serde_json::Value> = vars
            .names()
            .map(|name| {
                let var = vars.get(name).unwrap();
                (name.to_owned(), common::json_of(&var.value, &secret))
            })
            .collect();
        assert_eq!(
            serde_json::Value::Object(ours),
            theirs,
            "variables of {}",
            host.name
        );
    }
}

#[test]
fn every_host_resolves_as_ansible_inventory_does() {
    assert_same_as_ansible(&[]);
}

#[test]
fn extra_vars_top_every_file_as_with_ansible_inventory() {
    assert_same_as_ansible(&[("probe", "from_cli"), ("k3s_version", "v1.32.0+k3s1")]);
}

#[test]
fn precedence_at_every_level() {
    // `probe` is set in the inventory for all, staging, k3s_cluster and two workers; in
    // group_vars/all/ and group_vars/k3s_cluster.yaml; in host_vars/ for worker1 (a file)
    // and gpu1 (a directory of two files, the JSON one last).
    let inventory = layout(&[]);
    let probe = |host: &str| {
        let var = inventory.vars_of(host).get("probe").unwrap();
        let at = inventory.locate(var.mark).to_string();
        let at = at.rsplit("scout-layout/").next().unwrap().to_owned();
        (var.value.as_str().unwrap().to_owned(), at)
    };
    let expected = [
        // group_vars/all beats every group's inventory vars, even a child group's.
        (
            "staging.example.edu",
            "group_vars all",
            "group_vars/all/versions.yaml:12",
        ),
        (
            "leader.example.edu",
            "group_vars k3s_cluster",
            "group_vars/k3s_cluster.yaml:1",
        ),
        // A host's inventory vars beat every group_vars file...
        (
            "worker2.example.edu",
            "inventory worker2",
            "inventory.yaml:36",
        ),
        // ...and its host_vars beat its inventory vars.
        (
            "worker1.example.edu",
            "host_vars worker1",
            "host_vars/worker1.example.edu.yml:1",
        ),
        (
            "gpu1.example.edu",
            "host_vars gpu1 json",
            "host_vars/gpu1.example.edu/20-connection.json:3",
        ),
        // A host in no group but `all` is in Ansible's `ungrouped`.
        (
            "bastion.example.edu",
            "group_vars ungrouped",
            "group_vars/ungrouped.yml:2",
        ),
    ];
    for (host, value, at) in expected {
        assert_eq!(probe(host), (value.to_owned(), at.to_owned()), "{host}");
    }
    let inventory = layout(&[("probe", "from_cli")]);
    for (host, ..) in expected {
        let var = inventory.vars_of(host).get("probe").unwrap();
        assert_eq!(var.value.as_str(), Some("from_cli"));
        assert_eq!(inventory.locate(var.mark).to_string(), "-e");
    }
}

#[test]
fn inventory_check_names_the_file_and_line_of_each_k3s_setting() {
    let report = check(&layout(&[]), Some(&common::secret()));
    let errors: Vec<String> = report
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors, Vec::<String>::new());
    let text = summary(&report);
    let versions = common::fixtures().join("scout-layout/group_vars/all/versions.yaml");
    let cluster = common::fixtures().join("scout-layout/group_vars/k3s_cluster.yaml");
    let inventory = common::scout_layout();
    for line in [
        "  k3s          v1.31.4+k3s1, SELinux off".to_owned(),
        format!("k3s_version v1.31.4+k3s1 ({}:4)", versions.display()),
        format!(
            "k3s_artifact_download_timeout 900 ({}:2)",
            cluster.display()
        ),
        format!("k3s_selinux_enabled false ({}:54)", inventory.display()),
        format!(
            "k3s_token <hidden> ({}:1)",
            common::fixtures()
                .join("scout-layout/group_vars/all/vault.yml")
                .display()
        ),
        "1 value(s), 1 decrypted; 1 encrypted variable file(s)".to_owned(),
    ] {
        assert!(text.contains(&line), "{line}\n{text}");
    }
    assert!(!text.contains("token-from-the-encrypted-file"), "{text}");
    // The site read the values from the files, not the inventory's older pin.
    assert_eq!(report.site.k3s.version.as_deref(), Some("v1.31.4+k3s1"));
    assert_eq!(report.site.egress.port, 3129);
    assert!(
        report
            .site
            .egress
            .allow
            .contains(&"api.example.org".to_owned())
    );
    // staging_k3s_token is not in this site: a warning, since airlock does not use it.
    assert!(
        report.diagnostics.iter().any(|d| !d.is_error()
            && d.message.contains("`staging_k3s_token` is not set")
            && d.message.contains("airlock does not use it")),
        "{:#?}",
        report.diagnostics
    );
}

#[test]
fn an_extra_var_that_changes_a_pin_is_a_warning_on_the_pinned_line() {
    let report = check(
        &layout(&[("k3s_version", "v1.32.0+k3s1")]),
        Some(&common::secret()),
    );
    let versions = common::fixtures().join("scout-layout/group_vars/all/versions.yaml");
    let warning = report
        .diagnostics
        .iter()
        .find(|d| d.message.contains("overrides"))
        .expect("a warning about the override");
    assert_eq!(
        warning.to_string(),
        format!(
            "{}:4: warning: `-e k3s_version=v1.32.0+k3s1` overrides `v1.31.4+k3s1` set here\n  help: once the new value is right, write it here so the site keeps it without `-e k3s_version`",
            versions.display()
        )
    );
    assert_eq!(report.site.k3s.version.as_deref(), Some("v1.32.0+k3s1"));
    assert!(summary(&report).contains("k3s_version v1.32.0+k3s1 (-e)"));
}

#[test]
fn a_bad_value_in_a_vars_file_is_reported_on_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(&inventory, common::site("", "")).unwrap();
    let versions = dir.path().join("group_vars/all/versions.yaml");
    std::fs::create_dir_all(versions.parent().unwrap()).unwrap();
    std::fs::write(&versions, "# pins\nk3s_version: latest\nsquid_port: [1\n").unwrap();
    std::fs::write(
        dir.path().join("group_vars/k3s_cluster.yml"),
        "k3s_version: latest\n",
    )
    .unwrap();
    let report = check(&Inventory::load(&inventory, None).unwrap(), None);
    let errors: Vec<String> = report
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    let cluster = dir.path().join("group_vars/k3s_cluster.yml");
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with(&format!(
            "{}:4: error: {} is not valid YAML",
            versions.display(),
            versions.display()
        )),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with(&format!(
            "{}:1: error: `k3s_version` `latest` is not a K3s release name",
            cluster.display()
        )),
        "{errors:#?}"
    );
}
