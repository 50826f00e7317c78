//! Phase 1: YAML text → a span-carrying tree of our own.
//!
//! This phase knows nothing about jobs: it only enforces the YAML-level rules (syntax,
//! strict booleans, one document) and the resource budgets that keep alias bombs and
//! absurd nesting from costing more than milliseconds.
//!
//! # Two readers, one meaning
//! serde-saphyr's `Spanned<T>` visitor gives every value its line and column, but that
//! machinery cost about 1.4 s per 100,000 jobs — most of a large load. So [`parse`] builds
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

mod saphyr;

use std::borrow::Cow;

use granit_parser::{Event, Parser, ScalarStyle, Span};

/// Deepest nesting of mappings and sequences accepted. A schedule file needs five. The
/// event walk needs no recursion; the limit keeps serde-saphyr's recursive reading (and
/// a tree's recursive drop) well inside a 2 MiB thread stack (a tokio worker's), even in
/// a debug build.
pub(crate) const MAX_DEPTH: usize = 24;
/// Parser events accepted in one file: enough for 100,000 jobs with a dozen keys each.
pub(crate) const MAX_EVENTS: usize = 6_000_000;
/// Nodes (scalars, mappings, sequences) accepted in one file.
pub(crate) const MAX_NODES: usize = 4_000_000;
/// Events that aliases (`*name`, `<<: *name`) may replay in one file. An alias bomb
/// ("billion laughs") stops here, long before it costs noticeable time or memory.
pub(crate) const MAX_REPLAYED_EVENTS: usize = 100_000;

