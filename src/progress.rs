//! Progress of a running sync: an indicatif bar (rows, rows/s, ETA) on a terminal, plain log
//! lines otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use wharf_operators::dataflow::RunControl;

/// A running progress display; [`Progress::finish`] stops it.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing the progress of `control`; `total` rows if known.
    pub fn start(sync: &str, control: Arc<RunControl>, total: Option<u64>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let sync = sync.to_string();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let done = |c: &RunControl| {
                c.counters.records_delivered.load(Ordering::Relaxed)
                    + c.counters.rows_rejected.load(Ordering::Relaxed)
            };
            if std::io::stderr().is_terminal() {
                let bar = ProgressBar::new(total.unwrap_or(0));
                let style = ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {human_pos}/{human_len} rows  {rate}  ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0} rows/s", state.per_sec());
                    },
                )
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(sync);
                while !flag.load(Ordering::Relaxed) {
                    bar.set_position(done(&control));
                    std::thread::sleep(Duration::from_millis(100));
                }
                bar.set_position(done(&control));
                bar.finish();
            } else {
                let mut last = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() >= Duration::from_secs(5) {
                        last = Instant::now();
                        let n = done(&control);
                        let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
                        let eta = total
                            .filter(|t| *t > n && rate > 0.0)
                            .map(|t| format!("{:.0}s", (t - n) as f64 / rate))
                            .unwrap_or_else(|| "-".into());
                        tracing::info!(sync = %sync, rows = n, total = ?total, rows_per_s = rate as u64, eta = %eta, "progress");
                    }
                }
            }
        });
        Progress {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the display.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
