//! Kafka destination end to end against Apache Kafka itself (one KRaft node per test, started
//! from Maven Central's jars by `common::kafka`): envelopes, keys, ordering, consumer groups,
//! fan-out, brokers that go away and come back, and exactly-once through transactions, checked
//! with `read_committed` consumers: a run killed inside its transaction, a crash between the
//! Kafka commit and the state store's, and a second process fencing the first.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::kafka::{consume, records_on, Consumed, KafkaBroker};
use common::{text, Fixture};
use wharf::receiver::ReceiverAuth;

fn kafka_destination(brokers: &str, extra: &str) -> String {
    format!(
        r#"[destinations.k]
type = "kafka"
brokers = "{brokers}"
topic = "wharf.{{sync}}"
partitions = 3
linger = "1ms"
{extra}
"#
    )
}

fn people(f: &Fixture, n: usize) {
    f.sql(&format!(
        "CREATE TABLE people AS SELECT 'u' || i AS id, 'name ' || i AS name, i % 7 AS score
         FROM range({n}) t(i);"
    ));
}

fn mirror_config(brokers: &str) -> String {
    format!(
        r#"state_dir = ".wharf"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
{}
[[syncs]]
name = "people"
warehouse = "wh"
table = "people"
table_type = "users"
mode = "mirror"
primary_key = ["id"]
destinations = ["k"]
[syncs.mapping]
user_id_column = "id"
"#,
        kafka_destination(brokers, "")
    )
}

fn run(f: &Fixture, sync: &str, envs: &[(&str, &str)]) -> std::process::Output {
    f.wharf(&["sync", sync, "-c", "wharf.toml"], envs)
}

/// Ops per key in the order one consumer read them (Kafka orders within a partition).
fn ops_per_key(records: &[Consumed]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        out.entry(r.key.clone().unwrap_or_default())
            .or_default()
            .push(r.value["op"].as_str().unwrap_or("?").to_string());
    }
    out
}

#[test]
fn mirror_changes_arrive_keyed_and_ordered_per_key_for_every_consumer_group() {
    let broker = KafkaBroker::start();
    let f = Fixture::new();
    people(&f, 300);
    f.write_config("wharf.toml", &mirror_config(&broker.brokers()));
    let out = run(&f, "people", &[]);
    assert!(out.status.success(), "{}", text(&out));
    f.sql(
        "UPDATE people SET score = 100 WHERE id IN (SELECT 'u' || i FROM range(50) t(i));
         DELETE FROM people WHERE id IN (SELECT 'u' || i FROM range(100, 120) t(i));
         INSERT INTO people SELECT 'u' || i, 'new ' || i, 1 FROM range(1000, 1010) t(i);",
    );
    let out = run(&f, "people", &[]);
    assert!(out.status.success(), "{}", text(&out));

    let total = 300 + 50 + 20 + 10;
    let topic = "wharf.people";
    let brokers = broker.brokers();
    let a = consume(
        &brokers,
        topic,
        "group-a",
        total,
        false,
        Duration::from_secs(60),
    );
    let b = consume(
        &brokers,
        topic,
        "group-b",
        total,
        false,
        Duration::from_secs(60),
    );
    assert_eq!(a.len(), total, "group a read every record once");
    assert_eq!(b.len(), total, "group b read every record once");

    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    for r in &a {
        let key = r.key.clone().expect("every record is keyed");
        // The Kafka key is the primary key; the envelope says the same, and so do headers.
        assert_eq!(r.value["key"], key.as_str(), "{r:?}");
        assert_eq!(r.headers["wharf-op"], r.value["op"].as_str().unwrap());
        assert_eq!(r.headers["wharf-sync"], "people");
        assert_eq!(r.value["sync"], "people");
        assert_eq!(r.value["table"], "people");
        assert_eq!(r.value["table_type"], "users");
        assert!(r.value["ts"].as_i64().unwrap() > 1_700_000_000_000);
        // One key, one partition: that is what orders a key's changes.
        let p = *partition_of.entry(key).or_insert(r.partition);
        assert_eq!(p, r.partition);
    }
    let ops = ops_per_key(&a);
    assert_eq!(ops["u1"], ["insert", "update"]);
    assert_eq!(ops["u60"], ["insert"]);
    assert_eq!(ops["u110"], ["insert", "delete"]);
    assert_eq!(ops["u1005"], ["insert"]);
    let u1_update = a
        .iter()
        .find(|r| r.key.as_deref() == Some("u1") && r.value["op"] == "update")
        .unwrap();
    assert_eq!(u1_update.value["after"]["score"], 100);
    assert_eq!(u1_update.value["run"], 2);
    let u110_delete = a
        .iter()
        .find(|r| r.key.as_deref() == Some("u110") && r.value["op"] == "delete")
        .unwrap();
    assert!(u110_delete.value.get("after").is_none());
    assert!(
        partition_of.values().collect::<HashSet<_>>().len() > 1,
        "keys spread over the partitions"
    );
    assert_eq!(ops_per_key(&b), ops);
}

