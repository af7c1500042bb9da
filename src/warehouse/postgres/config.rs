//! PostgreSQL's and Redshift's `[warehouses.<name>]` table (`type = "postgres"` or
//! `"redshift"`): its keys, their checks, and the warehouse they configure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Flavor, PgSettings, PostgresWarehouse, SslMode};
use crate::config::invalid::Invalid;
use crate::duration::Span;
use crate::secret::Secret;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslModeConfig {
    /// No TLS.
    Disable,
    /// TLS if the server offers it; the certificate is not checked.
    #[default]
    Prefer,
    /// TLS; the certificate is not checked (as in libpq).
    Require,
    /// TLS; the certificate chain and the host name are checked.
    VerifyFull,
}

/// A PostgreSQL or Redshift connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Host name or address.
    pub host: String,
    /// Port (default 5432; 5439 for Redshift).
    pub port: Option<u16>,
    /// Database.
    pub database: String,
    /// User.
    pub user: String,
    /// Password; use `${ENV_VAR}` to keep it out of the file.
    pub password: Option<Secret>,
    /// `disable`, `prefer` (default), `require` or `verify-full`.
    #[serde(default)]
    pub sslmode: SslModeConfig,
    /// PEM root certificates for `verify-full` (default: the system's).
    pub sslrootcert: Option<PathBuf>,
    /// Connection timeout (default `10s`).
    pub connect_timeout: Option<Span>,
}

impl PostgresConfig {
    /// Refuses a root certificate that would not be used.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.sslrootcert.is_some() && self.sslmode != SslModeConfig::VerifyFull {
            return Err(Invalid::new(
                "sslrootcert",
                "only used with `sslmode = \"verify-full\"`; set that or remove it",
            ));
        }
        Ok(())
    }
}

/// The warehouse `name` configured by `p` (`redshift`: Amazon Redshift, port 5439 by default).
pub(crate) fn from_config(
    name: &str,
    p: &PostgresConfig,
    base_dir: &Path,
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
        sslrootcert: p.sslrootcert.as_ref().map(|c| base_dir.join(c)),
        connect_timeout: p.connect_timeout.map_or(Duration::from_secs(10), Span::get),
        flavor: if redshift {
            Flavor::Redshift
        } else {
            Flavor::Postgres
        },
    };
    PostgresWarehouse::new(name, settings)
}

/// The console's form of a PostgreSQL or Redshift warehouse.
pub const FIELDS: &[crate::config::fields::Field] = {
    use crate::config::fields::Field;
    &[
        Field::text("host", "Host", "name or address of the server"),
        Field::text("port", "Port", "default 5432 (Redshift 5439)")
            .optional()
            .number(),
        Field::text("database", "Database", ""),
        Field::text("user", "User", ""),
        Field::text(
            "password",
            "Password",
            "stored in the secrets file, or write ${ENV_VAR}",
        )
        .optional()
        .secret(),
        Field::text("sslmode", "TLS", "").optional().select(&[
            "prefer",
            "disable",
            "require",
            "verify-full",
        ]),
    ]
};
