//! The service's counters, rendered in Prometheus' text exposition format (version 0.0.4).
//!
//! Counters add up the runs finished since the service started plus the running run's own
//! counters, so they only grow. `wharf_sync_lag_seconds` is how long ago the sync's last
//! successful run started: rows the warehouse got after that moment may not have been sent
//! yet, so it bounds how far the destination is behind.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use wharf_operators::dataflow::RunCounters;

use super::SyncStatus;
use crate::state::{RunRecord, RunStatus, StateStore, MAX_RUNS_PER_SYNC};
use crate::sync::LiveRun;

/// Upper bounds (seconds) of the run-duration histogram's buckets.
const BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// A metric family: name, help, and how to read its value.
type Family<T, V> = (&'static str, &'static str, fn(&T) -> V);

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
    /// Runs per bucket of [`BUCKETS`] (not cumulative), the last one `+Inf`.
    durations: [u64; BUCKETS.len() + 1],
    duration_sum: f64,
}

/// Counters per sync.
#[derive(Debug, Default)]
pub struct Metrics {
    syncs: Mutex<BTreeMap<String, SyncMetrics>>,
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
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        m.durations[bucket] += 1;
        m.duration_sum += secs;
    }

    /// The exposition text.
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
        let mut out = String::new();
        let counters: [Family<SyncMetrics, u64>; 7] = [
            (
                "wharf_rows_read_total",
                "Rows read from the warehouse.",
                |m| m.rows_read,
            ),
            (
                "wharf_records_delivered_total",
                "Records the destinations acknowledged.",
                |m| m.delivered,
            ),
            (
                "wharf_rows_rejected_total",
                "Rows rejected, with a reason in the rejects file.",
                |m| m.rejected,
            ),
            (
                "wharf_bytes_sent_total",
                "Uncompressed bytes of records sent.",
                |m| m.bytes_sent,
            ),
            (
                "wharf_requests_total",
                "Requests sent to destinations, retries included.",
                |m| m.requests,
            ),
            (
                "wharf_retries_total",
                "Requests retried after a transient failure.",
                |m| m.retries,
            ),
            ("wharf_errors_total", "Runs that failed.", |m| m.errors),
        ];
        for (name, help, get) in counters {
            header(&mut out, name, help, "counter");
            for (sync, m) in &syncs {
                let _ = writeln!(out, "{name}{{sync=\"{}\"}} {}", escape(sync), get(m));
            }
        }
        header(
            &mut out,
            "wharf_runs_total",
            "Runs finished, by status.",
            "counter",
        );
        for (sync, m) in &syncs {
            for (status, n) in &m.runs {
                let _ = writeln!(
                    out,
                    "wharf_runs_total{{sync=\"{}\",status=\"{status}\"}} {n}",
                    escape(sync)
                );
            }
        }
        header(
            &mut out,
            "wharf_run_duration_seconds",
            "Run durations.",
            "histogram",
        );
        for (sync, m) in &syncs {
            let sync = escape(sync);
            let mut cumulative = 0;
            for (i, n) in m.durations.iter().enumerate() {
                cumulative += n;
                let le = BUCKETS
                    .get(i)
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "+Inf".into());
                let _ = writeln!(
                    out,
                    "wharf_run_duration_seconds_bucket{{sync=\"{sync}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "wharf_run_duration_seconds_sum{{sync=\"{sync}\"}} {}",
                m.duration_sum
            );
            let _ = writeln!(
                out,
                "wharf_run_duration_seconds_count{{sync=\"{sync}\"}} {cumulative}"
            );
        }
        let gauges: [Family<SyncStatus, f64>; 3] = [
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
            header(&mut out, name, help, "gauge");
            for s in statuses {
                let _ = writeln!(out, "{name}{{sync=\"{}\"}} {}", escape(&s.name), get(s));
            }
        }
        header(
            &mut out,
            "wharf_sync_lag_seconds",
            "Seconds since the start of the sync's last successful run: an upper bound on how far the destination is behind the warehouse.",
            "gauge",
        );
        for s in statuses {
            let last_success = store
                .runs(&s.name, MAX_RUNS_PER_SYNC)
                .ok()
                .and_then(|runs| runs.into_iter().find(|r| r.status == RunStatus::Succeeded))
                .and_then(|r| DateTime::parse_from_rfc3339(&r.started_at).ok());
            if let Some(t) = last_success {
                let lag = (now - t.with_timezone(&Utc)).num_milliseconds().max(0) as f64 / 1000.0;
                let _ = writeln!(
                    out,
                    "wharf_sync_lag_seconds{{sync=\"{}\"}} {lag}",
                    escape(&s.name)
                );
            }
        }
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
