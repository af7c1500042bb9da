//! The timely operators every sync is wired from: [`poll_source`], [`map_records`] and
//! [`batch_sink`], plus the shared [`RunControl`] through which they report progress and failure.
//!
//! Timestamps are sync runs (`u64` epochs). A run is complete — every record delivered or
//! rejected with a reason — exactly when the frontier of [`batch_sink`]'s output passes its
//! epoch: the sink holds a capability for the epoch until the destination acknowledged every
//! request it sent for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::{source, Operator};
use timely::dataflow::operators::Capability;
use timely::dataflow::{Scope, Stream};
use timely::scheduling::{Activator, SyncActivator};

use crate::record::{EncodedRecords, MappedBatch, Reject};
use crate::RecordMapper;

/// An Arrow batch travelling through the dataflow. Between threads it moves as is; between
/// processes it is serialized as an Arrow IPC stream.
#[derive(Clone, Debug)]
pub struct ArrowBatch {
    /// Sequence number within the run; batches are spread over workers by it.
    pub seq: u64,
    /// The rows.
    pub batch: RecordBatch,
}

impl Serialize for ArrowBatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &self.batch.schema())
                .map_err(serde::ser::Error::custom)?;
            w.write(&self.batch).map_err(serde::ser::Error::custom)?;
            w.finish().map_err(serde::ser::Error::custom)?;
        }
        (self.seq, bytes).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ArrowBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (seq, bytes): (u64, Vec<u8>) = Deserialize::deserialize(d)?;
        let mut r = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(serde::de::Error::custom)?;
        let batch = r
            .next()
            .ok_or_else(|| serde::de::Error::custom("empty Arrow IPC stream"))?
            .map_err(serde::de::Error::custom)?;
        Ok(ArrowBatch { seq, batch })
    }
}

/// Counters of one run, shared by every worker and task; read by progress displays.
#[derive(Debug, Default)]
pub struct RunCounters {
    /// Rows read from the warehouse.
    pub rows_read: AtomicU64,
    /// Records the destination acknowledged.
    pub records_delivered: AtomicU64,
    /// Rows rejected (by the mapping or by the destination).
    pub rows_rejected: AtomicU64,
    /// Bytes of records handed to the destination (uncompressed).
    pub bytes_sent: AtomicU64,
    /// Requests sent (including retries).
    pub requests: AtomicU64,
    /// Requests retried after a transient failure.
    pub retries: AtomicU64,
    /// Changes the destination cannot apply (recorded in the change log).
    pub changes_unapplied: AtomicU64,
}

