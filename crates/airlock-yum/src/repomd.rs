//! `repodata/repomd.xml`: the list of metadata files of a repository snapshot, each with
//! the checksum of its (compressed) bytes.

use quick_xml::events::Event;

use crate::{Checksum, RepodataError, attribute};

/// One `<data>` entry of `repomd.xml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `primary`, `filelists`, `other`, `modules`, `updateinfo`, …
    pub kind: String,
    /// The location, relative to the repository root (`repodata/<sha256>-primary.xml.gz`).
    pub href: String,
    /// `xml:base` of the location, when the file lives elsewhere.
    pub base: Option<String>,
    /// `<checksum type="…">` of the file as stored.
    pub checksum: Option<Checksum>,
}

/// A parsed `repomd.xml`: it has a `<repomd>` root and a `primary` entry, and every entry
/// has a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repomd {
    /// In document order.
    pub entries: Vec<Entry>,
}

impl Repomd {
    /// Parses `repomd.xml`; a document without a `primary` entry is not a repository.
    ///
    /// # Errors
    /// [`RepodataError::Malformed`] naming what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, RepodataError> {
        let malformed = |detail: String| RepodataError::Malformed(format!("repomd.xml {detail}"));
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
                .map_err(|e| malformed(format!("is not XML: {e}")))?;
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
                        let value = text.unescape().map_err(|e| malformed(format!(": {e}")))?;
                        entry.checksum = Some(Checksum::new(&kind, &value));
                    }
                }
                Event::End(e) if e.local_name().as_ref() == b"checksum" => in_checksum = None,
                Event::End(e) if e.local_name().as_ref() == b"data" => {
                    let entry = current
                        .take()
                        .ok_or_else(|| malformed("has unbalanced <data> elements".to_owned()))?;
                    if entry.href.is_empty() {
                        return Err(malformed(format!(
                            "<data type={:?}> has no location",
                            entry.kind
                        )));
                    }
                    entries.push(entry);
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        if current.is_some() {
            return Err(malformed("ends inside a <data> element".to_owned()));
        }
        if !saw_root {
            return Err(RepodataError::Malformed(
                "not a repomd.xml (no <repomd> element)".to_owned(),
            ));
        }
        if !entries.iter().any(|e| e.kind == "primary") {
            return Err(malformed("lists no primary metadata".to_owned()));
        }
        Ok(Self { entries })
    }

    /// The `primary` entry (there is one: [`Repomd::parse`] refuses documents without).
    #[must_use]
    pub fn primary(&self) -> &Entry {
        self.entries
            .iter()
            .find(|e| e.kind == "primary")
            .expect("parse() refuses a repomd.xml without primary metadata")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPOMD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1</revision>
  <data type="primary">
    <checksum type="SHA256">1FCD</checksum>
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
        let repomd = Repomd::parse(REPOMD.as_bytes()).unwrap();
        let checksum = |kind: &str, hex: &str| {
            Some(Checksum {
                kind: kind.into(),
                hex: hex.into(),
            })
        };
        assert_eq!(
            repomd.entries,
            vec![
                Entry {
                    kind: "primary".into(),
                    href: "repodata/1fcd-primary.xml.gz".into(),
                    base: None,
                    checksum: checksum("sha256", "1fcd"),
                },
                Entry {
                    kind: "modules".into(),
                    href: "repodata/modules.yaml.gz".into(),
                    base: Some("http://elsewhere/".into()),
                    checksum: checksum("sha1", "abcd"),
                },
            ]
        );
        assert_eq!(repomd.primary().href, "repodata/1fcd-primary.xml.gz");
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
            "<data type=\"primary\"><location href=\"x\"/></data>",
        ] {
            assert!(Repomd::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
