//! PostgreSQL (and Redshift through the same connector) against the real server on
//! 127.0.0.1:5432 (`.ci/run` starts it with `wal_level = logical`). Each test works in its own
//! schema, named after the test and the process, and drops it (with its replication slot and
//! publication) at the end.
//!
//! Covered: every documented type through both decoders (a snapshot read and logical
//! decoding give the same JSON), append by cursor, mirror by snapshot diff, mirror by logical
//! decoding (inserts, updates, deletes, key changes, a transaction of many rows, idle polls),
//! a crash between delivery and the slot's confirmation (the changes are replayed, nothing is
//! lost), a table without a primary key, a missing table, bad credentials (the password never
//! appears), TLS, and `type = "redshift"` (no change capture: snapshot diffs).

mod common;

use std::collections::BTreeMap;

use common::{ops, read_ndjson, text, Fixture};
use serde_json::Value;
use wharf::warehouse::postgres::logical::Capture;
use wharf::warehouse::postgres::{Flavor, PgSettings, PostgresWarehouse, SslMode};
use wharf::warehouse::{Partition, PartsOf, SourceRef, Warehouse};

/// A schema of its own on the test server, dropped (with the sync's slot) on drop.
struct Pg {
    schema: String,
}

fn settings(sslmode: SslMode) -> PgSettings {
    PgSettings {
        sslmode,
        ..PgSettings::new("127.0.0.1", 5432, "test", "postgres")
    }
}

fn warehouse() -> PostgresWarehouse {
    PostgresWarehouse::new("pg", settings(SslMode::Disable))
}

impl Pg {
    fn new(test: &str) -> Pg {
        let pg = Pg {
            schema: format!("wt_{test}_{}", std::process::id()),
        };
        pg.drop_capture();
        pg.exec(&format!(
            "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0};",
            pg.schema
        ));
        pg
    }

    /// Runs SQL statements in the test's schema.
    fn exec(&self, sql: &str) {
        let w = warehouse();
        let sql = format!("SET search_path = {}; {sql}", self.schema);
        w.block(async {
            let c = w.connect().await?;
            c.batch_execute(&sql)
                .await
                .map_err(|e| w.err(&SourceRef::Query(sql.clone()), e))
        })
        .unwrap_or_else(|e| panic!("sql failed: {e}"));
    }

    fn table(&self, t: &str) -> String {
        format!("{}.{t}", self.schema)
    }

    fn capture(&self) -> Capture {
        Capture::for_sync(&self.schema, &self.table("t"))
    }

    fn drop_capture(&self) {
        let _ = warehouse().drop_capture(&self.capture());
    }

    /// A config with sync `<schema>` reading `t` into out.ndjson.
    fn config(&self, kind: &str, table_type: &str, mode: &str, extra: &str) -> String {
        format!(
            r#"state_dir = ".wharf"
[warehouses.pg]
type = "{kind}"
host = "127.0.0.1"
port = 5432
database = "test"
user = "postgres"
sslmode = "disable"
[destinations.out]
type = "file"
path = "out.ndjson"
[[syncs]]
name = "{name}"
warehouse = "pg"
table = "{table}"
table_type = "{table_type}"
mode = "{mode}"
destinations = ["out"]
{extra}
"#,
            name = self.schema,
            table = self.table("t"),
        )
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.drop_capture();
        let w = warehouse();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let _ = w.block(async {
            let c = w.connect().await?;
            let _ = c.batch_execute(&sql).await;
            Ok(())
        });
    }
}

