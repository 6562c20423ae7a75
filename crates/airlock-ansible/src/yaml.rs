//! YAML as Ansible's loader sees it, with a line and column on every node.
//!
//! Built from `yaml-rust2` events rather than its `Yaml` tree because the tree drops both the
//! positions (needed for `file:line` reports) and the tags (needed for `!vault |`). Plain
//! scalars keep their text; their meaning (`yes` is a boolean in YAML 1.1, as in `PyYAML`) is
//! decided by the accessor that reads them. Anchors, aliases and `<<` merge keys work; depth
//! ([`MAX_DEPTH`]) and alias expansion (at most [`MAX_NODES`] nodes and [`MAX_TEXT`] bytes of
//! scalar text, every alias counted as the copy it becomes) are bounded so hostile input
//! cannot exhaust the stack or memory.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Collections nested in one another.
pub const MAX_DEPTH: usize = 128;
/// Nodes in a document, aliases expanded.
pub const MAX_NODES: usize = 1_000_000;
/// Bytes of scalar text in a document, aliases expanded: an alias of a long string copies
/// it, so a node count alone would let a small file hold gigabytes.
pub const MAX_TEXT: usize = 64 * 1024 * 1024;

/// Which file a node was read from: an index into the caller's list of files (an inventory
/// numbers its own file 0 and each `group_vars/`/`host_vars/` file after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FileId(pub u32);

/// A 1-based position in the source, and the file it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
    pub file: FileId,
}

impl Mark {
    /// Line `line`, column 1, of `file`.
    pub fn line_of(file: FileId, line: usize) -> Self {
        Self { line, col: 1, file }
    }

    fn from_marker(m: Marker, file: FileId) -> Self {
        Self {
            line: m.line(),
            col: m.col() + 1,
            file,
        }
    }
}

/// A YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub mark: Mark,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A scalar; `plain` is false when quoted, block-styled or explicitly tagged as a string.
    Scalar {
        text: String,
        plain: bool,
    },
    /// A `!vault` value: the envelope text.
    Vault(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax error, or input that was refused as too deep or too large.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {message}", file.display(), mark.line, mark.col)]
pub struct YamlError {
    pub file: PathBuf,
    pub mark: Mark,
    pub message: String,
}

/// A parsed YAML document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub file: PathBuf,
    pub root: Node,
}

impl Document {
    /// The value of `key` when the root is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.root.get(key)
    }
}

/// Parse the first document of `text`; `file` names it in errors.
pub fn parse_str(text: &str, file: &Path) -> Result<Document, YamlError> {
    parse_file(text, file, FileId::default())
}

/// [`parse_str`], with every node's [`Mark`] naming `id`.
pub fn parse_file(text: &str, file: &Path, id: FileId) -> Result<Document, YamlError> {
    let mut builder = Builder {
        file: id,
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(text);
    let failure = |mark: Mark, message: String| YamlError {
        file: file.to_owned(),
        mark,
        message,
    };
    if let Err(e) = parser.load(&mut builder, false) {
        return Err(failure(
            Mark::from_marker(*e.marker(), id),
            e.info().to_owned(),
        ));
    }
    if let Some((mark, message)) = builder.error {
        return Err(failure(mark, message));
    }
    let root = builder.root.unwrap_or(Node {
        kind: Kind::Scalar {
            text: String::new(),
            plain: true,
        },
        mark: Mark::line_of(id, 1),
    });
    Ok(Document {
        file: file.to_owned(),
        root,
    })
}

impl Node {
    /// True for `~`, `null`, an empty value, or a plain scalar that YAML reads as null.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The scalar text (not for vault values, sequences, mappings or nulls).
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } if !self.is_null() => Some(text),
            _ => None,
        }
    }

    /// A boolean the way `PyYAML` (YAML 1.1) reads plain scalars: `true`, `yes`, `on`, … .
    pub fn as_bool(&self) -> Option<bool> {
        let Kind::Scalar { text, plain: true } = &self.kind else {
            return None;
        };
        match text.as_str() {
            "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => {
                Some(true)
            }
            "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n"
            | "N" => Some(false),
            _ => None,
        }
    }

    /// The envelope text of a `!vault` value.
    pub fn vault_text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Vault(text) => Some(text),
            _ => None,
        }
    }

    /// Entries of a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// Items of a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The value of `key` in a mapping; the last one wins when a key repeats, as in `PyYAML`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// True when both hold the same value, wherever and however they were written (marks and
    /// quoting are ignored): how `-e` values are compared with the files they override.
    pub fn same_value(&self, other: &Node) -> bool {
        match (&self.kind, &other.kind) {
            _ if self.is_null() || other.is_null() => self.is_null() && other.is_null(),
            (Kind::Scalar { text: a, .. }, Kind::Scalar { text: b, .. })
            | (Kind::Vault(a), Kind::Vault(b)) => a == b,
            (Kind::Seq(a), Kind::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_value(y))
            }
            (Kind::Map(a), Kind::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka.same_value(kb) && va.same_value(vb))
            }
            _ => false,
        }
    }

    /// A short name for the node's shape, for error messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "an empty value",
            Kind::Scalar { .. } => "a scalar",
            Kind::Vault(_) => "a !vault value",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// Nodes and bytes of scalar text, this one and all below it.
    fn size(&self) -> Size {
        match &self.kind {
            Kind::Scalar { text, .. } | Kind::Vault(text) => Size {
                nodes: 1,
                text: text.len(),
            },
            Kind::Seq(items) => items.iter().map(Node::size).fold(Size::ONE, Size::add),
            Kind::Map(entries) => entries
                .iter()
                .flat_map(|(k, v)| [k.size(), v.size()])
                .fold(Size::ONE, Size::add),
        }
    }
}

