//! Property tests of the metadata readers: `repomd.xml` and `primary.xml` rendered from
//! generated entries read back to those entries, and arbitrary, cut and spliced documents
//! (in every compression) never panic and never read back as something they do not say.
//!
//! `PROPTEST_CASES` raises the case count (scripts/fuzz.sh).

use std::fmt::Write as _;
use std::io::Write;

use airlock_yum::{
    Checksum, Detail, Entry, Package, RepodataError, Repomd, decompressed, read_primary,
};
use proptest::prelude::*;

fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// Text that needs XML escaping now and then.
fn text() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._/&<>\"'-]{0,20}"
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        prop_oneof!["primary", "filelists", "other", "[a-z_]{1,12}"],
        text(),
        proptest::option::of(text()),
        proptest::option::of(("sha(1|256|512)", "[0-9a-f]{8,64}")),
    )
        .prop_map(|(kind, href, base, checksum)| Entry {
            kind,
            href,
            base,
            checksum: checksum.map(|(kind, hex)| Checksum { kind, hex }),
        })
}

fn render_repomd(entries: &[Entry]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\">\n  <revision>1</revision>\n",
    );
    for e in entries {
        let _ = writeln!(out, "  <data type=\"{}\">", escape(&e.kind));
        if let Some(c) = &e.checksum {
            let _ = writeln!(
                out,
                "    <checksum type=\"{}\">{}</checksum>",
                c.kind, c.hex
            );
            out += "    <open-checksum type=\"sha256\">ffff</open-checksum>\n";
        }
        let base = e
            .base
            .as_ref()
            .map(|b| format!(" xml:base=\"{}\"", escape(b)))
            .unwrap_or_default();
        let _ = writeln!(out, "    <location{base} href=\"{}\"/>", escape(&e.href));
        out += "    <timestamp>1700000000</timestamp>\n  </data>\n";
    }
    out + "</repomd>\n"
}

fn package() -> impl Strategy<Value = Package> {
    (
        "[a-zA-Z0-9][a-zA-Z0-9+._-]{0,15}",
        prop_oneof!["noarch", "x86_64", "aarch64"],
        (0u64..5, "[0-9][0-9a-z.~^]{0,6}", "[0-9][0-9a-z.]{0,6}"),
        "[0-9a-f]{64}",
        text(),
        0u64..1 << 40,
        proptest::collection::vec(
            (
                "[a-z][a-z0-9()/._-]{0,12}",
                proptest::option::of("(EQ|LT|LE|GT|GE)"),
            ),
            0..4,
        ),
        proptest::collection::vec("/[a-z/]{1,20}", 0..3),
    )
        .prop_map(
            |(name, arch, (epoch, version, release), sha, href, size, requires, files)| {
                let evr = airlock_yum::Evr {
                    epoch,
                    version,
                    release,
                };
                Package {
                    kind: "rpm".into(),
                    name: Some(name.clone()),
                    arch: Some(arch),
                    evr: Some(evr.clone()),
                    checksum: Some(Checksum {
                        kind: "sha256".into(),
                        hex: sha,
                    }),
                    href: Some(href),
                    base: None,
                    size: Some(size),
                    provides: vec![airlock_yum::Dep {
                        name,
                        flags: Some("EQ".into()),
                        evr: Some(evr.clone()),
                    }],
                    requires: requires
                        .into_iter()
                        .map(|(name, flags)| airlock_yum::Dep {
                            evr: flags.as_ref().map(|_| evr.clone()),
                            name,
                            flags,
                        })
                        .collect(),
                    files,
                }
            },
        )
}

fn render_dep(d: &airlock_yum::Dep) -> String {
    let mut out = format!("<rpm:entry name=\"{}\"", escape(&d.name));
    if let (Some(flags), Some(evr)) = (&d.flags, &d.evr) {
        let _ = write!(
            out,
            " flags=\"{flags}\" epoch=\"{}\" ver=\"{}\" rel=\"{}\"",
            evr.epoch, evr.version, evr.release
        );
    }
    out + "/>"
}