/// Runs `wharf sync` for the fixture's sync and returns the lines it appended to out.ndjson.
fn sync(f: &Fixture, pg: &Pg, seen: &mut usize) -> Vec<Value> {
    let out = f.wharf(&["sync", &pg.schema, "-c", "wharf.toml"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let all = read_ndjson(&f.path("out.ndjson"));
    let new = all[*seen..].to_vec();
    *seen = all.len();
    new
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const USERS: &str = r#"primary_key = ["id"]
[syncs.mapping]
user_id_column = "id""#;

const TYPES_TABLE: &str = "CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE t (id text PRIMARY KEY, n numeric(10,2), f numeric, big bigint, s smallint,
  r real, d double precision, b boolean, j json, jb jsonb, u uuid, by bytea, dt date,
  ts timestamp, tz timestamptz, ia int[], ta text[], iv interval, m mood, vc varchar(5),
  ch char(3), nul text);";

const TYPES_ROW: &str = "(ID, 12.34, 1.23456789012345, 9000000000, -3, 1.5, 2.25, true,
  '{\"a\": 1}', '{\"b\": [1, 2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff',
  '2024-02-29', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05+02', '{1,2,NULL}',
  '{\"a b\",c}', '1 day 2 hours', 'happy', 'abc', 'x', NULL)";

#[test]
fn every_type_reads_the_same_through_snapshots_and_logical_decoding() {
    let f = Fixture::new();
    let pg = Pg::new("types");
    pg.exec(TYPES_TABLE);
    pg.exec(&format!(
        "INSERT INTO t VALUES {}",
        TYPES_ROW.replace("ID", "'snap'")
    ));
    f.write_config(
        "wharf.toml",
        &pg.config("postgres", "users", "mirror", USERS),
    );
    let mut seen = 0;
    // First run: the initial snapshot (binary format).
    let first = sync(&f, &pg, &mut seen);
    assert_eq!(first.len(), 1, "{first:?}");
    let snap = first[0]["after"].clone();
    let want = serde_json::json!({
        "n": 12.34, "f": 1.23456789012345, "big": 9000000000i64, "s": -3, "r": 1.5, "d": 2.25,
        "b": true, "j": "{\"a\": 1}", "jb": "{\"b\": [1, 2]}",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "by": "AP8=", "dt": "2024-02-29",
        "ts": "2024-01-02T03:04:05.123456Z", "tz": "2024-01-02T01:04:05Z",
        "ia": [1, 2, null], "ta": ["a b", "c"], "iv": "1 day 02:00:00", "m": "happy",
        "vc": "abc", "ch": "x  "
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&snap[k], v, "column {k}: {snap}");
    }
    assert!(snap.get("nul").is_none(), "NULLs are not $set: {snap}");
    // The same row through logical decoding (text format) gives the same JSON.
    pg.exec(&format!(
        "INSERT INTO t VALUES {}",
        TYPES_ROW.replace("ID", "'cdc'")
    ));
    let second = sync(&f, &pg, &mut seen);
    assert_eq!(ops(&second), map(&[("cdc", "insert")]));
    assert_eq!(second[0]["after"], snap);
}

/// Calls of the statements that name `schema` (pg_stat_statements keeps identifiers), by
/// their first words.
fn statements_on(schema: &str) -> BTreeMap<String, i64> {
    let w = warehouse();
    let sql = format!(
        "SELECT left(query, 30), sum(calls)::bigint FROM pg_stat_statements \
         WHERE query LIKE '%{schema}%' AND query NOT LIKE '%pg_stat_statements%' GROUP BY 1"
    );
    let rows = w
        .block(async {
            let c = w.connect().await?;
            c.query(&sql, &[])
                .await
                .map_err(|e| w.err(&SourceRef::Query(sql.clone()), e))
        })
        .expect("pg_stat_statements (tests/postgres-up.sh loads it)");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// `wharf sync` of `pg`'s sync, continuous with 100 ms polls, logging to `continuous.log`.
fn continuous(f: &Fixture, pg: &Pg) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "sync",
            &pg.schema,
            "-c",
            "wharf.toml",
            "--continuous",
            "--interval",
            "100ms",
        ])
        .current_dir(f.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(f.path("continuous.log")).expect("log file"))
        .spawn()
        .expect("start wharf")
}

