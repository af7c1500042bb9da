//! A snapshot diff run on its own, with no destination: `wharf preview --changes` (what the next
//! run of a full or mirror sync would send), tests and benchmarks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::dataflow::operators::{Inspect, Probe};
use wharf_operators::arrow::array::RecordBatch;
use wharf_operators::change::ChangeSet;
use wharf_operators::dataflow::{poll_source, RunControl, StartReader};
use wharf_operators::diff::{snapshot_diff, DiffCounts, DiffEpochs, DiffSpec};

/// Runs one snapshot diff on its own (no destination): `batches` are the snapshot, `spec`
/// says where the previous state is and where the new one goes. Returns every change set, in
/// no particular order, and the counts. For tests and benchmarks.
pub fn diff_batches(
    workers: usize,
    batches: Vec<RecordBatch>,
    spec: DiffSpec,
) -> Result<(Vec<ChangeSet>, Arc<DiffCounts>), String> {
    diff_run(workers, crate::reader::batches_reader(batches), spec, true)
}

/// Runs one snapshot diff on its own, reading with `reader`; change sets are returned when
/// `collect` is set (else only counted: a dry run).
pub fn diff_run(
    workers: usize,
    reader: StartReader,
    spec: DiffSpec,
    collect: bool,
) -> Result<(Vec<ChangeSet>, Arc<DiffCounts>), String> {
    let control = RunControl::new(usize::MAX / 4);
    let counts = Arc::new(DiffCounts::default());
    let epochs = DiffEpochs::default();
    epochs.announce(1, Arc::new(spec))?;
    let out: Arc<Mutex<Vec<ChangeSet>>> = Arc::default();
    let reader = Arc::new(Mutex::new(Some(reader)));
    let config = if workers <= 1 {
        timely::Config::thread()
    } else {
        timely::Config::process(workers)
    };
    let (ctl, cnt, sink) = (control.clone(), counts.clone(), out.clone());
    let guards = timely::execute(config, move |worker| {
        let start = if worker.index() == 0 {
            reader.lock().ok().and_then(|mut r| r.take())
        } else {
            None
        };
        let (ctl, cnt, sink, epochs) = (ctl.clone(), cnt.clone(), sink.clone(), epochs.clone());
        let probe = worker.dataflow::<u64, _, _>(|scope| {
            let rows = poll_source(scope, 1, start, ctl.clone());
            let (probe, _) = snapshot_diff(rows, epochs, cnt, ctl.clone(), None)
                .inspect(move |c: &ChangeSet| {
                    if collect {
                        if let Ok(mut s) = sink.lock() {
                            s.push(c.clone());
                        }
                    }
                })
                .probe();
            probe
        });
        while probe.less_equal(&1) && ctl.failure().is_none() {
            worker.step_or_park(Some(Duration::from_millis(10)));
        }
    })?;
    for r in guards.join() {
        r.map_err(|e| format!("worker failed: {e}"))?;
    }
    if let Some(f) = control.failure() {
        return Err(f);
    }
    let sets = std::mem::take(&mut *out.lock().map_err(|e| e.to_string())?);
    Ok((sets, counts))
}
