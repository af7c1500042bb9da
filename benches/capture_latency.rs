//! Change-capture latency: a row committed in PostgreSQL → the line in the destination, with
//! `wharf sync --continuous` reading the table's logical-decoding slot (mirror mode).
//!
//! `cargo bench --bench capture_latency` (needs the local PostgreSQL with wal_level =
//! logical; `tests/postgres-up.sh` sets it up). Rows: `WHARF_BENCH_ROWS` (default 1,000),
//! poll interval: `WHARF_BENCH_INTERVAL` (default `100ms`). Prints p50/p90/p99/max.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::time::{Duration, Instant};

use wharf::warehouse::postgres::logical::Capture;
use wharf::warehouse::postgres::{PgSettings, PostgresWarehouse, SslMode};
use wharf::warehouse::SourceRef;

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
    let config = format!(
        r#"[warehouses.pg]
type = "postgres"
host = "127.0.0.1"
database = "test"
user = "postgres"
sslmode = "disable"
[destinations.out]
type = "file"
path = "out.ndjson"
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
    // Wait for the initial snapshot run (an empty table: the file appears when it ran).
    let out = dir.path().join("out.ndjson");
    let started = Instant::now();
    while !out.exists() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut file = std::fs::File::open(&out).expect("out.ndjson");
    file.seek(SeekFrom::End(0)).expect("seek");
    let mut reader = BufReader::new(file);
    let mut latencies = Vec::with_capacity(rows);
    for i in 0..rows {
        exec(&format!("INSERT INTO {schema}.t VALUES ({i}, 'x')"));
        let committed = Instant::now();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).expect("read") > 0 && line.ends_with('\n') {
                break;
            }
            if committed.elapsed() > Duration::from_secs(30) {
                panic!("row {i} did not arrive within 30 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
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
        "PostgreSQL commit → destination, {rows} single-row commits, poll interval {interval}: \
         p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
}
