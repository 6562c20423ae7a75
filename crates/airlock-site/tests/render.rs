//! Rendered configs: snapshots for several inventories, and every rendered file parsed back
//! by the reader that will consume it (the gateway's own config loader for `airlock.toml`).

mod common;

use std::fmt::Write as _;
use std::path::Path;

use airlock_ansible::inventory::Inventory;
use airlock_ansible::vault::VaultSecret;
use airlock_site::check::check;
use airlock_site::render::{Rendered, render};
use base64::Engine as _;

fn rendered(inventory: &Inventory, secret: Option<&VaultSecret>) -> Rendered {
    let report = check(inventory, secret);
    let errors: Vec<String> = report
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let rendered = render(&report.site).unwrap();
    validate(&rendered);
    rendered
}

fn rendered_text(text: &str) -> Rendered {
    rendered(&common::parse(text), None)
}

/// Every file parses as what it claims to be.
fn validate(rendered: &Rendered) {
    validate_gateway(rendered.get("staging/airlock.toml").unwrap());
    for (path, content) in &rendered.files {
        let name = path.to_string_lossy();
        if name.ends_with(".toml") || name.ends_with("registries.conf") {
            toml::from_str::<toml::Table>(content).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        if name.ends_with(".yaml") || name.ends_with("condarc") {
            airlock_ansible::yaml::parse_str(content, path).unwrap();
        }
    }
}

/// The gateway config passes the gateway's own loader, `[egress]` included.
fn validate_gateway(gateway: &str) {
    if let Err(e) = airlock_config::Config::from_toml_str(gateway, "rendered airlock.toml") {
        panic!("the gateway refuses the rendered config: {e}\n{gateway}")
    }
}

fn all_files(rendered: &Rendered) -> String {
    let mut out = String::new();
    for (path, content) in &rendered.files {
        let _ = write!(out, "=== {} ===\n{content}", path.display());
    }
    out
}

fn egress_view(rendered: &Rendered) -> String {
    let gateway = rendered.get("staging/airlock.toml").unwrap();
    let egress = &gateway[gateway.find("[egress]").unwrap()..];
    format!(
        "{egress}--- keycloak-proxy-mappings.txt\n{}",
        rendered.get("keycloak-proxy-mappings.txt").unwrap()
    )
}

#[test]
fn scout_example_renders_every_file() {
    let rendered = rendered(&common::example(), Some(&common::secret()));
    let paths: Vec<String> = rendered
        .files
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    for expected in [
        "staging/airlock.toml",
        "nodes/registries.yaml",
        "nodes/certs.d/docker.io/hosts.toml",
        "nodes/certs.d/apachesuperset.docker.scarf.sh/hosts.toml",
        "nodes/registries.conf",
        "keycloak-proxy-mappings.txt",
        "clients/pip.conf",
        "clients/condarc",
        "clients/settings.xml",
        "clients/airlock.repo",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} missing: {paths:?}"
        );
    }
    insta::assert_snapshot!("scout_example", all_files(&rendered));
}

#[test]
fn provided_certificate_needs_no_ca_on_nodes() {
    let rendered = rendered_text(&common::site(
        "    tls_cert_path: /etc/airlock/tls.crt\n    tls_key_path: /etc/airlock/tls.key\n    package_proxy_mode: airlock\n",
        "",
    ));
    let registries = rendered.get("nodes/registries.yaml").unwrap();
    assert!(!registries.contains("configs:"), "{registries}");
    assert!(!registries.contains("insecure_skip_verify"));
    insta::assert_snapshot!("provided_certificate", all_files(&rendered));
}

#[test]
fn bare_hostname_when_harbor_subdomain_is_empty() {
    let rendered = rendered_text(&common::site(
        "    harbor_subdomain: ''\n    external_url: https://registry.example.org\n",
        "",
    ));
    insta::assert_snapshot!("bare_hostname", all_files(&rendered));
}

#[test]
fn identity_providers_open_exactly_their_domains() {
    for (name, vars) in [
        ("idp_none", ""),
        (
            "idp_microsoft",
            "    keycloak_microsoft_client_id: 0000-aaaa\n",
        ),
        ("idp_github", "    keycloak_gh_client_id: Iv1.abc\n"),
        (
            "idp_both",
            "    keycloak_microsoft_client_id: 0000-aaaa\n    keycloak_gh_client_id: Iv1.abc\n",
        ),
        // Defined but empty, as Scout's example leaves unused providers: not enabled.
        ("idp_empty", "    keycloak_gh_client_id: ''\n"),
    ] {
        let rendered = rendered_text(&common::site("", vars));
        insta::assert_snapshot!(name, egress_view(&rendered));
    }
}

