//! A finished run's summary: as text for people, as one JSON line for scripts.

use wharf::sync::SyncReport;

/// Peak resident memory of this process in bytes (Linux), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn summary_json_line(r: &SyncReport) -> String {
    let secs = r.outcome.elapsed.as_secs_f64();
    serde_json::json!({
        "sync": r.run.sync,
        "run_id": r.run.run_id,
        "rows_read": r.outcome.rows_read,
        "delivered": r.outcome.delivered,
        "rejected": r.outcome.rejected,
        "bytes_sent": r.outcome.bytes_sent,
        "requests": r.outcome.requests,
        "retries": r.outcome.retries,
        "seconds": secs,
        "rows_per_second": r.outcome.rows_read as f64 / secs.max(1e-9),
        "peak_rss_bytes": peak_rss_bytes(),
        "watermark": r.run.watermark_after.map(|w| w.to_string()),
        "inserted": r.run.inserted,
        "updated": r.run.updated,
        "deleted": r.run.deleted,
        "unapplied": r.run.unapplied,
        "rejects_path": r.rejects_path,
    })
    .to_string()
}

pub fn print_report(r: &SyncReport) {
    let secs = r.outcome.elapsed.as_secs_f64();
    println!(
        "sync {} run {}: read {} rows, delivered {}, rejected {} in {:.2}s ({:.0} rows/s); watermark {}",
        r.run.sync,
        r.run.run_id,
        r.outcome.rows_read,
        r.outcome.delivered,
        r.outcome.rejected,
        secs,
        r.outcome.rows_read as f64 / secs.max(1e-9),
        r.run.watermark_after.map(|w| w.to_string()).unwrap_or_else(|| "-".into())
    );
    if r.run.inserted + r.run.updated + r.run.deleted > 0 || r.run.mode != "append" {
        println!(
            "  changes: {} inserted, {} updated, {} deleted",
            r.run.inserted, r.run.updated, r.run.deleted
        );
    }
    if r.run.unapplied > 0 {
        println!(
            "  {} changes the destination cannot apply are in the change log (state folder, changes/{}.ndjson)",
            r.run.unapplied, r.run.sync
        );
    }
    if r.outcome.rejected > 0 {
        println!("  rejected rows and reasons: {}", r.rejects_path.display());
    }
}
