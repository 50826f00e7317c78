//! Phase 1: YAML text → a span-carrying tree of our own.
//!
//! This phase knows nothing about jobs: it only enforces the YAML-level rules (syntax,
//! strict booleans, one document) and the resource budgets that keep alias bombs and
//! absurd nesting from costing more than milliseconds.
//!
//! # Two readers, one meaning
//! serde-saphyr's `Spanned<T>` visitor gives every value its line and column, but that
//! machinery was most of a large load's time (benches/README.md). So [`parse`] builds
//! the tree straight from the events of granit-parser (the parser serde-saphyr itself
//! uses, with the same options), resolving plain scalars as serde-saphyr does: YAML 1.2
//! core schema, strict booleans (`yes`, `on` stay strings), `0x`/`0o`/`0b` integers in the
//! 64-bit range, other numbers as floats.
//!
//! serde-saphyr ([`saphyr`]) remains the reference. Whenever the event walk is not sure
//! of the answer — a syntax error, a second document, a budget at or near its limit, a
//! tag (`!!str`), a merge key (`<<`), a non-finite float, an alias to a node still being
//! built — the whole file goes through serde-saphyr instead, which gives its friendly,
//! located error message or its exact reading; such a file loads as slowly as before. In
//! unit tests every tree the event walk builds is checked against serde-saphyr's.
//!
//! Duplicate keys are passed through to the tree on purpose: phase 2 reports them with
//! both locations and keeps checking the rest of the file, which serde-saphyr's own
//! duplicate-key error (the first one ends the parse) could not do.

mod plain;
mod saphyr;
#[cfg(test)]
mod tests;
mod walk;

use std::borrow::Cow;

use walk::Builder;

/// Deepest nesting of mappings and sequences accepted. A schedule file needs five. The
/// event walk needs no recursion; the limit keeps serde-saphyr's recursive reading (and
/// a tree's recursive drop) well inside a 2 MiB thread stack (a tokio worker's), even in
/// a debug build.
pub(super) const MAX_DEPTH: usize = 24;
/// Parser events accepted in one file: enough for 100,000 jobs with a dozen keys each.
pub(super) const MAX_EVENTS: usize = 6_000_000;
/// Nodes (scalars, mappings, sequences) accepted in one file.
pub(super) const MAX_NODES: usize = 4_000_000;
/// Events that aliases (`*name`, `<<: *name`) may replay in one file. An alias bomb
/// ("billion laughs") stops here, long before it costs noticeable time or memory.
pub(super) const MAX_REPLAYED_EVENTS: usize = 100_000;

/// One YAML node and where it stands in its file.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Node {
    pub(super) kind: NodeKind,
    /// 1-based line of the node (for an alias: of the alias, where it is used).
    pub(super) line: u64,
    /// 1-based column, in characters.
    pub(super) column: u64,
    /// Byte range of the scalar as written where it is defined, so that `PORT: 0x10`
    /// can be read back as the text `0x10` rather than the number 16.
    raw: Option<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum NodeKind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What kind of value this is, for error messages ("not a list").
    pub(super) fn describe(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "empty (null)",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) | NodeKind::Float(_) => "a number",
            NodeKind::Str(_) => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// The text of a scalar: a string as parsed, a number or boolean exactly as written
    /// in the file. `None` for null, lists and mappings.
    pub(super) fn scalar_text<'a>(&'a self, src: &'a str) -> Option<Cow<'a, str>> {
        let fallback = match &self.kind {
            NodeKind::Str(text) => return Some(Cow::Borrowed(text)),
            NodeKind::Null | NodeKind::Seq(_) | NodeKind::Map(_) => return None,
            NodeKind::Bool(value) => value.to_string(),
            NodeKind::Int(value) => value.to_string(),
            NodeKind::Float(value) => value.to_string(),
        };
        let written = self
            .raw
            .and_then(|(start, len)| src.get(start..start.checked_add(len)?))
            .map(str::trim)
            .filter(|text| !text.is_empty());
        Some(written.map_or(Cow::Owned(fallback), Cow::Borrowed))
    }
}

/// Why a file is not YAML we can read; `line` is 0 when the parser did not say where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyntaxError {
    pub(super) line: u64,
    pub(super) column: u64,
    pub(super) message: String,
}

/// A file's tree, or the news that its `jobs:` mapping is larger than the caller allows.
#[derive(Debug, PartialEq)]
pub(super) enum Parsed {
    Tree(Node),
    /// Parsing stopped at this many entries under `jobs:`, one more than allowed.
    TooManyJobs(usize),
}

/// Parses one file's text into a tree.
#[cfg(test)]
pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let fast = Builder::new(text).run();
    finish(text, fast)
}

/// Parses one file's text into a tree, but stops as soon as the top-level `jobs:`
/// mapping has more than `max_jobs` entries, so that a file far over `--max-jobs` costs
/// a fraction of its parse. The count is a shortcut for plain files only: a file the
/// event walk leaves to serde-saphyr (or whose `jobs:` is an alias) is parsed whole and
/// counted after.
pub(super) fn parse_within(text: &str, max_jobs: usize) -> Result<Parsed, SyntaxError> {
    let mut builder = Builder::new(text);
    builder.max_jobs = max_jobs;
    let fast = builder.run();
    if builder.jobs > max_jobs {
        return Ok(Parsed::TooManyJobs(builder.jobs));
    }
    finish(text, fast).map(Parsed::Tree)
}

/// The event walk's tree, or serde-saphyr's reading when the walk was not sure.
fn finish(text: &str, fast: Option<Node>) -> Result<Node, SyntaxError> {
    // Every tree the event walk builds in the unit tests must be serde-saphyr's.
    #[cfg(test)]
    if let Some(tree) = &fast {
        assert_eq!(Ok(tree), saphyr::parse(text).as_ref(), "for {text:?}");
    }
    match fast {
        Some(tree) => Ok(tree),
        None => saphyr::parse(text),
    }
}

fn too_deep() -> String {
    format!(
        "the YAML is nested more than {MAX_DEPTH} levels deep; a schedule file needs only a \
         few levels — check the indentation and brackets"
    )
}
