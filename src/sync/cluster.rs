//! A sync run by a cluster of processes (`wharf sync --processes P --process I --hostfile F`,
//! timely's cluster mode; see `wharf_pipelines::cluster`). Process 0 runs the sync as one
//! process would, owns the state store and commits; it describes each epoch (its run, its
//! filter, the conditions of its parts) to the other processes, which read their parts and
//! deliver them with their own connections to the destinations. Part `i` of an epoch is read
//! by worker `i mod (P × W)` of the cluster, whose process is that number divided by `W`.
//!
//! What runs as a cluster today: append and one-time events syncs, and full, mirror and
//! one-time syncs diffed against their last snapshot (events, user and group profiles), into
//! destinations that are not transactional. A snapshot diff's state is written by every
//! worker into the run's snapshot folder; the other processes are told where process 0 finds
//! the committed and pending snapshots, so every process needs the state folder at the same
//! path (one machine, or storage every machine mounts). The others (change streams, lookup
//! tables, profile history, keyed append) are refused with [`SyncError::Unsupported`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use wharf_operators::dataflow::StartReader;
use wharf_operators::diff::{DiffCounts, DiffSpec, Emit};
use wharf_operators::envelope::Envelope;
use wharf_operators::snapshot::{PendingSnapshot, RowHasher};
use wharf_operators::watermark::Watermark;
use wharf_pipelines::cluster::ClusterSpec;
use wharf_pipelines::live::{EpochInput, LiveDataflow, LiveSpec};
use wharf_pipelines::run::Plan;

use super::error::SyncError;
use super::options::SyncOptions;
use super::plan::sink_specs;
use super::read::{part_reader, Read};
use super::resolve::{build_destination, resolve, ResolvedSync};
use crate::config::{ChangeCapture, Config, DestinationConfig, SyncMode, TableType};
use crate::destination::{table_type_name, BuiltDestination};
use crate::rejects::{RejectsFile, RunLogs};
use crate::warehouse::{PartRead, Partition};

/// What process 0 tells the others about an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct EpochDescription {
    /// The run (the records' envelope and dedup keys carry it).
    pub run_id: u64,
    /// `WHERE …` (or empty): the rows the epoch reads.
    pub filter: String,
    /// The conditions of its parts; empty: one part, every row the filter keeps.
    pub parts: Vec<String>,
    /// Wall clock for the mapping's "too far in the future" check.
    pub now_ms: i64,
    /// A snapshot diff's setup (its key hasher each process makes from the sync).
    pub diff: Option<DiffSetup>,
}

/// A snapshot diff epoch's setup, as process 0 made it ([`DiffSpec`] but the hasher and the
/// spill folder, which each process has its own of).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct DiffSetup {
    previous: Vec<PathBuf>,
    pending: Vec<PendingSnapshot>,
    next_dir: PathBuf,
    memory_budget: usize,
    emit: Emit,
    send_deletes: bool,
}

impl DiffSetup {
    fn of(spec: &DiffSpec) -> DiffSetup {
        DiffSetup {
            previous: spec.previous.clone(),
            pending: spec.pending.clone(),
            next_dir: spec.next_dir.clone(),
            memory_budget: spec.memory_budget,
            emit: spec.emit,
            send_deletes: spec.send_deletes,
        }
    }

    /// The spec of this setup for process `process`.
    fn spec(&self, hasher: Arc<RowHasher>, spill_dir: PathBuf) -> DiffSpec {
        DiffSpec {
            hasher,
            previous: self.previous.clone(),
            pending: self.pending.clone(),
            next_dir: self.next_dir.clone(),
            spill_dir,
            memory_budget: self.memory_budget,
            emit: self.emit,
            send_deletes: self.send_deletes,
        }
    }
}

