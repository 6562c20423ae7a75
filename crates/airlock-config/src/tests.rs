//! Tests of parsing and validation.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "test.toml")
}

fn err(text: &str) -> String {
    parse(text)
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn embedded_default_has_scouts_registries() {
    let config = Config::embedded_default();
    let names: Vec<_> = config
        .proxies
        .iter()
        .filter(|p| p.format == Format::Oci)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "dockerhub-proxy",
            "ghcr-proxy",
            "quay-proxy",
            "k8ssandra-proxy",
            "k8s-proxy",
            "elastic-proxy",
            "nvidia-proxy",
            "apachesuperset-proxy"
        ]
    );
    let raw: Vec<_> = config
        .proxies
        .iter()
        .filter(|p| p.format == Format::Raw)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(raw, ["k3s-releases", "k3s-install"]);
    assert!(
        config
            .proxy("pypi-proxy")
            .is_some_and(|p| p.format == Format::Pypi)
    );
    let maven = config
        .proxy("maven-central")
        .expect("maven-central in the default");
    assert_eq!(maven.format, Format::Maven);
    assert_eq!(maven.upstream.as_str(), "https://repo1.maven.org/maven2/");
    assert_eq!(config.server.listen.port(), 8443);
    assert_eq!(config.tls.mode, TlsMode::SelfSigned);
    assert_eq!(config.data_dir, PathBuf::from("./airlock-data"));
}

#[test]
fn resolved_form_parses_back_to_the_same() {
    let config = Config::embedded_default();
    let again = parse(&config.to_toml()).unwrap();
    assert_eq!(again.to_toml(), config.to_toml());
}

#[test]
fn durations_and_sizes() {
    let config = parse(
        r#"
        [cache]
        max_size = "100GiB"
        unused_for = "14d"
        grace = "2m"
        min_free = "5GiB"
        [[proxy]]
        name = "x"
        format = "oci"
        upstream = "https://r.example"
        tag_ttl = "30s"
        "#,
    )
    .unwrap();
    assert_eq!(config.cache.max_size, Some(ByteSize(100 << 30)));
    assert_eq!(
        config.cache.unused_for,
        Some(HumanDuration::from_secs(14 * 86400))
    );
    assert_eq!(config.cache.grace, HumanDuration::from_secs(120));
    assert_eq!(config.cache.min_free, Some(ByteSize(5 << 30)));
    assert_eq!(config.proxies[0].tag_ttl, HumanDuration::from_secs(30));
    let defaults = parse("[cache]\nmax_size = \"1GiB\"").unwrap();
    assert_eq!(defaults.cache.grace, HumanDuration::from_secs(600));
    assert_eq!(defaults.cache.min_free, None);
    assert!(err("[cache]\nmin_free = \"plenty\"").contains("invalid size"));
    assert!(err("[cache]\ngrace = \"a while\"").contains("invalid duration"));
    assert!(err("[cache]\nmax_size = \"lots\"").contains("invalid size"));
    assert!(err("[cache]\nunused_for = \"soon\"").contains("invalid duration"));
}

#[test]
fn unknown_keys_are_errors() {
    assert!(err("colour = \"blue\"").contains("unknown field `colour`"));
    assert!(err("[server]\nlisten_on = \"0.0.0.0:1\"").contains("unknown field `listen_on`"));
    assert!(
        err("[[proxy]]\nname = \"a\"\nformat = \"oci\"\nupstream = \"https://a\"\nttl = \"5m\"")
            .contains("unknown field `ttl`")
    );
}

