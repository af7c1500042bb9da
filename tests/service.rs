//! `wharf run`, the always-on service, as a child process: schedules, run history, the HTTP
//! API, Prometheus metrics (parsed by Prometheus' official Python client), alerts, the web
//! page (rendered by headless Chromium), config reload and graceful shutdown.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, text, Fixture};
use serde_json::Value;
use wharf::receiver::{Receiver, ReceiverAuth, ReceiverConfig, SlowResponses};

/// An events table `name` with `rows` rows (ids from `from`).
fn events_table(fx: &Fixture, name: &str, from: u64, rows: u64) {
    fx.sql(&format!(
        "CREATE TABLE IF NOT EXISTS {name} (id BIGINT, name VARCHAR, ts TIMESTAMP, uid VARCHAR);
         INSERT INTO {name} SELECT i, 'E' || (i % 3)::VARCHAR, TIMESTAMP '2024-01-01' + to_seconds(i),
                'u' || (i % 101)::VARCHAR FROM range({from}, {}) t(i);",
        from + rows
    ));
}

/// A config: the service on `port`, a Mixpanel destination at `host`, and one events sync
/// per `(name, table, schedule)`.
fn config(host: &str, port: u16, extra: &str, syncs: &[(&str, &str, &str)]) -> String {
    let mut c = format!(
        r#"state_dir = ".state"
{extra}
[service]
listen = "127.0.0.1:{port}"
retry_initial = "200ms"
retry_max = "1s"
poll_interval = "200ms"
{}"#,
        common::duckdb_and_mixpanel(host)
    );
    for (name, table, schedule) in syncs {
        c.push_str(&format!(
            r#"[[syncs]]
name = "{name}"
warehouse = "wh"
table = "{table}"
table_type = "events"
mode = "append"
destinations = ["mp"]
schedule = "{schedule}"
[syncs.mapping]
event_name_column = "name"
time_column = "ts"
user_id_column = "uid"
key_columns = ["id"]
"#
        ));
    }
    c
}

/// `wharf run` as a child process; killed when dropped.
struct Service {
    child: Option<Child>,
    port: u16,
    token: Option<String>,
    rt: tokio::runtime::Runtime,
    log: PathBuf,
}

impl Service {
    fn start(fx: &Fixture, port: u16, token: Option<&str>) -> Service {
        Service::start_with(fx, port, token, &[])
    }

