//! A Mixpanel-compatible HTTP receiver for tests and local dry runs.
//!
//! It enforces Mixpanel's documented rules for `POST /import` (auth, body
//! encodings, request limits and strict per-event validation) so wharf cannot
//! drift into sending data real Mixpanel would reject. Accepted events are
//! appended to `<data_dir>/events.ndjson`; counters survive a restart on the
//! same directory. Each endpoint is one handler over a shared
//! `ReceiverState`; new routes and layers (fault injection) go in `router`.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, HttpBody};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod faults;
mod request;
mod rules;

use faults::Fault;
pub use faults::Faults;

use request::*;
use rules::*;

const EVENTS_FILE: &str = "events.ndjson";
const STATS_FILE: &str = "stats.json";
/// An event's serialized JSON must be strictly smaller than this.
const MAX_EVENT_BYTES: usize = 1024 * 1024;
const MAX_PROPERTIES: usize = 255;
/// 1971-01-01T00:00:00Z in milliseconds since the epoch.
const MIN_TIME_MS: f64 = 31_536_000_000.0;
const MAX_FUTURE_MS: f64 = 3_600_000.0;
/// Placeholder distinct_ids Mixpanel rejects (compared case-insensitively after trimming).
const BANNED_DISTINCT_IDS: &str =
    "anon anonymous nil none null undefined unknown 0 -1 [] {} 00000000-0000-0000-0000-000000000000 <nil>";
const STRICT_FAILURE: &str = "some data points in the request failed validation";

/// How the receiver authenticates `POST /import` (HTTP Basic auth).
#[derive(Clone, PartialEq, Eq)]
pub enum ReceiverAuth {
    /// Any non-empty basic-auth username is accepted (local dry runs).
    AnyCredentials,
    /// A service account; requests must also carry a matching `project_id` query parameter.
    ServiceAccount {
        /// Service account username.
        username: String,
        /// Service account secret.
        secret: String,
        /// The project id the `project_id` query parameter must equal.
        project_id: String,
    },
    /// The project token as the username with an empty password (`project_id` optional).
    ProjectToken {
        /// The project token.
        token: String,
    },
}

impl fmt::Debug for ReceiverAuth {
    /// Never prints secrets or tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AnyCredentials => f.write_str("AnyCredentials"),
            Self::ServiceAccount { project_id, .. } => f
                .debug_struct("ServiceAccount")
                .field("project_id", project_id)
                .finish_non_exhaustive(),
            Self::ProjectToken { .. } => f.debug_struct("ProjectToken").finish_non_exhaustive(),
        }
    }
}

/// Configuration of a [`Receiver`].
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Directory holding `events.ndjson` and `stats.json` (created if missing).
    pub data_dir: PathBuf,
    /// Accepted credentials.
    pub auth: ReceiverAuth,
    /// Maximum events per request (Mixpanel: 2000).
    pub max_records_per_request: usize,
    /// Maximum uncompressed body size in bytes (Mixpanel: 10 MiB).
    pub max_body_bytes: usize,
    /// Failures to inject (none by default).
    pub faults: Option<Faults>,
}

impl ReceiverConfig {
    /// A configuration with Mixpanel's limits (2000 events, 10 MiB per request).
    pub fn new(data_dir: impl Into<PathBuf>, auth: ReceiverAuth) -> Self {
        Self {
            data_dir: data_dir.into(),
            auth,
            max_records_per_request: 2000,
            max_body_bytes: 10 * 1024 * 1024,
            faults: None,
        }
    }
}

/// Counters of a receiver; also served as JSON at `GET /wharf/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReceiverStats {
    /// `POST /import` requests handled (including rejected ones).
    pub requests: u64,
    /// Records found in request bodies (`events_accepted + events_rejected`).
    pub events_received: u64,
    /// Events that passed validation and were stored (duplicates included).
    pub events_accepted: u64,
    /// Records that failed validation or belonged to a rejected request.
    pub events_rejected: u64,
    /// Distinct accepted events by Mixpanel's (event, distinct_id, time, $insert_id) key.
    pub unique_events: u64,
}