impl RunCounters {
    /// Counts from zero again (the next epoch of a long-lived dataflow).
    pub fn reset(&self) {
        for c in [
            &self.rows_read,
            &self.records_delivered,
            &self.rows_rejected,
            &self.bytes_sent,
            &self.requests,
            &self.retries,
            &self.changes_unapplied,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Shared state of one run: counters, flow control and the first failure.
#[derive(Debug)]
pub struct RunControl {
    /// Progress counters.
    pub counters: RunCounters,
    inflight: AtomicI64,
    max_inflight: AtomicI64,
    failure: Mutex<Option<String>>,
    cancelled: AtomicBool,
    permanent: AtomicBool,
}

impl RunControl {
    /// A run that keeps at most `max_inflight_rows` rows between reading and acknowledgement.
    pub fn new(max_inflight_rows: usize) -> Arc<Self> {
        Arc::new(RunControl {
            counters: RunCounters::default(),
            inflight: AtomicI64::new(0),
            max_inflight: AtomicI64::new(max_inflight_rows.max(1) as i64),
            failure: Mutex::new(None),
            cancelled: AtomicBool::new(false),
            permanent: AtomicBool::new(false),
        })
    }

    /// Stops the run on request (e.g. at shutdown): like a failure, nothing is committed.
    pub fn cancel(&self, reason: impl Into<String>) {
        self.cancelled.store(true, Ordering::Relaxed);
        self.fail(reason);
    }

    /// Whether the run was stopped by [`RunControl::cancel`].
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Records the run's failure (the first one wins).
    pub fn fail(&self, reason: impl Into<String>) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(reason.into());
        }
    }

    /// Records a failure that retrying cannot fix (bad credentials, a refused request): the
    /// run fails, and whoever schedules runs should not retry it as it is.
    pub fn fail_permanently(&self, reason: impl Into<String>) {
        self.permanent.store(true, Ordering::Relaxed);
        self.fail(reason);
    }

    /// Whether a failure of the run was marked permanent.
    pub fn is_permanent(&self) -> bool {
        self.permanent.load(Ordering::Relaxed)
    }

    /// The run's failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Rows read but not yet delivered or rejected.
    pub fn inflight(&self) -> i64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Whether more rows may enter the pipeline now.
    pub fn has_room(&self) -> bool {
        self.inflight() < self.max_inflight.load(Ordering::Relaxed)
    }

    /// [`RunControl::has_room`]; when there is none, `retry` (the asking operator's activator)
    /// is activated a moment later, so the operator looks again once downstream made room.
    pub fn has_room_or_retry(&self, retry: &Activator) -> bool {
        if self.has_room() {
            return true;
        }
        retry.activate_after(Duration::from_millis(2));
        false
    }

    /// Raises the in-flight limit to at least `rows`. A run must allow at least
    /// `workers × records per request` rows in flight: sinks hold partial requests until they
    /// fill or the epoch ends, and a lower limit would stall the source before either happens.
    pub fn raise_inflight_limit(&self, rows: usize) {
        self.max_inflight.fetch_max(rows as i64, Ordering::Relaxed);
    }

    /// Counts `rows` as in flight (they were taken back into the pipeline, e.g. changed rows
    /// picked out of a stash after the rows read had been settled).
    pub fn admit(&self, rows: usize) {
        self.inflight.fetch_add(rows as i64, Ordering::Relaxed);
    }

    /// Marks `rows` as settled (delivered or rejected).
    pub fn settle(&self, rows: usize) {
        self.inflight.fetch_sub(rows as i64, Ordering::Relaxed);
    }

    /// Counts in-flight rows from zero again, returning what was left: at the end of an epoch
    /// of a long-lived dataflow every row was settled, and anything left is a miscount that
    /// would otherwise hold back every later epoch.
    pub fn clear_inflight(&self) -> i64 {
        self.inflight.swap(0, Ordering::Relaxed)
    }
}

/// What a warehouse reader sends into [`poll_source`].
pub enum SourceMessage {
    /// A batch of rows.
    Batch(RecordBatch),
    /// Reading failed; the run fails with this reason.
    Failed(String),
}

/// The sending end handed to a warehouse reader. Blocks when the dataflow is behind (bounded
/// channel), and wakes the source operator after each send. Dropping it ends the input.
pub struct SourceSender {
    /// `None` only while dropping.
    tx: Option<SyncSender<SourceMessage>>,
    activator: SyncActivator,
}

impl SourceSender {
    /// Sends one message; `Err` means the run was abandoned and the reader should stop.
    pub fn send(&self, msg: SourceMessage) -> Result<(), SourceClosed> {
        let tx = self.tx.as_ref().ok_or(SourceClosed)?;
        tx.send(msg).map_err(|_| SourceClosed)?;
        self.activator.activate().map_err(|_| SourceClosed)
    }
}

impl Drop for SourceSender {
    fn drop(&mut self) {
        // Disconnect first, then wake the operator: woken earlier, it could find the channel
        // empty but still connected, and never be woken again.
        drop(self.tx.take());
        let _ = self.activator.activate();
    }
}

/// The dataflow no longer listens (the run failed or was cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the dataflow stopped listening")]
pub struct SourceClosed;

/// Starts a warehouse reader; it gets the sender and must run elsewhere (a tokio blocking task,
/// a thread) — it is called on the worker thread and must return at once.
pub type StartReader = Box<dyn FnOnce(SourceSender) + Send>;

/// A source of Arrow batches for run `epoch`. The worker given `Some(start)` calls it with a
/// [`SourceSender`]; workers given `None` contribute nothing. Batches are taken only while the
/// run's in-flight rows are under the limit of `control`, so a slow destination slows reading
/// instead of filling memory. The epoch is complete when the reader drops its sender.
pub fn poll_source<'s>(
    scope: Scope<'s, u64>,
    epoch: u64,
    start: Option<StartReader>,
    control: Arc<RunControl>,
) -> Stream<'s, u64, Vec<ArrowBatch>> {
    let worker = scope.worker();
    source(scope, "PollSource", move |cap: Capability<u64>, info| {
        let activator = worker.sync_activator_for(info.address.to_vec());
        let retry = worker.activator_for(info.address.clone());
        let mut cap = Some(cap.delayed(&epoch));
        let rx: Option<Receiver<SourceMessage>> = start.map(|start| {
            let (tx, rx) = std::sync::mpsc::sync_channel(4);
            start(SourceSender {
                tx: Some(tx),
                activator,
            });
            rx
        });
        // Batches are numbered from 0; `map_records` spreads them round robin by number.
        let mut seq = 0u64;
        move |output| {
            tracing::trace!(
                has_reader = rx.is_some(),
                has_cap = cap.is_some(),
                "source scheduled"
            );
            let Some(rx) = rx.as_ref() else {
                cap = None;
                return;
            };
            let Some(c) = cap.as_ref() else { return };
            let mut session = output.session(c);
            let mut give = |b| session.give(b);
            let done = drain_reader(rx, &mut give, &mut seq, &control, &retry);
            drop(session);
            if done {
                tracing::debug!(epoch, batches = seq, "source input complete");
                cap = None;
            }
        }
    })
}

