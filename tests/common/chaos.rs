//! The chaos harness: syncs killed at random moments and at commit boundaries while their
//! tables change, into a receiver failing 10% of requests, then one clean run — after which
//! every destination must equal the table exactly. `tests/chaos.rs` runs it at CI sizes,
//! `benches/chaos.rs` at full size.
//!
//! - Append (DuckDB events): after every kill, every row up to the committed watermark is in
//!   the receiver (nothing committed ahead of delivery); at the end exactly the table's rows,
//!   unique by Mixpanel's dedup key.
//! - Full (DuckDB user profiles, upserts): every profile equals its row.
//! - Mirror by snapshot diffs (DuckDB): user profiles into the receiver, change envelopes into
//!   a file and a Kafka topic (every row deleted since any killed run sent it has a delete
//!   envelope after its last insert), group profiles and a lookup table into the receiver.
//! - Mirror by PostgreSQL logical decoding: kills during the first snapshot and after it while
//!   a writer keeps updating, deleting and inserting; the receiver's profile log shows that no
//!   value older than one already sent was ever sent after it (every update carries a version
//!   from one sequence), and one clean `wharf sync` drains a backlog larger than one run takes.
//!
//! `WHARF_CHAOS_ROWS`, `WHARF_CHAOS_KILLS` and `WHARF_CHAOS_SEED` make a case larger or replay
//! it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::kafka::{consume, records_on, KafkaBroker};
use crate::common::{read_ndjson, text, Fixture};
use serde_json::Value;
use wharf::receiver::{Faults, Receiver, ReceiverAuth, ReceiverConfig};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How large a chaos case is: rows in the table, and runs killed.
pub struct Sizes {
    pub rows: u64,
    pub kills: u64,
}

impl Sizes {
    /// `WHARF_CHAOS_ROWS` and `WHARF_CHAOS_KILLS`, else the given defaults.
    pub fn from_env(rows: u64, kills: u64) -> Sizes {
        Sizes {
            rows: env_or("WHARF_CHAOS_ROWS", rows),
            kills: env_or("WHARF_CHAOS_KILLS", kills),
        }
    }
}

/// The receiver, failing 10% of requests (429, 503, stored-but-lost answers, connections
/// dropped mid-answer), deterministically from `seed`.
pub fn faulty_receiver(f: &Fixture, seed: u64) -> Receiver {
    let mut config = ReceiverConfig::new(f.path("recv"), ReceiverAuth::AnyCredentials);
    config.faults = Some(Faults::new(0.1, seed, Duration::from_millis(50)));
    f.rt.block_on(Receiver::start(
        config,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    ))
    .expect("receiver")
}

fn seed() -> u64 {
    let seed = env_or("WHARF_CHAOS_SEED", 0x5eed_2026);
    eprintln!("chaos seed {seed} (WHARF_CHAOS_SEED replays it)");
    seed
}

/// Kills at random moments: each delay is drawn from (0, 1.2 × the longest run seen to end
/// on its own), so kills spread over whole runs whatever the machine's speed; while no run
/// ends on its own, the window grows by a quarter after each kill.
struct Killer {
    rng: fastrand::Rng,
    longest: Duration,
    kills: u64,
    boundary_kills: u64,
    tries: u64,
}

/// The commit-boundary crash hooks (`wharf sync`'s hidden testing options).
const BOUNDARIES: [&str; 3] = [
    "WHARF_CRASH_BEFORE_COMMIT",
    "WHARF_CRASH_AFTER_DESTINATION_COMMIT",
    "WHARF_CRASH_AFTER_SLOT_CONFIRM",
];

impl Killer {
    fn new(seed: u64) -> Killer {
        Killer {
            rng: fastrand::Rng::with_seed(seed),
            longest: Duration::from_millis(500),
            kills: 0,
            boundary_kills: 0,
            tries: 0,
        }
    }

    /// Runs `wharf sync <sync>` and kills it: one time in four at a commit boundary (the
    /// process exits as a crash would after delivery and before any commit, after the
    /// destinations' commit, or after the PostgreSQL slot's confirm — each before the state
    /// store commits), else with SIGKILL at a random moment (unless it ends first).
    fn run(&mut self, f: &Fixture, sync: &str, envs: &[(&str, &str)]) {
        self.tries += 1;
        if self.rng.u8(0..4) == 0 {
            let hook = BOUNDARIES[self.rng.usize(0..BOUNDARIES.len())];
            let mut with_hook = envs.to_vec();
            with_hook.push((hook, "1"));
            let out = f.wharf(&["sync", sync, "-c", "wharf.toml"], &with_hook);
            // 70-72: the hook's exit; 0: nothing to commit (or no slot to confirm) so no hook
            // was reached; anything else is a failure worth seeing.
            match out.status.code() {
                Some(70..=72) => self.boundary_kills += 1,
                Some(0) => {}
                _ => panic!("a run with {hook} failed: {}", text(&out)),
            }
            return;
        }
        let max = (self.longest.as_millis() as u64 * 6 / 5).max(20);
        let after = Duration::from_millis(self.rng.u64(10..max));
        let started = Instant::now();
        if kill_after(f, sync, after, envs) {
            self.kills += 1;
            if after * 2 > self.longest {
                self.longest = self.longest.mul_f64(1.25);
            }
        } else {
            self.longest = self.longest.max(started.elapsed());
        }
    }

