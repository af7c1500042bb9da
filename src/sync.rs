//! One run of a configured sync: resolve the config into a warehouse reader, a mapper and a
//! destination, run the dataflow, and commit — or not.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_operators::arrow::datatypes::DataType;
use wharf_operators::dataflow::{RunControl, SourceMessage, SourceSender};
use wharf_operators::events::{EpochUnit, EventMapper, EventMapping, EventName, MappingError};
use wharf_operators::watermark::{column_max, max_watermark, Watermark};
use wharf_pipelines::delivery::RetryPolicy;
use wharf_pipelines::destination::{Destination, DestinationError};
use wharf_pipelines::run::{run_dataflow, Plan, RunOutcome, RunSpec};

use crate::config::{
    parse_duration, Config, DestinationConfig, SyncConfig, SyncMode, TableType, TimeUnitConfig,
    WarehouseConfig,
};
use crate::destination::file::FileDestination;
use crate::destination::mixpanel::import::{MixpanelImport, IMPORT_LIMITS};
use crate::progress::Progress;
use crate::rejects::RejectsFile;
use crate::state::{RunRecord, RunStatus, StateError, StateStore};
use crate::warehouse::duckdb::DuckDbWarehouse;
use crate::warehouse::{SourceRef, TableSchema, WarehouseError};

