//! One run of a configured sync: resolve the config into a warehouse reader, a mapper and a
//! destination, run the dataflow, and commit — or not.

mod capture;
mod cluster;
mod commit;
mod error;
mod options;
mod plan;
mod preview;
mod probe;
mod read;
mod recovery;
mod resolve;
mod session;

use crate::config::Config;
use crate::state::{RunRecord, RunStatus, StateError, StateStore};
use std::time::Duration;

pub use crate::destination::{table_type_name, BuiltDestination};
pub use capture::MAX_CHANGES_PER_POLL;
pub use cluster::follow;
pub use error::{SyncError, VolumeAnomaly};
pub use options::{LiveRun, LiveSlot, SyncOptions, SyncReport, VolumeCheck, MAX_ROWS_PER_RUN};
pub use preview::{preview_changes, preview_records, ChangePreview, RecordPreview};
pub use resolve::{build_destination, change_mapper, resolve, ResolvedSync};
pub use session::{run_in_session, Session};

/// Runs `name` once and commits only after every record was acknowledged: append syncs read
/// rows past the committed watermark; full and mirror syncs diff a snapshot against the
/// committed one and send the changes; mirror syncs with change capture send what the
/// warehouse's change stream holds.
pub fn run_sync(
    config: &Config,
    name: &str,
    options: &SyncOptions,
    runtime: &tokio::runtime::Runtime,
    mut on_run: impl FnMut(&SyncReport),
) -> Result<SyncReport, SyncError> {
    let mut options = SyncOptions {
        skip_idle: false,
        ..options.clone()
    };
    let mut session = Session::default();
    let store = StateStore::open(&config.state_dir())?;
    // A run that left a backlog, reported once the next run shows it was not the last.
    let mut pending: Option<SyncReport> = None;
    loop {
        let report = match run_in_session(config, name, &options, runtime, &mut session, &store)? {
            Some(report) => report,
            // A catch-up run found nothing more (the last run's window held the rest).
            None => {
                return pending.ok_or_else(|| SyncError::RunFailed {
                    permanent: false,
                    sync: name.to_string(),
                    run_id: 0,
                    reason: "no run was made".into(),
                })
            }
        };
        if let Some(previous) = pending.take() {
            on_run(&previous);
        }
        // A change stream with more waiting than one run takes: further runs, each committed,
        // until the position the stream had when this sync started. An append backlog larger
        // than one run takes: further runs, each committed, until a run finds no more.
        match report.backlog {
            Some(upto) => {
                tracing::info!(
                    sync = name,
                    run = report.run.run_id,
                    "more is waiting than one run takes; running again"
                );
                options.capture_upto = Some(upto);
                pending = Some(report);
            }
            None => return Ok(report),
        }
    }
}

