//! The serde-saphyr path: the whole file through serde-saphyr's `Spanned` visitor.
//!
//! It is the reference for what phase 1 accepts, so [`super::parse`] hands it every file
//! the direct event walk is not sure about: a syntax error, a budget near its limit, a
//! tag, a merge key (`<<`). Those files are rare; this path reads them several times more
//! slowly than the event walk, but with serde-saphyr's exact semantics and its friendly,
//! located messages.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::options::DuplicateKeyPolicy;
use serde_saphyr::{Error as YamlError, MessageFormatter, Spanned, UserMessageFormatter};

use super::{MAX_DEPTH, MAX_EVENTS, MAX_NODES, MAX_REPLAYED_EVENTS, Node, NodeKind, SyntaxError};

/// Parses one file's text into a tree with serde-saphyr.
pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
    serde_saphyr::from_str_with_options::<Node>(text, options()).map_err(|err| {
        let mut error = syntax_error(&err);
        if unquoted_schedule(text, error.line) {
            if let Some(plain) = error.message.strip_suffix(FIX) {
                error.message = plain.to_string();
            }
            error.message.push_str(
                "; a schedule starting with `*`, `@` or `?` must be quoted: quote the \
                 schedule, for example `schedule: \"*/5 * * * *\"`",
            );
        }
        error
    })
}

/// Whether line `line` (1-based) holds an unquoted `schedule:` value that starts with a
/// character YAML reserves (`*` an alias, `@` reserved, `?` a mapping key).
fn unquoted_schedule(text: &str, line: u64) -> bool {
    let line = usize::try_from(line).unwrap_or(0);
    let Some(source) = line.checked_sub(1).and_then(|n| text.lines().nth(n)) else {
        return false;
    };
    let source = source.trim_start().trim_start_matches(['-', ' ', '{']);
    source
        .strip_prefix("schedule:")
        .map(str::trim_start)
        .is_some_and(|value| value.starts_with(['*', '@', '?']))
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

/// The end of a syntax error with no better hint.
const FIX: &str = "; fix the syntax here";

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
            BudgetBreach::Depth { .. } => super::too_deep(),
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
        _ if plain.contains("recursion limit") => super::too_deep(),
        // The classic: `command: echo "a: b"` — an unquoted value with `: ` in it.
        _ if plain.contains("mapping values are not allowed") => format!(
            "invalid YAML: {plain}: a `: ` inside an unquoted value starts a mapping; put \
             the whole value in quotes, e.g. `command: 'echo \"a: b\"'`"
        ),
        _ => format!("invalid YAML: {plain}{FIX}"),
    };
    SyntaxError {
        line,
        column,
        message,
    }
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
