//! DuckDB: the embedded default warehouse (a local file).
//!
//! Reads are Arrow-native and streamed chunk by chunk (`stream_arrow`), never collected.
//! Identifiers are always quoted; watermarks are written as integer literals (from typed
//! values, never user text) that DuckDB casts to the cursor's type. The file is opened
//! read-only for reads, so several readers may share it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::PartsOf;

use duckdb::{AccessMode, Config, Connection};
use wharf_operators::arrow::array::RecordBatch;
use wharf_operators::arrow::datatypes::SchemaRef;
use wharf_operators::watermark::Watermark;

use super::{
    hash_conditions, quote_table, range_conditions, whole_read, ColumnInfo, EachBatch, PartRead,
    Partition, Select, SourceRef, TableSchema, Warehouse, WarehouseError,
};

/// A DuckDB database file.
#[derive(Debug, Clone)]
pub struct DuckDbWarehouse {
    name: String,
    path: PathBuf,
    memory_limit: Option<u64>,
}

/// DuckDB's memory limit for wharf's connections unless configured: DuckDB keeps the blocks a
/// scan reads up to its limit (80% of RAM by default), so a sync's memory grew with the table
/// (peak RSS 371 MB at 10M demo rows; 217 MB with this limit, 290 MB with 128MB, at the same
/// speed). A scan streams within it; what needs more (the profile-history window over a
/// large table) spills to disk.
pub const DEFAULT_MEMORY_LIMIT: u64 = 64_000_000;

/// Rows per batch handed to the dataflow (at least; DuckDB's vectors are 2,048 rows).
const COALESCE_ROWS: usize = 8192;

fn split_table(name: &str) -> (String, String) {
    match name.rsplit_once('.') {
        Some((schema, table)) => (schema.to_string(), table.to_string()),
        None => ("main".to_string(), name.to_string()),
    }
}

fn is_transient(e: &duckdb::Error) -> bool {
    let m = e.to_string();
    m.contains("Could not set lock") || m.contains("Conflicting lock") || m.contains("conflict")
}

