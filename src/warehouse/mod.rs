//! Warehouse connectors. Each yields Arrow `RecordBatch`es; nothing downstream knows which
//! warehouse produced them.

pub mod bigquery;
pub mod change_source;
pub mod changes;
pub mod databricks;
#[cfg(feature = "duckdb")]
pub mod duckdb;
mod http;
pub mod jwt;
pub mod postgres;
pub mod registry;
pub mod snowflake;
mod sql;

pub use change_source::{
    ChangeFunction, ChangePoll, ChangeSource, ChangeWindow, FunctionStream, StreamStart,
};
pub use postgres::visibility::SnapshotVisibility;
pub use registry::WarehouseConfig;

use std::sync::Arc;

use wharf_operators::arrow::array::RecordBatch;
use wharf_operators::arrow::datatypes::{DataType, SchemaRef};
use wharf_operators::watermark::{column_max, is_cursor_type, max_watermark, Watermark};

use crate::config::Config;

/// The warehouse `name` of `config`, connected lazily (nothing is reached until it is used).
pub fn open(config: &Config, name: &str) -> Option<Arc<dyn Warehouse>> {
    config.warehouses.get(name)?.open(name, &config.base_dir)
}

/// What a sync reads: a table or a SQL query written by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// A table, optionally `schema.table`.
    Table(String),
    /// A query, run as written (wrapped as a subquery, never concatenated with values).
    Query(String),
}

impl std::fmt::Display for SourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceRef::Table(t) => write!(f, "table `{t}`"),
            SourceRef::Query(_) => f.write_str("the configured query"),
        }
    }
}

/// Quotes an identifier (`a"b` → `"a""b"`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a possibly qualified table name (`schema.table`).
pub fn quote_table(name: &str) -> String {
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

/// A column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// The warehouse's type name.
    pub sql_type: String,
    /// Whether NULLs are allowed.
    pub nullable: bool,
}

/// What schema discovery finds.
#[derive(Debug, Clone)]
pub struct TableSchema {
    /// Columns in order.
    pub columns: Vec<ColumnInfo>,
    /// Declared primary key columns (empty if none or unknown).
    pub primary_key: Vec<String>,
    /// The Arrow schema of `SELECT *`.
    pub arrow: SchemaRef,
}

/// A warehouse operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// The table does not exist.
    #[error("{source_ref} does not exist in {warehouse}")]
    MissingTable {
        /// What was asked for.
        source_ref: SourceRef,
        /// Which warehouse.
        warehouse: String,
    },
    /// A column does not exist.
    #[error("column `{column}` is not in {source_ref}; its columns are: {available}")]
    MissingColumn {
        /// The column.
        column: String,
        /// Where it was looked for.
        source_ref: SourceRef,
        /// The columns that exist.
        available: String,
    },
    /// The database cannot be opened.
    #[error("cannot open {what}: {message}")]
    Open {
        /// What (e.g. the DuckDB file).
        what: String,
        /// Why.
        message: String,
    },
    /// The database cannot be reached now (connection refused, timed out, broken).
    #[error("cannot reach {what}: {message}")]
    Unavailable {
        /// Which database.
        what: String,
        /// Why.
        message: String,
    },
    /// A query failed.
    #[error("query on {source_ref} failed: {message}")]
    Query {
        /// Where.
        source_ref: SourceRef,
        /// The database's message.
        message: String,
        /// Worth retrying (lock conflicts, connection loss).
        transient: bool,
    },
    /// A column cannot serve as the append cursor.
    #[error("column `{column}` has type {found} and cannot be an insert-time cursor; use a TIMESTAMP, TIMESTAMPTZ, DATE or integer column")]
    BadCursor {
        /// The column.
        column: String,
        /// Its type.
        found: String,
    },
}

impl WarehouseError {
    /// The database `what` could not be opened: [`WarehouseError::Unavailable`] when it may
    /// open later (`transient`), else [`WarehouseError::Open`].
    pub fn not_opened(what: String, message: String, transient: bool) -> WarehouseError {
        if transient {
            WarehouseError::Unavailable { what, message }
        } else {
            WarehouseError::Open { what, message }
        }
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            WarehouseError::Query {
                transient: true,
                ..
            } | WarehouseError::Unavailable { .. }
        )
    }
}