/// Errors starting or reading a [`Receiver`].
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// A filesystem operation failed.
    #[error("receiver I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The listening socket could not be bound.
    #[error("receiver could not bind {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
    /// A stored events file holds a line that is not valid JSON.
    #[error("corrupt events file {} at line {line}: {message}", path.display())]
    Corrupt {
        /// The events file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Parser message.
        message: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ReceiverError + '_ {
    move |source| ReceiverError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// State shared by all handlers.
struct ReceiverState {
    config: ReceiverConfig,
    store: Mutex<Store>,
    /// `/import` requests seen, numbering them for fault injection.
    imports: std::sync::atomic::AtomicU64,
}

impl ReceiverState {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The on-disk event log plus counters and the dedup set (128-bit key hashes).
struct Store {
    events_path: PathBuf,
    stats_path: PathBuf,
    file: File,
    unique: HashSet<u128>,
    stats: ReceiverStats,
    empty_distinct_ids: u64,
}

/// The effect of one request on the store.
#[derive(Default)]
struct Batch {
    accepted: Vec<(Vec<u8>, u128)>,
    rejected: u64,
    empty_distinct_ids: u64,
}

impl Store {
    fn open(dir: &Path) -> Result<Self, ReceiverError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let events_path = dir.join(EVENTS_FILE);
        let stats_path = dir.join(STATS_FILE);
        let (mut unique, mut accepted, mut empty_distinct_ids) = (HashSet::new(), 0, 0);
        scan_events(&events_path, |event| {
            accepted += 1;
            if let Some((key, distinct_id)) = stored_key(&event) {
                unique.insert(key);
                empty_distinct_ids += u64::from(distinct_id.trim().is_empty());
            }
        })?;
        let saved: ReceiverStats = match fs::read(&stats_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %stats_path.display(), error = %e, "ignoring unreadable stats file");
                ReceiverStats::default()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => ReceiverStats::default(),
            Err(e) => return Err(io_error(&stats_path)(e)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&events_path)
            .map_err(io_error(&events_path))?;
        let stats = ReceiverStats {
            requests: saved.requests,
            events_received: accepted + saved.events_rejected,
            events_accepted: accepted,
            events_rejected: saved.events_rejected,
            unique_events: unique.len() as u64,
        };
        Ok(Self {
            events_path,
            stats_path,
            file,
            unique,
            stats,
            empty_distinct_ids,
        })
    }

    /// Counts one request and appends its accepted events in a single write.
    /// Counts a request that stored nothing (an injected failure).
    fn count_request(&mut self) {
        self.stats.requests += 1;
    }

    fn record(&mut self, batch: Batch) -> io::Result<()> {
        self.stats.requests += 1;
        let total = batch.accepted.len() as u64 + batch.rejected;
        self.stats.events_received += total;
        let mut buf = Vec::new();
        for (line, _) in &batch.accepted {
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        let written = if buf.is_empty() {
            Ok(())
        } else {
            self.file.write_all(&buf)
        };
        if written.is_ok() {
            self.stats.events_accepted += batch.accepted.len() as u64;
            self.stats.events_rejected += batch.rejected;
            self.unique
                .extend(batch.accepted.iter().map(|(_, key)| *key));
            self.stats.unique_events = self.unique.len() as u64;
            self.empty_distinct_ids += batch.empty_distinct_ids;
        } else {
            self.stats.events_rejected += total;
        }
        if let Err(e) = self.persist_stats() {
            tracing::warn!(path = %self.stats_path.display(), error = %e, "could not save stats");
        }
        written
    }

    fn persist_stats(&self) -> io::Result<()> {
        let tmp = self.stats_path.with_extension("json.tmp");
        fs::write(
            &tmp,
            serde_json::to_vec(&self.stats).map_err(io::Error::other)?,
        )?;
        fs::rename(&tmp, &self.stats_path)
    }
}

/// Calls `each` for every stored event (blank lines skipped; a missing file is empty).
/// A truncated last line (a crash mid-write) is cut off the file.
fn scan_events(path: &Path, mut each: impl FnMut(Value)) -> Result<(), ReceiverError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path)(e)),
    };
    let mut reader = BufReader::new(file);
    let (mut line, mut offset, mut line_no) = (Vec::new(), 0u64, 0usize);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(io_error(path))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        if line.last() != Some(&b'\n') {
            tracing::warn!(path = %path.display(), line = line_no, "dropping truncated last line");
            let file = OpenOptions::new().write(true).open(path);
            return file.and_then(|f| f.set_len(offset)).map_err(io_error(path));
        }
        offset += n as u64;
        if !line.trim_ascii().is_empty() {
            let corrupt = |e: serde_json::Error| ReceiverError::Corrupt {
                path: path.to_path_buf(),
                line: line_no,
                message: e.to_string(),
            };
            each(serde_json::from_slice(&line).map_err(corrupt)?);
        }
    }
}

