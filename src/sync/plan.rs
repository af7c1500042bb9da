//! What a run's dataflow does with the rows it reads (`pipelines::run::Plan`: map them as
//! they are, diff them against the committed snapshot, or take a change stream's changes),
//! and the sink of each destination with its mapper.

use std::path::Path;
use std::sync::Arc;

use wharf_operators::diff::{DiffCounts, DiffSpec, Emit, HeldStore};
use wharf_operators::envelope::{Envelope, EnvelopeRecords};
use wharf_operators::RecordMapper;
use wharf_pipelines::run::{Plan, SinkMapper, SinkSpec};

use super::error::SyncError;
use super::recovery::{committed_parts, pending_snapshots};
use super::resolve::{change_mapper, ResolvedSync};
use crate::config::{Config, SyncMode, TableType};
use crate::destination::BuiltDestination;
use crate::state::SnapshotState;

/// Where a run's snapshot state is and goes.
pub(super) struct PlanInput<'a> {
    /// The state directory.
    pub(super) state_dir: &'a Path,
    /// The committed snapshot.
    pub(super) committed: Option<&'a SnapshotState>,
    /// The sync's snapshot folders.
    pub(super) snapshots_dir: &'a Path,
    /// This run's snapshot folder.
    pub(super) next_dir: &'a Path,
    /// The run reads a change stream's changes (not rows).
    pub(super) streamed: bool,
}

/// The sinks of `built`: each destination with the mapper its records need (`envelope`: the
/// change envelope of destinations that take one).
pub(super) fn sink_specs(
    config: &Config,
    resolved: &ResolvedSync,
    built: &[BuiltDestination],
    envelope: &Envelope,
) -> Result<Vec<SinkSpec>, SyncError> {
    let name = &resolved.sync.name;
    built
        .iter()
        .map(|b| {
            let env = b.envelope.then(|| envelope.clone());
            let mapper = match &resolved.hasher {
                None => {
                    let events = resolved
                        .events
                        .clone()
                        .ok_or_else(|| SyncError::Unsupported {
                            sync: name.to_string(),
                            what: "append without an events mapping".into(),
                        })?;
                    SinkMapper::Records(match env {
                        Some(env) => Arc::new(EnvelopeRecords::new(events, env)),
                        None => events as Arc<dyn RecordMapper>,
                    })
                }
                Some(_) => SinkMapper::Changes(change_mapper(config, resolved, &b.name, env)?),
            };
            Ok(SinkSpec {
                destination: b.destination.clone(),
                limits: b.limits,
                policy: b.policy.clone(),
                mapper,
            })
        })
        .collect()
}

/// Where a change-stream sync's held trace is kept (see [`HeldStore`]).
pub(crate) fn held_dir(state_dir: &Path, sync: &str) -> std::path::PathBuf {
    state_dir.join("held").join(sync)
}

/// The run's plan (a dataflow built for it counts its diff in the plan's counts).
pub(super) fn plan(resolved: &ResolvedSync, input: PlanInput<'_>) -> Result<Plan, SyncError> {
    let sync = &resolved.sync;
    let name = &sync.name;
    let Some(hasher) = &resolved.hasher else {
        return Ok(Plan::Append);
    };
    let counts = Arc::new(DiffCounts::default());
    let diff = |spec: DiffSpec| Plan::Diff {
        spec: Arc::new(spec),
        counts: counts.clone(),
    };
    let plan = if input.streamed {
        Plan::Changes {
            hasher: hasher.clone(),
            counts: counts.clone(),
            held: Some(Arc::new(HeldStore::new(
                held_dir(input.state_dir, name),
                hasher.layout_id(),
                input.committed.map_or(0, |c| c.run_id),
            ))),
        }
    } else if sync.mode == SyncMode::Append {
        // Append of keyed rows: every row read is sent (its key's latest); no state is kept.
        let scratch = input.state_dir.join("tmp").join(format!("{name}-append"));
        let _ = std::fs::remove_dir_all(&scratch);
        diff(DiffSpec {
            hasher: hasher.clone(),
            previous: Vec::new(),
            pending: Vec::new(),
            next_dir: scratch.join("state"),
            spill_dir: scratch.join("spill"),
            memory_budget: 64 << 20,
            emit: Emit::All,
            send_deletes: false,
        })
    } else {
        let spill_dir = input.state_dir.join("tmp").join(name);
        let _ = std::fs::remove_dir_all(&spill_dir);
        diff(DiffSpec {
            hasher: hasher.clone(),
            previous: committed_parts(input.committed, input.state_dir),
            pending: pending_snapshots(name, input.snapshots_dir, input.committed, true)?,
            next_dir: input.next_dir.to_path_buf(),
            spill_dir,
            memory_budget: 64 << 20,
            emit: match (sync.table_type, sync.resend_all) {
                (TableType::Lookup, _) => Emit::AllIfChanged,
                (_, true) => Emit::All,
                (_, false) => Emit::Changes,
            },
            send_deletes: sync.mode == SyncMode::Mirror,
        })
    };
    Ok(plan)
}
