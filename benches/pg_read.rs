//! PostgreSQL snapshot read throughput: a table of `WHARF_BENCH_ROWS` rows (default 1,000,000)
//! and 10 columns (int8 key, text ×3, int4, float8, numeric(12,2), bool, timestamptz, jsonb)
//! read through wharf's connector (one REPEATABLE READ transaction, a portal fetched 8,192 rows
//! at a time, binary format decoded into Arrow). Needs the local PostgreSQL server.
//!
//! `cargo bench --bench pg_read` (each run reads the table whole, then in 2 parts at once).

use std::time::Instant;

use wharf::warehouse::postgres::{PgSettings, PostgresWarehouse, SslMode};
use wharf::warehouse::{PartsOf, SourceRef, Warehouse};

fn main() {
    let rows: u64 = std::env::var("WHARF_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let pg = PostgresWarehouse::new(
        "pg",
        PgSettings {
            sslmode: SslMode::Disable,
            ..PgSettings::new("127.0.0.1", 5432, "test", "postgres")
        },
    );
    let schema = format!("wb_read_{}", std::process::id());
    let exec = |sql: String| {
        pg.block(async {
            let c = pg.connect().await?;
            c.batch_execute(&sql)
                .await
                .map_err(|e| pg.err(&SourceRef::Query(sql.clone()), e))
        })
        .expect("sql");
    };
    let started = Instant::now();
    exec(format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.t AS SELECT g::int8 AS id, 'user ' || (g % 50000) AS user_id,
           'event ' || (g % 20) AS name, md5(g::text) AS note, (g % 1000)::int4 AS score,
           g / 7.0::float8 AS ratio, (g % 100000) / 100.0::numeric(12,2) AS amount,
           g % 2 = 0 AS flag, timestamptz '2024-01-01' + g * interval '1 second' AS at,
           jsonb_build_object('k', g % 10, 's', 'v' || (g % 3)) AS props
         FROM generate_series(1, {rows}) g;
         ANALYZE {schema}.t;"
    ));
    println!(
        "created {rows} rows × 10 columns in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let src = SourceRef::Table(format!("{schema}.t"));
    let parted = std::sync::Arc::new(pg.clone());
    for run in 1..=3 {
        // One part, then 2 parts read at once on threads of their own (as 2 workers do, inside
        // one exported snapshot).
        for parts in [1, 2] {
            let started = Instant::now();
            let split = parted
                .clone()
                .read_parts(PartsOf {
                    src: &src,
                    filter: "",
                    key: &["id".to_string()],
                    count: parts,
                })
                .expect("split");
            let threads: Vec<_> = split
                .into_iter()
                .map(|part| {
                    std::thread::spawn(move || {
                        let mut n = 0u64;
                        part(&mut |b| {
                            n += b.num_rows() as u64;
                            true
                        })
                        .expect("read");
                        n
                    })
                })
                .collect();
            let n: u64 = threads.into_iter().map(|t| t.join().expect("part")).sum();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "run {run}, {parts} part(s): read {n} rows in {secs:.2}s = {:.0} rows/s",
                n as f64 / secs
            );
        }
    }
    exec(format!("DROP SCHEMA {schema} CASCADE"));
}