/// Why a sync could not run or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// No such sync in the config.
    #[error("no sync named `{0}` in the config; defined: {1}")]
    UnknownSync(String, String),
    /// Not implemented yet for this combination.
    #[error("sync `{sync}`: {what} is not supported yet")]
    Unsupported {
        /// The sync.
        sync: String,
        /// What.
        what: String,
    },
    /// The warehouse failed.
    #[error("sync `{0}`: {1}")]
    Warehouse(String, #[source] WarehouseError),
    /// The mapping does not fit the table.
    #[error("sync `{0}`: {1}")]
    Mapping(String, #[source] MappingError),
    /// The destination cannot be set up.
    #[error("sync `{0}`: destination `{1}`: {2}")]
    Destination(String, String, #[source] DestinationError),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The run failed; nothing was committed, the next run resends it.
    #[error("sync `{sync}` run {run_id} failed, nothing committed: {reason}")]
    RunFailed {
        /// The sync.
        sync: String,
        /// The run.
        run_id: u64,
        /// Why.
        reason: String,
    },
}

/// Options of one `wharf sync`.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Timely worker threads.
    pub workers: usize,
    /// Show a progress bar (terminal) or log lines.
    pub progress: bool,
    /// Testing hook: exit the process after delivery, before the commit (a simulated crash).
    pub crash_before_commit: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            workers: 1,
            progress: false,
            crash_before_commit: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// The committed run record.
    pub run: RunRecord,
    /// Counters.
    pub outcome: RunOutcome,
    /// Where rejects were written (if any).
    pub rejects_path: PathBuf,
}

/// The resolved pieces of a sync, shared by `check`, `preview` and `sync`.
pub struct ResolvedSync {
    /// The sync's config.
    pub sync: SyncConfig,
    /// Its warehouse.
    pub warehouse: DuckDbWarehouse,
    /// What it reads.
    pub source: SourceRef,
    /// The discovered schema.
    pub schema: TableSchema,
    /// The event mapper.
    pub mapper: Arc<EventMapper>,
    /// The append cursor column and its type.
    pub cursor: (String, DataType),
}

/// Finds a sync, connects to its warehouse, discovers the schema and compiles the mapping.
pub fn resolve(config: &Config, name: &str) -> Result<ResolvedSync, SyncError> {
    let sync = config.sync(name).cloned().ok_or_else(|| {
        SyncError::UnknownSync(
            name.to_string(),
            config
                .syncs
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
    })?;
    let unsupported = |what: String| SyncError::Unsupported {
        sync: sync.name.clone(),
        what,
    };
    if sync.table_type != TableType::Events {
        return Err(unsupported(
            format!("table type `{:?}`", sync.table_type).to_lowercase(),
        ));
    }
    if !matches!(sync.mode, SyncMode::Append | SyncMode::OneTime) {
        return Err(unsupported(
            format!("mode `{:?}` for events", sync.mode).to_lowercase(),
        ));
    }
    let wh_config = &config.warehouses[&sync.warehouse];
    let WarehouseConfig::Duckdb { path } = wh_config;
    let warehouse = DuckDbWarehouse::new(&sync.warehouse, config.resolve(path));
    let source = match (&sync.table, &sync.query) {
        (Some(t), _) => SourceRef::Table(t.clone()),
        (None, Some(q)) => SourceRef::Query(q.clone()),
        // Config validation guarantees one of the two.
        (None, None) => {
            return Err(unsupported("a sync without `table` or `query`".into()));
        }
    };
    let werr = |e| SyncError::Warehouse(sync.name.clone(), e);
    let schema = warehouse.describe(&source).map_err(werr)?;
    let m = &sync.mapping;
    let time_column = m.time_column.clone().unwrap_or_default();
    let mapping = EventMapping {
        sync_id: sync.name.clone(),
        warehouse_type: wh_config.kind().to_string(),
        event_name: match (&m.event_name, &m.event_name_column) {
            (_, Some(c)) => EventName::Column(c.clone()),
            (Some(n), None) => EventName::Static(n.clone()),
            (None, None) => EventName::Static(String::new()),
        },
        time_column: time_column.clone(),
        time_unit: match m.time_unit {
            TimeUnitConfig::Auto => EpochUnit::Auto,
            TimeUnitConfig::Seconds => EpochUnit::Seconds,
            TimeUnitConfig::Milliseconds => EpochUnit::Milliseconds,
        },
        user_id_column: m.user_id_column.clone(),
        device_id_column: m.device_id_column.clone(),
        properties_column: m.properties_column.clone(),
        key_columns: m.key_columns.clone(),
        exclude_columns: m.exclude_columns.clone(),
    };
    let mapper = EventMapper::new(mapping, &schema.arrow)
        .map_err(|e| SyncError::Mapping(sync.name.clone(), e))?;
    let cursor_name = m.insert_time_column.clone().unwrap_or(time_column);
    let cursor_type =
        DuckDbWarehouse::check_cursor(&source, &schema, &cursor_name).map_err(werr)?;
    Ok(ResolvedSync {
        warehouse,
        source,
        schema,
        mapper: Arc::new(mapper),
        cursor: (cursor_name, cursor_type),
        sync,
    })
}

/// Builds the destination `name` of `config`.
pub fn build_destination(
    config: &Config,
    sync: &str,
    name: &str,
) -> Result<
    (
        Arc<dyn Destination>,
        RetryPolicy,
        wharf_operators::dataflow::BatchLimits,
    ),
    SyncError,
> {
    let derr = |e| SyncError::Destination(sync.to_string(), name.to_string(), e);
    match &config.destinations[name] {
        DestinationConfig::File { path } => {
            let p = if path == "-" {
                PathBuf::from("-")
            } else {
                config.resolve(std::path::Path::new(path))
            };
            let dest = FileDestination::open(&p).map_err(derr)?;
            let policy = RetryPolicy {
                concurrency: 1,
                ..RetryPolicy::default()
            };
            let limits = wharf_operators::dataflow::BatchLimits {
                max_records: 8192,
                max_bytes: 8 << 20,
            };
            Ok((Arc::new(dest), policy, limits))
        }
        DestinationConfig::Mixpanel(m) => {
            let d = |v: &Option<String>, default: Duration| {
                v.as_deref().and_then(parse_duration).unwrap_or(default)
            };
            let defaults = RetryPolicy::default();
            let policy = RetryPolicy {
                initial_backoff: d(&m.initial_backoff, defaults.initial_backoff),
                max_backoff: d(&m.max_backoff, defaults.max_backoff),
                max_jitter: defaults
                    .max_jitter
                    .min(d(&m.initial_backoff, defaults.max_jitter)),
                give_up_after: d(&m.give_up_after, defaults.give_up_after),
                concurrency: m.concurrency.unwrap_or(defaults.concurrency).max(1),
            };
            let dest =
                MixpanelImport::new(m, d(&m.timeout, Duration::from_secs(120))).map_err(derr)?;
            Ok((Arc::new(dest), policy, IMPORT_LIMITS))
        }
    }
}

/// Runs `name` once: reads rows past the committed watermark, delivers them, and commits the
/// new watermark only after every record was acknowledged.
pub fn run_sync(
    config: &Config,
    name: &str,
    options: &SyncOptions,
    runtime: &tokio::runtime::Runtime,
) -> Result<SyncReport, SyncError> {
    let resolved = resolve(config, name)?;
    let sync = &resolved.sync;
    if sync.destinations.len() != 1 {
        return Err(SyncError::Unsupported {
            sync: sync.name.clone(),
            what: "sending one sync to several destinations".into(),
        });
    }
    let (destination, policy, limits) = build_destination(config, name, &sync.destinations[0])?;
    let store = StateStore::open(&config.state_dir())?;
    let after = match sync.mode {
        SyncMode::Append => store.watermark(name)?,
        _ => None,
    };
    if sync.mode == SyncMode::OneTime {
        let history = store.runs(name, crate::state::MAX_RUNS_PER_SYNC)?;
        if let Some(done) = history.iter().find(|r| r.status == RunStatus::Succeeded) {
            return Err(SyncError::Unsupported {
                sync: name.to_string(),
                what: format!(
                    "running a one_time sync again (run {} succeeded at {}; use mode = \"append\" for repeated loads)",
                    done.run_id,
                    done.ended_at.as_deref().unwrap_or("?")
                ),
            });
        }
    }
    let (cursor, cursor_type) = resolved.cursor.clone();
    let total = resolved
        .warehouse
        .count_after(&resolved.source, &cursor, &cursor_type, after)
        .ok();
    let run = store.begin_run(name, &format!("{:?}", sync.mode).to_lowercase(), after)?;
    let rejects_path = sync
        .rejects_path
        .as_ref()
        .map(|p| config.resolve(p))
        .unwrap_or_else(|| {
            config
                .state_dir()
                .join("rejects")
                .join(format!("{name}.ndjson"))
        });
    let rejects = Arc::new(RejectsFile::new(&rejects_path, name, run.run_id));
    let control = RunControl::new(64 * 1024);
    let watermark: Arc<Mutex<Option<Watermark>>> = Arc::new(Mutex::new(None));
    let reader = {
        let (warehouse, source, watermark) = (
            resolved.warehouse.clone(),
            resolved.source.clone(),
            watermark.clone(),
        );
        let cursor_idx = resolved.schema.arrow.index_of(&cursor).unwrap_or(0);
        let handle = runtime.handle().clone();
        Box::new(move |sender: SourceSender| {
            handle.spawn_blocking(move || {
                let mut max = None;
                let result = warehouse.read_after(&source, &cursor, &cursor_type, after, |batch| {
                    max = max_watermark(max, column_max(batch.column(cursor_idx).as_ref()));
                    sender.send(SourceMessage::Batch(batch)).is_ok()
                });
                tracing::debug!(ok = result.is_ok(), watermark = ?max, "warehouse read finished");
                if let Err(e) = result {
                    let _ = sender.send(SourceMessage::Failed(e.to_string()));
                }
                if let Ok(mut w) = watermark.lock() {
                    *w = max;
                }
                // Dropping the sender ends the run's input.
                drop(sender);
            });
        })
    };
    let progress = options
        .progress
        .then(|| Progress::start(name, control.clone(), total));
    tracing::info!(sync = name, run = run.run_id, after = ?after, rows = ?total, destination = %destination.describe(), "run started");
    let result = run_dataflow(RunSpec {
        workers: options.workers.max(1),
        epoch: run.run_id,
        reader,
        plan: Plan::Append {
            mapper: resolved.mapper.clone(),
        },
        destination,
        limits,
        policy,
        rejects: rejects.clone(),
        control: control.clone(),
        runtime: runtime.handle().clone(),
        now_ms: chrono::Utc::now().timestamp_millis(),
    });
    if let Some(p) = progress {
        p.finish();
    }
    let result = result.and_then(|outcome| {
        rejects
            .flush()
            .map(|_| outcome)
            .map_err(|e| wharf_pipelines::run::RunError(format!("cannot write rejects: {e}")))
    });
    match result {
        Ok(outcome) => {
            if options.crash_before_commit {
                eprintln!(
                    "wharf: simulated crash after delivery, before commit (run {})",
                    run.run_id
                );
                std::process::exit(70);
            }
            let after_wm = watermark.lock().ok().and_then(|w| *w);
            let mut run = run;
            run.rows_read = outcome.rows_read;
            run.delivered = outcome.delivered;
            run.rejected = outcome.rejected;
            run.bytes_sent = outcome.bytes_sent;
            let new_wm = match sync.mode {
                SyncMode::Append => max_watermark(after, after_wm),
                _ => None,
            };
            let run = store.commit_run(run, new_wm)?;
            tracing::info!(
                sync = name,
                run = run.run_id,
                rows = outcome.rows_read,
                delivered = outcome.delivered,
                rejected = outcome.rejected,
                "run committed"
            );
            Ok(SyncReport {
                run,
                outcome,
                rejects_path,
            })
        }
        Err(e) => {
            let c = &control.counters;
            let mut failed = run;
            failed.rows_read = c.rows_read.load(std::sync::atomic::Ordering::Relaxed);
            let run_id = failed.run_id;
            store.end_run_uncommitted(failed, RunStatus::Failed, Some(e.0.clone()))?;
            Err(SyncError::RunFailed {
                sync: name.to_string(),
                run_id,
                reason: e.0,
            })
        }
    }
}
