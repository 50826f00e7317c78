//! Phase 1: YAML text → a span-carrying tree of our own.
//!
//! serde-saphyr parses the file into [`Node`]s through a `deserialize_any` visitor, each
//! wrapped in [`serde_saphyr::Spanned`] so that every key and value knows its line and
//! column. This phase knows nothing about jobs: it only enforces the YAML-level rules
//! (syntax, strict booleans, one document) and the resource budgets that keep alias
//! bombs and absurd nesting from costing more than milliseconds.
//!
//! Duplicate keys are passed through to the tree on purpose: phase 2 reports them with
//! both locations and keeps checking the rest of the file, which serde-saphyr's own
//! duplicate-key error (the first one ends the parse) could not do.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::options::DuplicateKeyPolicy;
use serde_saphyr::{Error as YamlError, MessageFormatter, Spanned, UserMessageFormatter};

/// Deepest nesting of mappings and sequences accepted. A schedule file needs five; the
/// limit also keeps the recursive tree building well inside a 2 MiB thread stack (a
/// tokio worker's), even in a debug build.
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

/// Parses one file's text into a tree.
pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    serde_saphyr::from_str_with_options::<Node>(text, options()).map_err(|err| syntax_error(&err))
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // `yes`, `on`, `no` stay strings, so `enabled: yes` can be rejected by name.
        strict_booleans: true,
        // Phase 2 reports duplicates with both locations and keeps going.
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        // Our errors carry file:line:column; a snippet would be noise in logs.
        with_snippet: false,
        emit_comments: false,
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            flow_nesting_limit: MAX_DEPTH,
            max_events: MAX_EVENTS,
            max_nodes: MAX_NODES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED_EVENTS,
        },
    }
}

/// Turns serde-saphyr's error into our wording, with the location it names.
fn syntax_error(err: &YamlError) -> SyntaxError {
    let (line, column) = err
        .location()
        .map_or((0, 0), |location| (location.line(), location.column()));
    let mut inner = err;
    while let YamlError::AliasError { error, .. } | YamlError::WithSnippet { error, .. } = inner {
        inner = error;
    }
    // One line per error: escape control characters, keep quotes as they are.
    let plain: String = UserMessageFormatter
        .format_message(inner)
        .chars()
        .map(|c| match c {
            c if c.is_control() => c.escape_debug().to_string(),
            c => c.to_string(),
        })
        .collect();
    const ALIASES: &str = "too many alias expansions (`*name` / `<<: *name`); \
                           this looks like an alias bomb — use `defaults:` to share settings";
    let message = match inner {
        YamlError::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => too_deep(),
            BudgetBreach::Events { .. } | BudgetBreach::Nodes { .. } => {
                format!("the file is too large ({plain}); split its jobs over several files")
            }
            BudgetBreach::Aliases { .. } | BudgetBreach::AliasAnchorRatio { .. } => {
                ALIASES.to_string()
            }
            _ => format!("the file exceeds the YAML safety limits ({plain}); simplify it"),
        },
        YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayStackDepthExceeded { .. }
        | YamlError::AliasReplayCounterOverflow { .. } => ALIASES.to_string(),
        YamlError::MultipleDocuments { .. } => {
            "the file holds more than one YAML document (a `---` line after content); \
             put all jobs in one document or split them into separate files"
                .to_string()
        }
        YamlError::InvalidUtf8Input => "the file is not valid UTF-8; save it as UTF-8".to_string(),
        // The flow-nesting limit (`[[[[…`) surfaces as the parser's recursion limit.
        _ if plain.contains("recursion limit") => too_deep(),
        // The classic: `command: echo "a: b"` — an unquoted value with `: ` in it.
        _ if plain.contains("mapping values are not allowed") => format!(
            "invalid YAML: {plain}: a `: ` inside an unquoted value starts a mapping; put \
             the whole value in quotes, e.g. `command: 'echo \"a: b\"'`"
        ),
        _ => format!("invalid YAML: {plain}; fix the syntax here"),
    };
    SyntaxError {
        line,
        column,
        message,
    }
}

fn too_deep() -> String {
    format!(
        "the YAML is nested more than {MAX_DEPTH} levels deep; a schedule file needs only a \
         few levels — check the indentation and brackets"
    )
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<NodeKind>::deserialize(deserializer)?;
        let defined = spanned.defined.span();
        let raw = match spanned.value {
            NodeKind::Bool(_) | NodeKind::Int(_) | NodeKind::Float(_) => defined
                .byte_offset()
                .zip(defined.byte_len())
                .and_then(|(start, len)| {
                    Some((usize::try_from(start).ok()?, usize::try_from(len).ok()?))
                }),
            _ => None,
        };
        Ok(Node {
            kind: spanned.value,
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
            raw,
        })
    }
}

impl<'de> Deserialize<'de> for NodeKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = NodeKind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }

    fn visit_none<E>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<NodeKind, D::Error> {
        NodeKind::deserialize(deserializer)
    }

    fn visit_bool<E>(self, value: bool) -> Result<NodeKind, E> {
        Ok(NodeKind::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<NodeKind, E> {
        Ok(NodeKind::Int(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<NodeKind, E> {
        Ok(NodeKind::Int(value.into()))
    }

    fn visit_i128<E>(self, value: i128) -> Result<NodeKind, E> {
        Ok(NodeKind::Int(value))
    }

    fn visit_u128<E>(self, value: u128) -> Result<NodeKind, E> {
        // Beyond i128 nothing in a schedule file is valid anyway; keep it out of range.
        Ok(NodeKind::Int(i128::try_from(value).unwrap_or(i128::MAX)))
    }

    fn visit_f64<E>(self, value: f64) -> Result<NodeKind, E> {
        Ok(NodeKind::Float(value))
    }

    fn visit_char<E>(self, value: char) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(value.to_string()))
    }

    fn visit_str<E>(self, value: &str) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(value))
    }

    fn visit_bytes<E: de::Error>(self, value: &[u8]) -> Result<NodeKind, E> {
        // Only a `!!binary` scalar gets here; it is text to us if it is UTF-8.
        String::from_utf8(value.to_vec())
            .map(NodeKind::Str)
            .map_err(|_| E::custom("a `!!binary` value that is not UTF-8 text"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeKind, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(NodeKind::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeKind, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(entry) = map.next_entry::<Node, Node>()? {
            entries.push(entry);
        }
        Ok(NodeKind::Map(entries))
    }
}

#[cfg(test)]
mod tests {
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
}
