//! The Databricks warehouse against `minilake` (PyPI), an emulator of Databricks' REST APIs
//! over DuckDB, installed into its own venv by `.ci/run` (`WHARF_MINILAKE` overrides the
//! binary). minilake's SQL is DuckDB's, it answers every statement at once (the polling path
//! is not exercised), does not check tokens, splits results into chunks of 100,000 rows, and
//! sends `ARROW_STREAM` chunks with everything but integers, doubles and booleans as text
//! (wharf converts them by the manifest's types, as it does real Databricks' typed Arrow).

mod common;

use common::emulators::MiniLake;
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
fn databricks_types_decode_to_arrow() {
    let lake = MiniLake::start();
    lake.sql(&[
        "CREATE TABLE cat.s.types_t (c_long BIGINT, c_int INTEGER, c_dec DECIMAL(10,2), c_dbl DOUBLE, \
         c_str VARCHAR, c_bool BOOLEAN, c_date DATE, c_ts TIMESTAMP, c_tstz TIMESTAMPTZ, c_json JSON)",
        "INSERT INTO cat.s.types_t VALUES (42, 7, 12.34, 1.25, 'héllo', true, DATE '2024-01-02', \
         TIMESTAMP '2024-01-02 03:04:05.123456', TIMESTAMPTZ '2024-01-02 05:04:05+02', '{\"a\":1}')",
        "INSERT INTO cat.s.types_t (c_long) VALUES (NULL)",
    ]);
    let config = Config::parse(&lake.toml(), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "dbx").unwrap();
    wh.check().unwrap();
    let src = SourceRef::Table("types_t".into());
    let schema = wh.describe(&src).unwrap();
    let utc = Some("UTC".into());
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
            DataType::Int64,
            DataType::Decimal128(10, 2),
            DataType::Float64,
            DataType::Utf8,
            DataType::Boolean,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
            DataType::Timestamp(TimeUnit::Microsecond, utc),
            DataType::Utf8,
        ]
    );
    // The bulk path (ARROW_STREAM chunks) and the inline path (preview, JSON) agree.
    let mut batches = Vec::new();
    wh.read_snapshot(&src, &mut |b| {
        batches.push(b);
        true
    })
    .unwrap();
    let bulk =
        wharf_operators::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let inline = wh.preview(&src, 10).unwrap().remove(0);
    for b in [&bulk, &inline] {
        assert_eq!(b.num_rows(), 2);
        let row = (0..2).find(|i| !b.column(0).is_null(*i)).unwrap();
        assert_eq!(b.column(0).as_primitive::<Int64Type>().value(row), 42);
        assert_eq!(b.column(1).as_primitive::<Int64Type>().value(row), 7);
        assert_eq!(
            b.column(2)
                .as_primitive::<Decimal128Type>()
                .value_as_string(row),
            "12.34"
        );
        assert_eq!(b.column(3).as_primitive::<Float64Type>().value(row), 1.25);
        assert_eq!(b.column(4).as_string::<i32>().value(row), "héllo");
        assert!(b.column(5).as_boolean().value(row));
        assert_eq!(
            b.column(7)
                .as_primitive::<TimestampMicrosecondType>()
                .value(row),
            1_704_164_645_123_456
        );
        assert_eq!(
            b.column(8)
                .as_primitive::<TimestampMicrosecondType>()
                .value(row),
            1_704_164_645_000_000
        );
        let j: Value = serde_json::from_str(b.column(9).as_string::<i32>().value(row)).unwrap();
        assert_eq!(j, json!({"a": 1}));
        for c in 0..b.num_columns() {
            assert!(b.column(c).is_null(1 - row), "column {c}");
        }
    }
    let e = wh.describe(&SourceRef::Table("nope".into())).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(!e.to_string().contains("dapi-s3cret-token"));
}

