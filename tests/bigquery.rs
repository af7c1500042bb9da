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
use wharf::warehouse::{SourceRef, Warehouse};
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
    let wh = Warehouse::from_config(&config, "bq").unwrap();
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
    wh.read_snapshot(&src, |b| {
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
    // 200,000 events: 4 pages of 50,000 rows.
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
