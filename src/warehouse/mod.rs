//! Warehouse connectors. Each yields Arrow `RecordBatch`es; nothing downstream knows which
//! warehouse produced them.

pub mod bigquery;
pub mod changes;
pub mod databricks;
#[cfg(feature = "duckdb")]
pub mod duckdb;
mod http;
pub mod jwt;
pub mod postgres;
pub mod snowflake;
mod sql;

use std::sync::Arc;

use wharf_operators::arrow::array::RecordBatch;
use wharf_operators::arrow::datatypes::{DataType, SchemaRef};
use wharf_operators::watermark::{is_cursor_type, Watermark};

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

/// A configured warehouse, whichever kind: the one type the rest of wharf reads through.
#[derive(Debug, Clone)]
pub enum Warehouse {
    /// DuckDB (embedded).
    #[cfg(feature = "duckdb")]
    DuckDb(duckdb::DuckDbWarehouse),
    /// PostgreSQL or Redshift.
    Postgres(postgres::PostgresWarehouse),
    /// Snowflake.
    Snowflake(snowflake::SnowflakeWarehouse),
    /// Databricks.
    Databricks(databricks::DatabricksWarehouse),
    /// BigQuery.
    BigQuery(bigquery::BigQueryWarehouse),
}

impl Warehouse {
    /// The warehouse `name` of `config`.
    pub fn from_config(config: &crate::config::Config, name: &str) -> Option<Warehouse> {
        use crate::config::{SslModeConfig, WarehouseConfig};
        Some(match config.warehouses.get(name)? {
            #[cfg(feature = "duckdb")]
            WarehouseConfig::Duckdb { path, memory_limit } => Warehouse::DuckDb(
                duckdb::DuckDbWarehouse::new(name, config.resolve(path))
                    .with_memory_limit(memory_limit.clone()),
            ),
            // Refused when the config is parsed (`Config::parse`); never reached.
            #[cfg(not(feature = "duckdb"))]
            WarehouseConfig::Duckdb { .. } => return None,
            WarehouseConfig::Postgres(p) | WarehouseConfig::Redshift(p) => {
                let redshift = matches!(config.warehouses[name], WarehouseConfig::Redshift(_));
                let settings = postgres::PgSettings {
                    host: p.host.clone(),
                    port: p.port.unwrap_or(if redshift { 5439 } else { 5432 }),
                    database: p.database.clone(),
                    user: p.user.clone(),
                    password: p.password.as_ref().map(|s| s.expose().to_string()),
                    sslmode: match p.sslmode {
                        SslModeConfig::Disable => postgres::SslMode::Disable,
                        SslModeConfig::Prefer => postgres::SslMode::Prefer,
                        SslModeConfig::Require => postgres::SslMode::Require,
                        SslModeConfig::VerifyFull => postgres::SslMode::VerifyFull,
                    },
                    sslrootcert: p.sslrootcert.as_ref().map(|c| config.resolve(c)),
                    connect_timeout: p
                        .connect_timeout
                        .as_deref()
                        .and_then(crate::config::parse_duration)
                        .unwrap_or(std::time::Duration::from_secs(10)),
                    flavor: if redshift {
                        postgres::Flavor::Redshift
                    } else {
                        postgres::Flavor::Postgres
                    },
                };
                Warehouse::Postgres(postgres::PostgresWarehouse::new(name, settings))
            }
            WarehouseConfig::Snowflake(sf) => {
                let settings = snowflake::SnowflakeSettings {
                    base_url: sf
                        .url
                        .clone()
                        .unwrap_or_else(|| format!("https://{}.snowflakecomputing.com", sf.account))
                        .trim_end_matches('/')
                        .to_string(),
                    account: sf.account.clone(),
                    user: sf.user.clone(),
                    auth: match (&sf.password, &sf.private_key, &sf.private_key_file) {
                        (_, Some(pem), _) => {
                            snowflake::SnowflakeAuth::KeyPair(pem.expose().to_string())
                        }
                        (_, None, Some(path)) => snowflake::SnowflakeAuth::KeyPairFile(
                            config.resolve(std::path::Path::new(path)),
                        ),
                        (p, None, None) => snowflake::SnowflakeAuth::Password(
                            p.as_ref()
                                .map(|p| p.expose().to_string())
                                .unwrap_or_default(),
                        ),
                    },
                    database: sf.database.clone(),
                    schema: sf.schema.clone().unwrap_or_else(|| "PUBLIC".into()),
                    warehouse: sf.warehouse.clone(),
                    role: sf.role.clone(),
                    timeout: sf
                        .timeout
                        .as_deref()
                        .and_then(crate::config::parse_duration)
                        .unwrap_or(std::time::Duration::from_secs(60)),
                };
                Warehouse::Snowflake(snowflake::SnowflakeWarehouse::new(name, settings))
            }
            WarehouseConfig::Databricks(d) => {
                let settings = databricks::DatabricksSettings {
                    host: d.host.trim_end_matches('/').to_string(),
                    token: d.token.expose().to_string(),
                    warehouse_id: d.warehouse_id.clone(),
                    catalog: d.catalog.clone(),
                    schema: d.schema.clone(),
                    timeout: d
                        .timeout
                        .as_deref()
                        .and_then(crate::config::parse_duration)
                        .unwrap_or(std::time::Duration::from_secs(60)),
                };
                Warehouse::Databricks(databricks::DatabricksWarehouse::new(name, settings))
            }
            WarehouseConfig::Bigquery(b) => {
                let settings = bigquery::BigQuerySettings {
                    endpoint: b
                        .endpoint
                        .clone()
                        .unwrap_or_else(|| "https://bigquery.googleapis.com".into())
                        .trim_end_matches('/')
                        .to_string(),
                    project: b.project.clone(),
                    dataset: b.dataset.clone(),
                    location: b.location.clone(),
                    auth: match (&b.access_token, &b.credentials, &b.credentials_file) {
                        (Some(t), _, _) => bigquery::BigQueryAuth::Token(t.expose().to_string()),
                        (None, None, None) => bigquery::BigQueryAuth::None,
                        (None, json, file) => {
                            let json = match (json, file) {
                                (Some(j), _) => Ok(j.expose().to_string()),
                                (None, Some(f)) => {
                                    std::fs::read_to_string(config.resolve(std::path::Path::new(f)))
                                        .map_err(|e| format!("cannot read {f}: {e}"))
                                }
                                (None, None) => Ok(String::new()),
                            };
                            match json.and_then(|j| bigquery::ServiceAccount::from_json(&j)) {
                                Ok(sa) => bigquery::BigQueryAuth::ServiceAccount(Arc::new(sa)),
                                Err(message) => bigquery::BigQueryAuth::Invalid(message),
                            }
                        }
                    },
                    timeout: b
                        .timeout
                        .as_deref()
                        .and_then(crate::config::parse_duration)
                        .unwrap_or(std::time::Duration::from_secs(60)),
                    // Google's Storage API with Google's REST API; an emulator's only when set.
                    storage_endpoint: match (&b.storage_endpoint, &b.endpoint) {
                        (Some(e), _) => Some(e.trim_end_matches('/').to_string()),
                        (None, None) => Some("https://bigquerystorage.googleapis.com".into()),
                        (None, Some(_)) => None,
                    }
                    .filter(|_| b.storage_read.unwrap_or(true)),
                    storage_streams: b.storage_streams.unwrap_or(4),
                };
                Warehouse::BigQuery(bigquery::BigQueryWarehouse::new(name, settings))
            }
        })
    }