impl DuckDbWarehouse {
    /// A warehouse named `name` (for messages) in the file `path`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        DuckDbWarehouse {
            name: name.into(),
            path: path.into(),
            memory_limit: None,
        }
    }

    /// DuckDB's `memory_limit` in bytes; `None` for [`DEFAULT_MEMORY_LIMIT`].
    pub fn with_memory_limit(mut self, limit: Option<u64>) -> Self {
        self.memory_limit = limit;
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connect(&self) -> Result<Connection, WarehouseError> {
        self.connect_with_threads(None)
    }

    /// Opens the database with DuckDB's thread count set (`None`: DuckDB's default, one per
    /// core).
    fn connect_with_threads(&self, threads: Option<i64>) -> Result<Connection, WarehouseError> {
        if !self.path.exists() {
            return Err(WarehouseError::Open {
                what: self.what(),
                message: "the file does not exist (`wharf init` creates a demo one)".into(),
            });
        }
        let open = || -> duckdb::Result<Connection> {
            let limit = format!("{}b", self.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT));
            let config = Config::default()
                .access_mode(AccessMode::ReadOnly)?
                .max_memory(&limit)?;
            let config = match threads {
                Some(n) => config.threads(n)?,
                None => config,
            };
            Connection::open_with_flags(&self.path, config)
        };
        open().map_err(|e| {
            let message = e.to_string();
            // Another process holding the file's write lock lets go eventually: worth a retry.
            let transient = message.contains("lock");
            WarehouseError::not_opened(self.what(), message, transient)
        })
    }

    /// The conditions that split a read of `src` into `count` parts: `rowid` ranges of a
    /// table (from its greatest `rowid` now: rows added later fall in the last part), the hash
    /// of `key` for a query.
    fn conditions(
        conn: &Connection,
        warehouse: &Self,
        src: &SourceRef,
        key: &[String],
        count: usize,
    ) -> Result<Vec<String>, WarehouseError> {
        Ok(match src {
            SourceRef::Table(t) => {
                let sql = format!("SELECT max(rowid) FROM {}", quote_table(t));
                let max: Option<i64> = conn
                    .query_row(&sql, [], |r| r.get(0))
                    .map_err(|e| Self::query_err(src, e))?;
                let rows = max.map_or(0, |m| m.max(0) as u64 + 1);
                range_conditions(rows, count, |lo, hi| match hi {
                    None => format!("rowid >= {lo}"),
                    Some(hi) => format!("rowid >= {lo} AND rowid < {hi}"),
                })
            }
            SourceRef::Query(_) => hash_conditions(warehouse, key, count),
        })
    }

    fn from_clause(src: &SourceRef) -> String {
        match src {
            SourceRef::Table(t) => quote_table(t),
            SourceRef::Query(q) => format!("({}) AS wharf_source", q.trim().trim_end_matches(';')),
        }
    }

    fn query_err_text(src: &SourceRef, message: String) -> WarehouseError {
        WarehouseError::Query {
            source_ref: src.clone(),
            transient: false,
            message,
        }
    }

    fn query_err(src: &SourceRef, e: duckdb::Error) -> WarehouseError {
        WarehouseError::Query {
            source_ref: src.clone(),
            transient: is_transient(&e),
            message: e.to_string(),
        }
    }

    fn stream(
        &self,
        src: &SourceRef,
        sql: &str,
        each: EachBatch<'_>,
    ) -> Result<(), WarehouseError> {
        Self::stream_on(&self.connect()?, src, sql, each)
    }

    fn stream_on(
        conn: &Connection,
        src: &SourceRef,
        sql: &str,
        each: EachBatch<'_>,
    ) -> Result<(), WarehouseError> {
        let mut stmt = conn.prepare(sql).map_err(|e| Self::query_err(src, e))?;
        let stream = stmt.stream_arrow([]).map_err(|e| Self::query_err(src, e))?;
        // DuckDB streams vectors of 2,048 rows; coalescing them into batches of at least
        // COALESCE_ROWS keeps the per-batch costs of the dataflow (exchange, encoder set-up)
        // small.
        let mut pending: Vec<RecordBatch> = Vec::new();
        let mut rows = 0;
        let flush = |pending: &mut Vec<RecordBatch>, each: EachBatch| {
            let batch = match pending.len() {
                0 => return Ok(true),
                1 => pending.pop(),
                _ => {
                    let schema = pending[0].schema();
                    let merged =
                        wharf_operators::arrow::compute::concat_batches(&schema, pending.iter())
                            .map_err(|e| Self::query_err_text(src, e.to_string()))?;
                    pending.clear();
                    Some(merged)
                }
            };
            Ok(batch.is_none_or(&mut *each))
        };
        for batch in stream {
            let batch = batch.map_err(|e| Self::query_err(src, e))?;
            if batch.num_rows() == 0 {
                continue;
            }
            rows += batch.num_rows();
            pending.push(batch);
            if rows >= COALESCE_ROWS {
                rows = 0;
                if !flush(&mut pending, each)? {
                    return Ok(());
                }
            }
        }
        flush(&mut pending, each)?;
        Ok(())
    }
}

impl Warehouse for DuckDbWarehouse {
    fn what(&self) -> String {
        format!("DuckDB warehouse `{}` ({})", self.name, self.path.display())
    }

    /// Opens the database once (the health check).
    fn check(&self) -> Result<(), WarehouseError> {
        self.connect().map(|_| ())
    }