    fn report(&self) -> String {
        format!(
            "{} of {} runs killed at random moments, {} at commit boundaries (longest run {:?})",
            self.kills, self.tries, self.boundary_kills, self.longest
        )
    }
}

/// Starts `wharf sync <sync>` and kills it (SIGKILL) after `after`, unless it ended first.
/// Returns whether it was killed.
fn kill_after(f: &Fixture, sync: &str, after: Duration, envs: &[(&str, &str)]) -> bool {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(["sync", sync, "-c", "wharf.toml"])
        .current_dir(f.dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start wharf");
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    true
}

fn clean_run(f: &Fixture, sync: &str, envs: &[(&str, &str)]) {
    let out = f.wharf(&["sync", sync, "-c", "wharf.toml"], envs);
    assert!(out.status.success(), "{}", text(&out));
}

/// A DuckDB query's rows as JSON objects (column name → value).
fn rows(f: &Fixture, sql: &str) -> Vec<serde_json::Map<String, Value>> {
    let conn = duckdb::Connection::open(f.warehouse()).expect("open duckdb");
    let mut stmt = conn.prepare(sql).expect("prepare");
    let mut out = Vec::new();
    let mut q = stmt.query([]).expect("query");
    let names: Vec<String> = q.as_ref().expect("statement").column_names();
    while let Some(row) = q.next().expect("row") {
        let mut m = serde_json::Map::new();
        for (i, n) in names.iter().enumerate() {
            let v = match row.get_ref(i).expect("value") {
                duckdb::types::ValueRef::Null => Value::Null,
                duckdb::types::ValueRef::BigInt(x) => Value::from(x),
                duckdb::types::ValueRef::Int(x) => Value::from(x),
                duckdb::types::ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t)),
                other => panic!("unexpected value {other:?}"),
            };
            m.insert(n.clone(), v);
        }
        out.push(m);
    }
    out
}

/// The table as key → row without the key column.
fn keyed(
    rows: Vec<serde_json::Map<String, Value>>,
    key: &str,
) -> BTreeMap<String, serde_json::Map<String, Value>> {
    rows.into_iter()
        .map(|mut r| {
            let k = r.remove(key).and_then(|v| v.as_str().map(String::from));
            (k.expect("string key"), r)
        })
        .collect()
}

/// Folds change envelopes, in the order a consumer read them, into the state they describe:
/// key → the row of its last insert/update, or `None` after a delete.
fn fold_envelopes<'a>(
    envelopes: impl Iterator<Item = &'a Value>,
) -> BTreeMap<String, Option<Value>> {
    let mut state = BTreeMap::new();
    for e in envelopes {
        let key = e["key"].as_str().expect("key").to_string();
        match e["op"].as_str() {
            Some("delete") => state.insert(key, None),
            Some(_) => state.insert(key, Some(e["after"].clone())),
            None => panic!("envelope without op: {e}"),
        };
    }
    state
}

/// The envelopes' final state equals `table`: every row's last change carries it, and every
/// other key that ever had a change ends with a delete.
fn assert_envelopes_match(
    what: &str,
    state: &BTreeMap<String, Option<Value>>,
    table: &BTreeMap<String, serde_json::Map<String, Value>>,
) {
    for (k, row) in table {
        match state.get(k) {
            Some(Some(after)) => {
                for (col, v) in row {
                    assert_eq!(
                        after.get(col),
                        Some(v),
                        "{what}: the last change of {k}: {after}"
                    );
                }
            }
            other => panic!("{what}: row {k} ends as {other:?}"),
        }
    }
    for (k, last) in state {
        if !table.contains_key(k) {
            assert!(
                last.is_none(),
                "{what}: {k} is gone from the table but its last change is {last:?}"
            );
        }
    }
}