/// Gives what the reader sent so far on `rx` (while the run has room), numbering the batches
/// from `seq`; true when the reader is done (it dropped its sender).
fn drain_reader(
    rx: &Receiver<SourceMessage>,
    give: &mut impl FnMut(ArrowBatch),
    seq: &mut u64,
    control: &RunControl,
    retry: &Activator,
) -> bool {
    loop {
        if !control.has_room_or_retry(retry) {
            return false;
        }
        match rx.try_recv() {
            Ok(SourceMessage::Batch(batch)) => {
                let rows = batch.num_rows();
                if rows == 0 {
                    continue;
                }
                control.inflight.fetch_add(rows as i64, Ordering::Relaxed);
                control
                    .counters
                    .rows_read
                    .fetch_add(rows as u64, Ordering::Relaxed);
                give(ArrowBatch { seq: *seq, batch });
                *seq += 1;
            }
            Ok(SourceMessage::Failed(reason)) => {
                control.fail(reason);
                return false;
            }
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => return true,
        }
    }
}

/// One epoch of a long-lived dataflow for one worker (see [`epoch_source`]): its number and
/// the readers of the parts of the epoch's read this worker reads.
pub struct EpochJob {
    /// The epoch; each job's is greater than the one before.
    pub epoch: u64,
    /// Read the worker's parts of the epoch's rows, all at once; none: it reads nothing.
    pub start: Vec<StartReader>,
}

/// The jobs of a long-lived dataflow's source: where they arrive, and where the source hands
/// back the activator that wakes it once a job was sent.
pub struct EpochJobs {
    /// The jobs, in epoch order; dropping the sender ends the dataflow.
    pub jobs: Receiver<EpochJob>,
    /// Receives the source's activator once, when the dataflow is built.
    pub wake: Sender<SyncActivator>,
}

