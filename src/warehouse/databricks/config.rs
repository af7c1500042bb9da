//! Databricks from its `[warehouses.<name>]` table.

use std::time::Duration;

use super::{DatabricksSettings, DatabricksWarehouse};
use crate::config::{Config, DatabricksConfig};
use crate::duration::Span;

/// The warehouse `name` configured by `d`.
pub(crate) fn from_config(
    name: &str,
    d: &DatabricksConfig,
    _config: &Config,
) -> DatabricksWarehouse {
    let settings = DatabricksSettings {
        host: d.host.trim_end_matches('/').to_string(),
        token: d.token.expose().to_string(),
        warehouse_id: d.warehouse_id.clone(),
        catalog: d.catalog.clone(),
        schema: d.schema.clone(),
        timeout: d.timeout.map_or(Duration::from_secs(60), Span::get),
    };
    DatabricksWarehouse::new(name, settings)
}
