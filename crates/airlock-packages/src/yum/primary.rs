//! `primary.xml(.gz|.zst)`: every package's location and sha256, decompressed as a stream
//! with a bound; parsed once per primary file (by its digest) and kept in the proxy's
//! derived tables (see `yum::packages`).

use quick_xml::events::Event;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use super::repomd::attribute;

/// Decompressed primary metadata larger than this is refused (Fedora's is ~100 MiB).
const MAX_DECOMPRESSED: u64 = 2 * 1024 * 1024 * 1024;
/// Where one package is and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Package {
    /// `xml:base` of its location, when it lives outside the repository.
    pub base: Option<String>,
    /// `<checksum type="…">` and its lowercase hex value.
    pub checksum: (String, String),
}

/// A repository's packages by location `href` (relative to the repository root).
pub(super) type Packages = HashMap<String, Package>;

/// Decompresses (by the file name's extension) and parses a primary file.
pub(super) fn parse(href: &str, bytes: &[u8]) -> Result<Packages, String> {
    let extension = std::path::Path::new(href)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let reader: Box<dyn Read + '_> = if extension.as_deref() == Some("gz") {
        Box::new(flate2::read::MultiGzDecoder::new(bytes))
    } else if extension.as_deref() == Some("zst") {
        Box::new(zstd::stream::read::Decoder::new(bytes).map_err(|e| format!("zstd: {e}"))?)
    } else if extension.as_deref() == Some("xml") {
        Box::new(bytes)
    } else {
        return Err(format!(
            "{href}: only .xml, .xml.gz and .xml.zst primary metadata is supported"
        ));
    };
    parse_xml(BufReader::new(Limited {
        inner: reader,
        left: MAX_DECOMPRESSED,
    }))
}

fn parse_xml(input: impl BufRead) -> Result<Packages, String> {
    let mut reader = quick_xml::Reader::from_reader(input);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut packages = Packages::new();
    let mut in_package = false;
    let mut depth = 0usize;
    let mut checksum_type: Option<String> = None;
    let mut checksum: Option<(String, String)> = None;
    let mut location: Option<(String, Option<String>)> = None;
    let mut saw_root = false;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("primary metadata is not XML: {e}"))?;
        match event {
            Event::Start(e) => {
                depth += 1;
                match (depth, e.local_name().as_ref()) {
                    (1, b"metadata") => saw_root = true,
                    (2, b"package") => {
                        in_package = true;
                        checksum = None;
                        location = None;
                    }
                    (3, b"checksum") if in_package => {
                        checksum_type = Some(attribute(&e, b"type")?.unwrap_or_default());
                    }
                    (3, b"location") if in_package => location = Some(location_of(&e)?),
                    _ => {}
                }
            }
            Event::Empty(e)
                if depth == 2 && in_package && e.local_name().as_ref() == b"location" =>
            {
                location = Some(location_of(&e)?);
            }
            Event::Text(text) => {
                if let Some(kind) = checksum_type.take() {
                    let value = text.unescape().map_err(|e| format!("primary: {e}"))?;
                    checksum = Some((kind.to_ascii_lowercase(), value.trim().to_ascii_lowercase()));
                }
            }
            Event::End(e) => {
                checksum_type = None;
                if depth == 2 && e.local_name().as_ref() == b"package" {
                    in_package = false;
                    let (Some((href, base)), Some(checksum)) = (location.take(), checksum.take())
                    else {
                        return Err("primary: a <package> lacks a location or checksum".to_owned());
                    };
                    packages.insert(href, Package { base, checksum });
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_root || depth != 0 {
        return Err("primary metadata is truncated or has no <metadata> element".to_owned());
    }
    Ok(packages)
}

fn location_of(
    element: &quick_xml::events::BytesStart<'_>,
) -> Result<(String, Option<String>), String> {
    let href = attribute(element, b"href")?
        .filter(|h| !h.is_empty())
        .ok_or("primary: a <location> has no href")?;
    Ok((href, attribute(element, b"xml:base")?))
}

/// A reader that fails once more than `left` bytes came out of `inner`.
struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other(format!(
                "decompressed primary metadata exceeds {MAX_DECOMPRESSED} bytes"
            ))
        })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="2">
<package type="rpm">
  <name>a</name>
  <checksum type="sha256" pkgid="YES">BD07</checksum>
  <location href="Packages/a-1.noarch.rpm"/>
  <format><rpm:provides><rpm:entry name="a"/></rpm:provides><file>/x</file></format>
</package>
<package type="rpm">
  <name>b</name>
  <checksum type="sha1" pkgid="YES">ff</checksum>
  <location xml:base="http://mirror/el9/" href="b-1.noarch.rpm"/>
</package>
</metadata>"#;

    #[test]
    fn packages() {
        let packages = parse("primary.xml", PRIMARY.as_bytes()).unwrap();
        assert_eq!(packages.len(), 2);
        assert_eq!(
            packages["Packages/a-1.noarch.rpm"],
            Package {
                base: None,
                checksum: ("sha256".into(), "bd07".into())
            }
        );
        assert_eq!(
            packages["b-1.noarch.rpm"].base.as_deref(),
            Some("http://mirror/el9/")
        );

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, PRIMARY.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(parse("x-primary.xml.gz", &gz).unwrap(), packages);
        let zst = zstd::encode_all(PRIMARY.as_bytes(), 1).unwrap();
        assert_eq!(parse("x-primary.xml.zst", &zst).unwrap(), packages);
    }

    #[test]
    fn malformed() {
        let truncated = &PRIMARY[..PRIMARY.len() / 2];
        for (href, bad) in [
            ("p.xml", truncated.as_bytes()),
            ("p.xml", b"<html>oops</html>".as_slice()),
            ("p.xml.gz", PRIMARY.as_bytes()),
            ("p.xml.xz", PRIMARY.as_bytes()),
            (
                "p.xml",
                b"<metadata><package><name>x</name></package></metadata>".as_slice(),
            ),
        ] {
            assert!(parse(href, bad).is_err(), "{href}: {bad:?}");
        }
    }
}