/// What a node costs to hold: [`MAX_NODES`] and [`MAX_TEXT`] bound a document's.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    text: usize,
}

impl Size {
    const ONE: Self = Self { nodes: 1, text: 0 };

    fn add(self, other: Self) -> Self {
        Self {
            nodes: self.nodes.saturating_add(other.nodes),
            text: self.text.saturating_add(other.text),
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Scalar { text, .. } => f.write_str(text),
            Kind::Vault(_) => f.write_str("<vault>"),
            Kind::Seq(_) => f.write_str("<list>"),
            Kind::Map(_) => f.write_str("<mapping>"),
        }
    }
}

enum Frame {
    Seq {
        mark: Mark,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        mark: Mark,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

#[derive(Default)]
struct Builder {
    file: FileId,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, Size)>,
    root: Option<Node>,
    size: Size,
    error: Option<(Mark, String)>,
}

impl Builder {
    fn fail(&mut self, mark: Mark, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some((mark, message.into()));
        }
    }

    fn count(&mut self, mark: Mark, size: Size) -> bool {
        self.size = self.size.add(size);
        if self.size.nodes > MAX_NODES {
            self.fail(
                mark,
                format!("document expands to more than {MAX_NODES} nodes (alias bomb?)"),
            );
            return false;
        }
        if self.size.text > MAX_TEXT {
            self.fail(
                mark,
                format!("document expands to more than {MAX_TEXT} bytes of text (alias bomb?)"),
            );
            return false;
        }
        true
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            let size = node.size();
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }

    fn open(&mut self, frame: Frame, mark: Mark) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(mark, format!("nesting deeper than {MAX_DEPTH} levels"));
        } else {
            self.stack.push(frame);
        }
    }
}

fn is_vault_tag(tag: Option<&Tag>) -> bool {
    tag.is_some_and(|t| t.handle == "!" && t.suffix == "vault")
}

