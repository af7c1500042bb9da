//! A Mixpanel-compatible HTTP receiver for tests and local dry runs.
//!
//! It enforces Mixpanel's documented rules so wharf cannot drift into sending data real
//! Mixpanel would reject:
//! - `POST /import` (`import`, `rules`): auth, body encodings, request limits and strict
//!   per-event validation; accepted events are appended to `<data_dir>/events.ndjson.gz`.
//! - `POST /engage` and `POST /groups` (`profiles`, `profile_state`): profile updates,
//!   applied to user and group profiles; accepted updates are logged and replayed at start.
//! - `PUT /lookup-tables/{id}` (`lookup`): whole-table CSV replacement, one file per table.
//!
//! Everything survives a restart on the same directory. Each endpoint is one handler over
//! the shared `ReceiverState`, run through `answer` so that injected faults (`faults`)
//! apply to every endpoint alike. Tests read the state back through `GET /wharf/…` routes or
//! the accessors of [`Receiver`].

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, HttpBody};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod faults;
mod field;
mod gzip;
mod import;
mod lookup;
mod ndjson_log;
mod profile_state;
mod profile_update;
mod profiles;
mod request;
mod rules;
mod scan;
mod store;

use faults::Fault;
pub use faults::{Faults, SlowResponses};
use import::Reply;
pub use lookup::LookupTable;
pub use profile_state::{GroupProfiles, Properties, UserProfiles};
use profile_update::ProfileKind;
use request::*;
use rules::*;
use store::{Batch, Store};

/// An event's serialized JSON must be strictly smaller than this.
const MAX_EVENT_BYTES: usize = 1024 * 1024;
const MAX_PROPERTIES: usize = 255;
/// 1971-01-01T00:00:00Z in milliseconds since the epoch.
const MIN_TIME_MS: f64 = 31_536_000_000.0;
const MAX_FUTURE_MS: f64 = 3_600_000.0;
/// Placeholder distinct_ids Mixpanel rejects (compared case-insensitively after trimming).
/// Deliberately its own copy of Mixpanel's list, not wharf's (`events::BANNED_DISTINCT_IDS`): the
/// receiver's rules are written independently of the mapping so the two cannot drift together.
/// Written as Mixpanel's documentation lists them, separated by spaces.
const BANNED_DISTINCT_IDS: &str =
    "anon anonymous nil none null undefined unknown 0 -1 [] {} <nil> \
     00000000-0000-0000-0000-000000000000";
const STRICT_FAILURE: &str = "some data points in the request failed validation";

/// How the receiver authenticates `POST /import` and `PUT /lookup-tables/{id}` (HTTP Basic
/// auth). Profile updates carry the project token in their body instead.
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
#[derive(Clone)]
pub struct ReceiverConfig {
    /// Directory holding the event and profile logs, lookup tables and `stats.json`
    /// (created if missing).
    pub data_dir: PathBuf,
    /// Accepted credentials (`/import`, lookup tables).
    pub auth: ReceiverAuth,
    /// The project token profile updates (`$token`) must carry. `None`: the token of
    /// [`ReceiverAuth::ProjectToken`], else any non-empty token.
    pub project_token: Option<String>,
    /// Maximum events per `/import` request (Mixpanel: 2000).
    pub max_records_per_request: usize,
    /// Maximum updates per `/engage` or `/groups` request (Mixpanel: 2000).
    pub max_updates_per_request: usize,
    /// Maximum uncompressed body size of `/import`, `/engage` and `/groups` requests in bytes
    /// (Mixpanel: 10 MiB for `/import`).
    pub max_body_bytes: usize,
    /// Maximum uncompressed lookup table CSV in bytes (Mixpanel: 100 MB).
    pub max_lookup_table_bytes: usize,
    /// Failures to inject (none by default).
    pub faults: Option<Faults>,
    /// Answers to delay (none by default).
    pub slow_responses: Option<SlowResponses>,
}

impl fmt::Debug for ReceiverConfig {
    /// Never prints the project token (nor, through [`ReceiverAuth`], any secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverConfig")
            .field("data_dir", &self.data_dir)
            .field("auth", &self.auth)
            .field("project_token", &self.project_token.as_ref().map(|_| "***"))
            .field("max_records_per_request", &self.max_records_per_request)
            .field("max_updates_per_request", &self.max_updates_per_request)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_lookup_table_bytes", &self.max_lookup_table_bytes)
            .field("faults", &self.faults)
            .field("slow_responses", &self.slow_responses)
            .finish()
    }
}

