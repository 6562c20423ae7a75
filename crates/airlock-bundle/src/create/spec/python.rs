//! The Python lock a spec's `python.requirements` names: what `pip install
//! --require-hashes` accepts (every requirement `==`-pinned, every one with `--hash`), or a
//! PEP 751 `pylock.toml`.
//!
//! Requirements files are read strictly: `name==version` (extras and an environment marker
//! allowed, the marker ignored: the bundle carries the pin for every environment), then
//! `--hash=sha256:HEX` options; `\` continues a line, `#` after whitespace starts a comment.
//! Anything pip would take from elsewhere (`-r`, `-c`, `-e`, index options, direct URLs,
//! local paths) is refused by name: the bundle carries only what an index page lists.
//!
//! In a `pylock.toml`, each `[[packages]]` entry needs `name`, `version` and `wheels` or
//! `sdist` files with `hashes.sha256`; entries from `vcs`, `directory` or `archive` are
//! refused. The same name may appear with several versions (a lock for several
//! environments); each becomes its own pin.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use airlock_types::Digest;
use serde::Deserialize;

use super::SpecError;

/// A requirements file or lock larger than this is not one.
const FILE_LIMIT: usize = 16 * 1024 * 1024;
/// A logical requirements line (continuations joined) longer than this is refused: a
/// requirement with a hundred wheels' hashes is under 10 KiB.
const LINE_LIMIT: usize = 256 * 1024;

/// One pinned project version and the sha256 of every file the lock accepts for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// As written in the lock.
    pub name: String,
    /// The PEP 503 normalized name that index pages are found under.
    pub project: String,
    pub version: String,
    /// At least one; in the order written, without repeats.
    pub sha256: Vec<Digest>,
    /// Where the pin is written (1-based).
    pub line: usize,
}

/// Reads the lock at `path`: a `pylock.toml` (by its name, as PEP 751 names them), else a
/// requirements file.
pub fn load(path: &Path) -> Result<Vec<Pin>, SpecError> {
    let fail = |line: usize, message: String| SpecError {
        file: path.display().to_string(),
        line,
        message,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| fail(0, format!("cannot read the Python lock: {e}")))?
        .len();
    if size > FILE_LIMIT as u64 {
        return Err(fail(
            0,
            format!("the Python lock is {size} bytes, more than a lock can be ({FILE_LIMIT})"),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(0, format!("cannot read the Python lock: {e}")))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let pins = if is_pylock(name) {
        parse_pylock(&text)
    } else {
        parse_requirements(&text)
    }
    .map_err(|(line, message)| fail(line, message))?;
    if pins.is_empty() {
        return Err(fail(0, "the Python lock pins no package".to_owned()));
    }
    Ok(pins)
}

/// `pylock.toml` or `pylock.<name>.toml` (PEP 751).
fn is_pylock(file_name: &str) -> bool {
    file_name == "pylock.toml"
        || file_name
            .strip_prefix("pylock.")
            .and_then(|rest| rest.strip_suffix(".toml"))
            .is_some_and(|middle| !middle.is_empty() && !middle.contains('.'))
}

/// A failure at a 1-based line.
type Failure = (usize, String);

/// Parses a requirements file as `pip install --require-hashes` reads it.
pub fn parse_requirements(text: &str) -> Result<Vec<Pin>, Failure> {
    let mut pins: Vec<Pin> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut logical = String::new();
    let mut start = 0;
    for (index, physical) in text.lines().enumerate() {
        let number = index + 1;
        if logical.is_empty() {
            start = number;
        }
        let (body, continued) = match physical.strip_suffix('\\') {
            Some(body) => (body, true),
            None => (physical, false),
        };
        // A comment ends the logical line's text, continuation or not (as pip reads it).
        let body = strip_comment(body);
        if logical.len() + body.len() > LINE_LIMIT {
            return Err((
                start,
                format!("a requirement longer than {LINE_LIMIT} bytes is not one"),
            ));
        }
        logical.push_str(body);
        logical.push(' ');
        if continued {
            continue;
        }
        let line = std::mem::take(&mut logical);
        let Some(pin) = requirement(line.trim()).map_err(|m| (start, m))? else {
            continue;
        };
        let project = pin.project.clone();
        if let Some(first) = seen.get(&project) {
            return Err((
                start,
                format!(
                    "`{}` is required twice (first on line {first}): pin each project once",
                    pin.name
                ),
            ));
        }
        seen.insert(project, start);
        pins.push(Pin { line: start, ..pin });
    }
    if !logical.trim().is_empty() {
        return Err((start, "the file ends inside a `\\` continuation".to_owned()));
    }
    Ok(pins)
}

/// `text` up to a `#` that starts the line or follows whitespace.
fn strip_comment(text: &str) -> &str {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &text[..i];
        }
    }
    text
}

