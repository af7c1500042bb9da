//! How many requests a destination gets at once, and when it must wait: additive-increase /
//! multiplicative-decrease concurrency, and a pause of the whole destination after a 429.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Shared by every request to one destination.
#[derive(Debug)]
pub struct Governor {
    min: usize,
    max: usize,
    limit: AtomicUsize,
    active: AtomicUsize,
    successes: AtomicUsize,
    paused_until: Mutex<Option<Instant>>,
    freed: Notify,
    rate: RateLimiter,
}

/// A slot for one request; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot(Arc<Governor>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}

impl Governor {
    /// Up to `max` requests at once (at least one), starting at `max`.
    pub fn new(max: usize) -> Arc<Governor> {
        Self::with_rate(max, RateCap::default())
    }

    /// As [`Governor::new`], with a cap on the send rate.
    pub fn with_rate(max: usize, cap: RateCap) -> Arc<Governor> {
        let max = max.max(1);
        Arc::new(Governor {
            min: 1,
            max,
            limit: AtomicUsize::new(max),
            active: AtomicUsize::new(0),
            successes: AtomicUsize::new(0),
            paused_until: Mutex::new(None),
            freed: Notify::new(),
            rate: RateLimiter::new(cap),
        })
    }

    /// Waits until the rate cap allows `records` records of `bytes` bytes, and takes them.
    pub async fn take_rate(&self, records: usize, bytes: usize) {
        self.rate.take(records, bytes).await;
    }

    /// Requests currently allowed at once.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// Waits for a free slot under the current limit.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let notified = self.freed.notified();
            let active = self.active.load(Ordering::Acquire);
            if active < self.limit()
                && self
                    .active
                    .compare_exchange(active, active + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Slot(self.clone());
            }
            // A slot frees up, or the limit grows; re-check at least every 50 ms.
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Waits while the destination is paused.
    pub async fn wait_until_resumed(&self) {
        loop {
            let until = self.paused_until.lock().ok().and_then(|p| *p);
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    /// A request succeeded: grow the limit by one for every `limit` successes.
    pub fn on_success(&self) {
        let limit = self.limit();
        if limit < self.max && self.successes.fetch_add(1, Ordering::AcqRel) + 1 >= limit {
            self.successes.store(0, Ordering::Release);
            let _ =
                self.limit
                    .compare_exchange(limit, limit + 1, Ordering::AcqRel, Ordering::Acquire);
            self.freed.notify_one();
        }
    }

    /// The destination is overloaded (429, timeout): halve the limit and pause every request
    /// for `pause`.
    pub fn on_overload(&self, pause: Duration) {
        let limit = self.limit();
        let _ = self.limit.compare_exchange(
            limit,
            (limit / 2).max(self.min),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.successes.store(0, Ordering::Release);
        if let Ok(mut p) = self.paused_until.lock() {
            let until = Instant::now() + pause;
            if p.is_none_or(|t| t < until) {
                *p = Some(until);
            }
        }
    }
}

/// An optional cap on a destination's send rate: records per second and uncompressed bytes
/// per minute (Mixpanel allows 2 GB/min per project).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RateCap {
    /// Records per second, if capped.
    pub records_per_second: Option<f64>,
    /// Uncompressed bytes per minute, if capped.
    pub bytes_per_minute: Option<f64>,
}

/// Token buckets enforcing a [`RateCap`]; a request takes its records and bytes before it is
/// sent, waiting while a bucket is short. Buckets hold at most one second (records) or one
/// minute (bytes) of allowance, so a burst after an idle spell stays within the cap.
#[derive(Debug)]
pub struct RateLimiter {
    cap: RateCap,
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    records: f64,
    bytes: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter for `cap` (no waiting when nothing is capped).
    pub fn new(cap: RateCap) -> RateLimiter {
        RateLimiter {
            cap,
            state: Mutex::new(Buckets {
                records: cap.records_per_second.unwrap_or(0.0),
                bytes: cap.bytes_per_minute.unwrap_or(0.0),
                at: Instant::now(),
            }),
        }
    }

    /// Waits until `records` records and `bytes` bytes may be sent, and takes them. A request
    /// larger than a whole bucket waits for a full bucket and then goes (it cannot be split
    /// here; the bucket goes negative and later requests wait longer).
    pub async fn take(&self, records: usize, bytes: usize) {
        if self.cap.records_per_second.is_none() && self.cap.bytes_per_minute.is_none() {
            return;
        }
        loop {
            let wait = {
                let Ok(mut b) = self.state.lock() else { return };
                let now = Instant::now();
                let dt = now.duration_since(b.at).as_secs_f64();
                b.at = now;
                let mut wait: f64 = 0.0;
                if let Some(rps) = self.cap.records_per_second {
                    b.records = (b.records + dt * rps).min(rps);
                    let need = (records as f64).min(rps);
                    if b.records < need {
                        wait = wait.max((need - b.records) / rps);
                    }
                }
                if let Some(bpm) = self.cap.bytes_per_minute {
                    let per_sec = bpm / 60.0;
                    b.bytes = (b.bytes + dt * per_sec).min(bpm);
                    let need = (bytes as f64).min(bpm);
                    if b.bytes < need {
                        wait = wait.max((need - b.bytes) / per_sec);
                    }
                }
                if wait <= 0.0 {
                    b.records -= records as f64;
                    b.bytes -= bytes as f64;
                    return;
                }
                wait
            };
            tokio::time::sleep(Duration::from_secs_f64(wait.min(60.0))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn halves_on_overload_and_grows_back() {
        let g = Governor::new(8);
        g.on_overload(Duration::from_millis(1));
        assert_eq!(g.limit(), 4);
        g.on_overload(Duration::from_millis(1));
        g.on_overload(Duration::from_millis(1));
        g.on_overload(Duration::from_millis(1));
        assert_eq!(g.limit(), 1, "never below one");
        for _ in 0..1 + 2 + 3 {
            g.on_success();
        }
        assert_eq!(g.limit(), 4);
        let a = g.acquire().await;
        let b = g.acquire().await;
        assert_eq!(g.active.load(Ordering::Acquire), 2);
        drop((a, b));
        assert_eq!(g.active.load(Ordering::Acquire), 0);
    }

    /// 3000 records at 1000/s in requests of 100: the first second's bucket goes at once,
    /// the rest at the capped rate. (On the real clock: tokio's paused one needs its
    /// `test-util` feature, which would make the test build's tokio, and all above it,
    /// differ from the binary's.)
    #[tokio::test]
    async fn rate_cap_spaces_requests() {
        let g = Governor::with_rate(
            4,
            RateCap {
                records_per_second: Some(1000.0),
                bytes_per_minute: Some(60.0 * 1_000_000.0),
            },
        );
        let start = Instant::now();
        for _ in 0..30 {
            g.take_rate(100, 1000).await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((1.9..3.5).contains(&took), "took {took} s");
        // The byte cap binds too: 1 MB/s with requests of 500 KB.
        let g = Governor::with_rate(
            4,
            RateCap {
                records_per_second: None,
                bytes_per_minute: Some(60.0 * 1_000_000.0),
            },
        );
        let start = Instant::now();
        for _ in 0..(120 + 4) {
            g.take_rate(1, 500_000).await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((1.9..3.5).contains(&took), "took {took} s");
    }
}
