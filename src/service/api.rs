//! The service's HTTP API and web page.
//!
//! | Route | |
//! |---|---|
//! | `GET /` | the web page (syncs, progress, last runs, rows per run; refreshes itself) |
//! | `GET /healthz` | `ok` (no token needed) |
//! | `GET /status` | the service: start time, config file, why the last reload was refused |
//! | `GET /syncs` | every sync: state, schedule, next run, last run, progress of a running run |
//! | `GET /syncs/{name}` | one sync |
//! | `GET /syncs/{name}/runs?limit=N` | its run history, newest first (default 50) |
//! | `POST /syncs/{name}/run` | run it now (202; 409 when paused, shutting down, or a one-time sync that is done) |
//! | `POST /syncs/{name}/pause`, `/resume` | pause or resume it (kept across restarts) |
//! | `GET /metrics` | OpenMetrics text (Prometheus scrapes it) |
//!
//! The server binds to `service.listen` (127.0.0.1:8080 by default). With `service.token` set,
//! every route but `/` and `/healthz` needs `Authorization: Bearer <token>` (the page sends the
//! token given in its address as `#token=…`); binding to a non-loopback address without a
//! token is refused.
//!
//! The API has a thread and a runtime of its own (`wharf-api`), so its answers never wait
//! behind the destinations' work on the shared runtime; the runs' threads have a lower
//! priority (`service::lower_priority`), so on a busy machine the API is scheduled first.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use tokio::sync::watch;

mod console;
mod suggest;

use super::{ApiRefusal, ServiceError, Shared};
use crate::config::ServiceConfig;
use crate::secret::Secret;

const PAGE: &str = include_str!("page.html");
/// The API's OpenAPI document.
const OPENAPI: &str = include_str!("openapi.json");

/// A running API server.
pub struct ApiServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// After the stop signal, how long open requests may take before the server stops anyway.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone)]
struct ApiState {
    shared: Arc<Shared>,
    token: Option<Secret>,
}

impl ApiServer {
    /// Binds `config.listen` (refusing a non-loopback address without a token) and serves.
    pub(super) fn start(
        shared: Arc<Shared>,
        config: &ServiceConfig,
    ) -> Result<ApiServer, ServiceError> {
        let err = |message: String| ServiceError::Listen {
            addr: config.listen.clone(),
            message,
        };
        let addr: SocketAddr = config
            .listen
            .parse()
            .map_err(|_| err("not an address and port, e.g. 127.0.0.1:8080".into()))?;
        if !addr.ip().is_loopback() && config.token.is_none() {
            return Err(err(
                "a non-loopback address needs `service.token` (the API can trigger and pause syncs); set a token or listen on 127.0.0.1".into(),
            ));
        }
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|e| err(e.to_string()))?;
        let addr = listener.local_addr().map_err(|e| err(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err(format!("cannot start the API's runtime: {e}")))?;
        let state = ApiState {
            shared,
            token: config.token.clone(),
        };
        let app = router(state);
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("wharf-api".into())
            .spawn(move || serve(runtime, listener, app, stopped))
            .map_err(|e| err(format!("cannot start the API's thread: {e}")))?;
        Ok(ApiServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server (waiting up to 2 s for open requests).
    pub(super) fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `app` on `listener` until `stopped` turns true (then open requests get
/// [`STOP_GRACE`]), on the API's own current-thread runtime.
fn serve(
    runtime: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    app: Router,
    stopped: watch::Receiver<bool>,
) {
    let signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "the API server could not start");
                return;
            }
        };
        let server = axum::serve(listener, app).with_graceful_shutdown(signal(stopped.clone()));
        let deadline = async {
            signal(stopped).await;
            tokio::time::sleep(STOP_GRACE).await;
        };
        tokio::select! {
            result = server => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "the API server stopped with an error");
                }
            }
            _ = deadline => {}
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
}

fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/status", get(service_status))
        .route("/syncs", get(syncs).post(console::create_sync))
        .route("/syncs/{name}", get(one_sync).delete(console::delete_sync))
        .route("/syncs/{name}/runs", get(runs))
        .route("/syncs/{name}/run", post(trigger))
        .route("/syncs/{name}/pause", post(pause))
        .route("/syncs/{name}/resume", post(resume))
        .route("/metrics", get(metrics))
        .merge(console::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .merge(protected)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .with_state(state)
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

fn refused(r: ApiRefusal) -> Response {
    match r {
        ApiRefusal::NotFound => error(StatusCode::NOT_FOUND, "no such sync"),
        ApiRefusal::Conflict(m) => error(StatusCode::CONFLICT, &m),
        ApiRefusal::Internal(m) => error(StatusCode::INTERNAL_SERVER_ERROR, &m),
    }
}

/// Byte comparison whose time does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given.as_bytes(), token.expose().as_bytes()) {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer <service.token>)",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    next.run(request).await
}

async fn service_status(State(state): State<ApiState>) -> Response {
    let s = &state.shared;
    json(
        StatusCode::OK,
        &serde_json::json!({
            "started_at": s.started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "config_file": s.config_path.display().to_string(),
            "reload_error": s.reload_error(),
            "stopping": s.stopping(),
            "syncs": s.statuses().len(),
        }),
    )
}

async fn syncs(State(state): State<ApiState>) -> Response {
    let shared = state.shared.clone();
    match tokio::task::spawn_blocking(move || shared.statuses()).await {
        Ok(s) => json(StatusCode::OK, &s),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn one_sync(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    match state.shared.status(&name) {
        Some(s) => json(StatusCode::OK, &s),
        None => refused(ApiRefusal::NotFound),
    }
}

#[derive(serde::Deserialize)]
struct RunsQuery {
    limit: Option<usize>,
}

async fn runs(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Response {
    let limit = q
        .limit
        .unwrap_or(50)
        .clamp(1, crate::state::MAX_RUNS_PER_SYNC);
    match state.shared.runs(&name, limit) {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => refused(e),
    }
}

async fn trigger(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    match state.shared.trigger(&name) {
        Ok(running) => json(
            StatusCode::ACCEPTED,
            &serde_json::json!({
                "sync": name,
                "queued": true,
                "after_running_run": running,
            }),
        ),
        Err(e) => refused(e),
    }
}

async fn pause(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    set_paused(&state, &name, Some("paused over the API"))
}

async fn resume(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    set_paused(&state, &name, None)
}

fn set_paused(state: &ApiState, name: &str, reason: Option<&str>) -> Response {
    match state.shared.set_paused(name, reason) {
        Ok(()) => match state.shared.status(name) {
            Some(s) => json(StatusCode::OK, &s),
            None => refused(ApiRefusal::NotFound),
        },
        Err(e) => refused(e),
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let shared = state.shared.clone();
    match tokio::task::spawn_blocking(move || shared.prometheus()).await {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