/// The source of a long-lived dataflow: a source of Arrow batches for one epoch after
/// another. Each worker given `Some(jobs)` (every worker, when each reads a part) starts each
/// [`EpochJob`]'s readers, holding a capability for its epoch until they are all done, then
/// moves it past the epoch: the frontier downstream passes an epoch exactly when every
/// worker's part of it is read and processed. Workers given `None` contribute nothing. The
/// dataflow ends when the job senders are dropped.
pub fn epoch_source<'s>(
    scope: Scope<'s, u64>,
    jobs: Option<EpochJobs>,
    control: Arc<RunControl>,
) -> Stream<'s, u64, Vec<ArrowBatch>> {
    let worker = scope.worker();
    source(scope, "EpochSource", move |cap: Capability<u64>, info| {
        let activator = worker.sync_activator_for(info.address.to_vec());
        let retry = worker.activator_for(info.address.clone());
        let jobs = jobs.map(|j| {
            let _ = j.wake.send(activator.clone());
            j.jobs
        });
        let mut cap = Some(cap);
        let mut current: Option<(u64, Receiver<SourceMessage>)> = None;
        let mut seq = 0u64;
        move |output| {
            let Some(jobs) = jobs.as_ref() else {
                cap = None;
                return;
            };
            while let Some(c) = cap.as_mut() {
                let Some((epoch, rx)) = current.as_ref() else {
                    match jobs.try_recv() {
                        Ok(job) => {
                            c.downgrade(&job.epoch);
                            // One channel for the worker's readers: it disconnects (the epoch's
                            // input is complete here) once the last of them is done.
                            let (tx, rx) = std::sync::mpsc::sync_channel(4);
                            for start in job.start {
                                start(SourceSender {
                                    tx: Some(tx.clone()),
                                    activator: activator.clone(),
                                });
                            }
                            drop(tx);
                            current = Some((job.epoch, rx));
                            seq = 0;
                            continue;
                        }
                        Err(TryRecvError::Empty) => return,
                        Err(TryRecvError::Disconnected) => {
                            cap = None;
                            return;
                        }
                    }
                };
                let epoch = *epoch;
                let mut session = output.session(&*c);
                let mut give = |b| session.give(b);
                let done = drain_reader(rx, &mut give, &mut seq, &control, &retry);
                drop(session);
                if !done {
                    return;
                }
                tracing::debug!(epoch, batches = seq, "epoch input complete");
                c.downgrade(&(epoch + 1));
                current = None;
            }
        }
    })
}

/// The mapper of an epoch and the wall clock its mapping checks times against: the same for
/// every epoch of a run's dataflow ([`same_mapper`]), one per epoch in a long-lived one.
pub type MapperAt<M> = Arc<dyn Fn(u64) -> Option<(Arc<M>, i64)> + Send + Sync>;

/// `mapper` and `now_ms` for every epoch.
pub fn same_mapper<M: ?Sized + Send + Sync + 'static>(mapper: Arc<M>, now_ms: i64) -> MapperAt<M> {
    Arc::new(move |_| Some((mapper.clone(), now_ms)))
}

/// The mapper of `epoch` (a message's time); none fails the run (its epoch was never
/// announced).
pub fn mapper_for<M: ?Sized>(
    mapper_at: &MapperAt<M>,
    epoch: Option<&u64>,
    control: &RunControl,
) -> Option<(Arc<M>, i64)> {
    let epoch = epoch.copied().unwrap_or_default();
    let found = mapper_at(epoch);
    if found.is_none() {
        control.fail(format!("no mapper for epoch {epoch}"));
    }
    found
}

/// Maps each batch into records with the mapper of its epoch, spreading batches over the workers.
/// With `copy` (a second destination of a fan-out), the rows were counted in flight once
/// already: this branch admits its own, so each destination's acknowledgements settle them.
/// With `local` (the workers of each process of a cluster), batches are spread over the
/// workers of the process that read them only: the rows a process counted in flight are
/// settled by its own destinations.
pub fn map_records<'s>(
    stream: Stream<'s, u64, Vec<ArrowBatch>>,
    mapper_at: MapperAt<dyn RecordMapper>,
    control: Arc<RunControl>,
    copy: bool,
    local: Option<usize>,
) -> Stream<'s, u64, Vec<MappedBatch>> {
    let (first, count) = spread(&stream.scope(), local);
    stream.unary(
        Exchange::new(move |b: &ArrowBatch| first + b.seq % count),
        "MapRecords",
        move |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let Some((mapper, now_ms)) = mapper_for(&mapper_at, cap.least(), &control)
                    else {
                        return;
                    };
                    let mut session = output.session(&cap);
                    for b in data.drain(..) {
                        let mapped = mapper.map_batch(&b.batch, now_ms);
                        let settles = mapped.records.len() + mapped.settled_without_request();
                        // One record or reject per row; a mapper making more admits the rest.
                        let admitted = if copy { 0 } else { b.batch.num_rows() };
                        control.admit(settles.saturating_sub(admitted));
                        session.give(mapped);
                    }
                });
            }
        },
    )
}

