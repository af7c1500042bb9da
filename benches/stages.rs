//! The stages of a 1M-event backfill measured alone, one after another on one thread, on the
//! demo events: reading the table from DuckDB into Arrow (in 2 `rowid` parts, as 2 workers
//! read it), mapping Arrow rows to Mixpanel's event JSON, and gzipping that JSON in requests
//! of 2,000 events. Their CPU seconds per million events add up
//! to what any run of the pipeline spends at least; `2 / sum` is the most events per second
//! two cores could give, before the dataflow, HTTP and the receiver take their share.
//!
//! `cargo bench --bench stages` (`WHARF_BENCH_ROWS`, default 1,000,000; `WHARF_BENCH_REPEAT`,
//! default 3). `WHARF_BENCH_STAGE=read`, `map` or `gzip` repeats that stage alone `WHARF_BENCH_REPEAT`
//! times and prints each time and the least: steadier figures on a noisy machine, and a
//! process to profile (`perf record`) that spends its time in that stage. With `gzip`,
//! `WHARF_BENCH_DUMP=<file>` also writes the requests' NDJSON there (to compare with `igzip`).
//! Two more split the read: `scan` is DuckDB's scan alone (its data chunks fetched through
//! the C API and dropped), `export` adds its Arrow export (duckdb-rs's stream, 2,048-row
//! batches, not coalesced into the 8,192-row batches `read` hands on).

use std::sync::Arc;

use wharf::warehouse::duckdb::DuckDbWarehouse;
use wharf::warehouse::{PartsOf, SourceRef, Warehouse};
use wharf_operators::mixpanel::events::EventMapper;
use wharf_operators::RecordMapper;

#[path = "common/demo_mapping.rs"]
mod demo_mapping;
#[path = "common/sync_run.rs"]
mod sync_run;

/// Events per Mixpanel `/import` request.
const PER_REQUEST: usize = 2000;

fn main() {
    // As `wharf` sets glibc's malloc (src/main.rs): freed buffers are reused, not faulted in anew.
    // SAFETY: mallopt only sets the allocator's parameters; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
    let rows: u64 = env_or("WHARF_BENCH_ROWS", 1_000_000);
    let repeat: u64 = env_or("WHARF_BENCH_REPEAT", 3);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("demo.duckdb");
    wharf::demo::create_demo_warehouse(&path, rows).expect("demo");
    let duck = Arc::new(DuckDbWarehouse::new("demo", &path));
    let source = SourceRef::Table("events".into());
    let mapping = demo_mapping::demo_event_mapping("demo_events", true);
    if let Ok(stage) = std::env::var("WHARF_BENCH_STAGE") {
        return one_stage(&stage, &duck, &source, &mapping, rows, repeat);
    }
    println!("{rows} demo events, CPU seconds per million events, each stage alone");
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12} {:>14}",
        "run", "read", "map", "gzip", "sum", "bytes/event", "gzipped", "2 cores: ev/s"
    );
    for run in 1..=repeat {
        // Each stage is timed as the pipeline runs it, each batch dropped once handed on,
        // then run again untimed to keep its output for the next stage.
        let mut read_rows = 0;
        let read = cpu(|| read_in_parts(&duck, &source, &mut |b| read_rows += b.num_rows()));
        assert_eq!(read_rows as u64, rows);
        let mut batches = Vec::new();
        read_in_parts(&duck, &source, &mut |b| batches.push(b));
        let mapper = EventMapper::new(mapping.clone(), &batches[0].schema()).expect("mapper");
        let now_ms = i64::MAX / 2;
        let map = cpu(|| {
            for b in &batches {
                std::hint::black_box(mapper.map_batch(b, now_ms));
            }
        });
        let mapped: Vec<_> = batches
            .iter()
            .map(|b| mapper.map_batch(b, now_ms).records)
            .collect();
        let events: usize = mapped.iter().map(|r| r.len()).sum();
        let bytes: usize = mapped.iter().map(|r| r.data.len()).sum();
        assert_eq!(events as u64, rows, "every demo event maps");
        let bodies = request_bodies(&mapped);
        let mut compressed = 0;
        let gzip = cpu(|| {
            for b in &bodies {
                compressed += wharf::destination::gzip::gzip(b).expect("gzip").len();
            }
        });
        let per_m = |s: f64| s * 1e6 / rows as f64;
        let sum = per_m(read + map + gzip);
        println!(
            "{run:>6} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>12.0} {:>12.1} {:>14.0}",
            per_m(read),
            per_m(map),
            per_m(gzip),
            sum,
            bytes as f64 / events as f64,
            compressed as f64 / events as f64,
            2e6 / sum
        );
    }
    println!("gzip: {}", wharf::destination::gzip::backend().describe());
}

