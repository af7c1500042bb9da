//! Lookup tables: `PUT /lookup-tables/{id}?project_id=P` replaces a whole table with a CSV
//! (RFC 4180, header row, key first), all or nothing.
//!
//! Records are CSV rows (one complete row each, key first, no header). `send` only buffers
//! them (in memory, bounded by Mixpanel's 100 MB limit) and counts them delivered to the
//! buffer; `flush`, called once the run's rows are all in, PUTs header + rows in one request.
//! A run therefore has to send every row of the table (a full snapshot), and a failed flush
//! fails the run, which commits nothing. One [`MixpanelLookupTable`] serves one run.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use wharf_operators::record::EncodedRecords;
use wharf_pipelines::destination::{
    BoxFuture, Destination, DestinationError, SendOutcome, Sending,
};

use super::client::{
    api_host, basic_auth, http_client, percent_encode, permanent, project_id_param, snippet,
    Credentials, HttpAnswer,
};
use super::config::MixpanelConfig;

/// Mixpanel's limit on a lookup table: 100 MB of uncompressed CSV.
pub const LOOKUP_TABLE_MAX_BYTES: usize = 100 * 1024 * 1024;

/// One RFC 4180 field (shared with the lookup-table mapper in `wharf-operators`).
pub use wharf_operators::mixpanel::changes::write_csv_field as csv_field;

/// How often and how patiently `flush` retries a 429/5xx/timeout before failing the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushRetry {
    /// Retries after the first attempt.
    pub retries: u32,
    /// First wait, doubled each retry.
    pub initial_backoff: Duration,
    /// Longest wait, also the longest `Retry-After` honoured (a longer one fails the flush:
    /// Mixpanel's 429 here means 100 replacements in 24 h were used up).
    pub max_backoff: Duration,
}