fn assert_profiles_match(
    receiver: &Receiver,
    table: &BTreeMap<String, serde_json::Map<String, Value>>,
) {
    let profiles = receiver.profiles();
    let missing: Vec<&String> = table
        .keys()
        .filter(|k| !profiles.contains_key(*k))
        .collect();
    let extra: Vec<&String> = profiles
        .keys()
        .filter(|k| !table.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "profiles missing: {} (e.g. {:?}); deleted rows still profiles: {} (e.g. {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(5).collect::<Vec<_>>()
    );
    for (k, row) in table {
        let p = &profiles[k];
        for (col, v) in row {
            assert_eq!(p.get(col), Some(v), "profile {k}, property {col}: {p:?}");
        }
    }
}

/// One round of changes to `table` (keyed by `id`): ~1% updated, ~0.2% deleted (kept aside
/// in `<table>_gone`), half of the previous round's deleted rows back, and `inserts` new rows.
fn mutate(f: &Fixture, table: &str, round: u64, inserts: u64, values: &str) {
    f.sql(&format!(
        "UPDATE {table} SET v = v + 1, name = 'r{round} ' || id WHERE hash(id || 'u{round}') % 100 = 0;
         INSERT INTO {table} SELECT * FROM {table}_gone WHERE hash(id || 'b{round}') % 2 = 0;
         DELETE FROM {table}_gone WHERE id IN (SELECT id FROM {table});
         INSERT INTO {table}_gone SELECT * FROM {table} WHERE hash(id || 'd{round}') % 500 = 0;
         DELETE FROM {table} WHERE id IN (SELECT id FROM {table}_gone);
         INSERT INTO {table} SELECT 'n{round}_' || i, {values} FROM range({inserts}) t(i);"
    ));
}

const RECEIVER_DEST: &str = r#"[destinations.mp]
type = "mixpanel"
api_host = "HOST"
project_id = "42"
project_token = "tok"
service_account = { username = "sa", secret = "test-secret" }
initial_backoff = "50ms"
max_backoff = "200ms"
"#;

/// Snapshot-diff mirror of user profiles into the receiver, a file and Kafka, killed at random
/// moments between changes of the table: one clean run makes all three equal to the table.
pub fn snapshot_mirror_killed_at_random_moments_is_exact_after_one_clean_run(sizes: &Sizes) {
    let n = sizes.rows;
    let kills = sizes.kills;
    let seed = seed();
    let mut killer = Killer::new(seed);
    let broker = KafkaBroker::start();
    let f = Fixture::new();
    let receiver = faulty_receiver(&f, seed);
    f.sql(&format!(
        "CREATE TABLE users AS SELECT 'u' || i AS id, 'name ' || i AS name, (i % 5)::BIGINT AS plan,
           0::BIGINT AS v FROM range({n}) t(i);
         CREATE TABLE users_gone AS SELECT * FROM users LIMIT 0;"
    ));
    f.write_config(
        "wharf.toml",
        &format!(
            r#"state_dir = ".wharf"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
{}
[destinations.file]
type = "file"
path = "out.ndjson"
[destinations.kafka]
type = "kafka"
brokers = "{}"
topic = "users"
partitions = 3
linger = "1ms"
[[syncs]]
name = "users"
warehouse = "wh"
table = "users"
table_type = "users"
mode = "mirror"
destinations = ["mp", "file", "kafka"]
[syncs.mapping]
user_id_column = "id"
"#,
            RECEIVER_DEST.replace("HOST", &receiver.base_url()),
            broker.brokers()
        ),
    );
    for round in 0..kills {
        // The first kill lands in the initial load; later ones after a round of changes.
        if round > 0 {
            mutate(&f, "users", round, 50, "'new', 1, 0");
        }
        killer.run(&f, "users", &[]);
    }
    mutate(&f, "users", kills, 50, "'new', 1, 0");
    clean_run(&f, "users", &[]);
    eprintln!("users: {}; {n} rows", killer.report());

    let table = keyed(rows(&f, "SELECT * FROM users"), "id");
    assert_profiles_match(&receiver, &table);
    let file = read_ndjson(&f.path("out.ndjson"));
    assert_envelopes_match("file", &fold_envelopes(file.iter()), &table);
    let on_topic = records_on(&broker.brokers(), "users", 3);
    let consumed = consume(
        &broker.brokers(),
        "users",
        "check",
        on_topic,
        false,
        Duration::from_secs(120),
    );
    assert_eq!(consumed.len(), on_topic);
    assert_envelopes_match(
        "kafka",
        &fold_envelopes(consumed.iter().map(|c| &c.value)),
        &table,
    );
}

