//! Long-lived dataflows against in-memory readers and destinations that misbehave on
//! purpose: an epoch completes only when everything is acknowledged, transient failures and
//! 413s are retried, permanent failures fail it; epoch after epoch.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wharf_operators::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use wharf_operators::arrow::datatypes::{DataType, Field, Schema};
use wharf_operators::dataflow::{
    BatchLimits, RejectSink, SourceMessage, SourceSender, StartReader,
};
use wharf_operators::mixpanel::events::{EpochUnit, EventMapper, EventMapping, EventName};
use wharf_operators::record::{EncodedRecords, Reject};
use wharf_pipelines::delivery::RetryPolicy;
use wharf_pipelines::destination::{
    BoxFuture, Destination, DestinationError, SendOutcome, Sending,
};
use wharf_pipelines::live::{EpochInput, LiveDataflow, LiveSpec};
use wharf_pipelines::run::{Plan, RunError, RunOutcome, SinkMapper, SinkSpec};

/// A test's dataflow: its shape, destinations and first epoch's reader.
struct RunSpec {
    workers: usize,
    reader: StartReader,
    plan: Plan,
    sinks: Vec<SinkSpec>,
    rejects: Arc<dyn RejectSink>,
    runtime: tokio::runtime::Handle,
}

/// One epoch (1) of `spec` on a long-lived dataflow of its own.
fn run_dataflow(mut spec: RunSpec) -> Result<RunOutcome, RunError> {
    let reader = std::mem::replace(&mut spec.reader, Box::new(|_| {}));
    let (mut live, input) = live(spec);
    live.run_epoch(1, input(reader))
}

/// Fails the first `transient` calls, answers 413 to requests over `max_ok` records, and
/// fails for good when `permanent` is set.
struct Flaky {
    calls: AtomicUsize,
    transient: usize,
    max_ok: usize,
    permanent: bool,
    got: Mutex<Vec<String>>,
    /// Keys of the records received, when they had some.
    keys: Mutex<Vec<String>>,
    /// Times `abort` was called.
    aborts: AtomicUsize,
    /// Answer the first call with a 429 asking to wait this long.
    overload_first: Option<Duration>,
    /// (call number, start, end) of each call.
    timeline: Mutex<Vec<(usize, Instant, Instant)>>,
}

impl Flaky {
    fn new(transient: usize, max_ok: usize, permanent: bool) -> Flaky {
        Flaky {
            calls: AtomicUsize::new(0),
            transient,
            max_ok,
            permanent,
            got: Mutex::new(vec![]),
            keys: Mutex::new(vec![]),
            aborts: AtomicUsize::new(0),
            overload_first: None,
            timeline: Mutex::new(vec![]),
        }
    }
}

impl Destination for Flaky {
    fn describe(&self) -> String {
        "flaky".into()
    }
    fn send<'a>(&'a self, records: &'a EncodedRecords) -> Sending<'a> {
        Box::pin(async move {
            let start = Instant::now();
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            let end = Instant::now();
            self.timeline.lock().unwrap().push((n, start, end));
            if let (0, Some(wait)) = (n, self.overload_first) {
                return Err(DestinationError::Overloaded {
                    message: "429".into(),
                    retry_after: Some(wait),
                });
            }
            if self.permanent {
                return Err(DestinationError::Permanent {
                    message: "no".into(),
                });
            }
            if n < self.transient {
                return Err(DestinationError::Transient {
                    message: "429".into(),
                    retry_after: Some(Duration::from_millis(5)),
                });
            }
            if records.len() > self.max_ok {
                return Err(DestinationError::TooLarge {
                    message: "413".into(),
                });
            }
            self.keys.lock().unwrap().extend(
                (0..records.len())
                    .filter_map(|i| records.key(i))
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
            );
            let mut got = self.got.lock().unwrap();
            got.extend(
                records
                    .iter()
                    .map(|r| String::from_utf8_lossy(r).into_owned()),
            );
            Ok(SendOutcome {
                delivered: records.len(),
                rejects: vec![],
            })
        })
    }
    fn abort(&self) -> BoxFuture<'_, ()> {
        self.aborts.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

#[derive(Default)]
struct Rejects(Mutex<Vec<Reject>>);
impl RejectSink for Rejects {
    fn record(&self, rejects: &[Reject]) -> Result<(), String> {
        self.0.lock().unwrap().extend_from_slice(rejects);
        Ok(())
    }
}

fn batch(from: i64, n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("t", DataType::Int64, true),
        Field::new("k", DataType::Int64, false),
    ]));
    // Every 100th row has no time: rejected by the mapping.
    let t: ArrayRef = Arc::new(Int64Array::from_iter(
        (from..from + n).map(|i| (i % 100 != 99).then_some(1_700_000_000 + i)),
    ));
    let k: ArrayRef = Arc::new(Int64Array::from_iter_values(from..from + n));
    RecordBatch::try_new(schema, vec![t, k]).unwrap()
}

