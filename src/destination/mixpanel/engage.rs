//! User profiles (`/engage`) and group profiles (`/groups`).
//!
//! Each record is one complete update object (`$token`, `$distinct_id` or `$group_key` +
//! `$group_id`, one operation) built by the mapper; a request is those records as a JSON
//! array, uncompressed (Mixpanel's `/engage` does not take gzip), with `verbose=1&strict=1`.
//! Mixpanel answers 200 even when updates fail validation, so the body decides:
//! `{"status":1,"error":null}` is success; `{"status":0,…,"failed_records":[…]}` names the
//! failed updates (they become rejects, the rest counts as delivered); `{"status":0,"error":…}`
//! without per-update detail means none was applied (every update becomes a reject with that
//! reason). Other statuses are classified as for `/import` (429/5xx/timeouts retried, 413
//! split). The updates carry the project token themselves, so no credentials are sent.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};
use wharf_operators::dataflow::BatchLimits;
use wharf_operators::record::{EncodedRecords, Reject};
use wharf_pipelines::destination::{Destination, DestinationError, SendOutcome, Sending};

use super::client::{acknowledged, api_host, http_client, permanent, snippet, HttpAnswer};
use super::config::MixpanelConfig;

/// Mixpanel's limits for one `/engage` request: 2000 updates (each at most 1 MB). Mixpanel
/// documents no byte limit per request; /import's 10 MB is used, and a 413 splits anyway.
pub const ENGAGE_LIMITS: BatchLimits = BatchLimits {
    max_records: 2000,
    max_bytes: 10 * 1024 * 1024,
};

/// Default limits for one `/groups` request. Mixpanel's pages disagree (200 in the batch
/// example, 2000 on the limits page): 200 is the safe default; a configured batch size may
/// raise it up to 2000.
pub const GROUPS_LIMITS: BatchLimits = BatchLimits {
    max_records: 200,
    max_bytes: 10 * 1024 * 1024,
};

/// Which profile API a [`MixpanelProfiles`] sends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileEndpoint {
    /// User profiles, `POST /engage`, keyed by `$distinct_id`.
    Users,
    /// Group profiles, `POST /groups`, keyed by `$group_key` + `$group_id`.
    Groups,
}

impl ProfileEndpoint {
    /// The URL path.
    pub fn path(self) -> &'static str {
        match self {
            ProfileEndpoint::Users => "/engage",
            ProfileEndpoint::Groups => "/groups",
        }
    }

    /// The default batch limits ([`ENGAGE_LIMITS`] or [`GROUPS_LIMITS`]).
    pub fn default_limits(self) -> BatchLimits {
        match self {
            ProfileEndpoint::Users => ENGAGE_LIMITS,
            ProfileEndpoint::Groups => GROUPS_LIMITS,
        }
    }

    /// The fields that identify a profile; they make up a reject's key.
    fn key_fields(self) -> &'static [&'static str] {
        match self {
            ProfileEndpoint::Users => &["$distinct_id"],
            ProfileEndpoint::Groups => &["$group_key", "$group_id"],
        }
    }
}

/// Sends profile updates to `/engage` or `/groups`.
pub struct MixpanelProfiles {
    client: reqwest::Client,
    url: String,
    host: String,
    endpoint: ProfileEndpoint,
}

/// The verbose (and strict) answer of `/engage` and `/groups`.
#[derive(Deserialize)]
struct ProfileAnswer {
    status: Value,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    failed_records: Vec<FailedUpdate>,
    #[serde(default)]
    num_records_imported: Option<usize>,
}

#[derive(Deserialize)]
struct FailedUpdate {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl MixpanelProfiles {
    /// Builds the client for `endpoint` from a destination's config. `ip=0` keeps Mixpanel
    /// from geolocating profiles by wharf's own address.
    pub fn new(
        config: &MixpanelConfig,
        endpoint: ProfileEndpoint,
        timeout: Duration,
    ) -> Result<Self, DestinationError> {
        let host = api_host(config);
        let query = match endpoint {
            ProfileEndpoint::Users => "verbose=1&strict=1&ip=0",
            ProfileEndpoint::Groups => "verbose=1&strict=1",
        };
        let url = format!("{host}{}?{query}", endpoint.path());
        Ok(MixpanelProfiles {
            client: http_client(timeout)?,
            url,
            host,
            endpoint,
        })
    }

    /// Where requests go.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The endpoint this client sends to.
    pub fn endpoint(&self) -> ProfileEndpoint {
        self.endpoint
    }