/// One YAML node and where it stands in its file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    /// 1-based line of the node (for an alias: of the alias, where it is used).
    pub(crate) line: u64,
    /// 1-based column, in characters.
    pub(crate) column: u64,
    /// Byte range of the scalar as written where it is defined, so that `PORT: 0x10`
    /// can be read back as the text `0x10` rather than the number 16.
    raw: Option<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeKind {
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
    pub(crate) fn describe(&self) -> &'static str {
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
    pub(crate) fn scalar_text<'a>(&'a self, src: &'a str) -> Option<Cow<'a, str>> {
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
pub(crate) struct SyntaxError {
    pub(crate) line: u64,
    pub(crate) column: u64,
    pub(crate) message: String,
}

/// A file's tree, or the news that its `jobs:` mapping is larger than the caller allows.
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed {
    Tree(Node),
    /// Parsing stopped at this many entries under `jobs:`, one more than allowed.
    TooManyJobs(usize),
}

/// Parses one file's text into a tree.
#[cfg(test)]
pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let fast = Builder::new(text).run();
    finish(text, fast)
}

/// Parses one file's text into a tree, but stops as soon as the top-level `jobs:`
/// mapping has more than `max_jobs` entries, so that a file far over `--max-jobs` costs
/// a fraction of its parse. The count is a shortcut for plain files only: a file the
/// event walk leaves to serde-saphyr (or whose `jobs:` is an alias) is parsed whole and
/// counted after.
pub(crate) fn parse_within(text: &str, max_jobs: usize) -> Result<Parsed, SyntaxError> {
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

/// The granit-parser options serde-saphyr derives from [`saphyr`]'s options, so that
/// both readers accept exactly the same syntax.
fn parser_options() -> granit_parser::Options {
    granit_parser::options! {
        flow_nesting_limit: MAX_DEPTH,
        emit_comments: false,
    }
}

// serde-saphyr's default budgets, besides the ones `saphyr::options` sets. The event walk
// leaves a file to serde-saphyr well before any of them (or ours) could be reached.
const MAX_ALIASES: usize = 50_000;
const MAX_ANCHORS: usize = 50_000;
const MAX_SCALAR_BYTES: usize = 64 << 20;
const MAX_RECORDED_ANCHOR_EVENTS: usize = 1_000_000;
const MAX_RECORDED_ANCHOR_BYTES: usize = 64 << 20;
/// The alias/anchor heuristic: from this many aliases on, more than
/// `ALIAS_ANCHOR_RATIO` aliases per anchor is taken for a bomb.
const ALIAS_ANCHOR_MIN_ALIASES: usize = 100;
const ALIAS_ANCHOR_RATIO: usize = 10;

/// `limit` less a tenth: how close the event walk goes to a budget before it hands the
/// file to serde-saphyr, so that small differences in counting can never matter.
const fn near(limit: usize) -> usize {
    limit - limit / 10
}

/// A node being built: a sequence or a mapping whose end event has not come yet.
struct Frame {
    items: Items,
    line: u64,
    column: u64,
    /// Its anchor id, 0 for none.
    anchor: usize,
    /// Events of the node so far (itself, its children, the events aliases replayed).
    events: usize,
    /// Bytes of scalar text in it so far.
    bytes: usize,
    /// Levels of nesting below it so far.
    height: usize,
}

enum Items {
    Seq(Vec<Node>),
    /// Entries, and the key read whose value has not come yet.
    Map(Vec<(Node, Node)>, Option<Node>),
}

/// A finished anchored node, for its aliases, with the measures they charge.
struct Anchored {
    node: Node,
    events: usize,
    bytes: usize,
    height: usize,
}

/// Builds the tree from parser events, without recursion. `None` from any step means
/// "not sure": the caller then asks serde-saphyr.
struct Builder<'t> {
    text: &'t str,
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Indexed by anchor id; `None` for an id not yet (or not completely) defined.
    anchors: Vec<Option<Anchored>>,
    events: usize,
    nodes: usize,
    scalar_bytes: usize,
    documents: usize,
    aliases: usize,
    anchors_defined: usize,
    replayed_events: usize,
    recorded_events: usize,
    recorded_bytes: usize,
    /// Entries of the top-level `jobs:` mapping so far, and how many may come.
    jobs: usize,
    max_jobs: usize,
}

impl<'t> Builder<'t> {
    fn new(text: &'t str) -> Builder<'t> {
        Builder {
            text,
            stack: Vec::with_capacity(MAX_DEPTH),
            root: None,
            anchors: Vec::new(),
            events: 0,
            nodes: 0,
            scalar_bytes: 0,
            documents: 0,
            aliases: 0,
            anchors_defined: 0,
            replayed_events: 0,
            recorded_events: 0,
            recorded_bytes: 0,
            jobs: 0,
            max_jobs: usize::MAX,
        }
    }

    fn run(&mut self) -> Option<Node> {
        let mut parser = Parser::new_from_str_with_options(self.text, parser_options());
        // Where an empty stream's null stands: serde-saphyr puts it at the stream's end.
        let mut last = (1, 1);
        while let Some(item) = parser.next_event() {
            let (event, span) = item.ok()?;
            self.events += 1;
            if self.events > near(MAX_EVENTS) {
                return None;
            }
            match event {
                Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {
                    last = position(&span);
                }
                Event::DocumentStart(..) => {
                    self.documents += 1;
                    if self.documents > 1 {
                        return None;
                    }
                }
                Event::Scalar(value, style, anchor, tag) => {
                    if tag.is_some() {
                        return None;
                    }
                    self.scalar(value, style, anchor, &span)?;
                }
                Event::SequenceStart(_, anchor, tag) => {
                    if tag.is_some() {
                        return None;
                    }
                    self.start(Items::Seq(Vec::new()), anchor, &span)?;
                }
                Event::MappingStart(_, anchor, tag) => {
                    if tag.is_some() {
                        return None;
                    }
                    self.start(Items::Map(Vec::new(), None), anchor, &span)?;
                }
                Event::SequenceEnd | Event::MappingEnd => self.end()?,
                Event::Alias(id) => self.alias(id, &span)?,
                // Comments, anchor names and unresolved aliases are switched off.
                _ => return None,
            }
        }
        if self.aliases >= near(ALIAS_ANCHOR_MIN_ALIASES)
            && self.aliases > near(ALIAS_ANCHOR_RATIO) * self.anchors_defined
        {
            return None;
        }
        if !self.stack.is_empty() {
            return None;
        }
        Some(self.root.take().unwrap_or(Node {
            kind: NodeKind::Null,
            line: last.0,
            column: last.1,
            raw: None,
        }))
    }

    fn scalar(
        &mut self,
        value: Cow<'_, str>,
        style: ScalarStyle,
        anchor: usize,
        span: &Span,
    ) -> Option<()> {
        self.count_node()?;
        self.scalar_bytes += value.len();
        if self.scalar_bytes > near(MAX_SCALAR_BYTES) || value == "<<" {
            // `<<` may be a merge key, which serde-saphyr expands.
            return None;
        }
        let kind = match style {
            ScalarStyle::Plain => resolve_plain(&value)?,
            _ => NodeKind::Str(value.into_owned()),
        };
        let raw = match kind {
            NodeKind::Bool(_) | NodeKind::Int(_) | NodeKind::Float(_) => byte_range(span),
            _ => None,
        };
        let (line, column) = position(span);
        let node = Node {
            kind,
            line,
            column,
            raw,
        };
        let bytes = value_len(&node);
        if anchor != 0 {
            self.define(
                anchor,
                Anchored {
                    node: node.clone(),
                    events: 1,
                    bytes,
                    height: 0,
                },
            )?;
        }
        self.add(node, 1, bytes, 0)
    }

    fn start(&mut self, items: Items, anchor: usize, span: &Span) -> Option<()> {
        self.count_node()?;
        if self.stack.len() >= MAX_DEPTH {
            return None;
        }
        let (line, column) = position(span);
        self.stack.push(Frame {
            items,
            line,
            column,
            anchor,
            events: 1,
            bytes: 0,
            height: 0,
        });
        Some(())
    }

    fn end(&mut self) -> Option<()> {
        let frame = self.stack.pop()?;
        let kind = match frame.items {
            Items::Seq(items) => NodeKind::Seq(items),
            Items::Map(entries, None) => NodeKind::Map(entries),
            Items::Map(_, Some(_)) => return None,
        };
        let node = Node {
            kind,
            line: frame.line,
            column: frame.column,
            raw: None,
        };
        let (events, height) = (frame.events + 1, frame.height + 1);
        if frame.anchor != 0 {
            self.define(
                frame.anchor,
                Anchored {
                    node: node.clone(),
                    events,
                    bytes: frame.bytes,
                    height,
                },
            )?;
        }
        self.add(node, events, frame.bytes, height)
    }

    /// `*name`: a copy of the anchored node, standing where the alias is — it and
    /// everything in it, as serde-saphyr reports replayed nodes — charged to the budgets.
    fn alias(&mut self, id: usize, span: &Span) -> Option<()> {
        self.aliases += 1;
        // An alias to a node still open (`&a [*a]`) is recursive; serde-saphyr says so.
        let anchored = self.anchors.get(id)?.as_ref()?;
        let (events, bytes, height) = (anchored.events, anchored.bytes, anchored.height);
        self.replayed_events += events;
        self.events += events;
        self.nodes += events;
        self.scalar_bytes += bytes;
        if self.aliases > near(MAX_ALIASES)
            || self.replayed_events > near(MAX_REPLAYED_EVENTS)
            || self.events > near(MAX_EVENTS)
            || self.nodes > near(MAX_NODES)
            || self.scalar_bytes > near(MAX_SCALAR_BYTES)
            || self.stack.len() + height > MAX_DEPTH
        {
            return None;
        }
        let (line, column) = position(span);
        let mut node = anchored.node.clone();
        relocate(&mut node, line, column);
        self.add(node, events, bytes, height)
    }

    fn count_node(&mut self) -> Option<()> {
        self.nodes += 1;
        (self.nodes <= near(MAX_NODES)).then_some(())
    }

    fn define(&mut self, id: usize, anchored: Anchored) -> Option<()> {
        self.anchors_defined += 1;
        // Each event of an anchored node is copied once for every anchor around it.
        self.recorded_events += anchored.events;
        self.recorded_bytes += anchored.bytes;
        if self.anchors_defined > near(MAX_ANCHORS)
            || self.recorded_events > near(MAX_RECORDED_ANCHOR_EVENTS)
            || self.recorded_bytes > near(MAX_RECORDED_ANCHOR_BYTES)
        {
            return None;
        }
        if self.anchors.len() <= id {
            self.anchors.resize_with(id + 1, || None);
        }
        self.anchors[id] = Some(anchored);
        Some(())
    }

    /// Puts a finished node into the one being built, or makes it the root.
    fn add(&mut self, node: Node, events: usize, bytes: usize, height: usize) -> Option<()> {
        if self.is_job_name() {
            self.jobs += 1;
            if self.jobs > self.max_jobs {
                return None;
            }
        }
        let Some(parent) = self.stack.last_mut() else {
            if self.root.is_some() {
                return None;
            }
            self.root = Some(node);
            return Some(());
        };
        parent.events += events;
        parent.bytes += bytes;
        parent.height = parent.height.max(height);
        match &mut parent.items {
            Items::Seq(items) => items.push(node),
            Items::Map(entries, pending) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => *pending = Some(node),
            },
        }
        Some(())
    }

    /// Whether the node about to be added is a key of the mapping under the top-level
    /// `jobs:`, that is, a job's name.
    fn is_job_name(&self) -> bool {
        match self.stack.as_slice() {
            [
                Frame {
                    items: Items::Map(_, Some(key)),
                    ..
                },
                Frame {
                    items: Items::Map(_, None),
                    ..
                },
            ] => matches!(&key.kind, NodeKind::Str(name) if name == "jobs"),
            _ => false,
        }
    }
}

/// 1-based line and column (in characters) of where a span starts.
fn position(span: &Span) -> (u64, u64) {
    (span.start.line() as u64, span.start.col() as u64 + 1)
}

/// The span's byte range as (start, length), as serde-saphyr records it.
fn byte_range(span: &Span) -> Option<(usize, usize)> {
    let start = span.start.byte_offset()?;
    let len = span.end.byte_offset()?.saturating_sub(start);
    (u32::try_from(start).is_ok() && u32::try_from(len).is_ok()).then_some((start, len))
}

/// Bytes of scalar text, for the budgets.
fn value_len(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Str(text) => text.len(),
        _ => node.raw.map_or(0, |(_, len)| len),
    }
}

