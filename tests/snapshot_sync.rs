//! Full and mirror syncs end to end (DuckDB → file destination with change envelopes): only
//! changed rows are sent, deletes in mirror mode, the state survives a restart of the process,
//! a crash before the commit resends the same changes, duplicate keys are refused with
//! examples, and `preview` dry-runs the diff.

mod common;

use std::collections::BTreeMap;

use common::{ops, read_ndjson, text, Fixture};
use serde_json::Value;

fn config(mode: &str, table_type: &str, mapping: &str) -> String {
    format!(
        r#"state_dir = ".wharf"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
[destinations.out]
type = "file"
path = "out.ndjson"
[[syncs]]
name = "s"
warehouse = "wh"
table = "people"
table_type = "{table_type}"
mode = "{mode}"
primary_key = ["id"]
destinations = ["out"]
[syncs.mapping]
{mapping}
"#
    )
}

const USERS: &str = r#"user_id_column = "id""#;

fn people(f: &Fixture, n: usize) {
    f.sql(&format!(
        "CREATE TABLE people AS SELECT 'u' || i AS id, 'name ' || i AS name, i % 7 AS score,
         CASE WHEN i % 3 = 0 THEN NULL ELSE 'city' || (i % 5) END AS city
         FROM range({n}) t(i);"
    ));
}

