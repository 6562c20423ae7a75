//! Reading a yum repository's metadata: `repodata/repomd.xml`, then the primary it lists
//! (verified against repomd's checksum, decompressed within bounds), into packages with
//! their provides and requires.

use std::collections::HashMap;
use std::io::Read;

use quick_xml::events::{BytesStart, Event};

use super::*;
use crate::artifacts::{Http, Sink};

/// Reads one repository: `repodata/repomd.xml`, then its primary, verified.
pub(super) fn read_repository(repo: &str, http: &Http) -> Result<Vec<Parsed>, SelinuxError> {
    let repomd_url = located(repo, "repodata/repomd.xml", repo)?;
    let repomd = http.fetch(
        &repomd_url,
        Sink::Memory {
            limit: REPOMD_LIMIT,
        },
    )?;
    let (href, checksum) = primary_of(repomd.bytes(), &repomd_url)?;
    let primary_url = located(repo, &href, &repomd_url)?;
    let kind = checked_kind(&primary_url, &checksum.kind)?;
    let primary = http.fetch(
        &primary_url,
        Sink::Memory {
            limit: PRIMARY_LIMIT,
        },
    )?;
    let actual = kind.of(primary.bytes());
    if actual != checksum.hex {
        return Err(SelinuxError::ChecksumMismatch {
            url: primary_url,
            kind: checksum.kind,
            expected: checksum.hex,
            actual,
        });
    }
    let xml = decompress(&href, primary.bytes(), &primary_url)?;
    parse_primary(&xml, repo, &primary_url)
}

pub(super) fn decompress(href: &str, bytes: &[u8], url: &str) -> Result<Vec<u8>, SelinuxError> {
    let extension = Path::new(href)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let bad = |e: &dyn std::fmt::Display| malformed(url, format!("cannot decompress: {e}"));
    let mut out = Vec::new();
    let too_large = || {
        malformed(
            url,
            format!("decompresses to more than {PRIMARY_XML_LIMIT} bytes"),
        )
    };
    let mut read_all = |reader: &mut dyn Read| -> Result<(), SelinuxError> {
        reader
            .take(PRIMARY_XML_LIMIT + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(&e))?;
        if out.len() as u64 > PRIMARY_XML_LIMIT {
            return Err(too_large());
        }
        Ok(())
    };
    match extension.as_deref() {
        Some("gz") => read_all(&mut flate2::read::MultiGzDecoder::new(bytes))?,
        Some("zst") => {
            read_all(&mut zstd::stream::read::Decoder::new(bytes).map_err(|e| bad(&e))?)?;
        }
        Some("bz2") => read_all(&mut bzip2::read::MultiBzDecoder::new(bytes))?,
        Some("xz") => {
            let mut input = std::io::BufReader::new(bytes);
            let mut output = Bounded {
                bytes: Vec::new(),
                limit: PRIMARY_XML_LIMIT,
            };
            lzma_rs::xz_decompress(&mut input, &mut output).map_err(|e| {
                if output.bytes.len() as u64 >= PRIMARY_XML_LIMIT {
                    too_large()
                } else {
                    bad(&e)
                }
            })?;
            out = output.bytes;
        }
        Some("xml") => read_all(&mut &*bytes)?,
        other => {
            return Err(malformed(
                url,
                format!(
                    "unknown compression `{}` (airlock reads .gz, .zst, .xz, .bz2 and .xml)",
                    other.unwrap_or("")
                ),
            ));
        }
    }
    Ok(out)
}

