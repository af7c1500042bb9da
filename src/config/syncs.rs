//! `[[syncs]]`: what one sync reads, maps and sends, and the checks that need nothing but the
//! sync itself (those naming warehouses and destinations are [`crate::config::Config`]'s).

use std::path::PathBuf;

use serde::Deserialize;

use super::invalid::Invalid;
use crate::duration::Span;
use crate::schedule::ScheduleSetting;

/// Mixpanel's table types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableType {
    /// Events (`/import`).
    Events,
    /// User profiles (`/engage`).
    Users,
    /// Group profiles (`/groups`).
    Groups,
    /// Lookup tables.
    Lookup,
}

/// How rows are selected each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Rows whose insert time is past the last run's maximum.
    Append,
    /// The whole table each run, upserted.
    Full,
    /// Inserts, updates and deletes.
    Mirror,
    /// One snapshot, once.
    OneTime,
}

/// How a mirror sync learns of changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeCapture {
    /// The warehouse's own change stream where it has one (PostgreSQL with
    /// `wal_level = logical`; Snowflake, Databricks and BigQuery tables with their change
    /// output on), else snapshot diffs (stated in the logs).
    #[default]
    Auto,
    /// The warehouse's change stream, or an error saying why it cannot be used.
    Logical,
    /// Always diff snapshots.
    Snapshot,
}

/// Unit of an integer time column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnitConfig {
    /// ≥ 10^11 → milliseconds, else seconds.
    #[default]
    Auto,
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Milliseconds,
}

/// How columns map to Mixpanel's fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// A static event name for every row…
    pub event_name: Option<String>,
    /// …or the column holding it.
    pub event_name_column: Option<String>,
    /// The event time column.
    pub time_column: Option<String>,
    /// Unit of an integer time column.
    #[serde(default)]
    pub time_unit: TimeUnitConfig,
    /// The user id column (sent as `distinct_id`).
    pub user_id_column: Option<String>,
    /// The device id column (sent as `$device_id`).
    pub device_id_column: Option<String>,
    /// A JSON column flattened into properties.
    pub properties_column: Option<String>,
    /// Append cursor column (default: `time_column`).
    pub insert_time_column: Option<String>,
    /// Columns identifying a row (for `$insert_id`); default: the whole row.
    #[serde(default)]
    pub key_columns: Vec<String>,
    /// Columns not sent.
    #[serde(default)]
    pub exclude_columns: Vec<String>,
    /// Group profiles: the group key (`$group_key`, e.g. `company_id`).
    pub group_key: Option<String>,
    /// Group profiles: the column holding the group id (`$group_id`).
    pub group_id_column: Option<String>,
    /// Lookup tables: the Mixpanel lookup table id to replace.
    pub lookup_table_id: Option<String>,
    /// User profiles from an SCD type 2 history table: the column holding each row's start
    /// time. Each run sends, per user, only the row with the latest start time (the profile's
    /// current state).
    pub history_start_column: Option<String>,
}

/// One sync.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Unique name; part of every `$insert_id`.
    pub name: String,
    /// Name of a `[warehouses.*]` entry.
    pub warehouse: String,
    /// The table (`schema.table` allowed)…
    pub table: Option<String>,
    /// …or a SQL query.
    pub query: Option<String>,
    /// `events`, `users`, `groups` or `lookup`.
    pub table_type: TableType,
    /// `append`, `full`, `mirror` or `one_time`.
    pub mode: SyncMode,
    /// Names of `[destinations.*]` entries.
    pub destinations: Vec<String>,
    /// Under `wharf run`: `hourly` (default: every table stays in sync once it is configured),
    /// `daily`, `weekly`, `manual`, `continuous`, an interval such as `30s`, `15m`, `1h`
    /// (on the wall clock), or a cron expression in UTC such as `*/15 * * * *` (see
    /// [`crate::schedule`]).
    #[serde(default = "default_schedule")]
    pub schedule: ScheduleSetting,
    /// Under `wharf run`: each scheduled run starts up to this much later, at random
    /// (e.g. `30s`), so that syncs sharing a schedule do not all start at once.
    pub jitter: Option<Span>,
    /// Append: each run also re-reads the rows whose insert time lies within this window
    /// before the watermark (e.g. `2h`), so rows that arrive late with an older insert time
    /// are still sent; rows re-read are sent again (same `$insert_id`: deduplicated).
    /// Needs a TIMESTAMP or DATE insert-time column.
    pub lookback: Option<Span>,
    /// Column mapping.
    #[serde(default)]
    pub mapping: MappingConfig,
    /// Where rejected rows go (default `<state_dir>/rejects/<name>.ndjson`).
    pub rejects_path: Option<PathBuf>,
    /// Columns identifying a row (composite allowed) for `full` and `mirror`; default: the
    /// table's declared primary key.
    /// Defaults: `mapping.user_id_column` for users, `mapping.group_id_column` for groups.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Full/mirror: send every row each run instead of only the changed ones.
    #[serde(default)]
    pub resend_all: bool,
    /// Mirror: `auto` (default), `logical` or `snapshot` — see [`ChangeCapture`].
    #[serde(default)]
    pub change_capture: ChangeCapture,
    /// Full/mirror: when a key occurs in several rows, keep the one with the greatest value of
    /// this column (e.g. `updated_at`) instead of failing the run.
    pub dedupe_by: Option<String>,
}

