//! One run inside a session: capture, the dataflow, and the commit protocol.

use std::sync::{Arc, Mutex};

use wharf_operators::arrow::datatypes::Schema;
use wharf_operators::dataflow::RunControl;
use wharf_operators::envelope::Envelope;
use wharf_operators::watermark::{max_watermark, Watermark};
use wharf_pipelines::live::{EpochInput, LiveDataflow, LiveSpec};
use wharf_pipelines::run::{Plan, RunError};

use super::capture::{capture_mode, CaptureMode};
use super::commit::{commit, record_failure};
use super::error::SyncError;
use super::options::{crash_if, LiveRun, SyncOptions, SyncReport};
use super::plan::{plan, sink_specs, PlanInput};
use super::read::{epoch_readers, Read};
use super::recovery::{recover_from_destination, remove_snapshots_except, RunPosition};
use super::resolve::{build_destination, resolve, ResolvedSync};
use crate::config::{Config, SyncMode, TableType};
use crate::destination::{table_type_name, BuiltDestination};
use crate::progress::Progress;
use crate::rejects::{RejectsFile, RunLogs};
use crate::state::{RunStatus, SnapshotState, StateStore};
use crate::warehouse::SnapshotVisibility;

/// What consecutive runs of one sync in one process share: its connected destinations.
/// Drop it (or start a new one) after a failed run or a config change.
#[derive(Default)]
pub struct Session {
    destinations: Option<Vec<BuiltDestination>>,
    /// Runs of an append or change-stream plan: the dataflow kept across them.
    live: Option<LiveDataflow>,
    /// Continuous runs: the cheap check made before each run (see [`probe`]).
    probe: Option<super::probe::Probe>,
    /// A change-stream sync's resolved warehouse, schema and mapping, kept across its polls
    /// (with the warehouse's kept connection); resolved again when a poll's changes come in
    /// another schema, and with the session after a failed run or a config change.
    resolved: Option<Arc<ResolvedSync>>,
}