fn spec(
    dest: Arc<Flaky>,
    rejects: Arc<Rejects>,
    workers: usize,
    rt: &tokio::runtime::Runtime,
) -> RunSpec {
    fan_out(vec![dest], rejects, workers, rt)
}

fn fan_out(
    dests: Vec<Arc<Flaky>>,
    rejects: Arc<Rejects>,
    workers: usize,
    rt: &tokio::runtime::Runtime,
) -> RunSpec {
    let b = batch(0, 1);
    let mapper = EventMapper::new(
        EventMapping {
            sync_id: "t".into(),
            warehouse_type: "memory".into(),
            event_name: EventName::Static("E".into()),
            time_column: "t".into(),
            time_unit: EpochUnit::Seconds,
            user_id_column: None,
            device_id_column: None,
            properties_column: None,
            key_columns: vec!["k".into()],
            exclude_columns: vec![],
        },
        &b.schema(),
    )
    .unwrap();
    let mapper: Arc<dyn wharf_operators::RecordMapper> = Arc::new(mapper);
    let handle = rt.handle().clone();
    RunSpec {
        workers,
        reader: Box::new(move |tx: SourceSender| {
            handle.spawn_blocking(move || {
                for i in 0..10 {
                    if tx
                        .send(SourceMessage::Batch(batch(i * 1000, 1000)))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }),
        plan: Plan::Append,
        sinks: dests
            .into_iter()
            .map(|d| SinkSpec {
                destination: d,
                mapper: SinkMapper::Records(mapper.clone()),
                limits: BatchLimits {
                    max_records: 2000,
                    max_bytes: 1 << 20,
                },
                policy: RetryPolicy {
                    initial_backoff: Duration::from_millis(1),
                    max_backoff: Duration::from_millis(5),
                    max_jitter: Duration::ZERO,
                    give_up_after: Duration::from_secs(30),
                    concurrency: 3,
                    rate: Default::default(),
                },
            })
            .collect(),
        rejects,
        runtime: rt.handle().clone(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn retries_and_splits_until_everything_is_acknowledged() {
    let rt = runtime();
    for workers in [1, 2] {
        let dest = Arc::new(Flaky::new(3, 700, false));
        let rejects = Arc::new(Rejects::default());
        let out = run_dataflow(spec(dest.clone(), rejects.clone(), workers, &rt)).unwrap();
        assert_eq!(out.rows_read, 10_000);
        assert_eq!(out.delivered, 9_900);
        assert_eq!(out.rejected, 100);
        assert!(out.retries >= 3, "{out:?}");
        let got = dest.got.lock().unwrap();
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(got.len(), 9_900, "nothing lost, nothing duplicated");
        assert_eq!(unique.len(), 9_900);
        assert_eq!(rejects.0.lock().unwrap().len(), 100);
    }
}

#[test]
fn a_permanent_failure_fails_the_run() {
    let rt = runtime();
    let dest = Arc::new(Flaky::new(0, usize::MAX, true));
    let err = run_dataflow(spec(dest, Arc::new(Rejects::default()), 2, &rt)).unwrap_err();
    assert!(err.0.contains("flaky: no"), "{err}");
}

#[test]
fn a_429_pauses_every_request_to_the_destination() {
    let rt = runtime();
    let pause = Duration::from_millis(300);
    let mut flaky = Flaky::new(0, usize::MAX, false);
    flaky.overload_first = Some(pause);
    let dest = Arc::new(flaky);
    let out = run_dataflow(spec(dest.clone(), Arc::new(Rejects::default()), 2, &rt)).unwrap();
    assert_eq!(out.delivered, 9_900);
    let timeline = dest.timeline.lock().unwrap().clone();
    let first_end = timeline.iter().find(|(n, _, _)| *n == 0).unwrap().2;
    let later: Vec<_> = timeline.iter().filter(|(_, s, _)| *s > first_end).collect();
    assert!(!later.is_empty());
    for (_, start, _) in later {
        assert!(
            start.duration_since(first_end) >= pause - Duration::from_millis(5),
            "a request went out {:?} after the 429, inside the {pause:?} pause",
            start.duration_since(first_end)
        );
    }
}

#[test]
fn fan_out_delivers_everything_to_every_destination() {
    let rt = runtime();
    for workers in [1, 2] {
        let flaky = Arc::new(Flaky::new(3, 700, false));
        let steady = Arc::new(Flaky::new(0, usize::MAX, false));
        let rejects = Arc::new(Rejects::default());
        let spec = fan_out(
            vec![flaky.clone(), steady.clone()],
            rejects.clone(),
            workers,
            &rt,
        );
        let out = run_dataflow(spec).unwrap();
        assert_eq!(out.rows_read, 10_000);
        // Acknowledged records are counted across destinations.
        assert_eq!(out.delivered, 2 * 9_900);
        for dest in [&flaky, &steady] {
            let got = dest.got.lock().unwrap();
            let unique: HashSet<&String> = got.iter().collect();
            assert_eq!((got.len(), unique.len()), (9_900, 9_900));
            // Event records carry their key (the primary key column `k`) for keyed sinks.
            let keys = dest.keys.lock().unwrap();
            assert_eq!(keys.len(), 9_900);
            assert!(
                keys.iter().all(|k| k.parse::<i64>().is_ok()),
                "{:?}",
                &keys[..3]
            );
        }
        // Each destination's mapping rejects are recorded.
        assert_eq!(rejects.0.lock().unwrap().len(), 200);
    }
}

#[test]
fn one_failing_destination_fails_the_fan_out_and_aborts_every_destination() {
    let rt = runtime();
    let broken = Arc::new(Flaky::new(0, usize::MAX, true));
    let steady = Arc::new(Flaky::new(0, usize::MAX, false));
    let spec = fan_out(
        vec![steady.clone(), broken.clone()],
        Arc::new(Rejects::default()),
        2,
        &rt,
    );
    let err = run_dataflow(spec).unwrap_err();
    assert!(err.0.contains("flaky: no"), "{err}");
    assert_eq!(steady.aborts.load(Ordering::SeqCst), 1);
    assert_eq!(broken.aborts.load(Ordering::SeqCst), 1);
}

/// A reader of 10 batches of 1,000 rows from row `from` on.
fn reader_from(rt: &tokio::runtime::Runtime, from: i64) -> StartReader {
    let handle = rt.handle().clone();
    Box::new(move |tx: SourceSender| {
        handle.spawn_blocking(move || {
            for i in 0..10 {
                let rows = batch(from + i * 1000, 1000);
                if tx.send(SourceMessage::Batch(rows)).is_err() {
                    return;
                }
            }
        });
    })
}

/// A long-lived dataflow of `spec`'s shape, and a maker of its epochs' inputs.
fn live(spec: RunSpec) -> (LiveDataflow, impl Fn(StartReader) -> EpochInput) {
    let mappers: Vec<SinkMapper> = spec.sinks.iter().map(|s| s.mapper.clone()).collect();
    let rejects = spec.rejects.clone();
    let live = LiveDataflow::start(LiveSpec {
        workers: spec.workers,
        plan: spec.plan,
        sinks: spec.sinks,
        runtime: spec.runtime,
        cluster: None,
    })
    .unwrap();
    let input = move |reader| EpochInput {
        readers: vec![reader],
        mappers: mappers.clone(),
        rejects: rejects.clone(),
        now_ms: 1_800_000_000_000,
        diff: None,
        // Each epoch after a committed one (tests of the first epoch after a crash say so).
        may_replay: false,
    };
    (live, input)
}

#[test]
fn a_long_lived_dataflow_runs_epoch_after_epoch() {
    let rt = runtime();
    for workers in [1, 2] {
        let dest = Arc::new(Flaky::new(2, 700, false));
        let rejects = Arc::new(Rejects::default());
        let (mut live, input) = live(spec(dest.clone(), rejects.clone(), workers, &rt));
        for epoch in 1..=3u64 {
            let from = epoch as i64 * 100_000;
            let out = live
                .run_epoch(epoch, input(reader_from(&rt, from)))
                .unwrap();
            // Each epoch's counts are its own, and all of it arrived before it returned.
            assert_eq!(out.rows_read, 10_000, "epoch {epoch}: {out:?}");
            assert_eq!(out.delivered, 9_900);
            assert_eq!(out.rejected, 100);
            assert_eq!(dest.got.lock().unwrap().len(), 9_900 * epoch as usize);
            assert_eq!(
                live.control().inflight(),
                0,
                "every row settled by the epoch's end"
            );
        }
        let got = dest.got.lock().unwrap();
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), 3 * 9_900, "nothing lost, nothing duplicated");
        assert_eq!(rejects.0.lock().unwrap().len(), 300);
        drop(got);
        // Epochs only move forward.
        assert!(live.run_epoch(2, input(reader_from(&rt, 0))).is_err());
    }
}

/// An epoch read in parts: every worker reads its share of the parts (worker w parts w,
/// w + W, …), at once; an epoch with no part reads nothing and still passes.
#[test]
fn every_worker_reads_its_parts_of_an_epoch() {
    let rt = runtime();
    for workers in [1, 2, 3] {
        let dest = Arc::new(Flaky::new(0, usize::MAX, false));
        let rejects = Arc::new(Rejects::default());
        let (mut live, input) = live(spec(dest.clone(), rejects.clone(), workers, &rt));
        // Five parts of 10,000 rows each, on threads of their own.
        let threads: Arc<Mutex<HashSet<std::thread::ThreadId>>> = Arc::default();
        let readers: Vec<StartReader> = (0..5i64)
            .map(|p| {
                let (handle, threads) = (rt.handle().clone(), threads.clone());
                Box::new(move |tx: SourceSender| {
                    handle.spawn_blocking(move || {
                        threads.lock().unwrap().insert(std::thread::current().id());
                        for i in 0..10 {
                            let rows = batch(p * 1_000_000 + i * 1000, 1000);
                            if tx.send(SourceMessage::Batch(rows)).is_err() {
                                return;
                            }
                        }
                    });
                }) as StartReader
            })
            .collect();
        let epoch_input = EpochInput {
            readers,
            ..input(reader_from(&rt, 0))
        };
        let out = live.run_epoch(1, epoch_input).unwrap();
        assert_eq!(out.rows_read, 50_000, "workers={workers}: {out:?}");
        assert_eq!(out.delivered + out.rejected, 50_000);
        let got = dest.got.lock().unwrap().clone();
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "nothing duplicated");
        assert_eq!(got.len() as u64, out.delivered);
        assert!(
            threads.lock().unwrap().len() > 1,
            "the parts were read at once"
        );
        // No part at all: nothing read, and the epoch passes.
        let empty = EpochInput {
            readers: Vec::new(),
            ..input(reader_from(&rt, 0))
        };
        let out = live.run_epoch(2, empty).unwrap();
        assert_eq!(out.rows_read, 0);
    }
}

#[test]
fn a_failed_epoch_spends_the_long_lived_dataflow() {
    let rt = runtime();
    let dest = Arc::new(Flaky::new(0, usize::MAX, true));
    let (mut live, input) = live(spec(dest.clone(), Arc::new(Rejects::default()), 2, &rt));
    let err = live.run_epoch(1, input(reader_from(&rt, 0))).unwrap_err();
    assert!(err.0.contains("flaky: no"), "{err}");
    assert!(
        dest.aborts.load(Ordering::SeqCst) >= 1,
        "the destination was told"
    );
    let again = live.run_epoch(2, input(reader_from(&rt, 0))).unwrap_err();
    assert!(again.0.contains("failed before"), "{again}");
}

/// Maps each changed row to `op:key:value` and each delete to `delete:key`.
struct OpsMapper;

impl wharf_operators::change::ChangeMapper for OpsMapper {
    fn map_set(
        &self,
        changes: &wharf_operators::change::ChangeSet,
        _now_ms: i64,
    ) -> wharf_operators::record::MappedBatch {
        use wharf_operators::arrow::array::AsArray;
        use wharf_operators::arrow::datatypes::Int64Type;
        use wharf_operators::change::ChangeSet;
        let mut out = wharf_operators::record::MappedBatch::default();
        match changes {
            ChangeSet::Rows {
                batch,
                changes,
                keys,
                ..
            } => {
                let v = batch.column(1).as_primitive::<Int64Type>();
                for (i, (c, k)) in changes.iter().zip(keys).enumerate() {
                    let line = format!("{:?}:{k}:{}\n", c.op, v.value(i));
                    out.records.push(line.as_bytes());
                }
            }
            ChangeSet::Deletes(keys) => {
                for k in keys {
                    out.records.push(format!("delete:{k}\n").as_bytes());
                }
            }
        }
        out
    }
}

/// A change batch: (key, value, op) rows.
fn changes(rows: &[(i64, i64, &str)]) -> RecordBatch {
    use wharf_operators::arrow::array::StringArray;
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
        Field::new(wharf_operators::diff::OP_COLUMN, DataType::Utf8, false),
    ]));
    let k: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0)));
    let v: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1)));
    let op: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2)));
    RecordBatch::try_new(schema, vec![k, v, op]).unwrap()
}

