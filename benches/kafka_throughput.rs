//! Records/s into a local Apache Kafka broker (one KRaft node on 127.0.0.1, started here from
//! the jars `tests/kafka-up.sh` resolves from Maven Central), or into the brokers named by
//! `WHARF_BENCH_BROKERS` (e.g. another Kafka-compatible broker started by hand):
//!
//! 1. the destination alone: pre-encoded change envelopes (≈ 300 bytes) sent by
//!    `KafkaDestination` as the delivery loop would (requests of 50,000, 4 in flight);
//! 2. end to end: `wharf sync` of a DuckDB events table into the broker (read, map, envelope,
//!    produce, every delivery report awaited, commit).
//!
//! `cargo bench --bench kafka_throughput`; records: `WHARF_BENCH_ROWS` (default 1,000,000).
//! The broker shares the machine's two cores with wharf; its start-up time and resident memory
//! (before and after) are printed too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf::destination::kafka::{KafkaDestination, KafkaSettings};
use wharf_operators::record::{ChangeOp, EncodedRecords};
use wharf_pipelines::destination::Destination;

#[path = "../tests/common/mod.rs"]
mod common;

fn settings(brokers: &str, topic: &str, compression: &'static str, headers: bool) -> KafkaSettings {
    KafkaSettings {
        brokers: brokers.into(),
        topic: topic.into(),
        sync: "bench".into(),
        compression,
        partitions: 3,
        replication_factor: 1,
        exactly_once: None,
        delivery_timeout: Duration::from_secs(30),
        linger: Duration::from_millis(5),
        headers,
        properties: Default::default(),
    }
}

fn destination_only(brokers: &str, rows: usize, compression: &'static str, headers: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let topic = format!("bench.dest.{compression}.{headers}");
    let dest = Arc::new(
        KafkaDestination::open(settings(brokers, &topic, compression, headers), rt.handle())
            .expect("open"),
    );
    let per_request = 50_000;
    let requests: Vec<EncodedRecords> = (0..rows.div_ceil(per_request))
        .map(|r| {
            let mut recs = EncodedRecords::default();
            for i in r * per_request..((r + 1) * per_request).min(rows) {
                let key = format!("\"user{}\"", i % 100_000);
                let line = format!(
                    r#"{{"op":"insert","key":{key},"after":{{"event":"Played","properties":{{"time":{},"distinct_id":{key},"$insert_id":"{:032x}","song":"song {}","duration":{},"plan":"pro"}}}},"sync":"bench","table":"ev","table_type":"events","run":1,"ts":1764400000000}}"#,
                    1_700_000_000_000i64 + i as i64,
                    i,
                    i % 5000,
                    i % 300
                );
                recs.push_keyed(line.as_bytes(), key.as_bytes(), ChangeOp::Insert);
            }
            recs
        })
        .collect();
    let bytes: usize = requests.iter().map(|r| r.byte_len()).sum();
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(4));
        for req in requests {
            let permit = slots.clone().acquire_owned().await.expect("semaphore");
            let dest = dest.clone();
            tasks.spawn(async move {
                let n = dest.send(&req).await.expect("send").delivered;
                drop(permit);
                n
            });
        }
        let mut delivered = 0;
        while let Some(n) = tasks.join_next().await {
            delivered += n.expect("task");
        }
        assert_eq!(delivered, rows);
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "destination only, {rows} envelopes ({:.0} MB), compression {compression}, headers {headers}: {secs:.2} s, {:.0} records/s, {:.0} MB/s",
        bytes as f64 / 1e6,
        rows as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
}

fn end_to_end(brokers: &str, rows: usize, headers: bool) {
    let f = common::Fixture::new();
    f.sql(&format!(
        "CREATE TABLE ev AS SELECT 'Played' AS event, 'user' || (i % 100000) AS user_id,
         1700000000 + i AS ts, 'song ' || (i % 5000) AS song, i % 300 AS duration,
         CASE WHEN i % 3 = 0 THEN 'pro' ELSE 'free' END AS plan FROM range({rows}) t(i);"
    ));
    f.write_config(
        "wharf.toml",
        &format!(
            r#"state_dir = ".wharf"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
[destinations.k]
type = "kafka"
brokers = "{brokers}"
topic = "bench.e2e.{headers}"
headers = {headers}
[[syncs]]
name = "ev"
warehouse = "wh"
table = "ev"
table_type = "events"
mode = "append"
destinations = ["k"]
[syncs.mapping]
event_name_column = "event"
time_column = "ts"
user_id_column = "user_id"
"#
        ),
    );
    let started = Instant::now();
    let out = f.wharf(&["sync", "ev", "--summary-json"], &[("RUST_LOG", "warn")]);
    let secs = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", common::text(&out));
    println!(
        "end to end (wharf sync, DuckDB → Kafka envelopes, lz4, headers {headers}), {rows} rows: {secs:.2} s, {:.0} records/s\n  {}",
        rows as f64 / secs,
        String::from_utf8_lossy(&out.stdout).trim()
    );
}

fn main() {
    let rows: usize = std::env::var("WHARF_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (broker, brokers) = match std::env::var("WHARF_BENCH_BROKERS") {
        Ok(b) => (None, b),
        Err(_) => {
            let broker = common::kafka::KafkaBroker::start();
            println!(
                "Apache Kafka broker: up in {:.1} s, {} MB resident",
                broker.started_in.as_secs_f64(),
                broker.rss_kib().unwrap_or(0) / 1024
            );
            let brokers = broker.brokers();
            (Some(broker), brokers)
        }
    };
    // The broker's CPU seconds in each phase: how much of the two cores it takes.
    let broker_cpu = || broker.as_ref().and_then(|b| b.cpu_seconds());
    let phase = |name: String, f: &dyn Fn()| {
        let (cpu, wall) = (broker_cpu(), Instant::now());
        f();
        if let (Some(before), Some(after)) = (cpu, broker_cpu()) {
            let secs = wall.elapsed().as_secs_f64();
            println!(
                "  broker during {name}: {:.2} CPU s in {secs:.2} s ({:.0}% of one core)",
                after - before,
                (after - before) / secs * 100.0
            );
        }
    };
    for (compression, headers) in [("lz4", true), ("none", true), ("lz4", false)] {
        phase(
            format!("destination only, {compression}, headers {headers}"),
            &|| destination_only(&brokers, rows, compression, headers),
        );
    }
    for headers in [true, false] {
        phase(format!("end to end, headers {headers}"), &|| {
            end_to_end(&brokers, rows, headers)
        });
    }
    if let Some(b) = &broker {
        println!(
            "Apache Kafka broker: {} MB resident at the end",
            b.rss_kib().unwrap_or(0) / 1024
        );
    }
}
