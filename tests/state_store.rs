//! The SQLite store against the plain model of tests/support/store_model.rs, with
//! every query compared after each step. Plus the schema's version rules.

#[path = "support/store_model.rs"]
mod store_model;

use proptest::prelude::*;

use chime::state::{SqliteStore, Store, StoreError};
use store_model::{Model, op, t};

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_a_plain_model(ops in proptest::collection::vec(op(), 1..60), batch in 1..4usize) {
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
