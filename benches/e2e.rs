//! End-to-end throughput harness: generates a demo events table in DuckDB and runs the real
//! `wharf sync` binary into (a) an NDJSON file and (b) the Mixpanel-compatible receiver over
//! HTTP, printing rows/s and the sync process's peak RSS.
//!
//! `cargo bench --bench e2e` (rows: `WHARF_BENCH_ROWS`, default 1,000,000;
//! `WHARF_BENCH_FAULTS=0` skips the run with injected faults, which takes minutes at 10M rows).

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::Value;
use wharf::destination::mixpanel::receiver::{Faults, Receiver, ReceiverAuth, ReceiverConfig};

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rows: u64 = std::env::var("WHARF_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    wharf::demo::create_demo_warehouse(&dir.path().join("demo.duckdb"), rows).expect("demo");
    println!(
        "generated {rows} demo events (16 columns incl. JSON, list, struct, decimal) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let receiver = rt
        .block_on(Receiver::start(
            ReceiverConfig::new(dir.path().join("receiver"), ReceiverAuth::AnyCredentials),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .expect("receiver");
    let config = wharf::demo::demo_config("demo.duckdb", &receiver.base_url());
    std::fs::write(dir.path().join("wharf.toml"), config).expect("config");

    println!(
        "{:<34} {:>10} {:>9} {:>12} {:>12}",
        "run", "rows", "seconds", "rows/s", "peak RSS MB"
    );
    let run = |label: &str, sync: &str, workers: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["sync", sync, "--workers", workers, "--summary-json"])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("run wharf");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: Value = serde_json::from_slice(&out.stdout).expect("summary");
        println!(
            "{:<34} {:>10} {:>9.2} {:>12.0} {:>12.1}",
            label,
            s["rows_read"],
            s["seconds"].as_f64().unwrap_or(0.0),
            s["rows_per_second"].as_f64().unwrap_or(0.0),
            s["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1e6
        );
        // Fresh state after each run, so that the next one reads the whole table again.
        let _ = std::fs::remove_dir_all(dir.path().join(".wharf"));
        let _ = std::fs::remove_file(dir.path().join("out/events.ndjson"));
    };
    run("duckdb -> file, 1 worker", "demo_events_file", "1");
    run("duckdb -> file, 2 workers", "demo_events_file", "2");
    run("duckdb -> receiver (HTTP), 2 workers", "demo_events", "2");
    let stats = receiver.stats();
    println!(
        "receiver: {} events accepted, {} unique, {} rejected",
        stats.events_accepted, stats.unique_events, stats.events_rejected
    );
    rt.block_on(receiver.shutdown());
    if std::env::var("WHARF_BENCH_FAULTS").is_ok_and(|v| v == "0") {
        return;
    }

    // The same with 30% of requests failing (429 + Retry-After 1 s, 503, 502 after storing).
    let mut faulty = ReceiverConfig::new(dir.path().join("faulty"), ReceiverAuth::AnyCredentials);
    faulty.faults = Some(Faults {
        rate: 0.3,
        seed: 3,
        retry_after: std::time::Duration::from_secs(1),
    });
    let receiver = rt
        .block_on(Receiver::start(
            faulty,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .expect("receiver");
    let config = wharf::demo::demo_config("demo.duckdb", &receiver.base_url())
        .replace("# initial_backoff = \"2s\"", "initial_backoff = \"100ms\"");
    std::fs::write(dir.path().join("wharf.toml"), config).expect("config");
    run("duckdb -> receiver, 30% faults", "demo_events", "2");
    let stats = receiver.stats();
    println!(
        "faulty receiver: {} requests, {} events accepted, {} unique (must equal rows)",
        stats.requests, stats.events_accepted, stats.unique_events
    );
    assert_eq!(
        stats.unique_events, rows,
        "lost or duplicated events under faults"
    );
    rt.block_on(receiver.shutdown());
}
