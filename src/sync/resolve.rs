//! A sync's config resolved into its warehouse, source, schema and record mapper.

use std::sync::Arc;

use wharf_operators::arrow::datatypes::DataType;
use wharf_operators::change::ChangeMapper;
use wharf_operators::columns::{find_column, MappingError};
use wharf_operators::envelope::Envelope;
use wharf_operators::mixpanel::changes::{
    EventChanges, LookupRows, ProfileChanges, ProfileMapping, ProfileTarget,
};
use wharf_operators::mixpanel::events::{EpochUnit, EventMapper, EventMapping, EventName};
use wharf_operators::snapshot::RowHasher;

use super::error::SyncError;
use crate::config::{Config, SyncConfig, TableType, TimeUnitConfig};
use crate::destination::{BuildContext, BuildError, BuiltDestination};
use crate::warehouse::{check_cursor, SourceRef, TableSchema, Warehouse};

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
    let mut source = match (&sync.table, &sync.query) {
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
    // A profile history table into Kafka or files: every row, keyed by user and start, with
    // the start of the user's next row as its end (SCD type 2); into Mixpanel, which keeps
    // only a profile's current state, the latest row per user.
    let history_rows = sync.table_type == TableType::Users
        && sync.mapping.history_start_column.is_some()
        && history_destinations(config, &sync).map_err(unsupported)?
        && !sync.key_columns().is_empty();
    if let Some(start) = sync
        .mapping
        .history_start_column
        .clone()
        .filter(|_| history_rows)
    {
        find_column(&schema.arrow, &start, "history_start_column").map_err(merr)?;
        let key = sync.key_columns();
        source = warehouse.history_rows(&source, &key, &start);
        schema = warehouse.describe(&source).map_err(werr)?;
        sync.primary_key = key.into_iter().chain([start]).collect();
    }
    let sync = sync;
    let m = &sync.mapping;
    let key_columns = sync.key_columns();
    // Profile history tables (into Mixpanel) and `dedupe_by`: per key, the row with the
    // greatest value of the column (the warehouse picks it).
    let latest_by = match (&m.history_start_column, &sync.dedupe_by) {
        (Some(start), _) if sync.table_type == TableType::Users && !history_rows => {
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

/// Whether the destinations of `sync`, a profile history sync, get every history row (Kafka,
/// files: true) or the latest row per user (Mixpanel: false); both at once is refused.
fn history_destinations(config: &Config, sync: &SyncConfig) -> Result<bool, String> {
    let rows: Vec<bool> = sync
        .destinations
        .iter()
        .filter_map(|d| config.destinations.get(d))
        .map(|d| d.takes_rows())
        .collect();
    match (rows.iter().any(|r| *r), rows.iter().all(|r| *r)) {
        (true, false) => Err(
            "a profile history sync (`history_start_column`) into Mixpanel and into Kafka or a file at once: Mixpanel gets the latest row per user, Kafka and files every history row; split it into two syncs".into(),
        ),
        (any, _) => Ok(any),
    }
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
    let token = config.destinations[destination]
        .project_token()
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

/// Builds the destination `name` for `resolved`'s sync (connecting where the destination
/// needs it, on `runtime`).
pub fn build_destination(
    config: &Config,
    resolved: &ResolvedSync,
    name: &str,
    runtime: &tokio::runtime::Handle,
) -> Result<BuiltDestination, SyncError> {
    let ctx = BuildContext {
        config,
        sync: &resolved.sync,
        schema: &resolved.schema.arrow,
        changes: resolved.hasher.is_some(),
        runtime,
    };
    config.destinations[name]
        .build(name, &ctx)
        .map_err(|e| match e {
            BuildError::Destination(e) => {
                SyncError::Destination(resolved.sync.name.clone(), name.to_string(), e)
            }
            BuildError::Mapping(e) => SyncError::Mapping(resolved.sync.name.clone(), e),
        })
}
