//! The warehouses wharf knows: one line each. A new warehouse is a folder under
//! `src/warehouse/` implementing [`Warehouse`], its config kind, and its line here.

use std::sync::Arc;

use super::Warehouse;
use crate::config::{Config, WarehouseConfig};

/// The warehouse `name` of `config`, connected lazily (nothing is reached until it is used).
pub fn open(config: &Config, name: &str) -> Option<Arc<dyn Warehouse>> {
    Some(match config.warehouses.get(name)? {
        #[cfg(feature = "duckdb")]
        WarehouseConfig::Duckdb { path, memory_limit } => Arc::new(
            super::duckdb::DuckDbWarehouse::new(name, config.resolve(path))
                .with_memory_limit(memory_limit.map(|m| m.bytes())),
        ),
        // Refused when the config is parsed (`Config::parse`); never reached.
        #[cfg(not(feature = "duckdb"))]
        WarehouseConfig::Duckdb { .. } => return None,
        WarehouseConfig::Postgres(p) => Arc::new(super::postgres::from_config(
            name,
            p,
            &config.base_dir,
            false,
        )),
        WarehouseConfig::Redshift(p) => Arc::new(super::postgres::from_config(
            name,
            p,
            &config.base_dir,
            true,
        )),
        WarehouseConfig::Snowflake(c) => {
            Arc::new(super::snowflake::from_config(name, c, &config.base_dir))
        }
        WarehouseConfig::Databricks(c) => Arc::new(super::databricks::from_config(name, c)),
        WarehouseConfig::Bigquery(c) => {
            Arc::new(super::bigquery::from_config(name, c, &config.base_dir))
        }
    })
}
