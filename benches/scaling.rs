//! Scaling harness: the same 1M-event DuckDB backfill (`WHARF_BENCH_ROWS`) by `wharf sync`
//! with 1, 2, 4… workers (`WHARF_BENCH_WORKERS`, default `1,2,4`), into a null receiver (an
//! HTTP server on 127.0.0.1 answering 200 to every request) and into an NDJSON file. Each row
//! of the table: rows/s, CPU seconds per million rows (user + system of the sync process), and
//! peak RSS. Then the same pinned with `taskset`: 1 worker on CPU 0 against N workers on CPUs
//! 0..N, the speed-up per core added.
//!
//! Then processes (`--processes`, a timely cluster on 127.0.0.1, `WHARF_BENCH_PROCESSES`,
//! default `2`) of 1 worker each, and pinned: one process on CPU 0 against P processes each
//! on its own CPU.
//!
//! `WHARF_BENCH_DESTS` picks the destinations (default `null,file`), `WHARF_BENCH_REPEAT` runs
//! each unpinned row that many times (default 1), `WHARF_BENCH_PINNED=0` skips the pinned runs:
//! `WHARF_BENCH_DESTS=null WHARF_BENCH_WORKERS=2 WHARF_BENCH_PROCESSES=1 WHARF_BENCH_PINNED=0
//! WHARF_BENCH_REPEAT=5` compares builds (`WHARF_BENCH_BIN`) quickly.
//!
//! `cargo bench --bench scaling` (see README, "Throughput").

#[path = "common/sync_run.rs"]
mod sync_run;

fn main() {
    let rows: u64 = std::env::var("WHARF_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let workers: Vec<usize> = std::env::var("WHARF_BENCH_WORKERS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir().expect("temp dir");
    wharf::demo::create_demo_warehouse(&dir.path().join("demo.duckdb"), rows).expect("demo");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let null_url = sync_run::null_receiver(&rt);
    let config = wharf::demo::demo_config("demo.duckdb", &null_url);
    std::fs::write(dir.path().join("wharf.toml"), config).expect("config");
    println!("{rows} demo events, {cores} cores");
    println!(
        "{:<22} {:>8} {:>8} {:>11} {:>15} {:>8}",
        "destination", "workers", "pinned", "rows/s", "CPU s / M rows", "RSS MB"
    );
    let line = |dest: &str, w: usize, pinned: &str, m: &sync_run::Measured| {
        println!(
            "{:<22} {:>8} {:>8} {:>11.0} {:>15.2} {:>8.1}",
            dest,
            w,
            pinned,
            m.rows_per_s,
            m.sync_cpu_s * 1e6 / m.rows.max(1.0),
            m.rss_mb
        );
    };
    let processes: Vec<usize> = std::env::var("WHARF_BENCH_PROCESSES")
        .unwrap_or_else(|_| "2".into())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .filter(|p| *p > 1)
        .collect();
    let wanted = std::env::var("WHARF_BENCH_DESTS").unwrap_or_else(|_| "null,file".into());
    let dests: Vec<(&str, &str)> = [
        ("null", "null receiver", "demo_events"),
        ("file", "file", "demo_events_file"),
    ]
    .into_iter()
    .filter(|(key, _, _)| wanted.split(',').any(|w| w.trim() == *key))
    .map(|(_, dest, sync)| (dest, sync))
    .collect();
    let repeat: usize = std::env::var("WHARF_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for &(dest, sync) in &dests {
        for &w in &workers {
            for _ in 0..repeat {
                let m = sync_run::run_sync(dir.path(), sync, &w.to_string(), None);
                line(dest, w, "-", &m);
            }
        }
        for &p in &processes {
            for _ in 0..repeat {
                let m = sync_run::run_cluster(dir.path(), sync, p, "1", false);
                line(&format!("{dest}, {p} proc"), p, "-", &m);
            }
        }
    }
    if std::env::var("WHARF_BENCH_PINNED").is_ok_and(|v| v == "0") {
        return;
    }
    // Pinned: one core against several (as many as the machine has, up to the largest count).
    let most = workers.iter().copied().max().unwrap_or(1).min(cores);
    if most < 2
        || std::process::Command::new("taskset")
            .arg("-V")
            .output()
            .is_err()
    {
        println!("(no pinned runs: one core, or no taskset)");
        return;
    }
    for &(dest, sync) in &dests {
        let one = sync_run::run_sync(dir.path(), sync, "1", Some("0"));
        line(dest, 1, "0", &one);
        let cpus = format!("0-{}", most - 1);
        let many = sync_run::run_sync(dir.path(), sync, &most.to_string(), Some(&cpus));
        line(dest, most, &cpus, &many);
        println!(
            "{dest}: {most} pinned cores give {:.2}x one pinned core",
            many.rows_per_s / one.rows_per_s.max(1.0)
        );
        for &p in processes.iter().filter(|p| **p <= cores) {
            let cluster = sync_run::run_cluster(dir.path(), sync, p, "1", true);
            line(&format!("{dest}, {p} proc"), p, "each", &cluster);
            println!(
                "{dest}: {p} processes pinned to a core each give {:.2}x one process pinned to one core",
                cluster.rows_per_s / one.rows_per_s.max(1.0)
            );
        }
    }
}
