//! `wharf run`: every configured sync as a long-lived service.
//!
//! Each sync gets a thread that waits for its next due time (its [`Schedule`], a manual
//! trigger, or a retry after a failure) and then runs it with [`run_in_session`]; one sync's
//! failure (even a panic) never stops another. All syncs share one state store, which holds
//! the run history and which syncs are paused. An HTTP server ([`api`]) shows the syncs, runs,
//! progress and Prometheus metrics, and takes manual triggers and pause/resume.
//!
//! Signals: SIGHUP reloads the config (a bad one is refused and the old one kept); the first
//! SIGTERM/SIGINT stops starting runs, lets running ones finish for up to
//! `service.shutdown_timeout` and then cancels them (a cancelled run commits nothing: its rows
//! are sent again on the next start, with the same `$insert_id`s), and exits 0; a second
//! signal exits at once with status 130, committing nothing more.

pub mod alerts;
pub mod api;
pub mod cluster;
mod metrics;
mod run_loop;
mod status;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{AnomalyAction, Config, ConfigError};
use crate::schedule::Schedule;
use crate::state::{RunRecord, RunStatus, StateError, StateStore};
use crate::sync::{
    run_in_session, LiveRun, LiveSlot, Session, SyncError, SyncOptions, SyncReport, VolumeCheck,
};
use alerts::{Alert, Alerts};
use metrics::Metrics;
use run_loop::sync_loop;
pub use status::{Progress, SyncStatus};

/// Workers per sync run in the service: every process of a service cluster builds each sync's
/// dataflow with this many, so process 0 and the others must agree on it.
pub(crate) const WORKERS: usize = 1;

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The API's address is refused or taken.
    #[error("cannot serve the API on {addr}: {message}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The cluster's port is refused or taken, or a thread could not start.
    #[error("cluster: {0}")]
    Cluster(String),
}

/// What the scheduler knows of one sync.
#[derive(Debug, Clone)]
struct SlotState {
    schedule: Schedule,
    jitter: Option<Duration>,
    /// When the next scheduled run is due.
    next_run: Option<DateTime<Utc>>,
    /// A manual run was asked for.
    triggered: bool,
    /// Why the sync is paused (also in the state store).
    paused: Option<String>,
    /// The next run skips the volume check (it was resumed after an anomaly).
    skip_volume_once: bool,
    /// Failures in a row, and when the failed run is retried.
    failures: u32,
    retry_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    running: bool,
    /// Removed from the config: the thread ends after its current run.
    removed: bool,
    /// A one-time sync that loaded its table: what and when (it is not run again until
    /// `wharf reset`).
    done: Option<String>,
    /// Since when the polls of a continuous sync found nothing new (they record no run).
    idle_since: Option<DateTime<Utc>>,
    /// A permanent failure (bad credentials, a missing table, a refused request): the sync
    /// is not retried or scheduled until its config is reloaded or a run is asked for.
    failed: Option<String>,
    /// The last finished run's progress as it ended.
    last_progress: Option<Progress>,
}

/// One sync's scheduler state, its running run and its wake-up signal.
struct Slot {
    name: String,
    state: Mutex<SlotState>,
    wake: Condvar,
    live: LiveSlot,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.wake.notify_all();
    }
}

/// The state shared by the sync threads, the API and the signal handlers.
pub struct Shared {
    config_path: PathBuf,
    config: RwLock<Arc<Config>>,
    /// Bumped on every successful reload; sync threads then reconnect their destinations.
    generation: AtomicU64,
    store: Arc<StateStore>,
    runtime: Arc<tokio::runtime::Runtime>,
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stopping: AtomicBool,
    started: DateTime<Utc>,
    metrics: Metrics,
    alerts: Alerts,
    /// Why the last reload was refused, if it was.
    reload_error: Mutex<Option<String>>,
    /// Process 0 of a cluster (`wharf run --processes`): every sync runs across processes.
    cluster: Option<cluster::Leader>,
    /// A hash of the config file as loaded (the processes of a cluster compare it).
    config_hash: RwLock<String>,
}

impl Shared {
    /// The cluster a run of `sync` uses, when this is process 0 of one.
    fn cluster_for(&self, sync: &str) -> Option<wharf_pipelines::cluster::ClusterSpec> {
        let hash = self
            .config_hash
            .read()
            .map(|h| h.clone())
            .unwrap_or_default();
        self.cluster.as_ref().map(|l| l.for_sync(sync, &hash))
    }

    fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots.lock().ok()?.get(name).cloned()
    }

    fn slots(&self) -> Vec<Arc<Slot>> {
        self.slots
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the service is shutting down.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// A running service.
pub struct Service {
    shared: Arc<Shared>,
    api: api::ApiServer,
}

fn slot_state(
    config: &Config,
    name: &str,
    store: &StateStore,
    now: DateTime<Utc>,
) -> Result<SlotState, ServiceError> {
    let sync = config.sync(name).cloned();
    let schedule = sync
        .as_ref()
        .map_or(Schedule::Manual, |s| s.schedule.parsed().clone());
    let done = match &sync {
        Some(s) if s.mode == crate::config::SyncMode::OneTime => {
            crate::sync::one_time_load(store, name)?.map(|r| loaded(&r))
        }
        _ => None,
    };
    let jitter = sync.and_then(|s| s.jitter).map(|j| j.get());
    let mut state = SlotState {
        next_run: None,
        schedule,
        jitter,
        triggered: false,
        paused: store.paused(name)?,
        skip_volume_once: false,
        failures: 0,
        retry_at: None,
        last_error: None,
        running: false,
        removed: false,
        done,
        idle_since: None,
        failed: None,
        last_progress: None,
    };
    // The last successful run: a sync whose last run failed or was cancelled runs again.
    let last_started = store
        .runs(name, crate::state::MAX_RUNS_PER_SYNC)?
        .iter()
        .find(|r| r.status == RunStatus::Succeeded)
        .and_then(|r| DateTime::parse_from_rfc3339(&r.started_at).ok())
        .map(|t| t.with_timezone(&Utc));
    state.next_run = first_run(&state, last_started, now);
    Ok(state)
}

/// How a one-time sync's load is shown.
fn loaded(run: &RunRecord) -> String {
    format!(
        "loaded by run {} at {}",
        run.run_id,
        run.ended_at.as_deref().unwrap_or("?")
    )
}

/// When a sync's first run is due: continuous syncs at once; timed ones at once if they never
/// succeeded, or their last success (`last_started`) was followed by a scheduled time that has
/// passed (the service was down then, or the run failed: one catch-up run), else at their next
/// scheduled time (plus jitter).
fn first_run(
    state: &SlotState,
    last_started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if state.done.is_some() {
        return None;
    }
    match &state.schedule {
        Schedule::Manual => None,
        Schedule::Continuous => Some(now),
        timed => match last_started.map(|t| timed.next_after(t)) {
            None => Some(now),
            Some(Some(due)) if due <= now => Some(now),
            Some(Some(_)) => timed.next_after(now).map(|t| with_jitter(t, state.jitter)),
            Some(None) => None,
        },
    }
}

fn with_jitter(t: DateTime<Utc>, jitter: Option<Duration>) -> DateTime<Utc> {
    match jitter {
        Some(j) if !j.is_zero() => {
            let ms = fastrand::u64(0..=j.as_millis().min(u64::MAX as u128) as u64);
            t + chrono::Duration::milliseconds(ms as i64)
        }
        _ => t,
    }
}

impl Service {
    /// Loads `config_path`, opens the state store, binds the API and starts every sync's
    /// scheduler. `runtime` runs the API, the destinations and the alerts. With `cluster`
    /// (process 0's), every sync runs across the cluster's processes ([`cluster`]).
    pub fn start(
        config_path: PathBuf,
        runtime: Arc<tokio::runtime::Runtime>,
        cluster: Option<wharf_pipelines::cluster::ClusterSpec>,
    ) -> Result<Service, ServiceError> {
        let config_hash = cluster::file_hash(&config_path);
        let config = Arc::new(Config::load(&config_path)?);
        let store = Arc::new(StateStore::open(&config.state_dir())?);
        let now = Utc::now();
        let alerts = Alerts::new(&config.alerts, runtime.handle().clone());
        let shared = Arc::new(Shared {
            config_path,
            config: RwLock::new(config.clone()),
            generation: AtomicU64::new(0),
            store,
            runtime: runtime.clone(),
            slots: Mutex::new(BTreeMap::new()),
            threads: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            started: now,
            metrics: Metrics::default(),
            alerts,
            reload_error: Mutex::new(None),
            cluster: cluster.map(cluster::Leader::bind).transpose()?,
            config_hash: RwLock::new(config_hash),
        });
        // Every sync is known before the API answers (a client told the service is up finds
        // each of them), and none runs before the API is bound.
        let slots = config
            .syncs
            .iter()
            .map(|s| insert_slot(&shared, &s.name, now))
            .collect::<Result<Vec<_>, _>>()?;
        let api = api::ApiServer::start(shared.clone(), &config.service)?;
        for slot in slots {
            start_slot(&shared, slot)?;
        }
        tracing::info!(
            addr = %api.addr(),
            syncs = config.syncs.len(),
            "wharf is running"
        );
        Ok(Service { shared, api })
    }

    /// The API's address.
    pub fn addr(&self) -> SocketAddr {
        self.api.addr()
    }

    /// The shared state (for signal handlers).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Waits for a stop request, then for every sync thread (see [`Shared::shutdown`]), and
    /// stops the API.
    pub fn wait(self) {
        loop {
            let handles: Vec<_> = self
                .shared
                .threads
                .lock()
                .map(|mut t| t.drain(..).collect())
                .unwrap_or_default();
            if handles.is_empty() {
                if self.shared.stopping() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            for h in handles {
                let _ = h.join();
            }
        }
        self.api.stop();
        tracing::info!("wharf stopped");
    }
}

fn add_slot(shared: &Arc<Shared>, name: &str, now: DateTime<Utc>) -> Result<(), ServiceError> {
    let slot = insert_slot(shared, name, now)?;
    start_slot(shared, slot)
}

/// Registers sync `name` (the API knows it from now on); [`start_slot`] starts its scheduler.
fn insert_slot(
    shared: &Arc<Shared>,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Arc<Slot>, ServiceError> {
    let config = shared.config();
    let slot = Arc::new(Slot {
        name: name.to_string(),
        state: Mutex::new(slot_state(&config, name, &shared.store, now)?),
        wake: Condvar::new(),
        live: Arc::new(Mutex::new(None)),
    });
    if let Ok(mut slots) = shared.slots.lock() {
        slots.insert(name.to_string(), slot.clone());
    }
    Ok(slot)
}

/// Starts the scheduler thread of a registered sync.
fn start_slot(shared: &Arc<Shared>, slot: Arc<Slot>) -> Result<(), ServiceError> {
    let name = slot.name.clone();
    let thread_shared = shared.clone();
    let handle = std::thread::Builder::new()
        .name(format!("sync-{name}"))
        .spawn(move || {
            lower_priority();
            sync_loop(thread_shared, slot)
        })
        .map_err(|e| ServiceError::Listen {
            addr: String::new(),
            message: format!("cannot start a thread: {e}"),
        })?;
    if let Ok(mut t) = shared.threads.lock() {
        t.push(handle);
    }
    Ok(())
}

/// Lowers the calling thread's scheduling priority (nice 10; threads it starts, such as a
/// run's timely workers and readers, inherit it), so that on a busy machine the API and the
/// destinations' I/O are scheduled before the runs' CPU work. Best effort: a failure only
/// leaves the priority as it was.
fn lower_priority() {
    // SAFETY: plain system calls on this thread's own id; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

impl Shared {
    /// The first stop request: no new runs; running ones get `shutdown_timeout` to finish and
    /// are then cancelled.
    pub fn shutdown(self: &Arc<Self>) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let timeout = self.config().service.shutdown_timeout.get();
        tracing::info!(?timeout, "stopping: no new runs; running runs may finish");
        for slot in self.slots() {
            slot.notify();
        }
        let shared = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(timeout);
            for slot in shared.slots() {
                if let Some(live) = slot.live.lock().ok().and_then(|l| l.clone()) {
                    tracing::warn!(sync = %slot.name, run = live.run_id, "shutdown timeout: cancelling the run (nothing of it is committed)");
                    live.control.cancel(format!(
                        "cancelled at shutdown after {timeout:?}; the run is sent again on the next start"
                    ));
                }
            }
        });
    }

    /// Reloads the config file: a valid one replaces the current one (new syncs start,
    /// removed ones stop after their current run, schedules change); an invalid one is
    /// refused and the current one kept. Returns why it was refused.
    pub fn reload(self: &Arc<Self>) -> Result<(), String> {
        let result = self.try_reload();
        if let Ok(mut e) = self.reload_error.lock() {
            *e = result.as_ref().err().cloned();
        }
        match &result {
            Ok(()) => tracing::info!(file = %self.config_path.display(), "config reloaded"),
            Err(e) => {
                tracing::error!(file = %self.config_path.display(), error = %e, "config reload refused; the current config stays")
            }
        }
        result
    }

    fn try_reload(self: &Arc<Self>) -> Result<(), String> {
        let hash = cluster::file_hash(&self.config_path);
        let new = Config::load(&self.config_path).map_err(|e| e.to_string())?;
        let old = self.config();
        if new.state_dir() != old.state_dir() {
            return Err("`state_dir` cannot change while wharf runs; restart it instead".into());
        }
        if new.service.listen != old.service.listen
            || new.service.token.as_ref().map(|t| t.expose().to_string())
                != old.service.token.as_ref().map(|t| t.expose().to_string())
        {
            tracing::warn!("`service.listen` and `service.token` changes take effect on restart");
        }
        let new = Arc::new(new);
        if let Ok(mut c) = self.config.write() {
            *c = new.clone();
        }
        if let Ok(mut h) = self.config_hash.write() {
            *h = hash;
        }
        self.alerts.configure(&new.alerts);
        self.generation.fetch_add(1, Ordering::SeqCst);
        let now = Utc::now();
        let names: Vec<String> = new.syncs.iter().map(|s| s.name.clone()).collect();
        for slot in self.slots() {
            let mut st = slot.lock();
            if !names.contains(&slot.name) {
                st.removed = true;
            } else {
                let fresh =
                    slot_state(&new, &slot.name, &self.store, now).map_err(|e| e.to_string())?;
                // A new config may fix a permanent failure: the sync runs again on schedule.
                if st.failed.take().is_some() {
                    st.next_run = fresh.next_run;
                }
                if fresh.schedule != st.schedule || fresh.jitter != st.jitter {
                    st.schedule = fresh.schedule;
                    st.jitter = fresh.jitter;
                    st.next_run = fresh.next_run;
                }
            }
            drop(st);
            slot.notify();
        }
        if let Ok(mut slots) = self.slots.lock() {
            slots.retain(|name, _| names.contains(name));
        }
        for name in names {
            if self.slot(&name).is_none() {
                add_slot(self, &name, now).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Asks for a run of `name` now. Errors: unknown sync, paused, shutting down.
    pub fn trigger(&self, name: &str) -> Result<bool, ApiRefusal> {
        let slot = self.slot(name).ok_or(ApiRefusal::NotFound)?;
        if self.stopping() {
            return Err(ApiRefusal::Conflict("wharf is shutting down".into()));
        }
        let mut st = slot.lock();
        if let Some(why) = &st.paused {
            return Err(ApiRefusal::Conflict(format!(
                "the sync is paused ({why}); resume it first"
            )));
        }
        if let Some(done) = &st.done {
            return Err(ApiRefusal::Conflict(format!(
                "the one_time sync is done ({done}); run `wharf reset {name}` to load it again"
            )));
        }
        st.triggered = true;
        let running = st.running;
        drop(st);
        slot.notify();
        Ok(running)
    }

    /// Pauses (`Some(reason)`) or resumes (`None`) `name`; kept across restarts.
    pub fn set_paused(&self, name: &str, reason: Option<&str>) -> Result<(), ApiRefusal> {
        let slot = self.slot(name).ok_or(ApiRefusal::NotFound)?;
        self.store
            .set_paused(name, reason)
            .map_err(|e| ApiRefusal::Internal(e.to_string()))?;
        let mut st = slot.lock();
        if reason.is_none() && st.paused.is_some() {
            // A run held back as anomalous is sent when the sync is resumed.
            st.skip_volume_once = true;
        }
        st.paused = reason.map(str::to_string);
        drop(st);
        slot.notify();
        Ok(())
    }
}

/// Why the API refuses a request.
#[derive(Debug)]
pub enum ApiRefusal {
    /// No such sync.
    NotFound,
    /// Not now (paused, shutting down).
    Conflict(String),
    /// The state store failed.
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_delays_within_its_bound() {
        let t = Utc::now();
        let j = Some(Duration::from_millis(500));
        let delays: Vec<i64> = (0..200)
            .map(|_| (with_jitter(t, j) - t).num_milliseconds())
            .collect();
        assert!(delays.iter().all(|d| (0..=500).contains(d)), "{delays:?}");
        assert!(delays.iter().any(|d| *d > 250), "spread: {delays:?}");
        assert_eq!(with_jitter(t, None), t);
    }
}
