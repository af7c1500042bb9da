//! Mixpanel's `[destinations.<name>]` table (`type = "mixpanel"`): its keys and their checks.

use serde::Deserialize;

use crate::config::invalid::Invalid;
use crate::duration::Span;
use crate::secret::Secret;

/// Mixpanel data residency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// `api.mixpanel.com`
    #[default]
    Us,
    /// `api-eu.mixpanel.com`
    Eu,
    /// `api-in.mixpanel.com`
    In,
}

/// A Mixpanel service account (basic auth).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccount {
    /// The service account's username.
    pub username: String,
    /// Its secret.
    pub secret: Secret,
}

/// A Mixpanel project.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixpanelConfig {
    /// The project id (required with a service account).
    pub project_id: Option<String>,
    /// Service-account authentication.
    pub service_account: Option<ServiceAccount>,
    /// The project token: authenticates `/import` when no service account is set, and is the
    /// `$token` of every profile update (required for user and group profiles).
    pub project_token: Option<Secret>,
    /// Data residency: `us` (default), `eu` or `in`.
    #[serde(default)]
    pub region: Region,
    /// Overrides the host, e.g. `http://127.0.0.1:8080` for the local receiver.
    pub api_host: Option<String>,
    /// Requests in flight at once (default 10; shrinks on 429s and timeouts, grows back).
    pub concurrency: Option<usize>,
    /// Group-profile updates per `/groups` request (default 200, at most 2000).
    pub groups_batch_size: Option<usize>,
    /// Cap on records sent per second (default: none).
    pub max_records_per_second: Option<f64>,
    /// Cap on uncompressed megabytes (10^6 bytes) sent per minute; 0 disables it. Default:
    /// 1500 (below Mixpanel's 2 GB/min per project) for Mixpanel's hosts, none with `api_host`.
    pub max_mb_per_minute: Option<f64>,
    /// Per-request timeout, e.g. `60s` (default 120 s).
    pub timeout: Option<Span>,
    /// First retry backoff, e.g. `2s` (default 2 s, doubling up to `max_backoff`).
    pub initial_backoff: Option<Span>,
    /// Largest retry backoff (default 60 s).
    pub max_backoff: Option<Span>,
    /// Give up on a request after retrying this long (default 30m); the run then fails and
    /// commits nothing.
    pub give_up_after: Option<Span>,
}

impl MixpanelConfig {
    /// Refuses a project wharf could not authenticate to.
    pub fn validate(&self) -> Result<(), Invalid> {
        match (&self.service_account, &self.project_token) {
            (None, None) => Err(Invalid::new(
                "",
                "set `service_account = { username, secret }` with `project_id`, or `project_token`",
            )),
            (Some(_), _) if self.project_id.is_none() => Err(Invalid::new(
                "project_id",
                "missing: a service account needs the project id",
            )),
            _ => Ok(()),
        }
    }
}

/// The console's form of a Mixpanel destination.
pub const FIELDS: &[crate::config::fields::Field] = {
    use crate::config::fields::Field;
    &[
        Field::text("project_id", "Project id", "").optional(),
        Field::text("project_token", "Project token", "")
            .optional()
            .secret(),
        Field::text("region", "Data residency", "")
            .optional()
            .select(&["us", "eu", "in"]),
        Field::text("api_host", "API host", "overrides the region's host").optional(),
    ]
};
