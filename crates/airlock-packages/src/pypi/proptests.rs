//! Property tests of the simple-API parsers: arbitrary bytes never panic them, generated
//! well-formed pages (HTML as upstreams write it, and JSON) give back every file's name, URL
//! and hashes, and a hostile link never becomes a URL the gateway would fetch.

use proptest::prelude::*;
use reqwest::Url;

use super::{DistFile, ProjectPage, html, json, resolved};

/// `PROPTEST_CASES` (scripts/fuzz.sh) or `default`.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// A file as an upstream lists it.
#[derive(Debug, Clone)]
struct Listed {
    filename: String,
    url: String,
    sha256: String,
}

fn listed() -> impl Strategy<Value = Listed> {
    (
        "[A-Za-z0-9][A-Za-z0-9._+!~&-]{0,24}\\.(whl|tar\\.gz|zip)",
        prop_oneof![
            "https://files\\.example/[a-z0-9]{1,8}/[a-z0-9]{2}/",
            Just("../../packages/".to_owned()),
            Just(String::new()),
        ],
        "(\\?[a-z]{1,4}=[0-9]{1,3}(&[a-z]{1,4}=[0-9]{1,3})?)?",
        "[0-9a-f]{64}",
    )
        .prop_map(|(filename, dir, query, sha256)| Listed {
            url: format!("{dir}{}{query}", filename.replace('&', "-")),
            filename,
            sha256,
        })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An upstream's HTML page: attribute quoting and tag case vary as they do in the wild.
fn upstream_html(files: &[(Listed, u8)]) -> String {
    let mut page = String::from("<!DOCTYPE html><html><body><h1>Links</h1>\n");
    for (file, style) in files {
        let href = escape(&format!("{}#sha256={}", file.url, file.sha256));
        let anchor = match style % 3 {
            0 => format!("<a href=\"{href}\">{}</a><br/>\n", escape(&file.filename)),
            1 => format!(
                "<A HREF='{href}' data-requires-python=\"&gt;=3.8\">\n  {} </A>\n",
                escape(&file.filename)
            ),
            _ => format!(
                "<a data-yanked href={href}>{}</a>\n",
                escape(&file.filename)
            ),
        };
        page.push_str(&anchor);
    }
    page.push_str("</body></html>\n");
    page
}

fn upstream_json(files: &[Listed]) -> Vec<u8> {
    let files: Vec<_> = files
        .iter()
        .map(|f| {
            serde_json::json!({
                "filename": f.filename,
                "url": f.url,
                "hashes": {"sha256": f.sha256},
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "meta": {"api-version": "1.0"},
        "name": "p",
        "files": files,
    }))
    .unwrap()
}

fn same_files(page: &ProjectPage, files: &[Listed]) {
    assert_eq!(page.files.len(), files.len());
    for (parsed, listed) in page.files.iter().zip(files) {
        assert_eq!(parsed.filename, listed.filename);
        assert_eq!(parsed.url, listed.url);
        assert_eq!(parsed.hashes.get("sha256"), Some(&listed.sha256));
    }
}

/// Links a hostile index may carry: other schemes, credentials, internal addresses.
fn hostile_href() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("file:///etc/"),
            Just("javascript:alert(1)//"),
            Just("data:text/plain,"),
            Just("ftp://files.example/"),
            Just("gopher://files.example/"),
            Just("http://user:secret@files.example/"),
            Just("https://:secret@files.example/"),
            Just("http://127.0.0.1/"),
            Just("http://0x7f000001/"),
            Just("//127.0.0.1:8080/"),
            Just("http://[::1]/"),
            Just("http://[::ffff:10.0.0.1]/"),
            Just("http://10.1.2.3/"),
            Just("http://192.168.0.1/"),
            Just("http://169.254.169.254/latest/"),
            Just("http://localhost/"),
            Just("https://metadata.localhost./"),
            Just("http://100.64.0.1/"),
        ],
        "[a-z0-9/._-]{0,12}",
    )
        .prop_map(|(start, rest)| format!("{start}{rest}"))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = html::parse_project(&bytes);
        let _ = html::parse_root(&bytes);
        let _ = json::parse_project(&bytes);
        let _ = json::parse_root(&bytes);
    }

    #[test]
    fn arbitrary_markup_never_panics(text in "[<>a-zA-Z=\"' /!&#;:-]{0,300}") {
        let _ = html::parse_project(text.as_bytes());
        let _ = html::parse_root(text.as_bytes());
        let _ = json::parse_project(text.as_bytes());
    }

    #[test]
    fn upstream_html_pages_give_back_their_files(
        files in proptest::collection::vec((listed(), any::<u8>()), 0..12)
    ) {
        let page = html::parse_project(upstream_html(&files).as_bytes()).unwrap();
        let files: Vec<Listed> = files.into_iter().map(|(f, _)| f).collect();
        same_files(&page, &files);
    }

    #[test]
    fn upstream_json_pages_give_back_their_files(files in proptest::collection::vec(listed(), 0..12)) {
        let page = json::parse_project(&upstream_json(&files)).unwrap();
        same_files(&page, &files);
    }

    #[test]
    fn rendered_pages_parse_back_to_themselves(files in proptest::collection::vec(listed(), 0..12)) {
        let page = ProjectPage {
            versions: None,
            files: files
                .iter()
                .map(|f| DistFile {
                    filename: f.filename.clone(),
                    url: f.url.clone(),
                    hashes: [("sha256".to_owned(), f.sha256.clone())].into(),
                    requires_python: None,
                    yanked: None,
                    metadata: None,
                    size: None,
                    upload_time: None,
                })
                .collect(),
        };
        same_files(&html::parse_project(html::render_project("p", &page).as_bytes()).unwrap(), &files);
        same_files(&json::parse_project(json::render_project("p", &page).as_bytes()).unwrap(), &files);
    }

    #[test]
    fn hostile_links_never_become_a_fetched_url(
        hrefs in proptest::collection::vec(hostile_href(), 1..8),
        json_page in any::<bool>(),
    ) {
        let files: Vec<Listed> = hrefs
            .into_iter()
            .map(|url| Listed { filename: "a-1.0.tar.gz".into(), url, sha256: "ab".repeat(32) })
            .collect();
        let page = if json_page {
            json::parse_project(&upstream_json(&files))
        } else {
            let files: Vec<_> = files.iter().cloned().map(|f| (f, 0)).collect();
            html::parse_project(upstream_html(&files).as_bytes())
        };
        let Ok(page) = page else { return Ok(()) };
        let base = Url::parse("https://pypi.example/simple/p/").unwrap();
        for file in resolved(page, &base, "p", "p").files {
            // What survives the page's own filter is fetched as a listed URL: the target
            // rule must refuse it.
            prop_assert!(
                airlock_upstream::target::listed(&base, &file.url).is_err(),
                "{} would be fetched",
                file.url
            );
        }
    }
}
