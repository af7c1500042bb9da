//! The HTTP pieces every Mixpanel endpoint shares: the reqwest client, the host for a region,
//! basic-auth headers (marked sensitive so they never reach a log), and the classification of
//! transport failures and HTTP answers into [`DestinationError`]s for the shared retry policy
//! (`wharf_pipelines::delivery`). Each endpoint client only interprets the answers that mean
//! something special to it (a 400 with `failed_records`, a 200 with `"status":0`, …).

use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use wharf_pipelines::destination::DestinationError;

use super::config::{MixpanelConfig, Region};

/// The ingestion host for a region.
pub fn region_host(region: Region) -> &'static str {
    match region {
        Region::Us => "https://api.mixpanel.com",
        Region::Eu => "https://api-eu.mixpanel.com",
        Region::In => "https://api-in.mixpanel.com",
    }
}

/// The host requests go to: `api_host` if configured, else the region's, without a trailing `/`.
pub fn api_host(config: &MixpanelConfig) -> String {
    config
        .api_host
        .clone()
        .unwrap_or_else(|| region_host(config.region).to_string())
        .trim_end_matches('/')
        .to_string()
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

/// `&project_id=P` when the config has a project id, else nothing.
pub fn project_id_param(config: &MixpanelConfig) -> String {
    config
        .project_id
        .as_deref()
        .map(|p| format!("&project_id={}", percent_encode(p)))
        .unwrap_or_default()
}

/// Which credentials an endpoint takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// The service account, else the project token as username with an empty password.
    ServiceAccountOrToken,
    /// Only a service account (e.g. lookup tables).
    ServiceAccount,
}

/// The `Authorization: Basic …` header for `config`, marked sensitive.
pub fn basic_auth(
    config: &MixpanelConfig,
    accepted: Credentials,
) -> Result<HeaderValue, DestinationError> {
    let userpass = match (&config.service_account, &config.project_token, accepted) {
        (Some(sa), _, _) => format!("{}:{}", sa.username, sa.secret.expose()),
        (None, Some(token), Credentials::ServiceAccountOrToken) => format!("{}:", token.expose()),
        (None, _, Credentials::ServiceAccount) => {
            return Err(permanent(
                "this Mixpanel endpoint needs a service account (service_account = { username, secret }) and project_id",
            ))
        }
        (None, None, _) => return Err(permanent("no Mixpanel credentials configured")),
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(userpass);
    let mut auth = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
        permanent("Mixpanel credentials contain characters not allowed in a header")
    })?;
    auth.set_sensitive(true);
    Ok(auth)
}

/// The HTTP client all Mixpanel endpoints use: `timeout` per request, 10 s to connect.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, DestinationError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| permanent(format!("cannot build HTTP client: {e}")))
}

/// A permanent error with `message`.
pub fn permanent(message: impl Into<String>) -> DestinationError {
    DestinationError::Permanent {
        message: message.into(),
    }
}

/// A failure to send the request or read the answer, classified: a timeout is a sign of
/// overload (the whole destination slows down), anything else is worth a retry.
pub fn transport_error(e: reqwest::Error) -> DestinationError {
    // reqwest's message names the URL (host and project id, never credentials); keep it short.
    if e.is_timeout() {
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

/// A `Retry-After` header in seconds (capped at an hour); HTTP dates are not used by Mixpanel.
pub fn retry_after(h: Option<&HeaderValue>) -> Option<Duration> {
    let secs: f64 = h?.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// The first 300 characters of an answer, for error messages.
pub fn snippet(body: &str) -> String {
    body.chars().take(300).collect()
}

/// What counts as delivered: the records sent and not rejected (`accepted`). The server's
/// own count (`num_records_imported`) is only compared with it, and a difference logged (a
/// server may count differently, e.g. records it had already): a run never reports more
/// delivered than it read.
pub fn acknowledged(accepted: usize, server_count: Option<usize>, endpoint: &str) -> usize {
    if let Some(n) = server_count.filter(|n| *n != accepted) {
        tracing::warn!(
            endpoint,
            sent = accepted,
            server_count = n,
            "the server's num_records_imported differs from the records sent and not rejected; counting those sent"
        );
    }
    accepted
}

/// One HTTP answer, read whole.
#[derive(Debug)]
pub struct HttpAnswer {
    /// The status code.
    pub status: StatusCode,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<Duration>,
    /// The body as text.
    pub body: String,
}

impl HttpAnswer {
    /// Sends `request` and reads the whole answer; transport failures are classified.
    pub async fn fetch(request: RequestBuilder) -> Result<HttpAnswer, DestinationError> {
        let resp = request.send().await.map_err(transport_error)?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers().get(RETRY_AFTER));
        let body = resp.text().await.map_err(transport_error)?;
        Ok(HttpAnswer {
            status,
            retry_after,
            body,
        })
    }

    /// The error for a status that has no endpoint-specific meaning: 401/403 permanent
    /// (credentials), 413 too large (split), 429/408 overloaded, 5xx transient, anything else
    /// permanent. `records` names what was sent, for the 413 message.
    pub fn error(&self, records: usize) -> DestinationError {
        let code = self.status.as_u16();
        match self.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => permanent(format!(
                "HTTP {code}: Mixpanel refused the credentials; check the service account or project token"
            )),
            StatusCode::PAYLOAD_TOO_LARGE => DestinationError::TooLarge {
                message: format!("HTTP 413 for {records} records"),
            },
            StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
                DestinationError::Overloaded {
                    message: format!("HTTP {code}: {}", snippet(&self.body)),
                    retry_after: self.retry_after,
                }
            }
            s if s.is_server_error() => DestinationError::Transient {
                message: format!("HTTP {code}: {}", snippet(&self.body)),
                retry_after: self.retry_after,
            },
            _ => permanent(format!("HTTP {code}: {}", snippet(&self.body))),
        }
    }
}