#[test]
fn change_stream_epochs_are_consolidated_per_key_against_what_was_sent() {
    use wharf_operators::diff::DiffCounts;
    use wharf_operators::snapshot::RowHasher;
    let rt = runtime();
    for workers in [1, 2, 3] {
        let dest = Arc::new(Flaky::new(0, usize::MAX, false));
        let mut run = spec(dest.clone(), Arc::new(Rejects::default()), workers, &rt);
        let data = Schema::new(changes(&[]).schema().fields()[..2].to_vec());
        run.plan = Plan::Changes {
            hasher: Arc::new(RowHasher::new(&data, &["k".to_string()], &[], &[]).unwrap()),
            counts: Arc::new(DiffCounts::default()),
            held: None,
        };
        let mapper: Arc<dyn wharf_operators::change::ChangeMapper> = Arc::new(OpsMapper);
        run.sinks[0].mapper = SinkMapper::Changes(mapper);
        let (mut live, input) = live(run);
        let handle = rt.handle().clone();
        let epoch = |rows: Vec<Vec<(i64, i64, &'static str)>>| -> StartReader {
            let handle = handle.clone();
            Box::new(move |tx: SourceSender| {
                handle.spawn_blocking(move || {
                    for b in rows {
                        if tx.send(SourceMessage::Batch(changes(&b))).is_err() {
                            return;
                        }
                    }
                });
            })
        };
        let sent_with = |live: &mut LiveDataflow, e: u64, may_replay: bool, rows| {
            let before = dest.got.lock().unwrap().len();
            let epoch_input = EpochInput {
                may_replay,
                ..input(epoch(rows))
            };
            live.run_epoch(e, epoch_input).unwrap();
            assert_eq!(live.control().inflight(), 0, "every row settled");
            let mut got = dest.got.lock().unwrap()[before..].to_vec();
            got.sort();
            got.into_iter()
                .map(|l| l.trim().to_string())
                .collect::<Vec<_>>()
        };
        let sent = |live: &mut LiveDataflow, e: u64, rows| sent_with(live, e, false, rows);
        // Epoch 1: keys 1..=1000 inserted (in two batches); key 5000 inserted then deleted, as
        // two changes that no source compacted: the last, a delete, is sent.
        let first: Vec<(i64, i64, &str)> = (1..=1000).map(|k| (k, k * 10, "insert")).collect();
        let got = sent(
            &mut live,
            1,
            vec![
                first[..500].to_vec(),
                first[500..].to_vec(),
                vec![(5000, 1, "insert"), (5000, 1, "delete")],
            ],
        );
        assert_eq!(got.len(), 1001, "workers={workers}");
        assert!(got.contains(&"delete:5000".to_string()), "{got:?}");
        // Epoch 2: key 1 updated to the same value (nothing), key 2 to a new one, key 3
        // updated twice (the last wins), key 4 deleted, key 7000 (never seen) deleted.
        let got = sent(
            &mut live,
            2,
            vec![vec![
                (1, 10, "update"),
                (2, 21, "update"),
                (3, 31, "update"),
                (3, 32, "update"),
                (4, 0, "delete"),
                (7000, 0, "delete"),
            ]],
        );
        assert_eq!(
            got,
            vec!["Update:2:21", "Update:3:32", "delete:4", "delete:7000"],
            "workers={workers}"
        );
        // Epoch 3: key 2 back to its first value is a change; key 3 again 32 is not; key 4
        // inserted again is.
        let got = sent(
            &mut live,
            3,
            vec![vec![
                (2, 20, "update"),
                (3, 32, "update"),
                (4, 40, "insert"),
            ]],
        );
        assert_eq!(got, vec!["Insert:4:40", "Update:2:20"], "workers={workers}");
        // Epoch 4: keys the source saw inserted and deleted within its window. Key 8000 was
        // never sent: nothing goes. Key 4 was (epoch 3): its delete goes.
        let got = sent(
            &mut live,
            4,
            vec![vec![(8000, 0, "delete_new"), (4, 0, "delete_new")]],
        );
        assert_eq!(got, vec!["delete:4"], "workers={workers}");
        // Epoch 5 may replay what a run that did not commit delivered: the delete of key 8001,
        // inserted and deleted within the window, is sent.
        let got = sent_with(&mut live, 5, true, vec![vec![(8001, 0, "delete_new")]]);
        assert_eq!(got, vec!["delete:8001"], "workers={workers}");
    }
}

