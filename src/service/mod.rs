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
mod metrics;

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
    run_in_session, LiveSlot, Session, SyncError, SyncOptions, SyncReport, VolumeCheck,
};
use alerts::{Alert, Alerts};
use metrics::Metrics;

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
}

impl Shared {
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
    /// scheduler. `runtime` runs the API, the destinations and the alerts.
    pub fn start(
        config_path: PathBuf,
        runtime: Arc<tokio::runtime::Runtime>,
    ) -> Result<Service, ServiceError> {
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
        });
        let api = api::ApiServer::start(shared.clone(), &config.service)?;
        for s in &config.syncs {
            add_slot(&shared, &s.name, now)?;
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

/// How long to wait before retrying after `failures` failed runs in a row.
fn retry_wait(config: &Config, failures: u32) -> Duration {
    let initial = config.service.retry_initial.get();
    let max = config.service.retry_max.get();
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    initial.saturating_mul(factor).min(max)
}

fn sync_loop(shared: Arc<Shared>, slot: Arc<Slot>) {
    let mut session = Session::default();
    let mut generation = shared.generation.load(Ordering::SeqCst);
    loop {
        // Wait until a run is due.
        let (manual, skip_volume) = {
            let mut st = slot.lock();
            loop {
                if shared.stopping() || st.removed {
                    return;
                }
                let now = Utc::now();
                let timed = if st.paused.is_some() {
                    None
                } else {
                    st.retry_at.or(st.next_run)
                };
                if st.triggered || timed.is_some_and(|t| t <= now) {
                    break;
                }
                let wait = timed
                    .map(|t| (t - now).to_std().unwrap_or_default())
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1));
                st = slot
                    .wake
                    .wait_timeout(st, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            let manual = st.triggered;
            st.triggered = false;
            st.running = true;
            (manual, std::mem::take(&mut st.skip_volume_once))
        };
        let now_generation = shared.generation.load(Ordering::SeqCst);
        if now_generation != generation {
            generation = now_generation;
            session = Session::default();
        }
        let config = shared.config();
        let continuous = slot.lock().schedule == Schedule::Continuous;
        let alerts_config = config.alerts.clone();
        let options = SyncOptions {
            workers: 1,
            progress: false,
            skip_idle: continuous && !manual,
            live: Some(slot.live.clone()),
            volume: (!skip_volume).then(|| VolumeCheck {
                multiple: alerts_config.volume_multiple,
                window: alerts_config.volume_window,
                min_runs: alerts_config.volume_min_runs,
                pause: alerts_config.on_anomaly == AnomalyAction::Pause,
            }),
            ..SyncOptions::default()
        };
        let started = std::time::Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_in_session(
                &config,
                &slot.name,
                &options,
                &shared.runtime,
                &mut session,
                &shared.store,
            )
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown".into());
            Err(SyncError::RunFailed {
                permanent: false,
                sync: slot.name.clone(),
                run_id: 0,
                reason: format!("the run panicked: {what}"),
            })
        });
        let elapsed = started.elapsed();
        if result.is_err() {
            session = Session::default();
        }
        after_run(&shared, &slot, result, elapsed, &config);
    }
}