impl ReceiverConfig {
    /// A configuration with Mixpanel's limits (2000 events or updates and 10 MiB per request,
    /// 100 MiB per lookup table).
    pub fn new(data_dir: impl Into<PathBuf>, auth: ReceiverAuth) -> Self {
        Self {
            data_dir: data_dir.into(),
            auth,
            project_token: None,
            max_records_per_request: 2000,
            max_updates_per_request: 2000,
            max_body_bytes: 10 * 1024 * 1024,
            max_lookup_table_bytes: 100 * 1024 * 1024,
            faults: None,
            slow_responses: None,
        }
    }
}

/// Counters of `/import`; also served as JSON at `GET /wharf/stats` (at the top level, next
/// to the other endpoints' [`EndpointStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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

/// Counters of `/engage` or `/groups`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ProfileStats {
    /// Requests handled (including refused and failed ones).
    pub requests: u64,
    /// Updates found in request bodies (`updates_accepted + updates_rejected`).
    pub updates_received: u64,
    /// Updates applied (replays included).
    pub updates_accepted: u64,
    /// Updates that failed validation or belonged to a refused request.
    pub updates_rejected: u64,
}

/// Counters of `PUT /lookup-tables/{id}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LookupTableStats {
    /// Requests handled (including refused and failed ones).
    pub requests: u64,
    /// Tables replaced.
    pub tables_replaced: u64,
    /// Replacements refused (credentials, CSV, size) or not stored.
    pub tables_rejected: u64,
}

/// Counters of the endpoints other than `/import`, served at `GET /wharf/stats` under
/// `engage`, `groups` and `lookup_tables`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EndpointStats {
    /// `POST /engage`.
    pub engage: ProfileStats,
    /// `POST /groups`.
    pub groups: ProfileStats,
    /// `PUT /lookup-tables/{id}`.
    pub lookup_tables: LookupTableStats,
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
    /// A stored file (event or profile log, lookup table) holds a line that is not valid JSON.
    #[error("corrupt receiver file {} at line {line}: {message}", path.display())]
    Corrupt {
        /// The file.
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

/// The endpoints, for counting and fault injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Import,
    Engage,
    Groups,
    LookupTables,
}

/// State shared by all handlers.
struct ReceiverState {
    config: ReceiverConfig,
    store: Mutex<Store>,
    /// Requests seen on any endpoint, numbering them for fault injection.
    requests_seen: AtomicU64,
}

