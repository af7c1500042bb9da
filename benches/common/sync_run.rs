//! What the throughput benches share: a null receiver (an HTTP server on 127.0.0.1 answering
//! 200 to every request), one `wharf sync` run measured (rows/s, peak RSS, CPU per row), and
//! CPU seconds from `getrusage`.

use serde_json::Value;

/// Starts a null receiver on `rt` and returns its URL.
#[allow(dead_code)]
pub fn null_receiver(rt: &tokio::runtime::Runtime) -> String {
    rt.block_on(async {
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
    })
}

/// One measured `wharf sync`.
#[allow(dead_code)]
pub struct Measured {
    /// Rows read.
    pub rows: f64,
    /// Wall seconds of the run (the sync's own summary).
    pub seconds: f64,
    /// Rows per second.
    pub rows_per_s: f64,
    /// The sync process's peak RSS in MB.
    pub rss_mb: f64,
    /// CPU seconds (user + system) of the sync process.
    pub sync_cpu_s: f64,
    /// CPU seconds of this process meanwhile (an in-process receiver).
    pub own_cpu_s: f64,
}

/// The wharf binary the benches run: this build's, or `WHARF_BENCH_BIN` (another build of
/// wharf, to compare two versions on the same machine in the same hour).
#[allow(dead_code)]
pub fn wharf_bin() -> String {
    std::env::var("WHARF_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wharf").to_string())
}

/// Runs `wharf sync <sync> --workers <workers>` in `dir` (under `taskset -c <cpus>` when
/// given), then removes its state so that the next run reads the table again.
#[allow(dead_code)]
pub fn run_sync(dir: &std::path::Path, sync: &str, workers: &str, cpus: Option<&str>) -> Measured {
    let (children, me) = (
        cpu_seconds(libc::RUSAGE_CHILDREN),
        cpu_seconds(libc::RUSAGE_SELF),
    );
    let wharf = &wharf_bin();
    let args = ["sync", sync, "--workers", workers, "--summary-json"];
    let mut cmd = match cpus {
        Some(c) => {
            let mut cmd = std::process::Command::new("taskset");
            cmd.args(["-c", c, wharf]).args(args);
            cmd
        }
        None => {
            let mut cmd = std::process::Command::new(wharf);
            cmd.args(args);
            cmd
        }
    };
    let out = cmd
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run wharf");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).expect("summary");
    let _ = std::fs::remove_dir_all(dir.join(".wharf"));
    let _ = std::fs::remove_file(dir.join("out/events.ndjson"));
    measured(&s, children, me)
}

/// A run's figures from its summary line, with the CPU used since `children` and `me`.
fn measured(s: &Value, children: f64, me: f64) -> Measured {
    Measured {
        rows: s["rows_read"].as_f64().unwrap_or(0.0),
        seconds: s["seconds"].as_f64().unwrap_or(0.0),
        rows_per_s: s["rows_per_second"].as_f64().unwrap_or(0.0),
        rss_mb: s["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        sync_cpu_s: cpu_seconds(libc::RUSAGE_CHILDREN) - children,
        own_cpu_s: cpu_seconds(libc::RUSAGE_SELF) - me,
    }
}

/// Runs `wharf sync <sync> --workers <workers>` as a cluster of `processes` processes on
/// 127.0.0.1 in `dir` (with `pin`, process `i` under `taskset -c i`); measured by process 0's
/// summary, the CPU of all of them. Then removes the state and the output files.
#[allow(dead_code)]
pub fn run_cluster(
    dir: &std::path::Path,
    sync: &str,
    processes: usize,
    workers: &str,
    pin: bool,
) -> Measured {
    let (children, me) = (
        cpu_seconds(libc::RUSAGE_CHILDREN),
        cpu_seconds(libc::RUSAGE_SELF),
    );
    let hosts: Vec<String> = (0..processes)
        .map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port");
            format!("127.0.0.1:{port}")
        })
        .collect();
    let hostfile = dir.join("hosts");
    std::fs::write(&hostfile, hosts.join("\n")).expect("hostfile");
    let wharf = &wharf_bin();
    let children_run: Vec<std::process::Child> = (0..processes)
        .map(|i| {
            let mut cmd = if pin {
                let mut cmd = std::process::Command::new("taskset");
                cmd.args(["-c", &i.to_string(), wharf]);
                cmd
            } else {
                std::process::Command::new(wharf)
            };
            cmd.args(["sync", sync, "--workers", workers, "--summary-json"])
                .args(["--processes", &processes.to_string()])
                .args(["--process", &i.to_string(), "--hostfile"])
                .arg(&hostfile)
                .current_dir(dir)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run wharf")
        })
        .collect();
    let outs: Vec<std::process::Output> = children_run
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    for out in &outs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Timely prints its connection progress on stdout before the summary line.
    let s: Value = String::from_utf8_lossy(&outs[0].stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("summary");
    let _ = std::fs::remove_dir_all(dir.join(".wharf"));
    for i in 0..processes {
        let _ = std::fs::remove_file(match i {
            0 => dir.join("out/events.ndjson"),
            i => dir.join(format!("out/events.process-{i}.ndjson")),
        });
    }
    measured(&s, children, me)
}

/// User + system CPU seconds of this process or of its waited-for children so far.
pub fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