/// Waits (30 s at most) until `out.ndjson` holds `n` records.
fn wait_for_records(f: &Fixture, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while read_ndjson(&f.path("out.ndjson")).len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} records never came"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Stops a continuous `wharf sync` as Ctrl-C would, and waits for it.
fn stop(mut child: std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// A continuous append sync with nothing new costs one statement per poll (a count past the
/// watermark) and records no run; new rows are read and sent at the next poll, each poll an
/// epoch of the one dataflow the process keeps.
#[test]
fn idle_continuous_polls_cost_one_statement_and_record_no_run() {
    let f = Fixture::new();
    let pg = Pg::new("idle");
    pg.exec(
        "CREATE TABLE t (id int, name text, at timestamptz);
         INSERT INTO t SELECT g, 'e' || g, timestamptz '2024-01-01' + g * interval '1 minute'
         FROM generate_series(1, 100) g;",
    );
    let extra = "[syncs.mapping]\nevent_name_column = \"name\"\ntime_column = \"at\"";
    f.write_config(
        "wharf.toml",
        &pg.config("postgres", "events", "append", extra),
    );
    let mut seen = 0;
    assert_eq!(sync(&f, &pg, &mut seen).len(), 100);
    let before = statements_on(&pg.schema);
    let child = continuous(&f, &pg);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let idle = statements_on(&pg.schema);
    let delta = |key: &str, a: &BTreeMap<String, i64>, b: &BTreeMap<String, i64>| -> i64 {
        b.iter()
            .filter(|(q, _)| q.starts_with(key))
            .map(|(q, n)| n - a.get(q).copied().unwrap_or(0))
            .sum()
    };
    let probes = delta("SELECT count(*)", &before, &idle);
    let reads = delta("SELECT \"id\"", &before, &idle);
    let all = delta("", &before, &idle);
    assert!(
        probes >= 10,
        "about 30 polls in 3 s: {probes} probes; {idle:?}"
    );
    assert_eq!(reads, 0, "idle polls read nothing: {idle:?}");
    assert_eq!(all, probes, "one statement per idle poll: {idle:?}");
    // Two polls that find rows: two epochs of the one long-lived dataflow.
    for (n, at) in [(101, "2025-01-01"), (102, "2025-01-02")] {
        pg.exec(&format!(
            "INSERT INTO t VALUES ({n}, 'new', timestamptz '{at}')"
        ));
        wait_for_records(&f, n);
    }
    stop(child);
    assert_eq!(
        read_ndjson(&f.path("out.ndjson")).len(),
        102,
        "each row once"
    );
    let history = f.wharf(&["history", &pg.schema, "--json", "-c", "wharf.toml"], &[]);
    let runs = String::from_utf8_lossy(&history.stdout).lines().count();
    assert_eq!(
        runs,
        3,
        "the first load and the two runs that found new rows: {}",
        text(&history)
    );
    let log = std::fs::read_to_string(f.path("continuous.log")).unwrap_or_default();
    assert_eq!(
        log.matches("long-lived dataflow started").count(),
        1,
        "one dataflow for every poll of the process: {log}"
    );
}

/// A continuous full sync of user profiles: every poll's snapshot is an epoch of the one
/// snapshot-diff dataflow the process keeps, diffed against the last committed snapshot.
#[test]
fn continuous_full_sync_diffs_each_snapshot_in_one_dataflow() {
    let f = Fixture::new();
    let pg = Pg::new("fulllive");
    pg.exec(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'a' FROM generate_series(1, 500) g;",
    );
    f.write_config("wharf.toml", &pg.config("postgres", "users", "full", USERS));
    let child = continuous(&f, &pg);
    wait_for_records(&f, 500);
    pg.exec("UPDATE t SET v = 'b' WHERE id <= 3; INSERT INTO t VALUES (501, 'c');");
    wait_for_records(&f, 504);
    // Polls in between find the same snapshot: nothing more is sent.
    std::thread::sleep(std::time::Duration::from_millis(600));
    stop(child);
    let all = read_ndjson(&f.path("out.ndjson"));
    let log = std::fs::read_to_string(f.path("continuous.log")).unwrap_or_default();
    assert_eq!(
        all.len(),
        504,
        "the first snapshot, then 3 updates and 1 insert: {log}"
    );
    let got = ops(&all[500..]);
    let want = map(&[
        ("1", "update"),
        ("2", "update"),
        ("3", "update"),
        ("501", "insert"),
    ]);
    assert_eq!(got, want, "{log}");
    assert_eq!(
        log.matches("long-lived dataflow started").count(),
        1,
        "one dataflow for every snapshot of the process: {log}"
    );
}

/// A continuous mirror through logical decoding keeps its resolved sync (and the warehouse's
/// connection) across polls; a column added meanwhile is seen: the sync is resolved again and
/// the new column's values are sent.
#[test]
fn continuous_mirror_sees_a_column_added_between_polls() {
    let f = Fixture::new();
    let pg = Pg::new("addcol");
    pg.exec("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');");
    let extra = format!("change_capture = \"logical\"\n{USERS}");
    f.write_config(
        "wharf.toml",
        &pg.config("postgres", "users", "mirror", &extra),
    );
    let child = continuous(&f, &pg);
    wait_for_records(&f, 1);
    pg.exec("INSERT INTO t VALUES (2, 'b');");
    wait_for_records(&f, 2);
    pg.exec("ALTER TABLE t ADD COLUMN city text; INSERT INTO t VALUES (3, 'c', 'Oslo');");
    wait_for_records(&f, 3);
    stop(child);
    let all = read_ndjson(&f.path("out.ndjson"));
    let log = std::fs::read_to_string(f.path("continuous.log")).unwrap_or_default();
    assert_eq!(all.len(), 3, "{log}");
    assert_eq!(all[2]["key"], 3, "{}", all[2]);
    assert_eq!(all[2]["after"]["city"], "Oslo", "{}", all[2]);
    assert!(
        log.contains("the table's columns changed: resolving it again"),
        "{log}"
    );
}

/// The warehouse connection lost mid-read (the server terminates the backend): the run fails
/// with nothing committed, and the next run delivers every row.
#[test]
fn a_connection_cut_mid_read_fails_the_run_uncommitted_and_the_next_run_is_exact() {
    let f = Fixture::new();
    let pg = Pg::new("cut");
    pg.exec(
        "CREATE TABLE t (id int, name text, at timestamptz);
         INSERT INTO t SELECT g, 'e' || g, timestamptz '2024-01-01' + g * interval '1 second'
         FROM generate_series(1, 300000) g;",
    );
    let extra = "[syncs.mapping]\nevent_name_column = \"name\"\ntime_column = \"at\"";
    f.write_config(
        "wharf.toml",
        &pg.config("postgres", "events", "append", extra),
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["sync", &pg.schema, "-c", "wharf.toml"])
        .current_dir(f.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start wharf");
    // Cut wharf's reading connection as soon as it is reading the table.
    let w = warehouse();
    let cut = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'wharf' AND pid <> pg_backend_pid() AND query LIKE '%{}%' \
         AND query NOT LIKE '%count(*)%'",
        pg.schema
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n: i64 = w
            .block(async {
                let c = w.connect().await?;
                c.query_one(&cut, &[])
                    .await
                    .map_err(|e| w.err(&SourceRef::Query(cut.clone()), e))
            })
            .expect("terminate")
            .get(0);
        if n > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the read never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("terminat") || text(&out).contains("connection"),
        "{}",
        text(&out)
    );
    let status = f.wharf(&["status", "-c", "wharf.toml"], &[]);
    assert!(!String::from_utf8_lossy(&status.stdout).contains("SUCCEEDED"));
    let mut seen = read_ndjson(&f.path("out.ndjson")).len();
    let partial = seen;
    let rest = sync(&f, &pg, &mut seen);
    // The failed run committed nothing: the next one sends every row (the earlier part again,
    // under the same $insert_ids).
    assert_eq!(rest.len(), 300_000, "after {partial} from the cut run");
}

#[test]
fn append_sends_rows_past_the_watermark() {
    let f = Fixture::new();
    let pg = Pg::new("append");
    pg.exec(
        "CREATE TABLE t (id int, name text, at timestamptz);
         INSERT INTO t SELECT g, 'e' || g, timestamptz '2024-01-01' + g * interval '1 minute'
         FROM generate_series(1, 20000) g;",
    );
    let extra = r#"[syncs.mapping]
event_name_column = "name"
time_column = "at""#;
    f.write_config(
        "wharf.toml",
        &pg.config("postgres", "events", "append", extra),
    );
    let tables = warehouse().list_tables().unwrap();
    assert!(tables.contains(&pg.table("t")), "{tables:?}");
    let mut seen = 0;
    assert_eq!(sync(&f, &pg, &mut seen).len(), 20000);
    assert!(sync(&f, &pg, &mut seen).is_empty());
    pg.exec("INSERT INTO t VALUES (20001, 'late', timestamptz '2025-01-01 00:00:00.000001+00')");
    let new = sync(&f, &pg, &mut seen);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0]["event"], "late");
}