impl ReceiverState {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
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
        tracing::info!(%addr, data_dir = %config.data_dir.display(), stats = ?store.stats, endpoints = ?store.endpoints, "mixpanel receiver listening");
        let state = Arc::new(ReceiverState {
            config,
            store: Mutex::new(store),
            requests_seen: AtomicU64::new(0),
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

    /// A snapshot of the `/import` counters.
    pub fn stats(&self) -> ReceiverStats {
        self.state.store().stats
    }

    /// A snapshot of the other endpoints' counters.
    pub fn endpoint_stats(&self) -> EndpointStats {
        self.state.store().endpoints
    }

    /// Accepted events whose `distinct_id` was an empty (or blank) string.
    pub fn empty_distinct_ids(&self) -> u64 {
        self.state.store().empty_distinct_ids
    }

    /// All accepted events, in arrival order, read back from the event log
    /// (`events.ndjson.gz`).
    pub fn events(&self) -> Result<Vec<Value>, ReceiverError> {
        let mut events = Vec::new();
        self.state.store().events(|event| events.push(event))?;
        Ok(events)
    }

    /// Calls `f` with each accepted event, in arrival order, read back from the event log
    /// (without holding them all in memory).
    pub fn each_event(&self, f: impl FnMut(Value)) -> Result<(), ReceiverError> {
        self.state.store().events(f)
    }

    /// The user profiles (deleted ones absent).
    pub fn profiles(&self) -> UserProfiles {
        self.state.store().profiles.users.clone()
    }

    /// The group profiles by group key and group id (deleted ones absent).
    pub fn groups(&self) -> GroupProfiles {
        self.state.store().profiles.groups.clone()
    }

    /// The lookup table `id`, if it was ever replaced.
    pub fn lookup_table(&self, id: &str) -> Result<Option<LookupTable>, ReceiverError> {
        lookup::read_table(&self.state.config.data_dir, id)
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

/// All routes; add new endpoints here, and run their handling through `answer`.
fn router(state: Arc<ReceiverState>) -> Router {
    Router::new()
        .route("/import", post(import::import))
        .route("/engage", post(profiles::profile_updates))
        .route("/groups", post(profiles::profile_updates))
        .route("/lookup-tables/{id}", put(lookup::replace))
        .route("/wharf/stats", get(stats_handler))
        .route("/wharf/profiles", get(profiles_handler))
        .route("/wharf/groups", get(groups_handler))
        .route("/wharf/lookup-tables/{id}", get(lookup::show))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .with_state(state)
}

/// What a handler did with a request: its answer, and whether it got as far as storing
/// (only a stored request's answer can be lost by an injected fault).
struct Handled {
    response: Response,
    stored: bool,
}

impl Handled {
    /// The request was handled and its effect (possibly none) stored.
    fn stored(response: Response) -> Self {
        Handled {
            response,
            stored: true,
        }
    }

    /// Storing failed; `response` says so.
    fn failed(response: Response) -> Self {
        Handled {
            response,
            stored: false,
        }
    }
}

/// Answers one request to `endpoint`: an injected 429 or 503 replaces the handling;
/// otherwise `handle` runs on the blocking pool with the request's number, then an injected
/// lost answer (502, dropped connection) replaces a stored one, and a slow response is
/// delayed.
async fn answer(
    state: Arc<ReceiverState>,
    endpoint: Endpoint,
    handle: impl FnOnce(&ReceiverState, u64) -> Handled + Send + 'static,
) -> Response {
    let n = state.requests_seen.fetch_add(1, Ordering::Relaxed);
    let injected = state.config.faults.as_ref();
    let fault = injected.and_then(|f| f.pick(n));
    let response = match fault {
        Some(Fault::TooManyRequests) => {
            state.store().count_request(endpoint);
            let wait = injected.map_or(1, |f| f.retry_after.as_secs());
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"code": 429, "error": "Project exceeded rate limits. Please retry the request with exponential backoff.", "status": "Too Many Requests"}),
            );
            if let Ok(v) = header::HeaderValue::from_str(&wait.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
        Some(Fault::Unavailable) => {
            state.store().count_request(endpoint);
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable (injected)",
            )
        }
        _ => {
            let shared = Arc::clone(&state);
            let handled = tokio::task::spawn_blocking(move || handle(&shared, n)).await;
            match handled {
                Ok(h) if h.stored && fault == Some(Fault::StoredThenDropped) => Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::new(faults::BrokenBody))
                    .unwrap_or_else(|_| error_response(StatusCode::BAD_GATEWAY, "dropped")),
                Ok(h) if h.stored && fault == Some(Fault::StoredButLost) => error_response(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway (injected after storing)",
                ),
                Ok(h) => h.response,
                Err(e) => {
                    tracing::error!(error = %e, ?endpoint, "handler failed");
                    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                }
            }
        }
    };
    let slow = state.config.slow_responses.as_ref();
    if let Some(delay) = slow.and_then(|s| s.delay_for(n)) {
        tokio::time::sleep(delay).await;
    }
    response
}

async fn stats_handler(State(state): State<Arc<ReceiverState>>) -> Response {
    let stats = state.store().saved_stats();
    json_response(StatusCode::OK, &json!(stats))
}

async fn profiles_handler(State(state): State<Arc<ReceiverState>>) -> Response {
    let profiles = json!(state.store().profiles.users);
    json_response(StatusCode::OK, &profiles)
}

async fn groups_handler(State(state): State<Arc<ReceiverState>>) -> Response {
    let groups = json!(state.store().profiles.groups);
    json_response(StatusCode::OK, &groups)
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
    // Sized from Content-Length where there is one.
    let expected = usize::try_from(body.size_hint().lower()).unwrap_or(0);
    let mut buf = Vec::with_capacity(expected.min(limit));
    let (mut too_large, mut drained) = (false, 0usize);
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

#[cfg(feature = "fuzzing")]
pub(crate) use import::fuzz_import;
#[cfg(feature = "fuzzing")]
pub(crate) use lookup::{fuzz_csv_records, fuzz_lookup};
#[cfg(feature = "fuzzing")]
pub(crate) use profiles::fuzz_profiles;
