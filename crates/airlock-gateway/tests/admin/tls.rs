//! The README's session walk-through with a real cookie jar (curl's) over the gateway's
//! self-signed TLS: curl keeps the `Secure`, `SameSite=Strict` cookies and sends each only
//! where its path says, as a browser would.

use super::*;

/// Runs curl with `args` against the gateway's CA; returns the status and the body.
async fn curl(ca: &Path, jar: &Path, args: &[&str]) -> (u16, String) {
    let output = tokio::process::Command::new(airlock_testkit::require_tool("curl", "curl"))
        .args(["-s", "--noproxy", "*", "--max-time", "30", "--cacert"])
        .arg(ca)
        .arg("-b")
        .arg(jar)
        .arg("-c")
        .arg(jar)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "curl {args:?}: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

#[tokio::test]
async fn a_session_over_tls_with_curls_cookie_jar() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let files = FakeFiles::start().await;
    let text = config_text(dir.path(), &proxies(&registry.url(), &files.url()))
        .replace("mode = \"off\"", "mode = \"self-signed\"")
        .replace("[server]\n", "[server]\nhostname = \"localhost\"\n");
    let gateway = Gateway::bind(Config::from_toml_str(&text, "test").unwrap())
        .await
        .unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, gateway.ca_pem().unwrap()).unwrap();
    let base = format!("https://localhost:{}", gateway.local_addr().port());
    tokio::spawn(gateway.serve(std::future::pending()));
    let jar = dir.path().join("jar");
    let url = |path: &str| format!("{base}{path}");

    let (status, form) = curl(&ca, &jar, &[&url("/ui/login")]).await;
    assert_eq!(status, 200);
    let token = form
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let login = format!("user=admin&password={PASSWORD}&csrf={token}");
    let (status, _) = curl(&ca, &jar, &["-d", &login, &url("/ui/login")]).await;
    assert_eq!(status, 303);
    let jar_text = std::fs::read_to_string(&jar).unwrap();
    assert!(jar_text.contains("airlock_session"), "{jar_text}");
    // curl's jar marks the cookie HttpOnly and Secure ("#HttpOnly_" prefix, "TRUE" secure column).
    let line = jar_text
        .lines()
        .find(|l| l.contains("airlock_session"))
        .unwrap();
    assert!(line.starts_with("#HttpOnly_"), "{line}");
    assert_eq!(line.split('\t').nth(3), Some("TRUE"), "secure: {line}");

    let (status, session) = curl(&ca, &jar, &[&url("/api/v1/session")]).await;
    assert_eq!(status, 200, "{session}");
    let csrf = serde_json::from_str::<Value>(&session).unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_owned();
    let pin = r#"{"reference": "hub/library/alpine:3.20"}"#;
    let json = "Content-Type: application/json";
    let (status, _) = curl(&ca, &jar, &["-H", json, "-d", pin, &url("/api/v1/pins")]).await;
    assert_eq!(status, 403, "no CSRF token");
    let header = format!("X-CSRF-Token: {csrf}");
    let (status, body) = curl(
        &ca,
        &jar,
        &["-H", &header, "-H", json, "-d", pin, &url("/api/v1/pins")],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = curl(
        &ca,
        &jar,
        &["-d", &format!("csrf={csrf}"), &url("/ui/logout")],
    )
    .await;
    assert_eq!(status, 303);
    let (status, _) = curl(&ca, &jar, &[&url("/api/v1/session")]).await;
    assert_eq!(status, 401, "logged out");
}
