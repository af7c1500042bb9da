//! `wharf history` and `wharf status`: the run history and each sync's state, from the
//! state store or from a running `wharf run`.

use anyhow::{bail, Result};
use wharf::config::Config;
use wharf::state::StateStore;

use crate::runtime;

pub fn history(config: &Config, sync: &str, limit: usize, json: bool) -> Result<()> {
    if config.sync(sync).is_none() {
        bail!(
            "no sync named `{sync}` in the config; defined: {}",
            config
                .syncs
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let runs = runs_of(config, None, sync, limit)?;
    if json {
        for r in &runs {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    if runs.is_empty() {
        println!("{sync}: no runs yet");
        return Ok(());
    }
    println!(
        "{:>5}  {:<9}  {:<24}  {:>8}  {:>10}  {:>10}  {:>8}  {:>10}  {:<22}  {:<22}  ERROR",
        "RUN",
        "STATUS",
        "STARTED",
        "SECONDS",
        "READ",
        "DELIVERED",
        "REJECTED",
        "BYTES",
        "CHANGES +/~/-",
        "WATERMARK BEFORE → AFTER"
    );
    for r in runs {
        let seconds = r
            .ended_at
            .as_deref()
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
            .zip(chrono::DateTime::parse_from_rfc3339(&r.started_at).ok())
            .map(|(e, s)| format!("{:.1}", (e - s).num_milliseconds() as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        let wm = |w: Option<wharf_operators::watermark::Watermark>| {
            w.map(|w| w.to_string()).unwrap_or_else(|| "-".into())
        };
        println!(
            "{:>5}  {:<9}  {:<24}  {:>8}  {:>10}  {:>10}  {:>8}  {:>10}  {:<22}  {:<22}  {}",
            r.run_id,
            format!("{:?}", r.status).to_uppercase(),
            r.started_at,
            seconds,
            r.rows_read,
            r.delivered,
            r.rejected,
            r.bytes_sent,
            format!("{}/{}/{}", r.inserted, r.updated, r.deleted),
            format!("{} → {}", wm(r.watermark_before), wm(r.watermark_after)),
            r.error.unwrap_or_default()
        );
    }
    Ok(())
}

/// The latest runs of `sync`: from the state store (`store`, or opened here), or, while
/// `wharf run` holds the store, from its API.
pub fn runs_of(
    config: &Config,
    store: Option<&StateStore>,
    sync: &str,
    limit: usize,
) -> Result<Vec<wharf::state::RunRecord>> {
    if let Some(store) = store {
        return Ok(store.runs(sync, limit)?);
    }
    match StateStore::open(&config.state_dir()) {
        Ok(store) => Ok(store.runs(sync, limit)?),
        Err(local) => history_from_service(config, sync, limit).map_err(|api| {
            anyhow::anyhow!("{local}; the service's API did not answer either: {api}")
        }),
    }
}

/// The history from a running `wharf run`'s API (`service.listen`, `service.token`).
pub fn history_from_service(
    config: &Config,
    sync: &str,
    limit: usize,
) -> Result<Vec<wharf::state::RunRecord>> {
    let rt = runtime()?;
    rt.block_on(async {
        let url = format!(
            "http://{}/syncs/{sync}/runs?limit={limit}",
            config.service.listen
        );
        let mut req = reqwest::Client::new().get(&url);
        if let Some(t) = &config.service.token {
            req = req.bearer_auth(t.expose());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?;
        if !resp.status().is_success() {
            bail!("{url}: HTTP {}", resp.status());
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?;
        Ok(serde_json::from_slice(&body)?)
    })
}

pub fn status(config: &Config, runs: usize) -> Result<()> {
    // While `wharf run` holds the store, the runs come from its API.
    let store = StateStore::open(&config.state_dir()).ok();
    for s in &config.syncs {
        println!("{} ({:?}, schedule {}):", s.name, s.mode, s.schedule);
        let history = runs_of(config, store.as_ref(), &s.name, runs)?;
        if history.is_empty() {
            println!("  no runs yet");
        }
        for r in history {
            println!(
                "  run {:>4} {:<9} {} → {}  read {} sent {} rejected {}{}  watermark {}{}",
                r.run_id,
                format!("{:?}", r.status).to_uppercase(),
                r.started_at,
                r.ended_at.as_deref().unwrap_or("-"),
                r.rows_read,
                r.delivered,
                r.rejected,
                if r.inserted + r.updated + r.deleted + r.unapplied > 0 {
                    format!(
                        "  +{} ~{} -{} unapplied {}",
                        r.inserted, r.updated, r.deleted, r.unapplied
                    )
                } else {
                    String::new()
                },
                r.watermark_after
                    .or(r.watermark_before)
                    .map(|w| w.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.error.map(|e| format!("  error: {e}")).unwrap_or_default()
            );
        }
    }
    Ok(())
}
