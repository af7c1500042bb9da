//! What every dataflow of a sync is wired from, below its source ([`crate::live`]'s
//! `epoch_source`; `wharf preview --changes`'s `poll_source`):
//! `→ map_records → batch_sink` (append), or
//! `→ snapshot_diff → map_changes → batch_sink` (full and mirror), or
//! `→ consolidate_changes → stream_changes → map_changes → batch_sink` (a source's own change
//! stream, consolidated per key against what the dataflow sent before),
//! with delivery on tokio.
//!
//! A sync with several destinations (fan-out) has one `map_* → batch_sink` branch and one
//! delivery loop per destination, all fed by the same rows or changes; each destination has
//! its own mapper, request limits and retry policy.
//!
//! The run is complete when every sink's output frontier passes the run's epoch, which
//! happens only after every destination acknowledged every record (or it was rejected with a
//! reason). A destination that fails for good fails the whole run. Committing the run's
//! position is the caller's job and must happen only after the epoch returned `Ok`
//! ([`crate::live::LiveDataflow::run_epoch`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use wharf_operators::change::ChangeMapper;
use wharf_operators::dataflow::{
    batch_sink, map_records, ArrowBatch, BatchLimits, MapperAt, RejectSink, RunControl, SinkRequest,
};
use wharf_operators::diff::{
    consolidate_changes, map_changes, snapshot_diff, stream_changes, DiffCounts, DiffEpochs,
    DiffSpec, HeldStore, ReplayFree,
};
use wharf_operators::snapshot::RowHasher;
use wharf_operators::timely;
use wharf_operators::timely::dataflow::operators::probe::Handle as ProbeHandle;
use wharf_operators::timely::dataflow::operators::Probe;
use wharf_operators::timely::dataflow::Stream;
use wharf_operators::RecordMapper;

use crate::delivery::{delivery_loop, RetryPolicy};
use crate::destination::Destination;

/// One destination of a run.
#[derive(Clone)]
pub struct SinkSpec {
    /// Where records go.
    pub destination: Arc<dyn Destination>,
    /// Request size limits of the destination.
    pub limits: BatchLimits,
    /// Retry and concurrency policy.
    pub policy: RetryPolicy,
    /// Rows or changes → this destination's records; must match the [`Plan`].
    pub mapper: SinkMapper,
}

/// How a destination's records are made.
#[derive(Clone)]
pub enum SinkMapper {
    /// From rows ([`Plan::Append`]).
    Records(Arc<dyn RecordMapper>),
    /// From changes ([`Plan::Diff`], [`Plan::Changes`]).
    Changes(Arc<dyn ChangeMapper>),
}

/// The shape of a run's dataflow.
#[derive(Clone)]
pub enum Plan {
    /// Every row read is mapped and sent (append and one-time syncs).
    Append,
    /// The rows are a snapshot, diffed against the last committed one; changes are sent.
    Diff {
        /// The diff's setup.
        spec: Arc<DiffSpec>,
        /// Its counts and new state files.
        counts: Arc<DiffCounts>,
    },
    /// The rows are the source's own changes (batches with
    /// [`wharf_operators::diff::OP_COLUMN`] last); each is sent as it is.
    Changes {
        /// Key texts of the rows.
        hasher: Arc<RowHasher>,
        /// Counts of the changes.
        counts: Arc<DiffCounts>,
        /// Where the held trace outlives the dataflow (none: it starts empty).
        held: Option<Arc<HeldStore>>,
    },
}

/// What a finished run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunOutcome {
    /// Rows read from the warehouse.
    pub rows_read: u64,
    /// Records the destination acknowledged.
    pub delivered: u64,
    /// Rows rejected, with reasons in the rejects file.
    pub rejected: u64,
    /// Uncompressed bytes delivered.
    pub bytes_sent: u64,
    /// Requests sent (including retries).
    pub requests: u64,
    /// Retries after transient failures.
    pub retries: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl RunOutcome {
    /// Adds the counters of `other` (another process's part of the same epoch) to these.
    pub fn add(&mut self, other: &RunOutcome) {
        self.rows_read += other.rows_read;
        self.delivered += other.delivered;
        self.rejected += other.rejected;
        self.bytes_sent += other.bytes_sent;
        self.requests += other.requests;
        self.retries += other.retries;
    }
}

/// The run failed; nothing of it may be committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("run failed: {0}")]
pub struct RunError(pub String);

/// Checks that every sink's mapper fits the plan (rows or changes).
pub(crate) fn check_sinks(plan: &Plan, sinks: &[SinkSpec]) -> Result<(), RunError> {
    if sinks.is_empty() {
        return Err(RunError("no destination".into()));
    }
    let changes_plan = !matches!(plan, Plan::Append);
    for sink in sinks {
        if matches!(sink.mapper, SinkMapper::Changes(_)) != changes_plan {
            return Err(RunError(format!(
                "{}: its mapper does not match the run's plan",
                sink.destination.describe()
            )));
        }
    }
    Ok(())
}