#[test]
fn cert_manager_and_extra_domains() {
    let rendered = rendered_text(&common::site(
        "    squid_port: 8080\n    squid_extra_allowed_domains:\n      - Api.Example.com\n      - login.microsoftonline.com\n",
        "    keycloak_microsoft_client_id: 0000-aaaa\n    tls_mode: cert_manager\n    acmedns_host: https://auth.acme-dns.example.net\n",
    ));
    insta::assert_snapshot!("cert_manager_extra_domains", egress_view(&rendered));
}

#[test]
fn project_overrides_and_explicit_insecure() {
    let rendered = rendered_text(&common::site(
        "    harbor_dockerhub_proxy_project: docker-hub\n    harbor_ghcr_proxy_project: github\n",
        "    registry_insecure_skip_verify: true\n",
    ));
    let nodes = [
        "nodes/registries.yaml",
        "nodes/certs.d/docker.io/hosts.toml",
        "nodes/registries.conf",
    ]
    .map(|p| format!("=== {p} ===\n{}", rendered.get(p).unwrap()))
    .concat();
    insta::assert_snapshot!("project_overrides_insecure", nodes);
}

#[test]
fn keycloak_regexes_match_only_their_host() {
    let rendered = rendered_text(&common::site(
        "    squid_extra_allowed_domains: [a.example.com, b-c.example.org]\n",
        "",
    ));
    let mappings = rendered.get("keycloak-proxy-mappings.txt").unwrap().trim();
    let entries: Vec<(&str, &str)> = mappings
        .split(',')
        .map(|m| m.split_once(';').unwrap())
        .collect();
    assert_eq!(
        entries,
        [
            ("^a[.]example[.]com$", "http://gw.example.org:3128"),
            ("^b-c[.]example[.]org$", "http://gw.example.org:3128")
        ]
    );
    // As Keycloak applies them: the whole host name must match.
    let matches = |pattern: &str, host: &str| {
        let re = regex_automata::meta::Regex::new(pattern).unwrap();
        let input = regex_automata::Input::new(host).anchored(regex_automata::Anchored::Yes);
        re.find(input).is_some_and(|m| m.end() == host.len())
    };
    assert!(matches(entries[0].0, "a.example.com"));
    assert!(!matches(entries[0].0, "aXexample.com"));
    assert!(!matches(entries[0].0, "x.a.example.com"));
    assert!(matches(entries[1].0, "b-c.example.org"));
}

/// Regression: the gateway holds a pinned file back until it is verified, longer than pip's
/// 15 s, dnf's 30 s or conda's 60 s default read timeouts for a large file.
#[test]
fn clients_wait_for_verified_downloads() {
    let rendered = rendered(&common::example(), Some(&common::secret()));
    for (path, setting) in [
        ("clients/pip.conf", "timeout = 300"),
        ("clients/condarc", "remote_read_timeout_secs: 300"),
    ] {
        let text = rendered.get(path).unwrap();
        assert!(text.lines().any(|l| l == setting), "{path}:\n{text}");
    }
    let repo = rendered.get("clients/airlock.repo").unwrap();
    let sections = repo.matches("\n[").count();
    assert!(sections > 0, "{repo}");
    assert_eq!(
        repo.lines().filter(|l| *l == "timeout=300").count(),
        sections,
        "every repository waits:\n{repo}"
    );
    for setting in ["gpgcheck=1", "repo_gpgcheck=0"] {
        assert_eq!(
            repo.lines().filter(|l| *l == setting).count(),
            sections,
            "packages' signatures checked, regenerated metadata read unsigned:\n{repo}"
        );
    }
}

#[test]
fn connected_site_without_staging_cannot_render() {
    let text = "server:\n  hosts:\n    cp:\nk3s_cluster:\n  children:\n    server:\n";
    let report = check(
        &Inventory::parse_str(text, Path::new("i.yaml")).unwrap(),
        None,
    );
    let err = render(&report.site).unwrap_err().to_string();
    assert!(err.contains("no staging host"), "{err}");
}

#[test]
fn write_to_creates_the_tree() {
    let rendered = rendered(&common::example(), Some(&common::secret()));
    let dir = tempfile::tempdir().unwrap();
    rendered.write_to(dir.path()).unwrap();
    for (path, content) in &rendered.files {
        assert_eq!(
            &std::fs::read_to_string(dir.path().join(path)).unwrap(),
            content
        );
    }
}

