//! The BigQuery warehouse against `bqemulator` (PyPI), a BigQuery emulator over DuckDB,
//! installed into its own venv by `.ci/run` (`WHARF_BQEMULATOR` overrides the binary). It runs
//! with `HOME` set to a folder of wharf's where `.ci/run` put the DuckDB extensions it loads
//! (spatial, avro, from PyPI), so it downloads nothing. bqemulator needs no credentials,
//! completes every query at once (the polling path is not exercised) and answers query errors
//! with 200 and `errors` (real BigQuery: an HTTP error); wharf handles both.

mod common;

use common::emulators::BqEmulator;
use common::scenario::{sync_scenario, Scenario};
use common::Fixture;
use serde_json::{json, Value};
use wharf::config::Config;
use wharf::warehouse::{PartsOf, SourceRef};
use wharf_operators::arrow::array::{Array, AsArray};
use wharf_operators::arrow::datatypes::{
    DataType, Decimal128Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};

#[test]
fn bigquery_types_decode_to_arrow() {
    let bq = BqEmulator::start();
    bq.sql(&[
        "CREATE TABLE ds.types_t (c_int INT64, c_num NUMERIC, c_f FLOAT64, c_s STRING, c_b BOOL, \
         c_d DATE, c_ts TIMESTAMP, c_dt DATETIME, c_arr ARRAY<INT64>, c_rec STRUCT<x INT64, y STRING>, c_j JSON)",
        "INSERT INTO ds.types_t VALUES (42, NUMERIC '12.34', 1.25, 'héllo', true, DATE '2024-01-02', \
         TIMESTAMP '2024-01-02 03:04:05.123456+00', DATETIME '2024-01-02 03:04:05.5', [1, 2, 3], \
         STRUCT(7 AS x, 'seven' AS y), JSON '{\"a\":1}')",
        "INSERT INTO ds.types_t (c_int) VALUES (NULL)",
    ]);
    let config = Config::parse(&bq.toml(), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "bq").unwrap();
    wh.check().unwrap();
    let src = SourceRef::Table("types_t".into());
    let schema = wh.describe(&src).unwrap();
    let types: Vec<DataType> = schema
        .arrow
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        [
            DataType::Int64,
            DataType::Decimal128(38, 9),
            DataType::Float64,
            DataType::Utf8,
            DataType::Boolean,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Utf8,
            DataType::Utf8,
            DataType::Utf8,
        ]
    );
    let mut batches = Vec::new();
    wh.read_snapshot(&src, &mut |b| {
        batches.push(b);
        true
    })
    .unwrap();
    let b =
        wharf_operators::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(b.num_rows(), 2);
    let row = (0..2).find(|i| !b.column(0).is_null(*i)).unwrap();
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(row), 42);
    assert_eq!(
        b.column(1)
            .as_primitive::<Decimal128Type>()
            .value_as_string(row),
        "12.340000000"
    );
    assert_eq!(b.column(2).as_primitive::<Float64Type>().value(row), 1.25);
    assert_eq!(b.column(3).as_string::<i32>().value(row), "héllo");
    assert!(b.column(4).as_boolean().value(row));
    let ts = |c: usize| {
        b.column(c)
            .as_primitive::<TimestampMicrosecondType>()
            .value(row)
    };
    assert_eq!(ts(6), 1_704_164_645_123_456);
    assert_eq!(ts(7), 1_704_164_645_500_000);
    let json_of = |c: usize| -> Value {
        serde_json::from_str(b.column(c).as_string::<i32>().value(row)).unwrap()
    };
    assert_eq!(json_of(8), json!([1, 2, 3]));
    assert_eq!(json_of(9), json!({"x": 7, "y": "seven"}));
    assert_eq!(json_of(10), json!({"a": 1}));
    for c in [0, 1, 2, 3, 4, 5, 6, 7, 9, 10] {
        assert!(b.column(c).is_null(1 - row), "column {c}");
    }
    let e = wh.describe(&SourceRef::Table("nope".into())).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[test]
