//! BigQuery's `[warehouses.<name>]` table (`type = "bigquery"`): its keys, their checks, and
//! the warehouse they configure.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{BigQueryAuth, BigQuerySettings, BigQueryWarehouse, ServiceAccount};
use crate::config::invalid::{at_most_one, Invalid};
use crate::duration::Span;
use crate::secret::Secret;

/// `type = "bigquery"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigQueryConfig {
    /// The project queries run in.
    pub project: String,
    /// The dataset of unqualified table names.
    pub dataset: Option<String>,
    /// The datasets' location (e.g. `US`, `EU`).
    pub location: Option<String>,
    /// An OAuth2 access token (e.g. `${GOOGLE_ACCESS_TOKEN}`); never printed.
    pub access_token: Option<Secret>,
    /// A service account's JSON key file (relative to the config file): wharf signs in with
    /// it and renews its access token itself.
    pub credentials_file: Option<String>,
    /// The same key as JSON text (e.g. `${GOOGLE_CREDENTIALS}`); never printed.
    pub credentials: Option<Secret>,
    /// API endpoint (default `https://bigquery.googleapis.com`; an emulator's URL in tests).
    pub endpoint: Option<String>,
    /// The Storage Read API's endpoint (gRPC), which reads tables in Arrow, several streams at
    /// once (default `https://bigquerystorage.googleapis.com` with Google's `endpoint`, none
    /// with another `endpoint` unless set here).
    pub storage_endpoint: Option<String>,
    /// `false` reads everything through REST pages (default `true`).
    pub storage_read: Option<bool>,
    /// Streams a Storage read session asks for (default 4).
    pub storage_streams: Option<u32>,
    /// Per-request timeout (default `60s`).
    pub timeout: Option<Span>,
}

impl BigQueryConfig {
    /// Refuses credentials given in more than one way, or none outside an emulator.
    pub fn validate(&self) -> Result<(), Invalid> {
        at_most_one(
            &[
                ("credentials_file", self.credentials_file.is_some()),
                ("credentials", self.credentials.is_some()),
                ("access_token", self.access_token.is_some()),
            ],
            "credentials_file",
            self.endpoint.is_none().then(|| Invalid::new(
                "credentials_file",
                "missing: set `credentials_file` (a service account's JSON key), `credentials` or `access_token` (only an emulator's `endpoint` needs none)",
            )),
        )
    }
}

/// The warehouse `name` configured by `b`. A service account that cannot be read or parsed
/// becomes [`BigQueryAuth::Invalid`]: the error is reported when the warehouse is used.
pub(crate) fn from_config(name: &str, b: &BigQueryConfig, base_dir: &Path) -> BigQueryWarehouse {
    let auth = match (&b.access_token, &b.credentials, &b.credentials_file) {
        (Some(t), _, _) => BigQueryAuth::Token(t.expose().to_string()),
        (None, None, None) => BigQueryAuth::None,
        (None, json, file) => {
            let json = match (json, file) {
                (Some(j), _) => Ok(j.expose().to_string()),
                (None, Some(f)) => std::fs::read_to_string(base_dir.join(f))
                    .map_err(|e| format!("cannot read {f}: {e}")),
                (None, None) => Ok(String::new()),
            };
            match json.and_then(|j| ServiceAccount::from_json(&j)) {
                Ok(sa) => BigQueryAuth::ServiceAccount(Arc::new(sa)),
                Err(message) => BigQueryAuth::Invalid(message),
            }
        }
    };
    let settings = BigQuerySettings {
        endpoint: b
            .endpoint
            .clone()
            .unwrap_or_else(|| "https://bigquery.googleapis.com".into())
            .trim_end_matches('/')
            .to_string(),
        project: b.project.clone(),
        dataset: b.dataset.clone(),
        location: b.location.clone(),
        auth,
        timeout: b.timeout.map_or(Duration::from_secs(60), Span::get),
        // Google's Storage API with Google's REST API; an emulator's only when set.
        storage_endpoint: match (&b.storage_endpoint, &b.endpoint) {
            (Some(e), _) => Some(e.trim_end_matches('/').to_string()),
            (None, None) => Some("https://bigquerystorage.googleapis.com".into()),
            (None, Some(_)) => None,
        }
        .filter(|_| b.storage_read.unwrap_or(true)),
        storage_streams: b.storage_streams.unwrap_or(4),
    };
    BigQueryWarehouse::new(name, settings)
}

/// The console's form of a BigQuery warehouse.
pub const FIELDS: &[crate::config::fields::Field] = {
    use crate::config::fields::Field;
    &[
        Field::text("project", "Project", ""),
        Field::text("dataset", "Dataset", "of unqualified table names").optional(),
        Field::text("location", "Location", "e.g. US, EU").optional(),
        Field::text("credentials", "Service account key (JSON)", "")
            .optional()
            .secret(),
        Field::text("access_token", "Access token", "instead of a key")
            .optional()
            .secret(),
    ]
};
