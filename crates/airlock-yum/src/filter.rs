//! Metadata rewritten to a subset of its packages: `primary.xml`, `filelists.xml` and
//! `other.xml` keep only the `<package>` elements whose package id a caller keeps (each
//! kept element copied as it was), and `repomd.xml` names the rewritten files instead of
//! the originals. What an offline gateway serves for a repository it holds only part of.

use std::io::{BufRead, Write};

use quick_xml::events::{BytesStart, BytesText, Event};

use crate::compression::decompressed;
use crate::{RepodataError, attribute};

/// The empty documents of each package-listing kind, for a repository that holds nothing.
pub const EMPTY_PRIMARY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"0\">\n</metadata>\n";
pub const EMPTY_FILELISTS: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<filelists xmlns=\"http://linux.duke.edu/metadata/filelists\" packages=\"0\">\n</filelists>\n";
pub const EMPTY_OTHER: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<otherdata xmlns=\"http://linux.duke.edu/metadata/other\" packages=\"0\">\n</otherdata>\n";
/// A `repomd.xml` with no entries, for [`rewrite_repomd`] to add the regenerated ones to.
pub const EMPTY_REPOMD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">\n  <revision>0</revision>\n</repomd>\n";

fn malformed(detail: impl std::fmt::Display) -> RepodataError {
    RepodataError::Malformed(format!("metadata {detail}"))
}

fn xml_error(e: impl std::fmt::Display) -> RepodataError {
    malformed(format_args!("is not XML: {e}"))
}

/// `bytes` (the file at `href`, decompressed by its extension within `limit` bytes) as
/// plain XML with only the packages whose id `keep` accepts: the `pkgid` attribute of
/// `<package>` (filelists, other) or the text of its `<checksum>` (primary), lowercase.
/// The root's `packages` count is set to the packages kept.
///
/// # Errors
/// A [`RepodataError`] for bad compression, a document past the bound, or malformed or
/// truncated XML.
pub fn filter_packages(
    href: &str,
    bytes: &[u8],
    limit: u64,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<u8>, RepodataError> {
    let mut input = decompressed(href, bytes, limit)?;
    filter(&mut input, keep).map_err(|e| input.check(e))
}

fn filter(input: impl BufRead, keep: impl Fn(&str) -> bool) -> Result<Vec<u8>, RepodataError> {
    let mut reader = quick_xml::Reader::from_reader(input);
    let mut buf = Vec::new();
    let mut prolog = quick_xml::Writer::new(Vec::new());
    let mut root: Option<BytesStart<'static>> = None;
    let mut kept = quick_xml::Writer::new(Vec::new());
    let mut count = 0usize;
    // The package being read: its events, its id so far, and how deep inside it we are.
    let mut package: Option<(quick_xml::Writer<Vec<u8>>, Option<String>)> = None;
    let mut depth = 0usize;
    let mut in_checksum = false;
    let mut ended = false;
    loop {
        let event = reader.read_event_into(&mut buf).map_err(xml_error)?;
        match &event {
            Event::Eof => break,
            Event::Start(_) => depth += 1,
            _ => {}
        }
        let level = depth;
        match (&event, level) {
            (Event::Start(e), 1) => root = Some(e.to_owned()),
            (Event::Empty(e), 0) => {
                root = Some(e.to_owned());
                ended = true;
            }
            (Event::Start(e), 2) if e.local_name().as_ref() == b"package" => {
                let id = attribute(e, b"pkgid")?;
                let mut writer = quick_xml::Writer::new(Vec::new());
                writer.write_event(event.borrow()).map_err(xml_error)?;
                package = Some((writer, id));
            }
            (Event::Empty(e), 1) if e.local_name().as_ref() == b"package" => {
                if attribute(e, b"pkgid")?.is_some_and(|id| keep(&id.to_ascii_lowercase())) {
                    kept.write_event(event.borrow()).map_err(xml_error)?;
                    count += 1;
                }
            }
            (Event::End(_), 1) if root.is_some() => ended = true,
            (_, 0) if root.is_none() => {
                if !matches!(event, Event::Text(_)) {
                    prolog.write_event(event.borrow()).map_err(xml_error)?;
                }
            }
            _ => {
                if let Some((writer, id)) = package.as_mut() {
                    if let Event::Start(e) = &event {
                        in_checksum = level == 3 && e.local_name().as_ref() == b"checksum";
                    }
                    if let Event::Text(text) = &event {
                        if in_checksum && id.is_none() {
                            let value = text.unescape().map_err(xml_error)?;
                            *id = Some(value.trim().to_owned());
                        }
                    }
                    writer.write_event(event.borrow()).map_err(xml_error)?;
                    if matches!(event, Event::End(_)) && level == 2 {
                        let (writer, id) = package.take().expect("a package");
                        if id.is_some_and(|id| keep(&id.to_ascii_lowercase())) {
                            kept.write_event(Event::Text(BytesText::from_escaped("\n")))
                                .map_err(xml_error)?;
                            kept.get_mut()
                                .write_all(&writer.into_inner())
                                .map_err(xml_error)?;
                            count += 1;
                        }
                    }
                }
            }
        }
        if matches!(event, Event::End(_)) {
            depth = depth.saturating_sub(1);
            if depth < 3 {
                in_checksum = false;
            }
        }
        buf.clear();
    }
    let root = root.ok_or_else(|| malformed("has no root element"))?;
    if !ended || package.is_some() {
        return Err(malformed("is truncated"));
    }
    let mut out = prolog.into_inner();
    if !out.is_empty() {
        out.push(b'\n');
    }
    let mut writer = quick_xml::Writer::new(out);
    let name = String::from_utf8_lossy(root.name().as_ref()).into_owned();
    let mut start = BytesStart::new(name.clone());
    for attribute in root.attributes() {
        let attribute = attribute.map_err(xml_error)?;
        if attribute.key.as_ref() != b"packages" {
            start.push_attribute(attribute);
        }
    }
    start.push_attribute(("packages", count.to_string().as_str()));
    writer.write_event(Event::Start(start)).map_err(xml_error)?;
    let mut out = writer.into_inner();
    out.extend_from_slice(&kept.into_inner());
    out.extend_from_slice(format!("\n</{name}>\n").as_bytes());
    Ok(out)
}

/// `xml` gzip-compressed, the same bytes every time (no file name or time in the header).
#[must_use]
pub fn gzip(xml: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::default());
    encoder.write_all(xml).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// A regenerated metadata file as `repomd.xml` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regenerated {
    /// `primary`, `filelists`, `other`.
    pub kind: String,
    /// `repodata/<sha256>-<kind>.xml.gz`.
    pub href: String,
    /// sha256 of the file as served (compressed) and of its XML.
    pub checksum: String,
    pub open_checksum: String,
    pub size: u64,
    pub open_size: u64,
}

