//! Events to Mixpanel's `/import` API: NDJSON, gzip, `strict=1`, service-account or
//! project-token basic auth. Answers are classified for the shared retry policy:
//! 429/5xx/timeouts are transient (honouring `Retry-After`), 413 splits the batch, a 400 with
//! `failed_records` turns those records into rejects while the rest count as delivered,
//! anything else is permanent. Credentials live only in a sensitive header value.

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use wharf_operators::dataflow::BatchLimits;
use wharf_operators::record::{EncodedRecords, Reject};
use wharf_pipelines::destination::{Destination, DestinationError, SendOutcome, Sending};

use super::client::{
    acknowledged, api_host, basic_auth, http_client, permanent, project_id_param, snippet,
    Credentials, HttpAnswer,
};
pub use super::client::{percent_encode, region_host};
use super::config::MixpanelConfig;

/// Mixpanel's limits for one `/import` request.
pub const IMPORT_LIMITS: BatchLimits = BatchLimits {
    max_records: 2000,
    max_bytes: 10 * 1024 * 1024,
};

/// Sends events to `/import`.
pub struct MixpanelImport {
    client: reqwest::Client,
    url: String,
    host: String,
    auth: HeaderValue,
}

#[derive(Deserialize)]
struct ImportAnswer {
    #[serde(default)]
    num_records_imported: Option<usize>,
    #[serde(default)]
    failed_records: Vec<FailedRecord>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct FailedRecord {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default, rename = "$insert_id")]
    insert_id: Option<String>,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl MixpanelImport {
    /// Builds the client from a destination's config.
    pub fn new(config: &MixpanelConfig, timeout: Duration) -> Result<Self, DestinationError> {
        let host = api_host(config);
        let url = format!("{host}/import?strict=1{}", project_id_param(config));
        Ok(MixpanelImport {
            client: http_client(timeout)?,
            url,
            host,
            auth: basic_auth(config, Credentials::ServiceAccountOrToken)?,
        })
    }

    /// Where requests go (with `project_id`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Checks that the host answers and accepts the credentials (an empty import).
    pub async fn check(&self) -> Result<(), DestinationError> {
        let request = self
            .client
            .post(&self.url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body("[]");
        let answer = HttpAnswer::fetch(request).await?;
        match answer.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(permanent(format!(
                "Mixpanel at {} refused the credentials (HTTP {})",
                self.host,
                answer.status.as_u16()
            ))),
            s if s.is_server_error() => Err(DestinationError::Transient {
                message: format!("Mixpanel at {} answered HTTP {}", self.host, s.as_u16()),
                retry_after: None,
            }),
            _ => Ok(()),
        }
    }
}

fn gzip(data: &[u8]) -> Result<Vec<u8>, DestinationError> {
    crate::destination::gzip::gzip(data).map_err(|e| permanent(format!("gzip failed: {e}")))
}

/// A strict-mode 400: its `failed_records` become rejects and the rest counts as delivered;
/// without `failed_records` the whole request is malformed (permanent).
fn partial_failure(answer: &HttpAnswer, sent: usize) -> Result<SendOutcome, DestinationError> {
    let parsed: Option<ImportAnswer> = serde_json::from_str(&answer.body).ok();
    match parsed {
        Some(a) if !a.failed_records.is_empty() => {
            let rejects: Vec<Reject> = a.failed_records.iter().map(reject).collect();
            let delivered = acknowledged(
                sent.saturating_sub(rejects.len()),
                a.num_records_imported,
                "/import",
            );
            Ok(SendOutcome { delivered, rejects })
        }
        other => Err(permanent(format!(
            "HTTP 400: {}",
            other
                .and_then(|a| a.error)
                .unwrap_or_else(|| snippet(&answer.body))
        ))),
    }
}

fn reject(f: &FailedRecord) -> Reject {
    let id = f.insert_id.clone().filter(|s| !s.is_empty());
    Reject {
        key: match &id {
            Some(id) => format!("{{\"$insert_id\":\"{id}\"}}"),
            None => format!("{{\"index\":{}}}", f.index.unwrap_or(0)),
        },
        insert_id: id,
        reason: format!(
            "Mixpanel rejected {}: {}",
            f.field.as_deref().unwrap_or("the record"),
            f.message.as_deref().unwrap_or("invalid")
        ),
    }
}

impl Destination for MixpanelImport {
    fn describe(&self) -> String {
        format!("Mixpanel /import at {}", self.host)
    }

    fn send<'a>(&'a self, records: &'a EncodedRecords) -> Sending<'a> {
        Box::pin(async move {
            let request = self
                .client
                .post(&self.url)
                .header(AUTHORIZATION, self.auth.clone())
                .header(CONTENT_TYPE, "application/x-ndjson")
                .header(CONTENT_ENCODING, "gzip")
                .body(gzip(&records.data)?);
            let answer = HttpAnswer::fetch(request).await?;
            match answer.status {
                s if s.is_success() => {
                    let delivered = match serde_json::from_str::<ImportAnswer>(&answer.body) {
                        Ok(a) => acknowledged(records.len(), a.num_records_imported, "/import"),
                        Err(_) => records.len(),
                    };
                    Ok(SendOutcome {
                        delivered,
                        rejects: Vec::new(),
                    })
                }
                StatusCode::BAD_REQUEST => partial_failure(&answer, records.len()),
                _ => Err(answer.error(records.len())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> HttpAnswer {
        HttpAnswer {
            status: StatusCode::from_u16(status).unwrap(),
            body: body.to_string(),
            retry_after: None,
        }
    }

    #[test]
    fn delivered_counts_what_was_sent_whatever_the_server_counts() {
        let more: ImportAnswer =
            serde_json::from_str(r#"{"code":200,"num_records_imported":1002,"status":"OK"}"#)
                .unwrap();
        assert_eq!(
            acknowledged(1000, more.num_records_imported, "/import"),
            1000
        );
        let fewer: ImportAnswer = serde_json::from_str(r#"{"num_records_imported":990}"#).unwrap();
        assert_eq!(
            acknowledged(1000, fewer.num_records_imported, "/import"),
            1000
        );
        let partial = partial_failure(
            &answer(
                400,
                r#"{"code":400,"num_records_imported":9,"failed_records":[{"index":3,"$insert_id":"a","field":"properties.time","message":"bad"},{"index":7,"$insert_id":"b","field":"event","message":"bad"}]}"#,
            ),
            10,
        )
        .unwrap();
        assert_eq!(partial.delivered, 8, "10 sent, 2 rejected");
        assert_eq!(partial.rejects.len(), 2);
    }
}
