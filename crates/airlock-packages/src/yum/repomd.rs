//! `repodata/repomd.xml`: the list of metadata files of a repository snapshot, each with
//! the checksum of its (compressed) bytes.

use quick_xml::events::{BytesStart, Event};

/// One `<data>` entry of `repomd.xml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// `primary`, `filelists`, `other`, `modules`, `updateinfo`, …
    pub kind: String,
    /// The location, relative to the repository root (`repodata/<sha256>-primary.xml.gz`).
    pub href: String,
    /// `xml:base` of the location, when the file lives elsewhere.
    pub base: Option<String>,
    /// `<checksum type="…">` and its lowercase hex value.
    pub checksum: Option<(String, String)>,
}

/// Parses `repomd.xml`; a document without a `primary` entry is not a repository.
pub(super) fn parse(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut entries = Vec::new();
    let mut current: Option<Entry> = None;
    let mut in_checksum: Option<String> = None;
    let mut saw_root = false;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("repomd.xml is not XML: {e}"))?;
        match event {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"repomd" => {
                saw_root = true;
            }
            Event::Start(e) if e.local_name().as_ref() == b"data" => {
                current = Some(Entry {
                    kind: attribute(&e, b"type")?.unwrap_or_default(),
                    href: String::new(),
                    base: None,
                    checksum: None,
                });
            }
            Event::Start(e) if e.local_name().as_ref() == b"checksum" && current.is_some() => {
                in_checksum = Some(attribute(&e, b"type")?.unwrap_or_default());
            }
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"location" => {
                if let Some(entry) = current.as_mut() {
                    entry.href = attribute(&e, b"href")?.unwrap_or_default();
                    entry.base = attribute(&e, b"xml:base")?;
                }
            }
            Event::Text(text) => {
                if let (Some(kind), Some(entry)) = (in_checksum.take(), current.as_mut()) {
                    let value = text
                        .unescape()
                        .map_err(|e| format!("repomd.xml: {e}"))?
                        .trim()
                        .to_ascii_lowercase();
                    entry.checksum = Some((kind.to_ascii_lowercase(), value));
                }
            }
            Event::End(e) if e.local_name().as_ref() == b"checksum" => in_checksum = None,
            Event::End(e) if e.local_name().as_ref() == b"data" => {
                let entry = current
                    .take()
                    .ok_or("repomd.xml: unbalanced <data> elements")?;
                if entry.href.is_empty() {
                    return Err(format!(
                        "repomd.xml: <data type={:?}> has no location",
                        entry.kind
                    ));
                }
                entries.push(entry);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if current.is_some() {
        return Err("repomd.xml ends inside a <data> element".to_owned());
    }
    if !saw_root {
        return Err("repomd.xml has no <repomd> element".to_owned());
    }
    if !entries.iter().any(|e| e.kind == "primary") {
        return Err("repomd.xml lists no primary metadata".to_owned());
    }
    Ok(entries)
}

/// The unescaped value of attribute `name` (qualified, e.g. `xml:base`).
pub(super) fn attribute(element: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>, String> {
    for attribute in element.attributes() {
        let attribute = attribute.map_err(|e| format!("bad XML attribute: {e}"))?;
        if attribute.key.as_ref() == name {
            let value = attribute
                .unescape_value()
                .map_err(|e| format!("bad XML attribute: {e}"))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPOMD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1</revision>
  <data type="primary">
    <checksum type="sha256">1FCD</checksum>
    <open-checksum type="sha256">5009</open-checksum>
    <location href="repodata/1fcd-primary.xml.gz"/>
  </data>
  <data type="modules">
    <checksum type="sha1">abcd</checksum>
    <location xml:base="http://elsewhere/" href="repodata/modules.yaml.gz"/>
  </data>
</repomd>"#;

    #[test]
    fn entries() {
        let entries = parse(REPOMD.as_bytes()).unwrap();
        assert_eq!(
            entries,
            vec![
                Entry {
                    kind: "primary".into(),
                    href: "repodata/1fcd-primary.xml.gz".into(),
                    base: None,
                    checksum: Some(("sha256".into(), "1fcd".into())),
                },
                Entry {
                    kind: "modules".into(),
                    href: "repodata/modules.yaml.gz".into(),
                    base: Some("http://elsewhere/".into()),
                    checksum: Some(("sha1".into(), "abcd".into())),
                },
            ]
        );
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "not xml <",
            "<repomd></repomd>",
            "<repomd><data type=\"primary\"><checksum type=\"sha256\">ab</checksum></data></repomd>",
            "<repomd><data type=\"primary\"><location href=\"x\"/></data",
            "<html><body>Error</body></html>",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