/// The first worker and the number of workers batches are spread over: this process's with
/// `local` workers per process, else every worker.
pub(crate) fn spread(scope: &Scope<'_, u64>, local: Option<usize>) -> (u64, u64) {
    let (index, peers) = (scope.index(), scope.peers().max(1));
    match local {
        Some(n) if n > 0 && n < peers => (((index / n) * n) as u64, n as u64),
        _ => (0, peers as u64),
    }
}

/// Where rejected rows are recorded (the sync's rejects file).
pub trait RejectSink: Send + Sync {
    /// Records `rejects`; an error fails the run (a reject must never be lost).
    fn record(&self, rejects: &[Reject]) -> Result<(), String>;

    /// Records changes the destination cannot apply (the run's change log). By default they
    /// go with the rejects.
    fn record_unapplied(&self, changes: &[Reject]) -> Result<(), String> {
        self.record(changes)
    }
}

/// Limits of one request to the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Records per request.
    pub max_records: usize,
    /// Uncompressed bytes per request.
    pub max_bytes: usize,
}

/// One request's worth of records for the destination, with the way to acknowledge it.
pub struct SinkRequest {
    /// The run it belongs to.
    pub epoch: u64,
    /// The records.
    pub records: EncodedRecords,
    /// Call [`AckHandle::ack`] exactly once when the records are delivered or rejected.
    pub ack: AckHandle,
}

/// The outcome of one [`SinkRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkAck {
    /// The run.
    pub epoch: u64,
    /// Records delivered.
    pub delivered: usize,
    /// Records the destination rejected (already written to the reject sink).
    pub rejected: usize,
    /// Delivery failed for good; the run fails and nothing is committed.
    pub error: Option<String>,
}

/// Acknowledges a [`SinkRequest`] back to the sink operator that sent it.
#[derive(Clone)]
pub struct AckHandle {
    tx: Sender<SinkAck>,
    activator: Arc<SyncActivator>,
}

impl AckHandle {
    /// Reports the outcome and wakes the sink operator.
    pub fn ack(&self, ack: SinkAck) {
        let _ = self.tx.send(ack);
        let _ = self.activator.activate();
    }
}

/// Records `rows` (none: nothing to do) with `record` and counts them in `counter`; a failure
/// to record them fails the run (`what` names them in its message).
fn record_rows(
    control: &RunControl,
    counter: &AtomicU64,
    rows: &[Reject],
    what: &str,
    record: impl FnOnce(&[Reject]) -> Result<(), String>,
) {
    if rows.is_empty() {
        return;
    }
    if let Err(e) = record(rows) {
        control.fail(format!("cannot record {what}: {e}"));
    }
    counter.fetch_add(rows.len() as u64, Ordering::Relaxed);
}

struct EpochState {
    /// Held, never read: while it lives, the sink's output frontier cannot pass the epoch.
    _cap: Capability<u64>,
    buffer: EncodedRecords,
    outstanding: usize,
}