#[test]
fn proxy_checks() {
    let proxy = |extra: &str| {
        format!(
            "[[proxy]]\nname = \"p\"\nformat = \"oci\"\nupstream = \"https://r.example\"\n{extra}"
        )
    };
    assert!(
        err("[[proxy]]\nname = \"../x\"\nformat = \"oci\"\nupstream = \"https://a\"")
            .contains("invalid")
    );
    assert!(
        err("[[proxy]]\nname = \"p\"\nformat = \"npm\"\nupstream = \"https://a\"")
            .contains("unknown variant")
    );
    assert!(
        err("[[proxy]]\nname = \"p\"\nformat = \"oci\"\nupstream = \"ftp://a\"")
            .contains("http(s) URL")
    );
    assert!(
        err("[[proxy]]\nname = \"p\"\nformat = \"oci\"\nupstream = \"https://u:pw@a\"")
            .contains("credentials")
    );
    assert!(err(&proxy("host = \"Docker.IO\"")).contains("not a registry host"));
    assert!(err(&proxy("password_file = \"/x\"")).contains("needs a username"));
    let twice = format!("{}\n{}", proxy(""), proxy(""));
    assert!(err(&twice).contains("used twice"));
    assert!(
        err("[[proxy]]\nname = \"p\"\nformat = \"pypi\"\nupstream = \"https://a\"\nhost = \"a\"")
            .contains("only for format")
    );
    assert!(parse(&proxy("host = \"registry.local:5000\"")).is_ok());
}

#[test]
fn tls_and_default_proxy_checks() {
    assert!(err("[tls]\nmode = \"files\"").contains("needs both cert and key"));
    assert!(err("[tls]\nmode = \"off\"\ncert = \"/c\"").contains("only used with mode"));
    assert!(err("[tls]\nmode = \"acme\"").contains("unknown variant"));
    assert!(err("[server]\ndefault_proxy = \"nope\"").contains("names no [[proxy]]"));
    assert!(err("[server]\nlisten = \"not an address\"").contains("invalid socket address"));
}

#[test]
fn example_configs_are_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&examples).expect("examples/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "expected example configs in {}",
        examples.display()
    );
}

#[test]
fn pins_and_offline() {
    let config = parse(
        "[cache]\npin = [\"dockerhub-proxy/library/postgres:15\", \"docker.io/library/redis@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"]\n\
         [[proxy]]\nname = \"p\"\nformat = \"oci\"\nupstream = \"https://r.example\"\noffline = true",
    )
    .unwrap();
    assert_eq!(config.cache.pin.len(), 2);
    assert_eq!(
        config.cache.pin[0].repository().as_str(),
        "dockerhub-proxy/library/postgres"
    );
    assert!(
        config.cache.pin[1].digest().is_some(),
        "parsed once, at load"
    );
    assert!(config.proxies[0].offline);
    assert!(err("[cache]\npin = [\"postgres\"]").contains("[cache] pin"));
    assert!(err("[cache]\npin = [\"library/postgres\"]").contains("[cache] pin"));
    // A digest is checked when the file is read, not first when the registry starts.
    assert!(err("[cache]\npin = [\"docker.io/library/redis@sha256:abc\"]").contains("[cache] pin"));
}

#[test]
fn egress_section_is_checked_at_load() {
    let config = Config::embedded_default();
    let egress = config
        .egress
        .as_ref()
        .expect("the default runs the egress proxy");
    assert_eq!(egress.listen.port(), 3128);
    assert!(egress.allow.is_empty());
    let ok = parse("[egress]\nlisten = \"127.0.0.1:3128\"\nallow = [\"login.microsoftonline.com\", \"*.github.com\"]").unwrap();
    assert_eq!(ok.egress.unwrap().ports, vec![443]);
    for bad in ["*.com", "https://x.example", "x.example:443", ".x.example"] {
        let message = err(&format!("[egress]\nallow = [\"{bad}\"]"));
        assert!(message.contains("[egress]"), "{bad}: {message}");
    }
    assert!(err("[egress]\nlisten_on = \"x\"").contains("unknown field"));
}

