//! The Snowflake warehouse against `fakesnow` (PyPI `fakesnow[server]`, a Snowflake emulator
//! speaking Snowflake's HTTP protocol over DuckDB), installed into its own venv by `.ci/run`
//! (`WHARF_FAKESNOW` overrides the binary).
//!
//! What fakesnow cannot show, and so is not tested here: password checks (it accepts any
//! password), result chunks (it answers any result in one rowset, so a read in parts is one
//! part here), asynchronous queries, and
//! real Snowflake's scaled-integer Arrow encodings (unit-tested in `snowflake::arrow`).

mod common;

use std::time::{Duration, Instant};

use common::emulators::FakeSnow;
use common::scenario::{sync_scenario, Scenario};
use common::{free_port, Fixture};
use serde_json::{json, Value};
use wharf::config::Config;
use wharf::warehouse::{PartsOf, SourceRef};
use wharf_operators::arrow::array::{Array, AsArray};
use wharf_operators::arrow::datatypes::{
    DataType, Decimal128Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};

fn warehouse_toml(url: &str) -> String {
    format!(
        r#"[warehouses.sf]
type = "snowflake"
account = "wharf-test"
user = "loader"
password = "sf-s3cret-pw"
database = "DB"
url = "{url}"
"#
    )
}

#[test]
fn snowflake_types_decode_to_arrow_including_null_timestamps() {
    let sf = FakeSnow::start();
    sf.sql(&[
        "CREATE TABLE types_t (c_int NUMBER(38,0), c_dec NUMBER(10,2), c_float FLOAT, c_str VARCHAR, \
         c_bool BOOLEAN, c_date DATE, c_ntz TIMESTAMP_NTZ, c_ltz TIMESTAMP_LTZ, c_tz TIMESTAMP_TZ, \
         c_var VARIANT, c_obj OBJECT, c_arr ARRAY)",
        "INSERT INTO types_t SELECT 1, 12.34, 1.5, 'héllo', true, '2024-01-02'::DATE, \
         '2024-01-02 03:04:05.123456'::TIMESTAMP_NTZ, '2024-01-02 03:04:05.5'::TIMESTAMP_LTZ, \
         '2024-01-02 03:04:05.25 +02:00'::TIMESTAMP_TZ, PARSE_JSON('{\"a\":1}'), \
         OBJECT_CONSTRUCT('k','v'), ARRAY_CONSTRUCT(1,'two')",
        "INSERT INTO types_t (c_int) VALUES (NULL)",
    ]);
    let config = Config::parse(&warehouse_toml(&sf.url()), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "sf").unwrap();
    wh.check().unwrap();
    let src = SourceRef::Table("types_t".into());
    let schema = wh.describe(&src).unwrap();
    let types: Vec<(String, DataType)> = schema
        .arrow
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let utc = Some("UTC".into());
    assert_eq!(
        types,
        [
            ("C_INT".into(), DataType::Int64),
            ("C_DEC".into(), DataType::Decimal128(10, 2)),
            ("C_FLOAT".into(), DataType::Float64),
            ("C_STR".into(), DataType::Utf8),
            ("C_BOOL".into(), DataType::Boolean),
            ("C_DATE".into(), DataType::Date32),
            (
                "C_NTZ".into(),
                DataType::Timestamp(TimeUnit::Microsecond, None)
            ),
            (
                "C_LTZ".into(),
                DataType::Timestamp(TimeUnit::Microsecond, utc.clone())
            ),
            (
                "C_TZ".into(),
                DataType::Timestamp(TimeUnit::Microsecond, utc)
            ),
            ("C_VAR".into(), DataType::Utf8),
            ("C_OBJ".into(), DataType::Utf8),
            ("C_ARR".into(), DataType::Utf8),
        ]
    );
    assert_eq!(schema.columns[1].sql_type, "NUMBER(10,2)");
    let mut batches = Vec::new();
    wh.read_snapshot(&src, &mut |b| {
        batches.push(b);
        true
    })
    .unwrap();
    let b =
        wharf_operators::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(b.num_rows(), 2);
    let row = (0..2)
        .find(|i| !b.column(0).is_null(*i))
        .expect("the non-NULL row");
    let null_row = 1 - row;
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(row), 1);
    assert_eq!(
        b.column(1)
            .as_primitive::<Decimal128Type>()
            .value_as_string(row),
        "12.34"
    );
    assert_eq!(b.column(2).as_primitive::<Float64Type>().value(row), 1.5);
    assert_eq!(b.column(3).as_string::<i32>().value(row), "héllo");
    assert!(b.column(4).as_boolean().value(row));
    let micros = |c: usize| b.column(c).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(micros(6).value(row), 1_704_164_645_123_456);
    assert_eq!(micros(7).value(row), 1_704_164_645_500_000);
    // 03:04:05.25 at +02:00 is 01:04:05.25 UTC.
    assert_eq!(micros(8).value(row), 1_704_157_445_250_000);
    let json = |c: usize| -> Value {
        serde_json::from_str(b.column(c).as_string::<i32>().value(row)).unwrap()
    };
    assert_eq!(json(9), json!({"a": 1}));
    assert_eq!(json(10), json!({"k": "v"}));
    assert_eq!(json(11), json!([1, "two"]));
    // The NULL row: every column NULL, timestamps included.
    for c in 0..b.num_columns() {
        assert!(b.column(c).is_null(null_row), "column {c}");
    }
    // A missing table is named as such.
    let e = wh
        .describe(&SourceRef::Table("no_such_table".into()))
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[test]
fn append_full_and_mirror_syncs_from_snowflake_into_the_receiver() {
    let fx = Fixture::new();
    let sf = FakeSnow::start();
    // 200,000 events: one result of 200K rows (fakesnow sends it as a single rowset).
    sf.sql(&[
        "CREATE TABLE ev AS SELECT x AS id, 'E' || (x % 3)::VARCHAR AS name, \
         '2024-01-01'::TIMESTAMP_NTZ + to_seconds(x) AS ts, 'u' || (x % 997)::VARCHAR AS uid \
         FROM range(200000) t(x)",
        "CREATE TABLE users (uid VARCHAR, name VARCHAR, plan VARCHAR)",
        "INSERT INTO users VALUES ('u1', 'Ann', 'free'), ('u2', 'Bob', 'pro'), ('u3', 'Cy', 'free')",
    ]);
    let toml = warehouse_toml(&sf.url());
    // The scenario runs SQL through it, then takes it away.
    let sf = std::cell::RefCell::new(Some(sf));
    let sql = |s: &[&str]| sf.borrow().as_ref().expect("running").sql(s);
    let scenario = Scenario {
        warehouse: "sf",
        warehouse_toml: toml,
        secret: "sf-s3cret-pw",
        sql: &sql,
        events: "ev",
        users: "users",
        users_sql: "users",
        rows: 200_000,
        late_sql: "INSERT INTO ev SELECT x, 'Late', '2025-01-01'::TIMESTAMP_NTZ + to_seconds(x), 'u1' FROM range(200000, 200010) t(x)",
        late: 10,
        // Snowflake reports unquoted names in upper case.
        columns: ["ID", "NAME", "TS", "UID", "PLAN"],
    };
    sync_scenario(&fx, scenario, || drop(sf.borrow_mut().take()));
}

