//! The site's outbound proxy from the inventory (`https_proxy`, `http_proxy`, `no_proxy`,
//! `airlock_upstream_proxy_ca_file`): rendered as `[upstream_proxy]` without its password,
//! shown by `inventory check` without its password, refused with the line when bad.

mod common;

use airlock_site::check::{check, summary};
use airlock_site::render::render;

const PROXY: &str = "    https_proxy: \"http://airlock:s3cr%40t-pw@proxy.example.edu:3128\"\n    no_proxy: \"10.0.0.0/8, .example.edu,registry.internal\"\n    airlock_upstream_proxy_ca_file: /etc/pki/site-proxy-ca.pem\n";

#[test]
fn the_proxy_is_rendered_with_its_password_left_to_a_file() {
    let report = check(&common::parse(&common::site(PROXY, "")), None);
    assert_eq!(report.errors(), 0, "{:#?}", report.diagnostics);
    let proxy = report
        .site
        .upstream_proxy
        .clone()
        .expect("the proxy is read");
    assert_eq!(proxy.url.as_str(), "http://proxy.example.edu:3128/");
    assert_eq!(proxy.username.as_deref(), Some("airlock"));
    assert_eq!(proxy.password.as_ref().unwrap().expose(), "s3cr@t-pw");
    assert_eq!(
        proxy.no_proxy,
        ["10.0.0.0/8", ".example.edu", "registry.internal"]
    );
    let rendered = render(&report.site).unwrap();
    let gateway = rendered.get("staging/airlock.toml").unwrap();
    let table = &gateway[gateway.find("[upstream_proxy]").expect("rendered")..];
    assert_eq!(
        table,
        "[upstream_proxy]\nurl = \"http://proxy.example.edu:3128/\"\nusername = \"airlock\"\n\
         password_file = \"/etc/airlock/upstream-proxy.password\"\n\
         ca_file = \"/etc/pki/site-proxy-ca.pem\"\n\
         no_proxy = [\"10.0.0.0/8\", \".example.edu\", \"registry.internal\"]\n"
    );
    let config = airlock_config::Config::from_toml_str(gateway, "rendered").unwrap();
    assert!(config.upstream_proxy.is_some(), "the gateway accepts it");
    for (path, content) in &rendered.files {
        assert!(
            !content.contains("s3cr") && !content.contains("%40t"),
            "{} holds the password",
            path.display()
        );
    }
    let text = summary(&report);
    assert!(
        text.contains("outbound     http://proxy.example.edu:3128/ as airlock, direct: 10.0.0.0/8, .example.edu, registry.internal"),
        "{text}"
    );
    assert!(!text.contains("s3cr"), "{text}");
}

#[test]
fn no_proxy_settings_render_nothing() {
    let report = check(&common::parse(&common::site("", "")), None);
    assert!(report.site.upstream_proxy.is_none());
    let rendered = render(&report.site).unwrap();
    assert!(
        !rendered
            .get("staging/airlock.toml")
            .unwrap()
            .contains("[upstream_proxy]")
    );
}

#[test]
fn http_proxy_alone_is_used_and_a_different_one_is_a_warning() {
    let report = check(
        &common::parse(&common::site(
            "    http_proxy: http://plain.example.edu:8080\n",
            "",
        )),
        None,
    );
    assert_eq!(
        report.site.upstream_proxy.unwrap().url.as_str(),
        "http://plain.example.edu:8080/"
    );
    let report = check(
        &common::parse(&common::site(
            "    https_proxy: \"\"\n    http_proxy: http://plain.example.edu:8080\n",
            "",
        )),
        None,
    );
    assert_eq!(
        report.errors() + report.warnings(),
        0,
        "{:#?}",
        report.diagnostics
    );
    assert_eq!(
        report.site.upstream_proxy.unwrap().url.as_str(),
        "http://plain.example.edu:8080/",
        "an empty https_proxy counts as unset"
    );
    let report = check(
        &common::parse(&common::site(
            "    https_proxy: http://a.example.edu:3128\n    http_proxy: http://b.example.edu:3128\n",
            "",
        )),
        None,
    );
    assert_eq!(report.errors(), 0);
    assert_eq!(
        report.site.upstream_proxy.unwrap().url.host_str(),
        Some("a.example.edu")
    );
    assert!(
        report
            .diagnostics
            .iter()
            .any(|d| d.message.contains("`http_proxy` and `https_proxy` differ")),
        "{:#?}",
        report.diagnostics
    );
}

#[test]
fn bad_settings_are_errors_on_their_line_without_the_password() {
    let text = common::site(
        "    https_proxy: \"http://u:hunter2@proxy.example.edu:3128\"\n    no_proxy: \"10.0.0.1/8\"\n",
        "",
    );
    let report = check(&common::parse(&text), None);
    let errors: Vec<_> = report.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let line = text.lines().position(|l| l.contains("no_proxy")).unwrap() + 1;
    assert_eq!(errors[0].line, line);
    assert!(
        errors[0].message.contains("10.0.0.0/8"),
        "{}",
        errors[0].message
    );
    let shown = format!("{:?}", report.diagnostics);
    assert!(!shown.contains("hunter2"), "{shown}");

    let text = common::site("    https_proxy: \"socks5://u:hunter2@proxy:1080\"\n", "");
    let report = check(&common::parse(&text), None);
    let shown = format!("{:?}", report.diagnostics);
    assert_eq!(report.errors(), 1, "{shown}");
    assert!(shown.contains("http:// or https://"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}