/// Records a run's outcome: metrics, alerts, the next due time, retries and pauses.
fn after_run(
    shared: &Arc<Shared>,
    slot: &Slot,
    result: Result<Option<SyncReport>, SyncError>,
    elapsed: Duration,
    config: &Config,
) {
    let name = &slot.name;
    let now = Utc::now();
    let live = slot.live.lock().ok().and_then(|mut l| l.take());
    let counters = live.as_ref().map(|l| &l.control.counters);
    let mut st = slot.lock();
    st.running = false;
    let next = |st: &SlotState| match &st.schedule {
        Schedule::Continuous => Some(
            now + chrono::Duration::from_std(config.service.poll_interval.get())
                .unwrap_or_default(),
        ),
        s => s.next_after(now).map(|t| with_jitter(t, st.jitter)),
    };
    let mut backlog = false;
    if result.as_ref().is_ok_and(|r| r.is_some()) {
        st.idle_since = None;
    }
    let one_time = config
        .sync(name)
        .is_some_and(|s| s.mode == crate::config::SyncMode::OneTime);
    match result {
        Ok(Some(report)) if one_time => {
            shared.metrics.record(&report.run, elapsed, counters);
            tracing::info!(sync = %name, run = report.run.run_id, "one-time load done");
            st.done = Some(loaded(&report.run));
            st.failures = 0;
            st.retry_at = None;
            st.last_error = None;
            st.failed = None;
        }
        Err(SyncError::AlreadyLoaded { run_id, at, .. }) => {
            st.done = Some(format!("loaded by run {run_id} at {at}"));
            st.failures = 0;
            st.retry_at = None;
            st.last_error = None;
            st.failed = None;
        }
        Ok(Some(report)) => {
            shared.metrics.record(&report.run, elapsed, counters);
            // A change stream with more waiting than one run takes: the next run goes now.
            backlog = report.backlog.is_some();
            if let Some(anomaly) = &report.anomaly {
                tracing::warn!(sync = %name, run = report.run.run_id, %anomaly, "volume anomaly (sent)");
                shared.alerts.send(Alert::volume_anomaly(
                    name,
                    report.run.run_id,
                    anomaly,
                    "sent",
                ));
            }
            st.failures = 0;
            st.retry_at = None;
            st.last_error = None;
            st.failed = None;
        }
        Ok(None) => {
            st.failures = 0;
            st.retry_at = None;
            st.last_error = None;
            st.failed = None;
            // Idle polls record no run: the status says since when.
            st.idle_since.get_or_insert(now);
        }
        Err(SyncError::Anomaly {
            run_id, anomaly, ..
        }) => {
            let reason = format!("run {run_id} held back: {anomaly}");
            tracing::warn!(sync = %name, %reason, "volume anomaly: the sync is paused");
            if let Err(e) = shared.store.set_paused(name, Some(&reason)) {
                tracing::error!(sync = %name, error = %e, "cannot record the pause");
            }
            st.paused = Some(reason);
            record_history(shared, name, run_id, elapsed, counters);
            shared
                .alerts
                .send(Alert::volume_anomaly(name, run_id, &anomaly, "paused"));
        }
        Err(SyncError::Cancelled { run_id, reason, .. }) => {
            tracing::warn!(sync = %name, run = run_id, %reason, "run cancelled");
            record_history(shared, name, run_id, elapsed, counters);
        }
        Err(e) => {
            let run_id = match &e {
                SyncError::RunFailed { run_id, .. } if *run_id > 0 => *run_id,
                // Failed before a run was recorded (config, connection): record one, so
                // the history shows it.
                _ => record_failure(&shared.store, config, name, &e.to_string()),
            };
            record_history(shared, name, run_id, elapsed, counters);
            st.failures += 1;
            st.last_error = Some(e.to_string());
            if e.is_permanent() {
                // Retrying cannot help: no retries, no scheduled runs, one alert, until the
                // config is reloaded or a run is asked for.
                st.retry_at = None;
                let first = st.failed.is_none();
                st.failed = Some(e.to_string());
                tracing::error!(sync = %name, error = %e, "run failed for a reason retrying cannot fix: not retried until the config is reloaded (SIGHUP) or a run is asked for");
                if first {
                    shared.alerts.send(Alert::run_failed(
                        name,
                        run_id,
                        &e.to_string(),
                        st.failures,
                    ));
                }
            } else {
                let wait = retry_wait(config, st.failures);
                st.retry_at = Some(now + chrono::Duration::from_std(wait).unwrap_or_default());
                tracing::error!(sync = %name, error = %e, failures = st.failures, retry_in = ?wait, "run failed");
                shared
                    .alerts
                    .send(Alert::run_failed(name, run_id, &e.to_string(), st.failures));
            }
        }
    }
    st.next_run = if st.done.is_some() || st.failed.is_some() {
        None
    } else if backlog {
        Some(now)
    } else {
        next(&st)
    };
}

/// Adds a finished run (failed or cancelled) from the state store to the metrics.
fn record_history(
    shared: &Shared,
    name: &str,
    run_id: u64,
    elapsed: Duration,
    counters: Option<&wharf_operators::dataflow::RunCounters>,
) {
    if let Ok(runs) = shared.store.runs(name, 5) {
        if let Some(run) = runs.iter().find(|r| r.run_id == run_id) {
            shared.metrics.record(run, elapsed, counters);
        }
    }
}

/// Records a FAILED run for an error that stopped the sync before a run was recorded.
fn record_failure(store: &StateStore, config: &Config, name: &str, error: &str) -> u64 {
    let mode = config
        .sync(name)
        .map(|s| format!("{:?}", s.mode).to_lowercase())
        .unwrap_or_default();
    let recorded = store
        .begin_run(name, &mode, None)
        .and_then(|run| store.end_run_uncommitted(run, RunStatus::Failed, Some(error.to_string())));
    match recorded {
        Ok(r) => r.run_id,
        Err(e) => {
            tracing::error!(sync = name, error = %e, "cannot record the failed run");
            0
        }
    }
}

/// The API's view of one sync.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncStatus {
    /// The sync.
    pub name: String,
    /// `append`, `full`, `mirror`, `one_time`.
    pub mode: String,
    /// `events`, `users`, `groups`, `lookup`.
    pub table_type: String,
    /// Its schedule as written.
    pub schedule: String,
    /// `running`, `done` (a one-time sync that loaded its table), `failed` (a permanent
    /// failure, e.g. bad credentials or a missing table: not retried until the config is
    /// reloaded or a run is asked for; `last_error` says why), `paused`, `retrying`,
    /// `scheduled` or `idle` (manual, nothing due).
    pub state: String,
    /// A one-time sync's load: which run, when.
    pub done: Option<String>,
    /// Since when a continuous sync's polls have found nothing new (they record no run).
    pub idle_since: Option<String>,
    /// Why it is paused.
    pub paused: Option<String>,
    /// When the next scheduled run (or retry) is due.
    pub next_run_at: Option<String>,
    /// The last run's error while it is being retried.
    pub last_error: Option<String>,
    /// Failures in a row.
    pub failures: u32,
    /// The latest run in the history.
    pub last_run: Option<RunRecord>,
    /// The running run's progress.
    pub progress: Option<Progress>,
}