#[test]
fn an_unreachable_snowflake_is_retried_then_reported_without_secrets() {
    let port = free_port();
    let config = Config::parse(
        &warehouse_toml(&format!("http://127.0.0.1:{port}")),
        "w.toml",
    )
    .unwrap();
    let wh = wharf::warehouse::open(&config, "sf").unwrap();
    let t = Instant::now();
    let e = wh.check().unwrap_err();
    assert!(e.is_transient(), "{e}");
    let m = e.to_string();
    assert!(m.contains("cannot reach Snowflake warehouse `sf`"), "{m}");
    assert!(!m.contains("sf-s3cret-pw"), "{m}");
    // Three retries, 250 ms doubling: at least 1.75 s.
    assert!(
        t.elapsed() >= Duration::from_millis(1700),
        "{:?}",
        t.elapsed()
    );
}

/// A proxy in front of fakesnow that answers the first `failures` requests with 503.
fn flaky_proxy(
    sf: &FakeSnow,
    failures: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let upstream = sf.url();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let counter = counter.clone();
        let upstream = upstream.clone();
        async move {
            use axum::response::IntoResponse;
            if counter.fetch_add(1, Ordering::SeqCst) < failures {
                return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
            }
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let mut r = reqwest::Client::new()
                .request(
                    parts.method.as_str().parse().unwrap(),
                    format!("{upstream}{path}"),
                )
                .body(body.to_vec());
            for (k, v) in &parts.headers {
                if k != "host" && k != "content-length" {
                    r = r.header(k.as_str(), v.as_bytes());
                }
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap();
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                bytes.to_vec(),
            )
                .into_response()
        }
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await
            })
    });
    (format!("http://{addr}"), seen)
}

#[test]
fn transient_http_errors_are_retried() {
    let sf = FakeSnow::start();
    sf.sql(&["CREATE TABLE t AS SELECT x AS id FROM range(1000) t(x)"]);
    let (url, seen) = flaky_proxy(&sf, 2);
    let config = Config::parse(&warehouse_toml(&url), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "sf").unwrap();
    // The login meets two 503s, is retried and succeeds; the count goes through.
    assert_eq!(wh.count(&SourceRef::Table("t".into())).unwrap(), 1000);
    assert!(seen.load(std::sync::atomic::Ordering::SeqCst) >= 4);
}

