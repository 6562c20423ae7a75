//! `inventory check`: the example inventory passes, every problem is reported on its line,
//! variable precedence matches `ansible-inventory`, and junk never panics the parser.

mod common;

use std::path::Path;

use airlock_ansible::inventory::{Diagnostic, Inventory};
use airlock_ansible::vault::VaultSecret;
use airlock_site::check::{check, summary};
use proptest::prelude::*;

fn errors(report: &[Diagnostic]) -> Vec<(usize, String)> {
    report
        .iter()
        .filter(|d| d.is_error())
        .map(|d| (d.line, d.message.clone()))
        .collect()
}

fn only_error(text: &str, secret: Option<&VaultSecret>) -> Diagnostic {
    let report = check(&common::parse(text), secret);
    let found: Vec<&Diagnostic> = report.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(found.len(), 1, "expected one error, got {found:#?}");
    found[0].clone()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn the_scout_shaped_example_passes_with_placeholder_warnings() {
    let report = check(&common::example(), Some(&common::secret()));
    assert_eq!(errors(&report.diagnostics), []);
    assert_eq!(report.vault_values, 5);
    assert_eq!(report.vault_decrypted, 5);
    let placeholders: Vec<&str> = report
        .diagnostics
        .iter()
        .filter(|d| d.message.contains("still"))
        .map(|d| d.message.split('`').nth(1).unwrap())
        .collect();
    assert_eq!(
        placeholders,
        [
            "ansible_user",
            "harbor_admin_password",
            "kubeconfig_group",
            "keycloak_gh_client_id",
            "keycloak_microsoft_client_id",
            "keycloak_microsoft_client_secret",
            "keycloak_microsoft_tenant_id"
        ]
    );
    let text = summary(&report);
    assert!(text.contains("air-gapped"), "{text}");
    assert!(text.contains("https://staging.example.edu (registry harbor.staging.example.edu)"));
    assert!(text.contains("5 value(s), 5 decrypted"));
}

#[test]
fn without_a_password_vault_values_are_a_warning() {
    let report = check(&common::example(), None);
    let warning = report
        .diagnostics
        .iter()
        .find(|d| d.message.contains("were not checked"))
        .expect("a warning about unchecked vault values");
    assert_eq!(warning.line, 11);
    assert_eq!(
        warning.message,
        "5 vault-encrypted value(s) were not checked: no vault password"
    );
    assert_eq!(errors(&report.diagnostics), []);
    assert_eq!(report.vault_decrypted, 0);
}

#[test]
fn a_setting_that_is_vault_encrypted_needs_the_password() {
    let snippet = airlock_ansible::vault::encrypt_string_snippet(
        "squid_port",
        b"3128",
        &common::secret(),
        None,
    )
    .unwrap();
    let indented: String = snippet.lines().flat_map(|l| ["    ", l, "\n"]).collect();
    let text = common::site(&indented, "");
    let report = check(&common::parse(&text), None);
    assert_eq!(
        errors(&report.diagnostics),
        [(
            line_of(&text, "squid_port"),
            "`squid_port` is vault-encrypted and no vault password was given".to_owned()
        )]
    );
    let report = check(&common::parse(&text), Some(&common::secret()));
    assert_eq!(errors(&report.diagnostics), []);
    assert_eq!(report.site.egress.port, 3128);
}

#[test]
fn a_wrong_password_is_one_error_listing_every_line() {
    let wrong = VaultSecret::new(b"not the password".to_vec());
    let report = check(&common::example(), Some(&wrong));
    let errors = errors(&report.diagnostics);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].0, 11);
    assert!(
        errors[0]
            .1
            .starts_with("wrong vault password for vault-id prod: 5 of 5")
            && errors[0].1.ends_with("(lines 11, 30, 89, 108, 120)"),
        "{}",
        errors[0].1
    );
}

#[test]
fn a_damaged_vault_value_is_reported_on_its_line() {
    let text = common::site(
        "    db: !vault |\n      $ANSIBLE_VAULT;1.1;AES256\n      6162zz\n",
        "",
    );
    let error = only_error(&text, Some(&common::secret()));
    assert_eq!(error.line, line_of(&text, "db: !vault"));
    assert!(
        error.message.contains("`db`: vault body is damaged"),
        "{}",
        error.message
    );
    assert!(
        error
            .help
            .contains("airlock vault encrypt-string --name db")
    );
}