/// A running run's progress.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Progress {
    /// The run.
    pub run_id: u64,
    /// Rows read from the warehouse so far.
    pub rows_read: u64,
    /// Rows delivered or rejected so far.
    pub rows_done: u64,
    /// Rows the run reads, when known.
    pub rows_total: Option<u64>,
    /// Rows done per second since the run started.
    pub rows_per_s: f64,
    /// Seconds left at that rate, when the total is known.
    pub eta_s: Option<f64>,
    /// Seconds since the run started.
    pub elapsed_s: f64,
}

impl Shared {
    /// Every sync's status, in name order.
    pub fn statuses(&self) -> Vec<SyncStatus> {
        let config = self.config();
        self.slots()
            .iter()
            .map(|slot| self.status_of(&config, slot))
            .collect()
    }

    /// One sync's status.
    pub fn status(&self, name: &str) -> Option<SyncStatus> {
        let slot = self.slot(name)?;
        Some(self.status_of(&self.config(), &slot))
    }

    fn status_of(&self, config: &Config, slot: &Slot) -> SyncStatus {
        let st = slot.lock().clone();
        let sync = config.sync(&slot.name);
        let progress = slot.live.lock().ok().and_then(|l| l.clone()).map(|live| {
            use std::sync::atomic::Ordering::Relaxed;
            let c = &live.control.counters;
            let done = c.records_delivered.load(Relaxed) + c.rows_rejected.load(Relaxed);
            let elapsed = live.started.elapsed().as_secs_f64();
            let rate = if elapsed > 0.0 {
                done as f64 / elapsed
            } else {
                0.0
            };
            Progress {
                run_id: live.run_id,
                rows_read: c.rows_read.load(Relaxed),
                rows_done: done,
                rows_total: live.total,
                rows_per_s: rate,
                eta_s: live
                    .total
                    .filter(|_| rate > 0.0)
                    .map(|t| t.saturating_sub(done) as f64 / rate),
                elapsed_s: elapsed,
            }
        });
        let state = if st.running {
            "running"
        } else if st.done.is_some() {
            "done"
        } else if st.failed.is_some() {
            "failed"
        } else if st.paused.is_some() {
            "paused"
        } else if st.retry_at.is_some() {
            "retrying"
        } else if st.next_run.is_some() {
            "scheduled"
        } else {
            "idle"
        };
        SyncStatus {
            name: slot.name.clone(),
            mode: sync
                .map(|s| format!("{:?}", s.mode).to_lowercase())
                .unwrap_or_default(),
            table_type: sync
                .map(|s| crate::sync::table_type_name(s.table_type).to_string())
                .unwrap_or_default(),
            schedule: sync.map(|s| s.schedule.to_string()).unwrap_or_default(),
            state: state.into(),
            done: st.done.clone(),
            idle_since: st
                .idle_since
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            paused: st.paused.clone(),
            next_run_at: st
                .retry_at
                .or(st.next_run)
                .filter(|_| st.paused.is_none())
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            last_error: st.last_error.clone(),
            failures: st.failures,
            last_run: self
                .store
                .runs(&slot.name, 1)
                .ok()
                .and_then(|mut r| r.pop()),
            progress,
        }
    }

    /// The latest `limit` runs of `name`, newest first.
    pub fn runs(&self, name: &str, limit: usize) -> Result<Vec<RunRecord>, ApiRefusal> {
        self.slot(name).ok_or(ApiRefusal::NotFound)?;
        self.store
            .runs(name, limit)
            .map_err(|e| ApiRefusal::Internal(e.to_string()))
    }

    /// The metrics in Prometheus' text format.
    pub fn prometheus(&self) -> String {
        let statuses = self.statuses();
        let live: Vec<_> = self
            .slots()
            .iter()
            .filter_map(|s| {
                s.live
                    .lock()
                    .ok()
                    .and_then(|l| l.clone())
                    .map(|l| (s.name.clone(), l))
            })
            .collect();
        self.metrics
            .render(&statuses, &live, &self.store, Utc::now())
    }

    /// Why the last config reload was refused, if it was.
    pub fn reload_error(&self) -> Option<String> {
        self.reload_error.lock().ok().and_then(|e| e.clone())
    }
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

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let mut config = Config::parse(
            "[service]\nretry_initial = \"1s\"\nretry_max = \"5s\"",
            "w.toml",
        )
        .unwrap();
        config.base_dir = PathBuf::from(".");
        let waits: Vec<u64> = (1..=5).map(|n| retry_wait(&config, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
    }
}
