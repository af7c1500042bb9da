//! End-to-end throughput harness: generates a demo events table in DuckDB and runs the real
//! `wharf sync` binary into (a) a null receiver (an HTTP server answering 200 to every
//! request), (b) an NDJSON file and (c) the Mixpanel-compatible receiver over HTTP, printing
//! rows/s and the sync process's peak RSS.
//!
//! `cargo bench --bench e2e` (rows: `WHARF_BENCH_ROWS`, default 1,000,000;
//! `WHARF_BENCH_FAULTS=0` skips the run with injected faults, which takes minutes at 10M rows;
//! `WHARF_BENCH_REPEAT`, default 3, how many times the receiver run is repeated: its speed
//! varies a lot between runs on a shared VM, so each run is printed and then the median).
//!
//! Besides rows/s, each run prints the CPU time per row of the sync process and of this
//! process (the in-process receiver), user + system: steadier than wall time on a busy
//! machine, and what a target on a fixed number of cores comes down to.

use std::net::SocketAddr;
use std::time::Instant;

use wharf::receiver::{Faults, Receiver, ReceiverAuth, ReceiverConfig};

#[path = "common/sync_run.rs"]
mod sync_run;

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
    // A fresh receiver (empty store) for each receiver run; the file runs need none.
    let start_receiver = |n: usize| {
        let receiver = rt
            .block_on(Receiver::start(
                ReceiverConfig::new(
                    dir.path().join(format!("receiver-{n}")),
                    ReceiverAuth::AnyCredentials,
                ),
                SocketAddr::from(([127, 0, 0, 1], 0)),
            ))
            .expect("receiver");
        let config = wharf::demo::demo_config("demo.duckdb", &receiver.base_url());
        std::fs::write(dir.path().join("wharf.toml"), config).expect("config");
        receiver
    };
    // A null receiver: what the sender alone can do, with no receiver's parsing on the same
    // cores.
    let null_url = sync_run::null_receiver(&rt);

    println!(
        "{:<38} {:>10} {:>8} {:>10} {:>8} {:>17}",
        "run", "rows", "seconds", "rows/s", "RSS MB", "CPU µs/row: sync+recv"
    );
    let run = |label: &str, sync: &str, workers: &str| -> f64 {
        let m = sync_run::run_sync(dir.path(), sync, workers, None);
        let per_row = |secs: f64| secs * 1e6 / m.rows.max(1.0);
        println!(
            "{:<38} {:>10} {:>8.2} {:>10.0} {:>8.1} {:>9.2} + {:.2}",
            label,
            m.rows,
            m.seconds,
            m.rows_per_s,
            m.rss_mb,
            per_row(m.sync_cpu_s),
            per_row(m.own_cpu_s),
        );
        m.rows_per_s
    };
    let config = wharf::demo::demo_config("demo.duckdb", &null_url);
    std::fs::write(dir.path().join("wharf.toml"), config).expect("config");
    run("duckdb -> null receiver, 1 worker", "demo_events", "1");
    run("duckdb -> null receiver, 2 workers", "demo_events", "2");
    let receiver = start_receiver(0);
    run("duckdb -> file, 1 worker", "demo_events_file", "1");
    run("duckdb -> file, 2 workers", "demo_events_file", "2");
    let repeat: usize = std::env::var("WHARF_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let mut rates = Vec::new();
    let mut receiver = Some(receiver);
    for n in 0..repeat {
        let receiver = receiver.take().unwrap_or_else(|| start_receiver(n));
        rates.push(run(
            "duckdb -> receiver (HTTP), 2 workers",
            "demo_events",
            "2",
        ));
        let stats = receiver.stats();
        assert_eq!(
            (
                stats.events_accepted,
                stats.unique_events,
                stats.events_rejected
            ),
            (rows, rows, 0),
            "the receiver must hold each row exactly once"
        );
        rt.block_on(receiver.shutdown());
        let _ = std::fs::remove_dir_all(dir.path().join(format!("receiver-{n}")));
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "duckdb -> receiver (HTTP): median of {repeat} runs {:.0} rows/s; each run: {rows} events accepted, {rows} unique, 0 rejected",
        rates[repeat / 2]
    );
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
