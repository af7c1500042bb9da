//! Faults the receiver can inject into `/import`, to test how clients cope with what real
//! Mixpanel does under load: 429 with `Retry-After`, 503, a 502 after the events were stored,
//! and a connection dropped after storing (both lost answers: the client must retry, and
//! deduplication by `$insert_id` keeps the result exact). Which requests fail is
//! deterministic for a given seed.

use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

/// What to inject.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Fraction of `/import` requests that fail, 0.0 to 1.0.
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
    /// The events are stored, then the answer is a 502, as when a response is lost.
    StoredButLost,
    /// The events are stored, then the connection breaks in the middle of the answer.
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

impl Faults {
    /// The fault for the `n`-th request, if it is one of the failing ones.
    pub(super) fn pick(&self, n: u64) -> Option<Fault> {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(&n.to_le_bytes(), self.seed);
        let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
        if unit >= self.rate {
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
}
