//! The SQLite store against the plain model of tests/support/store_model.rs, with
//! every query compared after each step. Plus the schema's version rules.

#[path = "support/store_model.rs"]
mod store_model;

use proptest::prelude::*;

use chime::state::{HistoryQuery, SqliteStore, Store, StoreError};
use store_model::{Model, op, t};

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_a_plain_model(ops in proptest::collection::vec(op(), 1..60), batch in 1..16usize) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut store = SqliteStore::open(&dir.path().join("state.db")).expect("the store opens");
        let model = Model::run(&mut store, &ops, batch);
        // What was written is there after a reopen.
        drop(store);
        let reopened = SqliteStore::open_read_only(&dir.path().join("state.db")).expect("reopen");
        model.check(&reopened);
    }
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("state.db");
    drop(SqliteStore::open(&path).expect("created"));
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.pragma_update(None, "user_version", 99)
        .expect("bump the version");
    drop(conn);
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(
        matches!(err, StoreError::TooNew { found: 99, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("schema version 99") && text.contains("newer chime"),
        "{text}"
    );
}

#[test]
fn a_store_reopened_keeps_its_schema_and_data() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("state.db");
    let mut store = SqliteStore::open(&path).expect("created");
    store.mark_fire_handled("a", t(5)).expect("write");
    drop(store);
    let store = SqliteStore::open(&path).expect("reopened");
    assert_eq!(store.last_handled().expect("read")["a"], t(5));
    let mode: String = rusqlite::Connection::open(&path)
        .expect("raw")
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");
}

/// The writer thread turns run events into rows: a run's end is its start plus its
/// measured duration (the firing path takes no time reading), its output's tail goes
/// with it, and a run whose start and end arrive in different batches ends the same.
#[test]
fn the_writer_records_runs_from_their_events() {
    use std::sync::Arc;
    use std::time::Duration;

    use chime::events::{Event, Events, ExitDetail, Outcome, Stream, Trigger};
    use chime::state::writer::{Retention, WriterThread};

    let dir = tempfile::tempdir().expect("a temp dir");
    let path = chime::state::location::prepare(dir.path()).expect("the db dir");
    let thread = WriterThread::start(
        &path,
        Some(SqliteStore::open(&path).expect("opens")),
        Events::discard(),
        Retention::default(),
        1000,
    )
    .expect("the writer starts");
    let writer = thread.writer();
    let job: Arc<str> = Arc::from("backup");
    let started = |run: &str, at: i64| Event::RunStarted {
        job: Arc::clone(&job),
        run_id: Arc::from(run),
        trigger: Trigger::Schedule,
        scheduled_at: t(at),
        lateness_ms: 2.0,
        attempt: 1,
        queued_ms: None,
        pid: None,
        caller_uid: None,
    };
    let finished = |run: &str, outcome: Outcome, duration_ms: u64| Event::RunFinished {
        job: Arc::clone(&job),
        run_id: Arc::from(run),
        attempts: 1,
        outcome,
        detail: ExitDetail {
            exit_code: Some(if outcome == Outcome::Success { 0 } else { 3 }),
            ..ExitDetail::default()
        },
        duration_ms,
        output_bytes: 6,
        truncated: false,
        by: None,
        caller_uid: None,
    };
    // One run within one batch.
    writer.observe(&started("00000000000000a1", 1_000));
    writer.observe(&Event::RunOutput {
        job: Arc::clone(&job),
        run_id: Arc::from("00000000000000a1"),
        stream: Stream::Stdout,
        line: "hello".into(),
    });
    writer.observe(&finished("00000000000000a1", Outcome::Success, 250));
    assert!(writer.flush(Duration::from_secs(10)), "the writer drains");
    // One started, flushed, then ended in a later batch.
    writer.observe(&started("00000000000000a2", 2_000));
    assert!(writer.flush(Duration::from_secs(10)), "the writer drains");
    let reader = SqliteStore::open_read_only(&path).expect("a reader");
    let running = reader.unfinished_runs().expect("read");
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0].run_id, "00000000000000a2");
    writer.observe(&finished("00000000000000a2", Outcome::Failure, 4_000));
    assert!(writer.flush(Duration::from_secs(10)), "the writer drains");
    thread.close();

    let runs = reader
        .runs(&HistoryQuery {
            limit: 10,
            ..HistoryQuery::default()
        })
        .expect("read");
    assert_eq!(runs.len(), 2, "{runs:?}");
    let (second, first) = (&runs[0], &runs[1]);
    assert_eq!(first.run_id, "00000000000000a1");
    assert_eq!(first.status, "success");
    assert_eq!(first.started, t(1_002));
    assert_eq!(first.finished, Some(t(1_002 + 250)));
    assert_eq!(first.output_tail.as_deref(), Some("hello\n"));
    assert_eq!(second.status, "failure");
    assert_eq!(second.exit_code, Some(3));
    assert_eq!(second.finished, Some(t(2_002 + 4_000)));
    let summary = reader.job_summaries().expect("read");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].failures_in_row, 1);
    assert_eq!(summary[0].last_handled, Some(t(2_000)));
    assert!(reader.unfinished_runs().expect("read").is_empty());
}
