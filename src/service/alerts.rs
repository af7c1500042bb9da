//! Alerts: a JSON POST to `alerts.webhook_url` for each failed run and each volume anomaly.
//!
//! The body is one object:
//! `{"alert": "run_failed" | "volume_anomaly", "sync", "run_id", "at", "message", ...}` with
//! `error` and `failures` (failures in a row) for failed runs, and `rows`, `average`,
//! `multiple` and `action` (`sent` or `paused`) for anomalies. Delivery is tried three times
//! (1 s, 2 s apart) off the sync threads; a webhook that stays down is logged, never fatal.
//! The URL is treated as a secret (webhook URLs often embed a token) and never logged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::config::AlertsConfig;
use crate::secret::Secret;
use crate::sync::VolumeAnomaly;

/// One alert.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// `run_failed` or `volume_anomaly`.
    pub alert: &'static str,
    /// The sync.
    pub sync: String,
    /// The run (0 when none was recorded).
    pub run_id: u64,
    /// When, ISO-8601 UTC.
    pub at: String,
    /// One line for humans.
    pub message: String,
    /// Failed runs: the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed runs: failures in a row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// Anomalies: the run's rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Anomalies: the recent average.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average: Option<f64>,
    /// Anomalies: the configured multiple.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiple: Option<f64>,
    /// Anomalies: `sent` or `paused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
}

impl Alert {
    fn new(alert: &'static str, sync: &str, run_id: u64, message: String) -> Alert {
        Alert {
            alert,
            sync: sync.to_string(),
            run_id,
            at: crate::state::now_iso(),
            message,
            error: None,
            failures: None,
            rows: None,
            average: None,
            multiple: None,
            action: None,
        }
    }

    /// A failed run.
    pub fn run_failed(sync: &str, run_id: u64, error: &str, failures: u32) -> Alert {
        Alert {
            error: Some(error.to_string()),
            failures: Some(failures),
            ..Alert::new(
                "run_failed",
                sync,
                run_id,
                format!("wharf: sync `{sync}` run {run_id} failed ({failures} in a row): {error}"),
            )
        }
    }

    /// A volume anomaly; `action` is `sent` or `paused`.
    pub fn volume_anomaly(
        sync: &str,
        run_id: u64,
        anomaly: &VolumeAnomaly,
        action: &'static str,
    ) -> Alert {
        Alert {
            rows: Some(anomaly.rows),
            average: Some(anomaly.average),
            multiple: Some(anomaly.multiple),
            action: Some(action),
            ..Alert::new(
                "volume_anomaly",
                sync,
                run_id,
                format!("wharf: sync `{sync}` run {run_id}: {anomaly} ({action})"),
            )
        }
    }
}

/// Sends alerts to the configured webhook.
pub struct Alerts {
    url: Mutex<Option<Secret>>,
    client: Option<reqwest::Client>,
    runtime: tokio::runtime::Handle,
}

impl Alerts {
    /// Alerts per `config`, sent on `runtime`.
    pub fn new(config: &AlertsConfig, runtime: tokio::runtime::Handle) -> Alerts {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| tracing::error!(error = %e, "cannot build the alerts' HTTP client"))
            .ok();
        Alerts {
            url: Mutex::new(config.webhook_url.clone()),
            client,
            runtime,
        }
    }

    /// Takes a reloaded config's webhook.
    pub fn configure(&self, config: &AlertsConfig) {
        if let Ok(mut u) = self.url.lock() {
            *u = config.webhook_url.clone();
        }
    }

    /// Logs `alert` and posts it to the webhook, if one is configured (in the background).
    pub fn send(&self, alert: Alert) {
        tracing::warn!(alert = alert.alert, sync = %alert.sync, run = alert.run_id, "{}", alert.message);
        let url = self.url.lock().ok().and_then(|u| u.clone());
        let (Some(url), Some(client)) = (url, self.client.clone()) else {
            return;
        };
        let body = match serde_json::to_vec(&alert) {
            Ok(b) => Arc::new(b),
            Err(_) => return,
        };
        self.runtime.spawn(async move {
            for attempt in 0..3u32 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                }
                let sent = client
                    .post(url.expose())
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => {
                        tracing::warn!(status = %r.status(), attempt, "the alert webhook refused an alert")
                    }
                    // reqwest's errors name the URL: keep only the kind of failure.
                    Err(e) => tracing::warn!(
                        attempt,
                        timeout = e.is_timeout(),
                        connect = e.is_connect(),
                        "cannot reach the alert webhook"
                    ),
                }
            }
            tracing::error!("alert not delivered to the webhook after 3 attempts");
        });
    }
}