    /// Turns an answer body into an outcome for `records`.
    fn outcome(
        &self,
        records: &EncodedRecords,
        body: &str,
    ) -> Result<SendOutcome, DestinationError> {
        let answer = match serde_json::from_str::<Value>(body.trim()) {
            // Without verbose Mixpanel answers a bare 1 (some update valid) or 0 (none).
            Ok(Value::Number(n)) => ProfileAnswer {
                status: Value::Number(n),
                error: None,
                failed_records: Vec::new(),
                num_records_imported: None,
            },
            Ok(value) => serde_json::from_value(value).map_err(|_| unexpected(body))?,
            Err(_) => return Err(unexpected(body)),
        };
        let ok = match &answer.status {
            Value::Number(n) => n.as_i64() == Some(1),
            Value::String(s) => s == "1" || s.eq_ignore_ascii_case("ok"),
            _ => false,
        };
        if ok && answer.failed_records.is_empty() {
            return Ok(SendOutcome {
                delivered: records.len(),
                rejects: Vec::new(),
            });
        }
        if answer.failed_records.is_empty() {
            let reason = format!(
                "Mixpanel applied none of the {} updates of the request: {}",
                records.len(),
                answer
                    .error
                    .as_deref()
                    .unwrap_or("rejected without a reason")
            );
            let rejects = (0..records.len())
                .map(|i| self.reject(records, Some(i), reason.clone()))
                .collect();
            return Ok(SendOutcome {
                delivered: 0,
                rejects,
            });
        }
        let rejects: Vec<Reject> = answer
            .failed_records
            .iter()
            .map(|f| {
                let reason = format!(
                    "Mixpanel rejected the update ({}): {}",
                    f.field.as_deref().unwrap_or("update"),
                    f.message.as_deref().unwrap_or("invalid")
                );
                self.reject(records, f.index, reason)
            })
            .collect();
        let delivered = acknowledged(
            records.len().saturating_sub(rejects.len()),
            answer.num_records_imported,
            self.endpoint.path(),
        );
        Ok(SendOutcome { delivered, rejects })
    }

    /// A reject for record `index`, keyed by its profile id fields (read from the record
    /// itself; only failed records are parsed).
    fn reject(&self, records: &EncodedRecords, index: Option<usize>, reason: String) -> Reject {
        let update = index
            .filter(|&i| i < records.len())
            .and_then(|i| serde_json::from_slice::<Map<String, Value>>(records.record(i)).ok());
        let key = match update {
            Some(update) => {
                let ids: Map<String, Value> = self
                    .endpoint
                    .key_fields()
                    .iter()
                    .map(|&f| (f.to_string(), update.get(f).cloned().unwrap_or(Value::Null)))
                    .collect();
                Value::Object(ids).to_string()
            }
            None => format!("{{\"index\":{}}}", index.map_or(-1, |i| i as i64)),
        };
        Reject {
            key,
            insert_id: None,
            reason,
        }
    }
}

fn unexpected(body: &str) -> DestinationError {
    permanent(format!(
        "unexpected answer from Mixpanel: {}",
        snippet(body)
    ))
}

impl Destination for MixpanelProfiles {
    fn describe(&self) -> String {
        format!("Mixpanel {} at {}", self.endpoint.path(), self.host)
    }

    fn send<'a>(&'a self, records: &'a EncodedRecords) -> Sending<'a> {
        Box::pin(async move {
            let request = self
                .client
                .post(&self.url)
                .header(CONTENT_TYPE, "application/json")
                .body(records.to_json_array());
            let answer = HttpAnswer::fetch(request).await?;
            match answer.status {
                s if s.is_success() => self.outcome(records, &answer.body),
                // Mixpanel documents a 200 for failed validation; a 400 carrying the same
                // verbose body is read the same way, anything else in a 400 is permanent.
                StatusCode::BAD_REQUEST => self
                    .outcome(records, &answer.body)
                    .map_err(|_| answer.error(records.len())),
                _ => Err(answer.error(records.len())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines written while `f` runs.
    fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&lines.0.lock().unwrap()).into_owned();
        (out, text)
    }

    #[test]
    fn delivered_counts_the_updates_sent_and_not_rejected_and_a_differing_server_count_is_logged() {
        let client = MixpanelProfiles::new(
            &MixpanelConfig::default(),
            ProfileEndpoint::Users,
            Duration::from_secs(1),
        )
        .unwrap();
        let mut records = EncodedRecords::default();
        for i in 0..10 {
            records.push(format!(r#"{{"$distinct_id":"u{i}","$set":{{"a":1}}}}"#).as_bytes());
        }
        // The server counts 12 applied of 10 sent, one of which it rejected.
        let body = r#"{"status":0,"num_records_imported":12,"failed_records":[{"index":4,"field":"$set","message":"bad"}]}"#;
        let (outcome, log) = logged(|| client.outcome(&records, body).unwrap());
        assert_eq!(outcome.delivered, 9, "10 sent, 1 rejected: {log}");
        assert_eq!(outcome.rejects.len(), 1);
        assert!(
            outcome.rejects[0].key.contains("u4"),
            "{:?}",
            outcome.rejects
        );
        assert!(
            log.contains("WARN") && log.contains("server_count=12") && log.contains("sent=9"),
            "the differing count is logged: {log}"
        );
        // A count that agrees logs nothing.
        let agreeing = r#"{"status":0,"num_records_imported":9,"failed_records":[{"index":4,"field":"$set","message":"bad"}]}"#;
        let (outcome, log) = logged(|| client.outcome(&records, agreeing).unwrap());
        assert_eq!(outcome.delivered, 9);
        assert!(log.is_empty(), "{log}");
    }
}