/// What [`Warehouse::select`] reads: `SELECT * FROM <source> <filter>`, at most `limit` rows.
#[derive(Debug, Clone, Copy)]
pub struct Select<'a> {
    /// The table or query.
    pub source: &'a SourceRef,
    /// A `WHERE` clause that wharf wrote (from typed values, never user text), or empty.
    pub filter: &'a str,
    /// The most rows wanted (a preview), or every row.
    pub limit: Option<usize>,
}

impl<'a> Select<'a> {
    /// Every row of `source` that `filter` keeps.
    pub fn all(source: &'a SourceRef, filter: &'a str) -> Self {
        Select {
            source,
            filter,
            limit: None,
        }
    }

    /// `SELECT * FROM <from> <filter>[ LIMIT n]`, `from` being the source as the dialect
    /// writes it.
    pub fn sql(&self, from: &str) -> String {
        let limit = self
            .limit
            .map(|l| format!(" LIMIT {l}"))
            .unwrap_or_default();
        format!("SELECT * FROM {from} {}{limit}", self.filter)
    }
}

/// One of the disjoint parts a read of a table is split into, so that several workers read it
/// at once: together the parts of one [`Warehouse::partitions`] call hold every row exactly
/// once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// This part's number, from 0.
    pub index: usize,
    /// How many parts the read is split into.
    pub count: usize,
    /// The SQL condition that keeps this part's rows (from quoted names and numbers, never
    /// user text); `None`: every row.
    condition: Option<String>,
}

impl Partition {
    /// The whole table, as one part.
    pub fn whole() -> Self {
        Partition {
            index: 0,
            count: 1,
            condition: None,
        }
    }

    /// Part `index` of `count`, the rows that `condition` (from
    /// [`Warehouse::part_conditions`]) keeps; `None`: every row.
    pub fn with_condition(index: usize, count: usize, condition: Option<String>) -> Self {
        Partition {
            index,
            count,
            condition,
        }
    }

    /// `filter` (`WHERE …` or empty) narrowed to this part.
    pub fn narrow(&self, filter: &str) -> String {
        match (&self.condition, filter) {
            (None, f) => f.to_string(),
            (Some(c), "") => format!("WHERE {c}"),
            (Some(c), f) => format!("{f} AND ({c})"),
        }
    }
}

/// Where a read's Arrow batches go, one at a time; returning false stops the read.
pub type EachBatch<'a> = &'a mut dyn FnMut(RecordBatch) -> bool;

/// `0..total` (rows, pages) split into at most `count` ranges, each written as a condition
/// by `condition(lo, hi)` (`hi` is `None` for the last range, open at its top end).
pub fn range_conditions(
    total: u64,
    count: usize,
    condition: impl Fn(u64, Option<u64>) -> String,
) -> Vec<String> {
    let step = total.div_ceil(count.max(1) as u64).max(1);
    (0..count as u64)
        .map(|i| i * step)
        .take_while(|lo| *lo < total.max(1))
        .map(|lo| condition(lo, (lo + step < total).then_some(lo + step)))
        .collect()
}

/// The conditions (without `WHERE`) that split a read into `count` parts by the hash of
/// `key`, as [`Warehouse::partitions`] writes them; none where it cannot.
pub fn hash_conditions<W: Warehouse + ?Sized>(w: &W, key: &[String], count: usize) -> Vec<String> {
    w.partitions(key, count)
        .iter()
        .map(|p| p.narrow(""))
        .map(|c| c.trim_start_matches("WHERE ").to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// What [`Warehouse::read_parts`] splits: `src`'s rows that `filter` keeps, in at most
/// `count` parts; `key`: the sync's key columns, maybe none.
#[derive(Debug, Clone, Copy)]
pub struct PartsOf<'a> {
    pub src: &'a SourceRef,
    pub filter: &'a str,
    pub key: &'a [String],
    pub count: usize,
}

/// The whole read of `src`'s rows that `filter` keeps, as one [`PartRead`].
pub fn whole_read<W: Warehouse + ?Sized + 'static>(
    warehouse: Arc<W>,
    src: &SourceRef,
    filter: &str,
) -> PartRead {
    let (src, filter) = (src.clone(), filter.to_string());
    Box::new(move |each| warehouse.read(&src, &filter, &Partition::whole(), each))
}

