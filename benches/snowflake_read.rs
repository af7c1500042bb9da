//! Snowflake read throughput against the `fakesnow` emulator: a table of `WHARF_BENCH_ROWS`
//! rows (default 1,000,000) and 8 columns (NUMBER key, text ×3, NUMBER(12,2), FLOAT, BOOLEAN,
//! TIMESTAMP_NTZ) read through wharf's connector (HTTP query, base64 Arrow IPC decoded and
//! converted to plain Arrow). fakesnow answers in one rowset, so the time includes the
//! emulator building the whole result in Python/DuckDB. Needs fakesnow (`.ci/run` installs
//! it; `WHARF_FAKESNOW` names the binary).
//!
//! `cargo bench --bench snowflake_read`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wharf::config::Config;
use wharf::warehouse::{SourceRef, Warehouse};

fn main() {
    let rows: u64 = std::env::var("WHARF_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let bin = std::env::var("WHARF_FAKESNOW").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/wharf/venv-snow/bin/fakesnow")
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut child = Command::new(&bin)
        .args(["-s", "-p", &port.to_string(), "--host", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} ({e}); run .ci/run or set WHARF_FAKESNOW"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "fakesnow did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let config = Config::parse(
        &format!(
            "[warehouses.sf]\ntype = \"snowflake\"\naccount = \"bench\"\nuser = \"u\"\npassword = \"p\"\ndatabase = \"DB\"\nurl = \"http://127.0.0.1:{port}\""
        ),
        "bench.toml",
    )
    .expect("config");
    let wh = Warehouse::from_config(&config, "sf").expect("warehouse");
    let started = Instant::now();
    execute(
        port,
        &format!(
            "CREATE TABLE t AS SELECT x AS id, 'user ' || (x % 50000)::VARCHAR AS user_id, \
         'event ' || (x % 20)::VARCHAR AS name, md5(x::VARCHAR) AS note, \
         ((x % 100000) / 100.0)::NUMBER(12,2) AS amount, x / 7.0::FLOAT AS ratio, \
         x % 2 = 0 AS flag, '2024-01-01'::TIMESTAMP_NTZ + to_seconds(x) AS at \
         FROM range({rows}) t(x)"
        ),
    );
    println!(
        "created {rows} rows × 8 columns in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let src = SourceRef::Table("t".into());
    for run in 1..=3 {
        let started = Instant::now();
        let mut n = 0u64;
        wh.read_snapshot(&src, |b| {
            n += b.num_rows() as u64;
            true
        })
        .expect("read");
        let secs = started.elapsed().as_secs_f64();
        println!(
            "run {run}: read {n} rows in {secs:.2}s = {:.0} rows/s",
            n as f64 / secs
        );
    }
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .unwrap_or_default();
    println!("peak RSS of this process: {peak} kB (fakesnow not included)");
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs one statement over fakesnow's HTTP API (login, then query-request).
fn execute(port: u16, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let post = |url: String, body: serde_json::Value, token: Option<String>| {
            let mut r = client
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string());
            if let Some(t) = token {
                r = r.header("authorization", format!("Snowflake Token=\"{t}\""));
            }
            r.send()
        };
        let login: serde_json::Value = serde_json::from_slice(
            &post(
                format!("{base}/session/v1/login-request?databaseName=DB&schemaName=PUBLIC"),
                serde_json::json!({"data": {"LOGIN_NAME": "u", "PASSWORD": "p", "SESSION_PARAMETERS": {}}}),
                None,
            )
            .await
            .expect("login")
            .bytes()
            .await
            .expect("login body"),
        )
        .expect("login json");
        let token = login["data"]["token"].as_str().expect("token").to_string();
        let answer: serde_json::Value = serde_json::from_slice(
            &post(
                format!("{base}/queries/v1/query-request"),
                serde_json::json!({ "sqlText": sql }),
                Some(token),
            )
            .await
            .expect("query")
            .bytes()
            .await
            .expect("query body"),
        )
        .expect("query json");
        assert_eq!(answer["success"], true, "{answer}");
    });
}
