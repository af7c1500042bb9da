//! DuckDB → Mixpanel-compatible receiver over HTTP: every column type, NULLs, unicode, a JSON
//! column, rejected rows; restart and crash-replay behaviour; identical results with 1 and 2
//! timely workers.

mod common;

use std::collections::BTreeMap;

use common::{events_config, read_ndjson, text, Fixture};
use serde_json::{json, Value};
use wharf::config::Config;
use wharf::receiver::ReceiverAuth;
use wharf::sync::{run_sync, SyncOptions};

const TYPES_TABLE: &str = r#"
CREATE TABLE typed (
  id BIGINT PRIMARY KEY,
  name VARCHAR,
  ts TIMESTAMP,
  tstz TIMESTAMPTZ,
  d DATE,
  user_id VARCHAR,
  device VARCHAR,
  props JSON,
  i INTEGER,
  big BIGINT,
  f DOUBLE,
  b BOOLEAN,
  s VARCHAR,
  dec DECIMAL(10,2),
  lst INTEGER[],
  st STRUCT(a INTEGER, b VARCHAR),
  m MAP(VARCHAR, INTEGER),
  blob BLOB
);
INSERT INTO typed VALUES
 (1, 'Purchase', TIMESTAMP '2024-05-01 12:00:00.250', TIMESTAMPTZ '2024-05-01 10:00:00+00', DATE '2024-05-01',
  'user-1', 'dev-1', '{"campaign":"spring","s":"from json","nested":{"x":[1,2]},"n":null}',
  -7, 9007199254740993, 2.5, true, 'Zürich 東京 😀 "quoted"', 12.30, [1, 2, NULL], {'a': 1, 'b': 'x'}, MAP {'k': 1}, '\x01\x02'::BLOB),
 (2, 'Sign Up', TIMESTAMP '2024-05-02 00:00:00', NULL, NULL,
  NULL, 'dev-2', NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, 'Bad', NULL, NULL, NULL, 'user-3', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 'Old', TIMESTAMP '1960-01-01 00:00:00', NULL, NULL, 'user-4', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (5, 'Future', now()::TIMESTAMP + INTERVAL 3 HOUR, NULL, NULL, 'user-5', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (6, 'Placeholder', TIMESTAMP '2024-05-03 00:00:00', NULL, NULL, 'null', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (7, 'BadJson', TIMESTAMP '2024-05-03 00:00:00', NULL, NULL, 'user-7', NULL, '[1,2]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

const TYPES_MAPPING: &str = r#"event_name_column = "name"
time_column = "ts"
user_id_column = "user_id"
device_id_column = "device"
properties_column = "props"
key_columns = ["id"]"#;

fn by_id(events: &[Value]) -> BTreeMap<i64, Value> {
    events
        .iter()
        .map(|e| (e["properties"]["id"].as_i64().expect("id"), e.clone()))
        .collect()
}

#[test]
fn every_type_nulls_unicode_json_and_rejects_reach_the_receiver() {
    let fx = Fixture::new();
    fx.sql(TYPES_TABLE);
    let receiver = fx.receiver("recv", ReceiverAuth::AnyCredentials);
    let cfg = fx.write_config(
        "wharf.toml",
        &events_config(".state", &receiver.base_url(), "typed", TYPES_MAPPING),
    );
    let config = Config::load(&cfg).unwrap();
    let report = run_sync(&config, "s", &SyncOptions::default(), &fx.rt, |_| {}).unwrap();
    assert_eq!(report.outcome.rows_read, 7);
    assert_eq!(report.outcome.delivered, 2);
    assert_eq!(report.outcome.rejected, 5);

    let events = receiver.events().unwrap();
    let got = by_id(&events);
    let mut e1 = got[&1].clone();
    let id1 = e1["properties"]
        .as_object_mut()
        .unwrap()
        .remove("$insert_id")
        .unwrap();
    let id1 = id1.as_str().unwrap();
    assert_eq!(id1.len(), 32);
    assert!(id1.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        e1,
        json!({
            "event": "Purchase",
            "properties": {
                "time": 1714564800250i64,
                "distinct_id": "user-1",
                "$device_id": "dev-1",
                "$warehouse_type": "duckdb",
                "$wharf_sync": "s",
                "id": 1,
                "tstz": "2024-05-01T10:00:00Z",
                "d": "2024-05-01",
                "i": -7,
                "big": 9007199254740993i64,
                "f": 2.5,
                "b": true,
                "s": "Zürich 東京 😀 \"quoted\"",
                "dec": 12.30,
                "lst": [1, 2, null],
                "st": {"a": 1, "b": "x"},
                "m": {"k": 1},
                "blob": "AQI=",
                "campaign": "spring",
                "nested": {"x": [1, 2]}
            }
        })
    );
    let mut e2 = got[&2].clone();
    e2["properties"]
        .as_object_mut()
        .unwrap()
        .remove("$insert_id");
    assert_eq!(
        e2,
        json!({
            "event": "Sign Up",
            "properties": {
                "time": 1714608000000i64,
                "distinct_id": "$device:dev-2",
                "$device_id": "dev-2",
                "$warehouse_type": "duckdb",
                "$wharf_sync": "s",
                "id": 2
            }
        })
    );

    let rejects = read_ndjson(&report.rejects_path);
    let reasons: BTreeMap<i64, String> = rejects
        .iter()
        .map(|r| {
            (
                r["key"]["id"].as_i64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 5, "{rejects:?}");
    assert!(
        reasons[&3].contains("time column `ts` is NULL"),
        "{reasons:?}"
    );
    assert!(reasons[&4].contains("before 1971"), "{reasons:?}");
    assert!(reasons[&5].contains("future"), "{reasons:?}");
    assert!(reasons[&6].contains("placeholder"), "{reasons:?}");
    assert!(reasons[&7].contains("not a JSON object"), "{reasons:?}");
    assert!(rejects.iter().all(|r| r["sync"] == "s" && r["run_id"] == 1));
    let stats = receiver.stats();
    assert_eq!(stats.events_accepted, 2);
    assert_eq!(
        stats.events_rejected, 0,
        "wharf sent nothing the receiver refused"
    );
}

fn seed_events(fx: &Fixture, from: i64, to: i64, minute: i64) {
    fx.sql(&format!(
        "INSERT INTO ev SELECT i, 'E' || (i % 3)::VARCHAR, TIMESTAMP '2024-01-01' + to_seconds(i),
         TIMESTAMP '2024-06-01' + to_minutes({minute}) + to_microseconds(i), 'u' || (i % 50)::VARCHAR, i * 1.5
         FROM range({from}, {to}) t(i)"
    ));
}

const EV_MAPPING: &str = r#"event_name_column = "name"
time_column = "ts"
insert_time_column = "inserted_at"
user_id_column = "uid"
key_columns = ["id"]"#;

#[test]
fn second_run_sends_only_new_rows_and_a_crash_before_commit_replays_harmlessly() {
    let fx = Fixture::new();
    fx.sql("CREATE TABLE ev (id BIGINT, name VARCHAR, ts TIMESTAMP, inserted_at TIMESTAMP, uid VARCHAR, amount DOUBLE)");
    seed_events(&fx, 0, 500, 0);
    let receiver = fx.receiver("recv", ReceiverAuth::AnyCredentials);
    fx.write_config(
        "wharf.toml",
        &events_config(".state", &receiver.base_url(), "ev", EV_MAPPING),
    );
    let sync = |envs: &[(&str, &str)]| fx.wharf(&["sync", "s", "--summary-json"], envs);

    let out = sync(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["delivered"], 500);
    assert_eq!(receiver.stats().unique_events, 500);

    // New rows with later insert times: only they are sent.
    seed_events(&fx, 500, 700, 10);
    let out = sync(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rows_read"], 200, "{summary}");
    let s = receiver.stats();
    assert_eq!((s.events_accepted, s.unique_events), (700, 700));

    // A crash after delivery but before the commit: the rows arrived…
    seed_events(&fx, 700, 800, 20);
    let out = sync(&[("WHARF_CRASH_BEFORE_COMMIT", "1")]);
    assert_eq!(out.status.code(), Some(70), "{}", text(&out));
    let s = receiver.stats();
    assert_eq!((s.events_accepted, s.unique_events), (800, 800));
    // …and the next run resends exactly them, with the same $insert_ids: no new unique event.
    let out = sync(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rows_read"], 100, "{summary}");
    let s = receiver.stats();
    assert_eq!((s.events_accepted, s.unique_events), (900, 800));

    // Nothing new: nothing sent.
    let out = sync(&[]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rows_read"], 0, "{summary}");

    let status = fx.wharf(&["status"], &[]);
    let st = String::from_utf8_lossy(&status.stdout);
    assert!(st.contains("SUCCEEDED"), "{st}");
    assert!(st.contains("FAILED"), "the crashed run is marked: {st}");
}

/// `ev` with 2,500 events, every 3 sharing an insert time.
fn backlog_table(fx: &Fixture) {
    fx.sql("CREATE TABLE ev (id BIGINT, name VARCHAR, ts TIMESTAMP, inserted_at TIMESTAMP, uid VARCHAR, amount DOUBLE)");
    fx.sql(
        "INSERT INTO ev SELECT i, 'E', TIMESTAMP '2024-01-01' + to_seconds(i),
         TIMESTAMP '2024-06-01' + to_seconds(i // 3), 'u' || (i % 50)::VARCHAR, i * 1.5
         FROM range(0, 2500) t(i)",
    );
}

/// A backlog larger than a run takes (`WHARF_MAX_ROWS_PER_RUN`) is read by one `wharf sync` in
/// runs in insert-time order, each committed; rows sharing the last insert time of a run go
/// in that run.
#[test]
fn a_large_backlog_is_read_in_committed_runs_of_at_most_max_rows() {
    let fx = Fixture::new();
    backlog_table(&fx);
    let receiver = fx.receiver("recv", ReceiverAuth::AnyCredentials);
    fx.write_config(
        "wharf.toml",
        &events_config(".state", &receiver.base_url(), "ev", EV_MAPPING),
    );
    let per_run = [("WHARF_MAX_ROWS_PER_RUN", "1000")];
    let out = fx.wharf(&["sync", "s"], &per_run);
    assert!(out.status.success(), "{}", text(&out));
    let s = receiver.stats();
    assert_eq!((s.events_accepted, s.unique_events), (2500, 2500));
    let history = fx.wharf(&["history", "s", "--json"], &[]);
    let mut rows: Vec<u64> = String::from_utf8_lossy(&history.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["rows_read"]
                .as_u64()
                .unwrap()
        })
        .collect();
    rows.sort_unstable();
    // The 1,000th row shares its insert time with the next two: 1,002 rows, twice, then 496.
    assert_eq!(rows, vec![496, 1002, 1002], "{}", text(&history));
    let log = text(&out);
    assert_eq!(log.matches("run committed").count(), 3, "{log}");
    // Caught up: the next sync finds nothing.
    let out = fx.wharf(&["sync", "s", "--summary-json"], &per_run);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rows_read"], 0, "{summary}");
}

/// A one-time load larger than a run takes is read in committed runs too; it counts as loaded
/// only once its last run succeeded.
#[test]
fn a_large_one_time_load_is_read_in_committed_runs_and_then_is_done() {
    let fx = Fixture::new();
    backlog_table(&fx);
    let receiver = fx.receiver("recv", ReceiverAuth::AnyCredentials);
    let config = events_config(".state", &receiver.base_url(), "ev", EV_MAPPING)
        .replace("mode = \"append\"", "mode = \"one_time\"");
    assert!(config.contains("one_time"), "{config}");
    fx.write_config("wharf.toml", &config);
    let per_run = [("WHARF_MAX_ROWS_PER_RUN", "1000")];
    let out = fx.wharf(&["sync", "s"], &per_run);
    assert!(out.status.success(), "{}", text(&out));
    let s = receiver.stats();
    assert_eq!((s.events_accepted, s.unique_events), (2500, 2500));
    let history = fx.wharf(&["history", "s", "--json"], &[]);
    let runs: Vec<(String, u64)> = String::from_utf8_lossy(&history.stdout)
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            (
                r["mode"].as_str().unwrap().to_string(),
                r["rows_read"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut modes: Vec<_> = runs.iter().map(|(m, _)| m.as_str()).collect();
    modes.sort_unstable();
    assert_eq!(
        modes,
        ["onetime", "onetime (part)", "onetime (part)"],
        "{runs:?}"
    );
    assert_eq!(runs.iter().map(|(_, n)| n).sum::<u64>(), 2500, "{runs:?}");
    // Loaded: a second sync is refused and points at `wharf reset`.
    let out = fx.wharf(&["sync", "s"], &per_run);
    assert!(!out.status.success());
    assert!(text(&out).contains("wharf reset"), "{}", text(&out));
}

#[test]
fn one_and_two_workers_deliver_identical_events() {
    let fx = Fixture::new();
    fx.sql("CREATE TABLE ev (id BIGINT, name VARCHAR, ts TIMESTAMP, inserted_at TIMESTAMP, uid VARCHAR, amount DOUBLE)");
    seed_events(&fx, 0, 30_000, 0);
    let mut received = Vec::new();
    for workers in ["1", "2"] {
        let receiver = fx.receiver(&format!("recv{workers}"), ReceiverAuth::AnyCredentials);
        fx.write_config(
            "wharf.toml",
            &events_config(
                &format!(".state{workers}"),
                &receiver.base_url(),
                "ev",
                EV_MAPPING,
            ),
        );
        let out = fx.wharf(&["sync", "s", "--workers", workers, "--summary-json"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        let mut events: Vec<String> = receiver
            .events()
            .unwrap()
            .iter()
            .map(|e| e.to_string())
            .collect();
        events.sort();
        assert_eq!(events.len(), 30_000);
        received.push(events);
    }
    assert_eq!(received[0], received[1]);
}

/// `mode = "one_time"`: the first run loads every row once; running it again is refused with a
/// message that points at `wharf reset`, which makes the next run load the table again.
#[test]
fn a_one_time_sync_loads_once_and_again_only_after_reset() {
    let fx = Fixture::new();
    fx.sql(
        "CREATE TABLE ev AS SELECT i AS id, 'E' AS name, TIMESTAMP '2024-01-01' + to_seconds(i) AS ts,
           'u' || (i % 7) AS uid FROM range(500) t(i);",
    );
    let receiver = fx.receiver("recv", ReceiverAuth::AnyCredentials);
    fx.write_config(
        "wharf.toml",
        &events_config(
            ".state",
            &receiver.base_url(),
            "ev",
            "event_name_column = \"name\"\ntime_column = \"ts\"\nuser_id_column = \"uid\"\nkey_columns = [\"id\"]",
        )
        .replace("mode = \"append\"", "mode = \"one_time\""),
    );
    let out = fx.wharf(&["sync", "s"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(receiver.stats().events_received, 500);
    // More rows arrive; a one-time sync does not pick them up.
    fx.sql(
        "INSERT INTO ev SELECT i, 'E', TIMESTAMP '2024-01-01' + to_seconds(i), 'u1' FROM range(500, 600) t(i);",
    );
    let again = fx.wharf(&["sync", "s"], &[]);
    assert!(!again.status.success(), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("one_time and already loaded its table (run 1")
            && err.contains("`wharf reset s`"),
        "{err}"
    );
    assert!(!err.contains("not supported"), "{err}");
    assert_eq!(receiver.stats().events_received, 500, "nothing sent");
    let reset = fx.wharf(&["reset", "s"], &[]);
    assert!(reset.status.success(), "{}", text(&reset));
    assert!(
        String::from_utf8_lossy(&reset.stdout).contains("one-time load"),
        "{}",
        text(&reset)
    );
    let reload = fx.wharf(&["sync", "s"], &[]);
    assert!(reload.status.success(), "{}", text(&reload));
    assert_eq!(receiver.stats().events_received, 1100);
    assert_eq!(
        receiver.stats().unique_events,
        600,
        "the reload resent the same $insert_ids"
    );
}

/// A row that arrives late, with an insert time older than the watermark: a sync with
/// `lookback` covering it sends it; one without (documented) never does.
#[test]
fn late_rows_are_sent_within_the_lookback_window_and_missed_without_it() {
    let fx = Fixture::new();
    fx.sql(
        "CREATE TABLE ev AS SELECT i AS id, 'E' AS name, TIMESTAMP '2024-01-01 10:00:00' + to_minutes(i) AS ts,
           'u' || (i % 7) AS uid, TIMESTAMP '2024-01-01 10:00:00' + to_minutes(i) AS inserted_at
         FROM range(10) t(i);",
    );
    let receiver = fx.receiver("recv", ReceiverAuth::AnyCredentials);
    let mapping = "event_name_column = \"name\"\ntime_column = \"ts\"\nuser_id_column = \"uid\"\ninsert_time_column = \"inserted_at\"\nkey_columns = [\"id\"]";
    let base = events_config(".state", &receiver.base_url(), "ev", mapping);
    let sync_start = base.find("[[syncs]]").expect("a sync");
    let with_window = base[sync_start..]
        .replace("name = \"s\"", "name = \"late\"")
        .replace("mode = \"append\"", "mode = \"append\"\nlookback = \"1h\"");
    fx.write_config("wharf.toml", &format!("{base}\n{with_window}"));
    for sync in ["s", "late"] {
        let out = fx.wharf(&["sync", sync], &[]);
        assert!(out.status.success(), "{}", text(&out));
    }
    // Inserted now, but with an insert time 30 minutes before the watermark (10:09).
    fx.sql("INSERT INTO ev VALUES (100, 'E', TIMESTAMP '2024-01-01 09:40:00', 'u1', TIMESTAMP '2024-01-01 09:39:00');");
    for sync in ["s", "late"] {
        let out = fx.wharf(&["sync", sync], &[]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let ids_of = |sync: &str| -> Vec<i64> {
        let mut ids: Vec<i64> = receiver
            .events()
            .unwrap()
            .iter()
            .filter(|e| e["properties"]["$wharf_sync"] == sync)
            .map(|e| e["properties"]["id"].as_i64().unwrap())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    assert!(
        !ids_of("s").contains(&100),
        "without lookback the late row is missed"
    );
    assert_eq!(ids_of("s").len(), 10);
    assert!(
        ids_of("late").contains(&100),
        "the window covers the late row"
    );
    assert_eq!(ids_of("late").len(), 11);
    // Rows in the window were sent again, under the same $insert_id (deduplicated).
    let stats = receiver.stats();
    assert_eq!(stats.unique_events, 21, "{stats:?}");
    // The watermark never moves back.
    let status = fx.wharf(&["status"], &[]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("2024-01-01T10:09:00"),
        "{}",
        text(&status)
    );
}
