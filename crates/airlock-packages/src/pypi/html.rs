//! PEP 503 HTML: a narrow parser for the anchors of a simple index page, and the renderer.
//!
//! The format is a list of `<a href=…>` elements with a few `data-*` attributes, so the
//! parser reads tags, attributes (quoted or not), comments and character references, and
//! nothing else; anything it cannot read (an unterminated tag, comment or quote, text that is
//! not UTF-8, an anchor without `href`) is an error, never a guess.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{DistFile, ProjectPage};

/// One `<a>` element: its attributes (names lowercased, values decoded) and its text.
#[derive(Debug)]
struct Anchor {
    attributes: Vec<(String, String)>,
    text: String,
}

impl Anchor {
    fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) fn parse_project(bytes: &[u8]) -> Result<ProjectPage, String> {
    let mut files = Vec::new();
    for anchor in anchors(bytes)? {
        let href = anchor
            .get("href")
            .ok_or_else(|| format!("an anchor without href ({:?})", anchor.text))?;
        let (url, fragment) = href.split_once('#').unwrap_or((href, ""));
        let hashes: BTreeMap<String, String> = fragment
            .split_once('=')
            .map(|(algorithm, value)| (algorithm.to_owned(), value.to_owned()))
            .into_iter()
            .collect();
        let metadata = anchor
            .get("data-core-metadata")
            .or_else(|| anchor.get("data-dist-info-metadata"))
            .map(|value| {
                value
                    .split_once('=')
                    .map(|(a, v)| (a.to_owned(), v.to_owned()))
                    .into_iter()
                    .collect()
            });
        let filename = anchor.text.trim().to_owned();
        if filename.is_empty() {
            return Err(format!("the anchor for {url:?} has no filename"));
        }
        files.push(DistFile {
            filename,
            url: url.to_owned(),
            hashes,
            requires_python: anchor.get("data-requires-python").map(str::to_owned),
            yanked: anchor.get("data-yanked").map(str::to_owned),
            metadata,
            size: None,
            upload_time: None,
        });
    }
    Ok(ProjectPage {
        versions: None,
        files,
    })
}

pub(super) fn parse_root(bytes: &[u8]) -> Result<Vec<String>, String> {
    Ok(anchors(bytes)?
        .into_iter()
        .map(|a| a.text.trim().to_owned())
        .collect())
}

fn anchors(bytes: &[u8]) -> Result<Vec<Anchor>, String> {
    let page = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut found = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find('<') {
        rest = &rest[start..];
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").ok_or("an unterminated comment")?;
            rest = &after[end + 3..];
            continue;
        }
        let Tag {
            name,
            attributes,
            rest: after,
        } = tag(rest)?;
        rest = after;
        if !name.eq_ignore_ascii_case("a") {
            continue;
        }
        let end = find_ignore_case(rest, "</a").ok_or("an anchor without </a>")?;
        let text = strip_tags(&rest[..end]);
        found.push(Anchor {
            attributes,
            text: decode(&text),
        });
        rest = &rest[end..];
    }
    Ok(found)
}

/// A start (or end) tag and the input after it.
struct Tag<'a> {
    name: &'a str,
    attributes: Vec<(String, String)>,
    rest: &'a str,
}