fn append_full_and_mirror_syncs_from_bigquery_into_the_receiver() {
    let fx = Fixture::new();
    let bq = BqEmulator::start();
    // 200,000 events, read through the Storage Read API's streams (the toml names its endpoint).
    bq.sql(&[
        "CREATE TABLE ds.ev AS SELECT x AS id, CONCAT('E', CAST(MOD(x, 3) AS STRING)) AS name, \
         TIMESTAMP_ADD(TIMESTAMP '2024-01-01 00:00:00+00', INTERVAL x SECOND) AS ts, \
         CONCAT('u', CAST(MOD(x, 997) AS STRING)) AS uid FROM UNNEST(GENERATE_ARRAY(0, 199999)) AS x",
        "CREATE TABLE ds.users (uid STRING, name STRING, plan STRING)",
        "INSERT INTO ds.users VALUES ('u1', 'Ann', 'free'), ('u2', 'Bob', 'pro'), ('u3', 'Cy', 'free')",
    ]);
    let toml = bq.toml();
    // The scenario runs SQL through it, then takes it away.
    let bq = std::cell::RefCell::new(Some(bq));
    let sql = |s: &[&str]| bq.borrow().as_ref().expect("running").sql(s);
    let scenario = Scenario {
        warehouse: "bq",
        warehouse_toml: toml,
        secret: "s3cret",
        sql: &sql,
        events: "ev",
        users: "users",
        users_sql: "ds.users",
        rows: 200_000,
        late_sql: "INSERT INTO ds.ev VALUES (200000, 'Late', TIMESTAMP '2025-01-01 00:00:00+00', 'u1'), (200001, 'Late', TIMESTAMP '2025-01-02 00:00:00+00', 'u1')",
        late: 2,
        columns: ["id", "name", "ts", "uid", "plan"],
    };
    sync_scenario(&fx, scenario, || drop(bq.borrow_mut().take()));
}

#[test]
fn storage_read_api_and_rest_pages_read_the_same_rows() {
    let bq = BqEmulator::start();
    // 120,000 rows: three REST pages; several Storage streams.
    bq.sql(&[
        "CREATE TABLE ds.wide AS SELECT x AS id, CAST(x AS NUMERIC) / 100 AS num, x / 7 AS f, \
         IF(MOD(x, 5) = 0, NULL, CONCAT('s', CAST(x AS STRING))) AS s, MOD(x, 2) = 0 AS b, \
         DATE_ADD(DATE '2024-01-01', INTERVAL MOD(x, 365) DAY) AS d, \
         TIMESTAMP_ADD(TIMESTAMP '2024-01-01 00:00:00+00', INTERVAL x SECOND) AS ts, \
         DATETIME_ADD(DATETIME '2024-01-01 00:00:00', INTERVAL x MINUTE) AS dt \
         FROM UNNEST(GENERATE_ARRAY(0, 119999)) AS x",
    ]);
    let read = |toml: &str, after: Option<wharf_operators::watermark::Watermark>| {
        let config = Config::parse(toml, "w.toml").unwrap();
        let wh = wharf::warehouse::open(&config, "bq").unwrap();
        let src = SourceRef::Table("wide".into());
        let schema = wh.describe(&src).unwrap();
        let mut batches = Vec::new();
        let mut keep = |b: wharf_operators::arrow::array::RecordBatch| {
            batches.push(b);
            true
        };
        match after {
            None => wh.read_snapshot(&src, &mut keep).unwrap(),
            Some(w) => {
                let ty = schema
                    .arrow
                    .field_with_name("ts")
                    .unwrap()
                    .data_type()
                    .clone();
                wh.read_after(&src, "ts", &ty, Some(w), &mut keep).unwrap()
            }
        }
        let all = wharf_operators::arrow::compute::concat_batches(&schema.arrow, &batches).unwrap();
        // Streams interleave: order by id.
        let ids = all.column(0).as_primitive::<Int64Type>();
        let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
        order.sort_by_key(|i| ids.value(*i as usize));
        let order = wharf_operators::arrow::array::UInt32Array::from(order);
        (
            batches.len(),
            wharf_operators::arrow::compute::take_record_batch(&all, &order).unwrap(),
        )
    };
    let storage = bq.toml();
    let rest = format!("{storage}storage_read = false\n");
    let (storage_batches, by_storage) = read(&storage, None);
    let (rest_batches, by_rest) = read(&rest, None);
    assert_eq!(by_rest.num_rows(), 120_000);
    assert!(rest_batches >= 3, "REST pages: {rest_batches}");
    assert!(storage_batches >= 2, "Storage batches: {storage_batches}");
    assert_eq!(by_storage, by_rest, "the two APIs disagree");
    // Append reads: the cursor's condition as the Storage API's row restriction.
    let after = Some(wharf_operators::watermark::Watermark::TimestampMicros(
        1_704_067_200_000_000 + 100_000 * 1_000_000,
    ));
    let (_, late_storage) = read(&storage, after);
    let (_, late_rest) = read(&rest, after);
    assert_eq!(late_rest.num_rows(), 19_999);
    assert_eq!(late_storage, late_rest);
}