/// One logical line: `None` when blank.
fn requirement(line: &str) -> Result<Option<Pin>, String> {
    if line.is_empty() {
        return Ok(None);
    }
    if line.starts_with('-') {
        let option = line.split([' ', '=', '\t']).next().unwrap_or(line);
        return Err(match option {
            "-r" | "--requirement" | "-c" | "--constraint" => format!(
                "`{option}` is not supported: list every requirement, pinned and hashed, in this one file"
            ),
            "-e" | "--editable" => format!(
                "`{option}` (editable installs) cannot be carried: pin a released version with its hashes"
            ),
            "-i" | "--index-url" | "--extra-index-url" | "-f" | "--find-links" | "--no-index" => {
                format!("`{option}` is not supported: packages come through the spec's PyPI proxy")
            }
            "--hash" => "`--hash` must follow a requirement on the same line".to_owned(),
            _ => format!(
                "option `{option}` is not supported in a bundle's requirements (only `--hash` after a pinned requirement)"
            ),
        });
    }
    // The requirement runs up to the first option.
    let bytes = line.as_bytes();
    let option_at =
        (1..bytes.len()).find(|&i| bytes[i] == b'-' && bytes[i - 1].is_ascii_whitespace());
    let (requirement, options) = line.split_at(option_at.unwrap_or(line.len()));
    let mut pin = pinned(requirement.trim())?;
    let mut tokens = options.split_whitespace();
    while let Some(token) = tokens.next() {
        let value = if let Some(value) = token.strip_prefix("--hash=") {
            value
        } else if token == "--hash" {
            tokens
                .next()
                .ok_or("`--hash` needs a value: --hash=sha256:HEX")?
        } else {
            let option = token.split('=').next().unwrap_or(token);
            return Err(format!(
                "option `{option}` is not supported after a requirement (only `--hash`)"
            ));
        };
        let digest = sha256(value)?;
        if !pin.sha256.contains(&digest) {
            pin.sha256.push(digest);
        }
    }
    if pin.sha256.is_empty() {
        return Err(format!(
            "`{}=={}` has no `--hash=sha256:…`: pip install --require-hashes needs a hash on every requirement (pip-compile --generate-hashes or uv pip compile --generate-hashes writes them)",
            pin.name, pin.version
        ));
    }
    Ok(Some(pin))
}

/// `sha256:HEX`.
fn sha256(value: &str) -> Result<Digest, String> {
    let (algorithm, hex) = value
        .split_once(':')
        .ok_or_else(|| format!("hash {value:?} is not ALGORITHM:HEX"))?;
    if algorithm != "sha256" {
        return Err(format!(
            "hash {value:?}: only sha256 is supported (the hash index pages give)"
        ));
    }
    Digest::sha256_hex(hex)
        .map_err(|_| format!("hash {value:?} is not sha256: and 64 lowercase hex digits"))
}

