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

use serde_json::Value;
use wharf::receiver::{Faults, Receiver, ReceiverAuth, ReceiverConfig};

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
    // A null receiver: an HTTP server on 127.0.0.1 that reads each request and answers 200
    // (what the sender alone can do, with no receiver's parsing on the same cores).
    let null_url = rt.block_on(async {
        let app = axum::Router::new().fallback(|body: axum::body::Bytes| async move {
            std::hint::black_box(body.len());
            r#"{"code":200,"status":"OK"}"#
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    });

    println!(
        "{:<38} {:>10} {:>8} {:>10} {:>8} {:>17}",
        "run", "rows", "seconds", "rows/s", "RSS MB", "CPU µs/row: sync+recv"
    );
    let run = |label: &str, sync: &str, workers: &str| -> f64 {
        let (children, me) = (
            cpu_seconds(libc::RUSAGE_CHILDREN),
            cpu_seconds(libc::RUSAGE_SELF),
        );
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
        let per_row = |secs: f64| secs * 1e6 / s["rows_read"].as_f64().unwrap_or(1.0).max(1.0);
        let rate = s["rows_per_second"].as_f64().unwrap_or(0.0);
        println!(
            "{:<38} {:>10} {:>8.2} {:>10.0} {:>8.1} {:>9.2} + {:.2}",
            label,
            s["rows_read"],
            s["seconds"].as_f64().unwrap_or(0.0),
            rate,
            s["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            per_row(cpu_seconds(libc::RUSAGE_CHILDREN) - children),
            per_row(cpu_seconds(libc::RUSAGE_SELF) - me),
        );
        // Fresh state after each run, so that the next one reads the whole table again.
        let _ = std::fs::remove_dir_all(dir.path().join(".wharf"));
        let _ = std::fs::remove_file(dir.path().join("out/events.ndjson"));
        rate
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

/// User + system CPU seconds of this process or of its waited-for children so far.
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