/// Repeats `stage` (`read` or `map`) alone `repeat` times.
fn one_stage(
    stage: &str,
    duck: &Arc<DuckDbWarehouse>,
    source: &SourceRef,
    mapping: &wharf_operators::mixpanel::events::EventMapping,
    rows: u64,
    repeat: u64,
) {
    let mut batches = Vec::new();
    read_in_parts(duck, source, &mut |b| batches.push(b));
    let mapper = EventMapper::new(mapping.clone(), &batches[0].schema()).expect("mapper");
    let mut least = f64::MAX;
    let mut gzip_input: Option<Vec<Vec<u8>>> = None;
    for run in 1..=repeat {
        let seconds = match stage {
            "read" => cpu(|| read_in_parts(duck, source, &mut drop)),
            "scan" => cpu(|| duckdb_parts(duck.path(), rows, Through::Chunks)),
            "export" => cpu(|| duckdb_parts(duck.path(), rows, Through::Arrow)),
            "map" => cpu(|| {
                for b in &batches {
                    std::hint::black_box(mapper.map_batch(b, i64::MAX / 2));
                }
            }),
            "gzip" => {
                let bodies = gzip_input.get_or_insert_with(|| {
                    let mapped: Vec<_> = batches
                        .iter()
                        .map(|b| mapper.map_batch(b, i64::MAX / 2).records)
                        .collect();
                    let bodies = request_bodies(&mapped);
                    if let Ok(path) = std::env::var("WHARF_BENCH_DUMP") {
                        std::fs::write(&path, bodies.concat()).expect("write the NDJSON");
                        println!("the requests' NDJSON written to {path}");
                    }
                    bodies
                });
                cpu(|| {
                    for b in bodies.iter() {
                        std::hint::black_box(wharf::destination::gzip::gzip(b).expect("gzip"));
                    }
                })
            }
            other => panic!(
                "WHARF_BENCH_STAGE is `read`, `scan`, `export`, `map` or `gzip`, not `{other}`"
            ),
        };
        let per_m = seconds * 1e6 / rows as f64;
        least = least.min(per_m);
        println!("{stage} run {run}: {per_m:.3} CPU s per million events");
    }
    println!("{stage}: least {least:.3} CPU s per million events");
}

/// Requests of [`PER_REQUEST`] events (NDJSON), cut from the mapped batches as the sink cuts
/// them.
fn request_bodies(mapped: &[wharf_operators::record::EncodedRecords]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut body = Vec::new();
    let mut in_body = 0;
    for r in mapped {
        for record in r.iter() {
            body.extend_from_slice(record);
            body.push(b'\n');
            in_body += 1;
            if in_body == PER_REQUEST {
                bodies.push(std::mem::take(&mut body));
                in_body = 0;
            }
        }
    }
    bodies.push(body);
    bodies
}

/// How [`duckdb_parts`] takes DuckDB's result.
#[derive(Clone, Copy)]
enum Through {
    /// DuckDB's own data chunks (`duckdb_fetch_chunk`), dropped: the scan without any export.
    Chunks,
    /// duckdb-rs's Arrow stream, one batch per 2,048-row chunk, not coalesced.
    Arrow,
}