/// Runs `name` once in `session` (see [`run_sync_polled`]), recording it in `store` (one
/// store per process: the service shares its own between syncs).
pub fn run_in_session(
    config: &Config,
    name: &str,
    options: &SyncOptions,
    runtime: &tokio::runtime::Runtime,
    session: &mut Session,
    store: &StateStore,
) -> Result<Option<SyncReport>, SyncError> {
    // Continuous runs look first, with one cheap statement, whether anything is new.
    let mut probed_rows = None;
    if let (true, Some(p)) = (options.skip_idle, session.probe.as_mut()) {
        match p.look(store, name) {
            super::probe::Probed::Idle => return Ok(None),
            super::probe::Probed::Busy(rows) => probed_rows = rows,
        }
    }
    let kept = session.resolved.take();
    let reused = kept.is_some();
    let resolved = match kept {
        Some(r) => r,
        None => Arc::new(resolve(config, name)?),
    };
    let sync = &resolved.sync;
    if session.destinations.is_none() {
        let mut built = sync
            .destinations
            .iter()
            .map(|d| build_destination(config, &resolved, d, runtime.handle()))
            .collect::<Result<Vec<_>, _>>()?;
        // Transactional destinations commit last, once every other one has everything.
        built.sort_by_key(|b| b.destination.is_transactional());
        for b in built.iter().filter(|b| b.destination.is_transactional()) {
            recover_from_destination(&resolved, store, b, runtime)?;
        }
        session.destinations = Some(built);
    }
    let built = session.destinations.as_deref().unwrap_or_default();
    if options.cluster.is_some() {
        super::cluster::check_supported(&resolved, built)?;
    }
    // A one-time load of events is read like an append backlog: in committed runs of about
    // `max_rows` in insert-time order, the runs before its last marked as parts of the load
    // (`ONE_TIME_PART`); it is loaded once a run that was not a part succeeds.
    let split_load = sync.mode == SyncMode::OneTime && !sync.diffs_snapshots();
    let after = match sync.mode {
        SyncMode::Append => store.watermark(name)?,
        SyncMode::OneTime if split_load => store.watermark(name)?,
        _ => None,
    };
    // With a look-back window the read starts that much before the watermark (late rows);
    // the watermark itself never moves back.
    let lookback = sync.lookback.map(|l| l.get());
    let read_from = super::probe::read_position(after, lookback);
    if sync.mode == SyncMode::OneTime {
        if let Some(done) = super::one_time_load(store, name)? {
            return Err(SyncError::AlreadyLoaded {
                sync: name.to_string(),
                run_id: done.run_id,
                at: done.ended_at.unwrap_or_else(|| "?".into()),
            });
        }
    }
    let state_dir = config.state_dir();
    let committed = store.snapshot(name)?;
    let capture = capture_mode(&resolved, store)?;
    if options.cluster.is_some() && matches!(capture, CaptureMode::Stream { .. }) {
        return Err(SyncError::Unsupported {
            sync: name.to_string(),
            what: "a change stream across processes (run it in one process, with --workers)".into(),
        });
    }
    if options.skip_idle && session.probe.is_none() {
        session.probe = match (&capture, &resolved.cursor) {
            (CaptureMode::Stream { .. }, _) => Some(super::probe::Probe::stream(
                resolved.warehouse.clone(),
                name,
                resolved.source.clone(),
                sync.key_columns(),
            )),
            (CaptureMode::Snapshot, Some(cursor)) if sync.mode == SyncMode::Append => {
                Some(super::probe::Probe::append(
                    resolved.warehouse.clone(),
                    resolved.source.clone(),
                    cursor.clone(),
                    lookback,
                ))
            }
            _ => None,
        };
    }
    let mut backlog = None;
    // A change-stream run reads its changes before it starts, so an idle poll costs nothing.
    let poll = match &capture {
        CaptureMode::Stream { source, start } if !start.snapshot_first => {
            let werr = |e| SyncError::Warehouse(name.to_string(), e);
            let seen = committed.as_ref().and_then(|c| c.seen.as_ref());
            let poll = source
                .poll(
                    start.position,
                    options.capture_upto,
                    options.max_changes,
                    seen,
                )
                .map_err(werr)?;
            // The table's columns changed since the kept resolve: resolve again, and poll
            // again (a poll only peeks; nothing was consumed).
            if reused
                && poll
                    .batches
                    .first()
                    .is_some_and(|b| !same_columns(&b.schema(), &resolved.schema.arrow))
            {
                tracing::info!(
                    sync = name,
                    "the table's columns changed: resolving it again"
                );
                return run_in_session(config, name, options, runtime, session, store);
            }
            session.resolved = Some(resolved.clone());
            // Nothing new in a continuous poll, or in a catch-up run (the last window held
            // the rest): no run is recorded.
            if poll.changes_read == 0 && (options.skip_idle || options.capture_upto.is_some()) {
                if let Some(end) = poll.end {
                    // Nothing new, or only what the first snapshot held: move past it.
                    source.confirm(end).map_err(werr)?;
                    store.advance_watermark(name, end)?;
                }
                return Ok(None);
            }
            if poll.capped {
                backlog = match options.capture_upto {
                    Some(upto) => Some(upto),
                    None => Some(source.position().map_err(werr)?),
                };
            }
            Some(poll)
        }
        _ => None,
    };
    let keyed_append = sync.mode == SyncMode::Append && resolved.hasher.is_some();
    // A lookup table is replaced whole: an append run that finds new rows sends all of them.
    let whole_lookup = keyed_append && sync.table_type == TableType::Lookup;
    let mut total = match (&resolved.cursor, &poll) {
        (_, Some(p)) => Some(p.batches.iter().map(|b| b.num_rows() as u64).sum()),
        (Some(_), None) if probed_rows.is_some() => probed_rows,
        (Some((cursor, cursor_type)), None) => resolved
            .warehouse
            .count_after(&resolved.source, cursor, cursor_type, read_from)
            .ok(),
        (None, None) => resolved.warehouse.count(&resolved.source).ok(),
    };
    // A backlog past the watermark larger than a run takes is read in runs of about
    // `max_rows` rows in cursor order, each committed: a run reads up to the cursor value of
    // its `max_rows`-th row (and every row sharing it), and `run_sync` runs again.
    let mut read_upto = None;
    if let (true, false, Some((cursor, cursor_type)), Some(rows)) = (
        sync.mode == SyncMode::Append || split_load,
        whole_lookup,
        &resolved.cursor,
        total,
    ) {
        // A cluster's processes read their parts at different moments: every run is bounded,
        // so that they all read the same rows and process 0 knows where the run ends.
        let more = rows > options.max_rows.max(1);
        if more || (options.cluster.is_some() && rows > 0) {
            let werr = |e| SyncError::Warehouse(name.to_string(), e);
            let wh = &resolved.warehouse;
            let bound = wh
                .cursor_bound(
                    &resolved.source,
                    cursor,
                    cursor_type,
                    read_from,
                    rows.min(options.max_rows.max(1)),
                )
                .map_err(werr)?;
            if let Some(upto) = bound {
                let filter = wh.after_filter(cursor, cursor_type, read_from);
                let filter = wh.upto_filter(&filter, cursor, cursor_type, upto);
                total = wh.count_where(&resolved.source, &filter).ok();
                read_upto = Some(upto);
                if more {
                    backlog = Some(upto);
                }
            }
        }
    }
    let stream_end = poll.as_ref().and_then(|p| p.end);
    let stream_batches = poll.map(|p| p.batches);
    // Nothing new in a continuous poll, or in a catch-up run (the last run held the rest).
    let catching_up = options.skip_idle || options.capture_upto.is_some();
    if catching_up && sync.mode == SyncMode::Append && total == Some(0) {
        return Ok(None);
    }
    let mode_name = match (split_load, backlog) {
        (true, Some(_)) => super::ONE_TIME_PART.to_string(),
        _ => format!("{:?}", sync.mode).to_lowercase(),
    };
    let anomaly = match (&options.volume, total) {
        (Some(check), Some(rows)) => check.check(store, name, rows)?,
        _ => None,
    };
    if let (Some(anomaly), Some(true)) = (&anomaly, options.volume.as_ref().map(|v| v.pause)) {
        let run = store.begin_run(name, &mode_name, after)?;
        let run_id = run.run_id;
        store.end_run_uncommitted(
            run,
            RunStatus::Cancelled,
            Some(format!("{anomaly}; not sent, the sync is paused")),
        )?;
        return Err(SyncError::Anomaly {
            sync: name.to_string(),
            run_id,
            anomaly: anomaly.clone(),
        });
    }
    // A change-stream epoch replays nothing when the run before it committed: its slot was
    // confirmed (before the state store committed it), so nothing was delivered past where
    // this run starts. After a run that failed or died, it may replay what that run sent.
    let may_replay = !store
        .runs(name, 1)?
        .first()
        .is_some_and(|r| r.status == RunStatus::Succeeded);
    let run = store.begin_run(name, &mode_name, after)?;
    let rejects_path = sync
        .rejects_path
        .as_ref()
        .map(|p| config.resolve(p))
        .unwrap_or_else(|| state_dir.join("rejects").join(format!("{name}.ndjson")));
    let logs = Arc::new(RunLogs {
        rejects: RejectsFile::new(&rejects_path, name, run.run_id),
        changes: RejectsFile::new(
            &state_dir.join("changes").join(format!("{name}.ndjson")),
            name,
            run.run_id,
        ),
    });
    let watermark: Arc<Mutex<Option<Watermark>>> = Arc::new(Mutex::new(None));
    let snapshot_seen: Arc<Mutex<Option<SnapshotVisibility>>> = Arc::default();
    let snapshots_dir = state_dir.join("snapshots").join(name);
    let next_dir = snapshots_dir.join(format!("run-{}", run.run_id));
    let envelope = Envelope::new(
        name,
        sync.table.as_deref().unwrap_or("query"),
        table_type_name(sync.table_type),
        run.run_id,
    );
    let sinks = sink_specs(config, &resolved, built, &envelope)?;
    let plan = plan(
        &resolved,
        PlanInput {
            state_dir: &state_dir,
            committed: committed.as_ref(),
            snapshots_dir: &snapshots_dir,
            next_dir: &next_dir,
            streamed: stream_batches.is_some(),
        },
    )?;
    // Every run is an epoch of the session's long-lived dataflow (a continuous sync's polls, a
    // backlog caught up in several runs, the service's scheduled runs), built again only when
    // the plan's kind changes (a mirror's first snapshot, then its change stream) or a run failed.
    // The epoch's readers: every worker reads a part where the warehouse splits the read.
    let read = match (stream_batches, &resolved.cursor, &capture) {
        (Some(batches), _, _) => Read::Polled(batches),
        // New rows of a lookup table: the whole table goes (it is replaced).
        (None, Some(_), _) if whole_lookup && total == Some(0) => Read::Nothing,
        (None, Some(_), _) if whole_lookup => Read::Snapshot,
        (None, Some(cursor), _) => Read::After {
            cursor: cursor.clone(),
            from: read_from,
            upto: read_upto,
        },
        // The first snapshot of a change-captured table is read by its stream (which may say
        // which transactions it saw).
        (None, None, CaptureMode::Stream { start, .. }) if start.snapshot_first => {
            Read::FirstCapture {
                seen: snapshot_seen.clone(),
            }
        }
        (None, None, _) => Read::Snapshot,
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    // In a cluster every worker of every process reads a part; the others learn of the epoch
    // from its description.
    let mut description = None;
    let readers = match &options.cluster {
        Some(cluster) => {
            let parts = options.workers.max(1) * cluster.processes();
            super::cluster::describe(&resolved, &plan, &read, run.run_id, now_ms, parts).and_then(
                |d| {
                    let readers = super::cluster::process_readers(
                        &resolved,
                        &d,
                        cluster,
                        options.workers,
                        &watermark,
                        runtime.handle(),
                    );
                    description =
                        Some(serde_json::to_vec(&d).map_err(|e| SyncError::RunFailed {
                            permanent: true,
                            sync: name.to_string(),
                            run_id: run.run_id,
                            reason: format!("cannot describe the epoch: {e}"),
                        })?);
                    Ok(readers)
                },
            )
        }
        None => epoch_readers(
            &resolved,
            read,
            options.workers.max(1),
            &watermark,
            runtime.handle(),
        ),
    };
    let readers = match readers {
        Ok(readers) => readers,
        Err(e) => {
            return Err(record_failure(
                store,
                run,
                &RunControl::new(1),
                name,
                e.to_string(),
            )?)
        }
    };
    // The dataflow goes back into the session only once this run committed: a failed epoch or
    // commit spends it (its held state would count what the destination did not keep).
    let mut live = match session.live.take() {
        Some(live) if live.fits(&plan) => live,
        _ => {
            let spec = LiveSpec {
                workers: options.workers.max(1),
                plan: plan.clone(),
                sinks: sinks.clone(),
                runtime: runtime.handle().clone(),
                cluster: options.cluster.clone(),
            };
            match LiveDataflow::start(spec) {
                Ok(live) => {
                    tracing::info!(sync = name, "long-lived dataflow started");
                    live
                }
                Err(e) => return Err(record_failure(store, run, &RunControl::new(1), name, e.0)?),
            }
        }
    };
    // The counts of this run: the dataflow's, reset for each epoch.
    let diff_counts = live.counts();
    let control = live.control();
    if let Some(Ok(mut slot)) = options.live.as_ref().map(|s| s.lock()) {
        *slot = Some(LiveRun {
            run_id: run.run_id,
            started: std::time::Instant::now(),
            total,
            control: control.clone(),
        });
    }
    let progress = options
        .progress
        .then(|| Progress::start(name, control.clone(), total));
    let described: Vec<String> = built.iter().map(|b| b.destination.describe()).collect();
    tracing::info!(sync = name, run = run.run_id, after = ?after, rows = ?total, destinations = ?described, "run started");
    let input = EpochInput {
        readers,
        mappers: sinks.iter().map(|s| s.mapper.clone()).collect(),
        rejects: logs.clone(),
        now_ms,
        diff: match &plan {
            Plan::Diff { spec, .. } => Some(spec.clone()),
            _ => None,
        },
        may_replay,
    };
    let result = match description {
        Some(description) => live.run_epoch_described(run.run_id, input, description),
        None => live.run_epoch(run.run_id, input),
    };
    if let Some(p) = progress {
        p.finish();
    }
    let result = result.and_then(|outcome| {
        logs.flush()
            .map(|_| outcome)
            .map_err(|e| RunError(format!("cannot write rejects: {e}")))
    });
    match result {
        Ok(outcome) => {
            let when = "after delivery, before commit";
            crash_if(options.crash_before_commit, when, 70, run.run_id);
            let mut after_wm = watermark.lock().ok().and_then(|w| *w);
            if options.cluster.is_some() {
                // The other processes read up to the run's bound too.
                after_wm = max_watermark(after_wm, read_upto);
            }
            let mut run = run;
            run.rows_read = outcome.rows_read;
            run.delivered = outcome.delivered;
            run.rejected = outcome.rejected;
            run.bytes_sent = outcome.bytes_sent;
            run.unapplied = control
                .counters
                .changes_unapplied
                .load(std::sync::atomic::Ordering::Relaxed);
            let new_wm = match (&capture, sync.mode) {
                (_, SyncMode::Append) => max_watermark(after, after_wm),
                (_, SyncMode::OneTime) if split_load => max_watermark(after, after_wm),
                // A first snapshot commits the stream's position before it; a later run
                // where its changes end.
                (CaptureMode::Stream { start, .. }, _) if start.snapshot_first => {
                    Some(start.position)
                }
                (CaptureMode::Stream { .. }, _) => stream_end,
                _ => None,
            };
            let streamed = capture.streamed().is_some();
            let snapshot = match &diff_counts {
                Some(c) if streamed || keyed_append => {
                    // A change-stream run leaves the committed snapshot state as it was; an
                    // append run keeps none (its watermark is its position).
                    use std::sync::atomic::Ordering::Relaxed;
                    run.inserted = c.inserts.load(Relaxed);
                    run.updated = c.updates.load(Relaxed);
                    run.deleted = c.deletes.load(Relaxed);
                    None
                }
                Some(c) => {
                    use std::sync::atomic::Ordering::Relaxed;
                    run.inserted = c.inserts.load(Relaxed);
                    run.updated = c.updates.load(Relaxed);
                    run.deleted = c.deletes.load(Relaxed);
                    let parts = c.parts.lock().map(|p| p.clone()).unwrap_or_default();
                    Some(SnapshotState {
                        run_id: run.run_id,
                        rows: c.rows.load(Relaxed),
                        parts: parts
                            .iter()
                            .map(|p| p.strip_prefix(&state_dir).unwrap_or(p).to_path_buf())
                            .collect(),
                        seen: snapshot_seen.lock().ok().and_then(|mut s| s.take()),
                    })
                }
                None => None,
            };
            let stream = match &capture {
                CaptureMode::Stream { source, .. } => Some(source.as_ref()),
                CaptureMode::Snapshot => None,
            };
            let position = RunPosition {
                run,
                watermark: new_wm,
                snapshot: snapshot.clone(),
                // Confirmed to a stream that keeps the sync's position (a slot).
                lsn: stream
                    .filter(|s| s.keeps_position())
                    .and(stream_end)
                    .and_then(Watermark::position),
            };
            tracing::debug!(sync = name, run = position.run.run_id, "committing");
            let run = commit(store, built, runtime, name, position, stream, options)?;
            let mut fold = false;
            if let Some(held) = live.held() {
                // Not noted, the epoch's keys are dropped from the held state at the next
                // start (sent again if they change), nothing worse.
                if let Err(e) = held.committed(run.run_id) {
                    tracing::warn!(sync = name, run = run.run_id, "{e}");
                }
                fold = held.wants_fold();
            }
            if fold {
                // The next run starts a new dataflow, which folds the held state's logs.
                tracing::info!(sync = name, "held change-stream state to be folded");
            } else {
                session.live = Some(live);
            }
            if snapshot.is_some() {
                remove_snapshots_except(&snapshots_dir, Some(run.run_id));
            }
            if keyed_append {
                let _ =
                    std::fs::remove_dir_all(state_dir.join("tmp").join(format!("{name}-append")));
            }
            tracing::info!(
                sync = name,
                run = run.run_id,
                rows = outcome.rows_read,
                delivered = outcome.delivered,
                rejected = outcome.rejected,
                inserted = run.inserted,
                updated = run.updated,
                deleted = run.deleted,
                "run committed"
            );
            Ok(Some(SyncReport {
                run,
                outcome,
                rejects_path,
                anomaly,
                backlog,
            }))
        }
        Err(e) => Err(record_failure(store, run, &control, name, e.0)?),
    }
}

/// Whether a change poll's batches (the table's columns, then the change's kind) have the
/// columns, names and types in order, that the sync was resolved with.
fn same_columns(changes: &Schema, resolved: &Schema) -> bool {
    let fields = changes.fields();
    let columns = match fields.last() {
        Some(op) if op.name() == wharf_operators::diff::OP_COLUMN => &fields[..fields.len() - 1],
        _ => &fields[..],
    };
    columns.len() == resolved.fields().len()
        && columns
            .iter()
            .zip(resolved.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}