#[test]
fn append_full_and_mirror_syncs_from_databricks_into_the_receiver() {
    let fx = Fixture::new();
    let lake = MiniLake::start();
    // 250,000 events: three result chunks of at most 100,000 rows.
    lake.sql(&[
        "CREATE TABLE cat.s.ev AS SELECT x AS id, 'E' || (x % 3)::VARCHAR AS name, \
         TIMESTAMP '2024-01-01' + to_seconds(x) AS ts, 'u' || (x % 997)::VARCHAR AS uid \
         FROM range(250000) t(x)",
        "CREATE TABLE cat.s.users (uid VARCHAR, name VARCHAR, plan VARCHAR)",
        "INSERT INTO cat.s.users VALUES ('u1', 'Ann', 'free'), ('u2', 'Bob', 'pro'), ('u3', 'Cy', 'free')",
    ]);
    let toml = lake.toml();
    // The scenario runs SQL through it, then takes it away.
    let lake = std::cell::RefCell::new(Some(lake));
    let sql = |s: &[&str]| lake.borrow().as_ref().expect("running").sql(s);
    let scenario = Scenario {
        warehouse: "dbx",
        warehouse_toml: toml,
        secret: "dapi-s3cret-token",
        sql: &sql,
        events: "ev",
        users: "users",
        users_sql: "cat.s.users",
        rows: 250_000,
        late_sql: "INSERT INTO cat.s.ev SELECT x, 'Late', TIMESTAMP '2025-01-01' + to_seconds(x), 'u1' FROM range(250000, 250007) t(x)",
        late: 7,
        columns: ["id", "name", "ts", "uid", "plan"],
    };
    sync_scenario(&fx, scenario, || drop(lake.borrow_mut().take()));
}

#[test]
fn databricks_change_feed_output_decodes_and_compacts() {
    let lake = MiniLake::start();
    // The shape of `SELECT * FROM table_changes('t', v)`: minilake has no Change Data Feed, so
    // a table of that shape stands in for its output.
    lake.sql(&[
        "CREATE TABLE cat.s.users_changes (id BIGINT, name VARCHAR, _change_type VARCHAR, \
         _commit_version BIGINT, _commit_timestamp TIMESTAMP)",
        "INSERT INTO cat.s.users_changes VALUES \
         (1, 'new', 'update_postimage', 3, TIMESTAMP '2024-01-01 00:03:00'), \
         (1, 'old', 'update_preimage', 3, TIMESTAMP '2024-01-01 00:03:00'), \
         (2, 'gone', 'delete', 2, TIMESTAMP '2024-01-01 00:02:00'), \
         (3, 'added', 'insert', 4, TIMESTAMP '2024-01-01 00:04:00'), \
         (4, 'brief', 'insert', 1, TIMESTAMP '2024-01-01 00:01:00'), \
         (4, 'brief', 'delete', 5, TIMESTAMP '2024-01-01 00:05:00')",
        "CREATE TABLE cat.s.users_t (id BIGINT, name VARCHAR)",
    ]);
    let config = Config::parse(&lake.toml(), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "dbx").unwrap();
    common::scenario::check_change_output(
        wh.as_ref(),
        "users_changes",
        wharf::warehouse::changes::ChangeFormat::Databricks,
        "id",
        common::scenario::FOUR_KEYS,
        "users_t",
        "delta.enableChangeDataFeed",
    );
}

#[test]
fn partitioned_reads_deal_one_statements_result_chunks_to_the_parts() {
    let lake = MiniLake::start();
    // 250,000 rows: three result chunks of at most 100,000.
    lake.sql(&[
        "CREATE TABLE cat.s.big AS SELECT x AS id, 'r' || (x % 5)::VARCHAR AS region \
         FROM range(250000) t(x)",
    ]);
    let config = Config::parse(&lake.toml(), "w.toml").unwrap();
    let wh = wharf::warehouse::open(&config, "dbx").unwrap();
    let src = SourceRef::Table("big".into());
    let key = ["id".to_string()];
    for (filter, count, parts, rows) in [
        ("", 1, 1, (0..250_000).collect::<Vec<i64>>()),
        ("", 2, 2, (0..250_000).collect()),
        ("", 4, 3, (0..250_000).collect()),
        ("WHERE id >= 200000", 3, 1, (200_000..250_000).collect()),
    ] {
        let read = wh
            .clone()
            .read_parts(PartsOf {
                src: &src,
                filter,
                key: &key,
                count,
            })
            .unwrap();
        assert_eq!(
            read.len(),
            parts,
            "{filter} in {count}: one part per chunk at most"
        );
        // Every row once, each part on its own thread.
        assert_eq!(common::ids_of_parts(read), rows, "{filter} in {count}");
    }
}