/// The demo events read as [`read_in_parts`] reads them (2 `rowid` parts, one DuckDB thread),
/// taken `through` DuckDB's chunks or its Arrow export: what the read stage costs inside
/// DuckDB, against what the export and the coalescing add.
fn duckdb_parts(path: &std::path::Path, rows: u64, through: Through) {
    let half = rows / 2;
    let parts = [format!("rowid < {half}"), format!("rowid >= {half}")]
        .map(|condition| format!("SELECT * FROM events WHERE {condition}"));
    let read: u64 = match through {
        Through::Chunks => raw_chunks(path, &parts),
        Through::Arrow => {
            let config = duckdb::Config::default()
                .access_mode(duckdb::AccessMode::ReadOnly)
                .and_then(|c| c.threads(1))
                .expect("config");
            let conn = duckdb::Connection::open_with_flags(path, config).expect("open");
            let mut read = 0;
            for sql in &parts {
                let mut stmt = conn.prepare(sql).expect("prepare");
                for batch in stmt.stream_arrow([]).expect("query") {
                    read += batch.expect("batch").num_rows() as u64;
                }
            }
            read
        }
    };
    assert_eq!(read, rows);
}

/// Runs each of `sqls` on one read-only, one-thread connection through DuckDB's C API,
/// fetching each data chunk and dropping it; returns the rows.
fn raw_chunks(path: &std::path::Path, sqls: &[String]) -> u64 {
    use duckdb::ffi;
    use std::ffi::CString;
    let cstr = |s: &str| CString::new(s).expect("no NUL");
    let path = cstr(path.to_str().expect("UTF-8 path"));
    let mut rows = 0;
    // SAFETY: the C API used as documented: every handle is created before use, checked, and
    // destroyed once; the strings outlive the calls that read them.
    unsafe {
        let mut config: ffi::duckdb_config = std::ptr::null_mut();
        assert_eq!(ffi::duckdb_create_config(&mut config), ffi::DuckDBSuccess);
        for (key, value) in [("access_mode", "READ_ONLY"), ("threads", "1")] {
            let (key, value) = (cstr(key), cstr(value));
            ffi::duckdb_set_config(config, key.as_ptr(), value.as_ptr());
        }
        let mut db: ffi::duckdb_database = std::ptr::null_mut();
        let mut error: *mut std::os::raw::c_char = std::ptr::null_mut();
        let opened = ffi::duckdb_open_ext(path.as_ptr(), &mut db, config, &mut error);
        ffi::duckdb_destroy_config(&mut config);
        assert_eq!(opened, ffi::DuckDBSuccess, "open");
        let mut conn: ffi::duckdb_connection = std::ptr::null_mut();
        assert_eq!(ffi::duckdb_connect(db, &mut conn), ffi::DuckDBSuccess);
        for sql in sqls {
            let sql = cstr(sql);
            let mut stmt: ffi::duckdb_prepared_statement = std::ptr::null_mut();
            assert_eq!(
                ffi::duckdb_prepare(conn, sql.as_ptr(), &mut stmt),
                ffi::DuckDBSuccess
            );
            let mut result: ffi::duckdb_result = std::mem::zeroed();
            assert_eq!(
                ffi::duckdb_execute_prepared_streaming(stmt, &mut result),
                ffi::DuckDBSuccess
            );
            loop {
                let mut chunk = ffi::duckdb_fetch_chunk(result);
                if chunk.is_null() {
                    break;
                }
                let size = ffi::duckdb_data_chunk_get_size(chunk);
                ffi::duckdb_destroy_data_chunk(&mut chunk);
                if size == 0 {
                    break;
                }
                rows += size;
            }
            ffi::duckdb_destroy_result(&mut result);
            ffi::duckdb_destroy_prepare(&mut stmt);
        }
        ffi::duckdb_disconnect(&mut conn);
        ffi::duckdb_close(&mut db);
    }
    rows
}

/// Reads `source` in 2 parts, one after the other, as 2 workers would read them at once.
fn read_in_parts(
    duck: &Arc<DuckDbWarehouse>,
    source: &SourceRef,
    each: &mut dyn FnMut(wharf_operators::arrow::array::RecordBatch),
) {
    let parts = Arc::clone(duck)
        .read_parts(PartsOf {
            src: source,
            filter: "",
            key: &[],
            count: 2,
        })
        .expect("parts");
    for part in parts {
        part(&mut |b| {
            each(b);
            true
        })
        .expect("read");
    }
}

/// CPU seconds (user + system, every thread of this process) that `f` took.
fn cpu(f: impl FnOnce()) -> f64 {
    let before = sync_run::cpu_seconds(libc::RUSAGE_SELF);
    f();
    sync_run::cpu_seconds(libc::RUSAGE_SELF) - before
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