#[test]
fn raw_sha256_lists() {
    let ok = parse("[[proxy]]\nname = \"r\"\nformat = \"raw\"\nupstream = \"https://f.example/\"\n[proxy.sha256]\n\"v1/k3s\" = \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"").unwrap();
    assert_eq!(ok.proxies[0].sha256.len(), 1);
    assert!(err("[[proxy]]\nname = \"r\"\nformat = \"raw\"\nupstream = \"https://f.example/\"\n[proxy.sha256]\n\"k3s\" = \"abc\"").contains("64 lowercase hex"));
    assert!(err("[[proxy]]\nname = \"r\"\nformat = \"oci\"\nupstream = \"https://f.example/\"\n[proxy.sha256]\n\"k3s\" = \"abc\"").contains("only for format"));
}

#[test]
fn maven_and_helm_formats_are_accepted() {
    let config = parse(
        "[[proxy]]\nname = \"central\"\nformat = \"maven\"\nupstream = \"https://repo1.maven.org/maven2\"\nmetadata_ttl = \"10m\"\n\
         [[proxy]]\nname = \"bitnami\"\nformat = \"helm\"\nupstream = \"https://charts.bitnami.com/bitnami\"",
    )
    .unwrap();
    assert_eq!(config.proxy("central").unwrap().format, Format::Maven);
    assert_eq!(config.proxy("bitnami").unwrap().format, Format::Helm);
    assert_eq!(Format::Maven.as_str(), "maven");
    assert_eq!(Format::Helm.as_str(), "helm");
    // Like every package format, neither takes an OCI `host` nor a raw `sha256` table.
    for format in ["maven", "helm"] {
        assert!(
            err(&format!("[[proxy]]\nname = \"p\"\nformat = \"{format}\"\nupstream = \"https://a\"\nhost = \"a\""))
                .contains("only for format")
        );
        assert!(
            err(&format!("[[proxy]]\nname = \"p\"\nformat = \"{format}\"\nupstream = \"https://a\"\n[proxy.sha256]\n\"k\" = \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\""))
                .contains("only for format")
        );
    }
}

#[test]
fn listener_limits_have_safe_defaults_and_are_checked() {
    let server = Config::embedded_default().server;
    assert_eq!(server.header_timeout, HumanDuration::from_secs(10));
    assert_eq!(server.idle_timeout, HumanDuration::from_secs(60));
    assert_eq!(server.max_connections, 4096);
    assert_eq!(server.max_connections_per_client, 256);
    assert_eq!(server.max_header_size, ByteSize(64 << 10));
    // A file without the keys gets the same values the embedded default writes out.
    let unset = parse("").unwrap().server;
    assert_eq!(
        (
            unset.header_timeout,
            unset.idle_timeout,
            unset.max_connections,
            unset.max_connections_per_client,
            unset.max_header_size
        ),
        (
            server.header_timeout,
            server.idle_timeout,
            server.max_connections,
            server.max_connections_per_client,
            server.max_header_size
        )
    );
    let set = parse(
        "[server]\nheader_timeout = \"2s\"\nidle_timeout = \"5m\"\nmax_connections = 10\n\
         max_connections_per_client = 10\nmax_header_size = \"16KiB\"",
    )
    .unwrap()
    .server;
    assert_eq!(set.header_timeout, HumanDuration::from_secs(2));
    assert_eq!(set.idle_timeout, HumanDuration::from_secs(300));
    assert_eq!(
        (set.max_connections, set.max_connections_per_client),
        (10, 10)
    );
    assert_eq!(set.max_header_size, ByteSize(16 << 10));

    assert!(err("[server]\nheader_timeout = \"0s\"").contains("header_timeout must be longer"));
    assert!(err("[server]\nidle_timeout = \"0s\"").contains("idle_timeout must be longer"));
    assert!(err("[server]\nmax_connections = 0").contains("at least 1"));
    assert!(err("[server]\nmax_connections_per_client = 0").contains("at least 1"));
    assert!(err("[server]\nmax_connections = -1").contains("invalid value"));
    let over = err("[server]\nmax_connections = 100\nmax_connections_per_client = 101");
    assert!(
        over.contains("max_connections_per_client (101) is above max_connections (100)"),
        "{over}"
    );
    let small = err("[server]\nmax_header_size = \"4KiB\"");
    assert!(
        small.contains("max_header_size 4KiB is out of range: write 8KiB to 1MiB"),
        "{small}"
    );
    assert!(err("[server]\nmax_header_size = \"2MiB\"").contains("out of range"));
    assert!(err("[server]\nheader_timeout = \"soon\"").contains("invalid duration"));
}

#[test]
fn refusals_are_typed() {
    let refused = |text: &str| match parse(text) {
        Err(ConfigError::Invalid { problem, .. }) => problem,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        refused("[server]\nmax_connections = 0"),
        Invalid::ZeroConnections
    ));
    assert!(matches!(
        refused("[cache]\npin = [\"x\"]"),
        Invalid::Pin { pin } if pin == "x"
    ));
    assert!(matches!(
        refused("[egress]\nports = []"),
        Invalid::Egress(EgressConfigError::Ports(_))
    ));
}