impl Default for FlushRetry {
    fn default() -> Self {
        FlushRetry {
            retries: 4,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// The rows buffered so far.
#[derive(Default)]
struct Rows {
    data: Vec<u8>,
    count: usize,
}

/// Replaces one lookup table with the rows of a run.
pub struct MixpanelLookupTable {
    client: reqwest::Client,
    url: String,
    host: String,
    table_id: String,
    auth: HeaderValue,
    header: Vec<u8>,
    max_bytes: usize,
    retry: FlushRetry,
    rows: Mutex<Rows>,
}

#[derive(Deserialize)]
struct LookupAnswer {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    failed_records: Vec<FailedRow>,
}

#[derive(Deserialize)]
struct FailedRow {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    message: Option<String>,
}

impl MixpanelLookupTable {
    /// Builds the client for table `table_id` whose CSV header is `columns` (the key column
    /// first). Needs a service account and `project_id`.
    pub fn new(
        config: &MixpanelConfig,
        table_id: &str,
        columns: &[String],
        timeout: Duration,
    ) -> Result<Self, DestinationError> {
        if columns.len() < 2 {
            return Err(permanent(format!(
                "lookup table {table_id}: needs a key column and at least one property column, got {}",
                columns.len()
            )));
        }
        if config.project_id.is_none() {
            return Err(permanent(
                "lookup tables need project_id in the Mixpanel destination",
            ));
        }
        let auth = basic_auth(config, Credentials::ServiceAccount)?;
        let host = api_host(config);
        let url = format!(
            "{host}/lookup-tables/{}?{}",
            percent_encode(table_id),
            project_id_param(config).trim_start_matches('&')
        );
        let mut header = Vec::new();
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                header.push(b',');
            }
            csv_field(&mut header, column);
        }
        header.extend_from_slice(b"\r\n");
        Ok(MixpanelLookupTable {
            client: http_client(timeout)?,
            url,
            host,
            table_id: table_id.to_string(),
            auth,
            header,
            max_bytes: LOOKUP_TABLE_MAX_BYTES,
            retry: FlushRetry::default(),
            rows: Mutex::new(Rows::default()),
        })
    }

    /// Where the table is replaced (with `project_id`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Lowers the size limit (tests); the default is [`LOOKUP_TABLE_MAX_BYTES`].
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets how `flush` retries.
    pub fn with_flush_retry(mut self, retry: FlushRetry) -> Self {
        self.retry = retry;
        self
    }

    fn buffered(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `records` to the buffer, or refuses them all when the table would pass the limit.
    fn buffer(&self, records: &EncodedRecords) -> Result<SendOutcome, DestinationError> {
        let mut rows = self.buffered();
        // Each row gets CRLF instead of its LF: one byte more per row.
        let adding = records.byte_len() + records.len();
        let total = self.header.len() + rows.data.len() + adding;
        if total > self.max_bytes {
            // The run fails; nothing of it is sent.
            *rows = Rows::default();
            return Err(permanent(format!(
                "lookup table {} is larger than Mixpanel's limit of {} bytes of CSV (reached {total} bytes); \
                 prune columns or rows",
                self.table_id, self.max_bytes
            )));
        }
        rows.data.reserve(adding);
        for row in records.iter() {
            rows.data.extend_from_slice(row);
            rows.data.extend_from_slice(b"\r\n");
        }
        rows.count += records.len();
        Ok(SendOutcome {
            delivered: records.len(),
            rejects: Vec::new(),
        })
    }

    /// One PUT of the whole table.
    async fn put(&self, body: Bytes, rows: usize) -> Result<(), DestinationError> {
        let request = self
            .client
            .put(&self.url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "text/csv")
            .body(body);
        let answer = HttpAnswer::fetch(request).await?;
        let table = &self.table_id;
        match answer.status {
            s if s.is_success() => Ok(()),
            StatusCode::BAD_REQUEST => Err(permanent(format!(
                "Mixpanel refused lookup table {table} (nothing was replaced): {}",
                describe_failure(&answer.body)
            ))),
            StatusCode::NOT_FOUND => Err(permanent(format!(
                "lookup table {table} does not exist in the project; create it in Lexicon first"
            ))),
            StatusCode::PAYLOAD_TOO_LARGE => Err(permanent(format!(
                "lookup table {table} ({rows} rows) is over Mixpanel's size limit (HTTP 413)"
            ))),
            _ => Err(answer.error(rows)),
        }
    }
}

/// The 400 answer's error and failed rows (Mixpanel reports the first 10) in one line.
fn describe_failure(body: &str) -> String {
    let Ok(answer) = serde_json::from_str::<LookupAnswer>(body) else {
        return snippet(body);
    };
    let mut text = answer.error.unwrap_or_else(|| "invalid table".into());
    for row in &answer.failed_records {
        let index = row.index.map_or_else(|| "?".into(), |i| i.to_string());
        let message = row.message.as_deref().unwrap_or("invalid");
        text.push_str(&format!("; row {index}: {message}"));
    }
    text
}

impl Destination for MixpanelLookupTable {
    fn describe(&self) -> String {
        format!("Mixpanel lookup table {} at {}", self.table_id, self.host)
    }

    fn send<'a>(&'a self, records: &'a EncodedRecords) -> Sending<'a> {
        Box::pin(async move { self.buffer(records) })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), DestinationError>> {
        Box::pin(async move {
            // Taken whatever happens: a failed flush fails the run, and its replay sends
            // every row again.
            let rows = std::mem::take(&mut *self.buffered());
            if rows.count == 0 {
                // Nothing was sent this run; an empty PUT would wipe the table.
                return Ok(());
            }
            let mut body = Vec::with_capacity(self.header.len() + rows.data.len());
            body.extend_from_slice(&self.header);
            body.extend_from_slice(&rows.data);
            drop(rows.data);
            let body = Bytes::from(body);
            let mut attempt = 0u32;
            loop {
                let error = match self.put(body.clone(), rows.count).await {
                    Ok(()) => {
                        tracing::info!(table = %self.table_id, rows = rows.count, "lookup table replaced");
                        return Ok(());
                    }
                    Err(e) => e,
                };
                let retry_after = match &error {
                    DestinationError::Transient { retry_after, .. }
                    | DestinationError::Overloaded { retry_after, .. } => *retry_after,
                    _ => return Err(error),
                };
                let backoff = self
                    .retry
                    .initial_backoff
                    .saturating_mul(1u32 << attempt.min(16))
                    .min(self.retry.max_backoff);
                let wait = retry_after.unwrap_or(backoff);
                if attempt >= self.retry.retries || wait > self.retry.max_backoff {
                    return Err(error);
                }
                tracing::warn!(table = %self.table_id, attempt, ?wait, "lookup table replacement failed, retrying: {error}");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    fn field(value: &str) -> String {
        let mut out = Vec::new();
        csv_field(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(field("plain text"), "plain text");
        assert_eq!(field(""), "");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("\""), "\"\"\"\"");
        assert_eq!(field("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(field("cr\r"), "\"cr\r\"");
        assert_eq!(field("Zürich"), "Zürich");
    }
}
