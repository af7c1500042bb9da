//! The console's JSON API under `wharf run`: warehouses with secrets, tables and suggestions,
//! preview, create / edit / delete of syncs through `wharf.toml` (comments kept, refused edits
//! change nothing), the token, and the OpenAPI document.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Fixture};
use serde_json::{json, Value};
use wharf::receiver::{Receiver, ReceiverAuth};

const TOKEN: &str = "console-token-1";
const SECRET: &str = "pw-Very-Secret-42";

struct Api {
    child: Child,
    port: u16,
    rt: tokio::runtime::Runtime,
    log: std::path::PathBuf,
}

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<Value>, token: bool) -> (u16, Value) {
        self.try_call(method, path, body, token)
            .unwrap_or_else(|| panic!("{method} {path}: no answer\n{}", self.log()))
    }

    fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: bool,
    ) -> Option<(u16, Value)> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        self.rt.block_on(async {
            let mut req = reqwest::Client::new().request(method.parse().expect("method"), &url);
            if token {
                req = req.bearer_auth(TOKEN);
            }
            if let Some(b) = body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let r = req.timeout(Duration::from_secs(30)).send().await.ok()?;
            let status = r.status().as_u16();
            let text = r.text().await.ok()?;
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Some((status, value))
        })
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body, true);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(fx: &Fixture, recv: &Receiver) -> Api {
    let port = free_port();
    fx.write_config(
        "wharf.toml",
        &format!(
            r#"# wharf's config, kept by hand and by the console
state_dir = ".state"

[service]
listen = "127.0.0.1:{port}"
token = "{TOKEN}"

# where events go
[destinations.mp]
type = "mixpanel"
api_host = "{}"
project_id = "42"
service_account = {{ username = "sa", secret = "test-secret" }}
project_token = "tok"
"#,
            recv.base_url()
        ),
    );
    let log = fx.path("service.log");
    let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["run", "-c", "wharf.toml"])
        .current_dir(fx.dir.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("wharf run");
    let api = Api {
        child,
        port,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.try_call("GET", "/healthz", None, false).map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "no service:\n{}", api.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    api
}

fn draft(name: &str, time_column: &str) -> Value {
    json!({
        "name": name, "warehouse": "demo", "table": "main.ev", "table_type": "events",
        "mode": "append", "destinations": ["mp"], "schedule": "manual",
        "mapping": {"event_name_column": "name", "time_column": time_column, "user_id_column": "uid",
                    "properties_column": "properties"}
    })
}

#[test]
fn the_console_api_creates_previews_edits_and_deletes_syncs_through_wharf_toml() {
    let fx = Fixture::new();
    fx.sql(
        "CREATE TABLE ev (id BIGINT PRIMARY KEY, name VARCHAR, ts TIMESTAMP, uid VARCHAR, properties VARCHAR);
         INSERT INTO ev SELECT i, 'E' || (i % 3)::VARCHAR, TIMESTAMP '2024-01-01' + to_seconds(i),
                'u' || (i % 7)::VARCHAR, '{\"plan\": \"pro\"}' FROM range(0, 500) t(i);
         CREATE TABLE odd (id BIGINT, name VARCHAR, ts TIMESTAMP, uid VARCHAR, properties VARCHAR);
         INSERT INTO odd VALUES (1, 'E', TIMESTAMP '2024-01-01', 'u1', '{}'),
                (2, 'E', NULL, 'u2', '{}'), (3, 'E', TIMESTAMP '2024-01-02', 'u3', 'not json');
         CREATE VIEW ev_view AS SELECT * FROM ev WHERE uid = 'u1';",
    );
    let recv = fx.receiver("recv", ReceiverAuth::AnyCredentials);
    let api = start(&fx, &recv);
    let config = || std::fs::read_to_string(fx.path("wharf.toml")).expect("config");

    // The token is needed; the OpenAPI document is not.
    assert_eq!(api.call("GET", "/warehouses", None, false).0, 401);
    // So is it for every change, and a refused one writes nothing.
    let untouched = config();
    let wh = json!({"type": "duckdb", "settings": {"path": "wh.duckdb"}});
    for (method, path, body) in [
        ("PUT", "/warehouses/w", Some(wh)),
        ("DELETE", "/destinations/mp", None),
        ("POST", "/syncs", Some(draft("events", "ts"))),
        (
            "POST",
            "/warehouses/test",
            Some(json!({"type": "duckdb", "settings": {}})),
        ),
    ] {
        assert_eq!(
            api.call(method, path, body, false).0,
            401,
            "{method} {path}"
        );
    }
    assert_eq!(config(), untouched);
    let (status, doc) = api.call("GET", "/openapi.json", None, false);
    assert_eq!(status, 200);
    assert!(doc["paths"]["/preview"]["post"].is_object(), "{doc}");
    let kinds = api.ok("GET", "/kinds", None);
    assert!(kinds["warehouses"]
        .as_array()
        .expect("kinds")
        .iter()
        .any(|k| k["type"] == "postgres"
            && k["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .any(|f| f["name"] == "password" && f["secret"] == true)));

    // A PostgreSQL warehouse with a wrong password: the server's error, never the secret.
    let pg = json!({"type": "postgres", "name": "pg",
        "settings": {"host": "127.0.0.1", "database": "test", "user": "nosuchuser", "sslmode": "disable"},
        "secrets": {"password": SECRET}});
    let t = api.ok("POST", "/warehouses/test", Some(pg.clone()));
    assert_eq!(t["ok"], false, "{t}");
    assert!(
        t["error"].as_str().unwrap_or("").contains("nosuchuser"),
        "{t}"
    );
    api.ok("PUT", "/warehouses/pg", Some(pg));
    let listed = api.ok("GET", "/warehouses", None);
    assert!(!listed.to_string().contains(SECRET));
    assert_eq!(listed[0]["secrets"], json!(["password"]), "{listed}");
    assert!(
        !config().contains(SECRET),
        "the secret went into wharf.toml"
    );
    let t = api.ok("POST", "/warehouses/pg/test", None);
    assert!(!t.to_string().contains(SECRET), "{t}");
    let secrets = fx.path("wharf.secrets.toml");
    assert!(std::fs::read_to_string(&secrets)
        .expect("secrets")
        .contains(SECRET));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&secrets)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A destination's table-valued keys (its service account) are named, never shown, and an
    // edit that does not send them keeps them as written.
    let dests = api.ok("GET", "/destinations", None);
    assert!(!dests.to_string().contains("test-secret"), "{dests}");
    assert_eq!(dests[0]["kept"], json!(["service_account"]), "{dests}");
    let mut settings = dests[0]["settings"].clone();
    settings["concurrency"] = json!(4);
    api.ok(
        "PUT",
        "/destinations/mp",
        Some(json!({"type": "mixpanel", "settings": settings})),
    );
    assert!(
        config().contains(r#"service_account = { username = "sa", secret = "test-secret" }"#),
        "{}",
        config()
    );
    assert!(config().contains("concurrency = 4"));

    // A body of the wrong shape: 400 naming the key, nothing written.
    let before = config();
    let (status, e) = api.call("PUT", "/warehouses/x", Some(json!({"type": 3})), true);
    assert_eq!((status, e["field"].as_str()), (400, Some("type")), "{e}");
    assert_eq!(config(), before);

    // The DuckDB warehouse: tables, columns, suggestions and the modes of events.
    let wh = json!({"type": "duckdb", "settings": {"path": "wh.duckdb"}});
    assert_eq!(
        api.ok("POST", "/warehouses/test", Some(wh.clone()))["ok"],
        true
    );
    api.ok("PUT", "/warehouses/demo", Some(wh));
    let tables = api.ok("GET", "/warehouses/demo/tables", None);
    for name in ["main.ev", "main.odd", "main.ev_view"] {
        assert!(
            tables["tables"]
                .as_array()
                .is_some_and(|t| t.contains(&json!(name))),
            "tables and views by schema: {name} in {tables}"
        );
    }
    let cols = api.ok(
        "GET",
        "/warehouses/demo/columns?table=main.ev&table_type=events",
        None,
    );
    assert_eq!(cols["suggestions"]["time_column"], "ts", "{cols}");
    assert_eq!(cols["suggestions"]["user_id_column"], "uid", "{cols}");
    assert_eq!(
        cols["suggestions"]["properties_column"], "properties",
        "{cols}"
    );
    assert_eq!(cols["primary_key"], json!(["id"]), "{cols}");
    let modes: Vec<&str> = cols["modes"]
        .as_array()
        .expect("modes")
        .iter()
        .filter_map(|m| m["mode"].as_str())
        .collect();
    assert_eq!(
        modes,
        ["append", "mirror", "one_time"],
        "events are never `full`"
    );

    // A bad mapping is refused with its field named, and the file stays as it was.
    let before = config();
    let (status, e) = api.call("POST", "/preview", Some(draft("bad", "uid")), true);
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["field"], "mapping.time_column", "{e}");
    let (status, e) = api.call("POST", "/syncs", Some(draft("bad", "nope")), true);
    assert_eq!(
        (status, e["field"].as_str()),
        (400, Some("mapping.time_column")),
        "{e}"
    );
    let (status, e) = api.call(
        "POST",
        "/syncs",
        Some(json!({"name": "x", "warehouse": "demo", "table": "main.ev", "destinations": ["mp"], "mode": "sideways"})),
        true,
    );
    assert_eq!((status, e["field"].as_str()), (400, Some("mode")), "{e}");
    assert_eq!(config(), before);

    // Preview: the records as they would be sent.
    let p = api.ok("POST", "/preview", Some(draft("events", "ts")));
    let records = p["records"].as_array().expect("records");
    assert_eq!(records.len(), 20);
    assert_eq!(records[0]["properties"]["distinct_id"], "u0", "{p}");
    assert_eq!(records[0]["properties"]["plan"], "pro", "{p}");
    assert!(p["changes"].is_null());
    assert_eq!(p["rejects"], json!([]), "{p}");

    // Rows the mapping cannot send are listed with their reasons, beside the records.
    let mut odd = draft("odd", "ts");
    odd["table"] = json!("main.odd");
    let p = api.ok("POST", "/preview", Some(odd));
    println!("preview of main.odd: {p}");
    assert_eq!(p["records"].as_array().map(Vec::len), Some(1), "{p}");
    let reasons: Vec<&str> = p["rejects"]
        .as_array()
        .expect("rejects")
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), 2, "{p}");
    assert!(reasons.iter().any(|r| r.contains("ts")), "{p}");
    assert!(reasons.iter().any(|r| r.contains("properties")), "{p}");

    // A full sync's preview counts what its first run would send (the service holds the state
    // store open meanwhile).
    let p = api.ok(
        "POST",
        "/preview",
        Some(json!({
            "name": "lookup", "warehouse": "demo", "table": "main.ev", "table_type": "lookup",
            "mode": "full", "destinations": ["mp"], "schedule": "manual", "primary_key": ["id"],
            "mapping": {"lookup_table_id": "lt1"}
        })),
    );
    assert_eq!(p["changes"]["inserts"], 500, "{p}");

    // Create, run, and the receiver holds every row once; the file kept its comments.
    let created = api.ok("POST", "/syncs", Some(draft("events", "ts")));
    assert_eq!(created["name"], "events");
    assert!(config().starts_with(&before), "{}", config());
    assert_eq!(
        api.call("POST", "/syncs", Some(draft("events", "ts")), true)
            .0,
        409
    );
    api.ok("POST", "/syncs/events/run", None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = api.ok("GET", "/syncs/events/runs", None);
        if runs[0]["status"] == "SUCCEEDED" {
            assert_eq!(runs[0]["rows_read"], 500, "{runs}");
            break;
        }
        assert!(Instant::now() < deadline, "no run: {runs}\n{}", api.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = recv.events().expect("events");
    let ids: std::collections::HashSet<String> = events
        .iter()
        .map(|e| e["properties"]["$insert_id"].to_string())
        .collect();
    assert_eq!((events.len(), ids.len()), (500, 500));

    // Edit with a version; a second edit with the old version is refused.
    let c = api.ok("GET", "/syncs/events/config", None);
    let mut sync = c["sync"].clone();
    sync["schedule"] = json!("daily");
    api.ok(
        "PUT",
        "/syncs/events/config",
        Some(json!({"sync": sync, "version": c["version"]})),
    );
    sync["schedule"] = json!("weekly");
    let (status, e) = api.call(
        "PUT",
        "/syncs/events/config",
        Some(json!({"sync": sync, "version": c["version"]})),
        true,
    );
    assert_eq!(status, 409, "{e}");
    assert!(config().contains("schedule = \"daily\""));
    assert_eq!(api.ok("GET", "/syncs/events", None)["schedule"], "daily");

    // A warehouse in use cannot go; a sync can.
    assert_eq!(api.call("DELETE", "/warehouses/demo", None, true).0, 409);
    let d = api.ok("DELETE", "/syncs/events", None);
    assert_eq!(d["deleted"], "events");
    assert_eq!(api.call("GET", "/syncs/events", None, true).0, 404);
    api.ok("DELETE", "/warehouses/pg", None);
    assert!(!std::fs::read_to_string(&secrets)
        .expect("secrets")
        .contains(SECRET));
    assert!(!api.log().contains(SECRET), "the secret was logged");
}

/// Runs `sql` on the test server (127.0.0.1:5432, database `test`, as `.ci/run` starts it).
fn pg(sql: &str) -> Vec<i64> {
    use wharf::warehouse::postgres::{PgSettings, PostgresWarehouse, SslMode};
    let w = PostgresWarehouse::new(
        "pg",
        PgSettings {
            sslmode: SslMode::Disable,
            ..PgSettings::new("127.0.0.1", 5432, "test", "postgres")
        },
    );
    w.block(async {
        let c = w.connect().await?;
        let rows = c
            .simple_query(sql)
            .await
            .map_err(|e| w.err(&wharf::warehouse::SourceRef::Query(sql.into()), e))?;
        Ok(rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
                _ => None,
            })
            .collect())
    })
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn deleting_a_postgresql_mirror_in_the_console_drops_its_slot_and_publication() {
    let fx = Fixture::new();
    pg(
        "DROP SCHEMA IF EXISTS console_del CASCADE; CREATE SCHEMA console_del;
        CREATE TABLE console_del.items (id TEXT PRIMARY KEY, name TEXT);
        INSERT INTO console_del.items VALUES ('a', 'A'), ('b', 'B'), ('c', 'C');",
    );
    let recv = fx.receiver("recv", ReceiverAuth::AnyCredentials);
    let api = start(&fx, &recv);
    let slots =
        || pg("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '%mirror_del%'")[0];
    let publications =
        || pg("SELECT count(*) FROM pg_publication WHERE pubname LIKE '%mirror_del%'")[0];
    api.ok(
        "PUT",
        "/warehouses/pgm",
        Some(
            json!({"type": "postgres", "settings": {"host": "127.0.0.1", "database": "test",
            "user": "postgres", "sslmode": "disable"}}),
        ),
    );
    let cols = api.ok(
        "GET",
        "/warehouses/pgm/columns?table=console_del.items&table_type=users",
        None,
    );
    let mirror = cols["modes"]
        .as_array()
        .expect("modes")
        .iter()
        .find(|m| m["mode"] == "mirror")
        .expect("mirror offered")
        .clone();
    assert!(
        mirror["note"].to_string().contains("change capture"),
        "{mirror}"
    );
    api.ok(
        "POST",
        "/syncs",
        Some(
            json!({"name": "mirror_del", "warehouse": "pgm", "table": "console_del.items",
            "table_type": "users", "mode": "mirror", "destinations": ["mp"], "schedule": "manual",
            "mapping": {"user_id_column": "id"}}),
        ),
    );
    api.ok("POST", "/syncs/mirror_del/run", None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = api.ok("GET", "/syncs/mirror_del/runs", None);
        if runs[0]["status"] == "SUCCEEDED" {
            break;
        }
        assert!(Instant::now() < deadline, "no run: {runs}\n{}", api.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!((slots(), publications()), (1, 1));
    let d = api.ok("DELETE", "/syncs/mirror_del", None);
    assert!(d["dropped"].to_string().contains("slot"), "{d}");
    assert_eq!((slots(), publications()), (0, 0), "{d}");
    pg("DROP SCHEMA console_del CASCADE");
}
