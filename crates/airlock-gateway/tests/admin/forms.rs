//! The console's buttons: every form post (pin, unpin, purge, prefetch) refuses without a
//! login (401), without or with a wrong CSRF token, cross-site and as a basic-auth form
//! (403), and with a session and its token does what the admin API does, back on the page.

use super::*;

/// A form post to `path` with `fields`, sent as `how`.
async fn post_form(
    gateway: &Running,
    session: &Session,
    path: &str,
    fields: &str,
    how: As,
) -> Response {
    let mut request = client()
        .post(gateway.url(path))
        .header("content-type", "application/x-www-form-urlencoded");
    let body = match how {
        As::Session => format!("{fields}&csrf={}", session.csrf),
        As::SessionWrongToken => format!("{fields}&csrf=not-the-token"),
        _ => fields.to_owned(),
    };
    request = match how {
        As::Nobody => request,
        As::Session | As::SessionWithoutToken | As::SessionWrongToken => {
            request.header("cookie", &session.cookie)
        }
        As::CrossSiteForm => request
            .header("cookie", &session.cookie)
            .header("sec-fetch-site", "cross-site"),
        As::Basic | As::BasicForm => request.basic_auth("admin", Some(PASSWORD)),
        As::BasicCrossSite => request
            .basic_auth("admin", Some(PASSWORD))
            .header("sec-fetch-site", "cross-site"),
    };
    request.body(body).send().await.unwrap()
}

async fn page(gateway: &Running, session: &Session, path: &str) -> String {
    let response = client()
        .get(gateway.url(path))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.text().await.unwrap()
}

#[tokio::test]
async fn console_buttons_need_a_session_and_its_token_and_do_what_the_api_does() {
    let registry = FakeRegistry::start(AuthMode::Anonymous).await;
    let image = Image::random(&[1000, 2000]);
    registry.push_image("library/alpine", "3.19", &image);
    registry.push_image("library/alpine", "3.20", &image);
    let files = FakeFiles::start().await;
    files.put("base/a.txt", "text/plain", b"a file");
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), &proxies(&registry.url(), &files.url())).await;
    let session = log_in(&gateway).await;
    for tag in ["3.19", "3.20"] {
        let response =
            common::get(&gateway.url(&format!("/v2/hub/library/alpine/manifests/{tag}"))).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    let item = "item=library%2Falpine%3A3.19&q=alpine";
    let buttons = [
        (
            "/ui/proxies/hub/pin",
            item,
            "/ui/proxies/hub?q=alpine&done=pinned",
        ),
        (
            "/ui/proxies/hub/unpin",
            item,
            "/ui/proxies/hub?q=alpine&done=unpinned",
        ),
        (
            "/ui/proxies/hub/purge",
            item,
            "/ui/proxies/hub?q=alpine&done=purged",
        ),
        (
            "/ui/prefetch",
            "lines=hub%2Flibrary%2Falpine%3A3.20%0D%0A%2Frepository%2Ffiles%2Fa.txt",
            "/ui/jobs/",
        ),
    ];
    for (path, fields, after) in buttons {
        for (how, expected) in [
            (As::Nobody, StatusCode::UNAUTHORIZED),
            (As::SessionWithoutToken, StatusCode::FORBIDDEN),
            (As::SessionWrongToken, StatusCode::FORBIDDEN),
            (As::CrossSiteForm, StatusCode::FORBIDDEN),
            (As::BasicForm, StatusCode::FORBIDDEN),
            (As::BasicCrossSite, StatusCode::FORBIDDEN),
        ] {
            let response = post_form(&gateway, &session, path, fields, how).await;
            assert_eq!(response.status(), expected, "{path} as {how:?}");
        }
        // Nothing happened yet: the refusals changed nothing.
        if path.ends_with("/pin") {
            let pins: Value = request(
                &gateway,
                &session,
                &Method::GET,
                "/api/v1/pins",
                None,
                As::Basic,
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            assert_eq!(pins["runtime"], json!([]));
        }
        let response = post_form(&gateway, &session, path, fields, As::Session).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.starts_with(after), "{path} → {location}");
        let html = page(&gateway, &session, &location).await;
        match path {
            "/ui/proxies/hub/pin" => {
                assert!(
                    html.contains("Pinned <code>library/alpine:3.19</code>"),
                    "{html}"
                );
                assert!(html.contains("<strong>pinned</strong>"), "{html}");
                assert!(html.contains(">Unpin<"), "{html}");
            }
            "/ui/proxies/hub/unpin" => {
                assert!(!html.contains("<strong>pinned</strong>"), "{html}");
            }
            "/ui/proxies/hub/purge" => {
                assert!(
                    !html.contains("<code>library/alpine:3.19</code></th>"),
                    "{html}"
                );
                assert!(
                    html.contains("<code>library/alpine:3.20</code></th>"),
                    "{html}"
                );
            }
            _ => {
                // The job page, until both items are done.
                let mut html = html;
                for _ in 0..100 {
                    if !html.contains("http-equiv=\"refresh\"") {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    html = page(&gateway, &session, &location).await;
                }
                assert!(html.contains("<strong>done</strong>"), "{html}");
                assert!(html.contains("/repository/files/a.txt"), "{html}");
            }
        }
    }

    // The audit page shows each button's line.
    let html = page(&gateway, &session, "/ui/audit?kind=admin").await;
    for action in [
        "pin hub/library/alpine:3.19",
        "unpin hub/library/alpine:3.19",
        "purge hub/library/alpine:3.19",
        "prefetch hub/library/alpine:3.20",
    ] {
        assert!(html.contains(action), "{action}: {html}");
    }

    // Hostile and unknown input: an error page that says why, never a change.
    for (path, fields, status) in [
        (
            "/ui/proxies/hub/pin",
            "item=..%2F..%2Fetc%3Apasswd",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/ui/proxies/nope/purge",
            "item=library%2Falpine%3A3.20",
            StatusCode::NOT_FOUND,
        ),
        (
            "/ui/proxies/hub/purge",
            "item=library%2Falpine%3A9.9",
            StatusCode::NOT_FOUND,
        ),
        (
            "/ui/prefetch",
            "lines=file%3A%2F%2F%2Fetc%2Fpasswd",
            StatusCode::BAD_REQUEST,
        ),
        ("/ui/prefetch", "lines=", StatusCode::BAD_REQUEST),
        (
            "/ui/proxies/hub/explode",
            "item=library%2Falpine%3A3.20",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let response = post_form(&gateway, &session, path, fields, As::Session).await;
        assert_eq!(response.status(), status, "{path} {fields}");
        let html = response.text().await.unwrap();
        assert!(html.contains("role=\"alert\""), "{html}");
    }
    let html = page(&gateway, &session, "/ui/proxies/hub?q=alpine").await;
    assert!(
        html.contains("<code>library/alpine:3.20</code></th>"),
        "{html}"
    );
    let missing = client()
        .get(gateway.url("/ui/proxies/%3Cscript%3E"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let text = missing.text().await.unwrap();
    assert!(
        !text.contains("<script>") && text.contains("&lt;script&gt;"),
        "{text}"
    );
    gateway.stop().await;
}
