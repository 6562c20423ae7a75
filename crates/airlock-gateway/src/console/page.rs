//! The frame every console page shares: a skip link, the navigation, who is logged in and
//! the logout button, and the one stylesheet (inline: the console loads nothing from
//! anywhere, it must work from an air-gapped laptop). No JavaScript.

use std::time::SystemTime;

use maud::{DOCTYPE, Markup, PreEscaped, html};

/// Who is looking: the session's user and CSRF token, from the admin API's rules.
pub(crate) use crate::admin::session::Viewer;

/// The hidden CSRF field of a form `viewer` posts.
pub(crate) fn csrf_field(viewer: &Viewer) -> Markup {
    html! {
        @if let Some(token) = &viewer.csrf {
            input type="hidden" name="csrf" value=(token);
        }
    }
}

/// An error as a page: what went wrong and the way back.
pub(crate) fn error_page(
    viewer: &Viewer,
    error: crate::admin::ApiError,
    back: &str,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let reason = error.reason();
    let status = error.into_response().status();
    let body = html! {
        p.bad role="alert" { (reason) }
        p { a href=(back) { "Back" } }
    };
    (status, page("Not done", "", viewer, &body)).into_response()
}

/// Navigation entries: path, label.
const NAV: &[(&str, &str)] = &[
    ("/ui/", "Overview"),
    ("/ui/egress", "Egress"),
    ("/ui/audit", "Audit"),
];

const STYLE: &str = r#"
:root { color-scheme: light; --fg: #161616; --muted: #4a4a4a; --line: #c9c9c9; --bg: #ffffff;
  --accent: #0b5cad; --cached: #1f6f43; --upstream: #a34f00; --bad: #a4161a; --ok: #1f6f43; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
a { color: var(--accent); }
a:focus, button:focus, input:focus, select:focus { outline: 3px solid #f2a900; outline-offset: 2px; }
.skip { position: absolute; left: -999px; } .skip:focus { left: 8px; top: 8px; background: #fff; padding: 4px 8px; }
header { display: flex; flex-wrap: wrap; gap: 8px 20px; align-items: center; padding: 10px 16px; border-bottom: 1px solid var(--line); }
header .brand { font-weight: 700; margin-right: auto; }
nav ul { display: flex; flex-wrap: wrap; gap: 4px 16px; list-style: none; margin: 0; padding: 0; }
nav a[aria-current="page"] { font-weight: 700; text-decoration: none; color: var(--fg); }
main { padding: 12px 16px 40px; max-width: 1100px; margin: 0 auto; }
h1 { font-size: 1.5rem; margin: 8px 0 16px; } h2 { font-size: 1.2rem; margin: 28px 0 8px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 0.95rem; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: var(--muted); } .bad { color: var(--bad); font-weight: 600; } .ok { color: var(--ok); font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.card .big { font-size: 1.4rem; font-weight: 700; }
meter { width: 100%; height: 1rem; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 16px; }
figure.chart { margin: 0 0 12px; max-width: 560px; } figure.chart svg { width: 100%; height: auto; }
svg .axis { stroke: var(--muted); stroke-width: 1; } svg .tick { font-size: 9px; fill: var(--muted); }
svg rect.cached { fill: var(--cached); } svg rect.upstream { fill: var(--upstream); }
.key { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 4px; vertical-align: baseline; }
.key.cached { background: var(--cached); } .key.upstream { background: var(--upstream); border-radius: 50%; }
form.inline { display: inline; }
form.filters { display: flex; flex-wrap: wrap; gap: 8px 12px; align-items: end; margin-bottom: 12px; }
form.filters label, form.stack label { display: flex; flex-direction: column; font-size: 0.9rem; }
input, select, button, textarea { font: inherit; padding: 4px 8px; }
button { cursor: pointer; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 4px; }
button.secondary { background: #fff; color: var(--accent); }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 0.88rem; word-break: break-all; }
.flash { border-left: 4px solid var(--accent); padding: 6px 10px; background: #eef4fb; }
"#;

/// A whole page: `title` in the tab and the heading, `current` the navigation entry.
pub(crate) fn page(title: &str, current: &str, viewer: &Viewer, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · airlock" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "airlock " span.muted { (env!("CARGO_PKG_VERSION")) } }
                    nav aria-label="Console" {
                        ul {
                            @for (path, label) in NAV {
                                li {
                                    @if *path == current {
                                        a href=(path) aria-current="page" { (label) }
                                    } @else {
                                        a href=(path) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    @if let Some(user) = &viewer.user {
                        form.inline method="post" action="/ui/logout" {
                            (csrf_field(viewer))
                            span.muted { (user) " " }
                            button.secondary type="submit" { "Log out" }
                        }
                    } @else {
                        a href="/ui/login" { "Log in" }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// `1.5 GiB`, `812 B`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `3 min ago`, `2 h ago`; `-` for never.
pub(crate) fn ago(at: Option<SystemTime>, now: SystemTime) -> String {
    let Some(at) = at else {
        return "-".to_owned();
    };
    let secs = now.duration_since(at).map_or(0, |d| d.as_secs());
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..172_800 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// A ratio as a percentage, `-` when there is nothing to divide.
pub(crate) fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_owned()
    } else {
        format!("{:.0} %", part as f64 * 100.0 / whole as f64)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(percent(1, 3), "33 %");
        assert_eq!(percent(0, 0), "-");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(ago(Some(now - Duration::from_secs(125)), now), "2 min ago");
        assert_eq!(ago(None, now), "-");
        assert_eq!(ago(Some(now + Duration::from_secs(5)), now), "0 s ago");
    }

    #[test]
    fn the_frame_escapes_what_it_shows_and_marks_the_current_page() {
        let viewer = Viewer {
            user: Some("<admin>".into()),
            csrf: Some("tok\"en".into()),
        };
        let html = page("Audit", "/ui/audit", &viewer, &html! { p { "x" } }).into_string();
        assert!(html.contains("&lt;admin&gt;"), "{html}");
        assert!(html.contains("value=\"tok&quot;en\""), "{html}");
        assert!(
            html.contains("<a href=\"/ui/audit\" aria-current=\"page\">"),
            "{html}"
        );
        assert!(!html.contains("<script"), "no JavaScript");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external assets"
        );
    }
}