/// Scout's vaulted `harbor_admin_password` becomes the gateway's `admin` user: only an
/// argon2id hash of it is rendered, the same on every render (so a re-deploy changes
/// nothing); the example's placeholder renders no `[admin]` at all.
#[test]
fn the_harbor_admin_password_becomes_the_admin_user_as_a_hash_only() {
    let password = "9f2c41d0-an-admin-password";
    let example = std::fs::read_to_string(common::example_path()).unwrap();
    let placeholder = example
        .lines()
        .find(|l| l.trim_start().starts_with("harbor_admin_password:"))
        .unwrap();
    let snippet = airlock_ansible::vault::encrypt_string_snippet(
        "harbor_admin_password",
        password.as_bytes(),
        &common::secret(),
        None,
    )
    .unwrap();
    let mut indented = String::new();
    for line in snippet.lines() {
        let _ = writeln!(indented, "    {line}");
    }
    let text = example.replace(&format!("{placeholder}\n"), &indented);
    let render_once = || {
        let inventory =
            airlock_ansible::inventory::Inventory::parse_str(&text, &common::example_path())
                .unwrap();
        rendered(&inventory, Some(&common::secret()))
    };
    let first = render_once();
    let gateway = first.get("staging/airlock.toml").unwrap();
    assert!(!all_files(&first).contains(password));
    let config = airlock_config::Config::from_toml_str(gateway, "airlock.toml").unwrap();
    assert_eq!(config.admin_users.len(), 1, "{gateway}");
    assert_eq!(config.admin_users[0].name, "admin");
    assert!(config.admin_users[0].verify(password.as_bytes()));
    assert!(!config.admin_users[0].verify(b"harbor12345"));
    assert_eq!(render_once().get("staging/airlock.toml").unwrap(), gateway);

    let example = rendered(&common::example(), Some(&common::secret()));
    assert!(
        !example
            .get("staging/airlock.toml")
            .unwrap()
            .contains("[admin]")
    );
}

/// The staging hosts of `airlock_testkit::inventory::replicated_site`, in inventory order.
const REPLICAS: [&str; 3] = [
    "north.example.test",
    "south.example.test",
    "east.example.test",
];

fn replicated(storage: &str) -> Rendered {
    rendered_text(&airlock_testkit::inventory::replicated_site(storage))
}

/// The position of each of `needles` in `text`, which must hold every one.
fn positions(text: &str, needles: &[String]) -> Vec<usize> {
    needles
        .iter()
        .map(|n| {
            text.find(n.as_str())
                .unwrap_or_else(|| panic!("{n} missing:\n{text}"))
        })
        .collect()
}

/// K3s tries a mirror's endpoints in order: every replica is one, in inventory order, and
/// each has the CA nodes trust.
#[test]
fn registries_yaml_lists_every_replica_in_inventory_order() {
    let rendered = replicated(airlock_testkit::inventory::SHARED_BUCKET);
    let text = rendered.get("nodes/registries.yaml").unwrap();
    let doc = airlock_ansible::yaml::parse_str(text, Path::new("registries.yaml")).unwrap();
    let expected: Vec<String> = REPLICAS
        .iter()
        .map(|r| format!("https://harbor.{r}"))
        .collect();
    let mirrors = doc.get("mirrors").unwrap().as_map().unwrap();
    assert_eq!(mirrors.len(), 8, "{text}");
    for (registry, mirror) in mirrors {
        let endpoints: Vec<&str> = mirror
            .get("endpoint")
            .unwrap()
            .as_seq()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert_eq!(endpoints, expected, "{:?}", registry.as_str());
        assert!(mirror.get("rewrite").is_some());
    }
    let configs = doc.get("configs").unwrap();
    for replica in REPLICAS {
        let tls = configs
            .get(&format!("harbor.{replica}"))
            .and_then(|c| c.get("tls"))
            .unwrap_or_else(|| panic!("no configs entry for {replica}:\n{text}"));
        assert_eq!(
            tls.get("ca_file").unwrap().as_str(),
            Some("/etc/rancher/k3s/staging-ca.crt")
        );
    }
}

