//! The web console (`src/service/page.html`) driven in Debian's Chromium by Playwright
//! (`tests/browser/console.mjs`), against `wharf run` as a child process: a DuckDB warehouse
//! added and tested, an events sync mapped, previewed, created and run into the receiver; and
//! the console's refusals: a wrong password (never shown or logged), a wrong mapping (the
//! config left as it was), an edit made stale in another tab (409).
//!
//! Needs Node.js 20+ and Chromium (`WHARF_CHROMIUM`, default `/usr/bin/chromium`);
//! `tests/browser/node_modules` is installed with `npm ci` when missing. Screenshots go to
//! `<target>/tmp/console-shots/<case>/`.

mod common;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{free_port, text, Fixture};
use serde_json::{json, Value};
use wharf::receiver::{Receiver, ReceiverAuth};

/// Demo events the warehouse holds.
const DEMO_EVENTS: u64 = 20_000;
/// The demo events table, as the warehouse lists it.
const DEMO_TABLE: &str = "main.events";
/// The destination's rate limit: the flow's run takes about 5 s.
const RATE: u64 = 4_000;
/// Comments of the config that the console's edits must keep.
const COMMENTS: [&str; 2] = [
    "# The console test's config: the service and one destination, the test's receiver.",
    "# A Mixpanel-compatible receiver started by the test.",
];

/// A random hex string (std's hasher keys are random per process and per call).
fn random() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:016x}", h.finish())
}

/// Where the screenshots of a case go (for a person to look at; not committed).
fn shots_of(case: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("console-shots")
        .join(case)
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Node.js, Chromium and `tests/browser/node_modules` (installed once with `npm ci`).
fn browser_tools() {
    static READY: Mutex<bool> = Mutex::new(false);
    let mut ready = READY.lock().unwrap_or_else(|p| p.into_inner());
    if *ready {
        return;
    }
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "cannot run `node`: install Node.js 20 or later (Debian's nodejs package)"
    );
    let chromium =
        std::env::var("WHARF_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's chromium (.ci/run does) or set WHARF_CHROMIUM"
    );
    let dir = root().join("tests/browser");
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "`npm ci --prefix tests/browser` failed (is the npm registry reachable?); \
                 run it where it is, then rerun the test:\n{}",
                text(&o)
            ),
            Err(e) => panic!("cannot run `npm` ({e}): install npm (Debian's npm package)"),
        }
    }
    *ready = true;
}

/// The config: the service with a token, the receiver as destination `receiver`; no
/// warehouse and no sync (the console adds them).
fn config(port: u16, token: &str, host: &str, dest_secret: &str) -> String {
    format!(
        r#"{}
# Warehouses and syncs are added through the console.
state_dir = ".state"

[service]
listen = "127.0.0.1:{port}"
token = "{token}"
retry_initial = "200ms"
retry_max = "1s"
poll_interval = "200ms"

{}
[destinations.receiver]
type = "mixpanel"
api_host = "{host}"
project_id = "42"
service_account = {{ username = "sa", secret = "{dest_secret}" }}
initial_backoff = "50ms"
max_backoff = "200ms"
# Slow enough for the page to show the run's progress bar a few times.
max_records_per_second = {RATE}
"#,
        COMMENTS[0], COMMENTS[1]
    )
}

/// `wharf run` on the demo warehouse's folder, and the receiver it delivers to.
struct Console {
    fx: Fixture,
    recv: Receiver,
    port: u16,
    token: String,
    dest_secret: String,
    child: Child,
}