#[test]
fn an_ansible_host_that_could_leave_a_path_is_refused() {
    for bad in ["../../etc", "a b", "..", "node1/x", "\"x\\ny\""] {
        let text = format!(
            "server:\n  hosts:\n    cp:\n      ansible_host: {bad}\nk3s_cluster:\n  children:\n    server:\n"
        );
        let error = only_error(&text, None);
        assert_eq!(error.line, 4, "{bad}");
        assert!(
            error
                .message
                .contains("is not a host name or an IP address"),
            "{bad}: {}",
            error.message
        );
    }
    for good in ["10.0.0.5", "fd00::1", "node1.example.edu", "node_1"] {
        let text = format!(
            "server:\n  hosts:\n    cp:\n      ansible_host: {good}\nk3s_cluster:\n  children:\n    server:\n"
        );
        let report = check(&common::parse(&text), None);
        assert!(errors(&report.diagnostics).is_empty(), "{good}: {report:?}");
    }
}

#[test]
fn air_gapped_without_staging() {
    let text = "all:\n  vars:\n    air_gapped: yes\nserver:\n  hosts:\n    cp:\nk3s_cluster:\n  children:\n    server:\n";
    let error = only_error(text, None);
    assert_eq!(error.line, 3);
    assert!(
        error.message.contains("no `staging` group"),
        "{}",
        error.message
    );
    assert!(error.help.contains("airlock serve"));
    let empty = "all:\n  vars:\n    air_gapped: true\nstaging:\n  hosts:\nserver:\n  hosts:\n    cp:\nk3s_cluster:\n  children:\n    server:\n";
    let error = only_error(empty, None);
    assert_eq!(
        (error.line, error.message.as_str()),
        (4, "group `staging` has no hosts")
    );
}

#[test]
fn a_missing_staging_token_is_only_a_warning_since_airlock_does_not_use_it() {
    let text = common::site("", "").replace("    staging_k3s_token: plain-test-token\n", "");
    let report = check(&common::parse(&text), None);
    assert_eq!(errors(&report.diagnostics), []);
    let warning = report
        .diagnostics
        .iter()
        .find(|d| d.message.contains("staging_k3s_token"))
        .expect("a warning about staging_k3s_token");
    assert_eq!(warning.line, line_of(&text, "staging:"));
    assert_eq!(
        warning.message,
        "`staging_k3s_token` is not set for staging host `gw.example.org`; airlock does not use it (its gateway runs no K3s)"
    );
    assert!(
        warning
            .help
            .contains("airlock vault new-secret --name staging_k3s_token")
    );
    let empty = common::site("", "").replace(
        "staging_k3s_token: plain-test-token",
        "staging_k3s_token: ''",
    );
    let report = check(&common::parse(&empty), None);
    assert_eq!(errors(&report.diagnostics), []);
    assert!(report.diagnostics.iter().any(|d| {
        d.message
            .starts_with("`staging_k3s_token` is empty; airlock does not use it")
    }));
}

#[test]
fn server_group_without_hosts() {
    let text = common::site("", "").replace("    cp1.example.org:\n", "");
    let error = only_error(&text, None);
    assert_eq!(error.line, line_of(&text, "server:"));
    assert_eq!(error.message, "group `server` has no hosts");
}

#[test]
fn unknown_selinux_channel() {
    let text = common::site("", "    k3s_selinux_channel: nightly\n");
    let error = only_error(&text, None);
    assert_eq!(error.line, line_of(&text, "k3s_selinux_channel"));
    assert_eq!(error.message, "unknown `k3s_selinux_channel` `nightly`");
    assert_eq!(error.help, "use one of: stable, latest, testing");
}

