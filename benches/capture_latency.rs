//! Change-capture latency: a row committed in PostgreSQL → the line in the destination, with
//! `wharf sync --continuous` reading the table's logical-decoding slot (mirror mode).
//!
//! `cargo bench --bench capture_latency` (needs the local PostgreSQL with wal_level =
//! logical; `tests/postgres-up.sh` sets it up). Rows: `WHARF_BENCH_ROWS` (default 1,000),
//! poll interval: `WHARF_BENCH_INTERVAL` (default `100ms`). Prints p50/p90/p99/max.
//!
//! With `WHARF_BENCH_KAFKA=1` the destination is Kafka (an Apache Kafka broker started here,
//! see `tests/common/kafka.rs`) and the time is taken when a consumer reads the record. The
//! bench first waits until the new broker grants producer ids: until it has loaded its
//! transaction state it refuses them, and librdkafka asks again only 500 ms later, which
//! delayed wharf's first records by ~300 ms (the "first-second stall").
//!
//! By default one row is committed at a time (the next after the last arrived, at a random
//! point of the poll cycle). With `WHARF_BENCH_RATE=100` a writer commits single-row
//! transactions at that many per second, whatever arrives, and each record's latency is
//! matched to its row by key. `WHARF_BENCH_LOG` sets wharf's log filter (default `warn`).

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;

use wharf::warehouse::postgres::logical::Capture;
use wharf::warehouse::postgres::{PgSettings, PostgresWarehouse, SslMode};
use wharf::warehouse::SourceRef;

#[path = "../tests/common/mod.rs"]
mod common;

/// Where the bench waits for each change.
enum Arrivals {
    File(BufReader<std::fs::File>),
    Kafka(BaseConsumer),
}