impl Console {
    fn start() -> Console {
        browser_tools();
        let fx = Fixture::new();
        let recv = fx.receiver("recv", ReceiverAuth::AnyCredentials);
        let events = DEMO_EVENTS.to_string();
        let out = fx.wharf(
            &["init", "--events", &events, "--api-host", &recv.base_url()],
            &[],
        );
        assert!(out.status.success(), "wharf init: {}", text(&out));
        let (port, token, dest_secret) = (free_port(), random(), random());
        fx.write_config(
            "wharf.toml",
            &config(port, &token, &recv.base_url(), &dest_secret),
        );
        let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["run", "-c", "wharf.toml"])
            .current_dir(fx.dir.path())
            .env_remove("RUST_LOG")
            .stdout(std::fs::File::create(fx.path("service.out")).expect("log file"))
            .stderr(std::fs::File::create(fx.path("service.err")).expect("log file"))
            .spawn()
            .expect("start wharf run");
        let console = Console {
            fx,
            recv,
            port,
            token,
            dest_secret,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while console.request("GET", "/healthz", None).map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "wharf run did not start:\n{}",
                console.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        console
    }

    fn demo_path(&self) -> String {
        self.fx.path("demo.duckdb").display().to_string()
    }

    fn config_text(&self) -> String {
        std::fs::read_to_string(self.fx.path("wharf.toml")).expect("read wharf.toml")
    }

