//! What a run finds on disk and at the destination after a crash, and how it resumes.

use std::path::PathBuf;

use wharf_operators::snapshot::PendingSnapshot;
use wharf_operators::watermark::Watermark;

use super::error::SyncError;
use super::resolve::ResolvedSync;
use crate::destination::BuiltDestination;
use crate::state::{RunRecord, RunStatus, SnapshotState, StateStore};

/// What a transactional destination stores with each run's records: enough to commit the
/// run in the state store if the process stopped between the two commits.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct RunPosition {
    /// The run record as committed.
    pub(super) run: RunRecord,
    /// Its watermark after the run.
    pub(super) watermark: Option<Watermark>,
    /// Its snapshot state (full and mirror by snapshot diff).
    pub(super) snapshot: Option<SnapshotState>,
    /// The position it read up to in a change stream that keeps the sync's position itself
    /// (a replication slot's LSN), confirmed to the stream once the run is committed.
    pub(super) lsn: Option<u64>,
}

/// Commits, in the state store, a run that `built` (a transactional destination) committed
/// but the state store did not (the process stopped in between), so the next run neither
/// resends nor skips anything.
pub(super) fn recover_from_destination(
    resolved: &ResolvedSync,
    store: &StateStore,
    built: &BuiltDestination,
    runtime: &tokio::runtime::Runtime,
) -> Result<(), SyncError> {
    let name = &resolved.sync.name;
    let derr = |e| SyncError::Destination(name.clone(), built.name.clone(), e);
    let Some(bytes) = runtime
        .block_on(built.destination.committed_position())
        .map_err(derr)?
    else {
        return Ok(());
    };
    let position: RunPosition =
        serde_json::from_slice(&bytes).map_err(|e| SyncError::RunFailed {
            permanent: false,
            sync: name.clone(),
            run_id: 0,
            reason: format!(
                "{}: its last position is not readable ({e}); remove it or use another progress topic",
                built.destination.describe()
            ),
        })?;
    let runs = store.runs(name, crate::state::MAX_RUNS_PER_SYNC)?;
    let last_committed = runs
        .iter()
        .find(|r| r.status == RunStatus::Succeeded)
        .map(|r| r.run_id)
        .unwrap_or(0);
    if position.run.run_id <= last_committed || position.run.sync != *name {
        return Ok(());
    }
    tracing::warn!(
        sync = %name,
        run = position.run.run_id,
        destination = %built.destination.describe(),
        "the last run was committed by the destination but not in the state store (the process stopped in between); committing it now"
    );
    let stream = resolved
        .warehouse
        .change_source(name, &resolved.source, &resolved.sync.key_columns())
        .filter(|s| s.keeps_position());
    if let (Some(lsn), Some(stream)) = (position.lsn, stream) {
        stream
            .confirm(Watermark::from_position(lsn))
            .map_err(|e| SyncError::Warehouse(name.clone(), e))?;
    }
    let mut run = position.run;
    run.error = Some("committed on restart from the destination's position".into());
    store.commit_run(run, position.watermark, position.snapshot.as_ref())?;
    Ok(())
}

/// The committed snapshot's part files as paths.
pub(super) fn committed_parts(
    committed: Option<&SnapshotState>,
    state_dir: &std::path::Path,
) -> Vec<PathBuf> {
    committed
        .iter()
        .flat_map(|c| c.parts.iter().map(|p| state_dir.join(p)))
        .collect()
}

/// The snapshots of runs after the committed one (`run-<id>` folders of `dir` with a larger
/// id) that may have delivered changes without committing: killed or failed runs. Each stays
/// until a run commits, and every diff until then treats its keys as possibly delivered, so a
/// row such a run sent and the table then lost is deleted, and a value it sent that the table
/// no longer has is corrected. With `clean_up`, folders of no use are removed: those of runs
/// up to the committed one (a crash after the commit left them) and those of runs that
/// finished no part (they sent nothing).
pub(super) fn pending_snapshots(
    sync: &str,
    dir: &std::path::Path,
    committed: Option<&SnapshotState>,
    clean_up: bool,
) -> Result<Vec<PendingSnapshot>, SyncError> {
    let committed_run = committed.map(|c| c.run_id);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut runs: Vec<(u64, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_prefix("run-")?.parse::<u64>().ok()?;
            Some((id, e.path()))
        })
        .collect();
    runs.sort();
    let mut pending = Vec::new();
    for (id, path) in runs {
        if Some(id) == committed_run {
            continue;
        }
        let loaded = if committed_run.is_some_and(|c| id < c) {
            None
        } else {
            PendingSnapshot::load(&path).map_err(|e| SyncError::UnreadableSnapshot {
                sync: sync.to_string(),
                path: path.display().to_string(),
                message: e.to_string(),
            })?
        };
        match loaded {
            Some(p) => pending.push(p),
            None if clean_up => {
                if let Err(err) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(path = %path.display(), error = %err, "cannot remove an old snapshot");
                }
            }
            None => {}
        }
    }
    if !pending.is_empty() {
        tracing::info!(
            sync,
            runs = pending.len(),
            "runs that did not commit may have delivered changes: their keys are checked again"
        );
    }
    Ok(pending)
}

/// Removes the snapshot folders of `dir` other than `run-<keep>` (superseded snapshots and
/// those of runs that did not commit, once a later run has). Best effort: a leftover only
/// costs disk space.
pub(super) fn remove_snapshots_except(dir: &std::path::Path, keep: Option<u64>) {
    let keep = keep.map(|k| format!("run-{k}"));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("run-") && Some(&name) != keep.as_ref() {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(path = %e.path().display(), error = %err, "cannot remove an old snapshot");
            }
        }
    }
}
