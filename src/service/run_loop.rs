//! One sync's thread under `wharf run`: wait until a run is due, run it, record it, and
//! decide when the next is due (its schedule, or a retry with backoff after a transient
//! failure; none after a permanent one).

use super::*;

/// How long to wait before retrying after `failures` failed runs in a row.
fn retry_wait(config: &Config, failures: u32) -> Duration {
    let initial = config.service.retry_initial.get();
    let max = config.service.retry_max.get();
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    initial.saturating_mul(factor).min(max)
}

pub(super) fn sync_loop(shared: Arc<Shared>, slot: Arc<Slot>) {
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
            workers: WORKERS,
            progress: false,
            skip_idle: continuous && !manual,
            live: Some(slot.live.clone()),
            cluster: shared.cluster_for(&slot.name),
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
    if !matches!(result, Ok(None)) {
        st.last_progress = live.as_ref().map(Progress::of);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
