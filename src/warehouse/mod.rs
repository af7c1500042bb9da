//! Warehouse connectors. Each yields Arrow `RecordBatch`es; nothing downstream knows which
//! warehouse produced them.

pub mod bigquery;
pub mod databricks;
pub mod duckdb;
mod http;
pub mod postgres;
pub mod snowflake;

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
            WarehouseConfig::Duckdb { path } => {
                Warehouse::DuckDb(duckdb::DuckDbWarehouse::new(name, config.resolve(path)))
            }
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
                    password: sf
                        .password
                        .as_ref()
                        .map(|p| p.expose().to_string())
                        .unwrap_or_default(),
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
                    access_token: b.access_token.as_ref().map(|t| t.expose().to_string()),
                    timeout: b
                        .timeout
                        .as_deref()
                        .and_then(crate::config::parse_duration)
                        .unwrap_or(std::time::Duration::from_secs(60)),
                };
                Warehouse::BigQuery(bigquery::BigQueryWarehouse::new(name, settings))
            }
        })
    }

    /// Connects once (the health check).
    pub fn check(&self) -> Result<(), WarehouseError> {
        match self {
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
        match self {
            Warehouse::DuckDb(_) => duckdb::DuckDbWarehouse::latest_per_key(src, key, order),
            Warehouse::Postgres(_) => {
                let columns: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
                postgres::PostgresWarehouse::latest_per_key(src, &columns, key, order)
            }
            Warehouse::Snowflake(_) => {
                snowflake::SnowflakeWarehouse::latest_per_key(src, key, order)
            }
            Warehouse::Databricks(_) => {
                databricks::DatabricksWarehouse::latest_per_key(src, key, order)
            }
            Warehouse::BigQuery(w) => w.latest_per_key(src, key, order),
        }
    }

    /// The number of rows of `src`.
    pub fn count(&self, src: &SourceRef) -> Result<u64, WarehouseError> {
        match self {
            Warehouse::DuckDb(w) => w.count(src),
            Warehouse::Postgres(w) => w.count(src),
            Warehouse::Snowflake(w) => w.count(src),
            Warehouse::Databricks(w) => w.count(src),
            Warehouse::BigQuery(w) => w.count(src),
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
        match self {
            Warehouse::DuckDb(w) => w.count_after(src, cursor, cursor_type, after),
            Warehouse::Postgres(w) => w.count_after(src, cursor, cursor_type, after),
            Warehouse::Snowflake(w) => w.count_after(src, cursor, cursor_type, after),
            Warehouse::Databricks(w) => w.count_after(src, cursor, cursor_type, after),
            Warehouse::BigQuery(w) => w.count_after(src, cursor, cursor_type, after),
        }
    }

    /// Streams the rows whose `cursor` is past `after` to `each` (false stops).
    pub fn read_after(
        &self,
        src: &SourceRef,
        cursor: &str,
        cursor_type: &DataType,
        after: Option<Watermark>,
        each: impl FnMut(RecordBatch) -> bool,
    ) -> Result<(), WarehouseError> {
        match self {
            Warehouse::DuckDb(w) => w.read_after(src, cursor, cursor_type, after, each),
            Warehouse::Postgres(w) => w.read_after(src, cursor, cursor_type, after, each),
            Warehouse::Snowflake(w) => w.read_after(src, cursor, cursor_type, after, each),
            Warehouse::Databricks(w) => w.read_after(src, cursor, cursor_type, after, each),
            Warehouse::BigQuery(w) => w.read_after(src, cursor, cursor_type, after, each),
        }
    }

    /// Streams the whole of `src` to `each` (false stops).
    pub fn read_snapshot(
        &self,
        src: &SourceRef,
        each: impl FnMut(RecordBatch) -> bool,
    ) -> Result<(), WarehouseError> {
        match self {
            Warehouse::DuckDb(w) => w.read_snapshot(src, each),
            Warehouse::Postgres(w) => w.read_snapshot(src, each),
            Warehouse::Snowflake(w) => w.read_snapshot(src, each),
            Warehouse::Databricks(w) => w.read_snapshot(src, each),
            Warehouse::BigQuery(w) => w.read_snapshot(src, each),
        }
    }

    /// The first `limit` rows of `src`.
    pub fn preview(
        &self,
        src: &SourceRef,
        limit: usize,
    ) -> Result<Vec<RecordBatch>, WarehouseError> {
        match self {
            Warehouse::DuckDb(w) => w.preview(src, limit),
            Warehouse::Postgres(w) => w.preview(src, limit),
            Warehouse::Snowflake(w) => w.preview(src, limit),
            Warehouse::Databricks(w) => w.preview(src, limit),
            Warehouse::BigQuery(w) => w.preview(src, limit),
        }
    }
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