/// `name[extras]==version ; marker` into a pin with no hashes yet.
fn pinned(requirement: &str) -> Result<Pin, String> {
    let spec = requirement
        .split_once(';')
        .map_or(requirement, |(spec, _marker)| spec)
        .trim();
    if spec.contains("://") || spec.contains(" @") || spec.contains("@ ") {
        return Err(format!(
            "{spec:?}: direct URLs cannot be carried: pin NAME==VERSION from the index"
        ));
    }
    let name_end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(spec.len());
    let name = &spec[..name_end];
    let project = airlock_types::pypi::normalize(name).map_err(|_| {
        format!("{spec:?} is not a requirement (NAME==VERSION); local paths cannot be carried")
    })?;
    let mut rest = spec[name_end..].trim_start();
    if let Some(extras) = rest.strip_prefix('[') {
        let close = extras
            .find(']')
            .ok_or_else(|| format!("{spec:?}: unclosed `[` of extras"))?;
        rest = extras[close + 1..].trim_start();
    }
    let unpinned = || {
        format!(
            "`{name}` is not pinned with `==`: pip install --require-hashes needs NAME==VERSION"
        )
    };
    let version = rest.strip_prefix("==").ok_or_else(unpinned)?.trim();
    if version.starts_with('=') {
        return Err(format!(
            "`{name}===…` (arbitrary equality) is not supported: pin with `==`"
        ));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '!' | '_' | '-');
    if version.is_empty() || !version.chars().all(valid) {
        return Err(if version.contains('*') || version.contains(',') {
            unpinned()
        } else {
            format!("`{name}=={version}`: {version:?} is not a version")
        });
    }
    Ok(Pin {
        name: name.to_owned(),
        project,
        version: version.to_owned(),
        sha256: Vec::new(),
        line: 0,
    })
}

#[derive(Deserialize)]
struct Lock {
    #[serde(rename = "lock-version")]
    lock_version: Option<toml::Spanned<String>>,
    #[serde(default)]
    packages: Vec<toml::Spanned<LockedPackage>>,
}

#[derive(Deserialize)]
struct LockedPackage {
    name: Option<String>,
    version: Option<String>,
    #[serde(default)]
    wheels: Vec<LockedFile>,
    sdist: Option<LockedFile>,
    vcs: Option<toml::Value>,
    directory: Option<toml::Value>,
    archive: Option<toml::Value>,
}

