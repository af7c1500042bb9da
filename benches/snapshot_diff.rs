//! The snapshot diff at scale: a table of N rows (id + 4 value columns) is diffed three times —
//! run 1 against nothing (every row an insert, the state written), run 2 with 1% of the rows
//! changed, and run 3 as after run 2 was killed without committing (run 1's state committed,
//! run 2's pending: the 1% it may have sent are sent again) — and each run's wall time and the
//! process's peak RSS are printed.
//!
//! `cargo bench --bench snapshot_diff -- [ROWS] [WORKERS]` (default 1000000 rows, 2 workers).

#[path = "common/rss.rs"]
mod rss;

use rss::peak_rss_mb;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use wharf_operators::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use wharf_operators::arrow::datatypes::{DataType, Field, Schema};
use wharf_operators::dataflow::{SourceMessage, SourceSender, StartReader};
use wharf_operators::diff::{DiffSpec, Emit};
use wharf_operators::snapshot::{PendingSnapshot, RowHasher};
use wharf_pipelines::diff_run::diff_run;

const BATCH: usize = 8192;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Int64, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("city", DataType::Utf8, true),
    ]))
}

/// Rows `start..end`; in `version` 1, every 100th row has a changed score.
fn batch(start: usize, end: usize, version: u32) -> RecordBatch {
    let ids: Vec<i64> = (start as i64..end as i64).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("user name {i}")).collect();
    let scores: Vec<i64> = ids
        .iter()
        .map(|i| {
            if version == 1 && i % 100 == 0 {
                -i
            } else {
                i % 1000
            }
        })
        .collect();
    let amounts: Vec<f64> = ids.iter().map(|i| *i as f64 * 0.25).collect();
    let cities: Vec<Option<&str>> = ids
        .iter()
        .map(|i| if i % 3 == 0 { None } else { Some("Lisbon") })
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
            Arc::new(Int64Array::from(scores)),
            Arc::new(Float64Array::from(amounts)),
            Arc::new(StringArray::from(cities)),
        ],
    )
    .expect("batch")
}

fn reader(rows: usize, version: u32) -> StartReader {
    Box::new(move |sender: SourceSender| {
        // Named, so that a profile tells the table's generation from the diff.
        let spawned = std::thread::Builder::new()
            .name("generator".into())
            .spawn(move || {
                let mut start = 0;
                while start < rows {
                    let end = (start + BATCH).min(rows);
                    if sender
                        .send(SourceMessage::Batch(batch(start, end, version)))
                        .is_err()
                    {
                        return;
                    }
                    start = end;
                }
            });
        spawned.expect("generator thread");
    })
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rows: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let workers: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let hasher =
        Arc::new(RowHasher::new(&schema(), &["id".to_string()], &[], &[]).expect("hasher"));
    let mut previous = Vec::new();
    let mut first_state = Vec::new();
    for (run, version) in [(1, 0u32), (2, 1u32), (3, 0u32)] {
        let pending = if run == 3 {
            // Run 2 did not commit: run 1's state is the committed one, run 2's is pending.
            previous = first_state.clone();
            let p = PendingSnapshot::load(&dir.path().join("run-2")).expect("pending");
            vec![p.expect("run 2 finished its parts")]
        } else {
            Vec::new()
        };
        let spec = DiffSpec {
            hasher: hasher.clone(),
            previous: previous.clone(),
            pending,
            next_dir: dir.path().join(format!("run-{run}")),
            spill_dir: dir.path().join("spill"),
            memory_budget: 64 << 20,
            emit: Emit::Changes,
            send_deletes: true,
        };
        let t = Instant::now();
        let (_, counts) = diff_run(workers, reader(rows, version), spec, false).expect("diff");
        let secs = t.elapsed().as_secs_f64();
        let state_bytes: u64 = counts
            .parts
            .lock()
            .map(|p| {
                p.iter()
                    .filter_map(|f| std::fs::metadata(f).ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        println!(
            "snapshot_diff rows={rows} workers={workers} run={run}: {:.2}s ({:.0} rows/s), +{} ~{} -{}, state {:.1} bytes/row, peak RSS {:.0} MB",
            secs,
            rows as f64 / secs,
            counts.inserts.load(Ordering::Relaxed),
            counts.updates.load(Ordering::Relaxed),
            counts.deletes.load(Ordering::Relaxed),
            state_bytes as f64 / rows as f64,
            peak_rss_mb()
        );
        previous = counts.parts.lock().map(|p| p.clone()).unwrap_or_default();
        if run == 1 {
            first_state = previous.clone();
        }
    }
}