/// Refuses what a cluster does not run yet (see the module's text).
pub(super) fn check_supported(
    resolved: &ResolvedSync,
    built: &[BuiltDestination],
) -> Result<(), SyncError> {
    let sync = &resolved.sync;
    let unsupported = |what: &str| SyncError::Unsupported {
        sync: sync.name.clone(),
        what: format!(
            "{what} across processes (a cluster runs append and one-time syncs read by an \
             append cursor or whole; run it in one process, with --workers)"
        ),
    };
    if sync.table_type == TableType::Lookup {
        return Err(unsupported(
            "a lookup table (replaced whole, in one request)",
        ));
    }
    if sync.mapping.history_start_column.is_some() {
        return Err(unsupported("a profile history table"));
    }
    if resolved.hasher.is_some() && !sync.diffs_snapshots() {
        return Err(unsupported(&format!(
            "a keyed {} table in mode = \"{}\"",
            table_type_name(sync.table_type),
            format!("{:?}", sync.mode).to_lowercase()
        )));
    }
    // Refused before the stream is opened (a PostgreSQL slot would be created for nothing).
    let may_stream = sync.mode == SyncMode::Mirror
        && sync.change_capture != ChangeCapture::Snapshot
        && resolved
            .warehouse
            .change_source(&sync.name, &resolved.source, &sync.key_columns())
            .is_some();
    if may_stream {
        return Err(unsupported(&format!(
            "a mirror from {}'s change stream (change_capture = \"snapshot\" diffs snapshots, \
             which runs across processes)",
            resolved.warehouse_type
        )));
    }
    if let Some(b) = built.iter().find(|b| b.destination.is_transactional()) {
        return Err(unsupported(&format!(
            "a transactional destination ({})",
            b.destination.describe()
        )));
    }
    Ok(())
}

/// The description of an epoch of `run_id` of `plan` reading `read`, in `parts` parts at most.
pub(super) fn describe(
    resolved: &ResolvedSync,
    plan: &Plan,
    read: &Read,
    run_id: u64,
    now_ms: i64,
    parts: usize,
) -> Result<EpochDescription, SyncError> {
    let diff = match plan {
        Plan::Diff { spec, .. } => Some(DiffSetup::of(spec)),
        _ => None,
    };
    let werr = |e| SyncError::Warehouse(resolved.sync.name.clone(), e);
    let wh = &resolved.warehouse;
    let filter = match read {
        Read::After { cursor, from, upto } => {
            let filter = wh.after_filter(&cursor.0, &cursor.1, *from);
            match upto {
                Some(upto) => wh.upto_filter(&filter, &cursor.0, &cursor.1, *upto),
                None => filter,
            }
        }
        Read::Snapshot => String::new(),
        Read::Nothing => {
            return Ok(EpochDescription {
                run_id,
                filter: String::new(),
                parts: vec!["FALSE".into()],
                now_ms,
                diff,
            })
        }
        Read::Polled(_) | Read::FirstCapture { .. } => {
            return Err(SyncError::Unsupported {
                sync: resolved.sync.name.clone(),
                what: "a change stream across processes".into(),
            })
        }
    };
    let parts = wh
        .part_conditions(&resolved.source, &resolved.sync.key_columns(), parts)
        .map_err(werr)?;
    Ok(EpochDescription {
        run_id,
        filter,
        parts,
        now_ms,
        diff,
    })
}

/// The readers of the parts of `epoch` that this process's `workers` workers read, in order
/// (the dataflow hands them to its workers round robin). The greatest cursor value read goes
/// into `watermark`.
pub(super) fn process_readers(
    resolved: &ResolvedSync,
    epoch: &EpochDescription,
    cluster: &ClusterSpec,
    workers: usize,
    watermark: &Arc<Mutex<Option<Watermark>>>,
    runtime: &tokio::runtime::Handle,
) -> Vec<StartReader> {
    let workers = workers.max(1);
    let all = workers * cluster.processes().max(1);
    let conditions: Vec<Option<String>> = match epoch.parts.len() {
        0 => vec![None],
        _ => epoch.parts.iter().cloned().map(Some).collect(),
    };
    let count = conditions.len();
    let cursor_idx = resolved
        .cursor
        .as_ref()
        .and_then(|c| resolved.schema.arrow.index_of(&c.0).ok());
    conditions
        .into_iter()
        .enumerate()
        .filter(|(i, _)| (i % all) / workers == cluster.process)
        .map(|(i, condition)| {
            let (warehouse, source) = (resolved.warehouse.clone(), resolved.source.clone());
            let (filter, part) = (
                epoch.filter.clone(),
                Partition::with_condition(i, count, condition),
            );
            let read: PartRead =
                Box::new(move |each| warehouse.read(&source, &filter, &part, each));
            part_reader(read, cursor_idx, watermark.clone(), runtime)
        })
        .collect()
}

