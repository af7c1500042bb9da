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
        let max = max.max(1);
        Arc::new(Governor {
            min: 1,
            max,
            limit: AtomicUsize::new(max),
            active: AtomicUsize::new(0),
            successes: AtomicUsize::new(0),
            paused_until: Mutex::new(None),
            freed: Notify::new(),
        })
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
}
