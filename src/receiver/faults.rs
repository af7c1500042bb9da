//! Faults the receiver can inject into every endpoint (`/import`, `/engage`, `/groups`,
//! `PUT /lookup-tables/{id}`), to test how clients cope with what real Mixpanel does under
//! load: 429 with `Retry-After`, 503, a 502 after the data was stored, and a connection
//! dropped after storing (both lost answers: the client must retry, and deduplication by
//! `$insert_id`, idempotent profile operations or the table replacement keep the result
//! exact). Separately, [`SlowResponses`] delays some answers (after storing), so that client
//! timeouts can be tested. Which requests fail or are slow is deterministic for a given seed;
//! requests are numbered across all endpoints.

use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

/// What to inject.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Fraction of requests that fail, 0.0 to 1.0.
    pub rate: f64,
    /// Seed of the deterministic choice of failing requests.
    pub seed: u64,
    /// `Retry-After` sent with 429 answers.
    pub retry_after: Duration,
}

/// One injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// 429 with `Retry-After`; nothing stored.
    TooManyRequests,
    /// 503; nothing stored.
    Unavailable,
    /// The data is stored, then the answer is a 502, as when a response is lost.
    StoredButLost,
    /// The data is stored, then the connection breaks in the middle of the answer.
    StoredThenDropped,
}

/// A response body that fails on its first read: hyper then aborts the connection, and the
/// client sees it dropped in the middle of the answer.
pub(super) struct BrokenBody;

impl http_body::Body for BrokenBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::other(
            "connection dropped (injected)",
        ))))
    }
}

/// Answers delayed by `delay` (after the request was handled and stored): a client whose
/// timeout is shorter sees a timeout although the data arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowResponses {
    /// Fraction of requests answered late, 0.0 to 1.0.
    pub fraction: f64,
    /// How late.
    pub delay: Duration,
    /// Seed of the deterministic choice of slow requests.
    pub seed: u64,
}

/// A deterministic number in [0, 1) for request `n` and `seed`, plus the hash it came from.
fn unit(n: u64, seed: u64) -> (f64, u64) {
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(&n.to_le_bytes(), seed);
    ((h >> 11) as f64 / (1u64 << 53) as f64, h)
}

impl SlowResponses {
    /// The delay for the `n`-th request, if it is one of the slow ones.
    pub(super) fn delay_for(&self, n: u64) -> Option<Duration> {
        // A different stream than the failures' for the same seed.
        let (u, _) = unit(n, self.seed ^ 0x5c0_7e5f);
        (u < self.fraction).then_some(self.delay)
    }
}

impl Faults {
    /// Fails the fraction `rate` of requests, chosen by `seed`; 429s carry `retry_after`.
    pub fn new(rate: f64, seed: u64, retry_after: Duration) -> Self {
        Faults {
            rate,
            seed,
            retry_after,
        }
    }

    /// The fault for the `n`-th request, if it is one of the failing ones.
    pub(super) fn pick(&self, n: u64) -> Option<Fault> {
        let (u, h) = unit(n, self.seed);
        if u >= self.rate {
            return None;
        }
        Some(match h % 4 {
            0 => Fault::TooManyRequests,
            1 => Fault::Unavailable,
            2 => Fault::StoredButLost,
            _ => Fault::StoredThenDropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_respected_and_kinds_are_mixed() {
        let f = Faults {
            rate: 0.3,
            seed: 7,
            retry_after: Duration::from_secs(1),
        };
        let picks: Vec<_> = (0..10_000).filter_map(|n| f.pick(n)).collect();
        assert!((2_700..3_300).contains(&picks.len()), "{}", picks.len());
        for kind in [
            Fault::TooManyRequests,
            Fault::Unavailable,
            Fault::StoredButLost,
            Fault::StoredThenDropped,
        ] {
            assert!(picks.iter().filter(|&&k| k == kind).count() > 600);
        }
        assert_eq!(f.pick(42), f.pick(42));
    }

    #[test]
    fn slow_fraction_is_respected() {
        let s = SlowResponses {
            fraction: 0.2,
            delay: Duration::from_millis(5),
            seed: 7,
        };
        let slow = (0..10_000).filter(|&n| s.delay_for(n).is_some()).count();
        assert!((1_800..2_200).contains(&slow), "{slow}");
        let none = SlowResponses { fraction: 0.0, ..s };
        assert!((0..1000).all(|n| none.delay_for(n).is_none()));
    }
}
