//! Change-capture latency: a row committed in PostgreSQL → the line in the destination, with
//! `wharf sync --continuous` reading the table's logical-decoding slot (mirror mode).
//!
//! `cargo bench --bench capture_latency` (needs the local PostgreSQL with wal_level =
//! logical; `tests/postgres-up.sh` sets it up). Rows: `WHARF_BENCH_ROWS` (default 1,000),
//! poll interval: `WHARF_BENCH_INTERVAL` (default `100ms`). Prints p50/p90/p99/max.
//!
//! With `WHARF_BENCH_KAFKA=1` the destination is Kafka (an Apache Kafka broker started here,
//! see `tests/common/kafka.rs`) and the time is taken when a consumer reads the record.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

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
    /// Waits for the next record; false after 30 s.
    fn next(&mut self, since: Instant) -> bool {
        match self {
            Arrivals::File(reader) => {
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).expect("read") > 0 && line.ends_with('\n') {
                        return true;
                    }
                    if since.elapsed() > Duration::from_secs(30) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Arrivals::Kafka(consumer) => loop {
                if let Some(Ok(_)) = consumer.poll(Duration::from_millis(1)) {
                    return true;
                }
                if since.elapsed() > Duration::from_secs(30) {
                    return false;
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
        .env("RUST_LOG", "warn")
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
    let mut latencies = Vec::with_capacity(rows);
    for i in 0..rows {
        exec(&format!("INSERT INTO {schema}.t VALUES ({i}, 'x')"));
        let committed = Instant::now();
        assert!(
            arrivals.next(committed),
            "row {i} did not arrive within 30 s"
        );
        latencies.push(committed.elapsed());
        // Rows arrive at random points of the poll cycle.
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..100)));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = pg.drop_capture(&Capture::for_sync(&schema, &format!("{schema}.t")));
    exec(&format!("DROP SCHEMA {schema} CASCADE"));
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "PostgreSQL commit → {}, {rows} single-row commits, poll interval {interval}: \
         p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        if broker.is_some() {
            "Kafka consumer"
        } else {
            "file"
        },
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
}