/// A table snapshot: (key, value) rows, as a change batch's first two columns.
fn table(rows: &[(i64, i64)]) -> RecordBatch {
    let b = changes(
        &rows
            .iter()
            .map(|r| (r.0, r.1, "insert"))
            .collect::<Vec<_>>(),
    );
    b.project(&[0, 1]).unwrap()
}

#[test]
fn a_long_lived_dataflow_diffs_snapshot_after_snapshot() {
    use wharf_operators::diff::{DiffCounts, DiffSpec, Emit};
    use wharf_operators::snapshot::RowHasher;
    let rt = runtime();
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let dest = Arc::new(Flaky::new(0, usize::MAX, false));
        let mut run = spec(dest.clone(), Arc::new(Rejects::default()), workers, &rt);
        let hasher =
            Arc::new(RowHasher::new(&table(&[]).schema(), &["k".to_string()], &[], &[]).unwrap());
        let spec_for = |epoch: u64, previous: Vec<std::path::PathBuf>| {
            Arc::new(DiffSpec {
                hasher: hasher.clone(),
                previous,
                pending: Vec::new(),
                next_dir: dir.path().join(format!("run-{epoch}")),
                spill_dir: dir.path().join("spill"),
                memory_budget: 1 << 20,
                emit: Emit::Changes,
                send_deletes: true,
            })
        };
        run.plan = Plan::Diff {
            spec: spec_for(0, Vec::new()),
            counts: Arc::new(DiffCounts::default()),
        };
        let mapper: Arc<dyn wharf_operators::change::ChangeMapper> = Arc::new(OpsMapper);
        run.sinks[0].mapper = SinkMapper::Changes(mapper);
        let (mut live, input) = live(run);
        let mut previous = Vec::new();
        let snapshots: Vec<Vec<(i64, i64)>> = vec![
            (1..=2000).map(|k| (k, k)).collect(),
            // 1 changed, 2000 deleted, 3000 new.
            (1..=1999)
                .map(|k| (k, if k == 1 { -1 } else { k }))
                .chain([(3000, 3)])
                .collect(),
            // Nothing changed.
            (1..=1999)
                .map(|k| (k, if k == 1 { -1 } else { k }))
                .chain([(3000, 3)])
                .collect(),
            // Empty: every key deleted.
            vec![],
        ];
        for (i, rows) in snapshots.into_iter().enumerate() {
            // Epochs far apart, as run ids are.
            let epoch = 10 * (i as u64 + 1);
            let before = dest.got.lock().unwrap().len();
            // The empty table reads no batch at all: its epoch still classifies.
            let batches = if rows.is_empty() {
                vec![]
            } else {
                vec![table(&rows)]
            };
            let mut epoch_input = input(wharf_pipelines::reader::batches_reader(batches));
            epoch_input.diff = Some(spec_for(epoch, previous.clone()));
            live.run_epoch(epoch, epoch_input).unwrap();
            assert_eq!(live.control().inflight(), 0, "every row settled");
            let mut got: Vec<String> = dest.got.lock().unwrap()[before..]
                .iter()
                .map(|l| l.trim().to_string())
                .collect();
            got.sort();
            let counts = live.counts().unwrap();
            previous = counts.parts.lock().unwrap().clone();
            match i {
                0 => assert_eq!(got.len(), 2000, "workers={workers}: all inserts"),
                1 => assert_eq!(
                    got,
                    vec!["Insert:3000:3", "Update:1:-1", "delete:2000"],
                    "workers={workers}"
                ),
                2 => assert!(got.is_empty(), "workers={workers}: {got:?}"),
                _ => {
                    assert_eq!(got.len(), 2000, "workers={workers}: every key deleted");
                    assert!(got.iter().all(|l| l.starts_with("delete:")));
                }
            }
        }
    }
}