#[test]
fn partitioned_reads_hold_every_row_once() {
    let pg = Pg::new("parts");
    // A composite key with NULLs in it (hashed as the row's text, so NULL keys land in a part).
    pg.exec(
        "CREATE TABLE t (id bigint, region text, n int);
         INSERT INTO t SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE 'r' || (i % 5) END, i
         FROM generate_series(0, 19999) i;",
    );
    let wh = warehouse();
    let src = SourceRef::Table(pg.table("t"));
    let key = ["id".to_string(), "region".to_string()];
    assert_eq!(common::parts_cover_the_table(&wh, &src, &key, ""), 20000);
    assert_eq!(
        common::parts_cover_the_table(&wh, &src, &key, "WHERE n >= 5000"),
        15000
    );
    // Redshift has no `hashtext`: its reads stay whole.
    let redshift = PostgresWarehouse::new(
        "rs",
        PgSettings {
            flavor: Flavor::Redshift,
            ..settings(SslMode::Disable)
        },
    );
    assert_eq!(redshift.partitions(&key, 4), vec![Partition::whole()]);

    // The parts the workers of a run read at once: the table by page ranges, a query by the
    // key's hash, all inside the snapshot exported when the read was split — rows committed
    // after that are not read by any part.
    let wh = std::sync::Arc::new(wh);
    let query = SourceRef::Query(format!("SELECT * FROM {} WHERE n < 10000", pg.table("t")));
    for (src, filter, count) in [(&src, "", 3), (&src, "WHERE n >= 5000", 2), (&query, "", 3)] {
        let parts = wh
            .clone()
            .read_parts(PartsOf {
                src,
                filter,
                key: &key,
                count,
            })
            .unwrap();
        assert_eq!(parts.len(), count, "{src:?}");
        pg.exec("INSERT INTO t SELECT i, 'late', i FROM generate_series(100000, 100099) i;");
        let mut all = common::ids_of_parts(parts);
        let len = all.len();
        all.dedup();
        assert_eq!(all.len(), len, "no row twice");
        assert!(
            all.iter().all(|id| *id < 100000),
            "no row committed after the split"
        );
        let want = match (src, filter) {
            (SourceRef::Query(_), _) => 10000,
            (_, "") => 20000,
            _ => 15000,
        };
        assert_eq!(all.len(), want, "{src:?} {filter}");
        pg.exec("DELETE FROM t WHERE id >= 100000;");
    }
}

#[test]
fn full_sends_upserts_and_counts_deletes() {
    let f = Fixture::new();
    let pg = Pg::new("full");
    pg.exec(
        "CREATE TABLE t (id int PRIMARY KEY, plan text);
         INSERT INTO t SELECT g, 'free' FROM generate_series(1, 50) g;",
    );
    f.write_config("wharf.toml", &pg.config("postgres", "users", "full", USERS));
    let mut seen = 0;
    assert_eq!(sync(&f, &pg, &mut seen).len(), 50);
    pg.exec("UPDATE t SET plan = 'pro' WHERE id = 7; DELETE FROM t WHERE id = 8;");
    let sent = sync(&f, &pg, &mut seen);
    assert_eq!(
        ops(&sent),
        map(&[("7", "update")]),
        "full mode sends no deletes"
    );
    assert_eq!(sent[0]["after"]["plan"], "pro");
    // Full mode never touches change capture.
    assert!(!warehouse().capture_exists(&pg.capture()).unwrap());
}

#[test]
fn mirror_diffs_snapshots_when_capture_is_off() {
    let f = Fixture::new();
    let pg = Pg::new("mdiff");
    pg.exec(
        "CREATE TABLE t (id text PRIMARY KEY, score int);
         INSERT INTO t SELECT 'u' || g, g FROM generate_series(1, 100) g;",
    );
    let extra = format!("change_capture = \"snapshot\"\n{USERS}");
    f.write_config(
        "wharf.toml",
        &pg.config("postgres", "users", "mirror", &extra),
    );
    let mut seen = 0;
    assert_eq!(sync(&f, &pg, &mut seen).len(), 100);
    pg.exec(
        "UPDATE t SET score = -1 WHERE id = 'u1'; DELETE FROM t WHERE id = 'u2';
         INSERT INTO t VALUES ('new', 0);",
    );
    assert_eq!(
        ops(&sync(&f, &pg, &mut seen)),
        map(&[("u1", "update"), ("u2", "delete"), ("new", "insert")])
    );
    assert!(!warehouse().capture_exists(&pg.capture()).unwrap());
}

