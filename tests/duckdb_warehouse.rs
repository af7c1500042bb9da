//! The DuckDB connector on its own: schema discovery, preview, snapshot, and append reads past
//! a watermark for every cursor type (TIMESTAMP, TIMESTAMPTZ, DATE, integer), quoted names.

mod common;

use common::Fixture;
use wharf::warehouse::duckdb::DuckDbWarehouse;
use wharf::warehouse::{check_cursor, Partition, PartsOf, SourceRef, Warehouse, WarehouseError};
use wharf_operators::arrow::array::RecordBatch;
use wharf_operators::arrow::datatypes::{DataType, TimeUnit};
use wharf_operators::watermark::{column_max, max_watermark, Watermark};

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

#[test]
fn describes_previews_and_snapshots() {
    let fx = Fixture::new();
    fx.sql(
        r#"CREATE SCHEMA s;
           CREATE TABLE s."Odd ""Name""" (id INTEGER PRIMARY KEY, "select" VARCHAR NOT NULL, v DOUBLE);
           INSERT INTO s."Odd ""Name""" SELECT i, 'x' || i, i / 2 FROM range(20000) t(i);"#,
    );
    let wh = DuckDbWarehouse::new("wh", fx.warehouse());
    let src = SourceRef::Table(r#"s.Odd "Name""#.into());
    let schema = wh.describe(&src).unwrap();
    let names: Vec<_> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "select", "v"]);
    assert_eq!(schema.primary_key, ["id"]);
    assert!(!schema.columns[1].nullable);
    assert_eq!(rows(&wh.preview(&src, 7).unwrap()), 7);
    // What a person picks a table from: `schema.table`, as `table = …` takes it.
    assert!(
        wh.list_tables()
            .unwrap()
            .contains(&r#"s.Odd "Name""#.to_string()),
        "{:?}",
        wh.list_tables()
    );
    let mut n = 0;
    let mut batches = 0;
    wh.read_snapshot(&src, &mut |b| {
        n += b.num_rows();
        batches += 1;
        true
    })
    .unwrap();
    assert_eq!(n, 20000);
    assert!(
        batches > 1,
        "streamed in several batches (of at least 8,192 rows)"
    );

    let q = SourceRef::Query(r#"SELECT id, "select" FROM s."Odd ""Name""" WHERE id < 10;"#.into());
    assert_eq!(wh.describe(&q).unwrap().columns.len(), 2);
    assert_eq!(rows(&wh.preview(&q, 100).unwrap()), 10);

    match wh.describe(&SourceRef::Table("nope".into())) {
        Err(WarehouseError::MissingTable { .. }) => {}
        other => panic!("expected MissingTable, got {other:?}"),
    }
    let missing = DuckDbWarehouse::new("gone", fx.path("missing.duckdb"));
    assert!(missing
        .check()
        .unwrap_err()
        .to_string()
        .contains("does not exist"));
}

#[test]
fn partitioned_reads_hold_every_row_once() {
    let fx = Fixture::new();
    // A composite key with NULLs in it, and a filter (an append cursor) narrowed by the parts.
    fx.sql(
        "CREATE TABLE t (id BIGINT, region VARCHAR, seen TIMESTAMP);
         INSERT INTO t SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE 'r' || (i % 5) END,
                TIMESTAMP '2024-01-01' + to_seconds(i)
         FROM range(20000) t(i);",
    );
    let wh = DuckDbWarehouse::new("wh", fx.warehouse());
    let src = SourceRef::Table("t".into());
    let key = ["id".to_string(), "region".to_string()];
    assert_eq!(common::parts_cover_the_table(&wh, &src, &key, ""), 20000);
    let past = wh.after_filter(
        "seen",
        &DataType::Timestamp(TimeUnit::Microsecond, None),
        Some(Watermark::TimestampMicros(
            1_704_067_200_000_000 + 4_999_000_000,
        )),
    );
    assert_eq!(common::parts_cover_the_table(&wh, &src, &key, &past), 15000);
    // No key: one part, the whole table.
    assert_eq!(wh.partitions(&[], 4), vec![Partition::whole()]);

    // The parts the workers of a run read at once: a table by rowid ranges (with or without a
    // key), a query by the key's hash; each part on its own thread, all rows once.
    let wh = std::sync::Arc::new(wh);
    let query = SourceRef::Query("SELECT * FROM t WHERE id < 10000".into());
    for (src, key, filter, rows) in [
        (&src, &[][..], "", 20000),
        (&src, &key[..], past.as_str(), 15000),
        (&query, &key[..], "", 10000),
    ] {
        for count in [1, 2, 3] {
            let parts = wh
                .clone()
                .read_parts(PartsOf {
                    src,
                    filter,
                    key,
                    count,
                })
                .unwrap();
            assert_eq!(parts.len(), count, "{src:?}: {count} parts");
            let mut all = common::ids_of_parts(parts);
            all.dedup();
            assert_eq!(all.len(), rows, "{src:?} in {count} parts, {filter}");
        }
    }
}

#[test]
fn append_reads_only_rows_past_the_watermark_for_every_cursor_type() {
    let fx = Fixture::new();
    fx.sql(
        "CREATE TABLE t (n BIGINT, ts TIMESTAMP, tstz TIMESTAMPTZ, d DATE);
         INSERT INTO t SELECT i, TIMESTAMP '2024-01-01' + to_microseconds(i * 1500),
                (TIMESTAMP '2024-01-01' + to_seconds(i))::TIMESTAMPTZ,
                DATE '2024-01-01' + (i // 10)::INTEGER
         FROM range(100) t(i);",
    );
    let wh = DuckDbWarehouse::new("wh", fx.warehouse());
    let src = SourceRef::Table("t".into());
    let schema = wh.describe(&src).unwrap();
    for (cursor, expect_first, expect_second) in [
        ("n", 100, 39),
        ("ts", 100, 39),
        ("tstz", 100, 39),
        ("d", 100, 30),
    ] {
        let ty = check_cursor(&src, &schema, cursor).unwrap();
        let idx = schema.arrow.index_of(cursor).unwrap();
        let read = |after: Option<Watermark>| {
            let mut n = 0;
            let mut max = None;
            let mut last = None;
            wh.read_after(&src, cursor, &ty, after, &mut |b| {
                let m = column_max(b.column(idx).as_ref());
                assert!(last <= m, "ordered by the cursor");
                last = m;
                max = max_watermark(max, m);
                n += b.num_rows();
                true
            })
            .unwrap();
            (n, max)
        };
        let (n, all_max) = read(None);
        assert_eq!(n, expect_first, "{cursor}");
        assert_eq!(wh.count_after(&src, cursor, &ty, None).unwrap(), 100);
        // The watermark after 61 rows (or after day 6 for dates).
        let (_, mid) = {
            let mut n = 0;
            let mut max = None;
            wh.read_after(&src, cursor, &ty, None, &mut |b| {
                let limit = if cursor == "d" { 70 } else { 61 };
                let take = b.slice(0, (limit - n).min(b.num_rows()));
                n += take.num_rows();
                max = max_watermark(max, column_max(take.column(idx).as_ref()));
                n < limit
            })
            .unwrap();
            (n, max)
        };
        let (n2, max2) = read(mid);
        assert_eq!(n2, expect_second, "{cursor} after {mid:?}");
        assert_eq!(max2, all_max, "{cursor}");
        assert_eq!(
            wh.count_after(&src, cursor, &ty, mid).unwrap(),
            expect_second as u64
        );
        assert_eq!(read(all_max).0, 0, "{cursor}: nothing after the maximum");
    }
    // A text column cannot be a cursor.
    fx.sql("CREATE TABLE u (s VARCHAR)");
    let src = SourceRef::Table("u".into());
    let schema = wh.describe(&src).unwrap();
    assert!(matches!(
        check_cursor(&src, &schema, "s"),
        Err(WarehouseError::BadCursor { .. })
    ));
    assert!(matches!(
        check_cursor(&src, &schema, "zz"),
        Err(WarehouseError::MissingColumn { .. })
    ));
}

/// Reads run under a memory limit (DuckDB otherwise caches the file up to 80% of RAM); a read
/// that needs more than the limit — the latest row per key over a table larger than it —
/// spills to disk instead of failing, also on the read-only connection; a bad limit is an
/// error naming its key.
#[test]
fn reads_stay_within_the_memory_limit_and_spill_beyond_it() {
    let fx = Fixture::new();
    fx.sql(
        "CREATE TABLE h AS SELECT i % 150000 AS id, i AS t, repeat(md5(i::VARCHAR), 8) AS pad
         FROM range(600000) r(i);",
    );
    let wh = DuckDbWarehouse::new("wh", fx.warehouse()).with_memory_limit(Some(24_000_000));
    let h = SourceRef::Table("h".into());
    let latest = wh.latest_per_key(&h, &wh.describe(&h).unwrap(), &["id".into()], "t");
    let (mut n, mut max_t) = (0, 0i64);
    wh.read_snapshot(&latest, &mut |b| {
        n += b.num_rows();
        let t = b.column_by_name("t").unwrap();
        let t = t
            .as_any()
            .downcast_ref::<wharf_operators::arrow::array::Int64Array>()
            .unwrap();
        max_t = max_t.max(t.values().iter().copied().max().unwrap_or(0));
        true
    })
    .unwrap();
    assert_eq!((n, max_t), (150_000, 599_999));

    // A limit that is not a size is refused when the config is read, naming its key.
    let err = wharf::config::Config::parse(
        "[warehouses.wh]\ntype = \"duckdb\"\npath = \"wh.duckdb\"\nmemory_limit = \"lots\"\n",
        "wharf.toml",
    )
    .unwrap_err();
    assert_eq!(err.key, "warehouses.wh.memory_limit", "{err}");
    assert!(err.message.contains("`lots` is not a size"), "{err}");
}