#[test]
fn bad_settings_each_name_their_line() {
    for (staging, cluster, needle, message) in [
        (
            "    squid_port: http\n",
            "",
            "squid_port",
            "`squid_port` must be a TCP port",
        ),
        (
            "    package_proxy_mode: artifactory\n",
            "",
            "package_proxy_mode",
            "unknown `package_proxy_mode`",
        ),
        (
            "    squid_extra_allowed_domains: ['.example.com']\n",
            "",
            "squid_extra",
            "is a wildcard",
        ),
        (
            "    squid_extra_allowed_domains:\n      - https://x.example.com/\n",
            "",
            "https://x",
            "is not a host name",
        ),
        (
            "    harbor_dockerhub_proxy_project: Docker Hub\n",
            "",
            "harbor_dockerhub",
            "is not a valid project name",
        ),
        (
            "    harbor_subdomain: 'a b'\n",
            "",
            "harbor_subdomain",
            "is not a DNS label",
        ),
        (
            "    tls_cert_path: /etc/ssl/gw.crt\n",
            "",
            "tls_cert_path",
            "`tls_key_path` is not",
        ),
        (
            "",
            "    tls_mode: letsencrypt\n",
            "tls_mode",
            "unknown `tls_mode`",
        ),
        (
            "",
            "    k3s_selinux_enabled: maybe\n",
            "k3s_selinux_enabled",
            "must be true or false",
        ),
        (
            "    external_url: 'https://'\n",
            "",
            "external_url",
            "does not name a host",
        ),
        (
            "    harbor_storage_size: lots\n",
            "",
            "harbor_storage_size",
            "is not a size",
        ),
        (
            "",
            "    base_dir: data/k3s\n",
            "base_dir",
            "is not an absolute path",
        ),
        (
            "",
            "    k3s_extra_args: '--node-label \"zone=a'\n",
            "k3s_extra_args",
            "cannot be split into arguments",
        ),
        (
            "",
            "    kubeconfig_group: 'k3s admins'\n",
            "kubeconfig_group",
            "is not a group name",
        ),
        (
            "",
            "    enable_gpu_node_taint: sometimes\n",
            "enable_gpu_node_taint",
            "must be true or false",
        ),
        (
            "",
            "    k3s_embedded_registry: spegel\n",
            "k3s_embedded_registry",
            "must be true or false",
        ),
        (
            "",
            "    coredns_forward_map:\n      dns.example.edu: [example.edu]\n",
            "dns.example.edu",
            "is neither an IP address nor an absolute path",
        ),
        (
            "",
            "    coredns_forward_map:\n      10.0.0.53:\n        - 'example.edu'\n        - '*.ts.net'\n",
            "ts.net",
            "is not a domain name",
        ),
        (
            "",
            "    coredns_forward_map: [example.edu]\n",
            "coredns_forward_map",
            "must be a mapping",
        ),
        (
            "",
            "    coredns_extra_server_blocks:\n      'bad/name': 'x:53 {}'\n",
            "bad/name",
            "cannot be a ConfigMap key",
        ),
    ] {
        let text = common::site(staging, cluster);
        let error = only_error(&text, None);
        assert_eq!(error.line, line_of(&text, needle), "{message}");
        assert!(
            error.message.contains(message),
            "{} / {message}",
            error.message
        );
        assert!(!error.help.is_empty());
    }
}