    /// The warehouse by how it is read.
    pub(crate) fn kind(&self) -> Kind<'_> {
        match self {
            #[cfg(feature = "duckdb")]
            Warehouse::DuckDb(w) => Kind::DuckDb(w),
            Warehouse::Postgres(w) => Kind::Postgres(w),
            Warehouse::Snowflake(w) => Kind::Sql(w),
            Warehouse::Databricks(w) => Kind::Sql(w),
            Warehouse::BigQuery(w) => Kind::Sql(w),
        }
    }

    /// Connects once (the health check).
    pub fn check(&self) -> Result<(), WarehouseError> {
        match self {
            #[cfg(feature = "duckdb")]
            Warehouse::DuckDb(w) => w.check(),
            Warehouse::Postgres(w) => w.check(),
            Warehouse::Snowflake(w) => w.check(),
            Warehouse::Databricks(w) => w.check(),
            Warehouse::BigQuery(w) => w.check(),
        }
    }

    /// Columns, types, declared primary key and Arrow schema of `src`.
    pub fn describe(&self, src: &SourceRef) -> Result<TableSchema, WarehouseError> {
        match self {
            #[cfg(feature = "duckdb")]
            Warehouse::DuckDb(w) => w.describe(src),
            Warehouse::Postgres(w) => w.describe(src),
            Warehouse::Snowflake(w) => w.describe(src),
            Warehouse::Databricks(w) => w.describe(src),
            Warehouse::BigQuery(w) => w.describe(src),
        }
    }

    /// `src` reduced to the latest row per `key` by `order` (profile history tables,
    /// `dedupe_by`); ties are broken arbitrarily.
    pub fn latest_per_key(
        &self,
        src: &SourceRef,
        schema: &TableSchema,
        key: &[String],
        order: &str,
    ) -> SourceRef {
        match self.kind() {
            #[cfg(feature = "duckdb")]
            Kind::DuckDb(_) => duckdb::DuckDbWarehouse::latest_per_key(src, key, order),
            Kind::Postgres(_) => {
                let columns: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
                postgres::PostgresWarehouse::latest_per_key(src, &columns, key, order)
            }
            Kind::Sql(w) => w.latest_per_key(src, key, order),
        }
    }

    /// The number of rows of `src`.
    pub fn count(&self, src: &SourceRef) -> Result<u64, WarehouseError> {
        match self.kind() {
            #[cfg(feature = "duckdb")]
            Kind::DuckDb(w) => w.count(src),
            Kind::Postgres(w) => w.count(src),
            Kind::Sql(w) => w.count(src),
        }
    }

    /// Number of rows an append run would read.
    pub fn count_after(
        &self,
        src: &SourceRef,
        cursor: &str,
        cursor_type: &DataType,
        after: Option<Watermark>,
    ) -> Result<u64, WarehouseError> {
        match self.kind() {
            #[cfg(feature = "duckdb")]
            Kind::DuckDb(w) => w.count_after(src, cursor, cursor_type, after),
            Kind::Postgres(w) => w.count_after(src, cursor, cursor_type, after),
            Kind::Sql(w) => w.count_after(src, cursor, cursor_type, after),
        }
    }

    /// Streams the rows whose `cursor` is past `after` to `each` (false stops).
    pub fn read_after(
        &self,
        src: &SourceRef,
        cursor: &str,
        cursor_type: &DataType,
        after: Option<Watermark>,
        mut each: impl FnMut(RecordBatch) -> bool,
    ) -> Result<(), WarehouseError> {
        match self.kind() {
            #[cfg(feature = "duckdb")]
            Kind::DuckDb(w) => w.read_after(src, cursor, cursor_type, after, each),
            Kind::Postgres(w) => w.read_after(src, cursor, cursor_type, after, each),
            Kind::Sql(w) => w.read_after(src, cursor, cursor_type, after, &mut each),
        }
    }

    /// Streams the whole of `src` to `each` (false stops).
    pub fn read_snapshot(
        &self,
        src: &SourceRef,
        mut each: impl FnMut(RecordBatch) -> bool,
    ) -> Result<(), WarehouseError> {
        match self.kind() {
            #[cfg(feature = "duckdb")]
            Kind::DuckDb(w) => w.read_snapshot(src, each),
            Kind::Postgres(w) => w.read_snapshot(src, each),
            Kind::Sql(w) => w.read_snapshot(src, &mut each),
        }
    }

    /// The first `limit` rows of `src`.
    pub fn preview(
        &self,
        src: &SourceRef,
        limit: usize,
    ) -> Result<Vec<RecordBatch>, WarehouseError> {
        match self.kind() {
            #[cfg(feature = "duckdb")]
            Kind::DuckDb(w) => w.preview(src, limit),
            Kind::Postgres(w) => w.preview(src, limit),
            Kind::Sql(w) => w.preview(src, limit),
        }
    }

    /// Whether this warehouse reads changes from a change function (Snowflake `CHANGES`,
    /// Databricks' Change Data Feed, BigQuery `CHANGES`); PostgreSQL's logical decoding is
    /// handled apart.
    pub fn has_change_function(&self) -> bool {
        matches!(self.kind(), Kind::Sql(w) if w.change_format().is_some())
    }

    /// The current position of the change output of `src` when it can be read (probed), else
    /// why not.
    pub fn change_start(
        &self,
        src: &SourceRef,
    ) -> Result<Result<Watermark, String>, WarehouseError> {
        match self.kind() {
            Kind::Sql(w) => w.change_start(src),
            _ => Ok(Err("no change function here".into())),
        }
    }

    /// `None` when the change output of `src` can be read, else why not.
    pub fn changes_unavailable(&self, src: &SourceRef) -> Result<Option<String>, WarehouseError> {
        Ok(self.change_start(src)?.err())
    }

    /// The current position of the change output of `src`.
    pub fn change_position(&self, src: &SourceRef) -> Result<Watermark, WarehouseError> {
        match self.kind() {
            Kind::Sql(w) => w.change_position(src),
            _ => Err(WarehouseError::Query {
                source_ref: src.clone(),
                message: "no change function here".into(),
                transient: false,
            }),
        }
    }

    /// The changes of `src` after `from` up to `to`, compacted by `key`.
    pub fn read_changes(
        &self,
        src: &SourceRef,
        key: &[String],
        from: Watermark,
        to: Watermark,
    ) -> Result<changes::Compacted, WarehouseError> {
        match self.kind() {
            Kind::Sql(w) => w.read_changes(src, key, from, to),
            _ => Err(WarehouseError::Query {
                source_ref: src.clone(),
                message: "no change function here".into(),
                transient: false,
            }),
        }
    }
}

