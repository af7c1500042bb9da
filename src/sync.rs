//! One run of a configured sync: resolve the config into a warehouse reader, a mapper and a
//! destination, run the dataflow, and commit — or not.

mod probe;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_operators::arrow::datatypes::DataType;
use wharf_operators::change::ChangeMapper;
use wharf_operators::changes::{
    Envelope, EnvelopeRecords, EventChanges, LookupRows, ProfileChanges, ProfileMapping,
    ProfileTarget,
};
use wharf_operators::dataflow::{BatchLimits, RunControl, SourceMessage, SourceSender};
use wharf_operators::diff::{DiffCounts, DiffSpec, Emit};
use wharf_operators::events::{
    find_column, EpochUnit, EventMapper, EventMapping, EventName, MappingError,
};
use wharf_operators::snapshot::{PendingSnapshot, RowHasher};
use wharf_operators::watermark::{column_max, max_watermark, Watermark};
use wharf_operators::RecordMapper;
use wharf_pipelines::delivery::RetryPolicy;
use wharf_pipelines::destination::{Destination, DestinationError};
use wharf_pipelines::governor::RateCap;
use wharf_pipelines::run::{run_dataflow, Plan, RunOutcome, RunSpec, SinkMapper, SinkSpec};

use crate::config::{
    ChangeCapture, Config, DestinationConfig, KafkaPayload, SyncConfig, SyncMode, TableType,
    TimeUnitConfig,
};
use crate::destination::file::FileDestination;
use crate::destination::kafka::{ExactlyOnce, KafkaDestination, KafkaSettings};
use crate::destination::mixpanel::engage::{
    MixpanelProfiles, ProfileEndpoint, ENGAGE_LIMITS, GROUPS_LIMITS,
};
use crate::destination::mixpanel::import::{MixpanelImport, IMPORT_LIMITS};
use crate::destination::mixpanel::lookup::MixpanelLookupTable;
use crate::duration::parse_duration;
use crate::progress::Progress;
use crate::rejects::{RejectsFile, RunLogs};
use crate::state::{RunRecord, RunStatus, SnapshotState, StateError, StateStore};
use crate::warehouse::postgres::logical::{Capture, ChangePoll, SnapshotVisibility};
use crate::warehouse::postgres::PostgresWarehouse;
use crate::warehouse::{check_cursor, SourceRef, TableSchema, Warehouse, WarehouseError};

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
    /// The run was cancelled (e.g. at shutdown); nothing was committed, the next run resends it.
    #[error("sync `{sync}` run {run_id} cancelled, nothing committed: {reason}")]
    Cancelled {
        /// The sync.
        sync: String,
        /// The run.
        run_id: u64,
        /// Why.
        reason: String,
    },
    /// The run would send far more rows than usual and the sync is set to pause instead.
    #[error("sync `{sync}` run {run_id} not sent: {anomaly}")]
    Anomaly {
        /// The sync.
        sync: String,
        /// The run (recorded as CANCELLED).
        run_id: u64,
        /// What was found.
        anomaly: VolumeAnomaly,
    },
    /// A one-time sync that already loaded its table.
    #[error("sync `{sync}` is one_time and already loaded its table (run {run_id}, {at}); run `wharf reset {sync}` to load it again, or use mode = \"append\" for repeated loads")]
    AlreadyLoaded {
        /// The sync.
        sync: String,
        /// The run that loaded it.
        run_id: u64,
        /// When that run ended.
        at: String,
    },
    /// A snapshot state folder cannot be read.
    #[error("sync `{sync}`: the snapshot state in {path} cannot be read: {message}; `wharf reset {sync}` starts the sync over (the next run resends every row)")]
    UnreadableSnapshot {
        /// The sync.
        sync: String,
        /// The folder.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The run failed; nothing was committed, the next run resends it.
    #[error("sync `{sync}` run {run_id} failed, nothing committed: {reason}")]
    RunFailed {
        /// The sync.
        sync: String,
        /// The run.
        run_id: u64,
        /// Why.
        reason: String,
        /// Retrying cannot help (a destination refused the credentials or the request).
        permanent: bool,
    },
}

impl SyncError {
    /// Whether running the sync again as it is cannot succeed: bad credentials, a missing
    /// table or column, a mapping or config error, a destination that refused the run for
    /// good. The service stops retrying such a sync until its config is reloaded or a run is
    /// asked for; transient failures (connections, timeouts, overload) are retried.
    pub fn is_permanent(&self) -> bool {
        match self {
            SyncError::Warehouse(_, e) => !e.is_transient(),
            SyncError::Destination(_, _, e) => !e.is_transient(),
            SyncError::RunFailed { permanent, .. } => *permanent,
            SyncError::UnknownSync(..)
            | SyncError::Unsupported { .. }
            | SyncError::Mapping(..)
            | SyncError::UnreadableSnapshot { .. } => true,
            _ => false,
        }
    }
}

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
    /// [`run_sync`] while it drains the stream up to where it stood at its start).
    pub capture_upto: Option<u64>,
    /// Most changes a change-stream run reads (whole transactions: a larger one comes whole).
    pub max_changes: usize,
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

/// A run found anomalous by [`VolumeCheck`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VolumeAnomaly {
    /// Rows the run reads.
    pub rows: u64,
    /// The average of the recent successful runs.
    pub average: f64,
    /// The configured multiple.
    pub multiple: f64,
}

impl std::fmt::Display for VolumeAnomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "volume anomaly: {} rows, more than {} times the recent average of {:.0}",
            self.rows, self.multiple, self.average
        )
    }
}

