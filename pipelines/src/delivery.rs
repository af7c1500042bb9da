//! Delivery of sink requests to a [`Destination`]: adaptive concurrency and a destination-wide
//! pause on overload ([`Governor`]), retries with exponential backoff and jitter (honouring
//! `Retry-After`), splitting on 413.
//! One implementation for every destination.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf_operators::dataflow::{RejectSink, RunControl, SinkAck, SinkRequest};
use wharf_operators::record::{EncodedRecords, Reject};

use crate::destination::{Destination, DestinationError, SendOutcome};
use crate::governor::{Governor, RateCap};

/// How requests are retried and how many are in flight.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// First backoff.
    pub initial_backoff: Duration,
    /// Largest backoff (before jitter).
    pub max_backoff: Duration,
    /// Random extra delay added to each backoff, up to this.
    pub max_jitter: Duration,
    /// Give up (failing the run, committing nothing) after retrying this long.
    pub give_up_after: Duration,
    /// Most requests in flight at once (halved on overload, grown back by one per window of
    /// successes).
    pub concurrency: usize,
    /// Optional cap on records/s and bytes/min.
    pub rate: RateCap,
}

impl Default for RetryPolicy {
    /// Mixpanel's advice: start at 2 s, double up to 60 s, add 1–5 s of jitter.
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            max_jitter: Duration::from_secs(5),
            give_up_after: Duration::from_secs(30 * 60),
            concurrency: 10,
            rate: RateCap::default(),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before retry number `attempt + 1`: the destination's `Retry-After`
    /// plus jitter, else the exponential backoff.
    fn wait(&self, retry_after: Option<Duration>, attempt: u32) -> Duration {
        retry_after
            .map(|r| r + self.max_jitter.mul_f64(fastrand::f64()))
            .unwrap_or_else(|| self.backoff(attempt))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        let jitter = self.max_jitter.mul_f64(fastrand::f64());
        base + jitter
    }
}

/// Sends `records`, retrying transient failures and splitting on 413, until delivered or the
/// policy gives up. Returns the combined outcome, or why the run must fail.
pub async fn deliver(
    dest: &dyn Destination,
    records: EncodedRecords,
    policy: &RetryPolicy,
    governor: &Governor,
    control: &RunControl,
) -> Result<SendOutcome, String> {
    let mut pending = vec![records];
    let mut total = SendOutcome::default();
    while let Some(records) = pending.pop() {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            governor.wait_until_resumed().await;
            governor.take_rate(records.len(), records.byte_len()).await;
            control.counters.requests.fetch_add(1, Ordering::Relaxed);
            let result = dest.send(&records).await;
            if let Err(e) = &result {
                if e.is_transient() && started.elapsed() >= policy.give_up_after {
                    return Err(format!(
                        "{}: gave up after {:?} of retries: {e}",
                        dest.describe(),
                        policy.give_up_after
                    ));
                }
            }
            match result {
                Ok(outcome) => {
                    governor.on_success();
                    total.delivered += outcome.delivered;
                    total.rejects.extend(outcome.rejects);
                    break;
                }
                Err(DestinationError::TooLarge { message }) => {
                    if records.len() > 1 {
                        let (a, b) = records.split_in_half();
                        pending.push(a);
                        pending.push(b);
                    } else {
                        total.rejects.push(Reject {
                            key: "null".into(),
                            insert_id: None,
                            reason: format!("record too large for the destination: {message}"),
                        });
                    }
                    break;
                }
                Err(DestinationError::Overloaded {
                    message,
                    retry_after,
                }) => {
                    // Every request to this destination waits, and fewer go at once.
                    let wait = policy.wait(retry_after, attempt);
                    governor.on_overload(wait);
                    tracing::warn!(destination = %dest.describe(), attempt, ?wait, limit = governor.limit(), "destination overloaded, pausing: {message}");
                    control.counters.retries.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                }
                Err(DestinationError::Transient {
                    message,
                    retry_after,
                }) => {
                    let wait = policy.wait(retry_after, attempt);
                    tracing::warn!(destination = %dest.describe(), attempt, ?wait, "transient failure, retrying: {message}");
                    control.counters.retries.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                Err(DestinationError::Permanent { message }) => {
                    let reason = format!("{}: {message}", dest.describe());
                    control.fail_permanently(reason.clone());
                    return Err(reason);
                }
            }
        }
    }
    Ok(total)
}

/// Runs the delivery loop for one run: takes [`SinkRequest`]s, delivers up to
/// `policy.concurrency` at once, records the destination's rejects and acknowledges each
/// request to the sink operator that sent it. Ends when every sender is dropped.
pub async fn delivery_loop(
    mut requests: tokio::sync::mpsc::UnboundedReceiver<SinkRequest>,
    dest: Arc<dyn Destination>,
    policy: RetryPolicy,
    rejects: Arc<dyn RejectSink>,
    control: Arc<RunControl>,
) {
    let governor = Governor::with_rate(policy.concurrency, policy.rate);
    let policy = Arc::new(policy);
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(req) = requests.recv().await {
        let slot = governor.acquire().await;
        let (dest, policy, rejects, control, governor) = (
            dest.clone(),
            policy.clone(),
            rejects.clone(),
            control.clone(),
            governor.clone(),
        );
        tasks.spawn(async move {
            let n = req.records.len();
            let bytes = req.records.byte_len() as u64;
            let result = deliver(dest.as_ref(), req.records, &policy, &governor, &control).await;
            drop(slot);
            let ack = match result {
                Ok(outcome) => {
                    let rejected = outcome.rejects.len();
                    let recorded = if rejected > 0 {
                        rejects.record(&outcome.rejects)
                    } else {
                        Ok(())
                    };
                    let c = &control.counters;
                    c.records_delivered
                        .fetch_add(outcome.delivered as u64, Ordering::Relaxed);
                    c.rows_rejected
                        .fetch_add(rejected as u64, Ordering::Relaxed);
                    c.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                    control.settle(n);
                    SinkAck {
                        epoch: req.epoch,
                        delivered: outcome.delivered,
                        rejected,
                        error: recorded
                            .err()
                            .map(|e| format!("cannot record rejected rows: {e}")),
                    }
                }
                Err(error) => SinkAck {
                    epoch: req.epoch,
                    delivered: 0,
                    rejected: 0,
                    error: Some(error),
                },
            };
            req.ack.ack(ack);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}