/// containerd tries `[host]` entries in file order: every replica, in inventory order, each
/// with the CA; podman and CRI-O get the same mirrors in the same order.
#[test]
fn hosts_toml_and_registries_conf_list_every_replica_in_inventory_order() {
    let rendered = replicated(airlock_testkit::inventory::SHARED_BUCKET);
    let hosts = rendered.get("nodes/certs.d/docker.io/hosts.toml").unwrap();
    let headers: Vec<String> = REPLICAS
        .iter()
        .map(|r| format!("[host.\"https://harbor.{r}\"]"))
        .collect();
    let at = positions(hosts, &headers);
    assert!(at.is_sorted(), "{hosts}");
    let table: toml::Table = toml::from_str(hosts).unwrap();
    let host = table["host"].as_table().unwrap();
    assert_eq!(host.len(), 3, "{hosts}");
    for entry in host.values() {
        assert_eq!(
            entry["ca"].as_str(),
            Some("/etc/rancher/k3s/staging-ca.crt")
        );
        assert_eq!(entry["capabilities"].as_array().unwrap().len(), 2);
    }
    let conf = rendered.get("nodes/registries.conf").unwrap();
    let locations: Vec<String> = REPLICAS
        .iter()
        .map(|r| format!("location = \"harbor.{r}/dockerhub-proxy\""))
        .collect();
    assert!(positions(conf, &locations).is_sorted(), "{conf}");
}

/// Each replica's gateway config is the first one's but for its names: one `[storage]` (the
/// shared bucket), one `[admin]`, one set of proxies; `staging/airlock.toml` is the first's.
#[test]
fn every_replica_runs_the_same_gateway_under_its_own_name() {
    let rendered = replicated(&format!(
        "{}\n    airlock_admin_password: a-site-password",
        airlock_testkit::inventory::SHARED_BUCKET
    ));
    let load = |path: &str| {
        let text = rendered
            .get(path)
            .unwrap_or_else(|| panic!("{path} not rendered"));
        airlock_config::Config::from_toml_str(text, path).unwrap()
    };
    let configs: Vec<airlock_config::Config> = REPLICAS
        .iter()
        .map(|r| load(&format!("staging/{r}/airlock.toml")))
        .collect();
    for ((config, name), address) in configs.iter().zip(REPLICAS).zip(21..) {
        assert_eq!(config.server.hostname, name);
        assert!(
            config
                .server
                .extra_names
                .contains(&format!("10.0.0.{address}")),
            "{:?}",
            config.server.extra_names
        );
        let airlock_config::StorageConfig::S3(s3) = &config.storage else {
            panic!("{name}: {:?}", config.storage);
        };
        assert_eq!(s3.bucket, "airlock");
        assert_eq!(s3.endpoint_text().as_deref(), Some("http://10.0.0.7:3900"));
        assert_eq!(
            s3.secret_access_key_file.as_deref(),
            Some(Path::new("/etc/airlock/s3.secret"))
        );
    }
    let without_names = |config: &airlock_config::Config| {
        let mut raw = config.to_raw();
        raw.server.hostname = None;
        raw.server.extra_names.clear();
        raw.to_toml()
    };
    for config in &configs[1..] {
        assert_eq!(config.storage, configs[0].storage);
        assert_eq!(without_names(config), without_names(&configs[0]));
    }
    assert_eq!(
        rendered.get("staging/airlock.toml"),
        rendered.get("staging/north.example.test/airlock.toml")
    );
}

/// `explain-image` names the first replica and then the others, in the order nodes try them.
#[test]
fn explain_image_names_the_replicas_in_the_order_nodes_try_them() {
    let text =
        airlock_testkit::inventory::replicated_site(airlock_testkit::inventory::SHARED_BUCKET);
    let report = check(&common::parse(&text), None);
    let explained = airlock_site::explain::explain(&report.site, "postgres:15").unwrap();
    assert_eq!(explained.registry_host, "harbor.north.example.test");
    assert_eq!(
        explained.fallbacks,
        ["harbor.south.example.test", "harbor.east.example.test"]
    );
    let shown = explained.to_string();
    assert!(
        shown.contains(
            "then        the same paths on harbor.south.example.test, harbor.east.example.test"
        ),
        "{shown}"
    );
    let small = check(&common::parse(airlock_testkit::inventory::SMALL_SITE), None);
    let single = airlock_site::explain::explain(&small.site, "postgres:15").unwrap();
    assert!(single.fallbacks.is_empty());
    assert!(!single.to_string().contains("then "));
}

/// The robots of `fixtures/hosted.yaml`, with the secrets its vault values decrypt to.
const ROBOT_SECRETS: [(&str, &str); 2] = [("ci", "ci-5ecret-7d1f0a"), ("reader", "r3ader-0b5c22")];

