//! `primary.xml(.gz|.zst|.xz|.bz2)`: every package of a repository snapshot, streamed.

use std::cmp::Ordering;
use std::io::BufRead;

use quick_xml::events::{BytesStart, Event};

use crate::compression::decompressed;
use crate::{Checksum, Evr, RepodataError, attribute};

/// How much of each package to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Name, arch, version, size, checksum and location; `<format>` (provides, requires,
    /// files) is skipped, and a malformed version is not an error.
    Locations,
    /// Also provides, requires and files; a malformed version or dependency is an error.
    Everything,
}

/// One `<package>` as the metadata gives it; which fields a package must have is the
/// caller's rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Package {
    /// The `type` attribute (`rpm` when absent).
    pub kind: String,
    pub name: Option<String>,
    pub arch: Option<String>,
    /// `None` with [`Detail::Locations`].
    pub evr: Option<Evr>,
    pub checksum: Option<Checksum>,
    /// `<location href>`, relative to the repository root (or to `base`).
    pub href: Option<String>,
    /// `<location xml:base>`, when the package lives elsewhere.
    pub base: Option<String>,
    /// `<size package>`: the RPM file's size.
    pub size: Option<u64>,
    pub provides: Vec<Dep>,
    pub requires: Vec<Dep>,
    /// The files the package lists in primary (`/usr/bin/…`, `/etc/…`).
    pub files: Vec<String>,
}

/// A provide or requirement: `name`, or `name <op> evr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    /// `EQ`, `LT`, `LE`, `GT`, `GE`.
    pub flags: Option<String>,
    pub evr: Option<Evr>,
}

impl std::fmt::Display for Dep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let (Some(flags), Some(evr)) = (&self.flags, &self.evr) {
            let op = match flags.as_str() {
                "EQ" => "=",
                "LT" => "<",
                "LE" => "<=",
                "GT" => ">",
                "GE" => ">=",
                other => other,
            };
            write!(f, " {op} {evr}")?;
        }
        Ok(())
    }
}

impl Dep {
    /// Whether a provide of this name at `provided` (unversioned: any) satisfies it.
    #[must_use]
    pub fn satisfied_by(&self, provided: Option<&Evr>) -> bool {
        let (Some(flags), Some(wanted), Some(provided)) = (&self.flags, &self.evr, provided) else {
            return true;
        };
        let ordering = provided.compare(wanted);
        match flags.as_str() {
            "EQ" => ordering == Ordering::Equal,
            "LT" => ordering == Ordering::Less,
            "LE" => ordering != Ordering::Greater,
            "GT" => ordering == Ordering::Greater,
            "GE" => ordering != Ordering::Less,
            _ => false,
        }
    }
}

/// Decompresses `bytes` (the primary file at `href`, by its extension, at most `limit`
/// bytes decompressed) and hands each `<package>` to `each`, in document order.
///
/// # Errors
/// A [`RepodataError`] for bad compression, a document past the bound, malformed or
/// truncated XML or a document that is not primary metadata; or `each`'s own error, which
/// stops the reading.
pub fn read_primary<E: From<RepodataError>>(
    href: &str,
    bytes: &[u8],
    limit: u64,
    detail: Detail,
    each: impl FnMut(Package) -> Result<(), E>,
) -> Result<(), E> {
    let mut input = decompressed(href, bytes, limit)?;
    match read(&mut input, detail, each) {
        Err(Failure::Metadata(error)) => Err(input.check(error).into()),
        Err(Failure::Caller(error)) => Err(error),
        Ok(()) => Ok(()),
    }
}

enum Failure<E> {
    Metadata(RepodataError),
    Caller(E),
}

impl<E> From<RepodataError> for Failure<E> {
    fn from(error: RepodataError) -> Self {
        Self::Metadata(error)
    }
}

/// Which element's text is being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TextOf {
    None,
    Name,
    Arch,
    Checksum,
    File,
}

/// Which dependency list `<rpm:entry>` elements belong to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Other,
    Provides,
    Requires,
}

