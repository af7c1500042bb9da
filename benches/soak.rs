//! Soak: `wharf run` with 50 syncs of every table type and mode, continuous and on intervals,
//! for 10 minutes (bounded), while a writer keeps changing the PostgreSQL tables and the API is
//! polled. Prints the service's RSS, open file descriptors and threads every 30 s, and the
//! API's latency percentiles; fails when the fds or threads grow, RSS grows by more than half
//! between the first sample after warm-up and the end, or the API's p99 is 100 ms or more.
//!
//! `cargo bench --bench soak` (needs PostgreSQL as `.ci/run` starts it). `WHARF_SOAK_SECONDS`
//! (default 600) sets the length.
//!
//! The 50 syncs: PostgreSQL — 10 append (events, continuous), 5 mirror by logical decoding
//! (users, continuous), 5 mirror by snapshot diffs (users, every 10 s, to a file); DuckDB — 10
//! append (events, every 5 s), 10 full (users, every 15 s), 5 mirror of group profiles (every
//! 20 s), 5 mirror of a lookup table (every 30 s). Mixpanel destinations go to the receiver
//! (in this process).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf::receiver::{Receiver, ReceiverAuth, ReceiverConfig};
use wharf::warehouse::postgres::logical::Capture;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/chaos.rs"]
mod harness;

use harness::postgres::{exec, warehouse as pg};

