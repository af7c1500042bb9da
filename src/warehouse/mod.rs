//! Warehouse connectors. Each yields Arrow `RecordBatch`es; nothing downstream knows which
//! warehouse produced them.

pub mod duckdb;

use wharf_operators::arrow::datatypes::SchemaRef;

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
            }
        )
    }
}
