use proptest::prelude::*;

use super::*;

fn family_of(proxy: &str) -> Option<Family> {
    match proxy {
        "hub" | "ghcr" => Some(Family::Oci),
        "pypi" => Some(Family::Pypi),
        "conda" => Some(Family::Files),
        _ => None,
    }
}

fn policy(toml_text: &str) -> Result<Policy, RuleError> {
    #[derive(serde::Deserialize)]
    struct File {
        policy: Vec<RuleTable>,
    }
    let file: File = toml::from_str(toml_text).expect("test TOML parses");
    Policy::resolve(&file.policy, family_of)
}

fn manifest<'a>(proxy: &'a str, repository: &'a str, tag: Option<&'a str>) -> Subject<'a> {
    Subject::Manifest {
        proxy,
        repository,
        tag,
    }
}

fn package<'a>(name: &'a str, version: &'a str) -> Subject<'a> {
    Subject::Package {
        proxy: "pypi",
        family: Family::Pypi,
        name,
        version,
    }
}

/// The deciding rule's name, `allow`, or `verify:<rule>`.
fn decide(policy: &Policy, subject: &Subject<'_>) -> String {
    match policy.evaluate(subject).verdict {
        Verdict::Allow => "allow".to_owned(),
        Verdict::Deny(finding) => finding.rule.to_owned(),
        Verdict::Verify { rule, .. } => format!("verify:{}", rule.name),
    }
}

fn key_file(dir: &std::path::Path) -> std::path::PathBuf {
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};
    let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let path = dir.join("cosign.pub");
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(&path, pem).unwrap();
    path
}

#[test]
fn first_matching_rule_decides_and_no_match_allows() {
    let p = policy(
        r#"
        [[policy]]
        name = "ok-evil"
        allow = ["library/evil-but-fine"]
        [[policy]]
        name = "no-evil"
        proxy = "hub"
        deny = ["library/evil*"]
        [[policy]]
        name = "no-rc"
        deny = ["*:*-rc*"]
        "#,
    )
    .unwrap();
    assert_eq!(
        decide(&p, &manifest("hub", "library/evil", Some("1"))),
        "no-evil"
    );
    assert_eq!(
        decide(&p, &manifest("hub", "library/evil-but-fine", Some("1"))),
        "allow"
    );
    assert_eq!(
        decide(&p, &manifest("ghcr", "library/evil", Some("1"))),
        "allow",
        "the rule names another proxy"
    );
    assert_eq!(decide(&p, &manifest("hub", "app", Some("2-rc1"))), "no-rc");
    assert_eq!(decide(&p, &manifest("hub", "app", None)), "allow");
    let denied = policy_reason(&p, &manifest("hub", "library/evil", None));
    assert!(denied.contains("library/evil") && denied.contains("\"library/evil*\""));
    let blob = Subject::Blob {
        proxy: "hub",
        repository: "library/evil",
        size: None,
    };
    assert_eq!(
        decide(&p, &blob),
        "no-evil",
        "a denied repository's blobs too"
    );
}

fn policy_reason(p: &Policy, subject: &Subject<'_>) -> String {
    match p.evaluate(subject).verdict {
        Verdict::Deny(finding) => finding.reason,
        other => panic!("not denied: {other:?}"),
    }
}

#[test]
fn tags_restrict_a_rule_to_tag_pulls() {
    let p = policy(
        r#"
        [[policy]]
        name = "no-latest"
        deny = ["*"]
        tags = ["latest", "nightly-*"]
        "#,
    )
    .unwrap();
    assert_eq!(
        decide(&p, &manifest("hub", "a/b", Some("latest"))),
        "no-latest"
    );
    assert_eq!(
        decide(&p, &manifest("hub", "a/b", Some("nightly-3"))),
        "no-latest"
    );
    assert_eq!(decide(&p, &manifest("hub", "a/b", Some("1.0"))), "allow");
    assert_eq!(decide(&p, &manifest("hub", "a/b", None)), "allow");
}

#[test]
fn allow_lists_end_with_a_catch_all_deny() {
    let p = policy(
        r#"
        [[policy]]
        name = "approved"
        proxy = "pypi"
        allow = ["requests", "urllib3>=2"]
        [[policy]]
        name = "everything-else"
        proxy = "pypi"
        deny = ["*"]
        "#,
    )
    .unwrap();
    assert_eq!(decide(&p, &package("Requests", "2.31.0")), "allow");
    assert_eq!(decide(&p, &package("urllib3", "2.0.7")), "allow");
    assert_eq!(decide(&p, &package("urllib3", "1.26.0")), "everything-else");
    assert_eq!(decide(&p, &package("numpy", "1.0")), "everything-else");
}