#[test]
fn raw_files_say_only_what_they_set() {
    let file = raw::Config {
        data_dir: Some("/var/lib/airlock".into()),
        proxies: vec![raw::Proxy::new(
            "hub",
            Format::Oci,
            "https://registry-1.docker.io".parse().unwrap(),
        )],
        egress: Some(Egress {
            ports: Some(vec![443]),
            ..Egress::default()
        }),
        ..raw::Config::default()
    };
    assert_eq!(
        file.to_toml(),
        "data_dir = \"/var/lib/airlock\"\n\n[server]\n\n[tls]\n\n[[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"https://registry-1.docker.io\"\n\n[egress]\nports = [443]\n"
    );
    let resolved = Config::from_raw(&file).unwrap();
    assert_eq!(
        resolved.proxies[0].upstream.as_str(),
        "https://registry-1.docker.io/"
    );
    assert_eq!(resolved.proxies[0].tag_ttl, HumanDuration::from_secs(300));
    // Written back in full, it resolves to the same.
    let again = Config::from_raw(&resolved.to_raw()).unwrap();
    assert_eq!(again.to_toml(), resolved.to_toml());
}

#[test]
fn upstream_proxy_is_checked_at_load_and_written_back() {
    assert!(Config::embedded_default().upstream_proxy.is_none());
    let config = parse(
        "[upstream_proxy]\nurl = \"http://proxy.example.edu:3128\"\nusername = \"airlock\"\npassword_file = \"/etc/airlock/upstream-proxy.password\"\nca_file = \"/etc/pki/site-proxy-ca.pem\"\nno_proxy = [\"10.0.0.0/8\", \".example.edu\"]",
    )
    .unwrap();
    let proxy = config.upstream_proxy.as_ref().unwrap();
    assert_eq!(proxy.url.as_str(), "http://proxy.example.edu:3128/");
    assert_eq!(proxy.no_proxy.len(), 2);
    let text = config.to_toml();
    assert!(
        text.contains("[upstream_proxy]\nurl = \"http://proxy.example.edu:3128\"\n"),
        "{text}"
    );
    let again = Config::from_toml_str(&text, "again").unwrap();
    assert_eq!(again.upstream_proxy, config.upstream_proxy);
    let message = err(
        "[upstream_proxy]\nurl = \"http://proxy.example.edu:3128\"\nno_proxy = [\"10.0.0.1/8\"]",
    );
    assert!(
        message.starts_with("test.toml: [upstream_proxy] no_proxy entry \"10.0.0.1/8\""),
        "{message}"
    );
    let message = err("[upstream_proxy]\nurl = \"https://u:topsecret@proxy:3128\"");
    assert!(message.contains("[upstream_proxy]"), "{message}");
    assert!(!message.contains("topsecret"), "{message}");
    assert!(err("[upstream_proxy]\nno_proxy = []").contains("missing field `url`"));
}