/// Apply `<<` merge keys: entries of the merged mapping(s) fill in keys not set explicitly.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    let is_merge = |k: &Node| matches!(&k.kind, Kind::Scalar { text, plain: true } if text == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return entries;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| is_merge(k));
    for (_, value) in merges {
        let sources: Vec<Node> = match value.kind {
            Kind::Map(_) => vec![value],
            Kind::Seq(items) => items,
            _ => Vec::new(),
        };
        for source in sources {
            if let Kind::Map(inherited) = source.kind {
                for (k, v) in inherited {
                    if !own.iter().any(|(o, _)| o.as_str() == k.as_str()) {
                        own.push((k, v));
                    }
                }
            }
        }
    }
    own
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        if self.error.is_some() {
            return;
        }
        let mark = Mark::from_marker(marker, self.file);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let size = Size {
                    nodes: 1,
                    text: text.len(),
                };
                if !self.count(mark, size) {
                    return;
                }
                let kind = if is_vault_tag(tag.as_ref()) {
                    Kind::Vault(text)
                } else {
                    let plain = style == TScalarStyle::Plain && tag.is_none();
                    Kind::Scalar { text, plain }
                };
                self.finish(Node { kind, mark }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                if self.count(mark, Size::ONE) {
                    self.open(
                        Frame::Seq {
                            mark,
                            anchor,
                            items: Vec::new(),
                        },
                        mark,
                    );
                }
            }
            Event::MappingStart(anchor, _) => {
                if self.count(mark, Size::ONE) {
                    self.open(
                        Frame::Map {
                            mark,
                            anchor,
                            entries: Vec::new(),
                            key: None,
                        },
                        mark,
                    );
                }
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    mark,
                    anchor,
                    items,
                }) => self.finish(
                    Node {
                        kind: Kind::Seq(items),
                        mark,
                    },
                    anchor,
                ),
                Some(Frame::Map {
                    mark,
                    anchor,
                    entries,
                    ..
                }) => self.finish(
                    Node {
                        kind: Kind::Map(merge_keys(entries)),
                        mark,
                    },
                    anchor,
                ),
                None => self.fail(mark, "unbalanced end of collection"),
            },
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some((node, size)) => {
                    if self.count(mark, size) {
                        self.finish(Node { mark, ..node }, 0);
                    }
                }
                None => self.fail(mark, "alias refers to an unknown anchor"),
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Node {
        parse_str(text, Path::new("t.yaml")).unwrap().root
    }

    #[test]
    fn marks_are_one_based_lines_and_columns() {
        let root = parse("a: 1\nb:\n  c: x\n");
        let c = root.get("b").unwrap().get("c").unwrap();
        assert_eq!((c.mark.line, c.mark.col), (3, 6));
        assert_eq!(root.get("a").unwrap().mark.line, 1);
    }

    #[test]
    fn vault_tag_keeps_the_envelope_text() {
        let root = parse("k: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n");
        let v = root.get("k").unwrap();
        assert_eq!(v.vault_text(), Some("$ANSIBLE_VAULT;1.1;AES256\n6162\n"));
        // Block scalars start on the line after their indicator.
        assert_eq!(v.mark.line, 2);
    }

    #[test]
    fn yaml_1_1_booleans_only_when_plain() {
        let root = parse("a: yes\nb: 'yes'\nc: Off\nd: maybe\n");
        assert_eq!(root.get("a").unwrap().as_bool(), Some(true));
        assert_eq!(root.get("b").unwrap().as_bool(), None);
        assert_eq!(root.get("c").unwrap().as_bool(), Some(false));
        assert_eq!(root.get("d").unwrap().as_bool(), None);
    }

    #[test]
    fn nulls_and_quoted_empties() {
        let root = parse("a:\nb: ~\nc: ''\n");
        assert!(root.get("a").unwrap().is_null());
        assert!(root.get("b").unwrap().is_null());
        assert_eq!(root.get("c").unwrap().as_str(), Some(""));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let root = parse("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n");
        let used = root.get("use").unwrap();
        assert_eq!(used.get("x").unwrap().as_str(), Some("1"));
        assert_eq!(used.get("y").unwrap().as_str(), Some("3"));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse_str("a: [1, 2\nb: 3\n", Path::new("inv.yaml")).unwrap_err();
        assert!(err.to_string().starts_with("inv.yaml:"), "{err}");
        assert!(err.mark.line >= 1);
    }

    #[test]
    fn a_long_string_aliased_many_times_is_refused() {
        // Regression: each alias counted as one node whatever it copied, so 64 KiB of text
        // aliased 4,096 times (about 80 KB of YAML) expanded to 256 MiB.
        let mut text = format!("a: &a \"{}\"\nl: [", "x".repeat(64 * 1024));
        text.push_str(&vec!["*a"; 4096].join(", "));
        text.push_str("]\n");
        let err = parse_str(&text, Path::new("b")).unwrap_err();
        assert!(err.message.contains("bytes of text"), "{err}");
        // Within the bound, aliases of strings still work.
        let small = "a: &a \"xyz\"\nl: [*a, *a]\n";
        assert!(parse_str(small, Path::new("s")).is_ok());
    }

    #[test]
    fn depth_and_alias_bombs_are_refused() {
        use std::fmt::Write as _;
        let deep = "[".repeat(500);
        assert!(parse_str(&deep, Path::new("d")).is_err());
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_owned()
            } else {
                format!("l{}", i - 1)
            };
            let refs = vec![format!("*{prev}"); 10].join(", ");
            writeln!(bomb, "l{i}: &l{i} [{refs}]").unwrap();
        }
        let err = parse_str(&bomb, Path::new("b")).unwrap_err();
        assert!(err.message.contains("alias bomb"), "{err}");
    }
}