#[test]
fn bigquery_change_history_output_decodes_and_compacts() {
    let bq = BqEmulator::start();
    // The shape of `SELECT * FROM CHANGES(TABLE t, …)`: bqemulator has no change history, so a
    // table of that shape stands in for its output.
    bq.sql(&[
        "CREATE TABLE ds.users_changes (id INT64, name STRING, _CHANGE_TYPE STRING, _CHANGE_TIMESTAMP TIMESTAMP)",
        "INSERT INTO ds.users_changes VALUES \
         (1, 'mid', 'UPDATE', TIMESTAMP '2024-01-01 00:02:00+00'), \
         (1, 'new', 'UPDATE', TIMESTAMP '2024-01-01 00:03:00+00'), \
         (2, 'gone', 'DELETE', TIMESTAMP '2024-01-01 00:02:00+00'), \
         (3, 'added', 'INSERT', TIMESTAMP '2024-01-01 00:04:00+00'), \
         (4, 'brief', 'DELETE', TIMESTAMP '2024-01-01 00:05:00+00'), \
         (4, 'brief', 'INSERT', TIMESTAMP '2024-01-01 00:01:00+00')",
        "CREATE TABLE ds.users_t (id INT64, name STRING)",
    ]);
    let config = Config::parse(&bq.toml(), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "bq").unwrap();
    common::scenario::check_change_output(
        wh.as_ref(),
        "users_changes",
        wharf::warehouse::changes::ChangeFormat::BigQuery,
        "id",
        common::scenario::FOUR_KEYS,
        "users_t",
        "enable_change_history",
    );
}

/// Google's token endpoint played by tests/python/google_token_server.py, which checks each
/// assertion with Google's own library (google-auth, from the bqemulator venv).
struct TokenServer {
    child: std::process::Child,
    port: u16,
}

impl TokenServer {
    fn start(sa_json: &std::path::Path) -> TokenServer {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bq_python())
            .arg(script())
            .arg("serve")
            .arg(sa_json)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run the venv-bq python (installed by .ci/run)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the token server's port");
        TokenServer { child, port }
    }

    fn issued(&self) -> u64 {
        let body = std::process::Command::new(bq_python())
            .args([
                "-c",
                &format!(
                    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{}/count').read().decode())",
                    self.port
                ),
            ])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&body.stdout).unwrap();
        v["issued"].as_u64().unwrap()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bq_python() -> std::path::PathBuf {
    common::emulators::venv_python("venv-bq")
}