fn events(f: &Fixture, n: usize) {
    f.sql(&format!(
        "CREATE TABLE ev AS SELECT 'Played' AS event, 'user' || (i % 97) AS user_id,
         1700000000 + i AS ts, i AS n FROM range({n}) t(i);"
    ));
}

fn events_config(destinations: &str, extra_destinations: &str) -> String {
    format!(
        r#"state_dir = ".wharf"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
{extra_destinations}
[[syncs]]
name = "ev"
warehouse = "wh"
table = "ev"
table_type = "events"
mode = "append"
destinations = {destinations}
[syncs.mapping]
event_name_column = "event"
time_column = "ts"
user_id_column = "user_id"
"#
    )
}

/// Fan-out with exactly-once Kafka: both destinations complete and hold the same events, the
/// Kafka ones visible to `read_committed` consumers because the run's transaction committed.
#[test]
fn fan_out_sends_every_event_once_to_the_receiver_and_to_exactly_once_kafka() {
    let broker = KafkaBroker::start();
    let f = Fixture::new();
    let receiver = f.receiver("recv", ReceiverAuth::AnyCredentials);
    events(&f, 5000);
    let dests = format!(
        r#"{}
[destinations.mp]
type = "mixpanel"
api_host = "{}"
project_id = "42"
service_account = {{ username = "sa", secret = "test-secret" }}
"#,
        kafka_destination(&broker.brokers(), "exactly_once = true"),
        receiver.base_url()
    );
    f.write_config("wharf.toml", &events_config(r#"["mp", "k"]"#, &dests));
    let out = run(&f, "ev", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(receiver.stats().unique_events, 5000);
    assert_eq!(receiver.stats().events_received, 5000);
    let got = consume(
        &broker.brokers(),
        "wharf.ev",
        "g",
        5000,
        true,
        Duration::from_secs(60),
    );
    assert_eq!(got.len(), 5000, "read_committed: every event, once");
    assert_eq!(unique_insert_ids(&got).len(), 5000, "every event once");
    for r in &got {
        assert_eq!(r.value["op"], "insert");
        // No primary key: events are keyed by distinct_id.
        assert_eq!(
            r.key.as_deref(),
            r.value["after"]["properties"]["distinct_id"].as_str()
        );
    }
    // A second run has nothing new for either destination.
    let out = run(&f, "ev", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(receiver.stats().events_received, 5000);
    let again = consume(
        &broker.brokers(),
        "wharf.ev",
        "g2",
        5000,
        true,
        Duration::from_secs(60),
    );
    assert_eq!(again.len(), 5000);
}

#[test]
fn a_broker_that_is_away_fails_the_run_uncommitted_and_the_next_run_delivers_everything() {
    let mut broker = KafkaBroker::start();
    let f = Fixture::new();
    events(&f, 20_000);
    let dests = kafka_destination(
        &broker.brokers(),
        r#"delivery_timeout = "1s"
give_up_after = "2s""#,
    );
    f.write_config("wharf.toml", &events_config(r#"["k"]"#, &dests));
    broker.stop();
    let out = run(&f, "ev", &[]);
    assert!(
        !out.status.success(),
        "the run must fail while the broker is away: {}",
        text(&out)
    );
    let status = status_of(&f);
    assert!(status.contains("FAILED"), "{status}");
    assert!(!status.contains("SUCCEEDED"), "{status}");

    broker.restart();
    let out = run(&f, "ev", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let got = consume(
        &broker.brokers(),
        "wharf.ev",
        "after",
        20_000,
        false,
        Duration::from_secs(60),
    );
    assert_eq!(got.len(), 20_000);
    assert_eq!(unique_insert_ids(&got).len(), 20_000);
}

/// A fixture whose sync `ev` sends `rows` events to `broker` with the destination settings
/// `extra`.
fn events_fixture(broker: &KafkaBroker, rows: usize, extra: &str) -> Fixture {
    let f = Fixture::new();
    events(&f, rows);
    let dests = kafka_destination(&broker.brokers(), extra);
    f.write_config("wharf.toml", &events_config(r#"["k"]"#, &dests));
    f
}

fn status_of(f: &Fixture) -> String {
    let status = f.wharf(&["status", "-c", "wharf.toml"], &[]);
    String::from_utf8_lossy(&status.stdout).into_owned()
}

/// Starts `wharf sync ev` in the background.
fn spawn_sync(f: &Fixture) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["sync", "ev", "-c", "wharf.toml"])
        .current_dir(f.dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start wharf")
}

/// Waits until the topic holds records (as `read_uncommitted` offsets count them).
fn wait_for_records(brokers: &str, topic: &str, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while records_on(brokers, topic, 3) == 0 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before a record reached the topic");
        }
        assert!(Instant::now() < deadline, "the run never sent a record");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every one of `rows` events is on `wharf.ev` (at least once).
fn assert_every_event_arrived(brokers: &str, rows: usize) {
    let got = consume(
        brokers,
        "wharf.ev",
        "check",
        rows,
        false,
        Duration::from_secs(60),
    );
    assert_eq!(
        unique_insert_ids(&got).len(),
        rows,
        "everything, at least once"
    );
}

fn unique_insert_ids(records: &[Consumed]) -> HashSet<String> {
    records
        .iter()
        .map(|r| r.value["after"]["properties"]["$insert_id"].to_string())
        .collect()
}

/// Run ids in the progress topic: the runs whose transactions committed.
fn committed_runs(brokers: &str, sync: &str) -> HashSet<u64> {
    consume(
        brokers,
        &format!("wharf.progress.{sync}"),
        "progress",
        1,
        true,
        Duration::from_secs(30),
    )
    .iter()
    .filter_map(|r| r.value["run"]["run_id"].as_u64())
    .collect()
}

/// `read_committed` consumers see each of `rows` events exactly once: `expected_runs` are the
/// runs whose records they see.
fn assert_exactly_once(brokers: &str, rows: usize, expected_runs: &[u64]) -> Vec<Consumed> {
    let committed = consume(
        brokers,
        "wharf.ev",
        "committed",
        rows,
        true,
        Duration::from_secs(60),
    );
    assert_eq!(
        committed.len(),
        rows,
        "read_committed: nothing twice, nothing missing"
    );
    assert_eq!(unique_insert_ids(&committed).len(), rows);
    let runs: HashSet<u64> = committed
        .iter()
        .filter_map(|r| r.value["run"].as_u64())
        .collect();
    assert_eq!(runs, expected_runs.iter().copied().collect::<HashSet<_>>());
    committed
}

/// A run killed (SIGKILL) after producing inside its open transaction, before the commit: a
/// `read_committed` consumer never sees its records, though they are on the log; the next run
/// fences the dead producer (its transaction is aborted) and delivers every record once.
#[test]
fn exactly_once_a_run_killed_inside_its_transaction_is_invisible_and_the_next_run_delivers_once() {
    let broker = KafkaBroker::start();
    let brokers = broker.brokers();
    // About 5 s of producing: the kill lands inside the transaction.
    let f = events_fixture(
        &broker,
        100_000,
        "exactly_once = true\nmax_records_per_second = 20000",
    );
    let mut child = spawn_sync(&f);
    wait_for_records(&brokers, "wharf.ev", &mut child);
    child.kill().expect("SIGKILL");
    let killed = child.wait_with_output().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed.status),
        Some(9),
        "{}",
        text(&killed)
    );
    let on_log = records_on(&brokers, "wharf.ev", 3);
    assert!(
        on_log > 0 && on_log < 100_000,
        "the killed run produced part of its records: {on_log}"
    );
    assert!(
        committed_runs(&brokers, "ev").is_empty(),
        "run 1 never committed"
    );
    assert!(!status_of(&f).contains("SUCCEEDED"), "{}", status_of(&f));

    let out = run(&f, "ev", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(committed_runs(&brokers, "ev"), HashSet::from([2]));
    assert_exactly_once(&brokers, 100_000, &[2]);
    // The aborted run's records are still on the log, for read_uncommitted consumers only.
    let all = consume(
        &brokers,
        "wharf.ev",
        "uncommitted",
        100_000 + on_log,
        false,
        Duration::from_secs(60),
    );
    assert!(
        all.iter().any(|r| r.value["run"] == 1),
        "run 1's records are on the log"
    );
}

/// A crash between the Kafka commit and the state store's: the next start adopts the progress
/// record (nothing is sent again), and `read_committed` consumers see every record once.
#[test]
fn exactly_once_a_crash_after_the_kafka_commit_is_adopted_from_the_progress_record() {
    let broker = KafkaBroker::start();
    let brokers = broker.brokers();
    let f = events_fixture(&broker, 10_000, "exactly_once = true");
    let out = run(&f, "ev", &[]);
    assert!(out.status.success(), "{}", text(&out));
    // Run 2 is killed after the Kafka commit, before the state store's.
    f.sql(
        "INSERT INTO ev SELECT 'Played', 'user' || (i % 97), 1700000000 + i, i
         FROM range(10000, 15000) t(i);",
    );
    let out = run(&f, "ev", &[("WHARF_CRASH_AFTER_DESTINATION_COMMIT", "1")]);
    assert_eq!(out.status.code(), Some(71), "{}", text(&out));
    // Run 3 commits run 2 from its progress record and sends nothing again.
    let out = run(&f, "ev", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let status = status_of(&f);
    assert!(
        status.contains("committed on restart from the destination's position"),
        "{status}"
    );
    // Run 4 sends only the rows added since.
    f.sql(
        "INSERT INTO ev SELECT 'Played', 'user' || (i % 97), 1700000000 + i, i
         FROM range(15000, 16000) t(i);",
    );
    let out = run(&f, "ev", &[]);
    assert!(out.status.success(), "{}", text(&out));

    assert_eq!(committed_runs(&brokers, "ev"), HashSet::from([1, 2, 3, 4]));
    let committed = assert_exactly_once(&brokers, 16_000, &[1, 2, 4]);
    let per_run = |run: u64| committed.iter().filter(|r| r.value["run"] == run).count();
    assert_eq!((per_run(1), per_run(2), per_run(4)), (10_000, 5_000, 1_000));
}

/// Two processes with the same `transactional.id` (a second deployment of the same sync): the
/// second one's start fences the first, whose transaction is aborted; the first stops with an
/// error that says so and commits nothing; `read_committed` consumers see the second's only.
#[test]
fn exactly_once_a_second_process_with_the_same_transactional_id_fences_the_first() {
    let broker = KafkaBroker::start();
    let brokers = broker.brokers();
    let first = events_fixture(
        &broker,
        100_000,
        "exactly_once = true\nmax_records_per_second = 20000",
    );
    let second = Fixture::new();
    second.sql(
        "CREATE TABLE ev AS SELECT 'Played' AS event, 'other' || (i % 13) AS user_id,
         1700500000 + i AS ts, i AS n FROM range(3000) t(i);",
    );
    second.write_config(
        "wharf.toml",
        &std::fs::read_to_string(first.path("wharf.toml")).expect("config"),
    );
    let mut child = spawn_sync(&first);
    wait_for_records(&brokers, "wharf.ev", &mut child);
    let out = run(&second, "ev", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let fenced = child.wait_with_output().expect("wait");
    let message = text(&fenced);
    assert!(!fenced.status.success(), "{message}");
    assert!(
        message.contains("fenced") && message.contains("wharf-ev"),
        "the first process says it was fenced, and by which transactional id: {message}"
    );
    let status = status_of(&first);
    assert!(
        status.contains("FAILED") && !status.contains("SUCCEEDED"),
        "{status}"
    );

    let committed = assert_exactly_once(&brokers, 3000, &[1]);
    assert!(
        committed
            .iter()
            .all(|r| r.value["after"]["properties"]["distinct_id"]
                .as_str()
                .is_some_and(|u| u.starts_with("other"))),
        "only the second process's events are committed"
    );
}

#[test]
fn a_broker_outage_shorter_than_give_up_after_is_ridden_out_within_the_run() {
    let mut broker = KafkaBroker::start();
    let f = events_fixture(
        &broker,
        100_000,
        r#"delivery_timeout = "1s"
give_up_after = "90s""#,
    );
    broker.stop();
    let child = spawn_sync(&f);
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_every_event_arrived(&broker.brokers(), 100_000);
}

#[test]
fn a_broker_stopped_mid_run_fails_it_uncommitted_and_the_next_run_delivers_everything() {
    let mut broker = KafkaBroker::start();
    let brokers = broker.brokers();
    // About 5 s of producing, so the broker goes away in the middle of the run.
    let f = events_fixture(
        &broker,
        100_000,
        r#"delivery_timeout = "1s"
give_up_after = "2s"
max_records_per_second = 20000"#,
    );
    let mut child = spawn_sync(&f);
    wait_for_records(&brokers, "wharf.ev", &mut child);
    broker.stop();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let status = status_of(&f);
    assert!(
        status.contains("FAILED") && !status.contains("SUCCEEDED"),
        "{status}"
    );

    broker.restart();
    // What the failed run delivered stays on the topic; the next run resends all of it.
    let partial = records_on(&brokers, "wharf.ev", 3);
    assert!(
        partial > 0 && partial < 100_000,
        "the failed run sent part of its rows before the broker went away: {partial}"
    );
    let out = run(&f, "ev", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let got = consume(
        &brokers,
        "wharf.ev",
        "check",
        partial + 100_000,
        false,
        Duration::from_secs(120),
    );
    assert_eq!(
        unique_insert_ids(&got).len(),
        100_000,
        "everything, at least once"
    );
}

#[test]
fn check_reports_the_brokers_or_why_they_cannot_be_reached() {
    let broker = KafkaBroker::start();
    let f = Fixture::new();
    events(&f, 10);
    let dead = format!("127.0.0.1:{}", common::free_port());
    let dests = format!(
        "{}\n[destinations.gone]\ntype = \"kafka\"\nbrokers = \"{dead}\"\nproperties = {{ \"sasl.password\" = \"hunter2-secret\" }}\n",
        kafka_destination(&broker.brokers(), "")
    );
    f.write_config("wharf.toml", &events_config(r#"["k"]"#, &dests));
    let out = f.wharf(&["check", "-c", "wharf.toml"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success(),
        "one destination is unreachable: {}",
        text(&out)
    );
    assert!(
        stdout.contains("ok    destination k (1 brokers"),
        "{}",
        text(&out)
    );
    assert!(
        stdout.contains(&format!(
            "FAIL  destination gone: cannot reach the brokers at {dead}"
        )),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("hunter2"), "no secret in the output");

    // A setting librdkafka refuses is named, its value is not.
    let bad = format!(
        "{}\n[destinations.bad]\ntype = \"kafka\"\nbrokers = \"{dead}\"\nproperties = {{ \"linger.ms\" = \"hunter2-secret\" }}\n",
        kafka_destination(&broker.brokers(), "")
    );
    f.write_config("wharf.toml", &events_config(r#"["k"]"#, &bad));
    let out = f.wharf(&["check", "-c", "wharf.toml"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("invalid librdkafka setting `linger.ms` (value not shown)"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("hunter2"), "no secret in the output");
}

/// A profile history table (SCD type 2) into Kafka: every history row, keyed by user and
/// start, with `wharf_history_end` (the start of the user's next row; null while current);
/// a user's new row arrives as its insert and an update that closes the previous row.
#[test]
fn profile_history_rows_arrive_with_their_start_and_end() {
    let broker = KafkaBroker::start();
    let f = Fixture::new();
    f.sql(
        "CREATE TABLE plans (id VARCHAR, plan VARCHAR, since TIMESTAMP);
         INSERT INTO plans VALUES ('a', 'free', '2024-01-01'), ('a', 'pro', '2024-03-01'),
                                  ('b', 'free', '2024-02-01');",
    );
    f.write_config(
        "wharf.toml",
        &mirror_config(&broker.brokers())
            .replace("name = \"people\"", "name = \"plans\"")
            .replace("table = \"people\"", "table = \"plans\"")
            .replace(
                "user_id_column = \"id\"",
                "user_id_column = \"id\"\nhistory_start_column = \"since\"",
            ),
    );
    let out = run(&f, "plans", &[]);
    assert!(out.status.success(), "{}", text(&out));
    f.sql("INSERT INTO plans VALUES ('b', 'team', '2024-04-01');");
    let out = run(&f, "plans", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let got = consume(
        &broker.brokers(),
        "wharf.plans",
        "history",
        5,
        false,
        Duration::from_secs(60),
    );
    // (user, plan, op) → end.
    let rows: BTreeMap<(String, String, String), serde_json::Value> = got
        .iter()
        .map(|r| {
            let key: serde_json::Value =
                serde_json::from_str(r.key.as_deref().expect("keyed")).expect("a JSON key");
            assert_eq!(key, r.value["key"], "{r:?}");
            assert_eq!(
                key.as_array().map(Vec::len),
                Some(2),
                "[user, start]: {r:?}"
            );
            (
                (
                    key[0].as_str().unwrap_or_default().to_string(),
                    r.value["after"]["plan"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    r.value["op"].as_str().unwrap_or_default().to_string(),
                ),
                r.value["after"]["wharf_history_end"].clone(),
            )
        })
        .collect();
    let end = |user: &str, plan: &str, op: &str| {
        rows.get(&(user.into(), plan.into(), op.into()))
            .unwrap_or_else(|| panic!("no {op} of {user}'s {plan} row: {rows:?}"))
            .as_str()
            .map(|s| s[..10].to_string())
    };
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(end("a", "free", "insert").as_deref(), Some("2024-03-01"));
    assert_eq!(end("a", "pro", "insert"), None);
    assert_eq!(end("b", "free", "insert"), None);
    assert_eq!(end("b", "free", "update").as_deref(), Some("2024-04-01"));
    assert_eq!(end("b", "team", "insert"), None);
}
