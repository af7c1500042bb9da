//! Databricks' `[warehouses.<name>]` table (`type = "databricks"`): its keys, their checks,
//! and the warehouse they configure.

use std::time::Duration;

use serde::Deserialize;

use super::{DatabricksSettings, DatabricksWarehouse};
use crate::config::invalid::Invalid;
use crate::duration::Span;
use crate::secret::Secret;
use crate::warehouse::http::BaseUrl;

/// `type = "databricks"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabricksConfig {
    /// Workspace URL, e.g. `https://adb-1234567890123456.7.azuredatabricks.net`.
    pub host: String,
    /// Access token (e.g. `${DATABRICKS_TOKEN}`); never printed.
    pub token: Secret,
    /// The SQL warehouse's id.
    pub warehouse_id: String,
    /// Default catalog.
    pub catalog: Option<String>,
    /// Default schema.
    pub schema: Option<String>,
    /// Per-request timeout (default `60s`).
    pub timeout: Option<Span>,
}

impl DatabricksConfig {
    /// Refuses a host that is not the workspace's URL.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.host.starts_with("https://") || self.host.starts_with("http://") {
            return Ok(());
        }
        Err(Invalid::new(
            "host",
            format!(
                "`{}`: write the workspace URL, e.g. `https://adb-123.4.azuredatabricks.net`",
                self.host
            ),
        ))
    }
}

/// The warehouse `name` configured by `d`.
pub(crate) fn from_config(name: &str, d: &DatabricksConfig) -> DatabricksWarehouse {
    let settings = DatabricksSettings {
        host: BaseUrl::new(&d.host),
        token: d.token.clone(),
        warehouse_id: d.warehouse_id.clone(),
        catalog: d.catalog.clone(),
        schema: d.schema.clone(),
        timeout: d.timeout.map_or(Duration::from_secs(60), Span::get),
    };
    DatabricksWarehouse::new(name, settings)
}

/// The console's form of a Databricks SQL warehouse.
pub const FIELDS: &[crate::config::fields::Field] = {
    use crate::config::fields::Field;
    &[
        Field::text("host", "Workspace URL", "https://adb-….azuredatabricks.net"),
        Field::text("token", "Access token", "").secret(),
        Field::text("warehouse_id", "SQL warehouse id", ""),
        Field::text("catalog", "Catalog", "").optional(),
        Field::text("schema", "Schema", "").optional(),
    ]
};