#[test]
fn admin_users_parse_strictly_and_round_trip() {
    let hash = hash_password(b"s3cret").unwrap();
    let config = parse(&format!(
        "[admin]\nusers = [{{ name = \"admin\", password_hash = \"{hash}\" }}]\n"
    ))
    .unwrap();
    assert_eq!(config.admin_users.len(), 1);
    assert_eq!(config.admin_users[0].name, "admin");
    assert!(config.admin_users[0].verify(b"s3cret"));
    let again = parse(&config.to_toml()).unwrap();
    assert_eq!(again.admin_users, config.admin_users);

    assert!(parse("").unwrap().admin_users.is_empty());
    assert!(
        parse("[admin]\nusers = []\n")
            .unwrap()
            .admin_users
            .is_empty()
    );
    assert!(!parse("").unwrap().to_toml().contains("[admin]"));

    let unknown = err(&format!(
        "[admin]\nusers = [{{ name = \"admin\", password = \"{hash}\" }}]\n"
    ));
    assert!(unknown.contains("unknown field `password`"), "{unknown}");
    let plain = err("[admin]\nusers = [{ name = \"admin\", password_hash = \"hunter2\" }]\n");
    assert!(
        plain.contains("[admin] user \"admin\": password_hash is refused")
            && plain.contains("airlock admin hash-password"),
        "{plain}"
    );
    let twice = err(&format!(
        "[admin]\nusers = [{{ name = \"a\", password_hash = \"{hash}\" }}, {{ name = \"a\", password_hash = \"{hash}\" }}]\n"
    ));
    assert!(twice.contains("listed twice"), "{twice}");
}

#[test]
fn policy_rules_resolve_against_the_proxies_and_round_trip() {
    let proxies = "[[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"https://registry-1.docker.io\"\n\
                   [[proxy]]\nname = \"pypi\"\nformat = \"pypi\"\nupstream = \"https://pypi.org\"\n";
    let text = format!(
        "{proxies}[[policy]]\nname = \"no-evil\"\nproxy = \"hub\"\ndeny = [\"library/evil*\"]\nmode = \"log\"\n\
         [[policy]]\nname = \"pins\"\nproxy = \"pypi\"\ndeny = [\"requests==2.31.0\"]\n\
         [[policy]]\nname = \"small\"\nmax_blob_size = \"2GiB\"\n"
    );
    let config = parse(&text).unwrap();
    let names: Vec<&str> = config
        .policy
        .rules()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["no-evil", "pins", "small"]);
    let again = parse(&config.to_toml()).unwrap();
    assert_eq!(again.to_toml(), config.to_toml());
    assert!(config.to_toml().contains("max_blob_size = \"2GiB\""));

    let refused = err(&format!(
        "{proxies}[[policy]]\nname = \"wheels\"\nproxy = \"hub\"\ndeny = [\"requests==2.31.0\"]\n"
    ));
    assert!(
        refused.contains("[[policy]] wheels") && refused.contains("requests==2.31.0"),
        "{refused}"
    );
    let refused = err(&format!(
        "{proxies}[[policy]]\nname = \"x\"\nproxy = \"npm\"\ndeny = [\"a\"]\n"
    ));
    assert!(
        refused.contains("[[policy]] x: proxy \"npm\" names no [[proxy]]"),
        "{refused}"
    );
    let refused = err(&format!(
        "{proxies}[[policy]]\nname = \"x\"\ndeny = [\"a\"]\nwhen = 1\n"
    ));
    assert!(refused.contains("when"), "{refused}");
}