impl Arrivals {
    /// Waits for the next record and returns its text; none after 30 s.
    fn next(&mut self, since: Instant) -> Option<String> {
        match self {
            Arrivals::File(reader) => {
                // A line the destination is still writing is read in pieces: keep them.
                let mut line = String::new();
                loop {
                    if reader.read_line(&mut line).expect("read") > 0 && line.ends_with('\n') {
                        return Some(line);
                    }
                    if since.elapsed() > Duration::from_secs(30) {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Arrivals::Kafka(consumer) => loop {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(1)) {
                    let text = m.payload().map(String::from_utf8_lossy).unwrap_or_default();
                    return Some(text.into_owned());
                }
                if since.elapsed() > Duration::from_secs(30) {
                    return None;
                }
            },
        }
    }
}

fn main() {
    let rows: usize = std::env::var("WHARF_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let interval = std::env::var("WHARF_BENCH_INTERVAL").unwrap_or_else(|_| "100ms".into());
    let pg = PostgresWarehouse::new(
        "pg",
        PgSettings {
            sslmode: SslMode::Disable,
            ..PgSettings::new("127.0.0.1", 5432, "test", "postgres")
        },
    );
    let schema = format!("wb_latency_{}", std::process::id());
    let exec = |sql: &str| {
        let sql = sql.to_string();
        pg.block(async {
            let c = pg.connect().await?;
            c.batch_execute(&sql)
                .await
                .map_err(|e| pg.err(&SourceRef::Query(sql.clone()), e))
        })
        .expect("sql");
    };
    exec(&format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id bigint PRIMARY KEY, v text);"
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = std::env::var("WHARF_BENCH_KAFKA")
        .is_ok()
        .then(common::kafka::KafkaBroker::start);
    if let Some(b) = &broker {
        b.wait_until_producers_can_write();
    }
    let destination = match &broker {
        Some(b) => format!(
            "[destinations.out]\ntype = \"kafka\"\nbrokers = \"{}\"\nlinger = \"0ms\"\npartitions = 1",
            b.brokers()
        ),
        None => "[destinations.out]\ntype = \"file\"\npath = \"out.ndjson\"".into(),
    };
    let config = format!(
        r#"[warehouses.pg]
type = "postgres"
host = "127.0.0.1"
database = "test"
user = "postgres"
sslmode = "disable"
{destination}
[[syncs]]
name = "{schema}"
warehouse = "pg"
table = "{schema}.t"
table_type = "users"
mode = "mirror"
change_capture = "logical"
primary_key = ["id"]
destinations = ["out"]
[syncs.mapping]
user_id_column = "id"
"#
    );
    std::fs::write(dir.path().join("wharf.toml"), config).expect("config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["sync", &schema, "--continuous", "--interval", &interval])
        .current_dir(dir.path())
        .env(
            "RUST_LOG",
            std::env::var("WHARF_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .spawn()
        .expect("start wharf");
    // Wait for the initial snapshot run (an empty table: the file or topic appears when it
    // ran).
    let started = Instant::now();
    let mut arrivals = match &broker {
        None => {
            let out = dir.path().join("out.ndjson");
            while !out.exists() && started.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let mut file = std::fs::File::open(&out).expect("out.ndjson");
            file.seek(SeekFrom::End(0)).expect("seek");
            Arrivals::File(BufReader::new(file))
        }
        Some(b) => {
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", b.brokers())
                .set("group.id", "latency")
                .set("fetch.wait.max.ms", "5")
                // A fetch that finds the partition's end waits this long before the next one
                // (500 ms by default): the consumer's pause, not the pipeline's.
                .set("fetch.error.backoff.ms", "5")
                .create()
                .expect("consumer");
            let topic = format!("wharf.{schema}");
            while consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .map(|m| m.topics().iter().all(|t| t.partitions().is_empty()))
                .unwrap_or(true)
            {
                assert!(started.elapsed() < Duration::from_secs(30), "no topic");
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut tpl = rdkafka::TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)
                .expect("partition");
            consumer.assign(&tpl).expect("assign");
            Arrivals::Kafka(consumer)
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let rate: Option<u64> = std::env::var("WHARF_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut latencies = Vec::with_capacity(rows);
    // (latency, when the row was committed, since the first commit): where the tail lies.
    let mut timeline: Vec<(Duration, Duration)> = Vec::new();
    match rate {
        None => {
            for i in 0..rows {
                exec(&format!("INSERT INTO {schema}.t VALUES ({i}, 'x')"));
                let committed = Instant::now();
                assert!(
                    arrivals.next(committed).is_some(),
                    "row {i} did not arrive within 30 s"
                );
                latencies.push(committed.elapsed());
                // Rows arrive at random points of the poll cycle.
                std::thread::sleep(Duration::from_millis(fastrand::u64(0..100)));
            }
        }
        Some(rate) => {
            let committed = std::sync::Arc::new(std::sync::Mutex::new(vec![None; rows]));
            let writer = {
                let (committed, schema, pg) = (committed.clone(), schema.clone(), pg.clone());
                std::thread::spawn(move || write_at_rate(&pg, &schema, rows, rate, &committed))
            };
            let mut seen = vec![false; rows];
            for _ in 0..rows {
                let text = arrivals.next(Instant::now()).expect("a record within 30 s");
                let arrived = Instant::now();
                let id = key_of(&text).unwrap_or_else(|| panic!("no key in {text}"));
                assert!(!seen[id], "row {id} arrived twice");
                seen[id] = true;
                let (at, first) = {
                    let c = committed.lock().expect("lock");
                    (c[id].expect("committed before arriving"), c[0])
                };
                latencies.push(arrived.duration_since(at));
                if let Some(first) = first {
                    timeline.push((arrived.duration_since(at), at.duration_since(first)));
                }
            }
            writer.join().expect("writer");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = pg.drop_capture(&Capture::for_sync(&schema, &format!("{schema}.t")));
    exec(&format!("DROP SCHEMA {schema} CASCADE"));
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "PostgreSQL commit → {}, {rows} single-row commits {}, poll interval {interval}: \
         p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        if broker.is_some() {
            "Kafka consumer"
        } else {
            "file"
        },
        match rate {
            Some(r) => format!("at {r}/s"),
            None => "one at a time".into(),
        },
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
    if !timeline.is_empty() {
        // The slowest 1%: spread over the run (the poll cycle) or bunched (a stall somewhere).
        timeline.sort_by_key(|t| std::cmp::Reverse(t.0));
        let tail = &timeline[..(timeline.len() / 100).max(1)];
        let mut seconds: Vec<u64> = tail.iter().map(|(_, at)| at.as_secs()).collect();
        seconds.dedup();
        seconds.sort_unstable();
        seconds.dedup();
        println!(
            "slowest 1% ({} rows) committed during seconds {seconds:?} of the run",
            tail.len()
        );
    }
}

/// Commits rows `0..rows` of `schema.t`, one per transaction, `rate` per second on one
/// connection, noting when each commit returned.
fn write_at_rate(
    pg: &PostgresWarehouse,
    schema: &str,
    rows: usize,
    rate: u64,
    committed: &std::sync::Mutex<Vec<Option<Instant>>>,
) {
    pg.block(async {
        let c = pg.connect().await?;
        let start = Instant::now();
        for i in 0..rows {
            let due = start + Duration::from_micros(i as u64 * 1_000_000 / rate.max(1));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            let sql = format!("INSERT INTO {schema}.t VALUES ({i}, 'x')");
            c.batch_execute(&sql)
                .await
                .map_err(|e| pg.err(&SourceRef::Query(sql.clone()), e))?;
            committed.lock().expect("lock")[i] = Some(Instant::now());
        }
        Ok(())
    })
    .expect("writer");
}

/// The row id in a change envelope's `key` (a number, or the first of an array or object).
fn key_of(text: &str) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    let key = &v["key"];
    let first = match key {
        serde_json::Value::Array(a) => a.first()?.clone(),
        serde_json::Value::Object(o) => o.values().next()?.clone(),
        other => other.clone(),
    };
    match first {
        serde_json::Value::Number(n) => n.as_u64().map(|n| n as usize),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}
