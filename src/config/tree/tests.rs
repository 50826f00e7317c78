//! Phase 1 against serde-saphyr: spans, scalars, documents, budgets and nesting.

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
