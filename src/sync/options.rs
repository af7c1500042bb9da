//! What a caller asks of a run (options, live progress, volume checks) and what it reports.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use wharf_operators::dataflow::RunControl;
use wharf_operators::watermark::Watermark;
use wharf_pipelines::cluster::ClusterSpec;
use wharf_pipelines::run::RunOutcome;

use super::capture::MAX_CHANGES_PER_POLL;
use super::error::{SyncError, VolumeAnomaly};
use crate::state::{RunRecord, RunStatus, StateStore};

/// Options of one `wharf sync`.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Timely worker threads.
    pub workers: usize,
    /// Show a progress bar (terminal) or log lines.
    pub progress: bool,
    /// Testing hook: exit the process after delivery, before any commit (a simulated crash).
    pub crash_before_commit: bool,
    /// Testing hook: exit the process after the transactional destinations committed, before
    /// the state store commits (a simulated crash).
    pub crash_after_destination_commit: bool,
    /// Testing hook: exit the process after a PostgreSQL slot was confirmed, before the state
    /// store commits (a simulated crash).
    pub crash_after_slot_confirm: bool,
    /// Continuous mode: a change-capture poll that finds nothing records no run.
    pub skip_idle: bool,
    /// Where the running run is published (for the service's progress and cancellation).
    pub live: Option<LiveSlot>,
    /// Compare the run's row count with the sync's recent runs before sending.
    pub volume: Option<VolumeCheck>,
    /// A change-stream run reads only transactions committed before this position (set by
    /// [`run_sync`] while it drains the stream up to where it stood at its start); set, an
    /// append run that finds nothing records no run (the last run took the rest).
    pub capture_upto: Option<Watermark>,
    /// Most changes a change-stream run reads (whole transactions: a larger one comes whole).
    pub max_changes: usize,
    /// Most rows an append run reads (more where rows share the last cursor value): a larger
    /// backlog is read in several runs, each committed, in cursor order.
    pub max_rows: u64,
    /// One process of a cluster (`--processes`, `--process`, `--hostfile`): process 0 runs
    /// the sync and commits, the others [`super::follow`] it.
    pub cluster: Option<ClusterSpec>,
}

/// The testing hooks' simulated crash: where the hook is `on`, the process exits at once
/// with `code`, leaving whatever was not committed by `when` uncommitted.
pub(crate) fn crash_if(on: bool, when: &str, code: i32, run_id: u64) {
    if on {
        eprintln!("wharf: simulated crash {when} (run {run_id})");
        std::process::exit(code)
    }
}

/// The running run of a sync, as the service sees it.
#[derive(Debug, Clone)]
pub struct LiveRun {
    /// The run.
    pub run_id: u64,
    /// When it started.
    pub started: std::time::Instant,
    /// Rows it will read, when the warehouse could count them.
    pub total: Option<u64>,
    /// Its counters; [`RunControl::cancel`] stops it.
    pub control: Arc<RunControl>,
}

/// Holds a sync's [`LiveRun`] from the start of a run; the run leaves it there when it ends,
/// for the caller to read its final counters and clear it.
pub type LiveSlot = Arc<Mutex<Option<LiveRun>>>;

/// The volume-anomaly check: a run is anomalous when it would read more than `multiple`
/// times the average rows of the sync's last `window` successful runs (once there are
/// `min_runs` of them).
#[derive(Debug, Clone)]
pub struct VolumeCheck {
    /// The multiple (0: off).
    pub multiple: f64,
    /// Successful runs averaged.
    pub window: usize,
    /// Successful runs needed first.
    pub min_runs: usize,
    /// Do not send an anomalous run ([`SyncError::Anomaly`]) instead of sending it.
    pub pause: bool,
}

impl VolumeCheck {
    /// Whether `rows` is anomalous for `sync` given its history in `store`.
    pub(super) fn check(
        &self,
        store: &StateStore,
        sync: &str,
        rows: u64,
    ) -> Result<Option<VolumeAnomaly>, SyncError> {
        if self.multiple <= 0.0 {
            return Ok(None);
        }
        let recent: Vec<u64> = store
            .runs(sync, crate::state::MAX_RUNS_PER_SYNC)?
            .into_iter()
            .filter(|r| r.status == RunStatus::Succeeded)
            .take(self.window)
            .map(|r| r.rows_read)
            .collect();
        if recent.is_empty() || recent.len() < self.min_runs {
            return Ok(None);
        }
        let average = recent.iter().sum::<u64>() as f64 / recent.len() as f64;
        Ok(
            (rows as f64 > self.multiple * average.max(1.0)).then_some(VolumeAnomaly {
                rows,
                average,
                multiple: self.multiple,
            }),
        )
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            workers: 1,
            progress: false,
            crash_before_commit: false,
            crash_after_destination_commit: false,
            crash_after_slot_confirm: false,
            skip_idle: false,
            live: None,
            volume: None,
            capture_upto: None,
            max_changes: MAX_CHANGES_PER_POLL,
            max_rows: MAX_ROWS_PER_RUN,
            cluster: None,
        }
    }
}

/// Rows an append run reads at most, by default (see [`SyncOptions::max_rows`]).
pub const MAX_ROWS_PER_RUN: u64 = 1_000_000;

/// What a run did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// The committed run record.
    pub run: RunRecord,
    /// Counters.
    pub outcome: RunOutcome,
    /// Where rejects were written (if any).
    pub rejects_path: PathBuf,
    /// The run was sent although [`SyncOptions::volume`] found it anomalous.
    pub anomaly: Option<VolumeAnomaly>,
    /// A change-stream run stopped at its change limit: more changes wait, up to this
    /// position of the stream (its head when the run polled). An append run that stopped at
    /// its row limit: more rows wait past this cursor value.
    pub backlog: Option<Watermark>,
}
