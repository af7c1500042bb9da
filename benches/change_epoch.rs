//! A change-stream mirror's epochs with the arrangement held in memory: one long-lived
//! dataflow (user profiles → an NDJSON file) first takes a table of N rows as inserts, in
//! epochs of 1M (which fills each worker's held `(key hash, fingerprint)` trace), then epochs
//! of 1,000 changes (900 new values, 100 that leave the row as it was, which the held state
//! drops). Each small epoch is timed from its hand-over to the dataflow until the file
//! destination flushed it (`run_epoch` returned); p50/p90/max and the peak RSS are printed.
//! The trace is kept on disk as a sync's is (`HeldStore`: each epoch's delta logged before
//! it is sent); last, a new dataflow loads it (as after a restart) and runs one more epoch of
//! 1,000 changes, timed with the load (`WHARF_BENCH_HELD=0`: in memory only, nothing loaded).
//!
//! `cargo bench --bench change_epoch -- [ROWS] [WORKERS] [EPOCHS]` (default 10000000 rows,
//! 2 workers, 30 epochs of 1,000 changes).

#[path = "common/rss.rs"]
mod rss;

use rss::peak_rss_mb;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf::destination::file::FileDestination;
use wharf_operators::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use wharf_operators::arrow::datatypes::{DataType, Field, Schema};
use wharf_operators::change::ChangeMapper;
use wharf_operators::dataflow::{BatchLimits, RejectSink};
use wharf_operators::diff::{DiffCounts, HeldStore, OP_COLUMN};
use wharf_operators::mixpanel::changes::{ProfileChanges, ProfileMapping, ProfileTarget};
use wharf_operators::record::Reject;
use wharf_operators::snapshot::RowHasher;
use wharf_pipelines::delivery::RetryPolicy;
use wharf_pipelines::live::{EpochInput, LiveDataflow, LiveSpec};
use wharf_pipelines::reader::batches_reader;
use wharf_pipelines::run::{Plan, SinkMapper, SinkSpec};

const BATCH: usize = 8192;

fn schema(with_op: bool) -> Arc<Schema> {
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Int64, true),
    ];
    if with_op {
        fields.push(Field::new(OP_COLUMN, DataType::Utf8, false));
    }
    Arc::new(Schema::new(fields))
}

/// Change rows `(id, score, op)`.
fn batch(rows: &[(i64, i64, &str)]) -> RecordBatch {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0)));
    let names: ArrayRef = Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| format!("user name {}", r.0)),
    ));
    let scores: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1)));
    let ops: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2)));
    RecordBatch::try_new(schema(true), vec![ids, names, scores, ops]).expect("batch")
}