/// Moves a copied node and everything in it to where its alias stands.
fn relocate(node: &mut Node, line: u64, column: u64) {
    node.line = line;
    node.column = column;
    match &mut node.kind {
        NodeKind::Seq(items) => items
            .iter_mut()
            .for_each(|item| relocate(item, line, column)),
        NodeKind::Map(entries) => entries.iter_mut().for_each(|(key, value)| {
            relocate(key, line, column);
            relocate(value, line, column);
        }),
        _ => {}
    }
}

/// A plain scalar's value, as serde-saphyr reads it into an untyped value with strict
/// booleans. `None` for a non-finite float, which serde-saphyr rejects.
fn resolve_plain(value: &str) -> Option<NodeKind> {
    if matches!(value, "" | "~" | "null" | "Null" | "NULL") {
        return Some(NodeKind::Null);
    }
    let t = value.trim_matches([' ', '\t', '\r', '\n']);
    match t {
        "true" | "True" | "TRUE" => return Some(NodeKind::Bool(true)),
        "false" | "False" | "FALSE" => return Some(NodeKind::Bool(false)),
        _ => {}
    }
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    // `0X1F`, `0O17`, `0B1` and `-.nan` are strings in the core schema.
    if matches!(unsigned.as_bytes(), [b'0', b'X' | b'O' | b'B', ..])
        || matches!(unsigned, ".nan" | ".NaN" | ".NAN") && unsigned.len() < t.len()
    {
        return Some(NodeKind::Str(value.to_owned()));
    }
    let int = match t.strip_prefix('-') {
        // `-07` is not an integer (no leading zeros), but it is a float below.
        Some(digits)
            if digits.len() > 1
                && digits.starts_with('0')
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            None
        }
        Some(digits) => magnitude(digits)
            .and_then(|m| i64::try_from(-i128::try_from(m).ok()?).ok())
            .map(i128::from),
        None => magnitude(t.strip_prefix('+').unwrap_or(t))
            .and_then(|m| u64::try_from(m).ok())
            .map(i128::from),
    };
    if let Some(int) = int {
        return Some(NodeKind::Int(int));
    }
    match float(t) {
        Some(float) if float.is_finite() => Some(NodeKind::Float(float)),
        Some(_) => None,
        None => Some(NodeKind::Str(value.to_owned())),
    }
}