fn script() -> String {
    format!(
        "{}/tests/python/google_token_server.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn service_account(key_pem: &str, token_uri: &str) -> Value {
    json!({
        "type": "service_account",
        "project_id": "test-proj",
        "private_key_id": "0123456789abcdef",
        "private_key": key_pem,
        "client_email": "wharf-loader@test-proj.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    })
}

#[test]
fn bigquery_service_account_signs_in_once_and_bad_keys_are_refused() {
    let bq = BqEmulator::start();
    bq.sql(&[
        "CREATE TABLE ds.sa_t (id INT64)",
        "INSERT INTO ds.sa_t VALUES (1), (2), (3)",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let key = std::fs::read_to_string(format!(
        "{}/tests/data/test-rsa-key.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    // The endpoint knows the account's registered key (the test key).
    let registered = dir.path().join("registered.json");
    std::fs::write(&registered, service_account(&key, "unused").to_string()).unwrap();
    let server = TokenServer::start(&registered);
    let token_uri = format!("http://127.0.0.1:{}/token", server.port);
    let toml = |file: &std::path::Path| {
        format!(
            "[warehouses.bq]\ntype = \"bigquery\"\nproject = \"test-proj\"\ndataset = \"ds\"\nendpoint = \"{}\"\ncredentials_file = \"{}\"\n",
            bq.url(),
            file.display()
        )
    };
    let check_error = |file: &std::path::Path| {
        let config = Config::parse(&toml(file), "w.toml").unwrap();
        wharf::warehouse::open(&config, "bq")
            .unwrap()
            .check()
            .unwrap_err()
            .to_string()
    };
    let good = dir.path().join("sa.json");
    std::fs::write(&good, service_account(&key, &token_uri).to_string()).unwrap();
    let config = Config::parse(&toml(&good), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "bq").unwrap();
    wh.check().unwrap();
    let src = SourceRef::Table("sa_t".into());
    assert_eq!(wh.count(&src).unwrap(), 3);
    assert_eq!(wh.preview(&src, 10).unwrap()[0].num_rows(), 3);
    assert_eq!(
        server.issued(),
        1,
        "one token, reused until it nears its expiry"
    );

    // Another key under the same account: refused by the endpoint, reported without secrets.
    let other = dir.path().join("other.pem");
    let out = std::process::Command::new(bq_python())
        .arg(script())
        .arg("genkey")
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    let other_key = std::fs::read_to_string(&other).unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, service_account(&other_key, &token_uri).to_string()).unwrap();
    let e = check_error(&bad);
    assert!(
        e.contains("service-account sign-in") && e.contains("invalid_grant"),
        "{e}"
    );
    let secret_line = other_key.lines().nth(1).unwrap();
    assert!(
        !e.contains(secret_line) && !e.contains("eyJ"),
        "a secret leaked: {e}"
    );
    assert_eq!(server.issued(), 1);

    // A file that is not a key, and two ways of signing in at once.
    std::fs::write(&bad, "{\"client_email\": \"x\"}").unwrap();
    let e = check_error(&bad);
    assert!(e.contains("not a service account key"), "{e}");
    let e = Config::parse(&format!("{}access_token = \"t\"\n", toml(&good)), "w.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not several"), "{e}");
}

#[test]
fn partitioned_reads_deal_one_read_sessions_streams_to_the_parts() {
    let bq = BqEmulator::start();
    bq.sql(&[
        // Over 1 MB: BigQuery (and the emulator) read smaller tables in one stream.
        "CREATE TABLE ds.t AS SELECT x AS id, CONCAT('r', CAST(MOD(x, 5) AS STRING)) AS region, \
         REPEAT('x', 40) AS pad FROM UNNEST(GENERATE_ARRAY(0, 59999)) AS x",
    ]);
    let config = Config::parse(&bq.toml(), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "bq").unwrap();
    let key = ["id".to_string()];
    let table = SourceRef::Table("t".into());
    let query = SourceRef::Query("SELECT * FROM ds.t WHERE id < 100".into());
    let every = |n: i64| (0..n).collect::<Vec<i64>>();
    for (src, filter, count, rows) in [
        (&table, "", 1, every(60_000)),
        (&table, "", 3, every(60_000)),
        (&table, "WHERE id >= 20000", 2, (20_000..60_000).collect()),
        // A query is read through REST pages: one part.
        (&query, "", 3, every(100)),
    ] {
        let parts = wh
            .clone()
            .read_parts(PartsOf {
                src,
                filter,
                key: &key,
                count,
            })
            .unwrap();
        let expected_parts = if matches!(src, SourceRef::Query(_)) {
            1
        } else {
            count
        };
        assert_eq!(parts.len(), expected_parts, "{src:?} {filter} in {count}");
        // Every row once, each part on its own thread.
        assert_eq!(
            common::ids_of_parts(parts),
            rows,
            "{src:?} {filter} in {count}"
        );
    }
}
