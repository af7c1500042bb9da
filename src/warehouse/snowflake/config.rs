//! Snowflake's `[warehouses.<name>]` table (`type = "snowflake"`): its keys, their checks,
//! and the warehouse they configure.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{SnowflakeAuth, SnowflakeSettings, SnowflakeWarehouse};
use crate::config::invalid::{at_most_one, Invalid};
use crate::duration::Span;
use crate::secret::Secret;
use crate::warehouse::http::BaseUrl;

/// `type = "snowflake"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnowflakeConfig {
    /// Account identifier, e.g. `myorg-myaccount`.
    pub account: String,
    /// Login name.
    pub user: String,
    /// Password (e.g. `${SNOWFLAKE_PASSWORD}`); never printed.
    pub password: Option<Secret>,
    /// Key-pair authentication: the user's unencrypted PKCS#8 RSA private key as PEM text
    /// (e.g. `${SNOWFLAKE_PRIVATE_KEY}`); never printed.
    pub private_key: Option<Secret>,
    /// Key-pair authentication with the key in a PEM file (relative to the config file).
    pub private_key_file: Option<String>,
    /// Database of the session.
    pub database: String,
    /// Schema (default `PUBLIC`).
    pub schema: Option<String>,
    /// Virtual warehouse.
    pub warehouse: Option<String>,
    /// Role.
    pub role: Option<String>,
    /// Base URL (default `https://<account>.snowflakecomputing.com`; an emulator's URL in tests).
    pub url: Option<String>,
    /// Per-request timeout (default `60s`).
    pub timeout: Option<Span>,
}

impl SnowflakeConfig {
    /// Refuses credentials given in more than one way or not at all, and an account
    /// identifier that cannot be one.
    pub fn validate(&self) -> Result<(), Invalid> {
        at_most_one(
            &[
                ("password", self.password.is_some()),
                ("private_key", self.private_key.is_some()),
                ("private_key_file", self.private_key_file.is_some()),
            ],
            "private_key",
            Some(Invalid::new(
                "password",
                "missing: set `password` (e.g. \"${SNOWFLAKE_PASSWORD}\"), or `private_key_file` / `private_key` for key-pair authentication",
            )),
        )?;
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if self.account.is_empty() || !self.account.chars().all(allowed) {
            return Err(Invalid::new(
                "account",
                format!(
                    "`{}`: an account identifier holds letters, digits, `-`, `_` and `.`",
                    self.account
                ),
            ));
        }
        Ok(())
    }
}

/// The warehouse `name` configured by `sf`.
pub(crate) fn from_config(name: &str, sf: &SnowflakeConfig, base_dir: &Path) -> SnowflakeWarehouse {
    let settings = SnowflakeSettings {
        base_url: BaseUrl::new(
            &sf.url
                .clone()
                .unwrap_or_else(|| format!("https://{}.snowflakecomputing.com", sf.account)),
        ),
        account: sf.account.clone(),
        user: sf.user.clone(),
        auth: match (&sf.password, &sf.private_key, &sf.private_key_file) {
            (_, Some(pem), _) => SnowflakeAuth::KeyPair(pem.clone()),
            (_, None, Some(path)) => SnowflakeAuth::KeyPairFile(base_dir.join(path)),
            (p, None, None) => {
                SnowflakeAuth::Password(p.clone().unwrap_or_else(|| Secret::new("")))
            }
        },
        database: sf.database.clone(),
        schema: sf.schema.clone().unwrap_or_else(|| "PUBLIC".into()),
        warehouse: sf.warehouse.clone(),
        role: sf.role.clone(),
        timeout: sf.timeout.map_or(Duration::from_secs(60), Span::get),
    };
    SnowflakeWarehouse::new(name, settings)
}

/// The console's form of a Snowflake warehouse.
pub const FIELDS: &[crate::config::fields::Field] = {
    use crate::config::fields::Field;
    &[
        Field::text("account", "Account", "e.g. myorg-myaccount"),
        Field::text("user", "User", ""),
        Field::text("password", "Password", "or a private key below")
            .optional()
            .secret(),
        Field::text("private_key", "Private key (PEM)", "key-pair sign-in")
            .optional()
            .secret(),
        Field::text("database", "Database", ""),
        Field::text("schema", "Schema", "default PUBLIC").optional(),
        Field::text("warehouse", "Virtual warehouse", "").optional(),
        Field::text("role", "Role", "").optional(),
    ]
};