/// A running receiver. Dropping it stops the server too.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Binds (use 127.0.0.1:0 for an ephemeral port) and serves on the current tokio runtime.
    pub async fn start(
        config: ReceiverConfig,
        bind: SocketAddr,
    ) -> Result<Receiver, ReceiverError> {
        let store = Store::open(&config.data_dir)?;
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|source| ReceiverError::Bind { addr: bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ReceiverError::Bind { addr: bind, source })?;
        tracing::info!(%addr, data_dir = %config.data_dir.display(), stats = ?store.stats, "mixpanel receiver listening");
        let state = Arc::new(ReceiverState {
            config,
            store: Mutex::new(store),
            imports: Default::default(),
        });
        let (tx, rx) = oneshot::channel::<()>();
        let app = router(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = server.await {
                tracing::error!(error = %e, "mixpanel receiver stopped with an error");
            }
        });
        Ok(Receiver {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR:PORT`, the value to use as Mixpanel API host.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ReceiverStats {
        self.state.store().stats
    }

    /// Accepted events whose `distinct_id` was an empty (or blank) string.
    pub fn empty_distinct_ids(&self) -> u64 {
        self.state.store().empty_distinct_ids
    }

    /// All accepted events, in arrival order, read back from events.ndjson.
    pub fn events(&self) -> Result<Vec<Value>, ReceiverError> {
        let store = self.state.store();
        let mut events = Vec::new();
        scan_events(&store.events_path, |event| events.push(event))?;
        Ok(events)
    }

    /// Stops accepting connections and waits (up to 5 s) for in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                tracing::warn!("mixpanel receiver did not stop within 5s; aborting");
                task.abort();
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// All routes; add new endpoints (and layers such as fault injection) here.
fn router(state: Arc<ReceiverState>) -> Router {
    Router::new()
        .route("/import", post(import))
        .route("/wharf/stats", get(stats_handler))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .with_state(state)
}

async fn stats_handler(State(state): State<Arc<ReceiverState>>) -> Response {
    let stats = state.store().stats;
    json_response(StatusCode::OK, &json!(stats))
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(status: StatusCode, message: &str) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    json_response(
        status,
        &json!({"code": status.as_u16(), "error": message, "status": reason}),
    )
}

/// Reads at most `limit` bytes. A larger body is drained (bounded) before
/// answering so the client can read the 413 instead of a connection reset.
async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, Reply> {
    let (mut buf, mut too_large, mut drained) = (Vec::new(), false, 0usize);
    let drain_cap = limit.saturating_mul(4).max(64 * 1024 * 1024);
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| Reply::bad_request(format!("could not read body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if too_large {
            drained += data.len();
            if drained > drain_cap {
                break;
            }
        } else if buf.len() + data.len() > limit {
            too_large = true;
            buf = Vec::new();
        } else {
            buf.extend_from_slice(&data);
        }
    }
    if too_large {
        Err(Reply::too_large())
    } else {
        Ok(buf)
    }
}

/// `POST /import`.
async fn import(
    State(state): State<Arc<ReceiverState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = read_body(body, state.config.max_body_bytes).await;
    let n = state
        .imports
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let fault = state.config.faults.as_ref().and_then(|f| f.pick(n));
    match fault {
        Some(Fault::TooManyRequests) => {
            state.store().count_request();
            let wait = state
                .config
                .faults
                .as_ref()
                .map(|f| f.retry_after.as_secs())
                .unwrap_or(1);
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"code": 429, "error": "Project exceeded rate limits. Please retry the request with exponential backoff.", "status": "Too Many Requests"}),
            );
            if let Ok(v) = header::HeaderValue::from_str(&wait.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return response;
        }
        Some(Fault::Unavailable) => {
            state.store().count_request();
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable (injected)",
            );
        }
        _ => {}
    }
    let shared = Arc::clone(&state);
    let handled = tokio::task::spawn_blocking(move || {
        let (mut batch, mut verbose) = (Batch::default(), false);
        let query = query.as_deref().unwrap_or("");
        let reply = evaluate_import(
            &shared.config,
            query,
            &headers,
            body,
            &mut batch,
            &mut verbose,
        );
        match shared.store().record(batch) {
            Ok(()) if fault == Some(Fault::StoredThenDropped) => Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::new(faults::BrokenBody))
                .unwrap_or_else(|_| error_response(StatusCode::BAD_GATEWAY, "dropped")),
            Ok(()) if fault == Some(Fault::StoredButLost) => error_response(
                StatusCode::BAD_GATEWAY,
                "bad gateway (injected after storing)",
            ),
            Ok(()) => reply.render(verbose),
            Err(e) => {
                tracing::error!(error = %e, "could not append events");
                error_response(StatusCode::INTERNAL_SERVER_ERROR, "could not store events")
            }
        }
    });
    handled.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "import handler failed");
        error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}

/// The answer to an import request.
enum Reply {
    Error(StatusCode, String),
    Imported {
        imported: usize,
        failed: Vec<Value>,
        strict: bool,
    },
}

impl Reply {
    fn bad_request(message: impl Into<String>) -> Self {
        Self::Error(StatusCode::BAD_REQUEST, message.into())
    }

    fn too_large() -> Self {
        Self::Error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large".into(),
        )
    }

    /// Mixpanel's JSON shape, or `{"status":0|1,"error":…}` for form requests with `verbose=1`.
    fn render(self, verbose: bool) -> Response {
        let (status, error) = match &self {
            Reply::Error(status, message) => (*status, Some(message.as_str())),
            Reply::Imported {
                failed,
                strict: true,
                ..
            } if !failed.is_empty() => (StatusCode::BAD_REQUEST, Some(STRICT_FAILURE)),
            Reply::Imported { .. } => (StatusCode::OK, None),
        };
        if verbose {
            return json_response(
                status,
                &json!({"status": u8::from(error.is_none()), "error": error}),
            );
        }
        match self {
            Reply::Error(status, message) => error_response(status, &message),
            Reply::Imported {
                imported, failed, ..
            } if status == StatusCode::BAD_REQUEST => {
                let body = json!({"code": 400, "error": STRICT_FAILURE, "failed_records": failed,
                    "num_records_imported": imported, "status": "Bad Request"});
                json_response(status, &body)
            }
            Reply::Imported { imported, .. } => {
                let body = json!({"code": 200, "num_records_imported": imported, "status": "OK"});
                json_response(status, &body)
            }
        }
    }
}

/// Checks auth, decodes and validates the body, filling `batch` with its effect.
/// `verbose` is set once the request asked for the verbose answer shape.
fn evaluate_import(
    config: &ReceiverConfig,
    query: &str,
    headers: &HeaderMap,
    body: Result<Vec<u8>, Reply>,
    batch: &mut Batch,
    verbose: &mut bool,
) -> Reply {
    let Ok(params) = parse_pairs(query) else {
        return Reply::bad_request("invalid query string");
    };
    if !authorized(&config.auth, headers, param(&params, "project_id")) {
        tracing::debug!("rejected /import request: invalid credentials");
        return Reply::Error(StatusCode::UNAUTHORIZED, "Invalid credentials".into());
    }
    let body = match body.and_then(|body| decode_content(headers, body, config.max_body_bytes)) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    *verbose = param(&params, "verbose") == Some("1");
    let mut strict = param(&params, "strict") == Some("1");
    let records = match content_type(headers).as_str() {
        "application/json" => json_records(&body),
        "application/x-ndjson" => ndjson_records(&body),
        "application/x-www-form-urlencoded" => std::str::from_utf8(&body)
            .map_err(|_| "form body is not UTF-8".to_string())
            .and_then(parse_pairs)
            .and_then(|form| {
                *verbose |= param(&form, "verbose") == Some("1");
                strict |= param(&form, "strict") == Some("1");
                form_records(param(&form, "data"))
            }),
        other => Err(format!("unsupported Content-Type {other:?}")),
    };
    let records = match records {
        Ok(records) => records,
        Err(message) => return Reply::bad_request(message),
    };
    let max = config.max_records_per_request;
    if records.len() > max {
        batch.rejected = records.len() as u64;
        let message = format!(
            "too many events in one request: {} (max {max})",
            records.len()
        );
        return Reply::bad_request(message);
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64);
    let mut failed = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let line = serde_json::to_vec(record).unwrap_or_default();
        let checked = validate(record, line.len(), now_ms)
            .and_then(|()| stored_key(record).ok_or_else(|| fail("event", "no dedup key".into())));
        match checked {
            Ok((key, distinct_id)) => {
                if distinct_id.trim().is_empty() {
                    tracing::debug!(index, "accepted event with an empty distinct_id");
                    batch.empty_distinct_ids += 1;
                }
                batch.accepted.push((line, key));
            }
            Err(failure) => {
                batch.rejected += 1;
                let insert_id = record
                    .pointer("/properties/$insert_id")
                    .and_then(Value::as_str);
                failed.push(
                    json!({"index": index, "$insert_id": insert_id.unwrap_or(""),
                    "field": failure.field, "message": failure.message}),
                );
            }
        }
    }
    let (accepted, rejected) = (batch.accepted.len(), failed.len());
    tracing::debug!(accepted, rejected, strict, "import");
    Reply::Imported {
        imported: accepted,
        failed,
        strict,
    }
}