    /// Columns, types, declared primary key and Arrow schema of `src`.
    fn describe(&self, src: &SourceRef) -> Result<TableSchema, WarehouseError> {
        let conn = self.connect()?;
        let mut columns = Vec::new();
        let mut primary_key = Vec::new();
        if let SourceRef::Table(t) = src {
            let (schema, table) = split_table(t);
            let mut stmt = conn
                .prepare(
                    "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns \
                     WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                )
                .map_err(|e| Self::query_err(src, e))?;
            let rows = stmt
                .query_map([&schema, &table], |r| {
                    Ok(ColumnInfo {
                        name: r.get(0)?,
                        sql_type: r.get(1)?,
                        nullable: r.get(2)?,
                    })
                })
                .map_err(|e| Self::query_err(src, e))?;
            for c in rows {
                columns.push(c.map_err(|e| Self::query_err(src, e))?);
            }
            if columns.is_empty() {
                return Err(WarehouseError::MissingTable {
                    source_ref: src.clone(),
                    warehouse: self.what(),
                });
            }
            let mut stmt = conn
                .prepare(
                    "SELECT unnest(constraint_column_names) FROM duckdb_constraints() \
                     WHERE constraint_type = 'PRIMARY KEY' AND schema_name = ? AND table_name = ?",
                )
                .map_err(|e| Self::query_err(src, e))?;
            let rows = stmt
                .query_map([&schema, &table], |r| r.get::<_, String>(0))
                .map_err(|e| Self::query_err(src, e))?;
            for c in rows {
                primary_key.push(c.map_err(|e| Self::query_err(src, e))?);
            }
        }
        let sql = format!("SELECT * FROM {} LIMIT 0", Self::from_clause(src));
        let mut stmt = conn.prepare(&sql).map_err(|e| Self::query_err(src, e))?;
        let arrow: SchemaRef = stmt
            .stream_arrow([])
            .map_err(|e| Self::query_err(src, e))?
            .get_schema();
        if columns.is_empty() {
            columns = arrow
                .fields()
                .iter()
                .map(|f| ColumnInfo {
                    name: f.name().clone(),
                    sql_type: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                })
                .collect();
        }
        Ok(TableSchema {
            columns,
            primary_key,
            arrow,
        })
    }

    fn source_item(&self, src: &SourceRef) -> Result<String, WarehouseError> {
        Ok(Self::from_clause(src))
    }

    /// The watermark as an integer expression of the cursor's type (exact for every value).
    fn literal(&self, after: Watermark, zone: bool) -> String {
        match after {
            Watermark::Integer(v) => v.to_string(),
            Watermark::TimestampMicros(us) => {
                let ty = if zone { "TIMESTAMPTZ" } else { "TIMESTAMP" };
                format!("CAST(make_timestamp(CAST({us} AS BIGINT)) AS {ty})")
            }
            Watermark::Date(d) => format!("DATE '1970-01-01' + CAST({d} AS INTEGER)"),
        }
    }

    /// A table's read split by `rowid` ranges (DuckDB skips the row groups outside a part's
    /// range); a query's by a hash of `key`; every part on a connection to one database
    /// instance, opened before any part runs, so all read one state of the file (the instance
    /// holds its lock until the last part is done).
    fn read_parts(self: Arc<Self>, of: PartsOf<'_>) -> Result<Vec<PartRead>, WarehouseError> {
        let (src, filter) = (of.src, of.filter);
        // A table's part is a plain scan, done by the thread that reads it: DuckDB's own
        // threads would only contend with the readers and the dataflow for the same cores (1M
        // demo events, null receiver, 2 workers: 1.88-2.00 CPU s per million against
        // 1.96-2.14, 8 runs each; 1 worker: 1.61-1.72 against 1.70-2.14, 6 runs each). A query
        // (joins, aggregates) keeps DuckDB's threads.
        let table = matches!(src, SourceRef::Table(_));
        if of.count <= 1 && !table {
            return Ok(vec![whole_read(self, src, filter)]);
        }
        let conn = self.connect_with_threads(table.then_some(1))?;
        let conditions = match of.count {
            0 | 1 => Vec::new(),
            count => Self::conditions(&conn, self.as_ref(), src, of.key, count)?,
        };
        if conditions.len() <= 1 && !table {
            return Ok(vec![whole_read(self, src, filter)]);
        }
        let from = Self::from_clause(src);
        let parts = match conditions.len() {
            0 | 1 => vec![Partition::whole()],
            _ => conditions
                .into_iter()
                .map(|condition| Partition {
                    index: 0,
                    count: 1,
                    condition: Some(condition),
                })
                .collect(),
        };
        parts
            .into_iter()
            .map(|part| {
                let sql = Select::all(src, &part.narrow(filter)).sql(&from);
                let conn = conn.try_clone().map_err(|e| Self::query_err(src, e))?;
                let src = src.clone();
                let read: PartRead = Box::new(move |each| Self::stream_on(&conn, &src, &sql, each));
                Ok(read)
            })
            .collect()
    }

    fn part_conditions(
        &self,
        src: &SourceRef,
        key: &[String],
        count: usize,
    ) -> Result<Vec<String>, WarehouseError> {
        if count <= 1 {
            return Ok(Vec::new());
        }
        Self::conditions(&self.connect()?, self, src, key, count)
    }

    /// DuckDB's `hash(…)`: an unsigned 64-bit hash of the values, NULLs included.
    fn key_hash(&self, columns: &[String]) -> Option<String> {
        Some(format!("hash({})", columns.join(", ")))
    }

    fn select(&self, query: Select, each: EachBatch<'_>) -> Result<(), WarehouseError> {
        let sql = query.sql(&Self::from_clause(query.source));
        self.stream(query.source, &sql, each)
    }

    fn count_where(&self, src: &SourceRef, filter: &str) -> Result<u64, WarehouseError> {
        let conn = self.connect()?;
        let sql = format!("SELECT count(*) FROM {} {filter}", Self::from_clause(src));
        let n: i64 = conn
            .query_row(&sql, [], |r| r.get(0))
            .map_err(|e| Self::query_err(src, e))?;
        Ok(n.max(0) as u64)
    }
}