/// `repomd` (an upstream `repomd.xml`) with each `<data>` entry whose type `regenerated`
/// names replaced by it, those whose type `keep` accepts copied as they were, and the rest
/// left out; regenerated entries the document lacks are added at its end.
///
/// # Errors
/// [`RepodataError::Malformed`] for a document that is not well-formed XML.
pub fn rewrite_repomd(
    repomd: &[u8],
    regenerated: &[Regenerated],
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<u8>, RepodataError> {
    let mut reader = quick_xml::Reader::from_reader(repomd);
    let mut writer = quick_xml::Writer::new(Vec::new());
    let mut buf = Vec::new();
    let mut written: Vec<&str> = Vec::new();
    // Inside a `<data>` left out or replaced: skip until its end.
    let mut skipping = false;
    let mut depth = 0usize;
    loop {
        let event = reader.read_event_into(&mut buf).map_err(xml_error)?;
        match &event {
            Event::Eof => break,
            Event::Start(e) if depth == 1 && e.local_name().as_ref() == b"data" => {
                let kind = attribute(e, b"type")?.unwrap_or_default();
                if let Some(entry) = regenerated.iter().find(|r| r.kind == kind) {
                    write_data(&mut writer, entry)?;
                    written.push(&entry.kind);
                    skipping = true;
                } else {
                    skipping = !keep(&kind);
                }
            }
            Event::End(e) if depth == 1 && e.local_name().as_ref() == b"repomd" => {
                for entry in regenerated
                    .iter()
                    .filter(|r| !written.contains(&r.kind.as_str()))
                {
                    write_data(&mut writer, entry)?;
                }
            }
            _ => {}
        }
        let leaving =
            matches!(&event, Event::End(e) if depth == 2 && e.local_name().as_ref() == b"data");
        if !skipping {
            writer.write_event(event.borrow()).map_err(xml_error)?;
        }
        match &event {
            Event::Start(_) => depth += 1,
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
        if leaving {
            skipping = false;
        }
        buf.clear();
    }
    if depth != 0 {
        return Err(malformed("is truncated"));
    }
    Ok(writer.into_inner())
}

fn write_data(
    writer: &mut quick_xml::Writer<Vec<u8>>,
    entry: &Regenerated,
) -> Result<(), RepodataError> {
    let text = format!(
        "<data type=\"{kind}\">\n    <checksum type=\"sha256\">{checksum}</checksum>\n    \
         <open-checksum type=\"sha256\">{open}</open-checksum>\n    \
         <location href=\"{href}\"/>\n    <size>{size}</size>\n    \
         <open-size>{open_size}</open-size>\n  </data>\n  ",
        kind = entry.kind,
        checksum = entry.checksum,
        open = entry.open_checksum,
        href = entry.href,
        size = entry.size,
        open_size = entry.open_size,
    );
    writer
        .get_mut()
        .write_all(text.as_bytes())
        .map_err(xml_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Detail, Repomd, read_primary};

    const PRIMARY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="2">
<package type="rpm">
  <name>a</name>
  <checksum type="sha256" pkgid="YES">AAAA</checksum>
  <location href="a.rpm"/>
  <format><rpm:license>A &amp; B</rpm:license><file>/usr/bin/a</file></format>
</package>
<package type="rpm">
  <name>b</name>
  <checksum type="sha256" pkgid="YES">bbbb</checksum>
  <location href="b.rpm"/>
</package>
</metadata>"#;

    const FILELISTS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<filelists xmlns="http://linux.duke.edu/metadata/filelists" packages="2">
<package pkgid="aaaa" name="a" arch="noarch"><version epoch="0" ver="1" rel="1"/><file>/usr/bin/a</file></package>
<package pkgid="bbbb" name="b" arch="noarch"><version epoch="0" ver="1" rel="1"/></package>
</filelists>"#;

    fn names(xml: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        read_primary("p.xml", xml, 1 << 20, Detail::Everything, |p| {
            out.push(p.name.unwrap());
            Ok::<_, RepodataError>(())
        })
        .unwrap();
        out
    }

    #[test]
    fn primary_keeps_the_packages_asked_for_as_they_were() {
        let out = filter_packages("p.xml", PRIMARY.as_bytes(), 1 << 20, |id| id == "aaaa").unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(names(&out), ["a"]);
        assert!(text.contains("packages=\"1\""), "{text}");
        assert!(
            text.contains("<rpm:license>A &amp; B</rpm:license>"),
            "{text}"
        );
        assert!(text.starts_with("<?xml"), "{text}");
        let none = filter_packages("p.xml", PRIMARY.as_bytes(), 1 << 20, |_| false).unwrap();
        assert!(names(&none).is_empty());
        assert_eq!(
            gzip(PRIMARY.as_bytes()),
            gzip(PRIMARY.as_bytes()),
            "deterministic"
        );
        assert_eq!(
            filter_packages("p.xml.gz", &gzip(PRIMARY.as_bytes()), 1 << 20, |id| id
                == "bbbb")
            .map(|o| names(&o))
            .unwrap(),
            ["b"]
        );
    }

    #[test]
    fn filelists_by_pkgid() {
        let out =
            filter_packages("f.xml", FILELISTS.as_bytes(), 1 << 20, |id| id == "bbbb").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("pkgid=\"bbbb\"") && !text.contains("pkgid=\"aaaa\""),
            "{text}"
        );
        assert!(text.contains("packages=\"1\""), "{text}");
        for empty in [EMPTY_PRIMARY, EMPTY_FILELISTS, EMPTY_OTHER] {
            let out = filter_packages("e.xml", empty.as_bytes(), 1 << 20, |_| true).unwrap();
            assert!(String::from_utf8(out).unwrap().contains("packages=\"0\""));
        }
    }

    #[test]
    fn truncated_or_broken_metadata_is_refused() {
        for cut in [10, PRIMARY.len() / 2, PRIMARY.len() - 3] {
            assert!(
                filter_packages("p.xml", &PRIMARY.as_bytes()[..cut], 1 << 20, |_| true).is_err(),
                "cut at {cut}"
            );
        }
        assert!(filter_packages("p.xml", b"", 1 << 20, |_| true).is_err());
        assert!(filter_packages("p.xml.gz", PRIMARY.as_bytes(), 1 << 20, |_| true).is_err());
    }

    #[test]
    fn repomd_names_the_regenerated_files_and_keeps_or_drops_the_rest() {
        let upstream = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1700000000</revision>
  <data type="primary"><checksum type="sha256">11</checksum><location href="repodata/11-primary.xml.gz"/></data>
  <data type="primary_db"><checksum type="sha256">22</checksum><location href="repodata/22-primary.sqlite.bz2"/></data>
  <data type="group"><checksum type="sha256">33</checksum><location href="repodata/33-comps.xml"/></data>
</repomd>"#;
        let entry = |kind: &str| Regenerated {
            kind: kind.to_owned(),
            href: format!("repodata/ff-{kind}.xml.gz"),
            checksum: "ff".repeat(32),
            open_checksum: "ee".repeat(32),
            size: 10,
            open_size: 20,
        };
        let out = rewrite_repomd(
            upstream.as_bytes(),
            &[entry("primary"), entry("filelists")],
            |kind| kind == "group",
        )
        .unwrap();
        let parsed = Repomd::parse(&out).unwrap();
        let kinds: Vec<&str> = parsed.entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["primary", "group", "filelists"]);
        assert_eq!(parsed.primary().href, "repodata/ff-primary.xml.gz");
        assert_eq!(
            parsed.primary().checksum.as_ref().unwrap().hex,
            "ff".repeat(32)
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("<revision>1700000000</revision>"), "{text}");
        assert!(!text.contains("sqlite"), "{text}");

        let fresh = rewrite_repomd(EMPTY_REPOMD.as_bytes(), &[entry("primary")], |_| true).unwrap();
        assert_eq!(
            Repomd::parse(&fresh).unwrap().primary().href,
            "repodata/ff-primary.xml.gz"
        );
        assert!(rewrite_repomd(b"<repomd><data type=\"x\">", &[], |_| true).is_err());
    }
}