impl VolumeCheck {
    /// Whether `rows` is anomalous for `sync` given its history in `store`.
    fn check(
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
    /// The run was sent although [`SyncOptions::volume`] found it anomalous.
    pub anomaly: Option<VolumeAnomaly>,
    /// A change-stream run stopped at its change limit: more changes wait, up to this
    /// position of the stream (its head when the run polled).
    pub backlog: Option<u64>,
}

/// The resolved pieces of a sync, shared by `check`, `preview` and `sync`.
pub struct ResolvedSync {
    /// The sync's config.
    pub sync: SyncConfig,
    /// Its warehouse.
    pub warehouse: Arc<dyn Warehouse>,
    /// The warehouse's kind (e.g. `duckdb`).
    pub warehouse_type: String,
    /// What it reads.
    pub source: SourceRef,
    /// The discovered schema.
    pub schema: TableSchema,
    /// The event mapper (events tables).
    pub events: Option<Arc<EventMapper>>,
    /// The append cursor column and its type (append and one-time events).
    pub cursor: Option<(String, DataType)>,
    /// Keys and fingerprints (full, mirror, one-time profiles and lookup tables).
    pub hasher: Option<Arc<RowHasher>>,
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
    let sync_name = sync.name.clone();
    let unsupported = |what: String| SyncError::Unsupported {
        sync: sync_name.clone(),
        what,
    };
    let wh_config = &config.warehouses[&sync.warehouse];
    let warehouse = crate::warehouse::open(config, &sync.warehouse)
        .ok_or_else(|| unsupported(format!("a warehouse named `{}`", sync.warehouse)))?;
    let source = match (&sync.table, &sync.query) {
        (Some(t), _) => SourceRef::Table(t.clone()),
        (None, Some(q)) => SourceRef::Query(q.clone()),
        // Config validation guarantees one of the two.
        (None, None) => {
            return Err(unsupported("a sync without `table` or `query`".into()));
        }
    };
    let werr = |e| SyncError::Warehouse(sync_name.clone(), e);
    let merr = |e| SyncError::Mapping(sync_name.clone(), e);
    let mut schema = warehouse.describe(&source).map_err(werr)?;
    // Full and mirror syncs without `primary_key` (and without a profile id column) use the
    // table's declared primary key.
    let mut sync = sync;
    if sync.diffs_snapshots() && sync.key_columns().is_empty() && !schema.primary_key.is_empty() {
        tracing::info!(sync = %sync.name, key = ?schema.primary_key, "using the table's declared primary key");
        sync.primary_key = schema.primary_key.clone();
    }
    let sync = sync;
    let m = &sync.mapping;
    let key_columns = sync.key_columns();
    // Profile history tables and `dedupe_by`: per key, the row with the greatest value of the
    // column (the warehouse picks it).
    let latest_by = match (&m.history_start_column, &sync.dedupe_by) {
        (Some(start), _) if sync.table_type == TableType::Users => {
            Some((start, "history_start_column"))
        }
        (_, Some(column)) => Some((column, "dedupe_by")),
        _ => None,
    };
    let mut source = match latest_by {
        Some((column, what)) if !key_columns.is_empty() => {
            find_column(&schema.arrow, column, what).map_err(merr)?;
            let latest = warehouse.latest_per_key(&source, &schema, &key_columns, column);
            schema = warehouse.describe(&latest).map_err(werr)?;
            latest
        }
        _ => source,
    };
    let mut events = None;
    let mut cursor = None;
    let mut hasher = None;
    let time_column = m.time_column.clone().unwrap_or_default();
    if sync.table_type == TableType::Events {
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
            // In mirror mode the primary key makes the `$insert_id`, so an updated row
            // replaces its earlier import.
            key_columns: if sync.diffs_snapshots() && m.key_columns.is_empty() {
                key_columns.clone()
            } else {
                m.key_columns.clone()
            },
            exclude_columns: m.exclude_columns.clone(),
        };
        events = Some(Arc::new(
            EventMapper::new(mapping, &schema.arrow).map_err(merr)?,
        ));
    }
    if sync.diffs_snapshots() {
        if key_columns.is_empty() {
            return Err(unsupported(
                "full or mirror without `primary_key` (the table declares none): set the columns identifying a row, e.g. `primary_key = [\"id\"]`".into(),
            ));
        }
        // For events, the identity (name column, distinct id, time) splits the fingerprint
        // so an update that changes it is told apart.
        let identity: Vec<String> = if sync.table_type == TableType::Events {
            [
                m.event_name_column.clone(),
                m.user_id_column.clone(),
                m.device_id_column.clone(),
                m.time_column.clone(),
            ]
            .into_iter()
            .flatten()
            .filter(|c| !key_columns.contains(c))
            .collect()
        } else {
            Vec::new()
        };
        let json: Vec<String> = m.properties_column.iter().cloned().collect();
        hasher = Some(Arc::new(
            RowHasher::new(&schema.arrow, &key_columns, &identity, &json).map_err(merr)?,
        ));
    } else {
        let cursor_name = m.insert_time_column.clone().unwrap_or(time_column);
        let cursor_type = check_cursor(&source, &schema, &cursor_name).map_err(werr)?;
        if sync.lookback.is_some() && cursor_type.is_integer() {
            return Err(merr(MappingError::WrongType {
                column: cursor_name,
                role: "the insert-time cursor of a sync with `lookback`",
                found: format!("{cursor_type:?}"),
                expected: "a TIMESTAMP or DATE column (an integer has no unit to look back by)",
            }));
        }
        if sync.table_type != TableType::Events {
            // Append of profiles, groups and lookup tables: the rows are keyed; per key the
            // latest row by insert time is the one sent (the warehouse picks it).
            if key_columns.is_empty() {
                return Err(unsupported(
                    "an append sync of a lookup table without `primary_key`: set the key column, e.g. `primary_key = [\"id\"]`".into(),
                ));
            }
            let json: Vec<String> = m.properties_column.iter().cloned().collect();
            hasher = Some(Arc::new(
                RowHasher::new(&schema.arrow, &key_columns, &[], &json).map_err(merr)?,
            ));
            if latest_by.is_none() {
                let latest = warehouse.latest_per_key(&source, &schema, &key_columns, &cursor_name);
                schema = warehouse.describe(&latest).map_err(werr)?;
                source = latest;
            }
        }
        cursor = Some((cursor_name, cursor_type));
    }
    Ok(ResolvedSync {
        warehouse,
        warehouse_type: wh_config.kind().to_string(),
        source,
        schema,
        events,
        cursor,
        hasher,
        sync,
    })
}