fn render_primary(packages: &[Package]) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"{}\">\n",
        packages.len()
    );
    for p in packages {
        let evr = p.evr.as_ref().unwrap();
        let checksum = p.checksum.as_ref().unwrap();
        out += "<package type=\"rpm\">\n";
        let _ = writeln!(
            out,
            "  <name>{}</name>\n  <arch>{}</arch>",
            escape(p.name.as_ref().unwrap()),
            p.arch.as_ref().unwrap()
        );
        let _ = writeln!(
            out,
            "  <version epoch=\"{}\" ver=\"{}\" rel=\"{}\"/>",
            evr.epoch, evr.version, evr.release
        );
        let _ = writeln!(
            out,
            "  <checksum type=\"{}\" pkgid=\"YES\">{}</checksum>",
            checksum.kind, checksum.hex
        );
        let _ = writeln!(
            out,
            "  <summary>a &amp; b</summary>\n  <size package=\"{}\" installed=\"1\"/>",
            p.size.unwrap()
        );
        let _ = writeln!(
            out,
            "  <location href=\"{}\"/>\n  <format>",
            escape(p.href.as_ref().unwrap())
        );
        out += "    <rpm:license>MIT</rpm:license>\n    <rpm:provides>";
        out += &p.provides.iter().map(render_dep).collect::<String>();
        out += "</rpm:provides>\n    <rpm:requires>";
        out += &p.requires.iter().map(render_dep).collect::<String>();
        out += "</rpm:requires>\n";
        for f in &p.files {
            let _ = writeln!(out, "    <file>{f}</file>");
        }
        out += "  </format>\n</package>\n";
    }
    out + "</metadata>\n"
}

fn read_all(href: &str, bytes: &[u8], detail: Detail) -> Result<Vec<Package>, RepodataError> {
    let mut out = Vec::new();
    read_primary(href, bytes, 1 << 24, detail, |p| {
        out.push(p);
        Ok::<_, RepodataError>(())
    })?;
    Ok(out)
}

fn compress(extension: &str, bytes: &[u8]) -> Vec<u8> {
    match extension {
        "gz" => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(bytes).unwrap();
            gz.finish().unwrap()
        }
        "bz2" => {
            let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            bz.write_all(bytes).unwrap();
            bz.finish().unwrap()
        }
        "zst" => zstd::encode_all(bytes, 1).unwrap(),
        "xz" => {
            let mut out = Vec::new();
            lzma_rs::xz_compress(&mut &*bytes, &mut out).unwrap();
            out
        }
        _ => bytes.to_vec(),
    }
}

/// A mutation of a document: cut it, overwrite a byte, or splice in a fragment.
#[derive(Debug, Clone)]
enum Mutation {
    Cut(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Splice(prop::sample::Index, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Cut),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<prop::sample::Index>(),
            prop_oneof![
                Just(b"<data type=\"primary\">".to_vec()),
                Just(b"</data>".to_vec()),
                Just(b"<package>".to_vec()),
                Just(b"</package></metadata>".to_vec()),
                Just(b"<![CDATA[".to_vec()),
                Just(b"&#xFFFFFFFF;".to_vec()),
                Just(b"\"".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..16),
            ]
        )
            .prop_map(|(i, b)| Mutation::Splice(i, b)),
    ]
}

