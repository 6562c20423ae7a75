//! Names for the package files a proxy keeps by digest, read from the index documents that
//! list them: a yum primary's `<location href>`, a `PyPI` JSON page's `filename`, a conda
//! `repodata.json`'s package keys. They only label the bundle index (`inspect` shows them;
//! import places a package file by its digest alone), so a document that cannot be read
//! names nothing, and a name that is not a plain relative path is not used.

use std::collections::HashMap;

use airlock_config::Format;
use airlock_types::Digest;
use serde::Deserialize;

/// A name longer than this is not used.
const MAX_NAME: usize = 512;

/// Adds to `names` the package files the document stored under `key` (a proxy's file row
/// key) names, with their sha256; at most `limit` bytes of decompressed metadata are read.
pub(super) fn names_in(
    format: Format,
    key: &str,
    bytes: &[u8],
    limit: u64,
    names: &mut HashMap<Digest, String>,
) {
    let (path, representation) = key.split_once('#').unwrap_or((key, ""));
    let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let under = |name: &str| {
        if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        }
    };
    match format {
        Format::Yum if path.ends_with("repodata/repomd.xml") => {
            let root = path.strip_suffix("repodata/repomd.xml").unwrap_or_default();
            if let Ok(repomd) = airlock_yum::Repomd::parse(bytes) {
                for entry in repomd.entries.iter().filter(|e| e.base.is_none()) {
                    if let Some(checksum) = entry.checksum.as_ref().filter(|c| c.kind == "sha256") {
                        insert(names, &checksum.hex, format!("{root}{}", entry.href));
                    }
                }
            }
        }
        Format::Yum if path.contains("primary.xml") => {
            // The repository root is the directory above `repodata/`.
            let _ = airlock_yum::read_primary::<airlock_yum::RepodataError>(
                path,
                bytes,
                limit,
                airlock_yum::Detail::Locations,
                |package| {
                    if let (Some(checksum), Some(href), None) =
                        (&package.checksum, &package.href, &package.base)
                        && checksum.kind == "sha256"
                    {
                        let root = dir.strip_suffix("repodata").unwrap_or(dir);
                        insert(names, &checksum.hex, format!("{root}{href}"));
                    }
                    Ok(())
                },
            );
        }
        Format::Pypi if representation == "json" => {
            #[derive(Deserialize)]
            struct Page {
                #[serde(default)]
                files: Vec<File>,
            }
            #[derive(Deserialize)]
            struct File {
                filename: String,
                #[serde(default)]
                hashes: HashMap<String, String>,
                /// PEP 658/714: the file's metadata, served at `<file>.metadata`.
                #[serde(default, rename = "core-metadata")]
                metadata: Option<serde_json::Value>,
            }
            if let Ok(page) = serde_json::from_slice::<Page>(bytes) {
                for file in page.files {
                    if let Some(hex) = file.hashes.get("sha256") {
                        insert(names, hex, under(&file.filename));
                    }
                    let metadata = file.metadata.as_ref().and_then(|m| m.get("sha256"));
                    if let Some(hex) = metadata.and_then(serde_json::Value::as_str) {
                        insert(names, hex, under(&format!("{}.metadata", file.filename)));
                    }
                }
            }
        }
        Format::Conda if path.ends_with("repodata.json") => {
            #[derive(Deserialize)]
            struct Repodata {
                #[serde(default)]
                packages: HashMap<String, Record>,
                #[serde(default, rename = "packages.conda")]
                conda: HashMap<String, Record>,
            }
            #[derive(Deserialize)]
            struct Record {
                sha256: Option<String>,
            }
            if let Ok(repodata) = serde_json::from_slice::<Repodata>(bytes) {
                for (file, record) in repodata.packages.iter().chain(&repodata.conda) {
                    if let Some(hex) = &record.sha256 {
                        insert(names, hex, under(file));
                    }
                }
            }
        }
        _ => {}
    }
}

/// Records `name` for the digest `hex` unless it has one, or either is not usable.
fn insert(names: &mut HashMap<Digest, String>, hex: &str, name: String) {
    if let Ok(digest) = Digest::sha256_hex(&hex.to_ascii_lowercase())
        && plain(&name)
    {
        names.entry(digest).or_insert(name);
    }
}

/// A relative path of plain segments: no `.`/`..`, no empty segment, no `#`, `\` or
/// control character, not too long.
fn plain(name: &str) -> bool {
    name.len() <= MAX_NAME
        && !name.starts_with('/')
        && !name.contains(['#', '\\'])
        && !name.chars().any(char::is_control)
        && name
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(format: Format, key: &str, bytes: &[u8]) -> Vec<(Digest, String)> {
        let mut names = HashMap::new();
        names_in(format, key, bytes, 1 << 20, &mut names);
        let mut names: Vec<_> = names.into_iter().collect();
        names.sort_by(|a, b| a.1.cmp(&b.1));
        names
    }

    #[test]
    fn each_format_names_its_files_and_hostile_names_are_dropped() {
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let page = format!(
            r#"{{"files": [{{"filename": "alpha-1.0-py3-none-any.whl", "hashes": {{"sha256": "{}"}}}},
                {{"filename": "../../etc/passwd", "hashes": {{"sha256": "{}"}}}},
                {{"filename": "beta.tar.gz", "hashes": {{"md5": "x"}}}}]}}"#,
            a.hex(),
            b.hex()
        );
        assert_eq!(
            named(Format::Pypi, "simple/alpha/#json", page.as_bytes()),
            [(
                a.clone(),
                "simple/alpha/alpha-1.0-py3-none-any.whl".to_owned()
            )]
        );
        assert!(named(Format::Pypi, "simple/alpha/#html", page.as_bytes()).is_empty());

        let repodata = format!(
            r#"{{"packages": {{"x-1-0.tar.bz2": {{"sha256": "{}"}}}}, "packages.conda": {{"y-1-0.conda": {{"sha256": "{}"}}, "z.conda": {{}}}}}}"#,
            a.hex(),
            c.hex()
        );
        assert_eq!(
            named(Format::Conda, "linux-64/repodata.json", repodata.as_bytes()),
            [
                (a.clone(), "linux-64/x-1-0.tar.bz2".to_owned()),
                (c.clone(), "linux-64/y-1-0.conda".to_owned())
            ]
        );

        let primary = format!(
            r#"<?xml version="1.0"?><metadata xmlns="http://linux.duke.edu/metadata/common" packages="2">
<package type="rpm"><name>a</name><arch>noarch</arch><version epoch="0" ver="1" rel="1"/><checksum type="sha256" pkgid="YES">{}</checksum><location href="Packages/a-1-1.noarch.rpm"/></package>
<package type="rpm"><name>b</name><arch>noarch</arch><version epoch="0" ver="1" rel="1"/><checksum type="sha256" pkgid="YES">{}</checksum><location href="../b.rpm"/></package>
</metadata>"#,
            a.hex(),
            b.hex()
        );
        assert_eq!(
            named(
                Format::Yum,
                "el9/repodata/abc-primary.xml",
                primary.as_bytes()
            ),
            [(a, "el9/Packages/a-1-1.noarch.rpm".to_owned())]
        );
        assert!(named(Format::Yum, "el9/repodata/abc-primary.xml", b"<not xml").is_empty());
        assert!(named(Format::Helm, "index.yaml", b"x").is_empty());
    }
}