/// The change mapper of a snapshot sync for a destination (`envelope`: the destination takes
/// change envelopes, e.g. a file or Kafka).
pub fn change_mapper(
    config: &Config,
    resolved: &ResolvedSync,
    destination: &str,
    envelope: Option<Envelope>,
) -> Result<Arc<dyn ChangeMapper>, SyncError> {
    let sync = &resolved.sync;
    let merr = |e| SyncError::Mapping(sync.name.clone(), e);
    let m = &sync.mapping;
    let token = match &config.destinations[destination] {
        DestinationConfig::Mixpanel(mp) => mp.project_token.as_ref(),
        DestinationConfig::Kafka(k) => k.project_token.as_ref(),
        DestinationConfig::File { .. } => None,
    }
    .map(|t| t.expose().to_string())
    .unwrap_or_default();
    let key = sync.key_columns().first().cloned().unwrap_or_default();
    Ok(match sync.table_type {
        TableType::Events => {
            let mapper = resolved
                .events
                .as_ref()
                .ok_or_else(|| SyncError::Unsupported {
                    sync: sync.name.clone(),
                    what: "events without a mapping".into(),
                })?;
            Arc::new(EventChanges::new(mapper.clone(), envelope))
        }
        TableType::Users | TableType::Groups => {
            let target = if sync.table_type == TableType::Users {
                ProfileTarget::User
            } else {
                ProfileTarget::Group {
                    group_key: m.group_key.clone().unwrap_or_default(),
                }
            };
            let mapping = ProfileMapping {
                target,
                token,
                id_column: key,
                properties_column: m.properties_column.clone(),
                exclude_columns: m.exclude_columns.clone(),
            };
            Arc::new(ProfileChanges::new(&mapping, &resolved.schema.arrow, envelope).map_err(merr)?)
        }
        // A change-capable destination gets each row's change; Mixpanel gets the whole table.
        TableType::Lookup if envelope.is_some() => {
            let mapping = ProfileMapping {
                target: ProfileTarget::User,
                token,
                id_column: key,
                properties_column: None,
                exclude_columns: m.exclude_columns.clone(),
            };
            Arc::new(ProfileChanges::new(&mapping, &resolved.schema.arrow, envelope).map_err(merr)?)
        }
        TableType::Lookup => Arc::new(
            LookupRows::new(&resolved.schema.arrow, &key, &m.exclude_columns).map_err(merr)?,
        ),
    })
}

/// A destination ready for a run.
pub struct BuiltDestination {
    /// Its name in the config.
    pub name: String,
    /// The destination.
    pub destination: Arc<dyn Destination>,
    /// Its retry and concurrency policy.
    pub policy: RetryPolicy,
    /// Its request limits.
    pub limits: BatchLimits,
    /// It takes change envelopes rather than bare payloads.
    pub envelope: bool,
}

/// The value of `{sync}`, `{table}` and `{table_type}` in a template.
fn fill_template(template: &str, sync: &SyncConfig) -> String {
    template
        .replace("{sync}", &sync.name)
        .replace("{table}", sync.table.as_deref().unwrap_or("query"))
        .replace("{table_type}", table_type_name(sync.table_type))
}

/// `events`, `users`, `groups` or `lookup`.
pub fn table_type_name(t: TableType) -> &'static str {
    match t {
        TableType::Events => "events",
        TableType::Users => "users",
        TableType::Groups => "groups",
        TableType::Lookup => "lookup",
    }
}

/// Builds the destination `name` for `resolved`'s table type (connecting where the
/// destination needs it, on `runtime`).
pub fn build_destination(
    config: &Config,
    resolved: &ResolvedSync,
    name: &str,
    runtime: &tokio::runtime::Handle,
) -> Result<BuiltDestination, SyncError> {
    let sync = &resolved.sync;
    let derr = |e| SyncError::Destination(sync.name.clone(), name.to_string(), e);
    let d = |v: &Option<String>, default: Duration| {
        v.as_deref().and_then(parse_duration).unwrap_or(default)
    };
    let defaults = RetryPolicy::default();
    match &config.destinations[name] {
        DestinationConfig::Kafka(k) => {
            let settings = KafkaSettings {
                brokers: k.brokers.clone(),
                topic: fill_template(&k.topic, sync),
                sync: sync.name.clone(),
                compression: k.compression.as_str(),
                partitions: k.partitions.unwrap_or(3),
                replication_factor: k.replication_factor.unwrap_or(1),
                exactly_once: k.exactly_once.then(|| ExactlyOnce {
                    transactional_id: fill_template(
                        k.transactional_id.as_deref().unwrap_or("wharf-{sync}"),
                        sync,
                    ),
                    progress_topic: fill_template(
                        k.progress_topic
                            .as_deref()
                            .unwrap_or("wharf.progress.{sync}"),
                        sync,
                    ),
                }),
                delivery_timeout: d(&k.delivery_timeout, Duration::from_secs(30)),
                linger: d(&k.linger, Duration::from_millis(5)),
                headers: k.headers,
                properties: k.exposed_properties(),
            };
            let dest = KafkaDestination::open(settings, runtime).map_err(derr)?;
            Ok(BuiltDestination {
                name: name.to_string(),
                destination: Arc::new(dest),
                policy: RetryPolicy {
                    initial_backoff: Duration::from_millis(500),
                    max_backoff: Duration::from_secs(30),
                    max_jitter: Duration::from_millis(500),
                    give_up_after: d(&k.give_up_after, defaults.give_up_after),
                    concurrency: k.concurrency.unwrap_or(4).max(1),
                    rate: RateCap {
                        records_per_second: k.max_records_per_second.filter(|r| *r > 0.0),
                        bytes_per_minute: None,
                    },
                },
                limits: BatchLimits {
                    max_records: 50_000,
                    max_bytes: 32 << 20,
                },
                envelope: k.payload == KafkaPayload::Envelope,
            })
        }
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
            let limits = BatchLimits {
                max_records: 8192,
                max_bytes: 8 << 20,
            };
            Ok(BuiltDestination {
                name: name.to_string(),
                destination: Arc::new(dest),
                policy,
                limits,
                // Snapshot syncs write changes with their ops; append syncs what would be sent.
                envelope: resolved.hasher.is_some(),
            })
        }
        DestinationConfig::Mixpanel(m) => {
            let policy = RetryPolicy {
                initial_backoff: d(&m.initial_backoff, defaults.initial_backoff),
                max_backoff: d(&m.max_backoff, defaults.max_backoff),
                max_jitter: defaults
                    .max_jitter
                    .min(d(&m.initial_backoff, defaults.max_jitter)),
                give_up_after: d(&m.give_up_after, defaults.give_up_after),
                concurrency: m.concurrency.unwrap_or(defaults.concurrency).max(1),
                rate: RateCap {
                    records_per_second: m.max_records_per_second.filter(|r| *r > 0.0),
                    // Mixpanel's own hosts get a default below their 2 GB/min limit; a custom
                    // api_host (the local receiver, a proxy) is capped only when configured.
                    bytes_per_minute: m
                        .max_mb_per_minute
                        .or(m.api_host.is_none().then_some(1500.0))
                        .map(|mb| mb * 1e6)
                        .filter(|b| *b > 0.0),
                },
            };
            let timeout = d(&m.timeout, Duration::from_secs(120));
            let (destination, limits): (Arc<dyn Destination>, BatchLimits) = match sync.table_type {
                TableType::Events => (
                    Arc::new(MixpanelImport::new(m, timeout).map_err(derr)?),
                    IMPORT_LIMITS,
                ),
                TableType::Users => (
                    Arc::new(
                        MixpanelProfiles::new(m, ProfileEndpoint::Users, timeout).map_err(derr)?,
                    ),
                    ENGAGE_LIMITS,
                ),
                TableType::Groups => (
                    Arc::new(
                        MixpanelProfiles::new(m, ProfileEndpoint::Groups, timeout).map_err(derr)?,
                    ),
                    BatchLimits {
                        max_records: m
                            .groups_batch_size
                            .unwrap_or(GROUPS_LIMITS.max_records)
                            .clamp(1, 2000),
                        ..GROUPS_LIMITS
                    },
                ),
                TableType::Lookup => {
                    let key = sync.key_columns().first().cloned().unwrap_or_default();
                    let rows = LookupRows::new(
                        &resolved.schema.arrow,
                        &key,
                        &sync.mapping.exclude_columns,
                    )
                    .map_err(|e| SyncError::Mapping(sync.name.clone(), e))?;
                    let id = sync.mapping.lookup_table_id.clone().unwrap_or_default();
                    (
                        Arc::new(
                            MixpanelLookupTable::new(m, &id, rows.header(), timeout)
                                .map_err(derr)?,
                        ),
                        BatchLimits {
                            max_records: 8192,
                            max_bytes: 8 << 20,
                        },
                    )
                }
            };
            Ok(BuiltDestination {
                name: name.to_string(),
                destination,
                policy,
                limits,
                envelope: false,
            })
        }
    }
}