/// Runs `name` back to back every `interval` until `stop` is set, sending each change as soon
/// as a poll finds it; idle polls record no run. A failed run is logged and retried after a
/// backoff (up to 30 s); in a cluster it ends the sync. Returns the number of runs committed.
pub fn run_continuous(
    config: &Config,
    name: &str,
    options: &SyncOptions,
    runtime: &tokio::runtime::Runtime,
    interval: Duration,
    stop: &std::sync::atomic::AtomicBool,
    mut on_run: impl FnMut(&SyncReport),
) -> Result<u64, SyncError> {
    let options = SyncOptions {
        skip_idle: true,
        ..options.clone()
    };
    let mut runs = 0;
    let mut backoff = interval;
    // Destinations (Kafka producers, HTTP clients) live across runs; a failed run drops them.
    let mut session = Session::default();
    let store = StateStore::open(&config.state_dir())?;
    // Idle polls record no run; one log line says since when the sync is idle.
    let mut idle = false;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let result = run_in_session(config, name, &options, runtime, &mut session, &store);
        if result.is_err() {
            session = Session::default();
        }
        match result {
            Ok(report) => {
                backoff = interval;
                match report {
                    Some(r) => {
                        runs += 1;
                        idle = false;
                        on_run(&r);
                    }
                    None if !idle => {
                        idle = true;
                        tracing::info!(sync = name, "nothing new: idle (polls record no run)");
                    }
                    None => {}
                }
                std::thread::sleep(interval);
            }
            Err(e @ (SyncError::UnknownSync(..) | SyncError::Unsupported { .. })) => return Err(e),
            // A cluster cannot go on without a process: every process stops, and all are
            // started again.
            Err(e) if options.cluster.is_some() => return Err(e),
            Err(e) => {
                tracing::error!(sync = name, error = %e, retry_in = ?backoff, "run failed");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    Ok(runs)
}

/// [`run_sync`], except that with `options.skip_idle` a change-capture poll that finds nothing
/// returns `None` without recording a run.
pub fn run_sync_polled(
    config: &Config,
    name: &str,
    options: &SyncOptions,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<SyncReport>, SyncError> {
    let store = StateStore::open(&config.state_dir())?;
    run_in_session(
        config,
        name,
        options,
        runtime,
        &mut Session::default(),
        &store,
    )
}

/// The mode recorded for a run of a one-time load that leaves the rest of it to later runs
/// (a load larger than `max_rows` is read in committed runs).
pub const ONE_TIME_PART: &str = "onetime (part)";

/// The run that loaded a one-time sync's table, if it did (its last successful run that was not
/// a part of the load; `wharf reset` forgets it).
pub fn one_time_load(store: &StateStore, name: &str) -> Result<Option<RunRecord>, StateError> {
    let since = store.reset_point(name)?;
    Ok(store
        .runs(name, crate::state::MAX_RUNS_PER_SYNC)?
        .into_iter()
        .find(|r| r.status == RunStatus::Succeeded && r.run_id > since && r.mode != ONE_TIME_PART))
}

/// Makes `name` start over: forgets its committed watermark / change position and snapshot
/// state, removes its snapshot files and, for a PostgreSQL mirror, drops its replication slot
/// and publication (the next run recreates them). The next run sends the whole table again
/// (Mixpanel deduplicates events by `$insert_id`; profiles are set again). Returns what was
/// cleared, for the user.
pub fn reset_sync(config: &Config, name: &str) -> Result<Vec<String>, SyncError> {
    reset_sync_in(config, name, &StateStore::open(&config.state_dir())?)
}

/// [`reset_sync`] with the state store already open (the service holds it).
pub fn reset_sync_in(
    config: &Config,
    name: &str,
    store: &StateStore,
) -> Result<Vec<String>, SyncError> {
    let resolved = resolve(config, name)?;
    let mut cleared = Vec::new();
    if store.reset(name)? {
        cleared.push(
            "the committed watermark / position, snapshot state and record of a one-time load"
                .to_string(),
        );
    }
    let remove = |dir: std::path::PathBuf, what: &str, cleared: &mut Vec<String>| {
        if !dir.exists() {
            return Ok(());
        }
        std::fs::remove_dir_all(&dir).map_err(|e| SyncError::RunFailed {
            permanent: false,
            sync: name.to_string(),
            run_id: 0,
            reason: format!("cannot remove {}: {e}", dir.display()),
        })?;
        cleared.push(format!("{what} in {}", dir.display()));
        Ok::<(), SyncError>(())
    };
    let state_dir = config.state_dir();
    remove(
        state_dir.join("snapshots").join(name),
        "the snapshot files",
        &mut cleared,
    )?;
    remove(
        plan::held_dir(&state_dir, name),
        "the held change-stream state",
        &mut cleared,
    )?;
    let stream =
        resolved
            .warehouse
            .change_source(name, &resolved.source, &resolved.sync.key_columns());
    if let Some(stream) = stream {
        let werr = |e| SyncError::Warehouse(name.to_string(), e);
        if let Some(removed) = stream.remove().map_err(werr)? {
            cleared.push(removed);
        }
    }
    Ok(cleared)
}
