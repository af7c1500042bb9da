//! HTTP plumbing shared by the warehouses read over HTTP (Snowflake, Databricks, BigQuery): a
//! private runtime per call, clients with a timeout, and requests retried on transient failures.

use std::time::Duration;

use super::WarehouseError;

/// Retries after a transient failure (connection error, timeout, 429, 5xx).
const RETRIES: u32 = 3;
/// The first pause; it doubles (plus up to 100 ms of jitter).
const FIRST_PAUSE: Duration = Duration::from_millis(250);

fn unavailable(what: &str, message: impl Into<String>) -> WarehouseError {
    WarehouseError::Unavailable {
        what: what.to_string(),
        message: message.into(),
    }
}

/// `url` as shown in messages: credentials written into it (`https://user:secret@host`) become
/// `***`, so a URL from the config can be named in errors and logs without its secret.
pub fn shown_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

/// A warehouse's base URL from the config: used as written to send requests, shown through
/// [`shown_url`] (Debug and [`BaseUrl::shown`]) so credentials written into it never print.
#[derive(Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    /// `url` without a trailing `/` (paths are appended to it).
    pub fn new(url: &str) -> Self {
        BaseUrl(url.trim_end_matches('/').to_string())
    }
    /// The URL as written, for requests only.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The URL as messages show it.
    pub fn shown(&self) -> String {
        shown_url(&self.0)
    }
}

impl std::fmt::Debug for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// Runs `f` on a private current-thread runtime (warehouse calls come from plain threads).
pub fn block_on<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, WarehouseError>>,
) -> Result<T, WarehouseError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| unavailable(what, format!("cannot start a runtime: {e}")))?
        .block_on(f)
}

/// An HTTP client whose requests time out after `timeout`.
pub fn client(what: &str, timeout: Duration) -> Result<reqwest::Client, WarehouseError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| unavailable(what, e.to_string()))
}

fn is_transient_status(s: reqwest::StatusCode) -> bool {
    s.is_server_error() || s.as_u16() == 429
}

/// Sends the request `build` makes, retrying transient failures; `what` names the warehouse
/// in errors (reqwest's errors are reported without their URL).
pub async fn send(
    what: &str,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, WarehouseError> {
    let mut wait = FIRST_PAUSE;
    let mut attempt = 0;
    loop {
        let outcome = build().send().await;
        let transient = match &outcome {
            Ok(r) => is_transient_status(r.status()),
            Err(e) => e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
        };
        if !transient || attempt >= RETRIES {
            return match outcome {
                Ok(r) if is_transient_status(r.status()) => Err(unavailable(
                    what,
                    format!("HTTP {} after {} attempts", r.status(), attempt + 1),
                )),
                Ok(r) => Ok(r),
                Err(e) => Err(unavailable(what, e.without_url().to_string())),
            };
        }
        tracing::warn!(
            warehouse = what,
            attempt,
            ?wait,
            "transient HTTP failure, retrying"
        );
        tokio::time::sleep(wait + Duration::from_millis(fastrand::u64(0..100))).await;
        wait *= 2;
        attempt += 1;
    }
}

/// The body of `resp`, or an error naming `what`.
pub async fn body(what: &str, resp: reqwest::Response) -> Result<bytes::Bytes, WarehouseError> {
    resp.bytes()
        .await
        .map_err(|e| unavailable(what, e.without_url().to_string()))
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn credentials_in_a_url_are_not_shown() {
        assert_eq!(
            shown_url("https://token:s3cret@host:443/x?a=b@c"),
            "https://***@host:443/x?a=b@c"
        );
        assert_eq!(shown_url("http://user@h"), "http://***@h");
        assert_eq!(shown_url("https://h.example/p@q"), "https://h.example/p@q");
        assert_eq!(shown_url("h:1"), "h:1");
    }
}