/// Changes read from a change stream per run, at most (rounded up to whole transactions).
pub const MAX_CHANGES_PER_POLL: usize = 100_000;

/// How a run learns what to send.
enum CaptureMode {
    /// Append, full, or mirror by snapshot diff.
    Snapshot,
    /// Mirror through logical decoding: the first run (`initial` = the slot's position) diffs
    /// a snapshot, later runs read the slot.
    Logical {
        pg: PostgresWarehouse,
        capture: Capture,
        initial: Option<u64>,
    },
    /// Mirror through a warehouse's change function (Snowflake `CHANGES`, Databricks'
    /// Change Data Feed, BigQuery `CHANGES`): the first run (`from` = none) diffs a snapshot
    /// and commits `to`, the position read before the snapshot; later runs read the changes
    /// after the committed position up to `to` and commit `to`.
    Function {
        from: Option<Watermark>,
        to: Watermark,
    },
}

/// Decides whether a mirror sync reads the warehouse's change stream, creating its slot and
/// publication when it does.
fn capture_mode(resolved: &ResolvedSync, store: &StateStore) -> Result<CaptureMode, SyncError> {
    let sync = &resolved.sync;
    if sync.mode != SyncMode::Mirror || sync.change_capture == ChangeCapture::Snapshot {
        return Ok(CaptureMode::Snapshot);
    }
    let werr = |e| SyncError::Warehouse(sync.name.clone(), e);
    let warehouse = &resolved.warehouse;
    let unavailable = match (warehouse.logical_decoding(), &resolved.source) {
        (Some(pg), SourceRef::Table(table)) => {
            let capture = Capture::for_sync(&sync.name, table);
            match pg
                .capture_unavailable(&capture, &sync.key_columns())
                .map_err(werr)?
            {
                None => {
                    let start = pg.start_capture(&capture).map_err(werr)?;
                    let committed = store.watermark(&sync.name)?;
                    let initial = (start.created || committed.is_none()).then_some(start.lsn);
                    return Ok(CaptureMode::Logical {
                        pg: pg.clone(),
                        capture,
                        initial,
                    });
                }
                Some(reason) => reason,
            }
        }
        (Some(_), SourceRef::Query(_)) => {
            "a query (or a history table's latest rows) has no change stream; name a table".into()
        }
        (None, src) => match warehouse.change_function() {
            Some(changes) => {
                let from = store.watermark(&sync.name)?;
                // A committed position means the function was read before; otherwise probe it.
                let start = match from {
                    Some(_) => Ok(changes.change_position(src).map_err(werr)?),
                    None => changes.change_start(src).map_err(werr)?,
                };
                match start {
                    Ok(to) => return Ok(CaptureMode::Function { from, to }),
                    Err(reason) => reason,
                }
            }
            None => format!(
                "{} has no change stream wharf reads",
                resolved.warehouse_type
            ),
        },
    };
    if sync.change_capture == ChangeCapture::Logical {
        return Err(SyncError::Unsupported {
            sync: sync.name.clone(),
            what: format!("change capture here: {unavailable}"),
        });
    }
    tracing::warn!(sync = %sync.name, reason = %unavailable, "mirror falls back to snapshot diffs");
    Ok(CaptureMode::Snapshot)
}

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
    loop {
        let report = run_in_session(config, name, &options, runtime, &mut session, &store)?
            .ok_or_else(|| SyncError::RunFailed {
                permanent: false,
                sync: name.to_string(),
                run_id: 0,
                reason: "no run was made".into(),
            })?;
        // A change stream with more waiting than one run takes: further runs, each committed,
        // until the position the stream had when this sync started.
        match report.backlog {
            Some(upto) => {
                tracing::info!(
                    sync = name,
                    run = report.run.run_id,
                    "more changes are waiting; running again up to where the stream stood at the start"
                );
                on_run(&report);
                options.capture_upto = Some(upto);
            }
            None => return Ok(report),
        }
    }
}

