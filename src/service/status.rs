//! What the API and the page show of each sync: its state, next run, last error, the
//! running run's progress, its run history, and the Prometheus metrics.

use super::*;

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
    /// The last finished run's progress as it ended (100% when it read and delivered every
    /// row it counted), kept until the next recorded run ends.
    pub last_progress: Option<Progress>,
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

impl Progress {
    /// A run's progress from its live counters.
    pub(super) fn of(live: &LiveRun) -> Progress {
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
    }
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
        let progress = slot
            .live
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(Progress::of));
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
            last_progress: st.last_progress.clone(),
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