/// RSS (KiB), open file descriptors and threads of `pid`.
fn sample(pid: u32) -> (u64, usize, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (field("VmRSS:"), fds, field("Threads:") as usize)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn config(schema: &str, receiver: &str, port: u16) -> String {
    let mut c = format!(
        r#"state_dir = ".wharf"
[service]
listen = "127.0.0.1:{port}"
poll_interval = "1s"
retry_initial = "2s"
retry_max = "10s"
[warehouses.pg]
type = "postgres"
host = "127.0.0.1"
database = "test"
user = "postgres"
sslmode = "disable"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
[destinations.mp]
type = "mixpanel"
api_host = "{receiver}"
project_id = "42"
project_token = "tok"
service_account = {{ username = "sa", secret = "soak" }}
[destinations.file]
type = "file"
path = "out.ndjson"
"#
    );
    let mut sync = |name: String, body: &str| {
        let _ = write!(c, "\n[[syncs]]\nname = \"{name}\"\n{body}");
    };
    const EVENTS: &str = "[syncs.mapping]\nevent_name_column = \"name\"\ntime_column = \"ts\"\nuser_id_column = \"uid\"\n";
    for i in 0..10 {
        sync(format!("pg_append_{i}"), &format!("warehouse = \"pg\"\ntable = \"{schema}.ev\"\ntable_type = \"events\"\nmode = \"append\"\nschedule = \"continuous\"\ndestinations = [\"mp\"]\n{EVENTS}"));
    }
    for i in 0..5 {
        sync(format!("pg_logical_{i}"), &format!("warehouse = \"pg\"\ntable = \"{schema}.users\"\ntable_type = \"users\"\nmode = \"mirror\"\nchange_capture = \"logical\"\nprimary_key = [\"id\"]\nschedule = \"continuous\"\ndestinations = [\"mp\"]\n[syncs.mapping]\nuser_id_column = \"id\"\n"));
    }
    for i in 0..5 {
        sync(format!("pg_diff_{i}"), &format!("warehouse = \"pg\"\ntable = \"{schema}.users\"\ntable_type = \"users\"\nmode = \"mirror\"\nchange_capture = \"snapshot\"\nprimary_key = [\"id\"]\nschedule = \"10s\"\ndestinations = [\"file\"]\n[syncs.mapping]\nuser_id_column = \"id\"\n"));
    }
    for i in 0..10 {
        sync(format!("duck_append_{i}"), &format!("warehouse = \"wh\"\ntable = \"ev\"\ntable_type = \"events\"\nmode = \"append\"\nschedule = \"5s\"\ndestinations = [\"mp\"]\n{EVENTS}"));
    }
    for i in 0..10 {
        sync(format!("duck_full_{i}"), "warehouse = \"wh\"\ntable = \"users\"\ntable_type = \"users\"\nmode = \"full\"\nprimary_key = [\"id\"]\nschedule = \"15s\"\ndestinations = [\"mp\"]\n[syncs.mapping]\nuser_id_column = \"id\"\n");
    }
    for i in 0..5 {
        sync(format!("duck_groups_{i}"), "warehouse = \"wh\"\ntable = \"companies\"\ntable_type = \"groups\"\nmode = \"mirror\"\nschedule = \"20s\"\ndestinations = [\"mp\"]\n[syncs.mapping]\ngroup_key = \"company\"\ngroup_id_column = \"id\"\n");
    }
    for i in 0..5 {
        sync(format!("duck_lookup_{i}"), &format!("warehouse = \"wh\"\ntable = \"companies\"\ntable_type = \"lookup\"\nmode = \"mirror\"\nprimary_key = [\"id\"]\nschedule = \"30s\"\ndestinations = [\"mp\"]\n[syncs.mapping]\nlookup_table_id = \"0f0e0d0c-0b0a-4909-8807-0605040302{i:02}\"\n"));
    }
    c
}

fn main() {
    let seconds: u64 = std::env::var("WHARF_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = format!("soak_{}", std::process::id());
    exec(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.ev (id bigserial PRIMARY KEY, name text NOT NULL,
           ts timestamptz NOT NULL DEFAULT clock_timestamp(), uid text NOT NULL);
         INSERT INTO {schema}.ev (name, ts, uid) SELECT 'Backfill', now() - interval '1 day' + g * interval '1 ms', 'u' || (g % 1000)
           FROM generate_series(1, 20000) g;
         CREATE TABLE {schema}.users (id text PRIMARY KEY, name text NOT NULL, v bigint NOT NULL);
         INSERT INTO {schema}.users SELECT 'u' || g, 'name ' || g, 0 FROM generate_series(0, 4999) g;"
    ));
    {
        let conn = duckdb::Connection::open(dir.path().join("wh.duckdb")).expect("duckdb");
        conn.execute_batch(
            "CREATE TABLE ev AS SELECT 'E' || (i % 5) AS name, TIMESTAMP '2024-01-01' + to_seconds(i) AS ts,
               'u' || (i % 5000) AS uid, i AS n FROM range(100000) t(i);
             CREATE TABLE users AS SELECT 'u' || i AS id, 'name ' || i AS name, (i % 5)::BIGINT AS plan FROM range(10000) t(i);
             CREATE TABLE companies AS SELECT 'c' || i AS id, 'company ' || i AS name FROM range(1000) t(i);",
        )
        .expect("duckdb tables");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let receiver = rt
        .block_on(Receiver::start(
            ReceiverConfig::new(dir.path().join("recv"), ReceiverAuth::AnyCredentials),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .expect("receiver");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    std::fs::write(
        dir.path().join("wharf.toml"),
        config(&schema, &receiver.base_url(), port),
    )
    .expect("config");
    let log = std::fs::File::create(dir.path().join("service.log")).expect("log");
    let mut service = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["run", "-c", "wharf.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start wharf run");
    let pid = service.id();

    // The writer: an event every 50 ms, and every 500 ms a transaction updating, deleting and
    // inserting users.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (schema, stop) = (schema.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut events, mut txns, mut tick) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                tick += 1;
                exec(&format!(
                    "INSERT INTO {schema}.ev (name, uid) VALUES ('Live', 'u{}')",
                    tick % 1000
                ));
                events += 1;
                if tick % 10 == 0 {
                    exec(&format!(
                        "BEGIN;
                         UPDATE {schema}.users SET v = v + 1, name = 'w{tick}' WHERE id IN ('u{a}', 'u{b}', 'u{c}');
                         DELETE FROM {schema}.users WHERE id = 'u{d}';
                         INSERT INTO {schema}.users VALUES ('u{d}', 'back {tick}', {tick}) ON CONFLICT (id) DO NOTHING;
                         COMMIT;",
                        a = tick % 5000,
                        b = (tick * 7) % 5000,
                        c = (tick * 13) % 5000,
                        d = (tick * 31) % 5000,
                    ));
                    txns += 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (events, txns)
        })
    };

    // The API poller: one request after another (with a 100 ms pause) across its endpoints.
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    rt.block_on(async {
        while client.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the service did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    println!(
        "soak: 50 syncs, {seconds} s; service pid {pid} up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let paths = [
        "/status".to_string(),
        "/syncs".to_string(),
        "/syncs/pg_logical_0/runs".to_string(),
        "/syncs/duck_full_3".to_string(),
        "/metrics".to_string(),
        "/".to_string(),
    ];
    let mut latencies = Vec::new();
    let mut per_path: Vec<Vec<Duration>> = vec![Vec::new(); paths.len()];
    let mut failures = 0u64;
    let mut samples = Vec::new();
    let end = started + Duration::from_secs(seconds);
    let mut next_sample = Instant::now();
    let mut i = 0usize;
    println!(
        "{:>6} {:>10} {:>5} {:>8}",
        "t (s)", "RSS (MiB)", "fds", "threads"
    );
    while Instant::now() < end {
        if Instant::now() >= next_sample {
            let (rss, fds, threads) = sample(pid);
            let t = started.elapsed().as_secs();
            println!("{t:>6} {:>10.1} {fds:>5} {threads:>8}", rss as f64 / 1024.0);
            samples.push((t, rss, fds, threads));
            next_sample += Duration::from_secs(30);
        }
        let path = &paths[i % paths.len()];
        i += 1;
        let t0 = Instant::now();
        let ok = rt.block_on(async {
            match client
                .get(format!("{base}{path}"))
                .timeout(Duration::from_secs(10))
                .send()
                .await
            {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            }
        });
        if ok {
            latencies.push(t0.elapsed());
            per_path[(i - 1) % paths.len()].push(t0.elapsed());
        } else {
            failures += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (rss, fds, threads) = sample(pid);
    let t = started.elapsed().as_secs();
    println!("{t:>6} {:>10.1} {fds:>5} {threads:>8}", rss as f64 / 1024.0);
    samples.push((t, rss, fds, threads));
    stop.store(true, Ordering::Relaxed);
    let (events, txns) = writer.join().expect("writer");

    let runs = rt.block_on(async {
        let status: serde_json::Value = client
            .get(format!("{base}/syncs"))
            .send()
            .await
            .expect("syncs")
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        status
    });
    let _ = service.kill();
    let _ = service.wait();
    for i in 0..5 {
        let _ = pg().drop_capture(&Capture::for_sync(
            &format!("pg_logical_{i}"),
            &format!("{schema}.users"),
        ));
    }
    exec(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));

    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );
    let stats = receiver.stats();
    let failing: Vec<String> = runs
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["state"] == "failing" || s["last_error"].is_string())
                .map(|s| format!("{}: {}", s["name"], s["last_error"]))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "writer: {events} events, {txns} user transactions; receiver: {} events accepted, {} profile updates",
        stats.events_accepted,
        receiver.endpoint_stats().engage.updates_received
    );
    println!(
        "API: {} requests, {failures} failed; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    for (path, mut l) in paths.iter().zip(per_path) {
        l.sort();
        println!(
            "  {path}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&l, 0.5).as_secs_f64() * 1e3,
            percentile(&l, 0.99).as_secs_f64() * 1e3,
            l.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
    }
    if !failing.is_empty() {
        println!("syncs with errors at the end: {failing:?}");
    }
    // Growth: from the first sample after the warm-up (the initial loads) to the end.
    let warm = samples
        .iter()
        .find(|s| s.0 >= 60)
        .or(samples.first())
        .copied()
        .expect("samples");
    let last = *samples.last().expect("samples");
    println!(
        "from {} s to {} s: RSS {:.1} → {:.1} MiB, fds {} → {}, threads {} → {}",
        warm.0,
        last.0,
        warm.1 as f64 / 1024.0,
        last.1 as f64 / 1024.0,
        warm.2,
        last.2,
        warm.3,
        last.3
    );
    let mut problems = Vec::new();
    if last.2 > warm.2 + 5 {
        problems.push(format!("file descriptors grew: {} → {}", warm.2, last.2));
    }
    if last.3 > warm.3 + 5 {
        problems.push(format!("threads grew: {} → {}", warm.3, last.3));
    }
    if last.1 > warm.1 * 3 / 2 {
        problems.push(format!(
            "RSS grew by more than half: {} → {} KiB",
            warm.1, last.1
        ));
    }
    if p99 >= Duration::from_millis(100) {
        problems.push(format!("API p99 {:.1} ms", p99.as_secs_f64() * 1e3));
    }
    if failures > 0 {
        problems.push(format!("{failures} API requests failed"));
    }
    assert!(problems.is_empty(), "soak: {}", problems.join("; "));
    println!("soak: passed");
}