/// Group profiles and a lookup table (snapshot diffs) killed at random moments: one clean run
/// makes the receiver's groups and table equal to the warehouse's.
pub fn groups_and_lookup_tables_killed_at_random_moments_are_exact_after_one_clean_run(
    sizes: &Sizes,
) {
    let n = sizes.rows;
    let kills = sizes.kills;
    let seed = seed();
    let mut killer = Killer::new(seed ^ 1);
    let f = Fixture::new();
    let receiver = faulty_receiver(&f, seed);
    f.sql(&format!(
        "CREATE TABLE companies AS SELECT 'c' || i AS id, 'company ' || i AS name,
           (i % 50)::BIGINT AS v FROM range({n}) t(i);
         CREATE TABLE companies_gone AS SELECT * FROM companies LIMIT 0;"
    ));
    f.write_config(
        "wharf.toml",
        &format!(
            r#"state_dir = ".wharf"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
{}
[[syncs]]
name = "groups"
warehouse = "wh"
table = "companies"
table_type = "groups"
mode = "mirror"
destinations = ["mp"]
[syncs.mapping]
group_key = "company"
group_id_column = "id"

[[syncs]]
name = "lookup"
warehouse = "wh"
table = "companies"
table_type = "lookup"
mode = "mirror"
primary_key = ["id"]
destinations = ["mp"]
[syncs.mapping]
lookup_table_id = "0f0e0d0c-0b0a-4909-8807-060504030201"
"#,
            RECEIVER_DEST.replace("HOST", &receiver.base_url()),
        ),
    );
    for round in 0..kills {
        if round > 0 {
            mutate(&f, "companies", round, 50, "'new', 0");
        }
        for sync in ["groups", "lookup"] {
            killer.run(&f, sync, &[]);
        }
    }
    eprintln!("groups and lookup: {}; {n} rows", killer.report());
    mutate(&f, "companies", kills, 50, "'new', 0");
    clean_run(&f, "groups", &[]);
    clean_run(&f, "lookup", &[]);

    let table = keyed(rows(&f, "SELECT * FROM companies"), "id");
    let groups = receiver.groups().remove("company").unwrap_or_default();
    let extra: Vec<&String> = groups.keys().filter(|k| !table.contains_key(*k)).collect();
    assert!(extra.is_empty(), "deleted groups still there: {extra:?}");
    for (k, row) in &table {
        let g = groups.get(k).unwrap_or_else(|| panic!("group {k} missing"));
        for (col, v) in row {
            assert_eq!(g.get(col), Some(v), "group {k}, property {col}");
        }
    }
    let lookup = receiver
        .lookup_table("0f0e0d0c-0b0a-4909-8807-060504030201")
        .expect("lookup table")
        .expect("a lookup table was sent");
    let got: BTreeMap<String, Vec<String>> = lookup
        .rows
        .iter()
        .map(|r| (r[0].clone(), r[1..].to_vec()))
        .collect();
    assert_eq!(got.len(), lookup.rows.len(), "each key once");
    let want: BTreeMap<String, Vec<String>> = table
        .iter()
        .map(|(k, r)| {
            let cols = lookup.header[1..]
                .iter()
                .map(|c| match &r[c] {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect();
            (k.clone(), cols)
        })
        .collect();
    assert_eq!(got, want, "the lookup table equals the warehouse table");
}

/// The distinct ids of the receiver's events (each row of `ev` has its own).
fn received_ids(receiver: &Receiver) -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    receiver
        .each_event(|e| {
            if let Some(id) = e["properties"]["distinct_id"].as_str() {
                ids.insert(id.to_string());
            }
        })
        .expect("events");
    ids
}

/// The rows of `ev` whose time is at or before the committed watermark are all in the
/// receiver: nothing was committed ahead of delivery. Returns how many rows that was.
fn assert_watermark_behind_delivery(f: &Fixture, receiver: &Receiver, sync: &str) -> u64 {
    let watermark = {
        let store = wharf::state::StateStore::open(&f.path(".wharf")).expect("state store");
        store.watermark(sync).expect("watermark")
    };
    let Some(wharf_operators::watermark::Watermark::TimestampMicros(wm)) = watermark else {
        return 0;
    };
    let received = received_ids(receiver);
    let committed: Vec<String> = rows(
        f,
        &format!("SELECT uid FROM ev WHERE epoch_us(ts) <= {wm} ORDER BY uid"),
    )
    .into_iter()
    .filter_map(|r| r["uid"].as_str().map(String::from))
    .collect();
    let missing: Vec<&String> = committed
        .iter()
        .filter(|u| !received.contains(*u))
        .collect();
    assert!(
        missing.is_empty(),
        "the watermark ({wm} µs) was committed ahead of delivery: {} rows before it never arrived (e.g. {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    committed.len() as u64
}

/// An append sync of events (a large backfill, then new rows between kills) killed at random
/// moments and at commit boundaries, into a receiver failing 10% of requests: after every kill
/// nothing is committed ahead of delivery; after one clean run the receiver holds exactly the
/// table's rows, each once by Mixpanel's dedup key.
pub fn append_killed_at_random_moments_delivers_every_row_once(sizes: &Sizes) {
    let (n, kills) = (sizes.rows, sizes.kills);
    let seed = seed();
    let mut killer = Killer::new(seed ^ 3);
    let f = Fixture::new();
    let receiver = faulty_receiver(&f, seed);
    f.sql(&format!(
        "CREATE TABLE ev AS SELECT CASE i % 3 WHEN 0 THEN 'Signup' WHEN 1 THEN 'Purchase' ELSE 'View' END AS name,
           TIMESTAMP '2024-01-01' + to_microseconds(i * 1000) AS ts, 'u' || i AS uid,
           i AS n, 'plan ' || (i % 7) AS plan FROM range({n}) t(i);"
    ));
    f.write_config(
        "wharf.toml",
        &format!(
            r#"state_dir = ".wharf"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
{}
[[syncs]]
name = "ev"
warehouse = "wh"
table = "ev"
table_type = "events"
mode = "append"
destinations = ["mp"]
[syncs.mapping]
event_name_column = "name"
time_column = "ts"
user_id_column = "uid"
"#,
            RECEIVER_DEST.replace("HOST", &receiver.base_url())
        ),
    );
    let mut total = n;
    let mut checked = 0;
    // A backfill in runs of at most a fifth of the table, each committed: a kill resumes from
    // the last committed run.
    let per_run = (n / 5).max(1).to_string();
    let envs = [("WHARF_MAX_ROWS_PER_RUN", per_run.as_str())];
    for round in 0..kills {
        if round > 0 {
            // New rows, later than every row before them.
            f.sql(&format!(
                "INSERT INTO ev SELECT 'Late', TIMESTAMP '2024-01-01' + to_microseconds(({total} + i) * 1000),
                   'u' || ({total} + i), {total} + i, 'late' FROM range(1000) t(i);"
            ));
            total += 1000;
        }
        killer.run(&f, "ev", &envs);
        checked = checked.max(assert_watermark_behind_delivery(&f, &receiver, "ev"));
    }
    clean_run(&f, "ev", &envs);
    let stats = receiver.stats();
    eprintln!(
        "append: {}; {n} rows + {} new in runs of at most {per_run}, up to {checked} rows \
         checked behind a committed watermark; {} events accepted for {total} rows \
         (re-sent, and deduplicated by $insert_id: {})",
        killer.report(),
        total - n,
        stats.events_accepted,
        stats.events_accepted.saturating_sub(total)
    );
    assert_eq!(
        stats.unique_events, total,
        "every row once by the dedup key: {stats:?}"
    );
    assert_eq!(assert_watermark_behind_delivery(&f, &receiver, "ev"), total);
    assert_eq!(
        received_ids(&receiver).len() as u64,
        total,
        "exactly the table's rows"
    );
}

/// A full sync (snapshot, upserts) of user profiles killed at random moments and at commit
/// boundaries while rows are updated and inserted, into a receiver failing 10% of requests:
/// one clean run makes every profile equal to its row.
pub fn full_profiles_killed_at_random_moments_are_exact_after_one_clean_run(sizes: &Sizes) {
    let (n, kills) = (sizes.rows, sizes.kills);
    let seed = seed();
    let mut killer = Killer::new(seed ^ 4);
    let f = Fixture::new();
    let receiver = faulty_receiver(&f, seed);
    f.sql(&format!(
        "CREATE TABLE users AS SELECT 'u' || i AS id, 'name ' || i AS name, (i % 5)::BIGINT AS plan,
           0::BIGINT AS v FROM range({n}) t(i);"
    ));
    f.write_config(
        "wharf.toml",
        &format!(
            r#"state_dir = ".wharf"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
{}
[[syncs]]
name = "users"
warehouse = "wh"
table = "users"
table_type = "users"
mode = "full"
primary_key = ["id"]
destinations = ["mp"]
[syncs.mapping]
user_id_column = "id"
"#,
            RECEIVER_DEST.replace("HOST", &receiver.base_url())
        ),
    );
    for round in 0..kills {
        if round > 0 {
            f.sql(&format!(
                "UPDATE users SET v = v + 1, name = 'r{round} ' || id WHERE hash(id || 'u{round}') % 50 = 0;
                 INSERT INTO users SELECT 'n{round}_' || i, 'new', 1, 0 FROM range(50) t(i);"
            ));
        }
        killer.run(&f, "users", &[]);
    }
    f.sql("UPDATE users SET v = v + 1 WHERE hash(id || 'last') % 50 = 0;");
    clean_run(&f, "users", &[]);
    eprintln!("full: {}; {n} rows", killer.report());
    assert_profiles_match(&receiver, &keyed(rows(&f, "SELECT * FROM users"), "id"));
}

pub mod postgres {
    //! The PostgreSQL case: a schema of its own, dropped with the sync's slot at the end.

    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::Value;
    use wharf::receiver::Receiver;
    use wharf::warehouse::postgres::logical::Capture;
    use wharf::warehouse::postgres::PostgresWarehouse;
    use wharf::warehouse::SourceRef;

    use super::{
        assert_profiles_match, clean_run, faulty_receiver, seed, Killer, Sizes, RECEIVER_DEST,
    };
    use crate::common::{read_ndjson, Fixture};

    /// The test server (127.0.0.1:5432, database `test`, as `.ci/run` starts it).
    pub fn warehouse() -> PostgresWarehouse {
        crate::common::pg::warehouse(5432, "test")
    }

    /// Runs `sql` on the test server, panicking on failure.
    pub fn exec(sql: &str) {
        crate::common::pg::exec(5432, "test", sql);
    }

    /// `t` as id → {name, v}.
    fn table(schema: &str) -> BTreeMap<String, serde_json::Map<String, Value>> {
        let w = warehouse();
        let sql = format!("SELECT id, name, v FROM {schema}.t");
        let rows = w
            .block(async {
                let c = w.connect().await?;
                c.query(&sql, &[])
                    .await
                    .map_err(|e| w.err(&SourceRef::Query(sql.clone()), e))
            })
            .expect("read t");
        rows.iter()
            .map(|r| {
                let mut m = serde_json::Map::new();
                m.insert("name".into(), Value::from(r.get::<_, String>(1)));
                m.insert("v".into(), Value::from(r.get::<_, i64>(2)));
                (r.get::<_, String>(0), m)
            })
            .collect()
    }

    struct Schema(String);

    impl Schema {
        fn capture(&self) -> Capture {
            Capture::for_sync(&self.0, &format!("{}.t", self.0))
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let _ = warehouse().drop_capture(&self.capture());
            exec(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0));
        }
    }

    /// One committed transaction of the writer: the WAL position read right after its commit
    /// (at or past its commit record), and per row what it left: `Some(v)` set to version
    /// `v`, `None` deleted.
    struct Txn {
        lsn_after: u64,
        rows: BTreeMap<String, Option<i64>>,
    }

    type TxnLog = Arc<std::sync::Mutex<Vec<Txn>>>;

    /// A WAL position `X/Y` as a number.
    fn lsn(text: &str) -> u64 {
        let (hi, lo) = text.split_once('/').expect("an LSN");
        (u64::from_str_radix(hi, 16).expect("lsn") << 32)
            | u64::from_str_radix(lo, 16).expect("lsn")
    }

    /// Runs one transaction of the writer (`sql`: statements whose `RETURNING` gives an op —
    /// `s` set, `d` deleted —, the id and the version) and returns what it left.
    fn transaction(sql: &str) -> Txn {
        use tokio_postgres::SimpleQueryMessage;
        let w = warehouse();
        let messages = w
            .block(async {
                let c = w.connect().await?;
                c.simple_query(&format!(
                    "{sql} COMMIT; SELECT 'l', pg_current_wal_lsn()::text, '0';"
                ))
                .await
                .map_err(|e| w.err(&SourceRef::Query(sql.to_string()), e))
            })
            .unwrap_or_else(|e| panic!("sql failed: {e}"));
        let mut txn = Txn {
            lsn_after: 0,
            rows: BTreeMap::new(),
        };
        for m in messages {
            let SimpleQueryMessage::Row(r) = m else {
                continue;
            };
            let (op, id, v) = (
                r.get(0).unwrap_or(""),
                r.get(1).unwrap_or("").to_string(),
                r.get(2).unwrap_or("0"),
            );
            match op {
                "s" => {
                    txn.rows.insert(id, Some(v.parse().expect("version")));
                }
                "d" => {
                    txn.rows.insert(id, None);
                }
                _ => txn.lsn_after = lsn(&id),
            }
        }
        txn
    }

    /// No slot position ahead of delivery: every transaction whose commit lies at or before
    /// the slot's confirmed position is in the receiver — each row it set holds that version or
    /// a newer one (or was deleted later), each row it deleted is gone (or was set again
    /// later). Checked once the sync committed a run (before that the slot's position is where
    /// it was created, and the snapshot that covers it is not delivered yet).
    fn assert_slot_behind_delivery(receiver: &Receiver, slot: &str, log: &TxnLog) -> usize {
        let w = warehouse();
        let sql = format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
        );
        let confirmed = w
            .block(async {
                let c = w.connect().await?;
                c.query_opt(&sql, &[])
                    .await
                    .map_err(|e| w.err(&SourceRef::Query(sql.clone()), e))
            })
            .expect("the slot's position")
            .and_then(|r| r.get::<_, Option<String>>(0))
            .map(|t| lsn(&t));
        let Some(confirmed) = confirmed else {
            return 0;
        };
        let profiles = receiver.profiles();
        let log = log.lock().expect("log");
        let mut checked = 0;
        for (i, txn) in log.iter().enumerate() {
            if txn.lsn_after > confirmed {
                continue;
            }
            let newest = txn.rows.values().flatten().max().copied().unwrap_or(0);
            for (id, left) in &txn.rows {
                checked += 1;
                let later = &log[i + 1..];
                let held = profiles
                    .get(id)
                    .map(|p| p.get("v").and_then(Value::as_i64).unwrap_or(i64::MIN));
                match (left, held) {
                    (Some(v), Some(h)) => assert!(
                        h >= *v,
                        "user {id}: version {v} confirmed by the slot (at {confirmed:X}) but the receiver holds {h}"
                    ),
                    (Some(v), None) => assert!(
                        later.iter().any(|t| t.rows.get(id) == Some(&None)),
                        "user {id}: version {v} confirmed by the slot (at {confirmed:X}) but not in the receiver"
                    ),
                    (None, Some(h)) => assert!(
                        h > newest,
                        "user {id}: deleted in a transaction the slot confirmed (at {confirmed:X}) but the receiver holds version {h}"
                    ),
                    (None, None) => {}
                }
            }
        }
        checked
    }

    /// Changes `t` in small transactions until `stop`: updates and inserts take versions from
    /// one sequence, so a row's `v` only grows; deleted rows come back later. Each
    /// transaction's effect and WAL position go to `log`.
    fn writer(schema: String, n: u64, seed: u64, stop: Arc<AtomicBool>, log: TxnLog) -> u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut txns = 0;
        let mut fresh = 0;
        while !stop.load(Ordering::Relaxed) {
            let ids = |k: usize, rng: &mut fastrand::Rng| {
                (0..k)
                    .map(|_| format!("'u{}'", rng.u64(0..n)))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            // A hot set of 200 keys changes again and again, so that a replay of old
            // transactions would show up as a value going back.
            let hot = (0..10)
                .map(|_| format!("'u{}'", rng.u64(0..200.min(n))))
                .collect::<Vec<_>>()
                .join(",");
            let upd = format!("{hot},{}", ids(10, &mut rng));
            let (del, back) = (ids(5, &mut rng), ids(3, &mut rng));
            fresh += 2;
            let txn = transaction(&format!(
                "BEGIN;
                 UPDATE {schema}.t SET v = nextval('{schema}.ver'), name = 'w' || clock_timestamp()
                   WHERE id IN ({upd}) RETURNING 's', id, v::text;
                 DELETE FROM {schema}.t WHERE id IN ({del}) RETURNING 'd', id, '0';
                 INSERT INTO {schema}.t SELECT id, 'back', nextval('{schema}.ver')
                   FROM unnest(ARRAY[{back}]) id ON CONFLICT (id) DO NOTHING
                   RETURNING 's', id, v::text;
                 INSERT INTO {schema}.t VALUES ('new{fresh}', 'new', nextval('{schema}.ver')),
                   ('new{}', 'new', nextval('{schema}.ver')) RETURNING 's', id, v::text;",
                fresh + 1
            ));
            log.lock().expect("log").push(txn);
            txns += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        txns
    }

    /// Logical decoding, killed during the first snapshot and after it while a writer changes
    /// the table: one clean run makes the receiver equal to the table; no value older than one
    /// already sent is ever sent after it; and one `wharf sync` drains a backlog that takes
    /// several runs, each committed.
    pub fn logical_mirror_killed_at_random_moments_never_goes_back_in_time(sizes: &Sizes) {
        let n = sizes.rows;
        let kills = sizes.kills;
        let seed = seed();
        let mut killer = Killer::new(seed ^ 2);
        let schema = Schema(format!("wc_chaos_{}", std::process::id()));
        let s = schema.0.clone();
        let _ = warehouse().drop_capture(&schema.capture());
        exec(&format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s};
             CREATE SEQUENCE {s}.ver;
             CREATE TABLE {s}.t (id text PRIMARY KEY, name text NOT NULL, v bigint NOT NULL);
             INSERT INTO {s}.t SELECT 'u' || g, 'name ' || g, nextval('{s}.ver')
               FROM generate_series(0, {} - 1) g;",
            n
        ));
        let f = Fixture::new();
        let receiver = faulty_receiver(&f, seed);
        f.write_config(
            "wharf.toml",
            &format!(
                r#"state_dir = ".wharf"
[warehouses.pg]
type = "postgres"
host = "127.0.0.1"
port = 5432
database = "test"
user = "postgres"
sslmode = "disable"
{}
[[syncs]]
name = "{s}"
warehouse = "pg"
table = "{s}.t"
table_type = "users"
mode = "mirror"
change_capture = "logical"
primary_key = ["id"]
destinations = ["mp"]
[syncs.mapping]
user_id_column = "id"
"#,
                RECEIVER_DEST.replace("HOST", &receiver.base_url())
            ),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let log = TxnLog::default();
        let writer = {
            let (s, stop, log) = (s.clone(), stop.clone(), log.clone());
            std::thread::spawn(move || writer(s, n, seed, stop, log))
        };
        // Small runs, so kills land between change-stream runs too.
        let small = [("WHARF_MAX_CHANGES_PER_RUN", "500")];
        // The first run is killed as soon as it created the slot, in its snapshot; the writer
        // goes on meanwhile, so the slot holds many transactions older than the next snapshot.
        let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["sync", &s, "-c", "wharf.toml"])
            .current_dir(f.dir.path())
            .envs(small)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start wharf");
        while !warehouse().capture_exists(&schema.capture()).expect("slot") {
            assert!(
                first.try_wait().expect("wait").is_none(),
                "the first run ended"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        first.kill().expect("kill");
        let _ = first.wait();
        std::thread::sleep(Duration::from_secs(1));
        let (mut checks, mut checked) = (0, 0);
        for _ in 0..kills {
            killer.run(&f, &s, &small);
            if !committed_runs(&f, &s).is_empty() {
                checked += assert_slot_behind_delivery(&receiver, &schema.capture().slot, &log);
                checks += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let txns = writer.join().expect("writer");
        eprintln!(
            "postgres: {} while {txns} transactions changed the table; the slot's position checked against delivery after {checks} of them ({checked} row changes)",
            killer.report()
        );

        clean_run(&f, &s, &[]);
        assert!(assert_slot_behind_delivery(&receiver, &schema.capture().slot, &log) > 0);
        assert_profiles_match(&receiver, &table(&s));

        // A backlog larger than one run takes: one `wharf sync` drains it, run by run.
        let last_before = committed_runs(&f, &s).into_iter().max().unwrap_or(0);
        for d in 0..10 {
            exec(&format!(
                "UPDATE {s}.t SET v = nextval('{s}.ver'), name = 'bulk {d}' WHERE id LIKE 'u{d}%';"
            ));
        }
        exec(&format!(
            "UPDATE {s}.t SET v = nextval('{s}.ver'), name = 'bulk again' WHERE id LIKE 'u1%';
             DELETE FROM {s}.t WHERE id LIKE 'u2%';
             INSERT INTO {s}.t SELECT 'late' || g, 'late', nextval('{s}.ver') FROM generate_series(1, 3000) g;"
        ));
        for g in 0..20 {
            exec(&format!(
                "UPDATE {s}.t SET v = nextval('{s}.ver'), name = 'small {g}' WHERE id IN ('u3', 'late{}');",
                g + 1
            ));
        }
        clean_run(&f, &s, &[("WHARF_MAX_CHANGES_PER_RUN", "5000")]);
        assert_profiles_match(&receiver, &table(&s));
        let runs = committed_runs(&f, &s)
            .into_iter()
            .filter(|&r| r > last_before)
            .count();
        assert!(runs > 1, "the backlog took {runs} run(s)");

        // Every update the receiver applied carried a version; per user they never go back.
        let mut last: BTreeMap<String, i64> = BTreeMap::new();
        let mut updates = 0;
        for logged in read_ndjson(&f.path("recv/engage.ndjson")) {
            let u = &logged["update"];
            let (Some(id), Some(v)) = (u["$distinct_id"].as_str(), u["$set"]["v"].as_i64()) else {
                continue;
            };
            updates += 1;
            if let Some(&before) = last.get(id) {
                assert!(
                    v >= before,
                    "user {id}: version {v} sent after {before} (an older value after a newer one)"
                );
            }
            last.insert(id.to_string(), v);
        }
        eprintln!("{updates} profile updates checked; the backlog took {runs} runs");
    }

    /// The ids of the sync's committed runs (the last 100).
    fn committed_runs(f: &Fixture, sync: &str) -> Vec<u64> {
        let out = f.wharf(
            &[
                "history",
                sync,
                "--json",
                "--limit",
                "100",
                "-c",
                "wharf.toml",
            ],
            &[],
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["status"] == "SUCCEEDED")
            .filter_map(|r| r["run_id"].as_u64())
            .collect()
    }
}
