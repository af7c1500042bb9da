//! Events to Mixpanel's `/import` API: NDJSON, gzip, `strict=1`, service-account or
//! project-token basic auth. Answers are classified for the shared retry policy:
//! 429/5xx/timeouts are transient (honouring `Retry-After`), 413 splits the batch, a 400 with
//! `failed_records` turns those records into rejects while the rest count as delivered,
//! anything else is permanent. Credentials live only in a sensitive header value.

use std::io::Write;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;
use wharf_operators::dataflow::BatchLimits;
use wharf_operators::record::{EncodedRecords, Reject};
use wharf_pipelines::destination::{BoxFuture, Destination, DestinationError, SendOutcome};

use crate::config::{MixpanelConfig, Region};

/// Mixpanel's limits for one `/import` request.
pub const IMPORT_LIMITS: BatchLimits = BatchLimits {
    max_records: 2000,
    max_bytes: 10 * 1024 * 1024,
};

/// The ingestion host for a region.
pub fn region_host(region: Region) -> &'static str {
    match region {
        Region::Us => "https://api.mixpanel.com",
        Region::Eu => "https://api-eu.mixpanel.com",
        Region::In => "https://api-in.mixpanel.com",
    }
}

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
        let host = config
            .api_host
            .clone()
            .unwrap_or_else(|| region_host(config.region).to_string())
            .trim_end_matches('/')
            .to_string();
        let mut url = format!("{host}/import?strict=1");
        if let Some(p) = &config.project_id {
            url.push_str("&project_id=");
            url.push_str(&percent_encode(p));
        }
        let userpass = match (&config.service_account, &config.project_token) {
            (Some(sa), _) => format!("{}:{}", sa.username, sa.secret.expose()),
            (None, Some(token)) => format!("{}:", token.expose()),
            (None, None) => {
                return Err(DestinationError::Permanent {
                    message: "no Mixpanel credentials configured".into(),
                })
            }
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(userpass);
        let mut auth = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
            DestinationError::Permanent {
                message: "Mixpanel credentials contain characters not allowed in a header".into(),
            }
        })?;
        auth.set_sensitive(true);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DestinationError::Permanent {
                message: format!("cannot build HTTP client: {e}"),
            })?;
        Ok(MixpanelImport {
            client,
            url,
            host,
            auth,
        })
    }

    /// Checks that the host answers and accepts the credentials (an empty import).
    pub async fn check(&self) -> Result<(), DestinationError> {
        let resp = self
            .client
            .post(&self.url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body("[]")
            .send()
            .await
            .map_err(transport_error)?;
        match resp.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(DestinationError::Permanent {
                message: format!(
                    "Mixpanel at {} refused the credentials (HTTP {})",
                    self.host,
                    resp.status().as_u16()
                ),
            }),
            s if s.is_server_error() => Err(DestinationError::Transient {
                message: format!("Mixpanel at {} answered HTTP {}", self.host, s.as_u16()),
                retry_after: None,
            }),
            _ => Ok(()),
        }
    }
}

/// Percent-encodes `s` for a URL query or a form body (RFC 3986 unreserved kept).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn transport_error(e: reqwest::Error) -> DestinationError {
    // reqwest's message names the URL (host and project id, never credentials); keep it short.
    if e.is_timeout() {
        // A timeout is a sign of overload: the whole destination slows down.
        return DestinationError::Overloaded {
            message: format!("timed out: {}", e.without_url()),
            retry_after: None,
        };
    }
    let kind = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    DestinationError::Transient {
        message: format!("{kind}: {}", e.without_url()),
        retry_after: None,
    }
}

fn gzip(data: &[u8]) -> Result<Vec<u8>, DestinationError> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(data)
        .and_then(|_| enc.finish())
        .map_err(|e| DestinationError::Permanent {
            message: format!("gzip failed: {e}"),
        })
}

fn retry_after(h: Option<&HeaderValue>) -> Option<Duration> {
    let secs: f64 = h?.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

fn snippet(body: &str) -> String {
    body.chars().take(300).collect()
}

impl Destination for MixpanelImport {
    fn describe(&self) -> String {
        format!("Mixpanel /import at {}", self.host)
    }

    fn send<'a>(
        &'a self,
        records: &'a EncodedRecords,
    ) -> BoxFuture<'a, Result<SendOutcome, DestinationError>> {
        Box::pin(async move {
            let body = gzip(&records.data)?;
            let resp = self
                .client
                .post(&self.url)
                .header(AUTHORIZATION, self.auth.clone())
                .header(CONTENT_TYPE, "application/x-ndjson")
                .header(CONTENT_ENCODING, "gzip")
                .body(body)
                .send()
                .await
                .map_err(transport_error)?;
            let status = resp.status();
            let wait = retry_after(resp.headers().get(RETRY_AFTER));
            let text = resp.text().await.map_err(transport_error)?;
            match status {
                s if s.is_success() => {
                    let n = serde_json::from_str::<ImportAnswer>(&text)
                        .ok()
                        .and_then(|a| a.num_records_imported)
                        .unwrap_or(records.len());
                    Ok(SendOutcome {
                        delivered: n,
                        rejects: Vec::new(),
                    })
                }
                StatusCode::BAD_REQUEST => {
                    let answer: Option<ImportAnswer> = serde_json::from_str(&text).ok();
                    match answer {
                        Some(a) if !a.failed_records.is_empty() => {
                            let rejects: Vec<Reject> = a
                                .failed_records
                                .iter()
                                .map(|f| {
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
                                })
                                .collect();
                            let delivered = a
                                .num_records_imported
                                .unwrap_or(records.len().saturating_sub(rejects.len()));
                            Ok(SendOutcome { delivered, rejects })
                        }
                        other => Err(DestinationError::Permanent {
                            message: format!(
                                "HTTP 400: {}",
                                other
                                    .and_then(|a| a.error)
                                    .unwrap_or_else(|| snippet(&text))
                            ),
                        }),
                    }
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(DestinationError::Permanent {
                    message: format!(
                        "HTTP {}: Mixpanel refused the credentials; check the service account or project token",
                        status.as_u16()
                    ),
                }),
                StatusCode::PAYLOAD_TOO_LARGE => Err(DestinationError::TooLarge {
                    message: format!("HTTP 413 for {} records", records.len()),
                }),
                StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
                    Err(DestinationError::Overloaded {
                        message: format!("HTTP {}: {}", status.as_u16(), snippet(&text)),
                        retry_after: wait,
                    })
                }
                s if s.is_server_error() => Err(DestinationError::Transient {
                    message: format!("HTTP {}: {}", s.as_u16(), snippet(&text)),
                    retry_after: wait,
                }),
                s => Err(DestinationError::Permanent {
                    message: format!("HTTP {}: {}", s.as_u16(), snippet(&text)),
                }),
            }
        })
    }
}