struct NoRejects;
impl RejectSink for NoRejects {
    fn record(&self, rejects: &[Reject]) -> Result<(), String> {
        if rejects.is_empty() {
            Ok(())
        } else {
            Err(format!("{} rows rejected", rejects.len()))
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (rows, workers, epochs) = (arg(0, 10_000_000), arg(1, 2), arg(2, 30));
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let data = schema(false);
    let hasher = Arc::new(RowHasher::new(&data, &["id".to_string()], &[], &[]).expect("hasher"));
    let mapping = ProfileMapping {
        target: ProfileTarget::User,
        token: "bench".into(),
        id_column: "id".into(),
        properties_column: None,
        exclude_columns: vec![],
    };
    let mapper: Arc<dyn ChangeMapper> =
        Arc::new(ProfileChanges::new(&mapping, &data, None).expect("mapper"));
    let file = FileDestination::open(&dir.path().join("out.ndjson")).expect("file");
    let sink = SinkSpec {
        destination: Arc::new(file),
        mapper: SinkMapper::Changes(mapper.clone()),
        limits: BatchLimits {
            max_records: 2000,
            max_bytes: 4 << 20,
        },
        policy: RetryPolicy::default(),
    };
    // `WHARF_BENCH_HELD=0`: the trace in memory only, as before it was kept on disk.
    let keep = std::env::var("WHARF_BENCH_HELD").map_or(true, |v| v != "0");
    let start_live = || {
        LiveDataflow::start(LiveSpec {
            workers,
            plan: Plan::Changes {
                hasher: hasher.clone(),
                counts: Arc::new(DiffCounts::default()),
                held: keep.then(|| {
                    Arc::new(HeldStore::new(
                        dir.path().join("held"),
                        hasher.layout_id(),
                        0,
                    ))
                }),
            },
            sinks: vec![sink.clone()],
            runtime: runtime.handle().clone(),
            cluster: None,
        })
        .expect("dataflow")
    };
    let mut live = start_live();
    let commit = |live: &LiveDataflow, epoch: u64| {
        if let Some(held) = live.held() {
            held.committed(epoch).expect("note the commit");
        }
    };
    let input = |batches: Vec<RecordBatch>| EpochInput {
        readers: vec![batches_reader(batches)],
        mappers: vec![SinkMapper::Changes(mapper.clone())],
        rejects: Arc::new(NoRejects),
        now_ms: chrono::Utc::now().timestamp_millis(),
        diff: None,
        may_replay: false,
    };
    let mut epoch = 0u64;
    // The table, as inserts.
    let t = Instant::now();
    let mut start = 0usize;
    while start < rows {
        let end = (start + 1_000_000).min(rows);
        let batches: Vec<RecordBatch> = (start..end)
            .step_by(BATCH)
            .map(|s| {
                let rows: Vec<(i64, i64, &str)> = (s..(s + BATCH).min(end))
                    .map(|i| (i as i64, i as i64 % 1000, "insert"))
                    .collect();
                batch(&rows)
            })
            .collect();
        epoch += 1;
        live.run_epoch(epoch, input(batches)).expect("load epoch");
        commit(&live, epoch);
        start = end;
    }
    println!(
        "change_epoch rows={rows} workers={workers}: loaded in {:.1}s, peak RSS {:.0} MB",
        t.elapsed().as_secs_f64(),
        peak_rss_mb()
    );
    // Epochs of 1,000 changes: 900 new scores, 100 unchanged rows.
    let mut times: Vec<Duration> = Vec::new();
    let mut sent = 0u64;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut changes_of = |e: usize| -> Vec<(i64, i64, &str)> {
        (0..1000)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let id = (state % rows as u64) as i64;
                let score = if i < 900 { -(e as i64) - 1 } else { id % 1000 };
                (id, score, "update")
            })
            .collect()
    };
    for e in 0..epochs {
        let changes = changes_of(e);
        // Keys drawn twice in one epoch: the last change wins; an unchanged row is sent
        // anyway if an earlier epoch changed it.
        epoch += 1;
        let t = Instant::now();
        let out = live
            .run_epoch(epoch, input(vec![batch(&changes)]))
            .expect("epoch");
        times.push(t.elapsed());
        commit(&live, epoch);
        sent += out.delivered;
    }
    // As after a restart: a new dataflow loads the held state and runs the next epoch.
    drop(live);
    let t = Instant::now();
    let mut live = start_live();
    epoch += 1;
    let restarted = live
        .run_epoch(epoch, input(vec![batch(&changes_of(epochs))]))
        .expect("epoch after the restart");
    let after_restart = t.elapsed();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(times[((times.len() as f64 * q) as usize).min(times.len() - 1)]);
    println!(
        "change_epoch rows={rows} workers={workers}: {epochs} epochs of 1000 changes: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms; {:.0} records sent per epoch; peak RSS {:.0} MB",
        at(0.5),
        at(0.9),
        ms(times[times.len() - 1]),
        sent as f64 / epochs as f64,
        peak_rss_mb()
    );
    println!(
        "change_epoch rows={rows} workers={workers}: a new dataflow, loading the held state, and its first epoch of 1000 changes: {:.0} ms; {} records sent",
        ms(after_restart),
        restarted.delivered
    );
}