/// Runs `wharf sync s` and returns the envelopes it appended to out.ndjson.
fn sync(f: &Fixture, seen: &mut usize) -> Vec<Value> {
    let out = f.wharf(&["sync", "s", "-c", "wharf.toml"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let all = read_ndjson(&f.path("out.ndjson"));
    let new = all[*seen..].to_vec();
    *seen = all.len();
    new
}

#[test]
fn restart_sends_exactly_the_ten_changes() {
    let f = Fixture::new();
    people(&f, 1000);
    f.write_config("wharf.toml", &config("mirror", "users", USERS));
    let mut seen = 0;
    let first = sync(&f, &mut seen);
    assert_eq!(first.len(), 1000);
    assert!(first.iter().all(|e| e["op"] == "insert"));
    let u7 = first.iter().find(|e| e["key"] == "u7").unwrap();
    assert_eq!(u7["after"]["name"], "name 7");
    assert_eq!(u7["after"]["city"], "city2");

    // Nothing changed: nothing sent (each `wharf sync` is a new process: the state is on disk).
    assert!(sync(&f, &mut seen).is_empty());

    // Exactly 10 changes: 6 updates (one to NULL), 2 inserts, 2 deletes.
    f.sql(
        "UPDATE people SET score = score + 100 WHERE id IN ('u1','u2','u3','u4','u5');
         UPDATE people SET city = NULL WHERE id = 'u7';
         INSERT INTO people VALUES ('new1', 'n', 1, NULL), ('new2', 'n', 2, 'x');
         DELETE FROM people WHERE id IN ('u10', 'u11');",
    );
    let changes = ops(&sync(&f, &mut seen));
    let want: BTreeMap<String, String> = [
        ("u1", "update"),
        ("u2", "update"),
        ("u3", "update"),
        ("u4", "update"),
        ("u5", "update"),
        ("u7", "update"),
        ("new1", "insert"),
        ("new2", "insert"),
        ("u10", "delete"),
        ("u11", "delete"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(changes, want);
    let status = f.wharf(&["status", "-c", "wharf.toml"], &[]);
    assert!(text(&status).contains("+2 ~6 -2"), "{}", text(&status));

    // Adding a nullable column changes no fingerprint.
    f.sql("ALTER TABLE people ADD COLUMN extra VARCHAR;");
    assert!(sync(&f, &mut seen).is_empty());
}

#[test]
fn mirror_events_and_profiles_carry_ops_and_deletes() {
    let f = Fixture::new();
    f.sql(
        "CREATE TABLE people (id INTEGER, name VARCHAR, ts TIMESTAMP, uid VARCHAR);
         INSERT INTO people VALUES (1, 'a', TIMESTAMP '2024-01-01', 'x'), (2, 'b', TIMESTAMP '2024-01-02', 'y'),
                                   (3, 'c', TIMESTAMP '2024-01-03', 'z');",
    );
    let mapping = r#"event_name = "Row"
time_column = "ts"
user_id_column = "uid""#;
    f.write_config("wharf.toml", &config("mirror", "events", mapping));
    let mut seen = 0;
    let first = sync(&f, &mut seen);
    assert_eq!(first.len(), 3);
    let insert_id_1 =
        first.iter().find(|e| e["key"] == 1).unwrap()["after"]["properties"]["$insert_id"].clone();
    f.sql("UPDATE people SET name = 'a2' WHERE id = 1; DELETE FROM people WHERE id = 2;");
    let second = sync(&f, &mut seen);
    let changes = ops(&second);
    assert_eq!(changes.get("1").map(String::as_str), Some("update"));
    assert_eq!(changes.get("2").map(String::as_str), Some("delete"));
    assert_eq!(second.len(), 2);
    let upd = second.iter().find(|e| e["key"] == 1).unwrap();
    // An update keeps its deterministic $insert_id, so Mixpanel replaces the event.
    assert_eq!(upd["after"]["properties"]["$insert_id"], insert_id_1);
    assert_eq!(upd["after"]["properties"]["name"], "a2");

    // Profiles: a mirror sync to the file carries the same ops.
    f.write_config(
        "wharf.toml",
        &config("mirror", "users", r#"user_id_column = "id""#)
            .replace("name = \"s\"", "name = \"p\""),
    );
    let out = f.wharf(&["sync", "p", "-c", "wharf.toml"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let all = read_ndjson(&f.path("out.ndjson"));
    seen = all.len();
    f.sql("DELETE FROM people WHERE id = 3;");
    let out = f.wharf(&["sync", "p", "-c", "wharf.toml"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let all = read_ndjson(&f.path("out.ndjson"));
    assert_eq!(
        ops(&all[seen..]),
        [("3".to_string(), "delete".to_string())].into()
    );
}

#[test]
fn crash_before_commit_resends_the_same_changes() {
    let f = Fixture::new();
    people(&f, 200);
    f.write_config("wharf.toml", &config("mirror", "users", USERS));
    let mut seen = 0;
    assert_eq!(sync(&f, &mut seen).len(), 200);
    f.sql("UPDATE people SET name = 'x' WHERE id IN ('u1', 'u2'); DELETE FROM people WHERE id = 'u3';");
    let out = f.wharf(
        &["sync", "s", "-c", "wharf.toml"],
        &[("WHARF_CRASH_BEFORE_COMMIT", "1")],
    );
    assert_eq!(out.status.code(), Some(70), "{}", text(&out));
    let crashed = read_ndjson(&f.path("out.ndjson"))[seen..].to_vec();
    seen += crashed.len();
    let replay = sync(&f, &mut seen);
    assert_eq!(ops(&crashed), ops(&replay));
    assert_eq!(replay.len(), 3);
    assert!(sync(&f, &mut seen).is_empty());
}

#[test]
fn duplicate_keys_and_preview() {
    let f = Fixture::new();
    people(&f, 50);
    f.write_config("wharf.toml", &config("full", "users", USERS));
    let out = f.wharf(&["preview", "s", "-c", "wharf.toml"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("next run would send: 50 inserts, 0 updates, 0 deletes"),
        "{}",
        text(&out)
    );
    let mut seen = 0;
    sync(&f, &mut seen);
    f.sql("UPDATE people SET score = -1 WHERE id = 'u4'; DELETE FROM people WHERE id = 'u5';");
    let out = f.wharf(&["preview", "s", "-c", "wharf.toml"], &[]);
    assert!(
        text(&out).contains("next run would send: 0 inserts, 1 updates, 1 deletes"),
        "{}",
        text(&out)
    );
    // The preview committed nothing: the sync still sends the update (and, in full mode, not
    // the delete).
    assert_eq!(
        ops(&sync(&f, &mut seen)),
        [("u4".to_string(), "update".to_string())].into()
    );

    f.sql("INSERT INTO people VALUES ('u9', 'dup', 1, NULL);");
    let out = f.wharf(&["sync", "s", "-c", "wharf.toml"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("duplicate primary key values, e.g. \"u9\""),
        "{}",
        text(&out)
    );

    // `dedupe_by` keeps, per key, the row with the greatest value of the column.
    let deduped = config("full", "users", USERS).replace(
        "destinations = [\"out\"]",
        "destinations = [\"out\"]\ndedupe_by = \"score\"",
    );
    f.write_config("wharf.toml", &deduped);
    // The original u9 (score 2) beats the duplicate (score 1): nothing changed.
    assert!(sync(&f, &mut seen).is_empty());
    f.sql("UPDATE people SET score = 100 WHERE name = 'dup';");
    let sent = sync(&f, &mut seen);
    assert_eq!(
        ops(&sent),
        [("u9".to_string(), "update".to_string())].into()
    );
    assert_eq!(sent[0]["after"]["name"], "dup");
}