#[test]
fn the_audit_trail_defaults_to_the_data_dir_and_refuses_a_tiny_max_size() {
    let config = Config::from_raw(&raw::Config::default()).unwrap();
    assert_eq!(config.audit.path, config.data_dir.join("audit.jsonl"));
    assert_eq!(config.audit.max_size, AuditConfig::DEFAULT_MAX_SIZE);
    assert_eq!(config.audit.keep, 5);
    let set: raw::Config = toml::from_str(
        "[audit]\npath = \"/var/log/airlock/audit.jsonl\"\nmax_size = \"1MiB\"\nkeep = 0\n",
    )
    .unwrap();
    let config = Config::from_raw(&set).unwrap();
    assert_eq!(config.audit.path, Path::new("/var/log/airlock/audit.jsonl"));
    assert_eq!(config.audit.max_size.0, 1 << 20);
    assert_eq!(config.audit.keep, 0);
    assert_eq!(
        Config::from_raw(&config.to_raw()).unwrap().audit,
        config.audit
    );
    assert!(matches!(
        parse("[audit]\nmax_size = \"1KiB\""),
        Err(ConfigError::Invalid {
            problem: Invalid::AuditMaxSize { size: 1024 },
            ..
        })
    ));
    assert!(toml::from_str::<raw::Config>("[audit]\nrotate = 3\n").is_err());
}

#[test]
fn storage_defaults_to_the_data_dir_and_an_s3_table_resolves_with_its_defaults() {
    assert_eq!(parse("").unwrap().storage, StorageConfig::Fs);
    let config = parse(
        "[storage]\nbackend = \"s3\"\nbucket = \"airlock\"\nendpoint = \"http://10.0.0.7:3900\"\n\
         region = \"garage\"\naccess_key_id_file = \"/etc/airlock/s3.id\"\n\
         secret_access_key_file = \"/etc/airlock/s3.secret\"\nlocal_cache = \"50GiB\"\n\
         k2v_endpoint = \"http://10.0.0.7:3904\"\n",
    )
    .unwrap();
    let StorageConfig::S3(s3) = &config.storage else {
        panic!("{:?}", config.storage);
    };
    assert_eq!(
        s3.endpoint.as_ref().unwrap().as_str(),
        "http://10.0.0.7:3900/"
    );
    assert!(s3.path_style, "an endpoint defaults to path-style requests");
    assert_eq!(s3.local_cache.0, 50 << 30);
    assert_eq!(
        s3.access_key_id_file.as_deref(),
        Some(Path::new("/etc/airlock/s3.id"))
    );
    assert_eq!(parse(&config.to_toml()).unwrap().storage, config.storage);
    assert!(
        config
            .to_toml()
            .contains("endpoint = \"http://10.0.0.7:3900\"\n")
    );
    assert_eq!(
        s3.k2v_endpoint_text().as_deref(),
        Some("http://10.0.0.7:3904")
    );

    let aws = parse("[storage]\nbackend = \"s3\"\nbucket = \"site-cache\"\n").unwrap();
    let StorageConfig::S3(aws) = aws.storage else {
        panic!("not s3");
    };
    assert_eq!(aws.region, S3Config::DEFAULT_REGION);
    assert!(!aws.path_style && aws.endpoint.is_none());
    assert_eq!(aws.local_cache, S3Config::DEFAULT_LOCAL_CACHE);
    assert_eq!(
        aws.k2v_endpoint, None,
        "records are not shared unless asked"
    );
    assert_eq!(
        aws.access_key_id_file, None,
        "the environment gives the key"
    );
}

