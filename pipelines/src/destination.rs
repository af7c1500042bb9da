//! The interface between a sync's dataflow and wherever its records go.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use wharf_operators::record::{EncodedRecords, Reject};

/// A boxed, sendable future (destinations are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What [`Destination::send`] returns: the send in flight.
pub type Sending<'a> = BoxFuture<'a, Result<SendOutcome, DestinationError>>;

/// What a destination did with one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    /// Records stored.
    pub delivered: usize,
    /// Records refused with a reason (e.g. Mixpanel's `failed_records`); not retried.
    pub rejects: Vec<Reject>,
}

/// Why a request failed, classified for the retry policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// Worth retrying (5xx, dropped connections), after `retry_after` if the destination said
    /// so.
    #[error("{message}")]
    Transient {
        /// What happened (never containing credentials).
        message: String,
        /// The destination's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The destination is overloaded (429, timeouts): the whole destination pauses for
    /// `retry_after` (or a backoff) and sends fewer requests at once.
    #[error("{message}")]
    Overloaded {
        /// What happened.
        message: String,
        /// The destination's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The request is too large (413): split it and send the halves.
    #[error("{message}")]
    TooLarge {
        /// What happened.
        message: String,
    },
    /// Retrying cannot help (bad credentials, malformed request, unwritable file).
    #[error("{message}")]
    Permanent {
        /// What happened.
        message: String,
    },
}

impl DestinationError {
    /// Whether the request should be retried as it is.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DestinationError::Transient { .. } | DestinationError::Overloaded { .. }
        )
    }
}

/// A place records go: Mixpanel, a file, Kafka…
pub trait Destination: Send + Sync + 'static {
    /// A short description for logs (no credentials).
    fn describe(&self) -> String;

    /// Sends one request's records. Must be safe to call again with the same records after
    /// a transient failure (destinations deduplicate by `$insert_id` or key).
    fn send<'a>(&'a self, records: &'a EncodedRecords) -> Sending<'a>;

    /// Makes everything sent so far durable; called once every record of a run was
    /// acknowledged, before the run commits.
    fn flush(&self) -> BoxFuture<'_, Result<(), DestinationError>> {
        Box::pin(async { Ok(()) })
    }

    /// Whether [`Destination::commit`] commits the run's records atomically with its
    /// position (transactions). Such destinations are committed after every other one.
    fn is_transactional(&self) -> bool {
        false
    }

    /// Called after [`Destination::flush`] succeeded on every destination of the run and just
    /// before the run commits in the state store, with the run's position as JSON. A
    /// transactional destination writes the position with the run's records and commits
    /// them as one; others ignore it.
    fn commit<'a>(&'a self, _position: &'a [u8]) -> BoxFuture<'a, Result<(), DestinationError>> {
        Box::pin(async { Ok(()) })
    }

    /// Called when the run failed: a transactional destination discards what it sent.
    fn abort(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// The position of the last run this destination committed itself (transactional
    /// destinations), so a crash between its commit and the state store's can be repaired
    /// on the next start.
    fn committed_position(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, DestinationError>> {
        Box::pin(async { Ok(None) })
    }
}