/// Packs records into requests within `limits` and hands them to the destination through
/// `requests`; writes mapping rejects to `rejects`. Its output carries no data: its frontier
/// passes an epoch once every record of it was acknowledged, which is what a run's commit
/// waits for.
pub fn batch_sink<'s>(
    stream: Stream<'s, u64, Vec<MappedBatch>>,
    limits: BatchLimits,
    requests: tokio::sync::mpsc::UnboundedSender<SinkRequest>,
    rejects: Arc<dyn RejectSink>,
    control: Arc<RunControl>,
) -> Stream<'s, u64, Vec<()>> {
    let worker = stream.scope().worker();
    stream.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        "BatchSink",
        move |_cap, info| {
            let (tx, acks) = std::sync::mpsc::channel::<SinkAck>();
            let handle = AckHandle {
                tx,
                activator: Arc::new(worker.sync_activator_for(info.address.to_vec())),
            };
            let mut epochs: BTreeMap<u64, EpochState> = BTreeMap::new();
            let send = move |epoch: u64, records: EncodedRecords, state: &mut EpochState| {
                state.outstanding += 1;
                send_request(&requests, epoch, records, &handle);
            };
            move |(input, frontier), _output| {
                input.for_each(|cap, data| {
                    // Messages under no capability make no progress claim; ours always have one.
                    let Some(held) = cap.retain_least(0) else {
                        return;
                    };
                    let epoch = *held.time();
                    let state = epochs.entry(epoch).or_insert_with(|| EpochState {
                        _cap: held,
                        buffer: EncodedRecords::default(),
                        outstanding: 0,
                    });
                    for mapped in data.drain(..) {
                        record_rows(
                            &control,
                            &control.counters.rows_rejected,
                            &mapped.rejects,
                            "rejected rows",
                            |r| rejects.record(r),
                        );
                        record_rows(
                            &control,
                            &control.counters.changes_unapplied,
                            &mapped.unapplied,
                            "unapplied changes",
                            |r| rejects.record_unapplied(r),
                        );
                        control.settle(mapped.settled_without_request());
                        // A request that lies within one batch is a range of the batch's
                        // buffer (no copy); one that spans two is copied together, each run
                        // of records in one copy.
                        let mut records = mapped.records;
                        records.data.share();
                        let (mut from, mut start) = (0, 0);
                        let (mut count, mut bytes) = (state.buffer.len(), state.buffer.byte_len());
                        for (i, &end) in records.ends.iter().enumerate() {
                            let len = (end - start) as usize;
                            start = end;
                            if count > 0
                                && (count >= limits.max_records || bytes + len > limits.max_bytes)
                            {
                                let full = if state.buffer.is_empty() {
                                    records.cut(from..i)
                                } else {
                                    state.buffer.extend_range(&records, from..i);
                                    std::mem::take(&mut state.buffer)
                                };
                                send(epoch, full, state);
                                (from, count, bytes) = (i, 0, 0);
                            }
                            count += 1;
                            bytes += len;
                        }
                        if state.buffer.is_empty() && from < records.len() {
                            // Room for a whole request of records like these.
                            let avg = records.byte_len() / records.len();
                            let want = (avg + avg / 8) * limits.max_records;
                            state.buffer.data.reserve(want.min(limits.max_bytes));
                            state.buffer.ends.reserve(limits.max_records);
                        }
                        state.buffer.extend_range(&records, from..records.len());
                        if state.buffer.len() >= limits.max_records {
                            let full = std::mem::take(&mut state.buffer);
                            send(epoch, full, state);
                        }
                    }
                });
                while let Ok(ack) = acks.try_recv() {
                    tracing::debug!(?ack, "sink acknowledgement");
                    if let Some(e) = &ack.error {
                        control.fail(e.clone());
                    }
                    if let Some(state) = epochs.get_mut(&ack.epoch) {
                        state.outstanding = state.outstanding.saturating_sub(1);
                    }
                }
                // Epochs the input has finished: flush, then release once all is acknowledged.
                epochs.retain(|epoch, state| {
                    if frontier.less_equal(epoch) {
                        return true;
                    }
                    if !state.buffer.is_empty() {
                        let rest = std::mem::take(&mut state.buffer);
                        send(*epoch, rest, state);
                    }
                    tracing::debug!(
                        epoch,
                        outstanding = state.outstanding,
                        "sink input complete for epoch"
                    );
                    // Dropping the state drops its capability: the epoch is done downstream.
                    state.outstanding > 0
                });
            }
        },
    )
}

fn send_request(
    requests: &tokio::sync::mpsc::UnboundedSender<SinkRequest>,
    epoch: u64,
    records: EncodedRecords,
    handle: &AckHandle,
) {
    let ack = handle.clone();
    if let Err(e) = requests.send(SinkRequest {
        epoch,
        records,
        ack: handle.clone(),
    }) {
        // The delivery task is gone: fail the run rather than wait forever.
        let n = e.0.records.len();
        ack.ack(SinkAck {
            epoch,
            delivered: 0,
            rejected: 0,
            error: Some(format!("delivery stopped; {n} records not sent")),
        });
    }
}