/// `config` as process `process` uses it: its file destinations write their own files, beside
/// process 0's with the process's number ([`process_path`]); two processes appending to one
/// file would tear each other's lines.
fn for_process(config: &Config, process: usize) -> Config {
    let mut config = config.clone();
    for destination in config.destinations.values_mut() {
        if let DestinationConfig::File { path } = destination {
            if path != "-" {
                *path = process_path(PathBuf::from(&*path), process)
                    .display()
                    .to_string();
            }
        }
    }
    config
}

/// Where process `process` keeps a file of its own (its rejected rows, a file destination):
/// process 0 where one process would, the others beside it, with their number.
pub(super) fn process_path(path: PathBuf, process: usize) -> PathBuf {
    if process == 0 {
        return path;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match name.strip_suffix(".ndjson") {
        Some(stem) => format!("{stem}.process-{process}.ndjson"),
        None => format!("{name}.process-{process}"),
    };
    path.with_file_name(name)
}

/// A process other than 0 of a cluster: builds the sync's dataflow, then reads and delivers
/// its parts of each epoch process 0 describes, until process 0 ends the sync. Returns the
/// number of epochs it took part in; Err when the cluster failed (nothing of the failed epoch
/// was committed by process 0).
pub fn follow(
    config: &Config,
    name: &str,
    options: &SyncOptions,
    runtime: &tokio::runtime::Runtime,
) -> Result<u64, SyncError> {
    let cluster = options
        .cluster
        .clone()
        .filter(|c| !c.leads())
        .ok_or_else(|| SyncError::Unsupported {
            sync: name.to_string(),
            what: "following without a cluster process number above 0".into(),
        })?;
    let config = &for_process(config, cluster.process);
    let resolved = resolve(config, name)?;
    let sync = &resolved.sync;
    let built = sync
        .destinations
        .iter()
        .map(|d| build_destination(config, &resolved, d, runtime.handle()))
        .collect::<Result<Vec<_>, _>>()?;
    check_supported(&resolved, &built)?;
    let envelope = |run_id| {
        Envelope::new(
            name,
            sync.table.as_deref().unwrap_or("query"),
            table_type_name(sync.table_type),
            run_id,
        )
    };
    let workers = options.workers.max(1);
    let failed = |run_id: u64, reason: String| SyncError::RunFailed {
        permanent: false,
        sync: name.to_string(),
        run_id,
        reason,
    };
    // The dataflow's shape, as process 0 builds it: a snapshot diff for a keyed sync (each
    // epoch brings its setup), else every row sent.
    let spill_dir = config
        .state_dir()
        .join("tmp")
        .join(format!("{name}.process-{}", cluster.process));
    let plan = match &resolved.hasher {
        Some(hasher) => Plan::Diff {
            spec: Arc::new(DiffSpec {
                hasher: hasher.clone(),
                previous: Vec::new(),
                pending: Vec::new(),
                next_dir: spill_dir.join("unused"),
                spill_dir: spill_dir.clone(),
                memory_budget: 0,
                emit: Emit::Changes,
                send_deletes: false,
            }),
            counts: Arc::new(DiffCounts::default()),
        },
        None => Plan::Append,
    };
    let mut live = LiveDataflow::start(LiveSpec {
        workers,
        plan,
        sinks: sink_specs(config, &resolved, &built, &envelope(0))?,
        runtime: runtime.handle().clone(),
        cluster: Some(cluster.clone()),
    })
    .map_err(|e| failed(0, e.0))?;
    let state_dir = config.state_dir();
    let default_rejects = state_dir.join("rejects").join(format!("{name}.ndjson"));
    let rejects = process_path(
        sync.rejects_path
            .as_ref()
            .map(|p| config.resolve(p))
            .unwrap_or(default_rejects),
        cluster.process,
    );
    let mut epochs = 0;
    while let Some((epoch, bytes)) = live.next_epoch().map_err(|e| failed(0, e.0))? {
        let description: EpochDescription = serde_json::from_slice(&bytes)
            .map_err(|e| failed(epoch, format!("process 0's description of the epoch: {e}")))?;
        let run_id = description.run_id;
        let sinks = sink_specs(config, &resolved, &built, &envelope(run_id))?;
        let watermark = Arc::new(Mutex::new(None));
        let readers = process_readers(
            &resolved,
            &description,
            &cluster,
            workers,
            &watermark,
            runtime.handle(),
        );
        let logs = Arc::new(RunLogs {
            rejects: RejectsFile::new(&rejects, name, run_id),
            changes: RejectsFile::new(
                &process_path(
                    state_dir.join("changes").join(format!("{name}.ndjson")),
                    cluster.process,
                ),
                name,
                run_id,
            ),
        });
        tracing::info!(
            sync = name,
            run = run_id,
            process = cluster.process,
            "epoch started"
        );
        let diff = match (&description.diff, &resolved.hasher) {
            (Some(setup), Some(hasher)) => {
                let _ = std::fs::remove_dir_all(&spill_dir);
                Some(Arc::new(setup.spec(hasher.clone(), spill_dir.clone())))
            }
            _ => None,
        };
        let input = EpochInput {
            readers,
            mappers: sinks.iter().map(|s| s.mapper.clone()).collect(),
            rejects: logs.clone(),
            now_ms: description.now_ms,
            diff,
            may_replay: false,
        };
        let outcome = live
            .run_epoch(epoch, input)
            .and_then(|o| {
                logs.flush().map(|_| o).map_err(|e| {
                    wharf_pipelines::run::RunError(format!("cannot write rejects: {e}"))
                })
            })
            .map_err(|e| failed(run_id, e.0))?;
        live.report_done(epoch, &outcome)
            .map_err(|e| failed(run_id, e.0))?;
        tracing::info!(
            sync = name,
            run = run_id,
            process = cluster.process,
            rows = outcome.rows_read,
            delivered = outcome.delivered,
            "epoch delivered"
        );
        epochs += 1;
    }
    Ok(epochs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_process_but_the_first_keeps_its_files_beside_the_first_ones() {
        let p = PathBuf::from("/s/rejects/ev.ndjson");
        assert_eq!(process_path(p.clone(), 0), p);
        assert_eq!(
            process_path(p, 2),
            PathBuf::from("/s/rejects/ev.process-2.ndjson")
        );
        assert_eq!(
            process_path(PathBuf::from("/r/bad.log"), 1),
            PathBuf::from("/r/bad.log.process-1")
        );
    }

    #[test]
    fn an_epoch_description_survives_its_bytes() {
        let d = EpochDescription {
            run_id: 7,
            filter: "WHERE \"ts\" > 1".into(),
            parts: vec!["rowid >= 0 AND rowid < 10".into(), "rowid >= 10".into()],
            now_ms: 1,
            diff: None,
        };
        let bytes = serde_json::to_vec(&d).unwrap_or_default();
        let back: EpochDescription = serde_json::from_slice(&bytes).unwrap_or(EpochDescription {
            run_id: 0,
            filter: String::new(),
            parts: Vec::new(),
            now_ms: 0,
            diff: None,
        });
        assert_eq!(back, d);
    }
}
