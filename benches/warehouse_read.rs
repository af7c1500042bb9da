//! Read throughput of the HTTP warehouses against their emulators: a table of
//! `WHARF_BENCH_ROWS` rows (default 1,000,000) of 6 columns (integer key, text ×3, double,
//! timestamp) read 3 times through wharf's connector into Arrow, per emulator
//! (`WHARF_BENCH_WAREHOUSES`, default `snowflake,databricks,bigquery`). The time includes the
//! emulator (Python over DuckDB, on the same two cores) producing the result. Needs the
//! emulators `.ci/run` installs.
//!
//! `cargo bench --bench warehouse_read`

#[path = "../tests/common/emulators.rs"]
mod emulators;

#[path = "common/rss.rs"]
mod rss;

use rss::peak_rss_kb;
use std::time::Instant;

use wharf::config::Config;
use wharf::warehouse::SourceRef;

/// Resets the peak RSS (Linux: `5` into `clear_refs`), so each warehouse's peak is its own.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn measure(what: &str, toml: &str, name: &str, table: &str) {
    let config = Config::parse(toml, "bench.toml").expect("config");
    let wh = wharf::warehouse::open(&config, name).expect("warehouse");
    let src = SourceRef::Table(table.into());
    reset_peak();
    for run in 1..=3 {
        let started = Instant::now();
        let mut n = 0u64;
        wh.read_snapshot(&src, &mut |b| {
            n += b.num_rows() as u64;
            true
        })
        .expect("read");
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{what} run {run}: read {n} rows in {secs:.2}s = {:.0} rows/s",
            n as f64 / secs
        );
    }
    println!("{what}: peak RSS of wharf {} MB", peak_rss_kb() / 1024);
}

fn main() {
    let rows: u64 = std::env::var("WHARF_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let which = std::env::var("WHARF_BENCH_WAREHOUSES")
        .unwrap_or_else(|_| "snowflake,databricks,bigquery".into());
    for w in which.split(',') {
        let started = Instant::now();
        match w.trim() {
            "snowflake" => {
                let sf = emulators::FakeSnow::start();
                sf.sql(&[&format!(
                    "CREATE TABLE t AS SELECT x AS id, 'user ' || (x % 50000)::VARCHAR AS user_id, \
                     'event ' || (x % 20)::VARCHAR AS name, md5(x::VARCHAR) AS note, x / 7.0::FLOAT AS ratio, \
                     '2024-01-01'::TIMESTAMP_NTZ + to_seconds(x) AS at FROM range({rows}) t(x)"
                )]);
                println!(
                    "snowflake: created {rows} rows in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                let toml = format!(
                    "[warehouses.sf]\ntype = \"snowflake\"\naccount = \"bench\"\nuser = \"u\"\npassword = \"p\"\ndatabase = \"DB\"\nurl = \"{}\"\n",
                    sf.url()
                );
                measure("snowflake (fakesnow)", &toml, "sf", "t");
            }
            "databricks" => {
                let lake = emulators::MiniLake::start();
                lake.sql(&[&format!(
                    "CREATE TABLE cat.s.t AS SELECT x AS id, 'user ' || (x % 50000)::VARCHAR AS user_id, \
                     'event ' || (x % 20)::VARCHAR AS name, md5(x::VARCHAR) AS note, x / 7.0 AS ratio, \
                     TIMESTAMP '2024-01-01' + to_seconds(x) AS at FROM range({rows}) t(x)"
                )]);
                println!(
                    "databricks: created {rows} rows in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                measure("databricks (minilake)", &lake.toml(), "dbx", "t");
            }
            "bigquery" => {
                let bq = emulators::BqEmulator::start();
                bq.sql(&[&format!(
                    "CREATE TABLE ds.t AS SELECT x AS id, CONCAT('user ', CAST(MOD(x, 50000) AS STRING)) AS user_id, \
                     CONCAT('event ', CAST(MOD(x, 20) AS STRING)) AS name, TO_HEX(MD5(CAST(x AS STRING))) AS note, \
                     x / 7.0 AS ratio, TIMESTAMP_ADD(TIMESTAMP '2024-01-01 00:00:00+00', INTERVAL x SECOND) AS at \
                     FROM UNNEST(GENERATE_ARRAY(0, {})) AS x",
                    rows - 1
                )]);
                println!(
                    "bigquery: created {rows} rows in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                let rest = format!("{}storage_read = false\n", bq.toml());
                measure("bigquery (bqemulator, REST pages)", &rest, "bq", "t");
                measure(
                    "bigquery (bqemulator, Storage Read API, 4 streams)",
                    &bq.toml(),
                    "bq",
                    "t",
                );
            }
            other => panic!("unknown warehouse `{other}` in WHARF_BENCH_WAREHOUSES"),
        }
    }
}
