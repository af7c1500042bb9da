//! The warehouse emulators the tests and benches run against, each on 127.0.0.1, stopped when
//! dropped: fakesnow (Snowflake), minilake (Databricks), bqemulator (BigQuery). `.ci/run`
//! installs each into a venv of its own under `~/.cache/wharf/`. Shared by `tests/` (through
//! `common`) and `benches/` (through `#[path]`), so it only uses what both have.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn cache() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(format!("{home}/.cache/wharf"))
}

/// The Python of one of the emulator venvs (`venv-snow`, `venv-lake`, `venv-bq`), whose
/// official client libraries some tests use as references.
pub fn venv_python(venv: &str) -> PathBuf {
    cache().join(venv).join("bin/python")
}

/// An emulator's program: `$<env>` if set, else `default` (under the cache), which must exist.
fn binary(env: &str, default: PathBuf, what: &str) -> PathBuf {
    let p = std::env::var(env).map(PathBuf::from).unwrap_or(default);
    assert!(
        p.exists(),
        "{what} is not installed at {}: run .ci/run (it installs {what} into a venv) or set {env}",
        p.display()
    );
    p
}

/// Waits (60 s at most) until `port` accepts connections and `ready` holds; fails at once,
/// saying how to see why, if `child` (started from `bin`) exits first.
fn wait_until_up(child: &mut Child, port: u16, bin: &std::path::Path, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{} exited ({status}); run it by hand to see why",
                bin.display()
            );
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() && ready() {
            return;
        }
        assert!(Instant::now() < deadline, "{} did not start", bin.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fakesnow_binary() -> PathBuf {
    binary(
        "WHARF_FAKESNOW",
        cache().join("venv-snow/bin/fakesnow"),
        "fakesnow",
    )
}

/// A fakesnow server on 127.0.0.1 (in memory), stopped when dropped.
pub struct FakeSnow {
    child: Child,
    pub port: u16,
    pub rt: tokio::runtime::Runtime,
}

impl FakeSnow {
    pub fn start() -> FakeSnow {
        FakeSnow::start_on(free_port())
    }

    /// A fakesnow on `port` (e.g. a restart on the port of one that stopped).
    pub fn start_on(port: u16) -> FakeSnow {
        let bin = fakesnow_binary();
        let mut child = Command::new(&bin)
            .args(["-s", "-p", &port.to_string(), "--host", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fakesnow");
        wait_until_up(&mut child, port, &bin, || true);
        FakeSnow {
            child,
            port,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs SQL statements in database DB, schema PUBLIC, over the emulator's HTTP API.
    pub fn sql(&self, statements: &[&str]) {
        async fn post(
            client: &reqwest::Client,
            url: String,
            auth: Option<&str>,
            body: Value,
        ) -> Value {
            let mut r = client
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string());
            if let Some(t) = auth {
                r = r.header("authorization", format!("Snowflake Token=\"{t}\""));
            }
            let bytes = r.send().await.unwrap().bytes().await.unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }
        self.rt.block_on(async {
            let client = reqwest::Client::new();
            let login = post(
                &client,
                format!(
                    "{}/session/v1/login-request?databaseName=DB&schemaName=PUBLIC",
                    self.url()
                ),
                None,
                json!({"data": {"LOGIN_NAME": "setup", "PASSWORD": "x", "SESSION_PARAMETERS": {}}}),
            )
            .await;
            let token = login["data"]["token"].as_str().unwrap().to_string();
            for s in statements {
                let answer = post(
                    &client,
                    format!("{}/queries/v1/query-request", self.url()),
                    Some(&token),
                    json!({"sqlText": s}),
                )
                .await;
                assert_eq!(answer["success"], true, "{s}: {answer}");
            }
        });
    }
}

impl Drop for FakeSnow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv() -> PathBuf {
    std::env::var("WHARF_LAKE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache().join("venv-lake"))
}

/// A minilake server on 127.0.0.1 with a SQL warehouse and the catalog `cat`, schema `s`.
pub struct MiniLake {
    child: Child,
    port: u16,
    pub warehouse_id: String,
    _data: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl MiniLake {
    pub fn start() -> MiniLake {
        let bin = binary("WHARF_MINILAKE", venv().join("bin/minilake"), "minilake");
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("MINILAKE_DATA_DIR", data.path())
            // No Spark image pull, no notebook; DuckDB's delta extension from the venv (.ci/run
            // copies it there), so nothing is downloaded.
            .env("MINILAKE_SPARK_PREWARM", "0")
            .env("MINILAKE_NOTEBOOK", "0")
            .env(
                "MINILAKE_DUCKDB_EXTENSION_DIR",
                cache().join("duckdb-extensions"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start minilake");
        wait_until_up(&mut child, port, &bin, || true);
        let mut lake = MiniLake {
            child,
            port,
            warehouse_id: String::new(),
            _data: data,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        let wh = lake.post(
            "/api/2.0/sql/warehouses",
            json!({"name": "wh", "cluster_size": "2X-Small"}),
        );
        lake.warehouse_id = wh["id"].as_str().expect("warehouse id").to_string();
        lake.post("/api/2.1/unity-catalog/catalogs", json!({"name": "cat"}));
        lake.sql(&["CREATE SCHEMA IF NOT EXISTS cat.s"]);
        lake
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        self.rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{}{path}", self.url()))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = r.status();
            let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
            assert!(status.is_success(), "{path}: {status} {v}");
            v
        })
    }

    pub fn sql(&self, statements: &[&str]) {
        for s in statements {
            let v = self.post(
                "/api/2.0/sql/statements",
                json!({"warehouse_id": self.warehouse_id, "statement": s}),
            );
            assert_eq!(v["status"]["state"], "SUCCEEDED", "{s}: {v}");
        }
    }

    pub fn toml(&self) -> String {
        format!(
            r#"[warehouses.dbx]
type = "databricks"
host = "{}"
token = "dapi-s3cret-token"
warehouse_id = "{}"
catalog = "cat"
schema = "s"
"#,
            self.url(),
            self.warehouse_id
        )
    }
}

impl Drop for MiniLake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct BqEmulator {
    child: Child,
    pub port: u16,
    /// The Storage (gRPC) API's port.
    pub grpc: u16,
    pub rt: tokio::runtime::Runtime,
}

impl BqEmulator {
    pub fn start() -> BqEmulator {
        let bin = binary(
            "WHARF_BQEMULATOR",
            cache().join("venv-bq/bin/bqemulator"),
            "bqemulator",
        );
        let (port, grpc) = (free_port(), free_port());
        let mut child = Command::new(&bin)
            .args([
                "start",
                "--rest-host",
                "127.0.0.1",
                "--rest-port",
                &port.to_string(),
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                &grpc.to_string(),
                "--project",
                "test-proj",
            ])
            .env("HOME", cache().join("bq-home"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bqemulator");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        wait_until_up(&mut child, port, &bin, || {
            rt.block_on(async {
                reqwest::Client::new()
                    .get(format!("http://127.0.0.1:{port}/healthz"))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            })
        });
        let bq = BqEmulator {
            child,
            port,
            grpc,
            rt,
        };
        bq.post(
            "/datasets",
            json!({"datasetReference": {"projectId": "test-proj", "datasetId": "ds"}, "location": "US"}),
        );
        bq
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        self.rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!(
                    "{}/bigquery/v2/projects/test-proj{path}",
                    self.url()
                ))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = r.status();
            let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
            assert!(
                status.is_success() && v.get("errors").is_none(),
                "{path}: {status} {v}"
            );
            v
        })
    }

    pub fn sql(&self, statements: &[&str]) {
        for s in statements {
            self.post("/queries", json!({"query": s, "useLegacySql": false}));
        }
    }

    pub fn toml(&self) -> String {
        format!(
            "[warehouses.bq]\ntype = \"bigquery\"\nproject = \"test-proj\"\ndataset = \"ds\"\nendpoint = \"{}\"\nstorage_endpoint = \"http://127.0.0.1:{}\"\naccess_token = \"ya29.s3cret-token\"\n",
            self.url(),
            self.grpc
        )
    }
}

impl Drop for BqEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