/// An unsigned integer's value: decimal without leading zeros, or `0x`, `0o`, `0b`;
/// `_` allowed between digits.
fn magnitude(text: &str) -> Option<u128> {
    let (radix, digits) = if let Some(hex) = text.strip_prefix("0x") {
        (16, hex)
    } else if let Some(octal) = text.strip_prefix("0o") {
        (8, octal)
    } else if let Some(binary) = text.strip_prefix("0b") {
        (2, binary)
    } else if text.starts_with('0') && text != "0" {
        return None;
    } else {
        (10, text)
    };
    let bytes = digits.as_bytes();
    let mut value: u128 = 0;
    let mut any = false;
    for (index, &byte) in bytes.iter().enumerate() {
        if byte == b'_' {
            let between = index > 0
                && bytes[index - 1] != b'_'
                && bytes.get(index + 1).is_some_and(|&next| next != b'_');
            if !between {
                return None;
            }
            continue;
        }
        let digit = char::from(byte).to_digit(radix)?;
        value = value
            .checked_mul(u128::from(radix))?
            .checked_add(u128::from(digit))?;
        any = true;
    }
    any.then_some(value)
}

/// A float as YAML 1.2 writes it (`1.5`, `-2e3`, `.inf`, `.NaN`), or a decimal number too
/// large for an `f64` (infinite). `None` if the text is not a number.
fn float(t: &str) -> Option<f64> {
    let (negative, unsigned) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    match unsigned {
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        ".inf" | ".Inf" | ".INF" if negative => return Some(f64::NEG_INFINITY),
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        _ => {}
    }
    // Rust also reads `inf`, `infinity` and `nan`, which YAML keeps as strings.
    let value = t.parse::<f64>().ok()?;
    (value.is_finite() || unsigned.as_bytes().first().is_some_and(u8::is_ascii_digit))
        .then_some(value)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(node: &Node) -> (u64, u64) {
        (node.line, node.column)
    }

    fn map(node: &Node) -> &[(Node, Node)] {
        match &node.kind {
            NodeKind::Map(entries) => entries,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn block_mapping_spans_point_at_keys_and_values() {
        let root = parse("jobs:\n  backup:\n    schedule: \"30 2 * * *\"\n").unwrap();
        let (jobs_key, jobs) = &map(&root)[0];
        assert_eq!(at(jobs_key), (1, 1));
        let (name, body) = &map(jobs)[0];
        assert_eq!(name.kind, NodeKind::Str("backup".into()));
        assert_eq!(at(name), (2, 3));
        let (key, value) = &map(body)[0];
        assert_eq!(at(key), (3, 5));
        assert_eq!(at(value), (3, 15));
        assert_eq!(value.kind, NodeKind::Str("30 2 * * *".into()));
    }

    #[test]
    fn flow_mapping_and_sequence_spans() {
        let root = parse("env: { A: 1, BB: [x, 'y'] }\n").unwrap();
        let (_, env) = &map(&root)[0];
        assert_eq!(at(env), (1, 6));
        let entries = map(env);
        assert_eq!(at(&entries[0].0), (1, 8));
        assert_eq!(at(&entries[0].1), (1, 11));
        assert_eq!(at(&entries[1].0), (1, 14));
        let NodeKind::Seq(items) = &entries[1].1.kind else {
            panic!("not a seq")
        };
        assert_eq!(at(&items[0]), (1, 19));
        assert_eq!(at(&items[1]), (1, 22));
        assert_eq!(items[1].kind, NodeKind::Str("y".into()));
    }

    #[test]
    fn scalars_keep_their_written_text() {
        let src = "a: 0x10\nb: 1.50\nc: True\nd: yes\ne: ~\nf: &n 07\ng: *n\n";
        let root = parse(src).unwrap();
        let texts: Vec<Option<String>> = map(&root)
            .iter()
            .map(|(_, value)| value.scalar_text(src).map(Cow::into_owned))
            .collect();
        let expected = ["0x10", "1.50", "True", "yes"].map(|s| Some(s.to_string()));
        assert_eq!(texts[..4], expected);
        assert_eq!(texts[4], None);
        assert_eq!(texts[5].as_deref(), Some("07"));
        // An alias reads back the text of its anchor, and stands where it is used.
        assert_eq!(texts[6].as_deref(), Some("07"));
        assert_eq!(at(&map(&root)[6].1), (7, 4));
    }

    #[test]
    fn strict_booleans() {
        let root = parse("a: yes\nb: on\nc: true\nd: false\n").unwrap();
        let kinds: Vec<&NodeKind> = map(&root).iter().map(|(_, v)| &v.kind).collect();
        assert_eq!(kinds[0], &NodeKind::Str("yes".into()));
        assert_eq!(kinds[1], &NodeKind::Str("on".into()));
        assert_eq!(kinds[2], &NodeKind::Bool(true));
        assert_eq!(kinds[3], &NodeKind::Bool(false));
    }

    #[test]
    fn duplicate_keys_reach_the_tree() {
        let root = parse("a: 1\na: 2\n").unwrap();
        assert_eq!(map(&root).len(), 2);
        assert_eq!(at(&map(&root)[1].0), (2, 1));
    }

    #[test]
    fn empty_and_comment_only_files_are_null() {
        assert_eq!(parse("").unwrap().kind, NodeKind::Null);
        assert_eq!(parse("# nothing\n\n").unwrap().kind, NodeKind::Null);
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = parse("jobs:\n  a: [1, 2\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 6));
        assert_eq!(
            err.message,
            "invalid YAML: unclosed bracket '['; fix the syntax here"
        );
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("more than one YAML document"));
    }

    #[test]
    fn alias_bomb_is_rejected() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let refs = vec![format!("*a{}", level - 1); 10].join(", ");
            bomb.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
        }
        let err = parse(&bomb).unwrap_err();
        assert!(err.message.contains("alias"), "{}", err.message);
        assert!(err.line > 0);
    }

    /// Both readers on `text`: the event walk's tree (or `None` where it defers) and
    /// serde-saphyr's result. Where the walk answers, the answers must be the same.
    fn both(text: &str) -> (Option<Node>, Result<Node, SyntaxError>) {
        let fast = Builder::new(text).run();
        let reference = saphyr::parse(text);
        if let Some(tree) = &fast {
            assert_eq!(Ok(tree), reference.as_ref(), "for {text:?}");
        }
        (fast, reference)
    }

    /// Scalars as serde-saphyr reads them, one per line of a block sequence. All plain,
    /// so all are resolved by the event walk but for the non-finite floats.
    #[rustfmt::skip]
    const SCALARS: &[&str] = &[
        "0", "-0", "+0", "00", "07", "-07", "+07", "08", "0.5", "-0.5", ".5", "5.", "+.5",
        "1e3", "1E3", "-1e-3", "1e+3", "1.5e", "e5", ".", "-", "+", "+-1", "1_000", "1__0",
        "_1", "1_", "-1_0", "0x10", "0x_10", "0x1_0", "-0x10", "+0x10", "0X10", "-0X10", "0xfF",
        "0xg", "0x", "0o17", "0o18", "0O17", "0b101", "0b2", "0B1", "-0b1",
        "9223372036854775807", "9223372036854775808", "-9223372036854775808",
        "-9223372036854775809", "18446744073709551615", "18446744073709551616",
        "340282366920938463463374607431768211456", "1e308", "-1e308", "inf", "-inf", "infinity",
        "nan", "NaN", "-.nan", "+.nan", "-.NaN", ".Nan", ".INf", "true", "True", "TRUE", "tRue",
        "false", "False", "FALSE", "yes", "no", "on", "off", "y", "n", "null", "Null", "NULL",
        "nUll", "~", "~~", "12:30", "1:2:3", "2024-01-01", "0.1.2", "1,000", "$1", "1 2",
        "0x1 0", "٣", "１", "a\tb", "\"q\"", "'q'", "\"0x10\"", "'true'", "\"\"", "''",
        "|-\n    12", ">\n    true", "\"a\\tb\"", "'it''s'", "\"\\u00e9\"",
    ];

    #[test]
    fn scalars_resolve_as_serde_saphyr_resolves_them() {
        for scalar in SCALARS {
            let text = format!("- {scalar}\n");
            let (fast, reference) = both(&text);
            assert!(fast.is_some() || reference.is_err(), "{text:?} deferred");
            let text = format!("{{k: {scalar}, {scalar}: v}}\n");
            let _ = both(&text);
        }
        for scalar in [".inf", "-.inf", "+.inf", ".NaN", ".nan", "1e999", "-1e999"] {
            let (fast, reference) = both(&format!("a: {scalar}\n"));
            assert!(fast.is_none() && reference.is_err(), "{scalar}");
        }
    }

    /// Documents the event walk must read itself, placing every node and span as
    /// serde-saphyr does.
    const DOCUMENTS: &[&str] = &[
        "",
        "\n",
        "# only a comment\n",
        "---\n",
        "--- \n...\n",
        "...\n",
        "--- # c\na: 1\n...\n",
        "%YAML 1.2\n---\na: 1\n",
        "a\n",
        "'just a string'\n",
        "[]\n",
        "{}\n",
        "a:\nb: \nc: ~\n",
        "a:\n  - 1\n  -\n  - - x\n    - y\n  - k: v\n    l: w\n",
        "a:\n- 1\n- 2\nb: c\n",
        "- a: 1\n  b: 2\n- c\n",
        "? a\n: b\n? [c, d]\n: e\n? {f: g}\n",
        "[a, b: c, {d: e}, [f]]\n",
        "{a, b: , : c}\n",
        "k: |\n  line 1\n  line 2\nl: >-\n  folded\n  text\n\nm: end\n",
        "k: \"multi\n  line\"\nl: plain\n  continued\n",
        "é: ü\nx: \"ß\"  # comment\n  # more\ny: 😀 z\n",
        "a: &x 1\nb: *x\nc: &y [1, *x, {k: *x}]\nd: *y\ne:\n  - *y\n  - *y\n",
        "a: &m {k: v, l: [1, 2]}\nb: *m\n*m : x\n",
        "- &a a\n- &a b\n- *a\n",
        "a: &e\nb: *e\n",
        "jobs:\n  x: &j\n    schedule: \"@daily\"\n    command: [a, &c b]\n  y: *j\n  z: *c\n",
        "a: 1\na: 2\n",
        "a: [ 1 , 0x2 ,\n  -3 ]\nb: { k : 1.5 , true : ~ }\nc: 4\t\n1: x\n0x10: y\n",
        "\u{feff}a: 1\n",
        "a: 1\r\nb: [x,\r\n  y]\r\n",
        "a:\t1\n",
        "\t- x\n",
    ];

    /// Documents the event walk leaves to serde-saphyr: tags, merge keys, several
    /// documents, recursive or unknown aliases, syntax errors.
    const DEFERRED: &[&str] = &[
        "- !!str 1\n",
        "- !custom x\n",
        "<<: {a: 1}\nb: 2\n",
        "a: &d {x: 1}\nb:\n  <<: *d\n  y: 2\n",
        "a: 1\n---\nb: 2\n",
        "a: 1\n--- \n",
        "a: &a [*a]\n",
        "a: *nope\n",
        "a: [1, 2\n",
        "a: b: c\n",
    ];

    #[test]
    fn documents_read_as_serde_saphyr_reads_them() {
        for text in DOCUMENTS {
            assert!(both(text).0.is_some(), "{text:?} deferred");
        }
        for text in DEFERRED {
            assert!(both(text).0.is_none(), "{text:?} not deferred");
        }
    }

    #[test]
    fn aliases_stand_where_they_are_used() {
        let src = "a: &m {k: [1]}\nb: *m\n";
        let root = Builder::new(src).run().unwrap();
        let (_, copy) = &map(&root)[1];
        assert_eq!(at(copy), (2, 4));
        let (key, list) = &map(copy)[0];
        assert_eq!((at(key), at(list)), ((2, 4), (2, 4)));
        let NodeKind::Seq(items) = &list.kind else {
            panic!("not a seq")
        };
        assert_eq!(items[0].scalar_text(src).as_deref(), Some("1"));
    }

    #[test]
    fn budgets_near_their_limits_defer_to_serde_saphyr() {
        // 200 aliases of one anchor: serde-saphyr's alias/anchor heuristic rejects it.
        let text = format!("a: &a x\nb: [{}]\n", vec!["*a"; 200].join(", "));
        let (fast, reference) = both(&text);
        assert!(fast.is_none() && reference.is_err());
        // A replay budget breach, by the event walk's count too.
        let big = format!("a: &a [{}]\n", vec!["x"; 2000].join(", "));
        let text = format!("{big}b: [{}]\n", vec!["*a"; 60].join(", "));
        let (fast, reference) = both(&text);
        assert!(fast.is_none());
        assert!(reference.unwrap_err().message.contains("alias"));
    }

    /// A random YAML value, written out in block or flow style.
    #[derive(Debug, Clone)]
    enum Value {
        Scalar(String),
        Seq(Vec<Value>, bool),
        Map(Vec<(String, Value)>, bool),
    }

    fn write_flow(value: &Value, out: &mut String) {
        match value {
            Value::Scalar(text) => out.push_str(text),
            Value::Seq(items, _) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push_str(", ");
                    }
                    write_flow(item, out);
                }
                out.push(']');
            }
            Value::Map(entries, _) => {
                out.push('{');
                for (index, (key, item)) in entries.iter().enumerate() {
                    if index > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(key);
                    out.push_str(": ");
                    write_flow(item, out);
                }
                out.push('}');
            }
        }
    }

    /// Writes `value` after `lead` (a key and `:`, or `-`), indented by `indent`.
    fn write_block(lead: &str, value: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match value {
            Value::Seq(items, true) if !items.is_empty() => {
                out.push_str(lead);
                out.push('\n');
                for item in items {
                    write_block(&format!("{pad}  -"), item, indent + 2, out);
                }
            }
            Value::Map(entries, true) if !entries.is_empty() => {
                out.push_str(lead);
                out.push('\n');
                for (key, item) in entries {
                    write_block(&format!("{pad}  {key}:"), item, indent + 2, out);
                }
            }
            _ => {
                out.push_str(lead);
                out.push(' ');
                write_flow(value, out);
                out.push_str(if indent.is_multiple_of(4) {
                    "  # note\n"
                } else {
                    "\n"
                });
            }
        }
    }

    fn document(value: &Value) -> String {
        let mut out = String::new();
        match value {
            Value::Map(entries, true) if !entries.is_empty() => {
                for (key, item) in entries {
                    write_block(&format!("{key}:"), item, 0, &mut out);
                }
            }
            Value::Seq(items, true) if !items.is_empty() => {
                for item in items {
                    write_block("-", item, 0, &mut out);
                }
            }
            _ => {
                write_flow(value, &mut out);
                out.push('\n');
            }
        }
        out
    }

    /// Keys, anchors, aliases, tags and other things a random document is made of.
    #[rustfmt::skip]
    const MORE_SCALARS: &[&str] = &[
        "a", "b", "job-1", "x y", "é", "<<", "&a1 v", "&a2 7", "*a1", "*a2", "''", "\"x\\ny\"",
        "? k", "- x", "a:b", "https://x.y/z?q=1", "${HC}", "@daily", "\"30 2 * * *\"",
        "!!str 5", "!!int 5",
    ];

    fn scalar() -> impl Strategy<Value = String> {
        let pool: Vec<String> = SCALARS
            .iter()
            .filter(|text| !text.contains('\n'))
            .map(|text| (*text).to_string())
            .chain(MORE_SCALARS.iter().map(|text| (*text).to_string()))
            .collect();
        proptest::sample::select(pool)
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar()
            .prop_map(Value::Scalar)
            .prop_recursive(4, 40, 5, |inner| {
                prop_oneof![
                    (
                        proptest::collection::vec(inner.clone(), 0..5),
                        any::<bool>()
                    )
                        .prop_map(|(items, block)| Value::Seq(items, block)),
                    (
                        proptest::collection::vec((scalar(), inner), 0..5),
                        any::<bool>()
                    )
                        .prop_map(|(entries, block)| Value::Map(entries, block)),
                    "&a[12] ".prop_flat_map(|anchor| scalar()
                        .prop_map(move |text| Value::Scalar(format!("{anchor}{text}")))),
                ]
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Random documents, anchors and aliases included: where the event walk answers,
        /// it answers as serde-saphyr does.
        #[test]
        fn random_documents_read_as_serde_saphyr_reads_them(value in value()) {
            let _ = both(&document(&value));
        }

        /// The same with random damage: where serde-saphyr rejects a file, the event walk
        /// must not accept it.
        #[test]
        fn damaged_documents_are_rejected_alike(
            value in value(),
            edits in proptest::collection::vec(
                (any::<proptest::sample::Index>(), proptest::sample::select(
                    &[":", "- ", "[", "]", "{", "}", ",", "#", "&a1 ", "*a1", "!", "|", ">",
                      "'", "\"", "\n", " ", "  ", "\t", "?", "%", "@", "`", "---\n", "...\n",
                      "<<: ", "\u{feff}", "\r", ""][..])),
                1..4,
            ),
        ) {
            let mut text = document(&value);
            for (at, insert) in edits {
                let mut index = at.index(text.len() + 1);
                while !text.is_char_boundary(index) {
                    index -= 1;
                }
                if insert.is_empty() && index < text.len() {
                    let mut end = index + 1;
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(index..end, "");
                } else {
                    text.insert_str(index, insert);
                }
            }
            let _ = both(&text);
        }
    }

    /// Regression: at a depth of 48 flow mappings, building the tree overflowed a 2 MiB
    /// stack (a tokio worker's) in a debug build.
    #[test]
    fn deepest_accepted_nesting_fits_a_small_stack() {
        let cases = |depth: usize| {
            [
                "[".repeat(depth) + &"]".repeat(depth),
                "{a: ".repeat(depth) + "1" + &"}".repeat(depth),
                "- ".repeat(depth) + "x\n",
                (0..depth)
                    .map(|i| format!("{}a:\n", " ".repeat(i)))
                    .collect(),
            ]
        };
        let outcomes = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let ok = cases(MAX_DEPTH).map(|text| parse(&text).is_ok());
                let too_deep = cases(MAX_DEPTH + 1).map(|text| parse(&text).is_err());
                (ok, too_deep)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(outcomes, ([true; 4], [true; 4]));
    }

    #[test]
    fn deep_nesting_is_rejected() {
        for text in [
            "[".repeat(10_000),
            "{a: ".repeat(10_000),
            "- ".repeat(10_000) + "x\n",
        ] {
            let err = parse(&text).unwrap_err();
            assert!(
                err.message.contains("nested more than 24 levels"),
                "{}",
                err.message
            );
            assert_eq!(err.line, 1);
        }
    }

    #[test]
    fn parse_within_stops_once_jobs_has_more_entries_than_allowed() {
        let block = "defaults: {timeout: 1m}\njobs:\n  a: {command: x}\n  b:\n    env: \
                     {jobs: 1, more: 2}\n  c: {}\n";
        let flow = "{jobs: {a: 1, b: 2, c: 3}}";
        for text in [block, flow] {
            assert_eq!(parse_within(text, 2), Ok(Parsed::TooManyJobs(3)), "{text}");
            assert_eq!(
                parse_within(text, 3),
                parse(text).map(Parsed::Tree),
                "{text}"
            );
        }
        // Only the top-level `jobs:` counts.
        let nested = "defaults:\n  jobs: {a: 1, b: 2, c: 3}\njobs: {}\n";
        assert!(matches!(parse_within(nested, 0), Ok(Parsed::Tree(_))));
        let other = "jobz: {a: 1, b: 2, c: 3}\n";
        assert!(matches!(parse_within(other, 0), Ok(Parsed::Tree(_))));
    }
}
