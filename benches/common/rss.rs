//! The process's peak resident memory (Linux `VmHWM`), for the benches' reports.

/// Peak RSS in KiB (0 where unknown).
#[allow(dead_code)]
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Peak RSS in MiB (NaN where unknown).
#[allow(dead_code)]
pub fn peak_rss_mb() -> f64 {
    match peak_rss_kb() {
        0 => f64::NAN,
        kb => kb as f64 / 1024.0,
    }
}