impl SyncConfig {
    /// The primary key: configured, or the table type's id column.
    pub fn key_columns(&self) -> Vec<String> {
        if !self.primary_key.is_empty() {
            return self.primary_key.clone();
        }
        let m = &self.mapping;
        match self.table_type {
            TableType::Users => m.user_id_column.iter().cloned().collect(),
            TableType::Groups => m.group_id_column.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Whether runs diff snapshots (full, mirror; one-time for non-event tables).
    pub fn diffs_snapshots(&self) -> bool {
        match self.mode {
            SyncMode::Full | SyncMode::Mirror => true,
            SyncMode::OneTime => self.table_type != TableType::Events,
            SyncMode::Append => false,
        }
    }
}

fn default_schedule() -> ScheduleSetting {
    ScheduleSetting::parse("hourly").expect("`hourly` is a schedule")
}

impl SyncConfig {
    /// The checks that need nothing but this sync; keys are relative to the sync's table.
    pub fn validate(&self) -> Result<(), Invalid> {
        let valid_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if self.name.is_empty() || !self.name.chars().all(valid_name) {
            return Err(Invalid::new(
                "name",
                format!("`{}`: use letters, digits, `_` and `-`", self.name),
            ));
        }
        if self.destinations.is_empty() {
            return Err(Invalid::new(
                "destinations",
                "name at least one destination",
            ));
        }
        match (&self.table, &self.query) {
            (None, None) => return Err(Invalid::new("table", "missing: set `table` or `query`")),
            (Some(_), Some(_)) => {
                return Err(Invalid::new(
                    "query",
                    "set either `table` or `query`, not both",
                ))
            }
            _ => {}
        }
        if self.lookback.is_some() && self.mode != SyncMode::Append {
            return Err(Invalid::new(
                "lookback",
                "only append syncs have a watermark to look back from; remove it or use mode = \"append\"",
            ));
        }
        if self.table_type == TableType::Events {
            self.validate_events()?;
        }
        self.validate_table_type()?;
        if self.dedupe_by.is_some() && !self.diffs_snapshots() {
            return Err(Invalid::new(
                "dedupe_by",
                "only full and mirror syncs (and one_time profiles) are keyed; remove it",
            ));
        }
        if self.change_capture != ChangeCapture::Auto && self.mode != SyncMode::Mirror {
            return Err(Invalid::new(
                "change_capture",
                "only mirror syncs capture changes; remove it or use `mode = \"mirror\"`",
            ));
        }
        // Full and mirror syncs without a key use the table's declared primary key; one that
        // declares none is refused when the sync is resolved (`wharf check` says so).
        if matches!(self.table_type, TableType::Users | TableType::Groups)
            && self.key_columns().len() != 1
        {
            return Err(Invalid::new(
                "primary_key",
                "profiles are keyed by their id column alone",
            ));
        }
        Ok(())
    }

    fn validate_events(&self) -> Result<(), Invalid> {
        let m = &self.mapping;
        if m.time_column.is_none() {
            return Err(Invalid::new(
                "mapping.time_column",
                "missing: events need the column holding the event time",
            ));
        }
        match (&m.event_name, &m.event_name_column) {
            (None, None) => {
                return Err(Invalid::new(
                    "mapping.event_name",
                    "missing: set `event_name` (static) or `event_name_column`",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(Invalid::new(
                    "mapping.event_name",
                    "set either `event_name` or `event_name_column`, not both",
                ))
            }
            _ => {}
        }
        if self.mode == SyncMode::Full {
            return Err(Invalid::new(
                "mode",
                "`full` is not for events (Mixpanel cannot upsert events); use `append` or `mirror`",
            ));
        }
        Ok(())
    }

    fn validate_table_type(&self) -> Result<(), Invalid> {
        let m = &self.mapping;
        let (key, message) = match self.table_type {
            TableType::Users if m.user_id_column.is_none() => (
                "mapping.user_id_column",
                "missing: user profiles need the column holding the distinct id",
            ),
            TableType::Groups if m.group_key.is_none() => (
                "mapping.group_key",
                "missing: group profiles need the group key (e.g. `company_id`)",
            ),
            TableType::Groups if m.group_id_column.is_none() => (
                "mapping.group_id_column",
                "missing: group profiles need the column holding the group id",
            ),
            TableType::Events | TableType::Groups | TableType::Lookup
                if m.history_start_column.is_some() =>
            {
                (
                    "mapping.history_start_column",
                    "only user profiles (table_type = \"users\") have a history variant",
                )
            }
            TableType::Lookup if self.primary_key.len() != 1 => (
                "primary_key",
                "lookup tables need exactly one key column, e.g. `primary_key = [\"id\"]`",
            ),
            TableType::Users | TableType::Groups | TableType::Lookup
                if self.mode == SyncMode::Append && m.insert_time_column.is_none() =>
            {
                (
                    "mapping.insert_time_column",
                    "missing: an append sync of profiles or a lookup table reads the rows past this column's watermark (or use mode = \"full\" or \"mirror\")",
                )
            }
            _ => return Ok(()),
        };
        Err(Invalid::new(key, message))
    }
}