/// Reads one tag at the start of `input` (which begins with `<`): its name, attributes, and
/// the input after its `>`.
fn tag(input: &str) -> Result<Tag<'_>, String> {
    let body = &input[1..];
    let name_end = body
        .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
        .ok_or("an unterminated tag")?;
    let name = &body[..name_end];
    let mut rest = &body[name_end..];
    let mut attributes = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '/');
        if let Some(after) = rest.strip_prefix('>') {
            return Ok(Tag {
                name,
                attributes,
                rest: after,
            });
        }
        if rest.is_empty() {
            return Err(format!("an unterminated <{name}> tag"));
        }
        let end = rest
            .find(|c: char| c.is_ascii_whitespace() || "=>/".contains(c))
            .unwrap_or(rest.len());
        let attribute = rest[..end].to_ascii_lowercase();
        rest = rest[end..].trim_start();
        let value = if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (value, remaining) = if let Some(quote @ ('"' | '\'')) = after.chars().next() {
                let close = after[1..]
                    .find(quote)
                    .ok_or_else(|| format!("an unterminated {attribute} value"))?;
                (&after[1..=close], &after[close + 2..])
            } else {
                let end = after
                    .find(|c: char| c.is_ascii_whitespace() || c == '>')
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            rest = remaining;
            decode(value)
        } else {
            String::new()
        };
        if attribute.is_empty() {
            return Err(format!("a malformed attribute in <{name}>"));
        }
        attributes.push((attribute, value));
    }
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn strip_tags(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in text.chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

/// Decodes the character references an index uses; unknown ones stay as written.
fn decode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        // References are short: a `;` further on belongs to the text.
        let Some((end, _)) = rest.char_indices().take(12).find(|&(_, c)| c == ';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        if let Some(c) = decoded {
            out.push(c);
            rest = &rest[end + 1..];
        } else {
            out.push('&');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn header(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\" content=\"1.0\">\n\
         <title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n"
    )
}

pub(super) fn render_project(project: &str, page: &ProjectPage) -> String {
    let mut out = header(&format!("Links for {}", escape(project)));
    for file in &page.files {
        let mut href = file.url.clone();
        if let Some(sha256) = file.hashes.get("sha256") {
            let _ = write!(href, "#sha256={sha256}");
        }
        let _ = write!(out, "<a href=\"{}\"", escape(&href));
        if let Some(requires) = &file.requires_python {
            let _ = write!(out, " data-requires-python=\"{}\"", escape(requires));
        }
        if let Some(reason) = &file.yanked {
            let _ = write!(out, " data-yanked=\"{}\"", escape(reason));
        }
        if let Some(sha256) = file.metadata.as_ref().and_then(|m| m.get("sha256")) {
            // PEP 714's name and PEP 658's, for pip before 23.2.
            let _ = write!(
                out,
                " data-core-metadata=\"sha256={0}\" data-dist-info-metadata=\"sha256={0}\"",
                escape(sha256)
            );
        }
        let _ = writeln!(out, ">{}</a><br>", escape(&file.filename));
    }
    out.push_str("</body>\n</html>\n");
    out
}

pub(super) fn render_root(projects: &[(String, String)]) -> String {
    let mut out = header("Simple index");
    for (name, normal) in projects {
        let _ = writeln!(out, "<a href=\"{normal}/\">{}</a><br>", escape(name));
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pep_503_anchors() {
        let page = br#"<!DOCTYPE html><html><body><!-- <a href="nope">x</a> -->
<a href="../../packages/a-1.0.tar.gz#sha256=abc" data-requires-python="&gt;=3.8">a-1.0.tar.gz</a><br/>
<A HREF='https://f.example/a-1.1-py3-none-any.whl#sha256=def' data-yanked data-dist-info-metadata="sha256=123">
  a-1.1-py3-none-any.whl </A>
<a href=plain.whl data-yanked="broken &amp; bad" data-core-metadata=true>plain.whl</a>
</body></html>"#;
        let parsed = parse_project(page).unwrap();
        assert_eq!(parsed.files.len(), 3);
        let first = &parsed.files[0];
        assert_eq!(first.url, "../../packages/a-1.0.tar.gz");
        assert_eq!(first.hashes["sha256"], "abc");
        assert_eq!(first.requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(first.yanked, None);
        let second = &parsed.files[1];
        assert_eq!(second.filename, "a-1.1-py3-none-any.whl");
        assert_eq!(second.yanked.as_deref(), Some(""));
        assert_eq!(second.metadata.as_ref().unwrap()["sha256"], "123");
        let third = &parsed.files[2];
        assert_eq!(third.yanked.as_deref(), Some("broken & bad"));
        assert_eq!(third.metadata, Some(BTreeMap::new()));
        assert!(third.hashes.is_empty());
    }

    #[test]
    fn malformed_pages_are_errors() {
        for bad in [
            &b"<a href=\"x"[..],
            b"<a href='x'>x",
            b"<!-- open",
            b"<a>no href</a>",
            b"\xff\xfe<a href=x>x</a>",
            b"<a href=x",
        ] {
            assert!(
                parse_project(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn renders_escaped_attributes() {
        let page = ProjectPage {
            versions: None,
            files: vec![DistFile {
                filename: "a-1.0.tar.gz".into(),
                url: "/r/a".into(),
                hashes: BTreeMap::from([("sha256".into(), "ab".into())]),
                requires_python: Some(">=3.8".into()),
                yanked: Some("\"why\"".into()),
                metadata: Some(BTreeMap::from([("sha256".into(), "cd".into())])),
                size: None,
                upload_time: None,
            }],
        };
        let html = render_project("a", &page);
        assert!(html.contains(
            "<a href=\"/r/a#sha256=ab\" data-requires-python=\"&gt;=3.8\" data-yanked=\"&quot;why&quot;\" data-core-metadata=\"sha256=cd\" data-dist-info-metadata=\"sha256=cd\">a-1.0.tar.gz</a>"
        ), "{html}");
        assert_eq!(
            parse_project(html.as_bytes()).unwrap().files[0]
                .yanked
                .as_deref(),
            Some("\"why\"")
        );
    }
}