#[test]
fn syntax_errors_name_file_line_and_column() {
    let err = Inventory::parse_str(
        "all:\n  vars:\n    a: [1,\n  b: 2\n",
        Path::new("site.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("site.yaml:"), "{err}");
    assert!(err.contains("help: fix the YAML syntax"), "{err}");
}

#[test]
fn jinja_references_resolve_and_expressions_warn() {
    let text = common::site(
        "    gw_name: gateway.example.org\n    external_url: '{{ gw_name }}'\n    squid_port: \"{{ 3000 + 128 }}\"\n",
        "",
    );
    let report = check(&common::parse(&text), None);
    assert_eq!(errors(&report.diagnostics), []);
    assert_eq!(
        report.site.staging.as_ref().unwrap().hostname,
        "gateway.example.org"
    );
    assert!(
        report
            .diagnostics
            .iter()
            .any(|d| d.line == line_of(&text, "squid_port")
                && d.message.contains("Jinja expression"))
    );
    assert_eq!(report.site.egress.port, 3128);
}

#[test]
fn precedence_matches_ansible_inventory_for_every_host() {
    let inventory = common::example();
    assert_eq!(inventory.hosts().len(), 5);
    for host in inventory.hosts() {
        let ours = inventory.vars_of(&host.name);
        let theirs = common::ansible_host_vars(&common::example_path(), &host.name, &[]);
        let mut our_names: Vec<&str> = ours.names().collect();
        our_names.sort_unstable();
        let mut their_names: Vec<&str> = theirs.keys().map(String::as_str).collect();
        their_names.sort_unstable();
        assert_eq!(our_names, their_names, "variables of {}", host.name);
        for (name, value) in &theirs {
            let var = ours.get(name).unwrap();
            match value {
                serde_json::Value::String(s) => {
                    assert_eq!(
                        var.value.as_str(),
                        Some(s.as_str()),
                        "{}: {name}",
                        host.name
                    );
                }
                serde_json::Value::Bool(b) => {
                    assert_eq!(var.value.as_bool(), Some(*b), "{}: {name}", host.name);
                }
                serde_json::Value::Number(n) => {
                    assert_eq!(
                        var.value.as_str(),
                        Some(n.to_string().as_str()),
                        "{}: {name}",
                        host.name
                    );
                }
                serde_json::Value::Object(o) if o.contains_key("__ansible_vault") => {
                    assert_eq!(
                        var.value.vault_text(),
                        o["__ansible_vault"].as_str(),
                        "{}: {name}",
                        host.name
                    );
                }
                _ => assert!(var.value.as_map().is_some() || var.value.as_seq().is_some()),
            }
        }
    }
}

proptest! {
    #[test]
    fn junk_never_panics(text in "\\PC{0,400}") {
        if let Ok(inventory) = Inventory::parse_str(&text, Path::new("junk.yaml")) {
            let _ = check(&inventory, None);
        }
    }

    #[test]
    fn yaml_shaped_junk_never_panics(
        parts in proptest::collection::vec(
            prop::sample::select(vec![
                "all:", "\n", "  ", "hosts:", "vars:", "children:", "- ", "&a ", "*a", "<<: ", "!vault |",
                "$ANSIBLE_VAULT;1.1;AES256", "'", "\"", "{", "}", "[", "]", ",", "staging", "server",
                "air_gapped: true", "x: ", "~", "#", "? ", ": ", "|", ">", "\t", "---", "...",
            ]),
            0..80,
        )
    ) {
        let text: String = parts.concat();
        if let Ok(inventory) = Inventory::parse_str(&text, Path::new("junk.yaml")) {
            let report = check(&inventory, None);
            for diagnostic in &report.diagnostics {
                prop_assert!(diagnostic.line >= 1);
            }
        }
    }
}

#[test]
fn decrypted_values_never_appear_in_diagnostics() {
    let secret = common::secret();
    let snippet = airlock_ansible::vault::encrypt_string_snippet(
        "squid_port",
        b"hunter2-not-a-port",
        &secret,
        None,
    )
    .unwrap();
    let indented: String = snippet.lines().flat_map(|l| ["    ", l, "\n"]).collect();
    let text = common::site(&indented, "");
    let report = check(&common::parse(&text), Some(&secret));
    let error = report.diagnostics.iter().find(|d| d.is_error()).unwrap();
    assert_eq!(error.line, line_of(&text, "squid_port"));
    assert!(error.message.contains("<vault value>"), "{}", error.message);
    for diagnostic in &report.diagnostics {
        assert!(!diagnostic.to_string().contains("hunter2"), "{diagnostic}");
    }
}

#[test]
fn a_wholly_encrypted_inventory_is_read_with_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    let plain = common::site("", "");
    let secret = common::secret();
    std::fs::write(
        &path,
        airlock_ansible::vault::encrypt(plain.as_bytes(), &secret, None).unwrap(),
    )
    .unwrap();
    let inventory = Inventory::load(&path, Some(&secret)).unwrap();
    assert_eq!(inventory.hosts_of("server"), ["cp1.example.org"]);
    let err = Inventory::load(&path, None).unwrap_err().to_string();
    assert!(
        err.contains("is vault-encrypted: pass --vault-password-file"),
        "{err}"
    );
    let wrong = VaultSecret::new(b"nope".to_vec());
    let err = Inventory::load(&path, Some(&wrong))
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong vault password"), "{err}");
}

#[test]
fn likely_typos_of_known_variables_are_flagged() {
    let text = common::site(
        "    sqiud_port: 3128\n    harbor_dir: /scout/harbor\n",
        "    air_gaped: true\n",
    );
    let report = check(&common::parse(&text), None);
    let hints: Vec<(usize, &str)> = report
        .diagnostics
        .iter()
        .filter(|d| d.message.contains("did you mean"))
        .map(|d| (d.line, d.message.as_str()))
        .collect();
    assert_eq!(
        hints,
        [
            (
                line_of(&text, "sqiud_port"),
                "`sqiud_port` is not a variable airlock reads; did you mean `squid_port`?"
            ),
            (
                line_of(&text, "air_gaped"),
                "`air_gaped` is not a variable airlock reads; did you mean `air_gapped`?"
            ),
        ]
    );
}

#[test]
fn k3s_settings_reach_the_site() {
    let text = common::site(
        "    package_proxy_mode: airlock\n",
        "    k3s_selinux_rpm_site: rpm-testing.rancher.io\n    k3s_artifact_download_timeout: 900\n    k3s_selinux_enabled: yes\n    k3s_selinux_channel: latest\n",
    );
    let report = check(&common::parse(&text), None);
    assert_eq!(errors(&report.diagnostics), []);
    let k3s = &report.site.k3s;
    assert_eq!(k3s.version.as_deref(), Some("v1.31.4+k3s1"));
    assert!(k3s.selinux);
    assert_eq!(k3s.selinux_channel, "latest");
    assert_eq!(k3s.artifact_download_timeout, Some(900));
    let rancher = report
        .site
        .packages
        .iter()
        .find(|p| p.name == "rancher-k3s")
        .unwrap();
    assert_eq!(rancher.upstream, "https://rpm-testing.rancher.io/");
}

#[test]
fn cluster_install_and_coredns_settings_reach_the_site() {
    let text = common::site(
        "",
        "    base_dir: /data/k3s\n    k3s_extra_args: '--snapshotter=native --node-label \"zone=a b\"'\n    kubeconfig_yaml: /etc/rancher/k3s/admin.yaml\n    kubeconfig_group: k3s-admins\n    enable_gpu_node_taint: false\n    k3s_embedded_registry: yes\n    coredns_forward_map:\n      100.100.100.100: [ts.net]\n      /etc/resolv.conf: [Example.EDU., example.edu]\n    coredns_extra_server_blocks:\n      scout-override: |\n        app.example.com:53 {\n          whoami\n        }\n",
    );
    let report = check(&common::parse(&text), None);
    assert_eq!(errors(&report.diagnostics), []);
    let install = &report.site.install;
    assert_eq!(install.base_dir, "/data/k3s");
    assert_eq!(
        install.extra_args,
        ["--snapshotter=native", "--node-label", "zone=a b"]
    );
    assert_eq!(install.kubeconfig, "/etc/rancher/k3s/admin.yaml");
    assert_eq!(install.kubeconfig_group, "k3s-admins");
    assert!(!install.gpu_node_taint);
    assert!(install.embedded_registry);
    let coredns = &report.site.coredns;
    assert_eq!(
        coredns.forward,
        [
            (
                "/etc/resolv.conf".to_owned(),
                vec!["example.edu".to_owned()]
            ),
            ("100.100.100.100".to_owned(), vec!["ts.net".to_owned()]),
        ]
    );
    assert_eq!(
        coredns.extra_server_blocks,
        [(
            "scout-override".to_owned(),
            "app.example.com:53 {\n  whoami\n}\n".to_owned()
        )]
    );
    let summary = summary(&report);
    assert!(
        summary.contains("--default-local-storage-path=/data/k3s")
            && summary.contains("--snapshotter=native"),
        "{summary}"
    );
    assert!(
        summary.contains("coredns      air-gapped deny-all")
            && summary.contains("forward ts.net → 100.100.100.100")
            && summary.contains("server blocks scout-override"),
        "{summary}"
    );

    let defaults = check(&common::parse(&common::site("", "")), None).site;
    assert_eq!(defaults.install.base_dir, "/var/lib/rancher/k3s/storage");
    assert_eq!(defaults.install.kubeconfig, "/etc/rancher/k3s/k3s.yaml");
    assert_eq!(defaults.install.kubeconfig_group, "root");
    assert!(
        defaults.install.gpu_node_taint,
        "Scout taints GPU nodes by default"
    );
    assert!(defaults.install.extra_args.is_empty());
}

#[test]
fn legacy_coredns_forward_domains_warn_and_conflict_with_the_map() {
    let legacy = common::site("", "    coredns_forward_domains: [example.edu]\n");
    let report = check(&common::parse(&legacy), None);
    assert_eq!(errors(&report.diagnostics), []);
    let warning = report
        .diagnostics
        .iter()
        .find(|d| d.message.contains("deprecated"))
        .expect("a deprecation warning");
    assert_eq!(warning.line, line_of(&legacy, "coredns_forward_domains"));
    assert!(
        warning.help.contains("coredns_forward_map"),
        "{}",
        warning.help
    );
    assert_eq!(
        report.site.coredns.forward,
        [(
            "/etc/resolv.conf".to_owned(),
            vec!["example.edu".to_owned()]
        )]
    );

    let both = common::site(
        "",
        "    coredns_forward_domains: [example.edu]\n    coredns_forward_map: {10.0.0.53: [ts.net]}\n",
    );
    let error = only_error(&both, None);
    assert!(error.message.contains("both"), "{}", error.message);
    assert_eq!(error.line, line_of(&both, "coredns_forward_domains"));
}

fn warnings(report: &[Diagnostic]) -> Vec<String> {
    report
        .iter()
        .filter(|d| !d.is_error())
        .map(|d| d.message.clone())
        .collect()
}

/// Every staging host is a replica under its own name; a shared bucket is what several want,
/// so it draws no warning.
#[test]
fn several_staging_hosts_are_replicas_in_inventory_order() {
    let text =
        airlock_testkit::inventory::replicated_site(airlock_testkit::inventory::SHARED_BUCKET);
    let report = check(&common::parse(&text), None);
    assert_eq!(errors(&report.diagnostics), []);
    assert_eq!(warnings(&report.diagnostics), Vec::<String>::new());
    let names: Vec<(&str, &str, &str)> = report
        .site
        .replicas
        .iter()
        .map(|r| {
            (
                r.machine.name.as_str(),
                r.hostname.as_str(),
                r.registry_host.as_str(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (
                "north.example.test",
                "north.example.test",
                "harbor.north.example.test"
            ),
            (
                "south.example.test",
                "south.example.test",
                "harbor.south.example.test"
            ),
            (
                "east.example.test",
                "east.example.test",
                "harbor.east.example.test"
            ),
        ]
    );
    assert_eq!(report.site.staging.as_ref(), report.site.replicas.first());
    let text = summary(&report);
    let at: Vec<usize> = ["north", "south", "east"]
        .iter()
        .map(|r| text.find(&format!("https://{r}.example.test")).unwrap())
        .collect();
    assert!(at.is_sorted(), "{text}");
    assert!(text.contains("storage      s3, bucket airlock"), "{text}");
}

/// Replicas on local disk each hold their own cache: said once, on the `staging` group, unless
/// `airlock_storage_backend: fs` says it is meant.
#[test]
fn replicas_on_local_disk_are_a_warning_unless_fs_is_written() {
    let inventory = airlock_testkit::inventory::replicated_site("");
    let report = check(&common::parse(&inventory), None);
    assert_eq!(errors(&report.diagnostics), []);
    let found: Vec<&Diagnostic> = report
        .diagnostics
        .iter()
        .filter(|d| d.message.contains("(`fs`)"))
        .collect();
    assert_eq!(found.len(), 1, "{:#?}", report.diagnostics);
    assert!(!found[0].is_error());
    assert_eq!(found[0].line, line_of(&inventory, "staging:"));
    assert!(
        found[0].message.contains("3 staging hosts") && found[0].help.contains("s3"),
        "{found:?}"
    );
    assert!(report.site.storage.is_none());

    let written = airlock_testkit::inventory::replicated_site("    airlock_storage_backend: fs");
    let report = check(&common::parse(&written), None);
    assert_eq!(errors(&report.diagnostics), []);
    assert_eq!(warnings(&report.diagnostics), Vec::<String>::new());
    assert!(report.site.storage.is_some());

    // One staging host on local disk is the ordinary case.
    let report = check(&common::parse(airlock_testkit::inventory::SMALL_SITE), None);
    assert_eq!(warnings(&report.diagnostics), Vec::<String>::new());
}

/// Replicas on one bucket without K2V share blobs but not tags, leases or eviction.
#[test]
fn replicas_on_a_bucket_without_k2v_are_a_warning_naming_the_variable() {
    let without = airlock_testkit::inventory::SHARED_BUCKET
        .lines()
        .filter(|l| !l.contains("airlock_k2v_endpoint"))
        .collect::<Vec<_>>()
        .join("\n");
    let inventory = airlock_testkit::inventory::replicated_site(&without);
    let report = check(&common::parse(&inventory), None);
    assert_eq!(errors(&report.diagnostics), []);
    let found = warnings(&report.diagnostics);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("3 staging hosts share the bucket's blobs but not what they know"),
        "{found:?}"
    );
    let with =
        airlock_testkit::inventory::replicated_site(airlock_testkit::inventory::SHARED_BUCKET);
    let report = check(&common::parse(&with), None);
    assert_eq!(warnings(&report.diagnostics), Vec::<String>::new());
}

/// Two replicas that would answer as one gateway, or that are one machine, are refused on
/// the second host's line.
#[test]
fn replicas_with_one_name_or_one_address_are_refused() {
    let base =
        airlock_testkit::inventory::replicated_site(airlock_testkit::inventory::SHARED_BUCKET);
    let same_address = base.replace("10.0.0.23", "10.0.0.21");
    let error = only_error(&same_address, None);
    assert_eq!(error.line, line_of(&same_address, "east.example.test:"));
    assert_eq!(
        error.message,
        "staging hosts `north.example.test` and `east.example.test` have the same address `10.0.0.21`"
    );

    let same_name = base.replace(
        "south.example.test: {ansible_host: 10.0.0.22}",
        "south.example.test: {ansible_host: 10.0.0.22, external_url: \"https://north.example.test\"}",
    );
    let error = only_error(&same_name, None);
    assert_eq!(error.line, line_of(&same_name, "south.example.test:"));
    assert!(
        error
            .message
            .contains("would both be the gateway `north.example.test`"),
        "{error:?}"
    );

    // Render writes each replica's config in a directory named after it.
    let path_like = base.replace(
        "east.example.test: {ansible_host: 10.0.0.23}",
        "\"../east\": {ansible_host: 10.0.0.23, external_url: east.example.test}",
    );
    let error = only_error(&path_like, None);
    assert_eq!(
        error.message,
        "staging host `../east` is not a plain host name"
    );
}

/// `external_url` set for the whole group names the first replica; the others keep their
/// inventory names, and one set in a host's own vars names that host.
#[test]
fn a_shared_external_url_names_only_the_first_replica() {
    let base = airlock_testkit::inventory::replicated_site(
        airlock_testkit::inventory::SHARED_BUCKET,
    )
    .replace(
        "    staging_k3s_token: abc\n",
        "    staging_k3s_token: abc\n    external_url: https://gateway.example.test\n",
    )
    .replace(
        "east.example.test: {ansible_host: 10.0.0.23}",
        "east.example.test: {ansible_host: 10.0.0.23, external_url: registry-east.example.test}",
    );
    let report = check(&common::parse(&base), None);
    assert_eq!(errors(&report.diagnostics), []);
    let hostnames: Vec<&str> = report
        .site
        .replicas
        .iter()
        .map(|r| r.hostname.as_str())
        .collect();
    assert_eq!(
        hostnames,
        [
            "gateway.example.test",
            "south.example.test",
            "registry-east.example.test"
        ]
    );
}

/// Every storage mistake names the inventory variable, on its line.
#[test]
fn storage_mistakes_name_their_variable() {
    let site = |vars: &str| airlock_testkit::inventory::replicated_site(vars);
    let no_bucket = site("    airlock_storage_backend: s3");
    let error = only_error(&no_bucket, None);
    assert_eq!(error.line, line_of(&no_bucket, "airlock_storage_backend"));
    assert!(error.message.contains("needs a bucket"), "{error:?}");
    assert!(error.help.contains("airlock_s3_bucket"), "{error:?}");

    let inline = site(&format!(
        "{}\n    airlock_s3_secret_access_key: hunter2",
        airlock_testkit::inventory::SHARED_BUCKET
    ));
    let error = only_error(&inline, None);
    assert_eq!(
        error.line,
        line_of(&inline, "airlock_s3_secret_access_key:")
    );
    assert!(
        error.help.contains("airlock_s3_secret_access_key_file")
            && !error.message.contains("hunter2"),
        "{error:?}"
    );

    let relative = site(
        &airlock_testkit::inventory::SHARED_BUCKET.replace("/etc/airlock/s3.id", "keys/s3.id"),
    );
    let error = only_error(&relative, None);
    assert_eq!(
        error.message,
        "`airlock_s3_access_key_id_file` `keys/s3.id` is not an absolute path"
    );

    let k2v = site(
        &airlock_testkit::inventory::SHARED_BUCKET.replace("http://10.0.0.7:3904", "10.0.0.7:3904"),
    );
    let error = only_error(&k2v, None);
    assert_eq!(error.line, line_of(&k2v, "airlock_storage_backend"));
    assert!(
        error
            .message
            .contains("k2v_endpoint (`airlock_k2v_endpoint`) \"10.0.0.7:3904\" must be"),
        "{error:?}"
    );
    assert!(error.help.contains("`airlock_k2v_endpoint`"), "{error:?}");

    let unknown = site("    airlock_storage_backend: nfs");
    let error = only_error(&unknown, None);
    assert_eq!(error.message, "unknown `airlock_storage_backend` `nfs`");

    // A replica of its own bucket would be silently ignored: every replica runs the first
    // one's config.
    let own = site(airlock_testkit::inventory::SHARED_BUCKET).replace(
        "south.example.test: {ansible_host: 10.0.0.22}",
        "south.example.test: {ansible_host: 10.0.0.22, airlock_s3_bucket: other}",
    );
    let error = only_error(&own, None);
    assert_eq!(error.line, line_of(&own, "south.example.test:"));
    assert!(
        error
            .message
            .starts_with("`airlock_s3_bucket` is set for staging host `south.example.test` alone"),
        "{error:?}"
    );
    // So would a replica's own robots.
    let own = site(airlock_testkit::inventory::SHARED_BUCKET).replace(
        "south.example.test: {ansible_host: 10.0.0.22}",
        "south.example.test: {ansible_host: 10.0.0.22, airlock_robots: []}",
    );
    let error = only_error(&own, None);
    assert_eq!(error.line, line_of(&own, "south.example.test:"));
    assert!(
        error
            .message
            .starts_with("`airlock_robots` is set for staging host `south.example.test` alone"),
        "{error:?}"
    );
}

/// Every mistake in `airlock_hosted_projects` and `airlock_robots` is one error, on the line
/// of the entry, key or glob it is about, naming the variable.
#[test]
fn hosted_and_robot_mistakes_name_their_line() {
    let project = "    airlock_hosted_projects: [{name: scout}]\n";
    let robots = |entries: &str| format!("{project}    airlock_robots:\n{entries}");
    for (staging, needle, variable, message) in [
        (
            "    airlock_hosted_projects: scout\n".to_owned(),
            "airlock_hosted_projects",
            "airlock_hosted_projects",
            "must be a list, found a scalar",
        ),
        (
            "    airlock_hosted_projects:\n      - scout\n".to_owned(),
            "- scout",
            "airlock_hosted_projects",
            "items must be mappings",
        ),
        (
            "    airlock_hosted_projects:\n      - name: scout\n        public: true\n".to_owned(),
            "public",
            "airlock_hosted_projects",
            "unknown key `public`",
        ),
        (
            "    airlock_hosted_projects:\n      - name: scout\n        anonymous_pull: sometimes\n"
                .to_owned(),
            "sometimes",
            "airlock_hosted_projects",
            "`anonymous_pull` must be true or false",
        ),
        (
            "    airlock_hosted_projects:\n      - anonymous_pull: true\n".to_owned(),
            "anonymous_pull",
            "airlock_hosted_projects",
            "has no `name`",
        ),
        (
            "    airlock_hosted_projects: [{name: Scout}]\n".to_owned(),
            "Scout",
            "airlock_hosted_projects",
            "is invalid",
        ),
        (
            "    airlock_hosted_projects: [{name: quay-proxy}]\n".to_owned(),
            "quay-proxy",
            "airlock_hosted_projects",
            "is also a [[proxy]]",
        ),
        (
            "    airlock_hosted_projects:\n      - name: scout\n      - {name: scout, delete: true}\n"
                .to_owned(),
            "delete: true",
            "airlock_hosted_projects",
            "is also a [[proxy]] or another [[hosted]] name",
        ),
        (
            "    airlock_robots: {ci: s3cret}\n".to_owned(),
            "airlock_robots",
            "airlock_robots",
            "must be a list, found a mapping",
        ),
        (
            robots("      - name: ci\n        push: [scout/*]\n"),
            "name: ci",
            "airlock_robots",
            "`ci` has no `secret`",
        ),
        (
            robots("      - name: ci\n        secret: ''\n        push: [scout/*]\n"),
            "secret:",
            "airlock_robots",
            "`secret` is empty",
        ),
        (
            robots("      - name: ci\n        secret: '<robot secret>'\n"),
            "secret:",
            "airlock_robots",
            "`secret` is still a placeholder",
        ),
        (
            robots("      - name: ci\n        secret: s3cret\n        push:\n          - scout/*\n          - lab/*\n"),
            "lab/*",
            "airlock_robots",
            "\"lab\" is not a [[hosted]] project",
        ),
        (
            robots("      - name: ci\n        secret: s3cret\n        pull: scout/*\n"),
            "pull:",
            "airlock_robots",
            "`pull` must be a list",
        ),
        (
            robots("      - name: ci\n        secret: s3cret\n        pull: [[scout/*]]\n"),
            "pull:",
            "airlock_robots",
            "`pull` must list text, found a list",
        ),
        (
            robots("      - name: ci\n        secret: s3cret\n        token: abc\n"),
            "token: abc",
            "airlock_robots",
            "unknown key `token`",
        ),
        (
            robots("      - {name: ci, secret: one}\n      - {name: ci, secret: two}\n"),
            "secret: two",
            "airlock_robots",
            "is listed twice or shares its name with an [admin] user",
        ),
        (
            format!(
                "    airlock_admin_password: a-site-password\n{}",
                robots("      - {name: admin, secret: s3cret}\n")
            ),
            "name: admin",
            "airlock_robots",
            "shares its name with an [admin] user",
        ),
        (
            robots("      - {name: ci/x, secret: s3cret}\n"),
            "ci/x",
            "airlock_robots",
            "is not a plain name",
        ),
    ] {
        let text = common::site(&staging, "");
        let error = only_error(&text, None);
        assert_eq!(error.line, line_of(&text, needle), "{message}: {error}");
        assert!(
            error.message.contains(message) && error.message.contains(variable),
            "{} / {message}",
            error.message
        );
        assert!(!error.help.is_empty());
    }
}

/// A vaulted robot secret needs the vault password (render hashes it); the error is on the
/// secret's line and never shows the ciphertext's plaintext, which no one had.
#[test]
fn vaulted_robot_secrets_need_the_password() {
    let path = common::fixtures().join("hosted.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let report = check(&Inventory::load(&path, None).unwrap(), None);
    let secret_lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("secret: !vault"))
        .map(|(i, _)| i + 1)
        .collect();
    let found = errors(&report.diagnostics);
    assert_eq!(
        found.iter().map(|(line, _)| *line).collect::<Vec<_>>(),
        secret_lines,
        "{found:#?}"
    );
    for (_, message) in &found {
        assert!(
            message.contains("`airlock_robots` is vault-encrypted"),
            "{message}"
        );
    }
    let report = check(
        &Inventory::load(&path, None).unwrap(),
        Some(&common::secret()),
    );
    assert_eq!(errors(&report.diagnostics), []);
    let text = summary(&report);
    assert!(
        text.contains("  hosted       scout, lab (robots: ci, reader)\n"),
        "{text}"
    );
}