/// A [`Warehouse`] by how it is read.
pub(crate) enum Kind<'a> {
    #[cfg(feature = "duckdb")]
    DuckDb(&'a duckdb::DuckDbWarehouse),
    Postgres(&'a postgres::PostgresWarehouse),
    /// The SQL-over-HTTP warehouses.
    Sql(&'a dyn sql::SqlApi),
}

/// How a SQL dialect writes the literals of an append cursor's `WHERE` clause.
pub(crate) struct Literals {
    /// A timestamp from `YYYY-MM-DD HH:MM:SS.ffffff` (UTC); `true` for an instant (a column
    /// with a time zone), `false` for a naive timestamp.
    pub timestamp: fn(&str, bool) -> String,
    /// A date from `YYYY-MM-DD`.
    pub date: fn(&str) -> String,
}

/// `WHERE <col> > <watermark>` (empty on a first run), with literals written per `literals`
/// (built from typed watermarks only, never from user text).
pub(crate) fn after_clause(
    col: &str,
    cursor_type: &DataType,
    after: Option<Watermark>,
    literals: &Literals,
) -> String {
    match after {
        None => String::new(),
        Some(Watermark::Integer(v)) => format!("WHERE {col} > {v}"),
        Some(Watermark::TimestampMicros(us)) => {
            let t = chrono::DateTime::from_timestamp_micros(us)
                .unwrap_or_default()
                .format("%Y-%m-%d %H:%M:%S%.6f")
                .to_string();
            let instant = matches!(cursor_type, DataType::Timestamp(_, Some(_)));
            format!("WHERE {col} > {}", (literals.timestamp)(&t, instant))
        }
        Some(Watermark::Date(d)) => {
            let day = chrono::DateTime::from_timestamp(i64::from(d) * 86_400, 0)
                .unwrap_or_default()
                .format("%Y-%m-%d")
                .to_string();
            format!("WHERE {col} > {}", (literals.date)(&day))
        }
    }
}

/// `from` reduced to the latest row per `key` by `order` (names already written as SQL).
pub(crate) fn latest_per_key_sql(from: &str, key: &[String], order: &str) -> SourceRef {
    SourceRef::Query(format!(
        "SELECT * FROM {from} WHERE TRUE QUALIFY row_number() OVER (PARTITION BY {} ORDER BY {order} DESC) = 1",
        key.join(", ")
    ))
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