fn read<E>(
    input: impl BufRead,
    detail: Detail,
    mut each: impl FnMut(Package) -> Result<(), E>,
) -> Result<(), Failure<E>> {
    let malformed = |detail: String| RepodataError::Malformed(format!("primary metadata {detail}"));
    let mut reader = quick_xml::Reader::from_reader(input);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut depth = 0usize;
    let mut saw_root = false;
    let mut current: Option<Package> = None;
    let mut checksum_kind = String::new();
    let mut text_of = TextOf::None;
    let mut section = Section::Other;
    let everything = detail == Detail::Everything;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| malformed(format!("is not XML: {e}")))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let level = depth + 1;
                if matches!(event, Event::Start(_)) {
                    depth = level;
                }
                let name = e.local_name();
                match (level, name.as_ref()) {
                    (1, b"metadata") => saw_root = true,
                    (2, b"package") => {
                        current = Some(Package {
                            kind: attribute(e, b"type")?.unwrap_or_else(|| "rpm".to_owned()),
                            ..Package::default()
                        });
                    }
                    (3, element) => {
                        if let Some(package) = current.as_mut() {
                            text_of = start_field(package, element, e, everything)?;
                            if text_of == TextOf::Checksum {
                                checksum_kind = attribute(e, b"type")?.unwrap_or_default();
                            }
                        }
                    }
                    (4, element) if everything && current.is_some() => {
                        section = match element {
                            b"provides" => Section::Provides,
                            b"requires" => Section::Requires,
                            _ => Section::Other,
                        };
                        if element == b"file" {
                            text_of = TextOf::File;
                        }
                    }
                    (5, b"entry") if everything => {
                        if let Some(package) = current.as_mut() {
                            match section {
                                Section::Provides => package.provides.push(dep_of(e)?),
                                Section::Requires => package.requires.push(dep_of(e)?),
                                Section::Other => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(text) => {
                if let Some(package) = current.as_mut().filter(|_| text_of != TextOf::None) {
                    let text = text
                        .unescape()
                        .map_err(|e| malformed(format!("has bad text: {e}")))?
                        .trim()
                        .to_owned();
                    match text_of {
                        TextOf::Name => package.name = Some(text),
                        TextOf::Arch => package.arch = Some(text),
                        TextOf::Checksum => {
                            package.checksum = Some(Checksum::new(&checksum_kind, &text));
                        }
                        TextOf::File => package.files.push(text),
                        TextOf::None => {}
                    }
                }
                text_of = TextOf::None;
            }
            Event::End(_) => {
                text_of = TextOf::None;
                if depth == 4 {
                    section = Section::Other;
                }
                if depth == 2 {
                    if let Some(package) = current.take() {
                        each(package).map_err(Failure::Caller)?;
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_root {
        return Err(RepodataError::Malformed(
            "not primary metadata (no <metadata> element)".to_owned(),
        )
        .into());
    }
    if depth != 0 {
        return Err(malformed("is truncated".to_owned()).into());
    }
    Ok(())
}

/// A `<package>` child element: fills what its attributes give, and says whose text
/// follows.
fn start_field(
    package: &mut Package,
    element: &[u8],
    e: &BytesStart<'_>,
    everything: bool,
) -> Result<TextOf, RepodataError> {
    Ok(match element {
        b"name" => TextOf::Name,
        b"arch" => TextOf::Arch,
        b"checksum" => TextOf::Checksum,
        b"version" if everything => {
            package.evr = Some(Evr {
                epoch: epoch(e)?,
                version: attribute(e, b"ver")?.unwrap_or_default(),
                release: attribute(e, b"rel")?.unwrap_or_default(),
            });
            TextOf::None
        }
        b"location" => {
            package.href = attribute(e, b"href")?.filter(|h| !h.is_empty());
            package.base = attribute(e, b"xml:base")?;
            TextOf::None
        }
        b"size" => {
            package.size = attribute(e, b"package")?.and_then(|s| s.parse().ok());
            TextOf::None
        }
        _ => TextOf::None,
    })
}

fn epoch(e: &BytesStart<'_>) -> Result<u64, RepodataError> {
    attribute(e, b"epoch")?.map_or(Ok(0), |epoch| {
        epoch.parse().map_err(|_| {
            RepodataError::Malformed(format!("primary metadata: epoch `{epoch}` is not a number"))
        })
    })
}

fn dep_of(e: &BytesStart<'_>) -> Result<Dep, RepodataError> {
    let name = attribute(e, b"name")?.ok_or_else(|| {
        RepodataError::Malformed("primary metadata: a dependency entry without a name".into())
    })?;
    let flags = attribute(e, b"flags")?;
    let evr = match (&flags, attribute(e, b"ver")?) {
        (Some(_), Some(version)) => Some(Evr {
            epoch: epoch(e)?,
            version,
            release: attribute(e, b"rel")?.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(Dep { name, flags, evr })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="3">
<package type="rpm">
  <name>a</name>
  <arch>noarch</arch>
  <version epoch="1" ver="2.0" rel="3.el9"/>
  <checksum type="sha256" pkgid="YES">BD07</checksum>
  <size package="1234" installed="5000"/>
  <location href="Packages/a-2.0-3.el9.noarch.rpm"/>
  <format>
    <rpm:license>MIT</rpm:license>
    <rpm:provides><rpm:entry name="a" flags="EQ" epoch="1" ver="2.0" rel="3.el9"/></rpm:provides>
    <rpm:requires><rpm:entry name="b"/><rpm:entry name="c" flags="GE" ver="1"/></rpm:requires>
    <rpm:conflicts><rpm:entry name="z"/></rpm:conflicts>
    <file>/usr/bin/a</file>
  </format>
</package>
<package type="rpm">
  <name>b</name>
  <checksum type="sha1" pkgid="YES">ff</checksum>
  <location xml:base="http://mirror/el9/" href="b-1.noarch.rpm"/>
</package>
<package type="srpm"><name>s</name></package>
</metadata>"#;

    fn all(href: &str, bytes: &[u8], detail: Detail) -> Result<Vec<Package>, RepodataError> {
        let mut out = Vec::new();
        read_primary(href, bytes, 1 << 20, detail, |p| {
            out.push(p);
            Ok::<_, RepodataError>(())
        })?;
        Ok(out)
    }

    #[test]
    fn everything() {
        let packages = all("primary.xml", PRIMARY.as_bytes(), Detail::Everything).unwrap();
        assert_eq!(packages.len(), 3);
        let a = &packages[0];
        assert_eq!(
            (a.kind.as_str(), a.name.as_deref(), a.arch.as_deref()),
            ("rpm", Some("a"), Some("noarch"))
        );
        assert_eq!(a.evr.as_ref().unwrap().to_string(), "1:2.0-3.el9");
        assert_eq!(
            a.checksum,
            Some(Checksum {
                kind: "sha256".into(),
                hex: "bd07".into()
            })
        );
        assert_eq!(a.size, Some(1234));
        assert_eq!(a.href.as_deref(), Some("Packages/a-2.0-3.el9.noarch.rpm"));
        let rendered = |deps: &[Dep]| deps.iter().map(Dep::to_string).collect::<Vec<_>>();
        assert_eq!(rendered(&a.provides), ["a = 1:2.0-3.el9"]);
        assert_eq!(rendered(&a.requires), ["b", "c >= 1"]);
        assert_eq!(a.files, ["/usr/bin/a"]);
        assert_eq!(packages[1].base.as_deref(), Some("http://mirror/el9/"));
        assert_eq!(packages[2].kind, "srpm");
    }

    #[test]
    fn locations_skip_the_format() {
        let packages = all("primary.xml", PRIMARY.as_bytes(), Detail::Locations).unwrap();
        assert!(packages[0].provides.is_empty() && packages[0].files.is_empty());
        assert_eq!(packages[0].evr, None);
        assert_eq!(packages[0].checksum.as_ref().unwrap().hex, "bd07");

        let zst = zstd::encode_all(PRIMARY.as_bytes(), 1).unwrap();
        assert_eq!(
            all("x-primary.xml.zst", &zst, Detail::Locations).unwrap(),
            packages
        );
    }

    #[test]
    fn malformed() {
        let truncated = &PRIMARY[..PRIMARY.len() / 2];
        for (href, bad) in [
            ("p.xml", truncated.as_bytes()),
            ("p.xml", b"<html>oops</html>".as_slice()),
            ("p.xml.gz", PRIMARY.as_bytes()),
            ("p.xml.lz", PRIMARY.as_bytes()),
            ("p.xml", b"<package><name>x</name></package>".as_slice()),
        ] {
            assert!(
                all(href, bad, Detail::Everything).is_err(),
                "{href}: {bad:?}"
            );
        }
        let bad_epoch =
            PRIMARY.replace("epoch=\"1\" ver=\"2.0\" rel", "epoch=\"x\" ver=\"2.0\" rel");
        assert!(all("p.xml", bad_epoch.as_bytes(), Detail::Everything).is_err());
        assert!(all("p.xml", bad_epoch.as_bytes(), Detail::Locations).is_ok());
        let corrupt = all("p.xml.gz", PRIMARY.as_bytes(), Detail::Everything);
        assert!(
            matches!(corrupt, Err(RepodataError::Decompress(_))),
            "{corrupt:?}"
        );
        let other = all("p.xml", b"<filelists/>", Detail::Everything).unwrap_err();
        assert!(
            other.to_string().contains("not primary metadata"),
            "{other}"
        );
        let large = read_primary("p.xml", PRIMARY.as_bytes(), 100, Detail::Locations, |_| {
            Ok::<_, RepodataError>(())
        });
        assert!(
            matches!(large, Err(RepodataError::TooLarge(100))),
            "{large:?}"
        );
    }

    #[test]
    fn the_callers_error_stops_the_reading() {
        let mut seen = 0;
        let result = read_primary(
            "p.xml",
            PRIMARY.as_bytes(),
            1 << 20,
            Detail::Locations,
            |_| {
                seen += 1;
                Err(RepodataError::Malformed("enough".into()))
            },
        );
        assert!(matches!(result, Err(RepodataError::Malformed(m)) if m == "enough"));
        assert_eq!(seen, 1);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = all("p.xml", &bytes, Detail::Everything);
            let _ = crate::Repomd::parse(&bytes);
        }

        #[test]
        fn truncation_is_an_error(cut in 0..PRIMARY.len()) {
            proptest::prop_assert!(all("p.xml", &PRIMARY.as_bytes()[..cut], Detail::Everything).is_err());
        }
    }
}