#[test]
fn storage_refusals_name_the_key_and_what_to_write() {
    let cases = [
        ("backend = \"s3\"", "needs a bucket"),
        (
            "backend = \"s3\"\nbucket = \"A_B\"",
            "not an S3 bucket name",
        ),
        (
            "backend = \"s3\"\nbucket = \"-ab\"",
            "not an S3 bucket name",
        ),
        (
            "backend = \"s3\"\nbucket = \"b12\"\nendpoint = \"ftp://h:1\"",
            "http:// or https://",
        ),
        (
            "backend = \"s3\"\nbucket = \"b12\"\nendpoint = \"http://u:p@h:1\"",
            "naming only the host",
        ),
        (
            "backend = \"s3\"\nbucket = \"b12\"\nendpoint = \"http://h:1/bucket\"",
            "naming only the host",
        ),
        (
            "backend = \"s3\"\nbucket = \"b12\"\nregion = \" \"",
            "region",
        ),
        (
            "backend = \"s3\"\nbucket = \"b12\"\nsecret_access_key = \"s3cr3t\"",
            "secret_access_key is never written in the file",
        ),
        (
            "backend = \"s3\"\nbucket = \"b12\"\naccess_key_id = \"GK1\"",
            "set access_key_id_file, or set AWS_ACCESS_KEY_ID",
        ),
        ("bucket = \"b12\"", "bucket is only for backend = \"s3\""),
        ("local_cache = \"1GiB\"", "local_cache is only for backend"),
        (
            "k2v_endpoint = \"http://h:3904\"",
            "k2v_endpoint is only for backend",
        ),
        (
            "backend = \"s3\"\nbucket = \"b12\"\nk2v_endpoint = \"h:3904\"",
            "k2v_endpoint \"h:3904\" must be an http:// or https:// URL",
        ),
        (
            "backend = \"s3\"\nbucket = \"b12\"\nk2v_endpoint = \"http://h:3904/b12\"",
            "naming only the host",
        ),
        ("backend = \"gcs\"", "unknown variant"),
        (
            "backend = \"s3\"\nbucket = \"b12\"\nacl = \"x\"",
            "unknown field",
        ),
    ];
    for (table, expected) in cases {
        let refused = err(&format!("[storage]\n{table}\n"));
        assert!(refused.contains(expected), "{table:?}: {refused}");
        assert!(
            !refused.contains("s3cr3t"),
            "the secret is not echoed: {refused}"
        );
    }
}

#[test]
fn hosted_projects_default_to_closed_and_refuse_taken_or_bad_names() {
    let config =
        parse("[[hosted]]\nname = \"scout\"\nanonymous_pull = true\n\n[[hosted]]\nname = \"ci\"\n")
            .unwrap();
    let scout = config.hosted("scout").unwrap();
    assert!(scout.anonymous_pull && !scout.delete);
    let ci = config.hosted("ci").unwrap();
    assert!(
        !ci.anonymous_pull && !ci.delete,
        "closed unless the file says so"
    );
    let again = Config::from_raw(&config.to_raw()).unwrap();
    assert_eq!(again.hosted, config.hosted, "written back in full");

    let refused = |text: &str| match parse(text) {
        Err(ConfigError::Invalid { problem, .. }) => problem,
        other => panic!("{other:?}"),
    };
    let proxy = "[[proxy]]\nname = \"hub\"\nformat = \"oci\"\nupstream = \"https://registry-1.docker.io\"\n";
    assert!(matches!(
        refused(&format!("{proxy}\n[[hosted]]\nname = \"hub\"\n")),
        Invalid::HostedNameTaken { name } if name == "hub"
    ));
    assert!(matches!(
        refused("[[hosted]]\nname = \"a\"\n\n[[hosted]]\nname = \"a\"\n"),
        Invalid::HostedNameTaken { name } if name == "a"
    ));
    for bad in ["", "Scout", "a/b", "..", "-x"] {
        assert!(
            matches!(
                refused(&format!("[[hosted]]\nname = {bad:?}\n")),
                Invalid::HostedName { name } if name == bad
            ),
            "{bad:?}"
        );
    }
    let message = err("[[hosted]]\nname = \"scout\"\npush = true\n");
    assert!(message.contains("unknown field `push`"), "{message}");
    let message = err(&format!("{proxy}\n[[hosted]]\nname = \"hub\"\n"));
    assert!(message.contains("[[hosted]] name \"hub\""), "{message}");
}
