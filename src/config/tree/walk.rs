//! The event walk: granit-parser's events → [`Node`]s, without recursion, charging every
//! node, byte and alias replay to the budgets. Any step that is not sure of serde-saphyr's
//! answer gives up (`None`), and the caller hands the file to [`super::saphyr`].

use std::borrow::Cow;

use granit_parser::{Event, Parser, ScalarStyle, Span};

use super::plain::resolve_plain;
use super::{MAX_DEPTH, MAX_EVENTS, MAX_NODES, MAX_REPLAYED_EVENTS, Node, NodeKind};

/// The granit-parser options serde-saphyr derives from [`super::saphyr`]'s options, so
/// that both readers accept exactly the same syntax.
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
pub(super) struct Builder<'t> {
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
    pub(super) jobs: usize,
    pub(super) max_jobs: usize,
}

impl<'t> Builder<'t> {
    pub(super) fn new(text: &'t str) -> Builder<'t> {
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

    pub(super) fn run(&mut self) -> Option<Node> {
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