/// One delivery loop per sink on `runtime`, and the senders the sinks hand requests to.
pub(crate) fn spawn_deliveries(
    sinks: &[SinkSpec],
    workers: usize,
    rejects: &Arc<dyn RejectSink>,
    control: &Arc<RunControl>,
    runtime: &tokio::runtime::Handle,
) -> (Vec<UnboundedSender<SinkRequest>>, Vec<JoinHandle<()>>) {
    // Partial requests wait in the sinks; leave room for all of them (see `raise_inflight_limit`).
    let room: usize = sinks.iter().map(|s| s.limits.max_records * 2).sum();
    control.raise_inflight_limit(workers.max(1) * room);
    sinks
        .iter()
        .map(|sink| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let task = runtime.spawn(delivery_loop(
                rx,
                sink.destination.clone(),
                sink.policy.clone(),
                rejects.clone(),
                control.clone(),
            ));
            (tx, task)
        })
        .unzip()
}

/// Timely's configuration for `workers` threads in this process.
pub(crate) fn timely_config(workers: usize) -> timely::Config {
    if workers <= 1 {
        timely::Config::thread()
    } else {
        timely::Config::process(workers)
    }
}

/// How one destination's branch gets its mapper for an epoch.
#[derive(Clone)]
pub(crate) enum Branch {
    /// From rows.
    Records(MapperAt<dyn RecordMapper>),
    /// From changes.
    Changes(MapperAt<dyn ChangeMapper>),
}

/// What hangs below a dataflow's source: the plan's operators, then one
/// `map → batch_sink` branch per destination.
pub(crate) struct Wiring {
    /// The setups of a snapshot diff's epochs (a run's dataflow has one).
    pub diff_epochs: DiffEpochs,
    /// Which change-stream epoch replays nothing (a run's dataflow: none is known to).
    pub replay_free: ReplayFree,
    pub plan: Plan,
    pub branches: Vec<(Branch, BatchLimits)>,
    pub senders: Vec<UnboundedSender<SinkRequest>>,
    pub rejects: Arc<dyn RejectSink>,
    pub control: Arc<RunControl>,
    /// In a cluster: the workers of each process (rows stay in the process that read them).
    pub local: Option<usize>,
}

impl Wiring {
    /// Wires the operators below `rows`; the probe's frontier passes an epoch once every
    /// destination acknowledged all of it.
    pub(crate) fn wire<'s>(self, rows: Stream<'s, u64, Vec<ArrowBatch>>) -> ProbeHandle<u64> {
        let ctl = self.control;
        let changes = match self.plan {
            Plan::Append => None,
            Plan::Diff { counts, .. } => Some(snapshot_diff(
                rows.clone(),
                self.diff_epochs,
                counts,
                ctl.clone(),
                self.local,
            )),
            Plan::Changes {
                hasher,
                counts,
                held,
            } => {
                let consolidated = consolidate_changes(
                    rows.clone(),
                    hasher.clone(),
                    self.replay_free,
                    held,
                    ctl.clone(),
                );
                Some(stream_changes(consolidated, hasher, counts, ctl.clone()))
            }
        };
        let probe = ProbeHandle::new();
        for (i, ((branch, limits), tx)) in self.branches.into_iter().zip(self.senders).enumerate() {
            let copy = i > 0;
            let records = match (&changes, branch) {
                (None, Branch::Records(m)) => {
                    map_records(rows.clone(), m, ctl.clone(), copy, self.local)
                }
                (Some(changes), Branch::Changes(m)) => {
                    map_changes(changes.clone(), m, ctl.clone(), copy)
                }
                // Checked by `check_sinks`.
                _ => continue,
            };
            batch_sink(records, limits, tx, self.rejects.clone(), ctl.clone()).probe_with(&probe);
        }
        probe
    }
}

/// Flushes every destination; a failure aborts them all.
pub(crate) fn flush_all(
    sinks: &[SinkSpec],
    runtime: &tokio::runtime::Handle,
) -> Result<(), RunError> {
    for sink in sinks {
        let d = &sink.destination;
        if let Err(e) = runtime.block_on(d.flush()) {
            abort_all(sinks, runtime);
            return Err(RunError(format!("{}: {e}", d.describe())));
        }
    }
    Ok(())
}

/// What the run (or epoch) did, from its counters.
pub(crate) fn outcome(control: &RunControl, started: Instant) -> RunOutcome {
    let c = &control.counters;
    RunOutcome {
        rows_read: c.rows_read.load(Ordering::Relaxed),
        delivered: c.records_delivered.load(Ordering::Relaxed),
        rejected: c.rows_rejected.load(Ordering::Relaxed),
        bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
        requests: c.requests.load(Ordering::Relaxed),
        retries: c.retries.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

/// Tells every destination that the run failed (transactional ones discard what it sent).
pub(crate) fn abort_all(sinks: &[SinkSpec], runtime: &tokio::runtime::Handle) {
    for sink in sinks {
        runtime.block_on(sink.destination.abort());
    }
}
