//! The demo warehouse and config written by `wharf init` and used by `wharf quickstart`:
//! a DuckDB file with realistic events, users, companies (groups) and products (lookup).

use std::path::Path;

use duckdb::Connection;

/// Creating the demo failed.
#[derive(Debug, thiserror::Error)]
#[error("demo warehouse {path}: {message}")]
pub struct DemoError {
    /// The file.
    pub path: String,
    /// What failed.
    pub message: String,
}

/// Creates (replacing) the demo DuckDB file with `events` rows of events.
pub fn create_demo_warehouse(path: &Path, events: u64) -> Result<(), DemoError> {
    let err = |m: String| DemoError {
        path: path.display().to_string(),
        message: m,
    };
    for p in [path.to_path_buf(), path.with_extension("duckdb.wal")] {
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| err(format!("cannot replace: {e}")))?;
        }
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
    }
    let conn = Connection::open(path).map_err(|e| err(e.to_string()))?;
    conn.execute_batch(SCHEMA).map_err(|e| err(e.to_string()))?;
    add_demo_events(&conn, 0, events, false).map_err(|e| err(e.to_string()))?;
    conn.execute_batch(PROFILES)
        .map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Appends `count` more events (ids after the current maximum) whose insert time is now, as
/// new rows arriving in a live table would. Returns the table's new row count.
pub fn append_demo_events(path: &Path, count: u64) -> Result<u64, DemoError> {
    let err = |m: String| DemoError {
        path: path.display().to_string(),
        message: m,
    };
    let conn = Connection::open(path).map_err(|e| err(e.to_string()))?;
    let start: i64 = conn
        .query_row(
            "SELECT coalesce(max(event_id) + 1, 0) FROM events",
            [],
            |r| r.get(0),
        )
        .map_err(|e| err(e.to_string()))?;
    add_demo_events(&conn, start as u64, count, true).map_err(|e| err(e.to_string()))?;
    conn.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
        .map_err(|e| err(e.to_string()))
}

