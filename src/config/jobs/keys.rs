//! Key checking shared by every mapping: the keys each level takes, entries read with
//! duplicates located, unknown keys answered with a "did you mean" (or where the key
//! belongs), and strict booleans (`yes` and `on` are not `true`).

use std::borrow::Cow;
use std::collections::HashMap;

use super::http::HTTP_KEYS;
use super::retry::RETRY_KEYS;
use super::{FileChecker, escaped};
use crate::config::suggest::closest;
use crate::config::tree::{Node, NodeKind};

pub(super) const TOP_KEYS: &[&str] = &["defaults", "jobs"];
pub(super) const JOB_KEYS: &[&str] = &[
    "schedule",
    "command",
    "http",
    "timezone",
    "workdir",
    "env",
    "timeout",
    "kill_grace",
    "retry",
    "overlap",
    "starting_deadline",
    "catch_up",
    "on_owner_loss",
    "enabled",
    "user",
    "group",
    "env_inherit",
    "healthchecks",
    "on_start",
    "on_success",
    "on_failure",
    "report_missed",
];
/// Keys a job has but `defaults` cannot: they say what and when, not how.
pub(super) const JOB_ONLY_KEYS: &[&str] = &["schedule", "command", "http"];

/// Other spellings people reach for, mapped to the key meant.
const KEY_ALIASES: &[(&str, &str)] = &[
    ("cmd", "command"),
    ("run", "command"),
    ("exec", "command"),
    ("script", "command"),
    ("cron", "schedule"),
    ("when", "schedule"),
    ("tz", "timezone"),
    ("time_zone", "timezone"),
    ("zone", "timezone"),
    ("cwd", "workdir"),
    ("dir", "workdir"),
    ("working_dir", "workdir"),
    ("working_directory", "workdir"),
    ("environment", "env"),
    ("retries", "retry"),
    ("deadline", "starting_deadline"),
    ("disabled", "enabled"),
    ("grace", "kill_grace"),
    ("status", "expect_status"),
    ("expected_status", "expect_status"),
    ("header", "headers"),
    ("max_attempts", "attempts"),
    ("run_as", "user"),
    ("uid", "user"),
    ("gid", "group"),
    ("inherit_env", "env_inherit"),
    ("on_fail", "on_failure"),
    ("on_error", "on_failure"),
    ("on_ok", "on_success"),
    ("hc", "healthchecks"),
];

/// A mapping entry whose key is a scalar.
pub(super) struct Entry<'n> {
    pub(super) key: Cow<'n, str>,
    pub(super) key_node: &'n Node,
    pub(super) value: &'n Node,
}

impl<'a> FileChecker<'a, '_> {
    /// The entries of a mapping node. Keys that are not scalars are errors; with
    /// `unique`, so is a key given twice (the later one is dropped).
    pub(super) fn entries<'n>(
        &mut self,
        map: &'n Node,
        prefix: &str,
        unique: bool,
    ) -> Vec<Entry<'n>>
    where
        'a: 'n,
    {
        let NodeKind::Map(pairs) = &map.kind else {
            return Vec::new();
        };
        let mut entries: Vec<Entry<'n>> = Vec::with_capacity(pairs.len());
        // Most mappings have a handful of keys, where a scan beats hashing; the index is
        // for the rare large one (a long `env`).
        let mut seen: Option<HashMap<Cow<'n, str>, &'n Node>> =
            (unique && pairs.len() > 16).then(HashMap::new);
        for (key_node, value) in pairs {
            let Some(key) = key_node.scalar_text(self.src) else {
                self.error(
                    key_node,
                    format!(
                        "a key {}is {}; keys must be plain names",
                        in_place(prefix),
                        key_node.describe()
                    ),
                );
                continue;
            };
            if unique {
                let first = match &seen {
                    Some(seen) => seen.get(&key).copied(),
                    None => entries
                        .iter()
                        .find(|entry| entry.key == key)
                        .map(|entry| entry.key_node),
                };
                if let Some(first) = first {
                    let message = format!(
                        "`{prefix}{}` is given twice (first at line {}, column {}); remove one",
                        escaped(&key),
                        first.line,
                        first.column
                    );
                    self.error(key_node, message);
                    continue;
                }
                if let Some(seen) = &mut seen {
                    seen.insert(key.clone(), key_node);
                }
            }
            entries.push(Entry {
                key,
                key_node,
                value,
            });
        }
        entries
    }

    /// An unknown key: a "did you mean" when one is close, else the valid keys.
    /// Returns the key suggested, if any.
    pub(super) fn unknown_key<'k>(
        &mut self,
        entry: &Entry<'_>,
        prefix: &str,
        valid: &[&'k str],
        what: &str,
    ) -> Option<&'k str> {
        let key = entry.key.as_ref();
        let alias = KEY_ALIASES
            .iter()
            .find(|(alias, _)| alias.eq_ignore_ascii_case(key))
            .and_then(|(_, meant)| valid.iter().copied().find(|valid| valid == meant));
        let suggestion = alias.or_else(|| closest(key, valid.iter().copied(), 2));
        let hint = if let Some(meant) = suggestion {
            format!("did you mean `{meant}`?")
        } else if prefix.is_empty() && HTTP_KEYS.contains(&key) {
            format!("`{key}` belongs under `http:`, e.g. `http: {{ {key}: ... }}`")
        } else if prefix.is_empty() && RETRY_KEYS.contains(&key) {
            format!("`{key}` belongs under `retry:`, e.g. `retry: {{ {key}: ... }}`")
        } else {
            format!("{what} takes {}", list(valid))
        };
        let message = format!("unknown key `{prefix}{}`; {hint}", escaped(key));
        self.error(entry.key_node, message);
        suggestion
    }

    /// Returns the key suggested, if any.
    pub(super) fn unknown_top_key(&mut self, entry: &Entry<'_>) -> Option<&'static str> {
        let key = entry.key.as_ref();
        let looks_like_job = match &entry.value.kind {
            NodeKind::Map(pairs) => pairs
                .iter()
                .any(|(k, _)| matches!(&k.kind, NodeKind::Str(s) if s == "schedule")),
            _ => false,
        };
        if JOB_KEYS.contains(&key) {
            let message = format!(
                "`{key}` belongs to a job, not the top level; put it under `jobs:` and the \
                 job's name, or under `defaults:`"
            );
            self.error(entry.key_node, message);
            None
        } else if looks_like_job && closest(key, TOP_KEYS.iter().copied(), 2).is_none() {
            let message = format!(
                "`{}` looks like a job, but jobs go under `jobs:`; indent it below a \
                 `jobs:` line",
                escaped(key)
            );
            self.error(entry.key_node, message);
            None
        } else {
            self.unknown_key(entry, "", TOP_KEYS, "the top level")
        }
    }

    pub(super) fn boolean(&mut self, path: &str, node: &Node) -> Option<bool> {
        if let NodeKind::Bool(value) = node.kind {
            return Some(value);
        }
        let message = format!(
            "`{path}` must be true or false, not `{}`; use true or false",
            escaped(&self.text(node))
        );
        self.error(node, message);
        None
    }
}

/// `a`, `b` and `c` as "`a`, `b`, `c`".
pub(super) fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a key stands, for "a key in `env` is a list".
fn in_place(prefix: &str) -> String {
    match prefix.strip_suffix('.') {
        Some(path) => format!("in `{path}` "),
        None => String::new(),
    }
}
