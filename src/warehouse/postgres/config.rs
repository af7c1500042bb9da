//! PostgreSQL and Redshift from their `[warehouses.<name>]` table.

use std::time::Duration;

use super::{Flavor, PgSettings, PostgresWarehouse, SslMode};
use crate::config::{Config, PostgresConfig, SslModeConfig};
use crate::duration::Span;

/// The warehouse `name` configured by `p` (`redshift`: Amazon Redshift, port 5439 by default).
pub(crate) fn from_config(
    name: &str,
    p: &PostgresConfig,
    config: &Config,
    redshift: bool,
) -> PostgresWarehouse {
    let settings = PgSettings {
        host: p.host.clone(),
        port: p.port.unwrap_or(if redshift { 5439 } else { 5432 }),
        database: p.database.clone(),
        user: p.user.clone(),
        password: p.password.as_ref().map(|s| s.expose().to_string()),
        sslmode: match p.sslmode {
            SslModeConfig::Disable => SslMode::Disable,
            SslModeConfig::Prefer => SslMode::Prefer,
            SslModeConfig::Require => SslMode::Require,
            SslModeConfig::VerifyFull => SslMode::VerifyFull,
        },
        sslrootcert: p.sslrootcert.as_ref().map(|c| config.resolve(c)),
        connect_timeout: p.connect_timeout.map_or(Duration::from_secs(10), Span::get),
        flavor: if redshift {
            Flavor::Redshift
        } else {
            Flavor::Postgres
        },
    };
    PostgresWarehouse::new(name, settings)
}