#[test]
fn package_versions_by_specifier_and_by_glob() {
    let p = policy(
        r#"
        [[policy]]
        name = "bad-requests"
        deny = ["requests==2.31.0", "numpy<1.20", "openssl==1.1.*"]
        "#,
    )
    .unwrap();
    assert_eq!(decide(&p, &package("requests", "2.31.0")), "bad-requests");
    assert_eq!(decide(&p, &package("requests", "2.32.0")), "allow");
    assert_eq!(decide(&p, &package("numpy", "1.19.5")), "bad-requests");
    assert_eq!(decide(&p, &package("numpy", "1.26.0")), "allow");
    let conda = |name, version| Subject::Package {
        proxy: "conda",
        family: Family::Files,
        name,
        version,
    };
    assert_eq!(decide(&p, &conda("openssl", "1.1.1w")), "bad-requests");
    assert_eq!(decide(&p, &conda("openssl", "3.0.0")), "allow");
    assert_eq!(
        decide(&p, &conda("numpy", "1.19.5")),
        "allow",
        "a PEP 440 specifier means nothing to conda"
    );
}

#[test]
fn log_mode_records_and_lets_the_next_rule_decide() {
    let p = policy(
        r#"
        [[policy]]
        name = "trial"
        deny = ["library/*"]
        mode = "log"
        [[policy]]
        name = "real"
        deny = ["library/evil"]
        "#,
    )
    .unwrap();
    let eval = p.evaluate(&manifest("hub", "library/nginx", Some("1")));
    assert!(matches!(eval.verdict, Verdict::Allow));
    assert_eq!(eval.logged.len(), 1);
    assert_eq!(eval.logged[0].rule, "trial");
    let eval = p.evaluate(&manifest("hub", "library/evil", Some("1")));
    assert!(matches!(
        eval.verdict,
        Verdict::Deny(Finding { rule: "real", .. })
    ));
    assert_eq!(eval.logged.len(), 1);
    assert!(
        p.evaluate(&manifest("hub", "other", None))
            .logged
            .is_empty()
    );
}

#[test]
fn blob_sizes_are_limited_before_allow_entries() {
    let p = policy(
        r#"
        [[policy]]
        name = "small"
        proxy = "hub"
        max_blob_size = "1KiB"
        allow = ["*"]
        "#,
    )
    .unwrap();
    let blob = |size| Subject::Blob {
        proxy: "hub",
        repository: "a",
        size,
    };
    assert_eq!(decide(&p, &blob(Some(1024))), "allow");
    assert_eq!(decide(&p, &blob(Some(1025))), "small");
    assert!(policy_reason(&p, &blob(Some(1025))).contains("max_blob_size 1KiB"));
    // An upstream that announces no length does not slip past the limit.
    assert_eq!(decide(&p, &blob(None)), "small");
    assert!(policy_reason(&p, &blob(None)).contains("unknown"));
    assert!(p.limits_blob_size("hub"));
    assert!(!p.limits_blob_size("ghcr"));
}

#[test]
fn require_cosign_asks_for_verification_of_matching_manifests_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let p = policy(&format!(
        "[[policy]]\nname = \"signed\"\nrequire_cosign = {{ repositories = [\"org/*\"], key = {:?} }}\n",
        key.display().to_string()
    ))
    .unwrap();
    assert_eq!(
        decide(&p, &manifest("hub", "org/app", Some("1"))),
        "verify:signed"
    );
    assert_eq!(
        decide(&p, &manifest("hub", "org/app", None)),
        "verify:signed"
    );
    assert_eq!(
        decide(&p, &manifest("hub", "other/app", Some("1"))),
        "allow"
    );
    let blob = Subject::Blob {
        proxy: "hub",
        repository: "org/app",
        size: Some(1),
    };
    assert_eq!(decide(&p, &blob), "allow");
    let Verdict::Verify { index, .. } = p.evaluate(&manifest("hub", "org/a", None)).verdict else {
        panic!()
    };
    assert!(matches!(
        p.evaluate_from(&manifest("hub", "org/a", None), index + 1)
            .verdict,
        Verdict::Allow
    ));
}

