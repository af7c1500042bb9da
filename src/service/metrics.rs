//! The service's counters, rendered by Prometheus' official Rust client (`prometheus-client`)
//! in the OpenMetrics text format, which Prometheus scrapes like its own text format.
//!
//! Counters add up the runs finished since the service started plus the running run's own
//! counters, so they only grow. `wharf_sync_lag_seconds` is how long ago the sync's last
//! successful run started: rows the warehouse got after that moment may not have been sent
//! yet, so it bounds how far the destination is behind.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use wharf_operators::dataflow::RunCounters;

use super::SyncStatus;
use crate::state::{RunRecord, RunStatus, StateStore, MAX_RUNS_PER_SYNC};
use crate::sync::LiveRun;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the run-duration histogram's buckets.
const BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// A label value with `\`, `"` and newlines escaped (`prometheus-client` writes values as
/// they are; sync names are checked at load, but a label must never break the exposition).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Escaped(String);

impl EncodeLabelValue for Escaped {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        let escaped = self
            .0
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        encoder.write_str(&escaped)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    sync: Escaped,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    sync: Escaped,
    status: &'static str,
}

fn labels(sync: &str) -> SyncLabels {
    SyncLabels {
        sync: Escaped(sync.to_string()),
    }
}

type Durations = Family<SyncLabels, Histogram, fn() -> Histogram>;

/// A metric family: name (without `_total` for counters), help, and how to read its value.
type Family_<T, V> = (&'static str, &'static str, fn(&T) -> V);

#[derive(Debug, Default, Clone)]
struct SyncMetrics {
    rows_read: u64,
    delivered: u64,
    rejected: u64,
    bytes_sent: u64,
    requests: u64,
    retries: u64,
    errors: u64,
    runs: BTreeMap<&'static str, u64>,
}

/// Counters per sync.
#[derive(Debug)]
pub struct Metrics {
    syncs: Mutex<BTreeMap<String, SyncMetrics>>,
    durations: Durations,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            syncs: Mutex::default(),
            durations: Durations::new_with_constructor(|| Histogram::new(BUCKETS)),
        }
    }
}

fn status_label(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}

impl Metrics {
    /// Adds a finished run (its record and, if it got that far, its counters).
    pub fn record(&self, run: &RunRecord, elapsed: Duration, counters: Option<&RunCounters>) {
        self.durations
            .get_or_create(&labels(&run.sync))
            .observe(elapsed.as_secs_f64());
        let Ok(mut syncs) = self.syncs.lock() else {
            return;
        };
        let m = syncs.entry(run.sync.clone()).or_default();
        m.rows_read += run.rows_read;
        m.delivered += run.delivered;
        m.rejected += run.rejected;
        m.bytes_sent += run.bytes_sent;
        if let Some(c) = counters {
            m.requests += c.requests.load(Relaxed);
            m.retries += c.retries.load(Relaxed);
        }
        if run.status == RunStatus::Failed {
            m.errors += 1;
        }
        *m.runs.entry(status_label(run.status)).or_default() += 1;
    }

    /// The exposition text (OpenMetrics, [`CONTENT_TYPE`]).
    pub fn render(
        &self,
        statuses: &[SyncStatus],
        live: &[(String, LiveRun)],
        store: &StateStore,
        now: DateTime<Utc>,
    ) -> String {
        let mut syncs = self.syncs.lock().map(|s| s.clone()).unwrap_or_default();
        for s in statuses {
            syncs.entry(s.name.clone()).or_default();
        }
        for (name, run) in live {
            let m = syncs.entry(name.clone()).or_default();
            let c = &run.control.counters;
            m.rows_read += c.rows_read.load(Relaxed);
            m.delivered += c.records_delivered.load(Relaxed);
            m.rejected += c.rows_rejected.load(Relaxed);
            m.bytes_sent += c.bytes_sent.load(Relaxed);
            m.requests += c.requests.load(Relaxed);
            m.retries += c.retries.load(Relaxed);
        }
        let mut registry = Registry::default();
        let counters: [Family_<SyncMetrics, u64>; 7] = [
            ("wharf_rows_read", "Rows read from the warehouse.", |m| {
                m.rows_read
            }),
            (
                "wharf_records_delivered",
                "Records the destinations acknowledged.",
                |m| m.delivered,
            ),
            (
                "wharf_rows_rejected",
                "Rows rejected, with a reason in the rejects file.",
                |m| m.rejected,
            ),
            (
                "wharf_bytes_sent",
                "Uncompressed bytes of records sent.",
                |m| m.bytes_sent,
            ),
            (
                "wharf_requests",
                "Requests sent to destinations, retries included.",
                |m| m.requests,
            ),
            (
                "wharf_retries",
                "Requests retried after a transient failure.",
                |m| m.retries,
            ),
            ("wharf_errors", "Runs that failed.", |m| m.errors),
        ];
        for (name, help, get) in counters {
            let family = Family::<SyncLabels, Counter>::default();
            for (sync, m) in &syncs {
                family.get_or_create(&labels(sync)).inc_by(get(m));
            }
            registry.register(name, help, family);
        }
        let runs = Family::<RunLabels, Counter>::default();
        for (sync, m) in &syncs {
            for (status, n) in &m.runs {
                let l = RunLabels {
                    sync: Escaped(sync.clone()),
                    status,
                };
                runs.get_or_create(&l).inc_by(*n);
            }
        }
        registry.register("wharf_runs", "Runs finished, by status.", runs);
        for sync in syncs.keys() {
            // Syncs with no finished run yet show an empty histogram.
            drop(self.durations.get_or_create(&labels(sync)));
        }
        registry.register(
            "wharf_run_duration_seconds",
            "Run durations.",
            self.durations.clone(),
        );
        let gauges: [Family_<SyncStatus, f64>; 3] = [
            (
                "wharf_sync_running",
                "1 while a run of the sync is in progress.",
                |s| f64::from(u8::from(s.state == "running")),
            ),
            ("wharf_sync_paused", "1 while the sync is paused.", |s| {
                f64::from(u8::from(s.paused.is_some()))
            }),
            (
                "wharf_sync_consecutive_failures",
                "Failed runs in a row.",
                |s| f64::from(s.failures),
            ),
        ];
        for (name, help, get) in gauges {
            let family = Family::<SyncLabels, Gauge<f64, AtomicU64>>::default();
            for s in statuses {
                family.get_or_create(&labels(&s.name)).set(get(s));
            }
            registry.register(name, help, family);
        }
        let lag = Family::<SyncLabels, Gauge<f64, AtomicU64>>::default();
        for s in statuses {
            let last_success = store
                .runs(&s.name, MAX_RUNS_PER_SYNC)
                .ok()
                .and_then(|runs| runs.into_iter().find(|r| r.status == RunStatus::Succeeded))
                .and_then(|r| DateTime::parse_from_rfc3339(&r.started_at).ok());
            if let Some(t) = last_success {
                let seconds =
                    (now - t.with_timezone(&Utc)).num_milliseconds().max(0) as f64 / 1000.0;
                lag.get_or_create(&labels(&s.name)).set(seconds);
            }
        }
        registry.register(
            "wharf_sync_lag_seconds",
            "Seconds since the start of the sync's last successful run: an upper bound on how far the destination is behind the warehouse.",
            lag,
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}