fn mutate(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match m {
        Mutation::Cut(i) => out.truncate(i.index(bytes.len() + 1)),
        Mutation::Flip(i, b) if !out.is_empty() => {
            let at = i.index(out.len());
            out[at] = *b;
        }
        Mutation::Flip(..) => {}
        Mutation::Splice(i, b) => {
            let at = i.index(bytes.len() + 1);
            out.splice(at..at, b.iter().copied());
        }
    }
    out
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn repomd_reads_back_what_it_lists(mut entries in proptest::collection::vec(entry(), 0..6), primary in entry()) {
        entries.insert(0, Entry { kind: "primary".into(), ..primary });
        let parsed = Repomd::parse(render_repomd(&entries).as_bytes()).unwrap();
        for e in &mut entries {
            if let Some(c) = &mut e.checksum {
                c.kind = c.kind.to_ascii_lowercase();
            }
        }
        prop_assert_eq!(&parsed.entries, &entries);
        prop_assert_eq!(parsed.primary(), &entries[0]);
    }

    #[test]
    fn a_mutated_repomd_never_panics_and_never_loses_primary(entries in proptest::collection::vec(entry(), 1..4), m in mutation()) {
        let mut entries = entries;
        entries[0].kind = "primary".into();
        let bytes = mutate(render_repomd(&entries).as_bytes(), &m);
        if let Ok(repomd) = Repomd::parse(&bytes) {
            // Whatever parses has a primary entry with a location.
            prop_assert!(!repomd.primary().href.is_empty());
            prop_assert!(repomd.entries.iter().all(|e| !e.href.is_empty()));
        }
    }

    #[test]
    fn a_cut_repomd_reads_a_prefix_or_fails(entries in proptest::collection::vec(entry(), 1..4), cut in any::<prop::sample::Index>()) {
        let mut entries = entries;
        entries[0].kind = "primary".into();
        let text = render_repomd(&entries);
        let cut = cut.index(text.len() + 1);
        if let Ok(repomd) = Repomd::parse(&text.as_bytes()[..cut]) {
            let full = Repomd::parse(text.as_bytes()).unwrap();
            prop_assert!(full.entries.starts_with(&repomd.entries));
        }
    }

    #[test]
    fn primary_reads_back_its_packages(packages in proptest::collection::vec(package(), 0..5), extension in "(gz|bz2|zst|xz|xml)") {
        let href = format!("repodata/x-primary.xml.{extension}").replace(".xml.xml", ".xml");
        let bytes = compress(&extension, render_primary(&packages).as_bytes());
        let everything = read_all(&href, &bytes, Detail::Everything).unwrap();
        prop_assert_eq!(&everything, &packages);
        let locations = read_all(&href, &bytes, Detail::Locations).unwrap();
        prop_assert_eq!(locations.len(), packages.len());
        for (got, want) in locations.iter().zip(&packages) {
            prop_assert_eq!(&got.href, &want.href);
            prop_assert_eq!(&got.checksum, &want.checksum);
            prop_assert!(got.requires.is_empty() && got.evr.is_none());
        }
    }

    #[test]
    fn a_mutated_primary_never_panics(packages in proptest::collection::vec(package(), 1..3), m in mutation()) {
        let bytes = mutate(render_primary(&packages).as_bytes(), &m);
        if let Ok(got) = read_all("p.xml", &bytes, Detail::Everything) {
            // A mutation may change a value, but not invent more packages than it spliced in.
            prop_assert!(got.len() <= packages.len() + 1);
        }
        let _ = read_all("p.xml", &bytes, Detail::Locations);
    }

    #[test]
    fn a_cut_primary_is_an_error(packages in proptest::collection::vec(package(), 1..3), cut in any::<prop::sample::Index>()) {
        let text = render_primary(&packages);
        // Anything short of the closing tag leaves an element open.
        let end = text.trim_end().len() - 1;
        let cut = cut.index(end);
        prop_assert!(read_all("p.xml", &text.as_bytes()[..cut], Detail::Everything).is_err());
    }

    #[test]
    fn arbitrary_compressed_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), extension in "(gz|bz2|zst|xz|xml)") {
        let href = format!("p.xml.{extension}");
        let _ = read_all(&href, &bytes, Detail::Everything);
        // A real stream, mutated.
        let mut real = compress(&extension, render_primary(&[]).as_bytes());
        if !real.is_empty() {
            let at = bytes.len() % real.len();
            real[at] ^= bytes.first().copied().unwrap_or(1);
            real.truncate(real.len() - bytes.len() % real.len().max(1) / 2);
        }
        let _ = read_all(&href, &real, Detail::Everything);
        let _ = decompressed(&href, &real, 1 << 16).and_then(airlock_yum::Decompressed::read_all);
    }
}