    /// What `wharf run` wrote to stdout and stderr.
    fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.fx.path(f)).unwrap_or_default();
        format!(
            "stdout:\n{}\nstderr:\n{}",
            read("service.out"),
            read("service.err")
        )
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        self.fx.rt.block_on(async {
            let mut req = reqwest::Client::new()
                .request(method.parse().ok()?, &url)
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(30));
            if let Some(b) = body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let r = req.send().await.ok()?;
            let status = r.status().as_u16();
            let text = r.text().await.ok()?;
            Some((
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ))
        })
    }

    /// An API call that must answer `want`.
    fn api(&self, method: &str, path: &str, body: Option<Value>, want: u16) -> Value {
        let (status, answer) = self
            .request(method, path, body.as_ref())
            .unwrap_or_else(|| panic!("{method} {path}: no answer\n{}", self.log()));
        assert_eq!(status, want, "{method} {path}: {answer}");
        answer
    }

    /// The warehouse `demo` on the demo DuckDB file, saved over the API.
    fn add_demo_warehouse(&self) {
        let body = json!({ "type": "duckdb", "settings": { "path": self.demo_path() } });
        self.api("PUT", "/warehouses/demo", Some(body), 200);
    }

    /// Runs the console case `case` in Chromium; returns its output, failing the test when
    /// the case failed.
    fn browse(&self, case: &str, envs: &[(&str, &str)]) -> String {
        let shots = shots_of(case);
        let _ = std::fs::remove_dir_all(&shots);
        let log_path = self.fx.path(&format!("browser-{case}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new("node")
            .arg(root().join("tests/browser/console.mjs"))
            .current_dir(root())
            .env("WHARF_URL", format!("http://127.0.0.1:{}", self.port))
            .env("WHARF_TOKEN", &self.token)
            .env("WHARF_CASE", case)
            .env("WHARF_SHOTS", &shots)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("run node");
        // The script bounds each of its waits to 60 s; this bounds the whole.
        let deadline = Instant::now() + Duration::from_secs(300);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for node") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let output = std::fs::read_to_string(&log_path).unwrap_or_default();
        println!(
            "console case {case} (screenshots in {}):\n{output}",
            shots.display()
        );
        assert!(
            status.is_some_and(|s| s.success()),
            "console case {case} {} (screenshots in {}):\n{output}\n--- wharf run:\n{}",
            if status.is_some() {
                "failed"
            } else {
                "took over 300 s"
            },
            shots.display(),
            self.log()
        );
        output
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mapping of the demo events, as `wharf init`'s config has it.
fn demo_events_draft(name: &str) -> Value {
    json!({
        "name": name,
        "warehouse": "demo",
        "table": DEMO_TABLE,
        "table_type": "events",
        "mode": "append",
        "destinations": ["receiver"],
        "schedule": "manual",
        "mapping": {
            "event_name_column": "event_name",
            "time_column": "event_time",
            "insert_time_column": "inserted_at",
            "user_id_column": "user_id",
            "device_id_column": "device_id",
            "properties_column": "properties",
            "key_columns": ["event_id"],
        },
    })
}

#[test]
fn the_console_adds_a_warehouse_and_an_events_sync_that_delivers_every_row_once() {
    let c = Console::start();
    c.browse(
        "flow",
        &[
            ("WHARF_DUCKDB_PATH", &c.demo_path()),
            ("WHARF_TABLE", DEMO_TABLE),
            ("WHARF_DEST_SECRET", &c.dest_secret),
            ("WHARF_ROWS", &DEMO_EVENTS.to_string()),
        ],
    );
    let stats = c.recv.stats();
    assert_eq!(stats.events_accepted, DEMO_EVENTS, "{stats:?}");
    assert_eq!(stats.unique_events, DEMO_EVENTS, "{stats:?}");
    assert_eq!(stats.events_rejected, 0, "{stats:?}");
    let runs = c.api("GET", "/syncs/demo_events/runs", None, 200);
    let runs = runs.as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "SUCCEEDED", "{runs:?}");
    assert_eq!(runs[0]["delivered"], DEMO_EVENTS, "{runs:?}");
    let toml = c.config_text();
    for comment in COMMENTS {
        assert!(toml.contains(comment), "a comment was lost:\n{toml}");
    }
    assert!(toml.contains("[warehouses.demo]"), "{toml}");
    assert!(toml.contains("[[syncs]]"), "{toml}");
    assert!(toml.contains("name = \"demo_events\""), "{toml}");
    assert!(toml.contains("time_column = \"event_time\""), "{toml}");
}

#[test]
fn a_wrong_password_is_reported_and_never_shown_or_logged() {
    let c = Console::start();
    let secret = format!("pw-{}", random());
    let output = c.browse("badcreds", &[("WHARF_SECRET", &secret)]);
    // The server's own error, which checked the password (tests/postgres-up.sh gives the role
    // `wharf_password` scram-sha-256).
    assert!(
        output.contains("error shown: ") && output.contains("password authentication failed"),
        "{output}"
    );
    assert!(
        !output.contains(&secret),
        "the browser's output holds the password"
    );
    let log = c.log();
    assert!(
        !log.contains(&secret),
        "wharf run logged the password:\n{log}"
    );
    assert!(!c.config_text().contains(&secret), "the config holds it");
}

#[test]
fn a_mapping_the_table_cannot_take_is_refused_next_to_its_field_and_changes_nothing() {
    let c = Console::start();
    c.add_demo_warehouse();
    let before = std::fs::read(c.fx.path("wharf.toml")).expect("read wharf.toml");
    let output = c.browse("badmapping", &[("WHARF_TABLE", DEMO_TABLE)]);
    let refused = output
        .lines()
        .find(|l| l.starts_with("refused: "))
        .unwrap_or_else(|| panic!("no refusal printed:\n{output}"));
    assert!(refused.contains("time_column"), "{refused}");
    let after = std::fs::read(c.fx.path("wharf.toml")).expect("read wharf.toml");
    assert!(
        before == after,
        "wharf.toml changed:\n{}",
        String::from_utf8_lossy(&after)
    );
    let syncs = c.api("GET", "/syncs", None, 200);
    assert_eq!(syncs, json!([]), "a sync was added");
}

#[test]
fn an_edit_saved_in_another_tab_makes_this_tabs_save_a_conflict() {
    let c = Console::start();
    c.add_demo_warehouse();
    c.api("POST", "/syncs", Some(demo_events_draft("tabs")), 201);
    let output = c.browse("twotabs", &[("WHARF_SYNC", "tabs")]);
    assert!(output.contains("conflict: "), "{output}");
    let config = c.api("GET", "/syncs/tabs/config", None, 200);
    assert_eq!(config["sync"]["schedule"], "daily", "{config}");
    let toml = c.config_text();
    assert!(toml.contains("schedule = \"daily\""), "{toml}");
    assert!(!toml.contains("schedule = \"hourly\""), "{toml}");
    for comment in COMMENTS {
        assert!(toml.contains(comment), "a comment was lost:\n{toml}");
    }
}
