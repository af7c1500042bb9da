//! The warehouses wharf knows, in one place: [`WarehouseConfig`] has a variant per kind, and
//! its `type` name, table, checks and connector are chosen here. A new warehouse is a folder
//! under `src/warehouse/` implementing [`Warehouse`] (with its table in its `config.rs`), its
//! `mod` line in `warehouse/mod.rs`, and its entries here: the variant and one arm in each
//! `match` below.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::bigquery::{self, BigQueryConfig};
use super::databricks::{self, DatabricksConfig};
use super::postgres::{self, PostgresConfig};
use super::snowflake::{self, SnowflakeConfig};
use super::Warehouse;
use crate::config::invalid::Invalid;
use crate::config::tagged::{tagged, tagged_fields};
use crate::size::ByteSize;

/// A warehouse connection (chosen by its `type` key; see [`tagged`]): one variant per kind.
#[derive(Debug, Clone)]
pub enum WarehouseConfig {
    /// An embedded DuckDB database file.
    Duckdb {
        /// The database file.
        path: PathBuf,
        /// DuckDB's `memory_limit` for wharf's reads (e.g. `"1GB"`); default 64MB. DuckDB
        /// keeps the file's blocks it has read in memory up to this limit, so without one the
        /// process grows with the table; queries that need more (the profile-history
        /// window) spill to `<file>.tmp`.
        memory_limit: Option<ByteSize>,
    },
    /// A PostgreSQL server.
    Postgres(PostgresConfig),
    /// An Amazon Redshift cluster (PostgreSQL's wire protocol).
    Redshift(PostgresConfig),
    /// A Snowflake account (its HTTP API).
    Snowflake(SnowflakeConfig),
    /// A Databricks SQL warehouse (the SQL Statement Execution API).
    Databricks(DatabricksConfig),
    /// Google BigQuery (its REST API).
    Bigquery(BigQueryConfig),
}

/// `type = "duckdb"`.
#[cfg(feature = "duckdb")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DuckdbFields {
    path: PathBuf,
    #[serde(default)]
    memory_limit: Option<ByteSize>,
}

impl<'de> Deserialize<'de> for WarehouseConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const TYPES: &[&str] = &[
            "duckdb",
            "postgres",
            "redshift",
            "snowflake",
            "databricks",
            "bigquery",
        ];
        let (kind, rest) = tagged::<D>(d, TYPES)?;
        Ok(match kind.as_str() {
            #[cfg(not(feature = "duckdb"))]
            "duckdb" => {
                let _ = rest;
                return Err(serde::de::Error::custom(
                    "this build of wharf has no DuckDB support; build with the `duckdb` feature",
                ));
            }
            #[cfg(feature = "duckdb")]
            "duckdb" => {
                let f: DuckdbFields = tagged_fields::<D, _>(rest)?;
                WarehouseConfig::Duckdb {
                    path: f.path,
                    memory_limit: f.memory_limit,
                }
            }
            "postgres" => WarehouseConfig::Postgres(tagged_fields::<D, _>(rest)?),
            "redshift" => WarehouseConfig::Redshift(tagged_fields::<D, _>(rest)?),
            "snowflake" => WarehouseConfig::Snowflake(tagged_fields::<D, _>(rest)?),
            "databricks" => WarehouseConfig::Databricks(tagged_fields::<D, _>(rest)?),
            _ => WarehouseConfig::Bigquery(tagged_fields::<D, _>(rest)?),
        })
    }
}

impl WarehouseConfig {
    /// The warehouse kind, as sent in `$warehouse_type` (its `type` in `wharf.toml`).
    pub fn kind(&self) -> &'static str {
        match self {
            WarehouseConfig::Duckdb { .. } => "duckdb",
            WarehouseConfig::Postgres(_) => "postgres",
            WarehouseConfig::Redshift(_) => "redshift",
            WarehouseConfig::Snowflake(_) => "snowflake",
            WarehouseConfig::Databricks(_) => "databricks",
            WarehouseConfig::Bigquery(_) => "bigquery",
        }
    }

    /// The kind's own checks of its table (keys relative to it).
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            WarehouseConfig::Duckdb { .. } => Ok(()),
            WarehouseConfig::Postgres(p) | WarehouseConfig::Redshift(p) => p.validate(),
            WarehouseConfig::Snowflake(c) => c.validate(),
            WarehouseConfig::Databricks(c) => c.validate(),
            WarehouseConfig::Bigquery(c) => c.validate(),
        }
    }

    /// Whether the kind may have a change stream wharf reads (logical decoding, a SQL change
    /// function); whether a given table has one is known only when it is opened.
    pub fn has_change_stream(&self) -> bool {
        !matches!(
            self,
            WarehouseConfig::Duckdb { .. } | WarehouseConfig::Redshift(_)
        )
    }

    /// The warehouse `name` this table configures (relative paths against `base_dir`),
    /// connected lazily: nothing is reached until it is used.
    pub fn open(&self, name: &str, base_dir: &Path) -> Option<Arc<dyn Warehouse>> {
        Some(match self {
            #[cfg(feature = "duckdb")]
            WarehouseConfig::Duckdb { path, memory_limit } => Arc::new(
                super::duckdb::DuckDbWarehouse::new(name, base_dir.join(path))
                    .with_memory_limit(memory_limit.map(|m| m.bytes())),
            ),
            // Refused when the config is parsed (`Config::parse`); never reached.
            #[cfg(not(feature = "duckdb"))]
            WarehouseConfig::Duckdb { .. } => return None,
            WarehouseConfig::Postgres(p) => {
                Arc::new(postgres::from_config(name, p, base_dir, false))
            }
            WarehouseConfig::Redshift(p) => {
                Arc::new(postgres::from_config(name, p, base_dir, true))
            }
            WarehouseConfig::Snowflake(c) => Arc::new(snowflake::from_config(name, c, base_dir)),
            WarehouseConfig::Databricks(c) => Arc::new(databricks::from_config(name, c)),
            WarehouseConfig::Bigquery(c) => Arc::new(bigquery::from_config(name, c, base_dir)),
        })
    }
}

/// Every warehouse kind with the console's form for it.
pub fn kinds() -> Vec<crate::config::fields::Kind> {
    use crate::config::fields::{Field, Kind};
    const DUCKDB: &[Field] = &[
        Field::text("path", "Database file", "relative to the config file"),
        Field::text("memory_limit", "Memory limit", "default 64MB").optional(),
    ];
    vec![
        Kind {
            kind: "duckdb",
            label: "DuckDB",
            fields: DUCKDB,
        },
        Kind {
            kind: "postgres",
            label: "PostgreSQL",
            fields: postgres::config::FIELDS,
        },
        Kind {
            kind: "redshift",
            label: "Amazon Redshift",
            fields: postgres::config::FIELDS,
        },
        Kind {
            kind: "snowflake",
            label: "Snowflake",
            fields: snowflake::config::FIELDS,
        },
        Kind {
            kind: "databricks",
            label: "Databricks",
            fields: databricks::config::FIELDS,
        },
        Kind {
            kind: "bigquery",
            label: "BigQuery",
            fields: bigquery::config::FIELDS,
        },
    ]
}
