//! The commit protocol of a delivered run, in the order that makes a crash at any point safe:
//! the transactional destinations commit the records with the run's position (a crash after
//! this is repaired from the destination by `recovery`), the PostgreSQL slot is confirmed (a
//! crash before this replays the changes, harmlessly), and the state store commits the
//! watermark, snapshot state and run record in one transaction. And the record of a run that
//! did not deliver everything: failed or cancelled, nothing committed.

use std::sync::atomic::Ordering::Relaxed;

use wharf_operators::dataflow::RunControl;
use wharf_operators::watermark::Watermark;

use super::error::SyncError;
use super::options::{crash_if, SyncOptions};
use super::recovery::RunPosition;
use crate::destination::BuiltDestination;
use crate::state::{RunRecord, RunStatus, StateError, StateStore};
use crate::warehouse::ChangeSource;

/// Commits `position` (a run every destination acknowledged) everywhere, or records it as
/// failed and commits nothing; `stream` is the change stream the run read, if any.
pub(super) fn commit(
    store: &StateStore,
    built: &[BuiltDestination],
    runtime: &tokio::runtime::Runtime,
    name: &str,
    position: RunPosition,
    stream: Option<&dyn ChangeSource>,
    options: &SyncOptions,
) -> Result<RunRecord, SyncError> {
    let encoded = serde_json::to_vec(&position).unwrap_or_default();
    let RunPosition {
        run,
        watermark,
        snapshot,
        lsn,
    } = position;
    for b in built.iter().filter(|b| b.destination.is_transactional()) {
        if let Err(e) = runtime.block_on(b.destination.commit(&encoded)) {
            for b in built {
                runtime.block_on(b.destination.abort());
            }
            let reason = format!("{}: {e}", b.destination.describe());
            return Err(failed_uncommitted(store, run, name, reason)?);
        }
    }
    let when = "after the destinations committed, before the state store";
    crash_if(options.crash_after_destination_commit, when, 71, run.run_id);
    if let (Some(stream), Some(lsn)) = (stream, lsn) {
        // Delivered: the slot may release these changes. A crash before this line replays
        // them on the next run, which is harmless.
        if let Err(e) = stream.confirm(Watermark::from_position(lsn)) {
            let reason = format!("delivered, but the slot could not be advanced: {e}");
            return Err(failed_uncommitted(store, run, name, reason)?);
        }
        let when = "after the slot was confirmed, before the state store";
        crash_if(options.crash_after_slot_confirm, when, 72, run.run_id);
    }
    Ok(store.commit_run(run, watermark, snapshot.as_ref())?)
}

/// Records `run`, which did not deliver everything (`reason`), as cancelled or failed with
/// what it got done, commits nothing, and returns the error that says so. The run's snapshot
/// folder stays: it may have delivered changes, which the next diff must know (see
/// `pending_snapshots`).
pub(super) fn record_failure(
    store: &StateStore,
    mut run: RunRecord,
    control: &RunControl,
    name: &str,
    reason: String,
) -> Result<SyncError, StateError> {
    let c = &control.counters;
    run.rows_read = c.rows_read.load(Relaxed);
    run.delivered = c.records_delivered.load(Relaxed);
    run.rejected = c.rows_rejected.load(Relaxed);
    run.bytes_sent = c.bytes_sent.load(Relaxed);
    let run_id = run.run_id;
    let cancelled = control.is_cancelled();
    let status = if cancelled {
        RunStatus::Cancelled
    } else {
        RunStatus::Failed
    };
    store.end_run_uncommitted(run, status, Some(reason.clone()))?;
    Ok(if cancelled {
        SyncError::Cancelled {
            sync: name.to_string(),
            run_id,
            reason,
        }
    } else {
        SyncError::RunFailed {
            permanent: control.is_permanent(),
            sync: name.to_string(),
            run_id,
            reason,
        }
    })
}

/// Records `run` as failed without committing anything, for `reason`, and returns the
/// (transient: the next run repeats the work) error that says so.
fn failed_uncommitted(
    store: &StateStore,
    run: RunRecord,
    name: &str,
    reason: String,
) -> Result<SyncError, StateError> {
    let run_id = run.run_id;
    store.end_run_uncommitted(run, RunStatus::Failed, Some(reason.clone()))?;
    Ok(SyncError::RunFailed {
        permanent: false,
        sync: name.to_string(),
        run_id,
        reason,
    })
}