#[test]
fn every_mistake_names_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let good_key = key_file(dir.path());
    let not_a_key = dir.path().join("bad.pub");
    std::fs::write(&not_a_key, "hello\n").unwrap();
    let cases = [
        (
            "[[policy]]\nname = \"r\"\nproxy = \"nope\"\ndeny = [\"a\"]\n",
            "proxy \"nope\"",
        ),
        (
            "[[policy]]\nname = \"r\"\nproxy = \"hub\"\ndeny = [\"a b\"]\n",
            "\"a b\"",
        ),
        (
            "[[policy]]\nname = \"r\"\nproxy = \"pypi\"\ndeny = [\"numpy<<1\"]\n",
            "PEP 440",
        ),
        (
            "[[policy]]\nname = \"r\"\nproxy = \"conda\"\ndeny = [\"numpy<1\"]\n",
            "numpy<1",
        ),
        (
            "[[policy]]\nname = \"r\"\ndeny = [\"$$\"]\n",
            "no proxy format",
        ),
        ("[[policy]]\nname = \"r\"\n", "does nothing"),
        (
            "[[policy]]\nname = \"r\"\ntags = [\"x\"]\nmax_blob_size = \"1B\"\n",
            "tags",
        ),
        (
            "[[policy]]\nname = \"r\"\nproxy = \"pypi\"\nmax_blob_size = \"1B\"\n",
            "only for oci",
        ),
        (
            "[[policy]]\nname = \"r\"\ndeny = [\"a\"]\n[[policy]]\nname = \"r\"\ndeny = [\"b\"]\n",
            "used twice",
        ),
        (
            "[[policy]]\nname = \"r\"\nrequire_cosign = { repositories = [\"a\"], key = \"/nonexistent/k.pub\" }\n",
            "/nonexistent/k.pub",
        ),
        (
            &format!(
                "[[policy]]\nname = \"r\"\nrequire_cosign = {{ repositories = [\"a\"], key = {:?} }}\n",
                not_a_key.display().to_string()
            ),
            "not a PEM",
        ),
        (
            &format!(
                "[[policy]]\nname = \"r\"\nrequire_cosign = {{ repositories = [\"a:1\"], key = {:?} }}\n",
                good_key.display().to_string()
            ),
            "every tag",
        ),
    ];
    for (text, says) in cases {
        let err = policy(text).expect_err(text).to_string();
        assert!(
            err.contains("[[policy]] r") || err.contains("\"r\""),
            "{err}"
        );
        assert!(err.contains(says), "{text}: {err}");
    }
    let bad_name = policy("[[policy]]\nname = \"a b\"\ndeny = [\"x\"]\n").unwrap_err();
    assert!(matches!(bad_name, RuleError::Name { .. }));
}

#[test]
fn tables_keep_unknown_keys_out() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct File {
        policy: Vec<RuleTable>,
    }
    let err = toml::from_str::<File>("[[policy]]\nname = \"r\"\ndeny = [\"a\"]\ndenny = [\"b\"]\n")
        .unwrap_err();
    assert!(err.to_string().contains("denny"), "{err}");
}

proptest! {
    /// Hostile entries and requests: resolving and evaluating never panic, and an entry
    /// that parses as a plain repository name denies exactly that repository.
    #[test]
    fn hostile_rules_and_requests_never_panic(
        entry in "[a-z0-9/*?:=<>!~,. _-]{0,40}",
        repository in "[a-z0-9/._-]{0,40}",
        tag in proptest::option::of("[A-Za-z0-9._-]{1,20}"),
        version in "[0-9a-z.+!*-]{0,20}",
    ) {
        let table = RuleTable {
            name: "r".to_owned(),
            proxy: None,
            deny: vec![entry.clone()],
            allow: Vec::new(),
            tags: Vec::new(),
            max_blob_size: None,
            require_cosign: None,
            mode: None,
        };
        if let Ok(p) = Policy::resolve(&[table], family_of) {
            let _ = p.evaluate(&manifest("hub", &repository, tag.as_deref()));
            let _ = p.evaluate(&package(&repository, &version));
            let _ = p.evaluate(&Subject::Package {
                proxy: "conda",
                family: Family::Files,
                name: &repository,
                version: &version,
            });
            let plain = !entry.is_empty()
                && entry.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            if plain {
                prop_assert_eq!(decide(&p, &manifest("hub", &entry, tag.as_deref())), "r");
                let other = format!("{entry}x");
                prop_assert_eq!(decide(&p, &manifest("hub", &other, None)), "allow");
            }
        }
    }
}