/// The test key (tests/data/README).
fn test_key_path() -> String {
    format!("{}/tests/data/test-rsa-key.pem", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn snowflake_key_pair_jwt_matches_the_official_connector() {
    let key =
        wharf::warehouse::jwt::RsaKey::from_pem(&std::fs::read_to_string(test_key_path()).unwrap())
            .unwrap();
    // An org-account identifier and a locator with region and cloud: the connector folds them.
    for account in ["myorg-acct", "xy12345.us-east-2.aws"] {
        let token = wharf::warehouse::snowflake::keypair_jwt(
            account,
            "Loader",
            &key,
            chrono::Utc::now().timestamp(),
        )
        .unwrap();
        let out = std::process::Command::new(common::emulators::venv_python("venv-snow"))
            .arg(format!(
                "{}/tests/python/snowflake_keypair_check.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .args([&test_key_path(), account, "Loader", &token])
            .output()
            .expect("run the venv-snow python (installed by .ci/run)");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
            "{account}: {}",
            common::text(&out)
        );
    }
}

#[test]
fn snowflake_key_pair_sign_in_and_clear_key_errors() {
    let sf = FakeSnow::start();
    sf.sql(&[
        "CREATE TABLE kp_t (id NUMBER)",
        "INSERT INTO kp_t VALUES (1), (2)",
    ]);
    let toml = |key: &str| {
        format!(
            "[warehouses.sf]\ntype = \"snowflake\"\naccount = \"wharf-test\"\nuser = \"loader\"\nprivate_key_file = \"{key}\"\ndatabase = \"DB\"\nurl = \"{}\"\n",
            sf.url()
        )
    };
    // fakesnow accepts any login: this shows the key-pair login body is a valid one.
    let config = Config::parse(&toml(&test_key_path()), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "sf").unwrap();
    wh.check().unwrap();
    assert_eq!(wh.count(&SourceRef::Table("kp_t".into())).unwrap(), 2);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let config = Config::parse(&toml(bad.to_str().unwrap()), "w.toml").unwrap();
    let e = wharf::warehouse::open(&config, "sf")
        .unwrap()
        .check()
        .unwrap_err()
        .to_string();
    assert!(e.contains("key-pair sign-in") && e.contains("RSA"), "{e}");
    assert!(!e.contains("c2VjcmV0"), "the key leaked: {e}");

    let e = Config::parse(
        "[warehouses.sf]\ntype = \"snowflake\"\naccount = \"a\"\nuser = \"u\"\npassword = \"p\"\nprivate_key_file = \"k.pem\"\ndatabase = \"DB\"\n",
        "w.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("warehouses.sf.private_key") && e.contains("not several"),
        "{e}"
    );
}

#[test]
fn snowflake_change_output_decodes_and_compacts() {
    let sf = FakeSnow::start();
    // The shape of `SELECT * FROM t CHANGES(INFORMATION => DEFAULT) …`: fakesnow has no
    // CHANGES clause, so a table of that shape stands in for its output.
    sf.sql(&[
        "CREATE TABLE users_changes (ID NUMBER(38,0), NAME VARCHAR, \"METADATA$ACTION\" VARCHAR, \
         \"METADATA$ISUPDATE\" BOOLEAN, \"METADATA$ROW_ID\" VARCHAR)",
        "INSERT INTO users_changes VALUES (1, 'old', 'DELETE', true, 'r1'), (1, 'new', 'INSERT', true, 'r1'), \
         (2, 'gone', 'DELETE', false, 'r2'), (3, 'added', 'INSERT', false, 'r3')",
        "CREATE TABLE users_t (ID NUMBER(38,0), NAME VARCHAR)",
    ]);
    let config = Config::parse(&warehouse_toml(&sf.url()), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "sf").unwrap();
    common::scenario::check_change_output(
        wh.as_ref(),
        "users_changes",
        wharf::warehouse::changes::ChangeFormat::Snowflake,
        "ID",
        &[
            (1, "new", "update"),
            (2, "gone", "delete"),
            (3, "added", "insert"),
        ],
        "users_t",
        "CHANGE_TRACKING = TRUE",
    );
}

#[test]
fn snowflake_session_is_reused_and_renewed_once_refused() {
    let sf = FakeSnow::start();
    let port = sf.port;
    sf.sql(&["CREATE TABLE s_t (id NUMBER)", "INSERT INTO s_t VALUES (1)"]);
    let config = Config::parse(&warehouse_toml(&sf.url()), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "sf").unwrap();
    let src = SourceRef::Table("s_t".into());
    assert_eq!(wh.count(&src).unwrap(), 1);
    assert_eq!(wh.count(&src).unwrap(), 1, "the cached session");
    // A new server knows no session: it answers the cached token with 401 / 390104 ("User
    // must login again"), and wharf signs in again instead of failing.
    drop(sf);
    let sf = FakeSnow::start_on(port);
    sf.sql(&[
        "CREATE TABLE s_t (id NUMBER)",
        "INSERT INTO s_t VALUES (1), (2)",
    ]);
    assert_eq!(wh.count(&src).unwrap(), 2);
    assert_eq!(wh.describe(&src).unwrap().columns.len(), 1);
}

#[test]
fn snowflake_declared_primary_key_is_the_default_key() {
    let fx = Fixture::new();
    let recv = fx.receiver("recv", wharf::receiver::ReceiverAuth::AnyCredentials);
    let sf = FakeSnow::start();
    sf.sql(&[
        "CREATE TABLE pk_t (ID NUMBER PRIMARY KEY, NAME VARCHAR, TS TIMESTAMP_NTZ, UID VARCHAR)",
        "INSERT INTO pk_t VALUES (1, 'A', '2024-01-01 00:00:00', 'u1'), (2, 'B', '2024-01-02 00:00:00', 'u2')",
        "CREATE TABLE nopk_t (ID NUMBER, NAME VARCHAR, TS TIMESTAMP_NTZ, UID VARCHAR)",
    ]);
    let config = Config::parse(&warehouse_toml(&sf.url()), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "sf").unwrap();
    assert_eq!(
        wh.describe(&SourceRef::Table("pk_t".into()))
            .unwrap()
            .primary_key,
        ["ID"]
    );
    let sync = |name: &str, table: &str| {
        format!(
            "[[syncs]]\nname = \"{name}\"\nwarehouse = \"sf\"\ntable = \"{table}\"\ntable_type = \"events\"\nmode = \"mirror\"\ndestinations = [\"mp\"]\n[syncs.mapping]\nevent_name_column = \"NAME\"\ntime_column = \"TS\"\nuser_id_column = \"UID\"\n"
        )
    };
    fx.write_config(
        "wharf.toml",
        &format!(
            "state_dir = \".state\"\n{}[destinations.mp]\ntype = \"mixpanel\"\napi_host = \"{}\"\nproject_id = \"42\"\nservice_account = {{ username = \"sa\", secret = \"x\" }}\n{}{}",
            warehouse_toml(&sf.url()),
            recv.base_url(),
            sync("with_pk", "pk_t"),
            sync("without_pk", "nopk_t"),
        ),
    );
    let out = fx.wharf(&["sync", "with_pk"], &[]);
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(recv.stats().unique_events, 2);
    let out = fx.wharf(&["sync", "without_pk"], &[]);
    let t = common::text(&out);
    assert!(
        !out.status.success() && t.contains("the table declares none"),
        "{t}"
    );
}

/// A read in parts runs its query once and deals the pieces of the answer (its first rowset,
/// then each result chunk) to the parts. fakesnow answers in one rowset, so here that is one
/// part whatever the count (the dealing itself is unit-tested in `snowflake::tests`); every
/// row is read once.
#[test]
fn a_read_in_parts_reads_one_answer_once() {
    let sf = FakeSnow::start();
    sf.sql(&[
        "CREATE TABLE big AS SELECT x AS id, 'r' || (x % 5)::VARCHAR AS region \
         FROM range(50000) t(x)",
    ]);
    let config = Config::parse(&warehouse_toml(&sf.url()), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "sf").unwrap();
    let src = SourceRef::Table("big".into());
    for (filter, count, rows) in [
        ("", 1, (0..50_000).collect::<Vec<i64>>()),
        ("", 4, (0..50_000).collect()),
        ("WHERE id >= 40000", 2, (40_000..50_000).collect()),
    ] {
        let parts = wh
            .clone()
            .read_parts(PartsOf {
                src: &src,
                filter,
                key: &[],
                count,
            })
            .unwrap();
        assert_eq!(parts.len(), 1, "{filter} in {count}: one piece, one part");
        let mut ids = Vec::new();
        for part in parts {
            part(&mut |b| {
                let id = wharf_operators::arrow::compute::cast(b.column(0), &DataType::Int64)
                    .expect("ids as BIGINT");
                ids.extend(id.as_primitive::<Int64Type>().values().iter().copied());
                true
            })
            .unwrap();
        }
        ids.sort_unstable();
        assert_eq!(ids, rows, "{filter} in {count}");
    }
}