/// One part of a read split by [`Warehouse::read_parts`]: it runs on a thread of its own, at
/// once with the read's other parts.
pub type PartRead = Box<dyn FnOnce(EachBatch<'_>) -> Result<(), WarehouseError> + Send>;

/// One way in for every warehouse. A connector (one folder under `src/warehouse/`, one line
/// in `registry.rs`) says how it connects, describes a table, writes a `FROM` item and a
/// cursor comparison, and runs a `SELECT`; the reads a sync makes (counts, append reads,
/// snapshots, previews, a history table's latest rows) are written once, here.
pub trait Warehouse: std::fmt::Debug + Send + Sync {
    /// The warehouse in messages: its kind, name and where it is.
    fn what(&self) -> String;

    /// Connects once (the health check of `wharf check`).
    fn check(&self) -> Result<(), WarehouseError>;

    /// Columns, types, declared primary key and Arrow schema of `src`.
    fn describe(&self, src: &SourceRef) -> Result<TableSchema, WarehouseError>;

    /// `src` as a `FROM` item: a checked, quoted table name, or the query as a subquery.
    fn source_item(&self, src: &SourceRef) -> Result<String, WarehouseError>;

    /// A quoted column name.
    fn ident(&self, name: &str) -> String {
        quote_ident(name)
    }

    /// `after` as a literal of an append cursor's type in this dialect (`zone`: a timestamp
    /// with a time zone), written from a typed watermark, never from user text.
    fn literal(&self, after: Watermark, zone: bool) -> String;

    /// Runs `SELECT * FROM <src> <filter>` (at most `limit` rows), handing each batch to
    /// `each` (false stops).
    fn select(&self, query: Select, each: EachBatch<'_>) -> Result<(), WarehouseError>;

    /// `SELECT count(*) FROM <src> <filter>`.
    fn count_where(&self, src: &SourceRef, filter: &str) -> Result<u64, WarehouseError>;

    /// The change stream of `src` as sync `sync` reads it, keyed by `key`, where the warehouse
    /// keeps one wharf reads: PostgreSQL's logical decoding, or a SQL change function
    /// (Snowflake `CHANGES`, Databricks' Change Data Feed, BigQuery `CHANGES`). Nothing is
    /// reached until it is used.
    fn change_source<'a>(
        &'a self,
        _sync: &str,
        _src: &SourceRef,
        _key: &[String],
    ) -> Option<Box<dyn ChangeSource + 'a>> {
        None
    }

    /// What `wharf check` says of mirror syncs here (e.g. whether the server's settings
    /// allow change capture), after "ok"; empty when there is nothing to say.
    fn change_capture_note(&self) -> String {
        String::new()
    }

    /// A hash of the (quoted) `columns` as a non-negative integer expression, NULLs included,
    /// where the dialect has one wharf splits reads by; `None` where it has not.
    fn key_hash(&self, _columns: &[String]) -> Option<String> {
        None
    }

    /// A read split into `count` disjoint parts by a hash of `key`, which together hold every
    /// row once; one part (the whole table) where `key` is empty, `count` is 1, or the
    /// warehouse has no [`Warehouse::key_hash`].
    fn partitions(&self, key: &[String], count: usize) -> Vec<Partition> {
        let quoted: Vec<String> = key.iter().map(|k| self.ident(k)).collect();
        match self.key_hash(&quoted) {
            Some(hash) if count > 1 && !key.is_empty() => (0..count)
                .map(|index| Partition {
                    index,
                    count,
                    condition: Some(format!("{hash} % {count} = {index}")),
                })
                .collect(),
            _ => vec![Partition::whole()],
        }
    }

    /// The read of `src`'s rows that `filter` keeps (see [`Warehouse::read`]) as at most
    /// `count` parts that the dataflow's workers run at once and that together hold every row
    /// once, all of one state of `src` (a run's watermark is the greatest value any part
    /// read, so a part may not see rows another part's state lacks); `key`: the sync's key
    /// columns, maybe none. By default the whole read, as one part: a warehouse splits its
    /// reads only where its parts share that state.
    fn read_parts(self: Arc<Self>, of: PartsOf<'_>) -> Result<Vec<PartRead>, WarehouseError>
    where
        Self: 'static,
    {
        Ok(vec![whole_read(self, of.src, of.filter)])
    }

    /// The conditions (without `WHERE`, written from quoted names and numbers) that split a
    /// read of `src` into at most `count` disjoint parts holding every row once, written once
    /// and read with by every process of a cluster ([`Partition::with_condition`]); empty:
    /// one part. By default the hash of `key` ([`Warehouse::partitions`]).
    fn part_conditions(
        &self,
        _src: &SourceRef,
        key: &[String],
        count: usize,
    ) -> Result<Vec<String>, WarehouseError> {
        Ok(if count <= 1 {
            Vec::new()
        } else {
            hash_conditions(self, key, count)
        })
    }

    /// Streams the rows of `part` of `src` that `filter` (`WHERE …` written by wharf, or
    /// empty) keeps to `each` (false stops), in no particular order.
    fn read(
        &self,
        src: &SourceRef,
        filter: &str,
        part: &Partition,
        each: EachBatch<'_>,
    ) -> Result<(), WarehouseError> {
        self.select(Select::all(src, &part.narrow(filter)), each)
    }

    /// The number of rows of `src`.
    fn count(&self, src: &SourceRef) -> Result<u64, WarehouseError> {
        self.count_where(src, "")
    }

    /// `<column> > <after>` (`column` already quoted).
    fn cursor_after(&self, column: &str, cursor_type: &DataType, after: Watermark) -> String {
        let zone = matches!(cursor_type, DataType::Timestamp(_, Some(_)));
        format!("{column} > {}", self.literal(after, zone))
    }

    /// `WHERE <cursor> > <after>`, empty on a first run.
    fn after_filter(
        &self,
        cursor: &str,
        cursor_type: &DataType,
        after: Option<Watermark>,
    ) -> String {
        after.map_or_else(String::new, |after| {
            format!(
                "WHERE {}",
                self.cursor_after(&self.ident(cursor), cursor_type, after)
            )
        })
    }

    /// Number of rows an append run would read.
    fn count_after(
        &self,
        src: &SourceRef,
        cursor: &str,
        cursor_type: &DataType,
        after: Option<Watermark>,
    ) -> Result<u64, WarehouseError> {
        self.count_where(src, &self.after_filter(cursor, cursor_type, after))
    }

    /// The cursor value of the `n`-th row (from 1) past `after` in cursor order, if there are
    /// that many: a run that reads the rows up to it ([`Warehouse::upto_filter`]) reads about
    /// `n` (more where rows share that value). One `ORDER BY … LIMIT 1 OFFSET` statement.
    fn cursor_bound(
        &self,
        src: &SourceRef,
        cursor: &str,
        cursor_type: &DataType,
        after: Option<Watermark>,
        n: u64,
    ) -> Result<Option<Watermark>, WarehouseError> {
        let column = self.ident(cursor);
        let query = SourceRef::Query(format!(
            "SELECT {column} FROM {} {} ORDER BY {column} LIMIT 1 OFFSET {}",
            self.source_item(src)?,
            self.after_filter(cursor, cursor_type, after),
            n.saturating_sub(1)
        ));
        let mut bound = None;
        self.select(Select::all(&query, ""), &mut |b| {
            if b.num_columns() > 0 {
                bound = max_watermark(bound, column_max(b.column(0).as_ref()));
            }
            true
        })?;
        Ok(bound)
    }

    /// `filter` (`WHERE …` or empty) narrowed to the rows whose `cursor` is at most `upto`.
    fn upto_filter(
        &self,
        filter: &str,
        cursor: &str,
        cursor_type: &DataType,
        upto: Watermark,
    ) -> String {
        let zone = matches!(cursor_type, DataType::Timestamp(_, Some(_)));
        let upto = format!("{} <= {}", self.ident(cursor), self.literal(upto, zone));
        match filter {
            "" => format!("WHERE {upto}"),
            f => format!("{f} AND {upto}"),
        }
    }

    /// Streams the rows whose `cursor` is past `after` to `each` (false stops), in no
    /// particular order: a run commits all of its rows or none, and sorting would make the
    /// warehouse materialize every selected row.
    fn read_after(
        &self,
        src: &SourceRef,
        cursor: &str,
        cursor_type: &DataType,
        after: Option<Watermark>,
        each: EachBatch<'_>,
    ) -> Result<(), WarehouseError> {
        let filter = self.after_filter(cursor, cursor_type, after);
        self.read(src, &filter, &Partition::whole(), each)
    }

    /// Streams the whole of `src` to `each` (false stops).
    fn read_snapshot(&self, src: &SourceRef, each: EachBatch<'_>) -> Result<(), WarehouseError> {
        self.read(src, "", &Partition::whole(), each)
    }

    /// The first `limit` rows of `src`.
    fn preview(&self, src: &SourceRef, limit: usize) -> Result<Vec<RecordBatch>, WarehouseError> {
        let mut out = Vec::new();
        let first = Select {
            limit: Some(limit),
            ..Select::all(src, "")
        };
        self.select(first, &mut |b| {
            out.push(b);
            true
        })?;
        Ok(out)
    }

    /// The query that lists the tables and views a sync can read: two text columns, their
    /// schema and name (`information_schema.tables` by default).
    fn tables_query(&self) -> String {
        TABLES_QUERY.into()
    }

    /// The tables and views a sync can read, as `schema.table` (what `table = …` takes).
    fn list_tables(&self) -> Result<Vec<String>, WarehouseError> {
        let query = SourceRef::Query(self.tables_query());
        let mut out = Vec::new();
        self.select(Select::all(&query, ""), &mut |b| {
            out.extend(qualified_names(&b));
            true
        })?;
        Ok(out)
    }

    /// Every row of the profile history table `src`, with the start of the next row of its
    /// `key` (by `start`) as the added column [`HISTORY_END_COLUMN`] (NULL for the current
    /// row): the SCD type 2 rows that Kafka and files get. A window function every dialect
    /// has.
    fn history_rows(&self, src: &SourceRef, key: &[String], start: &str) -> SourceRef {
        let (key, from) = keyed_source(self, src, key);
        SourceRef::Query(format!(
            "SELECT *, lead({start}) OVER (PARTITION BY {key} ORDER BY {start}) AS {} FROM {from}",
            self.ident(HISTORY_END_COLUMN),
            start = self.ident(start),
        ))
    }

    /// `src` reduced to the latest row per `key` by `order` (profile history tables,
    /// `dedupe_by`); ties are broken arbitrarily. `QUALIFY` by default.
    fn latest_per_key(
        &self,
        src: &SourceRef,
        _schema: &TableSchema,
        key: &[String],
        order: &str,
    ) -> SourceRef {
        let (key, from) = keyed_source(self, src, key);
        SourceRef::Query(format!(
            "SELECT * FROM {from} WHERE TRUE QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {} DESC) = 1",
            self.ident(order)
        ))
    }
}

/// The window queries' parts: `key`'s columns quoted, comma-separated (a `PARTITION BY`
/// list), and `src` as a `FROM` item (a name that finds no table where `src` cannot be one,
/// so that the query fails in the warehouse with its own error).
fn keyed_source<W: Warehouse + ?Sized>(w: &W, src: &SourceRef, key: &[String]) -> (String, String) {
    let key: Vec<String> = key.iter().map(|k| w.ident(k)).collect();
    let from = w
        .source_item(src)
        .unwrap_or_else(|_| "wharf_invalid_table".into());
    (key.join(", "), from)
}

/// The column [`Warehouse::history_rows`] adds: when a profile history row stopped being
/// current (the start of the user's next row; NULL while it is current).
pub const HISTORY_END_COLUMN: &str = "wharf_history_end";

/// The tables and views of `information_schema` (PostgreSQL, DuckDB, Snowflake, Databricks).
pub(crate) const TABLES_QUERY: &str =
    "SELECT table_schema, table_name FROM information_schema.tables \
     WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY 1, 2";

/// `schema.name` for each row of a batch whose first two columns are text.
fn qualified_names(batch: &RecordBatch) -> Vec<String> {
    use wharf_operators::arrow::array::{Array, AsArray};
    use wharf_operators::arrow::compute::cast;
    let text = |i: usize| {
        batch
            .columns()
            .get(i)
            .and_then(|c| cast(c, &DataType::Utf8).ok())
    };
    let (Some(schemas), Some(names)) = (text(0), text(1)) else {
        return Vec::new();
    };
    let (schemas, names) = (schemas.as_string::<i32>(), names.as_string::<i32>());
    (0..batch.num_rows())
        .filter(|&i| !names.is_null(i))
        .map(|i| match schemas.is_null(i) {
            true => names.value(i).to_string(),
            false => format!("{}.{}", schemas.value(i), names.value(i)),
        })
        .collect()
}

/// How a SQL dialect writes an append cursor's timestamps and dates as text literals: each is
/// `before` + the UTC value (`YYYY-MM-DD HH:MM:SS.ffffff` or `YYYY-MM-DD`) + `after`.
#[derive(Debug, Clone, Copy)]
pub struct Literals {
    /// A timestamp with a time zone (an instant).
    pub instant: (&'static str, &'static str),
    /// A timestamp without one.
    pub naive: (&'static str, &'static str),
    /// A date.
    pub date: (&'static str, &'static str),
}

impl Literals {
    /// `after` as a literal (from a typed watermark only, never from user text); `zone` for
    /// a cursor with a time zone.
    pub fn write(&self, after: Watermark, zone: bool) -> String {
        let (text, (before, end)) = match after {
            Watermark::Integer(v) => return v.to_string(),
            Watermark::TimestampMicros(us) => (
                chrono::DateTime::from_timestamp_micros(us)
                    .unwrap_or_default()
                    .format("%Y-%m-%d %H:%M:%S%.6f"),
                if zone { self.instant } else { self.naive },
            ),
            Watermark::Date(d) => (
                chrono::DateTime::from_timestamp(i64::from(d) * 86_400, 0)
                    .unwrap_or_default()
                    .format("%Y-%m-%d"),
                self.date,
            ),
        };
        format!("{before}{text}{end}")
    }
}

/// Checks that `cursor` exists in `schema` and can be an append cursor; returns its type.
pub fn check_cursor(
    src: &SourceRef,
    schema: &TableSchema,
    cursor: &str,
) -> Result<DataType, WarehouseError> {
    let field =
        schema
            .arrow
            .field_with_name(cursor)
            .map_err(|_| WarehouseError::MissingColumn {
                column: cursor.to_string(),
                source_ref: src.clone(),
                available: schema
                    .columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
    if !is_cursor_type(field.data_type()) {
        return Err(WarehouseError::BadCursor {
            column: cursor.to_string(),
            found: field.data_type().to_string(),
        });
    }
    Ok(field.data_type().clone())
}

/// Runs one step of arrow-rs' IPC reader over bytes a warehouse sent, a panic turned into an
/// error: the reader panics, rather than failing, on some damaged streams (e.g. a buffer whose
/// offset lies past its message body: apache/arrow-rs#7124), which would take the sync's
/// thread down. Only the reader runs inside; wharf's own decoding stays outside, where a
/// panic is a bug to fix.
pub(crate) fn ipc_read<T>(read: impl FnOnce() -> T) -> Result<T, String> {
    #[cfg(feature = "fuzzing")]
    IN_IPC_READ.with(|inside| inside.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
    #[cfg(feature = "fuzzing")]
    IN_IPC_READ.with(|inside| inside.set(false));
    result.map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        format!("unreadable Arrow data: {message}")
    })
}

#[cfg(feature = "fuzzing")]
thread_local! {
    /// Whether this thread is inside [`ipc_read`], whose panics are caught (the fuzz targets'
    /// panic hook lets those unwind instead of aborting).
    pub(crate) static IN_IPC_READ: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