#[test]
fn mirror_reads_logical_decoding_and_confirms_after_delivery() {
    let f = Fixture::new();
    let pg = Pg::new("mcdc");
    pg.exec(
        "CREATE TABLE t (id text PRIMARY KEY, score int, city text);
         INSERT INTO t SELECT 'u' || g, g, 'c' FROM generate_series(1, 1000) g;",
    );
    let extra = format!("change_capture = \"logical\"\n{USERS}");
    f.write_config(
        "wharf.toml",
        &pg.config("postgres", "users", "mirror", &extra),
    );
    let check = f.wharf(&["check", "-c", "wharf.toml"], &[]);
    assert!(
        text(&check).contains("wal_level = logical: mirror syncs use change capture"),
        "{}",
        text(&check)
    );
    let mut seen = 0;
    // The initial snapshot, then nothing.
    assert_eq!(sync(&f, &pg, &mut seen).len(), 1000);
    assert!(warehouse().capture_exists(&pg.capture()).unwrap());
    assert!(sync(&f, &pg, &mut seen).is_empty());
    // Single-row changes, a key change, and a transaction of 5000 rows.
    pg.exec(
        "UPDATE t SET score = -1, city = NULL WHERE id = 'u1';
         DELETE FROM t WHERE id = 'u2';
         UPDATE t SET id = 'u3b' WHERE id = 'u3';
         INSERT INTO t VALUES ('tmp', 1, 'x'); DELETE FROM t WHERE id = 'tmp';
         BEGIN; INSERT INTO t SELECT 'b' || g, g, 'big' FROM generate_series(1, 5000) g;
         UPDATE t SET score = 0 WHERE id = 'b1'; COMMIT;",
    );
    let preview = f.wharf(&["preview", &pg.schema, "-c", "wharf.toml"], &[]);
    assert!(preview.status.success(), "{}", text(&preview));
    let changes = sync(&f, &pg, &mut seen);
    let got = ops(&changes);
    // `tmp`, inserted and deleted within the run's window after a committed run, was never
    // in the destination: nothing is sent for it.
    assert_eq!(
        got.len(),
        5000 + 4,
        "{:?}",
        got.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!(got["u1"], "update");
    assert_eq!(got["u2"], "delete");
    assert_eq!(got["u3"], "delete");
    assert_eq!(got["u3b"], "insert");
    assert!(!got.contains_key("tmp"), "{:?}", got.get("tmp"));
    assert_eq!(got["b1"], "insert");
    assert!(got
        .iter()
        .filter(|(k, _)| k.starts_with('b'))
        .all(|(_, v)| v == "insert"));
    let u1 = changes.iter().find(|e| e["key"] == "u1").unwrap();
    assert_eq!(u1["after"]["score"], -1);
    assert!(u1["after"].get("city").is_none(), "NULL now: {u1}");
    // The slot moved: nothing again.
    assert!(sync(&f, &pg, &mut seen).is_empty());
    let status = f.wharf(&["status", "-c", "wharf.toml"], &[]);
    assert!(text(&status).contains("+5001 ~1 -2"), "{}", text(&status));
    // `wharf reset`: the slot goes, and the next run starts over with a snapshot of everything.
    let reset = f.wharf(&["reset", &pg.schema, "-c", "wharf.toml"], &[]);
    assert!(
        reset.status.success() && text(&reset).contains("the replication slot and publication"),
        "{}",
        text(&reset)
    );
    assert!(!warehouse().capture_exists(&pg.capture()).unwrap());
    assert_eq!(sync(&f, &pg, &mut seen).len(), 1000 - 1 + 5000);
    assert!(warehouse().capture_exists(&pg.capture()).unwrap());
}

/// A backlog larger than one run takes (`WHARF_MAX_CHANGES_PER_RUN`, 100,000 by default) is
/// caught up by one `wharf sync`: several runs, each committed, all epochs of one dataflow.
#[test]
fn one_sync_catches_up_a_backlog_in_committed_epochs_of_one_dataflow() {
    let f = Fixture::new();
    let pg = Pg::new("backlog");
    pg.exec("CREATE TABLE t (id int PRIMARY KEY, v text);");
    f.write_config(
        "wharf.toml",
        &pg.config("postgres", "users", "mirror", USERS),
    );
    let mut seen = 0;
    assert!(
        sync(&f, &pg, &mut seen).is_empty(),
        "the first snapshot is empty"
    );
    // 25 transactions of 100 rows: the stream is read in whole transactions.
    let inserts: String = (0..25)
        .map(|i| {
            format!(
                "BEGIN; INSERT INTO t SELECT g, 'x' FROM generate_series({}, {}) g; COMMIT;",
                i * 100 + 1,
                i * 100 + 100
            )
        })
        .collect();
    pg.exec(&inserts);
    let out = f.wharf(
        &["sync", &pg.schema, "-c", "wharf.toml"],
        &[("WHARF_MAX_CHANGES_PER_RUN", "1000")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let all = read_ndjson(&f.path("out.ndjson"));
    let got = ops(&all[seen..]);
    assert_eq!(got.len(), 2500, "every change, once");
    assert!(got.values().all(|op| op == "insert"));
    let log = text(&out);
    assert_eq!(
        log.matches("run committed").count(),
        3,
        "1,000 + 1,000 + 500 changes: {log}"
    );
    assert_eq!(
        log.matches("long-lived dataflow started").count(),
        1,
        "one dataflow for the three runs: {log}"
    );
    seen = all.len();
    assert!(sync(&f, &pg, &mut seen).is_empty(), "caught up");
    // One transaction larger than a run's cap is read whole in one run; the catch-up run
    // that finds nothing more records nothing.
    pg.exec("INSERT INTO t SELECT g, 'y' FROM generate_series(3001, 4500) g;");
    let out = f.wharf(
        &["sync", &pg.schema, "-c", "wharf.toml"],
        &[("WHARF_MAX_CHANGES_PER_RUN", "1000")],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read_ndjson(&f.path("out.ndjson")).len() - seen, 1500);
    let log = text(&out);
    assert_eq!(log.matches("run committed").count(), 1, "{log}");
    assert_eq!(log.matches("changes: 1500 inserted").count(), 1, "{log}");
}

/// Runs `wharf sync` made to stop after delivery, before its commit; returns what it sent.
fn sync_crashing_before_commit(f: &Fixture, pg: &Pg, seen: &mut usize) -> Vec<Value> {
    let crashed = f.wharf(
        &["sync", &pg.schema, "-c", "wharf.toml"],
        &[("WHARF_CRASH_BEFORE_COMMIT", "1")],
    );
    assert_eq!(crashed.status.code(), Some(70), "{}", text(&crashed));
    let sent = read_ndjson(&f.path("out.ndjson"))[*seen..].to_vec();
    *seen += sent.len();
    sent
}

/// A logical mirror of ten rows `(id, v = 'a')` in schema `name`, its first snapshot sent.
fn ten_rows_mirrored(name: &str) -> (Fixture, Pg, usize) {
    let f = Fixture::new();
    let pg = Pg::new(name);
    pg.exec(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'a' FROM generate_series(1, 10) g;",
    );
    f.write_config(
        "wharf.toml",
        &pg.config("postgres", "users", "mirror", USERS),
    );
    let mut seen = 0;
    assert_eq!(sync(&f, &pg, &mut seen).len(), 10);
    (f, pg, seen)
}

#[test]
fn crash_before_the_slot_moves_replays_the_changes() {
    let (f, pg, mut seen) = ten_rows_mirrored("crash");
    pg.exec(
        "UPDATE t SET v = 'b' WHERE id <= 3; DELETE FROM t WHERE id = 10;
         INSERT INTO t VALUES (11, 'n');",
    );
    let sent = sync_crashing_before_commit(&f, &pg, &mut seen);
    let mut want = map(&[
        ("1", "update"),
        ("2", "update"),
        ("3", "update"),
        ("10", "delete"),
        ("11", "insert"),
    ]);
    assert_eq!(ops(&sent), want);
    // Delivered but not confirmed: the next run sends the same changes again, then commits.
    // Row 11, deleted meanwhile, is in its window inserted and deleted; the crashed run
    // delivered the insert, so its delete is sent.
    pg.exec("DELETE FROM t WHERE id = 11;");
    want.insert("11".into(), "delete".into());
    assert_eq!(ops(&sync(&f, &pg, &mut seen)), want);
    assert!(sync(&f, &pg, &mut seen).is_empty());
}

/// The held `(key, fingerprint)` trace outlives the process: an update that leaves a row as a
/// run before sent it sends nothing, also from a new `wharf sync`. The keys of a run that
/// stopped before its commit are dropped from it (the destination may hold what that run
/// sent), so a change back to the last committed values is sent, not taken for "as it was".
#[test]
fn the_held_trace_outlives_the_process_and_forgets_what_an_uncommitted_run_sent() {
    let (f, pg, mut seen) = ten_rows_mirrored("heldpersist");
    pg.exec("UPDATE t SET v = 'x' WHERE id IN (1, 2);");
    assert_eq!(
        ops(&sync(&f, &pg, &mut seen)),
        map(&[("1", "update"), ("2", "update")])
    );
    // A new process: the same values again are no change; row 3 changes.
    pg.exec("UPDATE t SET v = 'x' WHERE id IN (1, 2); UPDATE t SET v = 'y' WHERE id = 3;");
    assert_eq!(ops(&sync(&f, &pg, &mut seen)), map(&[("3", "update")]));
    // A run that sends row 2 as `z` and stops before its commit.
    pg.exec("UPDATE t SET v = 'z' WHERE id = 2;");
    let sent = sync_crashing_before_commit(&f, &pg, &mut seen);
    assert_eq!(ops(&sent), map(&[("2", "update")]));
    // Row 2 back to `x`, the value of the last commit, and row 1 to `x` again: row 2 is sent
    // (the destination holds `z`), row 1 is not.
    pg.exec("UPDATE t SET v = 'x' WHERE id IN (1, 2);");
    let last = sync(&f, &pg, &mut seen);
    assert_eq!(ops(&last), map(&[("2", "update")]));
    assert_eq!(last[0]["after"]["v"], "x");
    assert!(sync(&f, &pg, &mut seen).is_empty());
    assert!(
        f.path(&format!(".wharf/held/{}/base", pg.schema)).exists(),
        "the held state is kept on disk"
    );
    // Logs that outgrow the base end the dataflow after its commit; the next run's new
    // dataflow folds them, and what it holds stays right.
    pg.exec(
        "BEGIN; UPDATE t SET v = 'p' WHERE id <= 4; COMMIT;
         BEGIN; UPDATE t SET v = 'q' WHERE id BETWEEN 5 AND 8; COMMIT;
         BEGIN; UPDATE t SET v = 'x' WHERE id IN (1, 2); UPDATE t SET v = 'q' WHERE id = 5;
         COMMIT;",
    );
    let out = f.wharf(
        &["sync", &pg.schema, "-c", "wharf.toml"],
        &[
            ("WHARF_MAX_CHANGES_PER_RUN", "4"),
            ("WHARF_HELD_FOLD_AFTER", "1"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert_eq!(log.matches("run committed").count(), 3, "{log}");
    assert_eq!(
        log.matches("long-lived dataflow started").count(),
        3,
        "a new dataflow after each fold: {log}"
    );
    let all = read_ndjson(&f.path("out.ndjson"));
    let sent = all[seen..].to_vec();
    seen = all.len();
    // Runs of 4, 4 and 3 changes: rows 1 and 2 went to `p` and back to `x` (sent twice);
    // row 5's last change sets the value the run before sent (held across the fold: not
    // sent).
    assert_eq!(ops(&sent).len(), 8);
    assert_eq!(sent.len(), 4 + 4 + 2, "{sent:?}");
    pg.exec("UPDATE t SET v = 'x' WHERE id IN (1, 2); UPDATE t SET v = 'q' WHERE id = 5;");
    assert!(
        sync(&f, &pg, &mut seen).is_empty(),
        "after the folds the held state knows rows 1, 2 and 5 as they are"
    );
}

#[test]
fn table_without_primary_key_cannot_be_captured() {
    let f = Fixture::new();
    let pg = Pg::new("nopk");
    pg.exec("CREATE TABLE t (id int, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b');");
    let logical = format!("change_capture = \"logical\"\n{USERS}");
    f.write_config(
        "wharf.toml",
        &pg.config("postgres", "users", "mirror", &logical),
    );
    let out = f.wharf(&["sync", &pg.schema, "-c", "wharf.toml"], &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no primary key"), "{}", text(&out));
    // It was not published (PostgreSQL would then refuse the table's UPDATEs).
    pg.exec("UPDATE t SET v = 'c' WHERE id = 1");
    // `auto` falls back to snapshot diffs and says so.
    f.write_config(
        "wharf.toml",
        &pg.config("postgres", "users", "mirror", USERS),
    );
    let out = f.wharf(&["sync", &pg.schema, "-c", "wharf.toml"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("falls back to snapshot diffs"),
        "{}",
        text(&out)
    );
    // Without `primary_key`, a mirror sync is refused with the fix.
    let events = "[syncs.mapping]\nevent_name = \"e\"\ntime_column = \"id\"";
    f.write_config(
        "wharf.toml",
        &pg.config("postgres", "events", "mirror", events),
    );
    let out = f.wharf(&["sync", &pg.schema, "-c", "wharf.toml"], &[]);
    assert!(text(&out).contains("primary_key"), "{}", text(&out));
}

#[test]
fn missing_table_and_bad_credentials_are_clear_errors() {
    let f = Fixture::new();
    let pg = Pg::new("errs");
    f.write_config("wharf.toml", &pg.config("postgres", "users", "full", USERS));
    let out = f.wharf(&["sync", &pg.schema, "-c", "wharf.toml"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("table `{}.t` does not exist", pg.schema)),
        "{}",
        text(&out)
    );
    let secret = "hunter2-very-secret";
    let config = pg.config("postgres", "users", "full", USERS).replace(
        "user = \"postgres\"",
        "user = \"wharf_nobody\"\npassword = \"${WHARF_TEST_PG_PASSWORD}\"",
    );
    f.write_config("wharf.toml", &config);
    for args in [vec!["check"], vec!["sync", &pg.schema]] {
        let mut args = args.clone();
        args.extend(["-c", "wharf.toml"]);
        let out = f.wharf(&args, &[("WHARF_TEST_PG_PASSWORD", secret)]);
        assert!(!out.status.success());
        let t = text(&out);
        assert!(t.contains("wharf_nobody"), "{t}");
        assert!(!t.contains(secret), "the password leaked: {t}");
    }
    let debug = format!(
        "{:?}",
        PgSettings {
            password: Some(secret.into()),
            ..settings(SslMode::Disable)
        }
    );
    assert!(!debug.contains(secret));
}

#[test]
fn tls_require_encrypts_the_connection() {
    let pg = PostgresWarehouse::new("pg", settings(SslMode::Require));
    let batches = pg
        .preview(
            &SourceRef::Query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()".into()),
            1,
        )
        .expect("TLS connection (the test server has ssl = on)");
    use wharf_operators::arrow::array::AsArray;
    assert!(batches[0].column(0).as_boolean().value(0));
    let plain = PostgresWarehouse::new("pg", settings(SslMode::Disable));
    let batches = plain
        .preview(
            &SourceRef::Query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()".into()),
            1,
        )
        .unwrap();
    assert!(!batches[0].column(0).as_boolean().value(0));
}

#[test]
fn redshift_flavor_diffs_snapshots_and_sends_history_rows_with_their_end_to_files() {
    let f = Fixture::new();
    let pg = Pg::new("rs");
    pg.exec(
        "CREATE TABLE t (id text, plan text, since timestamp);
         INSERT INTO t VALUES ('a', 'free', '2024-01-01'), ('a', 'pro', '2024-03-01'),
                              ('b', 'free', '2024-02-01');",
    );
    let extra = r#"primary_key = ["id"]
[syncs.mapping]
user_id_column = "id"
history_start_column = "since""#;
    f.write_config(
        "wharf.toml",
        &pg.config("redshift", "users", "mirror", extra),
    );
    // Every history row, keyed by user and start, with the start of the user's next row as
    // its end (SCD type 2): (key, op) → (plan, end).
    let rows = |changes: &[Value]| -> BTreeMap<(String, String), (Value, Value)> {
        changes
            .iter()
            .map(|e| {
                let key = &e["key"];
                (
                    (
                        key[0].as_str().unwrap().to_string(),
                        e["op"].as_str().unwrap().to_string(),
                    ),
                    (
                        e["after"]["plan"].clone(),
                        e["after"]["wharf_history_end"].clone(),
                    ),
                )
            })
            .collect()
    };
    let mut seen = 0;
    let first = sync(&f, &pg, &mut seen);
    assert_eq!(first.len(), 3, "{first:?}");
    let plans: Vec<(String, Value, Value)> = first
        .iter()
        .map(|e| {
            (
                e["key"].to_string(),
                (
                    e["after"]["plan"].clone(),
                    e["after"]["wharf_history_end"].clone(),
                ),
            )
        })
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .map(|(k, (p, end))| (k, p, end))
        .collect();
    let ends: Vec<(&str, bool)> = plans
        .iter()
        .map(|(_, p, end)| (p.as_str().unwrap(), end.is_null()))
        .collect();
    assert_eq!(
        ends,
        [("free", false), ("pro", true), ("free", true)],
        "a's first row ends, a's and b's latest are current: {plans:?}"
    );
    assert!(
        plans[0].2.as_str().unwrap().starts_with("2024-03-01"),
        "a's free row ends when pro starts: {plans:?}"
    );
    assert!(first
        .iter()
        .all(|e| e["key"].as_array().is_some_and(|k| k.len() == 2)));
    // b moves to team: its new row is inserted, and its free row is closed by an update.
    pg.exec("INSERT INTO t VALUES ('b', 'team', '2024-04-01')");
    let second = rows(&sync(&f, &pg, &mut seen));
    assert_eq!(second.len(), 2, "{second:?}");
    let closed = &second[&("b".to_string(), "update".to_string())];
    assert_eq!(closed.0, "free");
    assert!(
        closed.1.as_str().unwrap().starts_with("2024-04-01"),
        "{second:?}"
    );
    let opened = &second[&("b".to_string(), "insert".to_string())];
    assert_eq!(
        (opened.0.as_str(), opened.1.is_null()),
        (Some("team"), true)
    );
    // Mixpanel and a file at once would need two reads: refused, saying why.
    let both = pg
        .config("redshift", "users", "mirror", extra)
        .replace("destinations = [\"out\"]", "destinations = [\"out\", \"mp\"]")
        + "[destinations.mp]\ntype = \"mixpanel\"\nproject_token = \"t\"\napi_host = \"http://127.0.0.1:9\"\n";
    f.write_config("both.toml", &both);
    let out = f.wharf(&["sync", &pg.schema, "-c", "both.toml"], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("split it into two syncs"),
        "{}",
        text(&out)
    );
}

/// Runs `sql` (outside a transaction) on database `db` of the test server.
fn exec_in(db: &str, sql: &str) {
    common::pg::exec(5432, db, sql);
}

/// Text that is not UTF-8 can be stored only in a `SQL_ASCII` database (the server checks
/// nothing there). Read by wharf (client encoding UTF-8), a text or JSON column holding such
/// bytes stops the read with the server's own error, which names the bytes, and wharf's names
/// the table: nothing committed, no row sent with its bytes altered, none lost silently.
/// (Bytes that would reach wharf's own decoders anyway are refused there with the column's
/// name: `fuzz/` target `pg_logical`.)
#[test]
fn text_and_json_that_are_not_utf8_stop_the_read_with_a_clear_error() {
    let f = Fixture::new();
    let db = format!("wt_ascii_{}", std::process::id());
    exec_in("test", &format!("DROP DATABASE IF EXISTS {db}"));
    exec_in(
        "test",
        &format!(
            "CREATE DATABASE {db} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ),
    );
    exec_in(
        &db,
        "CREATE TABLE t (id text PRIMARY KEY, name text, props json);
         INSERT INTO t VALUES ('ok', 'plain', '{\"a\": 1}'),
                              ('bad_text', E'caf\\xe9', '{\"a\": 2}');
         CREATE TABLE j (id text PRIMARY KEY, name text, props json);
         INSERT INTO j VALUES ('bad_json', 'plain', E'{\"a\": \"\\xff\"}');",
    );
    for (table, byte) in [("t", "0xe9"), ("j", "0xff")] {
        f.write_config(
            "wharf.toml",
            &format!(
                r#"state_dir = ".wharf"
{}[destinations.out]
type = "file"
path = "out.ndjson"
[[syncs]]
name = "s"
warehouse = "pg"
table = "public.{table}"
table_type = "users"
mode = "full"
destinations = ["out"]
[syncs.mapping]
user_id_column = "id"
properties_column = "props"
"#,
                common::pg::warehouse_toml(&db)
            ),
        );
        let out = f.wharf(&["sync", "s"], &[]);
        let all = text(&out);
        assert!(!out.status.success(), "{all}");
        assert!(
            all.contains(&format!("table `public.{table}`"))
                && all.contains("invalid byte sequence for encoding \"UTF8\"")
                && all.contains(byte)
                && all.contains("nothing committed"),
            "the error names the table and the bytes: {all}"
        );
        assert!(
            !f.path("out.ndjson").exists() || read_ndjson(&f.path("out.ndjson")).is_empty(),
            "nothing was sent of a read that failed"
        );
    }
    exec_in("test", &format!("DROP DATABASE {db}"));
}