    fn start_with(fx: &Fixture, port: u16, token: Option<&str>, envs: &[(&str, &str)]) -> Service {
        static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = fx.path(&format!("service-{n}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["run", "-c", "wharf.toml"])
            .current_dir(fx.dir.path())
            .env_remove("RUST_LOG")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start wharf run");
        let s = Service {
            child: Some(child),
            port,
            token: token.map(str::to_string),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.request("GET", "/healthz").map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "service did not start:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// A client of a service started elsewhere, with `token`.
    fn client(port: u16, token: Option<&str>) -> Service {
        Service {
            child: None,
            port,
            token: token.map(str::to_string),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            log: PathBuf::new(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn request(&self, method: &str, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        self.rt.block_on(async {
            let client = reqwest::Client::new();
            let mut req = client.request(method.parse().ok()?, &url);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let r = req.timeout(Duration::from_secs(10)).send().await.ok()?;
            let status = r.status().as_u16();
            Some((status, r.text().await.ok()?))
        })
    }

    /// GET `path`, expecting 200 and JSON.
    fn json(&self, path: &str) -> Value {
        let (status, body) = self.request("GET", path).expect("request");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("json")
    }

    fn post(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.request("POST", path).expect("request");
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn runs(&self, sync: &str) -> Vec<Value> {
        self.json(&format!("/syncs/{sync}/runs?limit=100"))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn sync(&self, sync: &str) -> Value {
        self.json(&format!("/syncs/{sync}"))
    }

    /// Waits until `f` holds for the runs of `sync` (newest first).
    fn wait_runs(&self, sync: &str, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let runs = self.runs(sync);
            if f(&runs) {
                return runs;
            }
            assert!(
                Instant::now() < deadline,
                "{sync}: {what} did not happen; runs: {runs:#?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Waits (up to `limit`) for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wharf run did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn succeeded(runs: &[Value]) -> Vec<&Value> {
    runs.iter().filter(|r| r["status"] == "SUCCEEDED").collect()
}

fn started_at(run: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(run["started_at"].as_str().expect("started_at"))
        .expect("time")
        .with_timezone(&chrono::Utc)
}

fn receiver(fx: &Fixture, slow: Option<Duration>) -> Receiver {
    let mut config = ReceiverConfig::new(fx.path("recv"), ReceiverAuth::AnyCredentials);
    config.slow_responses = slow.map(|delay| SlowResponses {
        fraction: 1.0,
        delay,
        seed: 1,
    });
    fx.rt
        .block_on(Receiver::start(
            config,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .expect("receiver")
}

/// A receiver (answers `slow` late), a config with `extra` and `syncs`, and the service on it.
fn serve(
    fx: &Fixture,
    slow: Option<Duration>,
    extra: &str,
    syncs: &[(&str, &str, &str)],
) -> (Receiver, Service) {
    let recv = receiver(fx, slow);
    let port = free_port();
    fx.write_config("wharf.toml", &config(&recv.base_url(), port, extra, syncs));
    let svc = Service::start(fx, port, None);
    (recv, svc)
}

#[test]
fn schedules_fire_at_their_times_and_history_survives_a_restart() {
    let fx = Fixture::new();
    events_table(&fx, "ev", 0, 100);
    events_table(&fx, "ev2", 0, 50);
    // A cron expression with seconds (every 2 s on even seconds) and an interval.
    let (recv, mut svc) = serve(
        &fx,
        None,
        "",
        &[("cron", "ev", "*/2 * * * * *"), ("every", "ev2", "1s")],
    );
    let port = svc.port;
    let cron = svc.wait_runs("cron", "4 successful runs", |r| succeeded(r).len() >= 4);
    let every = svc.wait_runs("every", "4 successful runs", |r| succeeded(r).len() >= 4);
    // A sync that never ran runs at once when the service starts (its initial load); after
    // that, cron runs start on even seconds, just after the second begins, 2 s apart.
    let mut cron_starts: Vec<_> = succeeded(&cron).iter().map(|r| started_at(r)).collect();
    cron_starts.pop();
    for t in &cron_starts {
        use chrono::Timelike;
        assert_eq!(t.second() % 2, 0, "cron run at {t}");
        assert!(t.nanosecond() < 500_000_000, "cron run late: {t}");
    }
    for w in cron_starts.windows(2) {
        let gap = (w[0] - w[1]).num_milliseconds();
        assert!((1600..=2400).contains(&gap), "cron gaps: {cron_starts:?}");
    }
    // The interval sync runs every second, on the wall clock's seconds (after its initial
    // load at the start).
    let mut every_starts: Vec<_> = succeeded(&every).iter().map(|r| started_at(r)).collect();
    every_starts.pop();
    for w in every_starts.windows(2) {
        let gap = (w[0] - w[1]).num_milliseconds();
        assert!(
            (800..=1300).contains(&gap),
            "interval gaps: {every_starts:?}"
        );
    }
    // Only the first runs had rows; every row was sent once.
    assert_eq!(succeeded(&cron).last().unwrap()["rows_read"], 100);
    assert_eq!(succeeded(&every).last().unwrap()["rows_read"], 50);
    assert_eq!(recv.stats().unique_events, 150);

    svc.signal("TERM");
    let status = svc.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", svc.log());
    // The history is in the state store: `wharf history` reads it with the service stopped…
    let out = fx.wharf(&["history", "cron", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let history: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(history.len() >= cron.len(), "{history:#?}");
    let out = fx.wharf(&["history", "cron"], &[]);
    assert!(text(&out).contains("SUCCEEDED"), "{}", text(&out));
    // …and a restarted service serves it, adding runs after it.
    let svc = Service::start(&fx, port, None);
    let runs = svc.runs("cron");
    for id in svc_runs_ids(&history) {
        assert!(
            svc_runs_ids(&runs).contains(&id),
            "run {id} lost on restart"
        );
    }
    // While the service holds the store, `wharf history` asks its API.
    let out = fx.wharf(&["history", "cron", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() >= history.len());
}

fn svc_runs_ids(runs: &[Value]) -> Vec<u64> {
    runs.iter().filter_map(|r| r["run_id"].as_u64()).collect()
}

/// A tiny webhook endpoint recording the JSON bodies POSTed to it.
fn webhook(fx: &Fixture) -> (String, Arc<Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    store.lock().unwrap().push(v);
                }
                "ok"
            }
        }),
    );
    let listener = fx
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    fx.rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), seen)
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_failing_sync_is_retried_with_backoff_and_alerts_while_others_run() {
    let fx = Fixture::new();
    events_table(&fx, "ev", 0, 20);
    let (hook, alerts) = webhook(&fx);
    // `bad` reads a PostgreSQL server that is not there (connection refused): a transient
    // failure, retried with backoff.
    let recv = receiver(&fx, None);
    let port = free_port();
    let down = free_port();
    let text = config(
        &recv.base_url(),
        port,
        &format!("[alerts]\nwebhook_url = \"{hook}\""),
        &[("bad", "no_such_table", "1s"), ("good", "ev", "1s")],
    )
    .replace(
        "warehouse = \"wh\"\ntable = \"no_such_table\"",
        "warehouse = \"down\"\ntable = \"public.no_such_table\"",
    )
    .replace(
        "[destinations.mp]",
        &format!("[warehouses.down]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {down}\ndatabase = \"test\"\nuser = \"postgres\"\nsslmode = \"disable\"\n[destinations.mp]"),
    );
    fx.write_config("wharf.toml", &text);
    let svc = Service::start(&fx, port, None);
    let good = svc.wait_runs("good", "4 successful runs", |r| succeeded(r).len() >= 4);
    let bad = svc.wait_runs("bad", "3 failed runs", |r| {
        r.iter().filter(|x| x["status"] == "FAILED").count() >= 3
    });
    assert!(good.iter().all(|r| r["status"] == "SUCCEEDED"), "{good:#?}");
    assert!(
        bad[0]["error"].as_str().unwrap().contains("cannot reach"),
        "{bad:#?}"
    );
    // Retries back off: 200 ms, 400 ms, 800 ms, then 1 s (the maximum) apart at least.
    let starts: Vec<_> = bad.iter().map(started_at).collect();
    let gaps: Vec<i64> = starts
        .windows(2)
        .map(|w| (w[0] - w[1]).num_milliseconds())
        .collect();
    assert!(gaps.iter().all(|g| *g >= 150), "retry gaps {gaps:?}");
    assert!(gaps[0] >= gaps[gaps.len() - 1], "backoff grows: {gaps:?}");
    let status = svc.sync("bad");
    assert_eq!(status["state"], "retrying", "{status}");
    assert!(status["failures"].as_u64().unwrap() >= 3, "{status}");
    assert!(status["last_error"]
        .as_str()
        .unwrap()
        .contains("cannot reach"));
    wait_for("three run_failed alerts", || {
        alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a["alert"] == "run_failed" && a["sync"] == "bad")
            .count()
            >= 3
    });
    let a = alerts.lock().unwrap()[0].clone();
    assert!(a["error"].as_str().unwrap().contains("cannot reach"), "{a}");
    assert!(a["run_id"].as_u64().unwrap() > 0, "{a}");
    assert!(
        !alerts.lock().unwrap().iter().any(|a| a["sync"] == "good"),
        "no alert for the good sync"
    );
    assert_eq!(recv.stats().unique_events, 20);
}

/// A permanent failure (here a table that does not exist) is not retried: one failed run, one
/// alert, state `failed` with the reason; a run asked for fails again without a second alert;
/// a config reload that fixes it makes the sync run again on its schedule.
#[test]
fn a_permanent_failure_is_not_retried_until_the_config_is_reloaded() {
    let fx = Fixture::new();
    events_table(&fx, "ev", 0, 20);
    let (hook, alerts) = webhook(&fx);
    let extra = format!("[alerts]\nwebhook_url = \"{hook}\"");
    let (recv, svc) = serve(
        &fx,
        None,
        &extra,
        &[("bad", "no_such_table", "1s"), ("good", "ev", "1s")],
    );
    svc.wait_runs("good", "4 successful runs", |r| succeeded(r).len() >= 4);
    let bad = svc.runs("bad");
    assert_eq!(bad.len(), 1, "one failed run, not retried: {bad:#?}");
    assert_eq!(bad[0]["status"], "FAILED");
    let status = svc.sync("bad");
    assert_eq!(status["state"], "failed", "{status}");
    assert!(status["next_run_at"].is_null(), "{status}");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("no_such_table"),
        "{status}"
    );
    let bad_alerts = || {
        alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a["alert"] == "run_failed" && a["sync"] == "bad")
            .count()
    };
    wait_for("one run_failed alert", || bad_alerts() >= 1);

    // A run asked for runs (and fails again, without another alert).
    let (code, _) = svc.post("/syncs/bad/run");
    assert_eq!(code, 202);
    svc.wait_runs("bad", "a second failed run", |r| r.len() >= 2);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(svc.runs("bad").len(), 2, "still not retried");
    assert_eq!(bad_alerts(), 1, "alerted once");
    assert_eq!(svc.sync("bad")["state"], "failed");

    // The config fixed and reloaded: it runs again, on its schedule.
    fx.write_config(
        "wharf.toml",
        &config(
            &recv.base_url(),
            svc.port,
            &extra,
            &[("bad", "ev", "1s"), ("good", "ev", "1s")],
        ),
    );
    svc.signal("HUP");
    let runs = svc.wait_runs("bad", "a successful run after the reload", |r| {
        !succeeded(r).is_empty()
    });
    assert_eq!(runs[0]["status"], "SUCCEEDED", "{runs:#?}");
    wait_for("the state leaves `failed`", || {
        svc.sync("bad")["state"] != "failed"
    });
}

/// A continuous sync with nothing new records no run: its status says since when it is idle.
#[test]
fn an_idle_continuous_sync_records_no_runs_and_says_since_when() {
    let fx = Fixture::new();
    events_table(&fx, "ev", 0, 10);
    let (recv, svc) = serve(&fx, None, "", &[("live", "ev", "continuous")]);
    svc.wait_runs("live", "the first load", |r| succeeded(r).len() == 1);
    wait_for("idle_since", || !svc.sync("live")["idle_since"].is_null());
    // poll_interval is 200 ms: many idle polls, no new run.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(svc.runs("live").len(), 1, "{:#?}", svc.runs("live"));
    let status = svc.sync("live");
    assert_eq!(status["failures"], 0, "{status}");
    assert_eq!(recv.stats().unique_events, 10);
}

/// A sync without a schedule runs hourly under `wharf run`, on the wall clock: its initial load
/// at once, then at the next :00.
#[test]
fn a_sync_without_a_schedule_runs_hourly_on_the_hour() {
    let fx = Fixture::new();
    events_table(&fx, "ev", 0, 10);
    let recv = receiver(&fx, None);
    let port = free_port();
    let text = config(&recv.base_url(), port, "", &[("plain", "ev", "manual")]);
    fx.write_config("wharf.toml", &text.replace("schedule = \"manual\"\n", ""));
    let svc = Service::start(&fx, port, None);
    svc.wait_runs("plain", "the initial load", |r| succeeded(r).len() == 1);
    let status = svc.sync("plain");
    assert_eq!(status["schedule"], "hourly", "{status}");
    assert_eq!(status["state"], "scheduled", "{status}");
    let next: chrono::DateTime<chrono::Utc> = status["next_run_at"]
        .as_str()
        .expect("a next run")
        .parse()
        .expect("a time");
    use chrono::Timelike;
    assert_eq!((next.minute(), next.second()), (0, 0), "{status}");
    let until = next - chrono::Utc::now();
    assert!(
        until > chrono::Duration::zero() && until <= chrono::Duration::hours(1),
        "{status}"
    );
    assert_eq!(recv.stats().unique_events, 10);
}

/// A one-time sync under `wharf run` loads its table once and then shows as done: no more
/// runs on its schedule, no failure, no retry, no alert, a manual run refused with the way to
/// load it again; after a restart it is still done.
#[test]
fn a_one_time_sync_is_done_after_its_load_not_failing() {
    let fx = Fixture::new();
    events_table(&fx, "ev", 0, 20);
    events_table(&fx, "once_table", 0, 30);
    let (hook, alerts) = webhook(&fx);
    let recv = receiver(&fx, None);
    let port = free_port();
    let text = config(
        &recv.base_url(),
        port,
        &format!("[alerts]\nwebhook_url = \"{hook}\""),
        &[("good", "ev", "1s"), ("once", "once_table", "1s")],
    );
    let one_time = "name = \"once\"\nwarehouse = \"wh\"\ntable = \"once_table\"\ntable_type = \"events\"\nmode = \"append\"";
    assert!(text.contains(one_time));
    fx.write_config(
        "wharf.toml",
        &text.replace(one_time, &one_time.replace("append", "one_time")),
    );
    let svc = Service::start(&fx, port, None);
    svc.wait_runs("good", "3 successful runs", |r| succeeded(r).len() >= 3);
    let runs = svc.runs("once");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "SUCCEEDED");
    let status = svc.sync("once");
    assert_eq!(status["state"], "done", "{status}");
    assert!(
        status["done"]
            .as_str()
            .unwrap()
            .starts_with("loaded by run 1 at "),
        "{status}"
    );
    assert_eq!(status["failures"], 0);
    assert!(
        status["last_error"].is_null() && status["next_run_at"].is_null(),
        "{status}"
    );
    let (code, body) = svc.post("/syncs/once/run");
    assert_eq!(code, 409, "{body}");
    assert!(body.to_string().contains("wharf reset once"), "{body}");
    assert!(
        !alerts.lock().unwrap().iter().any(|a| a["sync"] == "once"),
        "no alert for a finished one-time sync"
    );
    drop(svc);
    let svc = Service::start(&fx, port, None);
    svc.wait_runs("good", "a run after the restart", |r| {
        succeeded(r).len() >= 4
    });
    assert_eq!(svc.sync("once")["state"], "done");
    assert_eq!(svc.runs("once").len(), 1, "still one run");
    assert_eq!(recv.stats().unique_events, 50);
}

#[test]
fn manual_trigger_pause_resume_and_metrics_over_http() {
    let fx = Fixture::new();
    events_table(&fx, "ev", 0, 100);
    let (recv, svc) = serve(&fx, None, "", &[("s", "ev", "manual")]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        svc.runs("s").is_empty(),
        "a manual sync runs only when asked"
    );
    assert_eq!(svc.sync("s")["state"], "idle");
    let (status, body) = svc.post("/syncs/s/run");
    assert_eq!(status, 202, "{body}");
    let runs = svc.wait_runs("s", "the triggered run", |r| succeeded(r).len() == 1);
    assert_eq!(runs[0]["rows_read"], 100);
    assert_eq!(runs[0]["delivered"], 100);
    assert_eq!(recv.stats().unique_events, 100);
    assert_eq!(svc.post("/syncs/nope/run").0, 404);

    // Paused: no manual runs; the pause is kept across restarts.
    events_table(&fx, "ev", 100, 50);
    let (status, body) = svc.post("/syncs/s/pause");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "paused");
    let (status, body) = svc.post("/syncs/s/run");
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("paused"), "{body}");
    let port = svc.port;
    drop(svc);
    let svc = Service::start(&fx, port, None);
    assert_eq!(svc.sync("s")["state"], "paused");
    let (status, body) = svc.post("/syncs/s/resume");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "idle");
    assert_eq!(svc.post("/syncs/s/run").0, 202);
    let runs = svc.wait_runs("s", "the second run", |r| succeeded(r).len() == 2);
    assert_eq!(runs[0]["rows_read"], 50);
    assert_eq!(recv.stats().unique_events, 150);

    // Metrics, parsed by Prometheus' official Python client.
    let (status, metrics) = svc.request("GET", "/metrics").unwrap();
    assert_eq!(status, 200);
    let parsed = parse_prometheus(&metrics);
    let sample = |name: &str, labels: &[(&str, &str)]| -> f64 {
        parsed
            .iter()
            .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .and_then(|s| s["value"].as_f64())
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in\n{metrics}"))
    };
    // Counters cover this process's runs (the second one).
    assert_eq!(sample("wharf_rows_read_total", &[("sync", "s")]), 50.0);
    assert_eq!(
        sample("wharf_records_delivered_total", &[("sync", "s")]),
        50.0
    );
    assert!(sample("wharf_requests_total", &[("sync", "s")]) >= 1.0);
    assert!(sample("wharf_bytes_sent_total", &[("sync", "s")]) > 1000.0);
    assert_eq!(
        sample(
            "wharf_runs_total",
            &[("sync", "s"), ("status", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        sample("wharf_run_duration_seconds_count", &[("sync", "s")]),
        1.0
    );
    assert_eq!(
        sample(
            "wharf_run_duration_seconds_bucket",
            &[("sync", "s"), ("le", "+Inf")]
        ),
        1.0
    );
    assert_eq!(sample("wharf_sync_paused", &[("sync", "s")]), 0.0);
    let lag = sample("wharf_sync_lag_seconds", &[("sync", "s")]);
    assert!((0.0..60.0).contains(&lag), "lag {lag}");
}

/// Samples of OpenMetrics text parsed by `prometheus_client.openmetrics.parser` (the official Python
/// client, installed into the test venv by `.ci/run`).
fn parse_prometheus(text: &str) -> Vec<Value> {
    let python = std::env::var("WHARF_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/wharf/venv/bin/python")
    });
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python} ({e}); run .ci/run to install the venv"));
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    // Every family has a declared type (no `unknown`: HELP/TYPE lines match the samples).
    for s in &parsed {
        assert_ne!(s["type"], "unknown", "{s}");
    }
    parsed
}

#[test]
fn volume_anomaly_pauses_the_sync_and_alerts() {
    let fx = Fixture::new();
    events_table(&fx, "ev", 0, 10);
    let (hook, alerts) = webhook(&fx);
    let (recv, svc) = serve(&fx, None, &format!(
                "[alerts]\nwebhook_url = \"{hook}\"\nvolume_multiple = 3\nvolume_min_runs = 1\non_anomaly = \"pause\""
            ), &[("s", "ev", "manual")]);
    svc.post("/syncs/s/run");
    svc.wait_runs("s", "the first run", |r| succeeded(r).len() == 1);
    // 100 new rows: more than 3 × the average of 10.
    events_table(&fx, "ev", 10, 100);
    svc.post("/syncs/s/run");
    let runs = svc.wait_runs("s", "the held-back run", |r| {
        r.first().is_some_and(|x| x["status"] == "CANCELLED")
    });
    assert!(
        runs[0]["error"]
            .as_str()
            .unwrap()
            .contains("volume anomaly"),
        "{runs:#?}"
    );
    // The run is recorded before its thread marks the sync paused: wait for that.
    wait_for("the sync paused", || svc.sync("s")["state"] == "paused");
    let status = svc.sync("s");
    assert_eq!(status["state"], "paused", "{status}");
    assert_eq!(
        recv.stats().unique_events,
        10,
        "nothing of the anomalous run was sent"
    );
    wait_for("the anomaly alert", || !alerts.lock().unwrap().is_empty());
    let a = alerts.lock().unwrap()[0].clone();
    assert_eq!(a["alert"], "volume_anomaly", "{a}");
    assert_eq!(a["action"], "paused", "{a}");
    assert_eq!(a["rows"], 100, "{a}");
    assert_eq!(a["average"], 10.0, "{a}");
    // Resuming sends the held-back run.
    assert_eq!(svc.post("/syncs/s/resume").0, 200);
    assert_eq!(svc.post("/syncs/s/run").0, 202);
    svc.wait_runs("s", "the resumed run", |r| succeeded(r).len() == 2);
    assert_eq!(recv.stats().unique_events, 110);
}

#[test]
fn sigterm_during_a_run_exits_0_and_the_next_start_loses_nothing() {
    let fx = Fixture::new();
    const ROWS: u64 = 200_000;
    events_table(&fx, "ev", 0, ROWS);
    // Every answer 300 ms late: the run takes several seconds.
    let recv = receiver(&fx, Some(Duration::from_millis(300)));
    let port = free_port();
    let text_config = config(&recv.base_url(), port, "", &[("s", "ev", "1h")]).replace(
        "poll_interval",
        "shutdown_timeout = \"500ms\"\npoll_interval",
    );
    fx.write_config("wharf.toml", &text_config);

    // 1. SIGTERM mid-run: the run gets 500 ms, is cancelled, nothing commits, exit 0.
    let mut svc = Service::start(&fx, port, None);
    wait_for("rows delivered", || {
        svc.sync("s")["progress"]["rows_done"].as_u64().unwrap_or(0) > 0
    });
    let t = Instant::now();
    svc.signal("TERM");
    let status = svc.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", svc.log());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let delivered_before = recv.stats().unique_events;
    assert!(delivered_before < ROWS, "the run was meant to be cut short");
    let history = fx.wharf(&["history", "s", "--json"], &[]);
    let last: Value = serde_json::from_str(
        String::from_utf8_lossy(&history.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["status"], "CANCELLED", "{last}");
    assert!(
        last["error"].as_str().unwrap().contains("shutdown"),
        "{last}"
    );

    // 2. Two signals: the second one exits at once (130), committing nothing.
    let mut svc = Service::start(&fx, port, None);
    wait_for("the second run", || {
        svc.sync("s")["progress"]["rows_done"].as_u64().unwrap_or(0) > 0
    });
    svc.signal("TERM");
    std::thread::sleep(Duration::from_millis(100));
    svc.signal("TERM");
    let status = svc.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "{}", svc.log());

    // 3. The next start resends the uncommitted rows: every row arrives, once by $insert_id.
    let svc = Service::start(&fx, port, None);
    let runs = svc.wait_runs("s", "a successful run", |r| succeeded(r).len() == 1);
    assert_eq!(runs[0]["rows_read"], ROWS);
    // The run the second signal interrupted is recorded as failed (interrupted).
    assert!(
        runs.iter().any(|r| r["status"] == "FAILED"
            && r["error"].as_str().unwrap_or("").contains("interrupted")),
        "{runs:#?}"
    );
    assert_eq!(recv.stats().unique_events, ROWS);
}

#[test]
fn sighup_reloads_the_config_or_keeps_the_old_one() {
    let fx = Fixture::new();
    events_table(&fx, "ev", 0, 10);
    let (recv, svc) = serve(&fx, None, "", &[("a", "ev", "manual")]);
    // A bad config is refused, saying why; the old one stays.
    std::fs::write(fx.path("wharf.toml"), "syncs = 3").unwrap();
    svc.signal("HUP");
    wait_for("the refused reload", || {
        svc.json("/status")["reload_error"].is_string()
    });
    let status = svc.json("/status");
    assert!(
        status["reload_error"].as_str().unwrap().contains("syncs"),
        "{status}"
    );
    assert_eq!(svc.json("/syncs").as_array().unwrap().len(), 1);
    // A good one adds a sync, which starts on its schedule.
    fx.write_config(
        "wharf.toml",
        &config(
            &recv.base_url(),
            svc.port,
            "",
            &[("a", "ev", "manual"), ("b", "ev", "1s")],
        ),
    );
    svc.signal("HUP");
    // The reload happens in the background: wait until the new sync is served.
    wait_for("the new sync", || {
        svc.request("GET", "/syncs/b").map(|r| r.0) == Some(200)
    });
    svc.wait_runs("b", "the new sync's run", |r| succeeded(r).len() == 1);
    assert!(svc.json("/status")["reload_error"].is_null());
    let names: Vec<String> = svc
        .json("/syncs")
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn the_api_needs_its_token_and_refuses_a_non_loopback_bind_without_one() {
    let fx = Fixture::new();
    events_table(&fx, "ev", 0, 10);
    let recv = receiver(&fx, None);
    let port = free_port();
    let base = config(&recv.base_url(), port, "", &[("s", "ev", "manual")]);
    // Any non-loopback address without a token: refused before binding anything.
    fx.write_config(
        "wharf.toml",
        &base.replace(&format!("127.0.0.1:{port}"), "0.0.0.0:0"),
    );
    let out = fx.wharf(&["run"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("non-loopback address needs `service.token`"),
        "{}",
        text(&out)
    );
    // With a token (from the environment), requests need it; the page and /healthz do not.
    fx.write_config(
        "wharf.toml",
        &base.replace(
            "retry_initial",
            "token = \"${WHARF_TEST_API_TOKEN}\"\nretry_initial",
        ),
    );
    let svc = Service::start_with(
        &fx,
        port,
        Some("s3cret-token"),
        &[("WHARF_TEST_API_TOKEN", "s3cret-token")],
    );
    assert_eq!(svc.json("/syncs").as_array().unwrap().len(), 1);
    let anonymous = Service::client(port, None);
    assert_eq!(anonymous.request("GET", "/syncs").unwrap().0, 401);
    assert_eq!(anonymous.request("POST", "/syncs/s/run").unwrap().0, 401);
    assert_eq!(anonymous.request("GET", "/metrics").unwrap().0, 401);
    assert_eq!(anonymous.request("GET", "/healthz").unwrap().0, 200);
    assert_eq!(anonymous.request("GET", "/").unwrap().0, 200);
    let wrong = Service::client(port, Some("s3cret-tokeN"));
    assert_eq!(wrong.request("GET", "/syncs").unwrap().0, 401);
    assert!(!svc.log().contains("s3cret-token"), "the token was logged");
}

/// Headless Chromium (Debian's `chromium`; `WHARF_CHROMIUM` overrides it).
fn chromium() -> String {
    let bin = std::env::var("WHARF_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let ok = Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "cannot run `{bin}`: install Debian's chromium (.ci/run does) or set WHARF_CHROMIUM"
    );
    bin
}

fn headless(bin: &str, profile: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

#[test]
fn the_web_page_renders_the_right_numbers_in_headless_chromium() {
    let bin = chromium();
    let fx = Fixture::new();
    events_table(&fx, "ev", 0, 1234);
    events_table(&fx, "big", 0, 300_000);
    // Answers 100 ms late, so that `big` is still running when the page is rendered.
    let (_recv, svc) = serve(
        &fx,
        Some(Duration::from_millis(100)),
        "",
        &[
            ("events", "ev", "manual"),
            ("broken", "missing_table", "manual"),
            ("big", "big", "manual"),
        ],
    );
    svc.post("/syncs/events/run");
    svc.wait_runs("events", "run 1", |r| succeeded(r).len() == 1);
    events_table(&fx, "ev", 1234, 66);
    svc.post("/syncs/events/run");
    svc.wait_runs("events", "run 2", |r| succeeded(r).len() == 2);
    svc.post("/syncs/broken/run");
    svc.wait_runs("broken", "a failed run", |r| !r.is_empty());
    svc.post("/syncs/big/run");
    wait_for("big under way", || {
        svc.sync("big")["progress"]["rows_done"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });

    let url = format!("http://127.0.0.1:{}/", svc.port);
    let dom = headless(
        &bin,
        &fx.path("chromium"),
        &["--virtual-time-budget=5000", "--dump-dom", &url],
    );
    let html = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(
        dom.status.success() && html.contains("data-sync"),
        "chromium: {}\n{html}",
        String::from_utf8_lossy(&dom.stderr)
    );
    // The syncs table: the last run of `events` read 66 rows; run 2 succeeded.
    let row = section(&html, "<tr data-sync=\"events\">", "</tr>");
    assert!(row.contains("#2 SUCCEEDED"), "{row}");
    assert!(row.contains("class=\"num last-rows\">66<"), "{row}");
    assert!(row.contains("class=\"num last-delivered\">66<"), "{row}");
    let broken = section(&html, "<tr data-sync=\"broken\">", "</tr>");
    assert!(broken.contains("FAILED"), "{broken}");
    assert!(broken.contains("missing_table"), "{broken}");
    // The chart: one bar per run with its rows; the run table with thousands separated.
    let card = section(&html, "<div class=\"card\" data-sync=\"events\">", "</div>");
    assert!(card.contains("data-runs=\"2\""), "{card}");
    assert!(card.contains("data-rows=\"1234\""), "{card}");
    assert!(card.contains("data-rows=\"66\""), "{card}");
    assert!(card.contains(">1,234<"), "{card}");
    assert!(html.contains("updated "), "the page did not refresh itself");
    // The running run: a progress bar and its rows done of the total.
    let big = section(&html, "<tr data-sync=\"big\">", "</tr>");
    assert!(big.contains("state-running"), "{big}");
    assert!(big.contains("class=\"bar\""), "{big}");
    assert!(big.contains("data-total=\"300000\""), "{big}");
    assert!(big.contains("/ 300,000 rows"), "{big}");

    // A screenshot, for a person to look at.
    let png = fx.path("page.png");
    let shot = headless(
        &bin,
        &fx.path("chromium"),
        &[
            "--virtual-time-budget=5000",
            "--window-size=1400,900",
            &format!("--screenshot={}", png.display()),
            &url,
        ],
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&shot.stderr)
        )
    });
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000);
    if let Ok(dir) = std::env::var("WHARF_SCREENSHOT_DIR") {
        let _ = std::fs::copy(&png, Path::new(&dir).join("status-page.png"));
    }
}

fn section<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let i = html
        .find(start)
        .unwrap_or_else(|| panic!("{start} not in\n{html}"));
    let rest = &html[i..];
    let j = rest.find(end).map(|j| j + end.len()).unwrap_or(rest.len());
    &rest[..j]
}
