//! BigQuery from its `[warehouses.<name>]` table.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{BigQueryAuth, BigQuerySettings, BigQueryWarehouse, ServiceAccount};
use crate::config::{BigQueryConfig, Config};
use crate::duration::Span;

/// The warehouse `name` configured by `b`. A service account that cannot be read or parsed
/// becomes [`BigQueryAuth::Invalid`]: the error is reported when the warehouse is used.
pub(crate) fn from_config(name: &str, b: &BigQueryConfig, config: &Config) -> BigQueryWarehouse {
    let auth = match (&b.access_token, &b.credentials, &b.credentials_file) {
        (Some(t), _, _) => BigQueryAuth::Token(t.expose().to_string()),
        (None, None, None) => BigQueryAuth::None,
        (None, json, file) => {
            let json = match (json, file) {
                (Some(j), _) => Ok(j.expose().to_string()),
                (None, Some(f)) => std::fs::read_to_string(config.resolve(Path::new(f)))
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