/// Rows in the demo `events` table.
pub fn count_events(path: &Path) -> Result<u64, DemoError> {
    let conn = Connection::open(path).map_err(|e| DemoError {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    conn.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
        .map_err(|e| DemoError {
            path: path.display().to_string(),
            message: e.to_string(),
        })
}

fn add_demo_events(conn: &Connection, start: u64, count: u64, live: bool) -> duckdb::Result<()> {
    // Event times spread over the last 30 days (or the last minute for "live" rows), insert
    // times a few seconds later; everything derived from hashes so the data is deterministic
    // apart from the clock.
    let span_s = if live { 60 } else { 30 * 86_400 };
    let sql = format!(
        "INSERT INTO events
         SELECT i AS event_id,
           (['Sign Up','Page View','Search','Add to Cart','Purchase','Invite Sent','Report Created'])[1 + (hash(i) % 7)::INT] AS event_name,
           ts AS event_time,
           {inserted_at} AS inserted_at,
           CASE WHEN hash(i * 3) % 10 = 0 THEN NULL ELSE 'user_' || (hash(i * 5) % 5000)::VARCHAR END AS user_id,
           'dev-' || (hash(i * 11) % 20000)::VARCHAR AS device_id,
           json_object('browser', (['Chrome','Safari','Firefox','Edge'])[1 + (hash(i * 13) % 4)::INT],
                       'screen', json_object('w', 1280 + (hash(i) % 4)::INT * 160, 'h', 720 + (hash(i) % 3)::INT * 90),
                       'experiment', 'exp-' || (hash(i * 17) % 5)::VARCHAR)::JSON AS properties,
           (['free','pro','enterprise'])[1 + (hash(i * 19) % 3)::INT] AS plan,
           CASE WHEN hash(i) % 7 = 4 THEN ((hash(i * 23) % 50000)::DECIMAL(12,2) / 100) ELSE NULL END AS revenue,
           (hash(i * 29) % 9)::INTEGER AS items,
           hash(i * 31) % 2 = 0 AS is_mobile,
           round((hash(i * 37) % 360000)::DOUBLE / 100, 2) AS session_seconds,
           list_slice(['new','returning','beta','vip','trial'], 1 + (hash(i * 41) % 3)::INT, 2 + (hash(i * 41) % 3)::INT) AS tags,
           {{'source': (['google','newsletter','direct','partner'])[1 + (hash(i * 43) % 4)::INT], 'campaign': 'spring-' || (hash(i * 47) % 3)::VARCHAR}} AS utm,
           (DATE '2023-01-01' + (hash(i * 53) % 700)::INTEGER) AS signup_date,
           (['Zürich','São Paulo','東京','Kraków','Montréal'])[1 + (hash(i * 59) % 5)::INT] AS city
         FROM (
           SELECT i, date_trunc('second', now()::TIMESTAMP) - to_seconds(({span_s} * ({total} - (i - {start})) / {total})::BIGINT + 120) AS ts
           FROM range({start}, {end}) t(i)
         )",
        inserted_at = if live {
            format!("(now()::TIMESTAMP + to_microseconds((i - {start})::BIGINT))")
        } else {
            "(ts + to_seconds((hash(i * 7) % 30)::BIGINT))::TIMESTAMP".to_string()
        },
        total = count.max(1),
        start = start,
        end = start + count,
    );
    conn.execute_batch(&sql)
}

const SCHEMA: &str = "
CREATE TABLE events (
  event_id BIGINT PRIMARY KEY,
  event_name VARCHAR NOT NULL,
  event_time TIMESTAMPTZ NOT NULL,
  inserted_at TIMESTAMP NOT NULL,
  user_id VARCHAR,
  device_id VARCHAR,
  properties JSON,
  plan VARCHAR,
  revenue DECIMAL(12,2),
  items INTEGER,
  is_mobile BOOLEAN,
  session_seconds DOUBLE,
  tags VARCHAR[],
  utm STRUCT(source VARCHAR, campaign VARCHAR),
  signup_date DATE,
  city VARCHAR
);
";

const PROFILES: &str = "
CREATE TABLE users AS
SELECT 'user_' || i::VARCHAR AS user_id,
       (['Ada','Grace','Linus','Barbara','Ken','Margaret','Dennis','Frances'])[1 + (hash(i) % 8)::INT] || ' ' ||
       (['Lovelace','Hopper','Torvalds','Liskov','Thompson','Hamilton','Ritchie','Allen'])[1 + (hash(i * 3) % 8)::INT] AS name,
       'user' || i::VARCHAR || '@example.com' AS email,
       (['free','pro','enterprise'])[1 + (hash(i * 5) % 3)::INT] AS plan,
       'company_' || (hash(i * 7) % 300)::VARCHAR AS company_id,
       (TIMESTAMP '2023-01-01' + to_seconds((hash(i * 11) % 60000000)::BIGINT)) AS created_at,
       (['CH','BR','JP','PL','CA','US','DE'])[1 + (hash(i * 13) % 7)::INT] AS country
FROM range(5000) t(i);
ALTER TABLE users ADD PRIMARY KEY (user_id);

CREATE TABLE companies AS
SELECT 'company_' || i::VARCHAR AS company_id,
       'Company ' || i::VARCHAR AS name,
       (['software','retail','finance','health','media'])[1 + (hash(i) % 5)::INT] AS industry,
       (10 + hash(i * 3) % 5000)::INTEGER AS employees
FROM range(300) t(i);
ALTER TABLE companies ADD PRIMARY KEY (company_id);

CREATE TABLE products AS
SELECT 'sku-' || i::VARCHAR AS product_id,
       (['Notebook','Pen','Backpack','Mug','Lamp','Chair'])[1 + (hash(i) % 6)::INT] || ' ' || i::VARCHAR AS name,
       (['office','home','travel'])[1 + (hash(i * 3) % 3)::INT] AS category,
       ((hash(i * 5) % 20000)::DECIMAL(10,2) / 100) AS price
FROM range(200) t(i);
ALTER TABLE products ADD PRIMARY KEY (product_id);
";

/// The commented example config `wharf init` writes, pointing at `api_host`.
pub fn demo_config(warehouse_file: &str, api_host: &str) -> String {
    format!(
        r#"# wharf configuration. Reference: README.md ("Configuration").
# Secrets may be written as ${{ENV_VAR}}; they are expanded when the file is loaded.

# Where wharf keeps watermarks, run history and rejected rows.
state_dir = ".wharf"

[warehouses.demo]
type = "duckdb"
path = "{warehouse_file}"
# memory_limit = "64MB"   # DuckDB's memory for wharf's reads (more spills to disk)

# The local Mixpanel-compatible receiver (`wharf mixpanel-receiver --port 8765 --data receiver`).
# For the real Mixpanel, drop api_host, set region = "us" | "eu" | "in" and use real credentials:
#   service_account = {{ username = "wharf.sa", secret = "${{MIXPANEL_SA_SECRET}}" }}
#   project_id = "1234567"
# or: project_token = "${{MIXPANEL_TOKEN}}"
[destinations.mixpanel]
type = "mixpanel"
api_host = "{api_host}"
project_id = "1"
service_account = {{ username = "demo", secret = "demo-secret" }}
# concurrency = 10         # most requests in flight (adaptive)
# initial_backoff = "2s"   # retry backoff doubles from here ...
# max_backoff = "60s"      # ... up to here, plus jitter; Retry-After is honoured
# give_up_after = "30m"    # then the run fails and commits nothing

# `wharf run` runs every sync on its schedule, with an HTTP API, metrics and a status page.
[service]
listen = "127.0.0.1:8080"
# token = "${{WHARF_API_TOKEN}}"   # bearer token; required on a non-loopback address
# retry_initial = "5s"             # a failed run is retried after this, doubling up to retry_max
# retry_max = "5m"
# shutdown_timeout = "30s"         # SIGTERM: running runs may finish this long, then are cancelled

# NDJSON of exactly what would be sent ("-" for stdout).
[destinations.file]
type = "file"
path = "out/events.ndjson"

[[syncs]]
name = "demo_events"
warehouse = "demo"
table = "events"              # or: query = "SELECT ... FROM ..."
table_type = "events"         # events | users | groups | lookup
mode = "append"               # append | one_time | full | mirror (events: no full)
destinations = ["mixpanel"]
schedule = "manual"           # `wharf run`: manual | continuous | "15m" | cron "*/15 * * * *"
[syncs.mapping]
event_name_column = "event_name"   # or: event_name = "Static Name"
time_column = "event_time"
insert_time_column = "inserted_at" # append cursor (default: time_column)
user_id_column = "user_id"
device_id_column = "device_id"
properties_column = "properties"   # JSON keys become properties (table columns win)
key_columns = ["event_id"]         # $insert_id is derived from these (default: the whole row)
# exclude_columns = ["internal_note"]

[[syncs]]
name = "demo_events_file"
warehouse = "demo"
table = "events"
table_type = "events"
mode = "append"
destinations = ["file"]
[syncs.mapping]
event_name_column = "event_name"
time_column = "event_time"
insert_time_column = "inserted_at"
user_id_column = "user_id"
device_id_column = "device_id"
properties_column = "properties"
key_columns = ["event_id"]

# The demo warehouse also holds `users`, `companies` and `products` tables (user profiles,
# group profiles and a lookup table): sync them with table_type = "users" | "groups" | "lookup"
# and mode = "full" or "mirror" (see README.md).
"#
    )
}