fn hosted_site() -> Rendered {
    let inventory = Inventory::load(&common::fixtures().join("hosted.yaml"), None).unwrap();
    rendered(&inventory, Some(&common::secret()))
}

/// `airlock_hosted_projects` and `airlock_robots` become `[[hosted]]` and `[[robot]]`: the
/// gateway's loader takes them, each robot's hash verifies its vaulted secret (and no other),
/// and no secret is written anywhere but the robots' own login files.
#[test]
fn hosted_projects_and_robots_reach_the_gateway_as_hashes_only() {
    let rendered = hosted_site();
    let gateway = rendered.get("staging/airlock.toml").unwrap();
    let config = airlock_config::Config::from_toml_str(gateway, "airlock.toml").unwrap();
    let projects: Vec<(&str, bool, bool)> = config
        .hosted
        .iter()
        .map(|h| (h.name.as_str(), h.anonymous_pull, h.delete))
        .collect();
    assert_eq!(projects, [("scout", true, false), ("lab", false, true)]);
    let names: Vec<&str> = config
        .robots
        .iter()
        .map(airlock_config::Robot::name)
        .collect();
    assert_eq!(names, ["ci", "reader"]);
    for (robot, (name, secret)) in config.robots.iter().zip(ROBOT_SECRETS) {
        assert!(robot.verify(secret.as_bytes()), "{name}");
        for (other, wrong) in ROBOT_SECRETS {
            assert_eq!(robot.verify(wrong.as_bytes()), other == name, "{name}");
        }
    }
    use airlock_config::Action;
    let ci = &config.robots[0];
    assert!(ci.allows("scout/tools/app", Action::Push));
    assert!(ci.allows("lab/base-images/ubi9", Action::Pull));
    assert!(!ci.allows("lab/base-images/ubi9", Action::Push));
    assert!(!config.robots[1].allows("lab/x", Action::Push));
    for (path, content) in &rendered.files {
        if rendered.private.contains(path) {
            continue;
        }
        for (_, secret) in ROBOT_SECRETS {
            assert!(
                !content.contains(secret),
                "{} holds a secret",
                path.display()
            );
        }
    }
    insta::assert_snapshot!(
        "hosted_gateway_and_ci_readme",
        format!(
            "{gateway}=== ci/ci/README.txt ===\n{}",
            rendered.get("ci/ci/README.txt").unwrap()
        )
    );
}

/// A re-render writes the same bytes, hashes included, so a re-deploy changes nothing.
#[test]
fn hosted_sites_render_byte_identical_again() {
    assert_eq!(hosted_site(), hosted_site());
}

/// Each robot's `config.json` is a `docker login` file for the registry name nodes use,
/// whose `auth` is the robot's `name:secret`; only those files are private.
#[test]
fn each_robot_gets_a_docker_style_login_file() {
    let rendered = hosted_site();
    let private: Vec<String> = rendered
        .private
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(private, ["ci/ci/config.json", "ci/reader/config.json"]);
    for (name, secret) in ROBOT_SECRETS {
        let text = rendered.get(&format!("ci/{name}/config.json")).unwrap();
        let file: serde_json::Value = serde_json::from_str(text).unwrap();
        let auths = file["auths"].as_object().unwrap();
        let registries: Vec<&String> = auths.keys().collect();
        assert_eq!(registries, ["harbor.staging.example.edu"], "{text}");
        let auth = auths["harbor.staging.example.edu"]["auth"]
            .as_str()
            .unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            format!("{name}:{secret}")
        );
    }
}

/// The login files are 0600 on disk, even over a readable file that was there before.
#[cfg(unix)]
#[test]
fn robot_logins_are_written_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let rendered = hosted_site();
    let dir = tempfile::tempdir().unwrap();
    let login = dir.path().join("ci/ci/config.json");
    std::fs::create_dir_all(login.parent().unwrap()).unwrap();
    std::fs::write(&login, "stale").unwrap();
    std::fs::set_permissions(&login, std::fs::Permissions::from_mode(0o644)).unwrap();
    rendered.write_to(dir.path()).unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    for (path, content) in &rendered.files {
        let at = dir.path().join(path);
        assert_eq!(&std::fs::read_to_string(&at).unwrap(), content);
        if rendered.private.contains(path) {
            assert_eq!(mode(&at), 0o600, "{}", path.display());
        }
    }
    let left: Vec<_> = std::fs::read_dir(login.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "no temporary left: {left:?}");
}