/// A writer refusing more than `limit` bytes.
pub(super) struct Bounded {
    bytes: Vec<u8>,
    limit: u64,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if (self.bytes.len() + buf.len()) as u64 > self.limit {
            return Err(std::io::Error::other("too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn attributes(
    element: &BytesStart<'_>,
    url: &str,
) -> Result<HashMap<String, String>, SelinuxError> {
    let mut map = HashMap::new();
    for attribute in element.attributes() {
        let attribute = attribute.map_err(|e| malformed(url, e.to_string()))?;
        let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
        let value = attribute
            .unescape_value()
            .map_err(|e| malformed(url, e.to_string()))?
            .into_owned();
        map.insert(key, value);
    }
    Ok(map)
}

/// The primary metadata's location and checksum from `repomd.xml`.
pub(super) fn primary_of(bytes: &[u8], url: &str) -> Result<(String, Checksum), SelinuxError> {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut in_primary = false;
    let mut in_checksum: Option<String> = None;
    let mut href = None;
    let mut checksum = None;
    let mut saw_repomd = false;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| malformed(url, format!("not XML: {e}")))?;
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let name = e.local_name();
                let attrs = attributes(&e, url)?;
                match name.as_ref() {
                    b"repomd" => saw_repomd = true,
                    b"data" => in_primary = attrs.get("type").is_some_and(|t| t == "primary"),
                    b"checksum" if in_primary => {
                        in_checksum = Some(attrs.get("type").cloned().unwrap_or_default());
                    }
                    b"location" if in_primary => href = attrs.get("href").cloned(),
                    _ => {}
                }
            }
            Event::Text(t) => {
                if let Some(kind) = in_checksum.take() {
                    let hex = t
                        .unescape()
                        .map_err(|e| malformed(url, e.to_string()))?
                        .trim()
                        .to_ascii_lowercase();
                    checksum = Some(Checksum { kind, hex });
                }
            }
            Event::End(e) => {
                if e.local_name().as_ref() == b"data" && in_primary {
                    in_primary = false;
                }
                in_checksum = None;
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_repomd {
        return Err(malformed(url, "not a repomd.xml (no <repomd> element)"));
    }
    match (href, checksum) {
        (Some(href), Some(checksum)) if !checksum.hex.is_empty() => Ok((href, checksum)),
        _ => Err(malformed(
            url,
            "no primary metadata with a location and checksum",
        )),
    }
}

pub(super) fn dep_of(attrs: &HashMap<String, String>, url: &str) -> Result<Dep, SelinuxError> {
    let name = attrs
        .get("name")
        .cloned()
        .ok_or_else(|| malformed(url, "a dependency entry without a name"))?;
    let flags = attrs.get("flags").cloned();
    let evr = match (&flags, attrs.get("ver")) {
        (Some(_), Some(version)) => Some(Evr {
            epoch: attrs
                .get("epoch")
                .map_or(Ok(0), |e| e.parse())
                .map_err(|_| malformed(url, format!("epoch of `{name}` is not a number")))?,
            version: version.clone(),
            release: attrs.get("rel").cloned().unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(Dep { name, flags, evr })
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    None,
    Provides,
    Requires,
    Other,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TextOf {
    None,
    Name,
    Arch,
    Checksum,
    File,
}

#[derive(Default)]
pub(super) struct Partial {
    name: Option<String>,
    arch: Option<String>,
    evr: Option<Evr>,
    checksum_kind: Option<String>,
    checksum: Option<String>,
    href: Option<String>,
    base: Option<String>,
    size: Option<u64>,
    provides: Vec<Dep>,
    requires: Vec<Dep>,
    files: Vec<String>,
}

impl Partial {
    fn finish(self, repo: &str, url: &str) -> Result<Parsed, SelinuxError> {
        let name = self
            .name
            .ok_or_else(|| malformed(url, "a package without a <name>"))?;
        let missing = |what: &str| malformed(url, format!("package `{name}` has no {what}"));
        let arch = self.arch.ok_or_else(|| missing("<arch>"))?;
        let evr = self.evr.ok_or_else(|| missing("<version>"))?;
        let href = self.href.ok_or_else(|| missing("<location href>"))?;
        let kind = self
            .checksum_kind
            .ok_or_else(|| missing("<checksum type>"))?;
        let hex = self.checksum.ok_or_else(|| missing("<checksum>"))?;
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(missing("hex <checksum>"));
        }
        let package_url = located(self.base.as_deref().unwrap_or(repo), &href, url)?;
        let file_name = href.rsplit('/').next().unwrap_or_default().to_owned();
        let safe = |b: u8| b.is_ascii_alphanumeric() || b"._+-~^".contains(&b);
        if !Path::new(&file_name)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("rpm"))
            || !file_name.bytes().all(safe)
        {
            return Err(malformed(
                url,
                format!("package `{name}` has an unusable file name `{file_name}`"),
            ));
        }
        Ok(Parsed {
            package: RpmPackage {
                name,
                arch,
                evr,
                url: package_url,
                file_name,
                checksum: Checksum {
                    kind,
                    hex: hex.to_ascii_lowercase(),
                },
                size: self.size,
            },
            provides: self.provides,
            requires: self.requires,
            files: self.files,
        })
    }
}

/// Every `rpm` package of a primary.xml.
pub(super) fn parse_primary(
    xml: &[u8],
    repo: &str,
    url: &str,
) -> Result<Vec<Parsed>, SelinuxError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut packages = Vec::new();
    let mut current: Option<Partial> = None;
    let mut section = Section::None;
    let mut text_of = TextOf::None;
    let mut saw_metadata = false;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| malformed(url, format!("not XML: {e}")))?;
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if name == b"metadata" {
                    saw_metadata = true;
                    continue;
                }
                if name == b"package" {
                    let attrs = attributes(&e, url)?;
                    current = (attrs.get("type").map_or("rpm", String::as_str) == "rpm")
                        .then(Partial::default);
                    section = Section::None;
                    continue;
                }
                let Some(package) = current.as_mut() else {
                    continue;
                };
                match name {
                    b"name" if section == Section::None => text_of = TextOf::Name,
                    b"arch" => text_of = TextOf::Arch,
                    b"checksum" => {
                        package.checksum_kind = attributes(&e, url)?.remove("type");
                        text_of = TextOf::Checksum;
                    }
                    b"file" => text_of = TextOf::File,
                    b"version" => {
                        let attrs = attributes(&e, url)?;
                        package.evr = Some(Evr {
                            epoch: attrs
                                .get("epoch")
                                .map_or(Ok(0), |e| e.parse())
                                .map_err(|_| malformed(url, "a package epoch is not a number"))?,
                            version: attrs.get("ver").cloned().unwrap_or_default(),
                            release: attrs.get("rel").cloned().unwrap_or_default(),
                        });
                    }
                    b"location" => {
                        let mut attrs = attributes(&e, url)?;
                        package.href = attrs.remove("href");
                        package.base = attrs.remove("xml:base");
                    }
                    b"size" => {
                        package.size = attributes(&e, url)?
                            .get("package")
                            .and_then(|s| s.parse().ok());
                    }
                    b"provides" => section = Section::Provides,
                    b"requires" => section = Section::Requires,
                    b"conflicts" | b"obsoletes" | b"recommends" | b"suggests" | b"supplements"
                    | b"enhances" => section = Section::Other,
                    b"entry" => {
                        let attrs = attributes(&e, url)?;
                        match section {
                            Section::Provides => package.provides.push(dep_of(&attrs, url)?),
                            Section::Requires => package.requires.push(dep_of(&attrs, url)?),
                            Section::None | Section::Other => {}
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => {
                if let Some(package) = current.as_mut() {
                    let text = t
                        .unescape()
                        .map_err(|e| malformed(url, e.to_string()))?
                        .trim()
                        .to_owned();
                    match text_of {
                        TextOf::Name => package.name = Some(text),
                        TextOf::Arch => package.arch = Some(text),
                        TextOf::Checksum => package.checksum = Some(text),
                        TextOf::File => package.files.push(text),
                        TextOf::None => {}
                    }
                }
                text_of = TextOf::None;
            }
            Event::End(e) => {
                text_of = TextOf::None;
                match e.local_name().as_ref() {
                    b"package" => {
                        if let Some(package) = current.take() {
                            packages.push(package.finish(repo, url)?);
                        }
                    }
                    b"provides" | b"requires" | b"conflicts" | b"obsoletes" | b"recommends"
                    | b"suggests" | b"supplements" | b"enhances" => section = Section::None,
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_metadata {
        return Err(malformed(
            url,
            "not primary metadata (no <metadata> element)",
        ));
    }
    if current.is_some() {
        return Err(malformed(url, "ends inside a <package>"));
    }
    Ok(packages)
}
