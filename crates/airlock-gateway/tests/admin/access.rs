//! Who may do what: the 401/403 matrix of every mutation, the login form, sessions,
//! `[ui] anonymous_read`, and the audit lines the changes leave.

use super::*;

#[tokio::test]
async fn every_mutation_needs_a_login_and_its_csrf_token() {
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[1000, 2000]);
    registry.push_image("library/alpine", "3.19", &image);
    registry.push_image("library/alpine", "3.20", &image);
    let files = FakeFiles::start().await;
    files.put("base/a.txt", "text/plain", b"a file");
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), &proxies(&registry.url(), &files.url())).await;
    let session = log_in(&gateway).await;
    // Cache two tags to purge.
    for tag in ["3.19", "3.20"] {
        let response =
            common::get(&gateway.url(&format!("/v2/hub/library/alpine/manifests/{tag}"))).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    let pin = json!({ "reference": "hub/library/alpine:3.19" });
    let prefetch =
        json!({ "references": ["hub/library/alpine:3.19"], "urls": ["/repository/files/a.txt"] });
    // (method, path, body, status with a session, status with basic)
    let mutations: Vec<(Method, String, Option<Value>, StatusCode, StatusCode)> = vec![
        (
            Method::POST,
            "/api/v1/pins".into(),
            Some(pin.clone()),
            StatusCode::CREATED,
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            "/api/v1/pins/hub/library/alpine:3.19".into(),
            None,
            StatusCode::NO_CONTENT,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            "/api/v1/proxies/hub/items/library/alpine:3.19".into(),
            None,
            StatusCode::OK,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/api/v1/prefetch".into(),
            Some(prefetch.clone()),
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
        ),
    ];
    for (method, path, body, with_session, with_basic) in &mutations {
        for (how, expected) in [
            (As::Nobody, StatusCode::UNAUTHORIZED),
            (As::SessionWithoutToken, StatusCode::FORBIDDEN),
            (As::SessionWrongToken, StatusCode::FORBIDDEN),
            (As::CrossSiteForm, StatusCode::FORBIDDEN),
            (As::BasicForm, StatusCode::FORBIDDEN),
            (As::BasicCrossSite, StatusCode::FORBIDDEN),
            (As::Session, *with_session),
            (As::Basic, *with_basic),
        ] {
            let response = request(&gateway, &session, method, path, body.as_ref(), how)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            assert_eq!(status, expected, "{method} {path} as {how:?}: {text}");
            if !status.is_success() {
                let error: Value = serde_json::from_str(&text).unwrap();
                assert!(
                    error["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{text}"
                );
            }
        }
    }
    // The bundle import is a mutation too.
    for (how, expected) in [
        (As::Nobody, StatusCode::UNAUTHORIZED),
        (As::SessionWithoutToken, StatusCode::FORBIDDEN),
        (As::SessionWrongToken, StatusCode::FORBIDDEN),
        (As::CrossSiteForm, StatusCode::FORBIDDEN),
        (As::BasicForm, StatusCode::FORBIDDEN),
        (As::BasicCrossSite, StatusCode::FORBIDDEN),
    ] {
        let response = request(
            &gateway,
            &session,
            &Method::POST,
            "/api/v1/bundles/import?allow_unsigned=true",
            None,
            how,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), expected, "import as {how:?}");
    }
    // The other tag is still listed; the purged one is not.
    let items: Value = request(
        &gateway,
        &session,
        &Method::GET,
        "/api/v1/proxies/hub/items",
        None,
        As::Session,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let names: Vec<&str> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"library/alpine:3.20"), "{items}");

    // Each change is in the audit trail with the user and client; a login too.
    let trail: Value = client()
        .get(gateway.url("/api/v1/audit?kind=admin&client=127.0.0.1&since=1h"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = trail["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["item"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("pin", "hub/library/alpine:3.19"),
            ("pin", "hub/library/alpine:3.19"),
            ("unpin", "hub/library/alpine:3.19"),
            ("purge", "hub/library/alpine:3.19"),
            (
                "prefetch",
                "hub/library/alpine:3.19 /repository/files/a.txt"
            ),
            (
                "prefetch",
                "hub/library/alpine:3.19 /repository/files/a.txt"
            ),
        ],
        "{trail}"
    );
    assert!(
        trail["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["user"] == "admin")
    );
    let logins: Value = client()
        .get(gateway.url("/api/v1/audit?kind=login"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(logins["records"][0]["result"], "ok", "{logins}");
    let bad = client()
        .get(gateway.url("/api/v1/audit?since=yesterday"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // The console's pages carry the session's token in their logout form.
    let page = request(
        &gateway,
        &session,
        &Method::GET,
        "/ui/",
        None,
        As::SessionWithoutToken,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("action=\"/ui/logout\""), "{html}");
    assert!(
        html.contains(&format!("name=\"csrf\" value=\"{}\"", session.csrf)),
        "{html}"
    );

    // Logout is a form post with the session's token; without it, 403.
    for (how, expected) in [
        (As::Nobody, StatusCode::UNAUTHORIZED),
        (As::SessionWithoutToken, StatusCode::FORBIDDEN),
        (As::SessionWrongToken, StatusCode::FORBIDDEN),
        (As::BasicForm, StatusCode::FORBIDDEN),
    ] {
        let response = request(&gateway, &session, &Method::POST, "/ui/logout", None, how)
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "logout as {how:?}");
    }
    let response = client()
        .post(gateway.url("/ui/logout"))
        .header("cookie", &session.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", session.csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/ui/login");
    let (_, cleared) = set_cookie(&response, "airlock_session").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The session is gone: its cookie no longer logs in.
    let response = request(
        &gateway,
        &session,
        &Method::GET,
        "/api/v1/session",
        None,
        As::Session,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = request(
        &gateway,
        &session,
        &Method::POST,
        "/api/v1/pins",
        Some(&pin),
        As::Session,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    gateway.stop().await;
}

#[tokio::test]
async fn the_login_form_is_protected_rate_limited_and_sets_strict_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), "").await;
    let page = client().get(gateway.url("/ui/login")).send().await.unwrap();
    let (_, login_cookie) = set_cookie(&page, "airlock_login").unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui/login"] {
        assert!(login_cookie.contains(attribute), "{login_cookie}");
    }
    let html = page.text().await.unwrap();
    for needle in [
        "<label for=\"user\">",
        "<label for=\"password\">",
        "type=\"password\"",
        "method=\"post\"",
    ] {
        assert!(html.contains(needle), "{needle}: {html}");
    }
    assert!(
        !html.contains("<script") && !html.contains("http"),
        "no script, no external asset: {html}"
    );

    // Without the login cookie, or with a token that is not its value: 403.
    let (cookie, token) = login_form(&gateway).await;
    let response = post_login(&gateway, "", &token, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = post_login(&gateway, &cookie, "forged", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // The right password: a session cookie with every attribute.
    let response = post_login(&gateway, &cookie, &token, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (session, attributes) = set_cookie(&response, "airlock_session").unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    let id = session.split_once('=').unwrap().1;
    assert_eq!(id.len(), 43, "256 bits, base64url: {id}");

    // Wrong passwords: 401 until the limit, then 429 for the form and for basic auth alike,
    // the right password included.
    for _ in 0..5 {
        let response = post_login(&gateway, &cookie, &token, "wrong").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = post_login(&gateway, &cookie, &token, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let response = client()
        .get(gateway.url("/api/v1/proxies"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // A session made before still works.
    let response = client()
        .get(gateway.url("/api/v1/proxies"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Every login attempt is in the audit trail: one accepted, the refused ones with why.
    let trail: Value = client()
        .get(gateway.url("/api/v1/audit?kind=login&user=admin"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let results: Vec<&str> = trail["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        [
            "ok", "refused", "refused", "refused", "refused", "refused", "refused", "refused"
        ],
        "{trail}"
    );
    assert!(
        trail["records"][7]["reason"]
            .as_str()
            .unwrap()
            .contains("too many failed logins"),
        "{trail}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn anonymous_read_opens_reads_never_changes() {
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let files = FakeFiles::start().await;
    for (anonymous, read) in [(false, StatusCode::UNAUTHORIZED), (true, StatusCode::OK)] {
        let dir = tempfile::tempdir().unwrap();
        let tables = format!(
            "[ui]\nanonymous_read = {anonymous}\n{}",
            proxies(&registry.url(), &files.url())
        );
        let gateway = start(dir.path(), &tables).await;
        for path in [
            "/api/v1/proxies",
            "/api/v1/proxies/hub/items",
            "/api/v1/pins",
            "/api/v1/session",
        ] {
            let response = client().get(gateway.url(path)).send().await.unwrap();
            assert_eq!(
                response.status(),
                read,
                "{path} with anonymous_read = {anonymous}"
            );
        }
        // The console's pages likewise; without a login they send to the form.
        let page = client().get(gateway.url("/ui/")).send().await.unwrap();
        if anonymous {
            assert_eq!(page.status(), StatusCode::OK);
            assert!(page.text().await.unwrap().contains("href=\"/ui/login\""));
        } else {
            assert_eq!(page.status(), StatusCode::SEE_OTHER);
            assert_eq!(page.headers()["location"], "/ui/login");
        }
        // The audit trail names clients and users: never anonymous.
        let response = client()
            .get(gateway.url("/api/v1/audit"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let page = client().get(gateway.url("/ui/audit")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::SEE_OTHER);
        assert_eq!(page.headers()["location"], "/ui/login");
        let response = client()
            .post(gateway.url("/api/v1/pins"))
            .json(&json!({ "reference": "hub/library/alpine:3.19" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        gateway.stop().await;
    }
}
