//! Snowflake from its `[warehouses.<name>]` table.

use std::path::Path;
use std::time::Duration;

use super::{SnowflakeAuth, SnowflakeSettings, SnowflakeWarehouse};
use crate::config::{Config, SnowflakeConfig};
use crate::duration::Span;

/// The warehouse `name` configured by `sf`.
pub(crate) fn from_config(name: &str, sf: &SnowflakeConfig, config: &Config) -> SnowflakeWarehouse {
    let settings = SnowflakeSettings {
        base_url: sf
            .url
            .clone()
            .unwrap_or_else(|| format!("https://{}.snowflakecomputing.com", sf.account))
            .trim_end_matches('/')
            .to_string(),
        account: sf.account.clone(),
        user: sf.user.clone(),
        auth: match (&sf.password, &sf.private_key, &sf.private_key_file) {
            (_, Some(pem), _) => SnowflakeAuth::KeyPair(pem.expose().to_string()),
            (_, None, Some(path)) => SnowflakeAuth::KeyPairFile(config.resolve(Path::new(path))),
            (p, None, None) => SnowflakeAuth::Password(
                p.as_ref()
                    .map(|p| p.expose().to_string())
                    .unwrap_or_default(),
            ),
        },
        database: sf.database.clone(),
        schema: sf.schema.clone().unwrap_or_else(|| "PUBLIC".into()),
        warehouse: sf.warehouse.clone(),
        role: sf.role.clone(),
        timeout: sf.timeout.map_or(Duration::from_secs(60), Span::get),
    };
    SnowflakeWarehouse::new(name, settings)
}