/// Runs `name` back to back every `interval` until `stop` is set, sending each change as soon
/// as a poll finds it; idle polls record no run. A failed run is logged and retried after a
/// backoff (up to 30 s). Returns the number of runs committed.
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

/// The run that loaded a one-time sync's table, if it did (its last successful run; `wharf
/// reset` forgets it).
pub fn one_time_load(store: &StateStore, name: &str) -> Result<Option<RunRecord>, StateError> {
    let since = store.reset_point(name)?;
    Ok(store
        .runs(name, crate::state::MAX_RUNS_PER_SYNC)?
        .into_iter()
        .find(|r| r.status == RunStatus::Succeeded && r.run_id > since))
}

/// What consecutive runs of one sync in one process share: its connected destinations.
/// Drop it (or start a new one) after a failed run or a config change.
#[derive(Default)]
pub struct Session {
    destinations: Option<Vec<BuiltDestination>>,
    /// Continuous runs: the cheap check made before each run (see [`probe`]).
    probe: Option<probe::Probe>,
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
            probe::Probed::Idle => return Ok(None),
            probe::Probed::Busy(rows) => probed_rows = rows,
        }
    }
    let resolved = resolve(config, name)?;
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
    let after = match sync.mode {
        SyncMode::Append => store.watermark(name)?,
        _ => None,
    };
    // With a look-back window the read starts that much before the watermark (late rows);
    // the watermark itself never moves back.
    let lookback = sync.lookback.as_deref().and_then(parse_duration);
    let read_from = probe::read_position(after, lookback);
    if sync.mode == SyncMode::OneTime {
        if let Some(done) = one_time_load(store, name)? {
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
    if options.skip_idle && session.probe.is_none() {
        session.probe = match (&capture, &resolved.cursor) {
            (CaptureMode::Logical { pg, capture, .. }, _) => {
                Some(probe::Probe::logical(pg.clone(), capture.clone()))
            }
            (CaptureMode::Snapshot, Some(cursor)) if sync.mode == SyncMode::Append => {
                Some(probe::Probe::append(
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
        CaptureMode::Logical {
            pg,
            capture,
            initial: None,
        } => {
            let werr = |e| SyncError::Warehouse(name.to_string(), e);
            let seen = committed.as_ref().and_then(|c| c.seen.as_ref());
            let poll = pg
                .poll_capture(
                    capture,
                    &sync.key_columns(),
                    options.max_changes,
                    options.capture_upto,
                    seen,
                )
                .map_err(werr)?;
            if poll.changes_read == 0 && options.skip_idle {
                if let (true, Some(lsn)) = (poll.changes_skipped > 0, poll.end_lsn) {
                    // Only transactions the first snapshot held: move past them.
                    pg.confirm_capture(capture, lsn).map_err(werr)?;
                    store.advance_watermark(name, lsn_watermark(lsn))?;
                }
                return Ok(None);
            }
            if poll.capped {
                backlog = match options.capture_upto {
                    Some(upto) => Some(upto),
                    None => Some(pg.current_lsn(capture).map_err(werr)?),
                };
            }
            Some(poll)
        }
        CaptureMode::Function {
            from: Some(from),
            to,
        } => {
            let compacted = crate::warehouse::read_changes(
                resolved.warehouse.as_ref(),
                &resolved.source,
                &sync.key_columns(),
                (*from, *to),
            )
            .map_err(|e| SyncError::Warehouse(name.to_string(), e))?;
            if compacted.changes_read == 0 && options.skip_idle {
                store.advance_watermark(name, *to)?;
                return Ok(None);
            }
            Some(ChangePoll {
                batches: compacted.batches,
                changes_read: compacted.changes_read,
                ..ChangePoll::default()
            })
        }
        _ => None,
    };
    let total = match (&resolved.cursor, &poll) {
        (_, Some(p)) => Some(p.batches.iter().map(|b| b.num_rows() as u64).sum()),
        (Some(_), None) if probed_rows.is_some() => probed_rows,
        (Some((cursor, cursor_type)), None) => resolved
            .warehouse
            .count_after(&resolved.source, cursor, cursor_type, read_from)
            .ok(),
        (None, None) => resolved.warehouse.count(&resolved.source).ok(),
    };
    let end_lsn = poll.as_ref().and_then(|p| p.end_lsn);
    let stream_batches = poll.map(|p| p.batches);
    if options.skip_idle && sync.mode == SyncMode::Append && total == Some(0) {
        return Ok(None);
    }
    let mode_name = format!("{:?}", sync.mode).to_lowercase();
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
    let control = RunControl::new(64 * 1024);
    if let Some(Ok(mut slot)) = options.live.as_ref().map(|s| s.lock()) {
        *slot = Some(LiveRun {
            run_id: run.run_id,
            started: std::time::Instant::now(),
            total,
            control: control.clone(),
        });
    }
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
    let mut sinks = Vec::with_capacity(built.len());
    for b in built {
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
            Some(_) => SinkMapper::Changes(change_mapper(config, &resolved, &b.name, env)?),
        };
        sinks.push(SinkSpec {
            destination: b.destination.clone(),
            limits: b.limits,
            policy: b.policy.clone(),
            mapper,
        });
    }
    let keyed_append = sync.mode == SyncMode::Append && resolved.hasher.is_some();
    // A lookup table is replaced whole: an append run that finds new rows sends all of them.
    let whole_lookup = keyed_append && sync.table_type == TableType::Lookup;
    let (plan, diff_counts) = match &resolved.hasher {
        None => (Plan::Append, None),
        Some(hasher) if stream_batches.is_some() => {
            let counts = Arc::new(DiffCounts::default());
            (
                Plan::Changes {
                    hasher: hasher.clone(),
                    counts: counts.clone(),
                },
                Some(counts),
            )
        }
        // Append of keyed rows: every row read is sent (its key's latest); no state is kept.
        Some(hasher) if keyed_append => {
            let scratch = state_dir.join("tmp").join(format!("{name}-append"));
            let _ = std::fs::remove_dir_all(&scratch);
            let counts = Arc::new(DiffCounts::default());
            let spec = DiffSpec {
                hasher: hasher.clone(),
                previous: Vec::new(),
                pending: Vec::new(),
                next_dir: scratch.join("state"),
                spill_dir: scratch.join("spill"),
                memory_budget: 64 << 20,
                emit: Emit::All,
                send_deletes: false,
            };
            (
                Plan::Diff {
                    spec: Arc::new(spec),
                    counts: counts.clone(),
                },
                Some(counts),
            )
        }
        Some(hasher) => {
            let spill_dir = state_dir.join("tmp").join(name);
            let _ = std::fs::remove_dir_all(&spill_dir);
            let counts = Arc::new(DiffCounts::default());
            let spec = DiffSpec {
                hasher: hasher.clone(),
                previous: committed_parts(committed.as_ref(), &state_dir),
                pending: pending_snapshots(name, &snapshots_dir, committed.as_ref(), true)?,
                next_dir: next_dir.clone(),
                spill_dir,
                memory_budget: 64 << 20,
                emit: match (sync.table_type, sync.resend_all) {
                    (TableType::Lookup, _) => Emit::AllIfChanged,
                    (_, true) => Emit::All,
                    (_, false) => Emit::Changes,
                },
                send_deletes: sync.mode == SyncMode::Mirror,
            };
            (
                Plan::Diff {
                    spec: Arc::new(spec),
                    counts: counts.clone(),
                },
                Some(counts),
            )
        }
    };
    let reader: wharf_operators::dataflow::StartReader =
        if let Some(batches) = stream_batches {
            let handle = runtime.handle().clone();
            Box::new(move |sender: SourceSender| {
                handle.spawn_blocking(move || {
                    for batch in batches {
                        if sender.send(SourceMessage::Batch(batch)).is_err() {
                            break;
                        }
                    }
                });
            })
        } else {
            let (warehouse, source, watermark) = (
                resolved.warehouse.clone(),
                resolved.source.clone(),
                watermark.clone(),
            );
            // The first snapshot of a change-captured table says which transactions it saw.
            let first_capture = match &capture {
                CaptureMode::Logical {
                    pg,
                    initial: Some(_),
                    ..
                } => Some((pg.clone(), snapshot_seen.clone())),
                _ => None,
            };
            let cursor = resolved.cursor.clone();
            let cursor_idx = cursor
                .as_ref()
                .and_then(|c| resolved.schema.arrow.index_of(&c.0).ok())
                .unwrap_or(0);
            let handle = runtime.handle().clone();
            Box::new(move |sender: SourceSender| {
                handle.spawn_blocking(move || {
                let mut max = None;
                let result = match &cursor {
                    // New rows of a lookup table: the whole table goes (it is replaced).
                    Some(_) if whole_lookup && total == Some(0) => Ok(()),
                    Some(_) if whole_lookup => warehouse.read_snapshot(&source, &mut |batch| {
                        max = max_watermark(max, column_max(batch.column(cursor_idx).as_ref()));
                        sender.send(SourceMessage::Batch(batch)).is_ok()
                    }),
                    Some((cursor, cursor_type)) => {
                        warehouse.read_after(&source, cursor, cursor_type, read_from, &mut |batch| {
                            max = max_watermark(max, column_max(batch.column(cursor_idx).as_ref()));
                            sender.send(SourceMessage::Batch(batch)).is_ok()
                        })
                    }
                    None => match &first_capture {
                        Some((pg, seen)) => pg
                            .read_snapshot_seen(&source, |batch| {
                                sender.send(SourceMessage::Batch(batch)).is_ok()
                            })
                            .map(|v| {
                                if let Ok(mut s) = seen.lock() {
                                    *s = Some(v);
                                }
                            }),
                        None => warehouse.read_snapshot(&source, &mut |batch| {
                            sender.send(SourceMessage::Batch(batch)).is_ok()
                        }),
                    },
                };
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
    let described: Vec<String> = built.iter().map(|b| b.destination.describe()).collect();
    tracing::info!(sync = name, run = run.run_id, after = ?after, rows = ?total, destinations = ?described, "run started");
    let result = run_dataflow(RunSpec {
        workers: options.workers.max(1),
        epoch: run.run_id,
        reader,
        plan,
        sinks,
        rejects: logs.clone(),
        control: control.clone(),
        runtime: runtime.handle().clone(),
        now_ms: chrono::Utc::now().timestamp_millis(),
    });
    if let Some(p) = progress {
        p.finish();
    }
    let result = result.and_then(|outcome| {
        logs.flush()
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
            run.unapplied = control
                .counters
                .changes_unapplied
                .load(std::sync::atomic::Ordering::Relaxed);
            let new_wm = match (&capture, sync.mode) {
                (_, SyncMode::Append) => max_watermark(after, after_wm),
                // The change stream's position: the slot's, once it has moved.
                (CaptureMode::Logical { initial: None, .. }, _) => end_lsn.map(lsn_watermark),
                (
                    CaptureMode::Logical {
                        initial: Some(lsn), ..
                    },
                    _,
                ) => Some(lsn_watermark(*lsn)),
                (CaptureMode::Function { to, .. }, _) => Some(*to),
                _ => None,
            };
            let streamed = matches!(
                capture,
                CaptureMode::Logical { initial: None, .. }
                    | CaptureMode::Function { from: Some(_), .. }
            );
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
            // Transactional destinations commit the run's records with its position.
            let position = RunPosition {
                run: run.clone(),
                watermark: new_wm,
                snapshot: snapshot.clone(),
                lsn: end_lsn,
            };
            let position = serde_json::to_vec(&position).unwrap_or_default();
            for b in built.iter().filter(|b| b.destination.is_transactional()) {
                if let Err(e) = runtime.block_on(b.destination.commit(&position)) {
                    for b in built {
                        runtime.block_on(b.destination.abort());
                    }
                    let run_id = run.run_id;
                    let reason = format!("{}: {e}", b.destination.describe());
                    store.end_run_uncommitted(run, RunStatus::Failed, Some(reason.clone()))?;
                    return Err(SyncError::RunFailed {
                        permanent: false,
                        sync: name.to_string(),
                        run_id,
                        reason,
                    });
                }
            }
            if options.crash_after_destination_commit {
                eprintln!(
                    "wharf: simulated crash after the destinations committed, before the state store (run {})",
                    run.run_id
                );
                std::process::exit(71);
            }
            if let (CaptureMode::Logical { pg, capture, .. }, Some(lsn)) = (&capture, end_lsn) {
                // Delivered: the slot may release these changes. A crash before this line
                // replays them on the next run, which is harmless.
                if let Err(e) = pg.confirm_capture(capture, lsn) {
                    let run_id = run.run_id;
                    let reason = format!("delivered, but the slot could not be advanced: {e}");
                    store.end_run_uncommitted(run, RunStatus::Failed, Some(reason.clone()))?;
                    return Err(SyncError::RunFailed {
                        permanent: false,
                        sync: name.to_string(),
                        run_id,
                        reason,
                    });
                }
                if options.crash_after_slot_confirm {
                    eprintln!(
                        "wharf: simulated crash after the slot was confirmed, before the state store (run {})",
                        run.run_id
                    );
                    std::process::exit(72);
                }
            }
            let run = store.commit_run(run, new_wm, snapshot.as_ref())?;
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
        Err(e) => {
            let c = &control.counters;
            let mut failed = run;
            failed.rows_read = c.rows_read.load(std::sync::atomic::Ordering::Relaxed);
            failed.delivered = c
                .records_delivered
                .load(std::sync::atomic::Ordering::Relaxed);
            failed.rejected = c.rows_rejected.load(std::sync::atomic::Ordering::Relaxed);
            failed.bytes_sent = c.bytes_sent.load(std::sync::atomic::Ordering::Relaxed);
            let run_id = failed.run_id;
            let cancelled = control.is_cancelled();
            let status = if cancelled {
                RunStatus::Cancelled
            } else {
                RunStatus::Failed
            };
            store.end_run_uncommitted(failed, status, Some(e.0.clone()))?;
            // The run's snapshot folder stays: it may have delivered changes, which the next
            // diff must know (see `pending_snapshots`).
            if cancelled {
                return Err(SyncError::Cancelled {
                    sync: name.to_string(),
                    run_id,
                    reason: e.0,
                });
            }
            Err(SyncError::RunFailed {
                permanent: control.is_permanent(),
                sync: name.to_string(),
                run_id,
                reason: e.0,
            })
        }
    }
}

/// Makes `name` start over: forgets its committed watermark / change position and snapshot
/// state, removes its snapshot files and, for a PostgreSQL mirror, drops its replication slot
/// and publication (the next run recreates them). The next run sends the whole table again
/// (Mixpanel deduplicates events by `$insert_id`; profiles are set again). Returns what was
/// cleared, for the user.
pub fn reset_sync(config: &Config, name: &str) -> Result<Vec<String>, SyncError> {
    let resolved = resolve(config, name)?;
    let store = StateStore::open(&config.state_dir())?;
    let mut cleared = Vec::new();
    if store.reset(name)? {
        cleared.push(
            "the committed watermark / position, snapshot state and record of a one-time load"
                .to_string(),
        );
    }
    let snapshots = config.state_dir().join("snapshots").join(name);
    if snapshots.exists() {
        std::fs::remove_dir_all(&snapshots).map_err(|e| SyncError::RunFailed {
            permanent: false,
            sync: name.to_string(),
            run_id: 0,
            reason: format!("cannot remove {}: {e}", snapshots.display()),
        })?;
        cleared.push(format!("the snapshot files in {}", snapshots.display()));
    }
    if let (Some(pg), SourceRef::Table(table)) =
        (resolved.warehouse.logical_decoding(), &resolved.source)
    {
        let capture = Capture::for_sync(name, table);
        let werr = |e| SyncError::Warehouse(name.to_string(), e);
        if pg.capture_exists(&capture).map_err(werr)? {
            pg.drop_capture(&capture).map_err(werr)?;
            cleared.push("the replication slot and publication".to_string());
        }
    }
    Ok(cleared)
}

/// What a transactional destination stores with each run's records: enough to commit the
/// run in the state store if the process stopped between the two commits.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct RunPosition {
    /// The run record as committed.
    run: RunRecord,
    /// Its watermark after the run.
    watermark: Option<Watermark>,
    /// Its snapshot state (full and mirror by snapshot diff).
    snapshot: Option<SnapshotState>,
    /// The change stream's position it read up to (mirror by change capture).
    lsn: Option<u64>,
}

/// Commits, in the state store, a run that `built` (a transactional destination) committed
/// but the state store did not (the process stopped in between), so the next run neither
/// resends nor skips anything.
fn recover_from_destination(
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
    if let (Some(lsn), Some(pg), SourceRef::Table(table)) = (
        position.lsn,
        resolved.warehouse.logical_decoding(),
        &resolved.source,
    ) {
        pg.confirm_capture(&Capture::for_sync(name, table), lsn)
            .map_err(|e| SyncError::Warehouse(name.clone(), e))?;
    }
    let mut run = position.run;
    run.error = Some("committed on restart from the destination's position".into());
    store.commit_run(run, position.watermark, position.snapshot.as_ref())?;
    Ok(())
}

fn lsn_watermark(lsn: u64) -> Watermark {
    Watermark::Integer(i64::try_from(lsn).unwrap_or(i64::MAX))
}

/// The committed snapshot's part files as paths.
fn committed_parts(committed: Option<&SnapshotState>, state_dir: &std::path::Path) -> Vec<PathBuf> {
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
fn pending_snapshots(
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
fn remove_snapshots_except(dir: &std::path::Path, keep: Option<u64>) {
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

/// What the next run of a full/mirror sync would send, found by a dry run of the diff against
/// the committed snapshot (nothing is sent or committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangePreview {
    /// Rows in the table (with a key).
    pub rows: u64,
    /// Keys that would be inserted.
    pub inserts: u64,
    /// Keys that would be updated.
    pub updates: u64,
    /// Keys that would be deleted.
    pub deletes: u64,
}

/// Dry-runs the diff of a snapshot sync.
pub fn preview_changes(
    config: &Config,
    resolved: &ResolvedSync,
    workers: usize,
    runtime: &tokio::runtime::Runtime,
) -> Result<ChangePreview, SyncError> {
    let name = &resolved.sync.name;
    let Some(hasher) = &resolved.hasher else {
        return Err(SyncError::Unsupported {
            sync: name.clone(),
            what: "a change preview for an append sync".into(),
        });
    };
    let store = StateStore::open(&config.state_dir())?;
    let committed = store.snapshot(name)?;
    let position = store.watermark(name)?;
    drop(store);
    if let Some(p) = preview_captured(
        resolved,
        position,
        committed.as_ref().and_then(|c| c.seen.as_ref()),
    )? {
        return Ok(p);
    }
    let state_dir = config.state_dir();
    let scratch = state_dir
        .join("tmp")
        .join(format!("preview-{}", std::process::id()));
    let spec = DiffSpec {
        hasher: hasher.clone(),
        previous: committed_parts(committed.as_ref(), &state_dir),
        pending: pending_snapshots(
            name,
            &state_dir.join("snapshots").join(name),
            committed.as_ref(),
            false,
        )?,
        next_dir: scratch.clone(),
        spill_dir: scratch.clone(),
        memory_budget: 64 << 20,
        emit: Emit::Changes,
        send_deletes: false,
    };
    let (warehouse, source) = (resolved.warehouse.clone(), resolved.source.clone());
    let handle = runtime.handle().clone();
    let reader: wharf_operators::dataflow::StartReader = Box::new(move |sender: SourceSender| {
        handle.spawn_blocking(move || {
            let result = warehouse.read_snapshot(&source, &mut |batch| {
                sender.send(SourceMessage::Batch(batch)).is_ok()
            });
            if let Err(e) = result {
                let _ = sender.send(SourceMessage::Failed(e.to_string()));
            }
        });
    });
    let result = wharf_operators::diff::diff_run(workers.max(1), reader, spec, false);
    let _ = std::fs::remove_dir_all(&scratch);
    let (_, counts) = result.map_err(|reason| SyncError::RunFailed {
        permanent: false,
        sync: name.clone(),
        run_id: 0,
        reason: format!("dry run: {reason}"),
    })?;
    use std::sync::atomic::Ordering::Relaxed;
    Ok(ChangePreview {
        rows: counts.rows.load(Relaxed),
        inserts: counts.inserts.load(Relaxed),
        updates: counts.updates.load(Relaxed),
        deletes: counts.deletes.load(Relaxed),
    })
}

/// The preview of a mirror sync that reads a change stream: what its slot holds now (peeked,
/// not consumed). `None` when the sync does not (yet) read one.
fn preview_captured(
    resolved: &ResolvedSync,
    position: Option<Watermark>,
    seen: Option<&SnapshotVisibility>,
) -> Result<Option<ChangePreview>, SyncError> {
    let sync = &resolved.sync;
    let (SourceRef::Table(table), SyncMode::Mirror, Some(position)) =
        (&resolved.source, sync.mode, position)
    else {
        return Ok(None);
    };
    if sync.change_capture == ChangeCapture::Snapshot {
        return Ok(None);
    }
    let werr = |e| SyncError::Warehouse(sync.name.clone(), e);
    let warehouse = resolved.warehouse.as_ref();
    let batches = match (warehouse.logical_decoding(), warehouse.change_function()) {
        (Some(pg), _) => {
            let capture = Capture::for_sync(&sync.name, table);
            if !pg.capture_exists(&capture).map_err(werr)? {
                return Ok(None);
            }
            pg.poll_capture(
                &capture,
                &sync.key_columns(),
                MAX_CHANGES_PER_POLL,
                None,
                seen,
            )
            .map_err(werr)?
            .batches
        }
        // A committed position of a change function: what the next run would read.
        (None, Some(changes)) => {
            let to = changes.change_position(&resolved.source).map_err(werr)?;
            changes
                .read_changes(&resolved.source, &sync.key_columns(), position, to)
                .map_err(werr)?
                .batches
        }
        (None, None) => return Ok(None),
    };
    let mut preview = ChangePreview {
        rows: resolved.warehouse.count(&resolved.source).map_err(werr)?,
        inserts: 0,
        updates: 0,
        deletes: 0,
    };
    for b in &batches {
        use wharf_operators::arrow::array::AsArray;
        let Some(ops) = b.columns().last().and_then(|c| c.as_string_opt::<i32>()) else {
            continue;
        };
        for op in ops.iter().flatten() {
            match op {
                "insert" => preview.inserts += 1,
                "update" => preview.updates += 1,
                _ => preview.deletes += 1,
            }
        }
    }
    Ok(Some(preview))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_permanent_or_transient() {
        let wh = |e| SyncError::Warehouse("s".into(), e);
        assert!(!wh(WarehouseError::Unavailable {
            what: "w".into(),
            message: "connection refused".into()
        })
        .is_permanent());
        assert!(wh(WarehouseError::MissingTable {
            source_ref: SourceRef::Table("t".into()),
            warehouse: "w".into()
        })
        .is_permanent());
        assert!(wh(WarehouseError::Open {
            what: "w".into(),
            message: "password authentication failed".into()
        })
        .is_permanent());
        let dest = |e| SyncError::Destination("s".into(), "mp".into(), e);
        assert!(dest(DestinationError::Permanent {
            message: "401".into()
        })
        .is_permanent());
        assert!(!dest(DestinationError::Transient {
            message: "503".into(),
            retry_after: None
        })
        .is_permanent());
        let failed = |permanent| SyncError::RunFailed {
            sync: "s".into(),
            run_id: 1,
            reason: "r".into(),
            permanent,
        };
        assert!(failed(true).is_permanent() && !failed(false).is_permanent());
    }
}