#[derive(Deserialize)]
struct LockedFile {
    name: Option<String>,
    url: Option<String>,
    path: Option<String>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

/// Parses a PEP 751 `pylock.toml`.
pub fn parse_pylock(text: &str) -> Result<Vec<Pin>, Failure> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let lock: Lock = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |span| line_of(span.start));
        (line, format!("not a pylock.toml: {}", e.message()))
    })?;
    match &lock.lock_version {
        None => return Err((1, "no `lock-version`: not a pylock.toml".to_owned())),
        Some(version) if version.get_ref().split('.').next() != Some("1") => {
            return Err((
                line_of(version.span().start),
                format!(
                    "lock-version {:?} is not one airlock reads (1.x)",
                    version.get_ref()
                ),
            ));
        }
        Some(_) => {}
    }
    let mut pins: Vec<Pin> = Vec::new();
    for spanned in &lock.packages {
        let line = line_of(spanned.span().start);
        let package = spanned.get_ref();
        let name = package
            .name
            .as_deref()
            .ok_or((line, "a package without `name`".to_owned()))?;
        if package.vcs.is_some() || package.directory.is_some() || package.archive.is_some() {
            return Err((
                line,
                format!(
                    "`{name}` comes from a VCS, directory or archive: only packages from an index can be carried"
                ),
            ));
        }
        let version = package.version.as_deref().ok_or((
            line,
            format!("`{name}` has no `version`: every package must be pinned"),
        ))?;
        let mut pin = pinned(&format!("{name}=={version}")).map_err(|m| (line, m))?;
        let files = package.wheels.iter().chain(package.sdist.as_ref());
        for file in files {
            let what = file
                .name
                .as_deref()
                .or(file.url.as_deref())
                .or(file.path.as_deref())
                .unwrap_or("a file");
            let hex = file.hashes.get("sha256").ok_or((
                line,
                format!("`{name}` {version}: {what} has no hashes.sha256"),
            ))?;
            let digest = Digest::sha256_hex(hex).map_err(|_| {
                (
                    line,
                    format!(
                        "`{name}` {version}: {what}: sha256 {hex:?} is not 64 lowercase hex digits"
                    ),
                )
            })?;
            if !pin.sha256.contains(&digest) {
                pin.sha256.push(digest);
            }
        }
        if pin.sha256.is_empty() {
            return Err((
                line,
                format!("`{name}` {version} lists no wheels or sdist: nothing to carry"),
            ));
        }
        pin.line = line;
        // The same version twice (per-environment entries): one pin with every hash.
        if let Some(same) = pins
            .iter_mut()
            .find(|p| p.project == pin.project && p.version == pin.version)
        {
            for digest in pin.sha256 {
                if !same.sha256.contains(&digest) {
                    same.sha256.push(digest);
                }
            }
        } else {
            pins.push(pin);
        }
    }
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn reads_pinned_hashed_requirements() {
        let (a, b, c) = (hex('a'), hex('b'), hex('c'));
        let text = format!(
            "# locked\n\nRequests[socks]==2.31.0 ; python_version >= \"3.8\" \\\n    --hash=sha256:{a} \\\n    --hash sha256:{b}  # both wheels\nzope.interface == 6.0 --hash=sha256:{c} --hash=sha256:{c}\n"
        );
        let pins = parse_requirements(&text).unwrap();
        assert_eq!(pins.len(), 2);
        assert_eq!(pins[0].name, "Requests");
        assert_eq!(pins[0].project, "requests");
        assert_eq!(pins[0].version, "2.31.0");
        assert_eq!(pins[0].line, 3);
        assert_eq!(
            pins[0].sha256.iter().map(Digest::hex).collect::<Vec<_>>(),
            [a.as_str(), b.as_str()]
        );
        assert_eq!(pins[1].project, "zope-interface");
        assert_eq!(pins[1].line, 6);
        assert_eq!(pins[1].sha256.len(), 1, "repeats are dropped");
    }

    #[test]
    fn refuses_what_pip_require_hashes_would_not_take_or_a_bundle_cannot_carry() {
        let h = format!("--hash=sha256:{}", hex('a'));
        let huge = format!("x==1 {}\n", h.repeat(LINE_LIMIT / h.len() + 1));
        for (text, line, expected) in [
            ("requests\n".to_owned(), 1, "not pinned with `==`"),
            (format!("requests>=2 {h}\n"), 1, "not pinned with `==`"),
            (format!("requests==2.*  {h}\n"), 1, "not pinned with `==`"),
            (format!("requests===2 {h}\n"), 1, "arbitrary equality"),
            (
                "\nrequests==2.31.0\n".to_owned(),
                2,
                "has no `--hash=sha256:",
            ),
            (
                "requests==2 --hash=sha256:ABC\n".to_owned(),
                1,
                "64 lowercase hex",
            ),
            (
                format!("requests==2 --hash=sha256:{}\n", hex('A')),
                1,
                "64 lowercase hex",
            ),
            (
                format!("requests==2 --hash=md5:{}\n", "a".repeat(32)),
                1,
                "only sha256",
            ),
            (
                format!("a==1 {h}\nb==1 {h}\nA==2 {h}\n"),
                3,
                "required twice (first on line 1)",
            ),
            (huge, 1, "longer than"),
            (
                "-e git+https://example.invalid/x#egg=x\n".to_owned(),
                1,
                "editable",
            ),
            ("-r other.txt\n".to_owned(), 1, "`-r` is not supported"),
            (
                "--index-url https://example.invalid/simple\n".to_owned(),
                1,
                "through the spec's PyPI proxy",
            ),
            (format!("--hash=sha256:{}\n", hex('a')), 1, "must follow"),
            (
                format!("x @ https://example.invalid/x-1.whl {h}\n"),
                1,
                "direct URLs",
            ),
            (
                format!("https://example.invalid/x-1.whl {h}\n"),
                1,
                "direct URLs",
            ),
            (format!("./local/pkg {h}\n"), 1, "local paths"),
            (format!("x==1 --no-deps {h}\n"), 1, "option `--no-deps`"),
            (format!("x==1 {h} \\\n"), 1, "inside a `\\` continuation"),
            ("x==1 --hash\n".to_owned(), 1, "needs a value"),
        ] {
            let (at, message) = parse_requirements(&text).unwrap_err();
            assert!(message.contains(expected), "{text:.80}: {message}");
            assert_eq!(at, line, "{text:.80}: {message}");
        }
    }

    #[test]
    fn reads_a_pylock() {
        let (a, b, c) = (hex('a'), hex('b'), hex('c'));
        let text = format!(
            "lock-version = \"1.0\"\ncreated-by = \"uv\"\n\n[[packages]]\nname = \"attrs\"\nversion = \"25.1.0\"\n\
             [[packages.wheels]]\nname = \"attrs-25.1.0-py3-none-any.whl\"\nurl = \"https://example.invalid/a.whl\"\nhashes = {{sha256 = \"{a}\"}}\n\
             [packages.sdist]\nname = \"attrs-25.1.0.tar.gz\"\nhashes = {{sha256 = \"{b}\", blake2b = \"00\"}}\n\n\
             [[packages]]\nname = \"attrs\"\nversion = \"25.1.0\"\nmarker = \"sys_platform == 'win32'\"\n\
             [[packages.wheels]]\nhashes = {{sha256 = \"{c}\"}}\n"
        );
        let pins = parse_pylock(&text).unwrap();
        assert_eq!(pins.len(), 1, "{pins:?}");
        assert_eq!(pins[0].version, "25.1.0");
        assert_eq!(pins[0].line, 4);
        assert_eq!(pins[0].sha256.len(), 3);
    }

    #[test]
    fn refuses_a_pylock_it_cannot_carry() {
        let a = hex('a');
        let package = |body: &str| format!("lock-version = \"1.0\"\n[[packages]]\n{body}");
        for (text, expected) in [
            ("packages = []\n".to_owned(), "no `lock-version`"),
            (
                "lock-version = \"2.0\"\n".to_owned(),
                "not one airlock reads",
            ),
            ("lock-version = [\n".to_owned(), "not a pylock.toml"),
            (package("version = \"1\"\n"), "without `name`"),
            (package("name = \"x\"\n"), "has no `version`"),
            (
                package("name = \"x\"\nversion = \"1\"\n"),
                "lists no wheels",
            ),
            (
                package("name = \"x\"\nversion = \"1\"\n[packages.vcs]\ntype = \"git\"\n"),
                "VCS, directory or archive",
            ),
            (
                package(&format!(
                    "name = \"x\"\nversion = \"1\"\n[[packages.wheels]]\nname = \"x.whl\"\nhashes = {{sha512 = \"{a}\"}}\n"
                )),
                "x.whl has no hashes.sha256",
            ),
            (
                package(
                    "name = \"x\"\nversion = \"1\"\n[packages.sdist]\nhashes = {sha256 = \"zz\"}\n",
                ),
                "not 64 lowercase hex",
            ),
        ] {
            let (_, message) = parse_pylock(&text).unwrap_err();
            assert!(message.contains(expected), "{text}: {message}");
        }
        let (line, _) = parse_pylock(&package("name = \"x\"\n")).unwrap_err();
        assert_eq!(line, 2);
    }

    #[test]
    fn tells_pylock_files_by_name() {
        assert!(is_pylock("pylock.toml"));
        assert!(is_pylock("pylock.dev.toml"));
        assert!(!is_pylock("pylock..toml"));
        assert!(!is_pylock("requirements.txt"));
        assert!(!is_pylock("pylock.a.b.toml"));
    }
}
