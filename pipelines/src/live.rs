//! A long-lived dataflow: one per sync's session, kept across its runs and polls (append,
//! change stream or snapshot diff). Each poll is an epoch: its reader (and a snapshot diff's
//! setup) is handed to the dataflow's [`epoch_source`], which holds the epoch's
//! capability while it reads; the sinks hold it until every record of the epoch was
//! acknowledged; [`LiveDataflow::run_epoch`] returns once the frontier has passed the epoch,
//! and the caller commits it. No rebuild and no new worker threads per poll.
//!
//! The epochs of one dataflow run one after another (the next is handed in after the last
//! one passed), so the counters of its [`RunControl`] are the current epoch's. A failure
//! poisons the dataflow: nothing of the failed epoch may be committed, and the caller drops
//! the dataflow and starts a new one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use wharf_operators::dataflow::{
    epoch_source, BatchLimits, EpochJob, EpochJobs, RejectSink, RunControl, StartReader,
};
use wharf_operators::diff::{DiffCounts, DiffEpochs, DiffSpec, ReplayFree};
use wharf_operators::record::Reject;
use wharf_operators::timely;
use wharf_operators::timely::container::CapacityContainerBuilder;
use wharf_operators::timely::dataflow::operators::probe::Handle as ProbeHandle;
use wharf_operators::timely::dataflow::operators::vec::Broadcast;
use wharf_operators::timely::dataflow::operators::{Input, Inspect};
use wharf_operators::timely::dataflow::InputHandle;
use wharf_operators::timely::scheduling::SyncActivator;
use wharf_operators::timely::WorkerConfig;

use crate::cluster::{ClusterMsg, ClusterSpec, DiffTally};
use crate::run::{
    abort_all, check_sinks, flush_all, outcome, spawn_deliveries, timely_config, Branch, Plan,
    RunError, RunOutcome, SinkMapper, SinkSpec, Wiring,
};

/// What a long-lived dataflow is built from (each epoch brings its readers). A
/// [`Plan::Diff`]'s own setup is not used: each epoch brings its own ([`EpochInput::diff`]).
pub struct LiveSpec {
    /// Timely worker threads.
    pub workers: usize,
    /// What the dataflow does with the rows.
    pub plan: Plan,
    /// Where records go; each epoch brings its own mappers, in the same order.
    pub sinks: Vec<SinkSpec>,
    /// The runtime that runs the readers and the delivery.
    pub runtime: tokio::runtime::Handle,
    /// One process of a cluster (see [`crate::cluster`]); `None`: this process alone.
    pub cluster: Option<ClusterSpec>,
}

/// Where the current epoch's rejects go: each epoch (a run) brings its own sink.
struct EpochRejects(Mutex<Option<Arc<dyn RejectSink>>>);

impl EpochRejects {
    fn current(&self) -> Result<Arc<dyn RejectSink>, String> {
        self.0
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .ok_or_else(|| "no reject sink for the epoch".to_string())
    }
}

impl RejectSink for EpochRejects {
    fn record(&self, rejects: &[Reject]) -> Result<(), String> {
        self.current()?.record(rejects)
    }

    fn record_unapplied(&self, changes: &[Reject]) -> Result<(), String> {
        self.current()?.record_unapplied(changes)
    }
}

/// The mappers of the epochs handed in and not yet finished, with their wall clocks.
type Mappers = Arc<Mutex<BTreeMap<u64, (Vec<SinkMapper>, i64)>>>;

/// The first element of the dataflow's output frontier (`None`: empty, the dataflow ended),
/// published by worker 0 after each step; a new dataflow's is 0.
struct Frontier {
    first: Mutex<Option<u64>>,
    moved: Condvar,
    /// In a failed cluster: the first worker has handed the reason on and kept the
    /// connections open for [`FAILED_GRACE`]; until then the process must not exit.
    reported: std::sync::atomic::AtomicBool,
}

/// What one epoch brings: its readers, mappers (one per sink, in the order of
/// [`LiveSpec::sinks`]), reject sink and wall clock.
pub struct EpochInput {
    /// Read the epoch's rows, one reader per part of the read (the workers read them, worker
    /// `w` parts `w`, `w + W`, …); none: the epoch reads nothing.
    pub readers: Vec<StartReader>,
    /// The epoch's record or change mappers.
    pub mappers: Vec<SinkMapper>,
    /// Where the epoch's rejected rows are recorded.
    pub rejects: Arc<dyn RejectSink>,
    /// Wall clock for the mapping's "too far in the future" check.
    pub now_ms: i64,
    /// The epoch's snapshot diff setup (a [`Plan::Diff`] dataflow needs one per epoch).
    pub diff: Option<Arc<DiffSpec>>,
    /// A change-stream epoch may re-read changes that a run which did not commit delivered
    /// (`false` only when the last run before it committed; see [`ReplayFree`]).
    pub may_replay: bool,
}

/// A dataflow that outlives its epochs (see the module's text).
pub struct LiveDataflow {
    /// One job sender per worker (each reads its parts of an epoch); empty once ended.
    jobs: Vec<Sender<EpochJob>>,
    /// The workers' sources, woken once their jobs were sent.
    wakes: Vec<SyncActivator>,
    frontier: Arc<Frontier>,
    mappers: Mappers,
    rejects: Arc<EpochRejects>,
    sinks: Vec<SinkSpec>,
    plan: Plan,
    diff_epochs: DiffEpochs,
    replay_free: ReplayFree,
    control: Arc<RunControl>,
    runtime: tokio::runtime::Handle,
    deliveries: Vec<JoinHandle<()>>,
    guards: Option<timely::communication::WorkerGuards<()>>,
    last_epoch: Option<u64>,
    /// The last epoch handed in: the workers step promptly while the frontier is not past it.
    announced: Arc<AtomicU64>,
    /// In a cluster: this process's place and its end of the control dataflow.
    cluster: Option<ClusterLink>,
}

/// A process's end of the cluster's control dataflow (see [`crate::cluster`]).
struct ClusterLink {
    spec: ClusterSpec,
    /// To the control dataflow (this process's first worker sends it to every process).
    out: Sender<ClusterMsg>,
    /// What the control dataflow brought to this process.
    incoming: Receiver<ClusterMsg>,
}

/// The input of a worker's control dataflow.
type ControlInput = InputHandle<u64, CapacityContainerBuilder<Vec<ClusterMsg>>>;

/// Set while a worker thread runs; a worker that panics (in a cluster: a process is gone and
/// timely's connection to it failed) fails the dataflow, so that no one waits for it.
struct WorkerAlive {
    control: Arc<RunControl>,
    frontier: Arc<Frontier>,
}

impl Drop for WorkerAlive {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.control.fail(
                "a worker of the dataflow stopped (in a cluster: a process is gone or cannot \
                 be reached)",
            );
            self.frontier.moved.notify_all();
        }
    }
}

impl LiveDataflow {
    /// Builds the dataflow on `spec.workers` threads; it waits for its first epoch.
    pub fn start(spec: LiveSpec) -> Result<Self, RunError> {
        let LiveSpec {
            workers,
            plan,
            sinks,
            runtime,
            cluster,
        } = spec;
        check_sinks(&plan, &sinks)?;
        let diff_epochs = DiffEpochs::default();
        let replay_free = ReplayFree::default();
        let control = RunControl::new(64 * 1024);
        let epoch_rejects = Arc::new(EpochRejects(Mutex::new(None)));
        let rejects: Arc<dyn RejectSink> = epoch_rejects.clone();
        let (senders, deliveries) = spawn_deliveries(&sinks, workers, &rejects, &control, &runtime);
        let mappers: Mappers = Arc::default();
        let branches: Vec<(Branch, BatchLimits)> = sinks
            .iter()
            .enumerate()
            .map(|(i, s)| (branch_of(&s.mapper, i, &mappers), s.limits))
            .collect();
        let (wake_tx, wake_rx) = channel();
        let (job_txs, job_rxs): (Vec<Sender<EpochJob>>, Vec<_>) =
            (0..workers.max(1)).map(|_| channel()).unzip();
        let jobs: Vec<Mutex<Option<EpochJobs>>> = job_rxs
            .into_iter()
            .map(|jobs| {
                Mutex::new(Some(EpochJobs {
                    jobs,
                    wake: wake_tx.clone(),
                }))
            })
            .collect();
        drop(wake_tx);
        let jobs = Arc::new(jobs);
        let frontier = Arc::new(Frontier {
            first: Mutex::new(Some(0)),
            moved: Condvar::new(),
            reported: Default::default(),
        });
        let (ctl, published, wired_plan) = (control.clone(), frontier.clone(), plan.clone());
        let (wired_epochs, wired_replays) = (diff_epochs.clone(), replay_free.clone());
        let announced = Arc::new(AtomicU64::new(0));
        let in_flight = announced.clone();
        // The control dataflow's ends: to this process's first worker, and back from it.
        let (to_workers, from_main) = channel::<ClusterMsg>();
        let from_main = Arc::new(Mutex::new(Some(from_main)));
        let (to_main, incoming) = channel::<ClusterMsg>();
        let (clustered, local) = (cluster.is_some(), workers.max(1));
        let process = cluster.as_ref().map_or(0, |c| c.process);
        let work = move |worker: &mut timely::worker::Worker| {
            // Workers are numbered across the cluster; this process's are `local` in a row.
            let local_index = worker.index() % local;
            let jobs = jobs
                .get(local_index)
                .and_then(|j| j.lock().ok().and_then(|mut j| j.take()));
            let wiring = Wiring {
                diff_epochs: wired_epochs.clone(),
                replay_free: wired_replays.clone(),
                plan: wired_plan.clone(),
                branches: branches.clone(),
                senders: senders.clone(),
                rejects: rejects.clone(),
                control: ctl.clone(),
                local: clustered.then_some(local),
            };
            let publish = local_index == 0;
            let probe = worker
                .dataflow::<u64, _, _>(|scope| wiring.wire(epoch_source(scope, jobs, ctl.clone())));
            let _alive = WorkerAlive {
                control: ctl.clone(),
                frontier: published.clone(),
            };
            // In a cluster, the control dataflow: what this process's first worker is given
            // goes to every worker of every process; its first worker hands it on.
            let mut control_in: Option<ControlInput> = None;
            let mut control_out = None;
            if clustered {
                let mut input = ControlInput::new();
                let hand_on = publish.then(|| to_main.clone());
                let failed = ctl.clone();
                worker.dataflow::<u64, _, _>(|scope| {
                    scope
                        .input_from(&mut input)
                        .broadcast()
                        .inspect(move |m: &ClusterMsg| {
                            if let ClusterMsg::Failed { process: p, reason } = m {
                                if *p != process {
                                    failed.fail(format!(
                                        "process {p} of the cluster failed: {reason}"
                                    ));
                                }
                            }
                            if let Some(tx) = &hand_on {
                                let _ = tx.send(m.clone());
                            }
                        });
                });
                if publish {
                    control_out = from_main.lock().ok().and_then(|mut r| r.take());
                }
                control_in = Some(input);
            }
            loop {
                if let Some(reason) = ctl.failure() {
                    // The other processes fail too (nothing of the epoch is committed).
                    if let (Some(input), true) = (control_in.as_mut(), publish) {
                        input.send(ClusterMsg::Failed { process, reason });
                        input.flush();
                        // Long enough for the others to take the reason before this process's
                        // connections close (each then fails with it, not with "a worker
                        // stopped"); a process that is gone ends this sooner (the worker's
                        // connection to it fails).
                        let until = std::time::Instant::now() + FAILED_GRACE;
                        while std::time::Instant::now() < until {
                            worker.step_or_park(Some(Duration::from_millis(10)));
                        }
                        let _first = published.first.lock();
                        published.reported.store(true, Ordering::Release);
                    }
                    for id in worker.installed_dataflows() {
                        worker.drop_dataflow(id);
                    }
                    published.moved.notify_all();
                    return;
                }
                if let (Some(rx), Some(input)) = (control_out.as_ref(), control_in.as_mut()) {
                    let mut sent = false;
                    while let Ok(m) = rx.try_recv() {
                        input.send(m);
                        sent = true;
                    }
                    if sent {
                        input.flush();
                    }
                }
                if publish {
                    let first = probe.with_frontier(|f| f.first().copied());
                    if let Ok(mut at) = published.first.lock() {
                        if *at != first {
                            *at = first;
                            published.moved.notify_all();
                        }
                    }
                }
                if probe.done() {
                    break;
                }
                worker.step_or_park(Some(park_for(&probe, &in_flight)));
            }
            // The control dataflow ends once every worker of every process closed its input.
            drop(control_in);
            while worker.step_or_park(Some(Duration::from_millis(10))) {
                if ctl.failure().is_some() {
                    return;
                }
            }
        };
        let guards = match &cluster {
            // Connected by wharf, quietly and within a time limit; then timely's own threads.
            Some(c) => {
                let (allocators, others) = c.allocators(workers).map_err(RunError)?;
                timely::execute::execute_from(allocators, others, WorkerConfig::default(), work)
            }
            None => timely::execute(
                timely::Config {
                    communication: timely_config(workers).communication,
                    worker: WorkerConfig::default(),
                },
                work,
            ),
        }
        .map_err(RunError)?;
        let wakes = (0..job_txs.len())
            .map(|_| wake_rx.recv_timeout(Duration::from_secs(30)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| RunError("the long-lived dataflow did not start".into()))?;
        Ok(LiveDataflow {
            jobs: job_txs,
            wakes,
            frontier,
            mappers,
            rejects: epoch_rejects,
            sinks,
            plan,
            diff_epochs,
            replay_free,
            control,
            runtime,
            deliveries,
            guards: Some(guards),
            last_epoch: None,
            announced,
            cluster: cluster.map(|spec| ClusterLink {
                spec,
                out: to_workers,
                incoming,
            }),
        })
    }

    /// The dataflow's counters and failure: the current epoch's.
    pub fn control(&self) -> Arc<RunControl> {
        self.control.clone()
    }

    /// The change counts of a [`Plan::Changes`] or [`Plan::Diff`] dataflow: the current epoch's.
    pub fn counts(&self) -> Option<Arc<DiffCounts>> {
        match &self.plan {
            Plan::Changes { counts, .. } | Plan::Diff { counts, .. } => Some(counts.clone()),
            Plan::Append => None,
        }
    }

    /// The held store of a [`Plan::Changes`] dataflow, if it keeps one: a committed epoch is
    /// noted there.
    pub fn held(&self) -> Option<Arc<wharf_operators::diff::HeldStore>> {
        match &self.plan {
            Plan::Changes { held, .. } => held.clone(),
            _ => None,
        }
    }

    /// Whether the dataflow was built for `plan` (the same kind of plan).
    pub fn fits(&self, plan: &Plan) -> bool {
        std::mem::discriminant(&self.plan) == std::mem::discriminant(plan)
    }

    /// Runs epoch `epoch` (greater than any before) of `input`, and returns once every record
    /// of it was acknowledged and the destinations flushed (Ok), or the epoch failed (Err:
    /// nothing of it may be committed, and the dataflow is spent).
    pub fn run_epoch(&mut self, epoch: u64, input: EpochInput) -> Result<RunOutcome, RunError> {
        self.run_described(epoch, input, None)
    }

    /// [`LiveDataflow::run_epoch`] in process 0 of a cluster: the other processes get
    /// `description` (see [`LiveDataflow::next_epoch`]) and read their parts of the epoch; it
    /// returns once they all answered that theirs was delivered, with the counters of all.
    pub fn run_epoch_described(
        &mut self,
        epoch: u64,
        input: EpochInput,
        description: Vec<u8>,
    ) -> Result<RunOutcome, RunError> {
        self.run_described(epoch, input, Some(description))
    }

    fn run_described(
        &mut self,
        epoch: u64,
        input: EpochInput,
        description: Option<Vec<u8>>,
    ) -> Result<RunOutcome, RunError> {
        let EpochInput {
            readers,
            mappers,
            rejects,
            now_ms,
            diff,
            may_replay,
        } = input;
        let started = Instant::now();
        if let Some(reason) = self.control.failure() {
            return Err(RunError(format!("the dataflow failed before: {reason}")));
        }
        if self.last_epoch.is_some_and(|last| epoch <= last) {
            return Err(RunError(format!(
                "epoch {epoch} is not after epoch {}",
                self.last_epoch.unwrap_or_default()
            )));
        }
        self.last_epoch = Some(epoch);
        let fits = mappers.len() == self.sinks.len()
            && mappers.iter().zip(&self.sinks).all(|(m, s)| {
                matches!(m, SinkMapper::Records(_)) == matches!(s.mapper, SinkMapper::Records(_))
            });
        if !fits {
            return Err(RunError(
                "the epoch's mappers do not fit the dataflow".into(),
            ));
        }
        match (&self.plan, diff) {
            (Plan::Diff { .. }, Some(spec)) => {
                self.diff_epochs.announce(epoch, spec).map_err(RunError)?;
            }
            (Plan::Diff { .. }, None) => {
                return Err(RunError("a snapshot diff epoch needs its setup".into()));
            }
            _ => {}
        }
        self.replay_free.set(epoch, !may_replay);
        if let Ok(mut r) = self.rejects.0.lock() {
            *r = Some(rejects);
        }
        self.control.counters.reset();
        if let Some(counts) = self.counts() {
            counts.reset();
        }
        if let Ok(mut m) = self.mappers.lock() {
            m.insert(epoch, (mappers, now_ms));
        }
        self.announced.store(epoch, Ordering::Release);
        if let (Some(link), Some(description)) = (&self.cluster, description) {
            if link
                .out
                .send(ClusterMsg::Epoch { epoch, description })
                .is_err()
            {
                return Err(RunError("the cluster's control dataflow stopped".into()));
            }
        }
        // Worker w reads parts w, w + W, w + 2W, …; every worker gets a job, maybe empty.
        let mut parts: Vec<Vec<StartReader>> = self.jobs.iter().map(|_| Vec::new()).collect();
        let workers = parts.len();
        for (i, reader) in readers.into_iter().enumerate() {
            if let Some(p) = parts.get_mut(i % workers.max(1)) {
                p.push(reader);
            }
        }
        let sent = !self.jobs.is_empty()
            && self
                .jobs
                .iter()
                .zip(parts)
                .all(|(jobs, start)| jobs.send(EpochJob { epoch, start }).is_ok());
        if !sent {
            return Err(RunError("the long-lived dataflow stopped".into()));
        }
        self.wake_workers();
        let passed = self.wait_past(epoch);
        if let Ok(mut m) = self.mappers.lock() {
            m.retain(|e, _| *e > epoch);
        }
        self.diff_epochs.retire_through(epoch);
        if let Some(reason) = self.control.failure() {
            abort_all(&self.sinks, &self.runtime);
            return Err(RunError(reason));
        }
        if !passed {
            self.control
                .fail("the long-lived dataflow ended before its epoch");
            return Err(RunError(
                "the long-lived dataflow ended before its epoch".into(),
            ));
        }
        tracing::debug!(epoch, "epoch past the frontier; flushing");
        if let Err(e) = flush_all(&self.sinks, &self.runtime) {
            self.control.fail(e.0.clone());
            return Err(e);
        }
        tracing::debug!(epoch, "epoch flushed");
        let left = self.control.clear_inflight();
        if left != 0 {
            tracing::warn!(
                epoch,
                left,
                "rows counted in flight after the epoch; cleared"
            );
        }
        let mut done = outcome(&self.control, started);
        if let Some(link) = self.cluster.as_ref().filter(|l| l.spec.leads()) {
            let counts = self.counts();
            for (part, diff) in self.wait_done(link, epoch)? {
                done.add(&part);
                if let (Some(tally), Some(counts)) = (diff, counts.as_ref()) {
                    tally.add_to(counts);
                }
            }
            done.elapsed = started.elapsed();
        }
        Ok(done)
    }

    /// Process 0 of a cluster: waits until every other process answered that its part of
    /// `epoch` was delivered and flushed; their counters.
    fn wait_done(
        &self,
        link: &ClusterLink,
        epoch: u64,
    ) -> Result<Vec<(RunOutcome, Option<DiffTally>)>, RunError> {
        let mut parts: BTreeMap<usize, (RunOutcome, Option<DiffTally>)> = BTreeMap::new();
        while parts.len() + 1 < link.spec.processes() {
            if let Some(reason) = self.control.failure() {
                abort_all(&self.sinks, &self.runtime);
                return Err(RunError(reason));
            }
            match link.incoming.recv_timeout(Duration::from_millis(50)) {
                Ok(ClusterMsg::Done {
                    process,
                    epoch: e,
                    counts,
                    diff,
                }) if e == epoch => {
                    parts.insert(process, (counts, diff));
                }
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.control.fail("the cluster's control dataflow stopped");
                }
            }
        }
        Ok(parts.into_values().collect())
    }

    /// A process other than 0 of a cluster: waits for process 0's next epoch, `(epoch,
    /// description)`; `None` once process 0 ended the sync. Err: the cluster failed.
    pub fn next_epoch(&self) -> Result<Option<(u64, Vec<u8>)>, RunError> {
        let Some(link) = self.cluster.as_ref() else {
            return Err(RunError("not a process of a cluster".into()));
        };
        loop {
            if let Some(reason) = self.control.failure() {
                return Err(RunError(reason));
            }
            match link.incoming.recv_timeout(Duration::from_millis(100)) {
                Ok(ClusterMsg::Epoch { epoch, description }) => {
                    return Ok(Some((epoch, description)))
                }
                Ok(ClusterMsg::End) => return Ok(None),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(RunError("the cluster's control dataflow stopped".into()))
                }
            }
        }
    }

    /// A process other than 0 of a cluster: tells process 0 that its part of `epoch` was
    /// delivered and flushed (a failure reaches the other processes by itself).
    pub fn report_done(&self, epoch: u64, outcome: &RunOutcome) -> Result<(), RunError> {
        let link = self
            .cluster
            .as_ref()
            .ok_or_else(|| RunError("not a process of a cluster".into()))?;
        link.out
            .send(ClusterMsg::Done {
                process: link.spec.process,
                epoch,
                counts: outcome.clone(),
                diff: self.counts().map(|c| DiffTally::of(&c)),
            })
            .map_err(|_| RunError("the cluster's control dataflow stopped".into()))?;
        self.wake_workers();
        Ok(())
    }

    /// Wakes every worker of this process (they look at their jobs and control messages).
    fn wake_workers(&self) {
        for wake in &self.wakes {
            let _ = wake.activate();
        }
    }

    /// Waits until the frontier has passed `epoch` (true) or the dataflow failed or ended.
    fn wait_past(&self, epoch: u64) -> bool {
        let Ok(mut first) = self.frontier.first.lock() else {
            return false;
        };
        loop {
            match *first {
                Some(t) if t > epoch => return true,
                // Empty: the dataflow ended (its jobs closed) before passing the epoch.
                None => return false,
                _ if self.control.failure().is_some() => return false,
                _ => {}
            }
            first = match self
                .frontier
                .moved
                .wait_timeout(first, Duration::from_millis(50))
            {
                Ok((guard, _)) => guard,
                Err(_) => return false,
            };
        }
    }
}

/// How long a failing process of a cluster keeps its connections open after sending its
/// reason to the others.
const FAILED_GRACE: Duration = Duration::from_secs(2);

impl Drop for LiveDataflow {
    /// Ends the dataflow: the source sees its jobs closed, the frontier empties, the workers
    /// return (or already did, after a failure).
    fn drop(&mut self) {
        let failed = self.control.failure().is_some();
        if let Some(link) = self.cluster.as_ref() {
            if failed {
                // The processes of a failed cluster do not wait for each other: a process
                // that is gone would keep the others' workers waiting for ever.
                std::mem::forget(self.guards.take());
                // But this process stays until its first worker handed the reason on (a
                // process that exits at once closes its connections, and the others fail
                // with "a worker stopped" instead of the reason); at most a little longer
                // than the grace, should that worker have stopped.
                let until = std::time::Instant::now() + FAILED_GRACE + Duration::from_secs(1);
                if let Ok(mut first) = self.frontier.first.lock() {
                    while !self.frontier.reported.load(Ordering::Acquire) {
                        let left = until.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        match self.frontier.moved.wait_timeout(first, left) {
                            Ok((guard, _)) => first = guard,
                            Err(_) => break,
                        }
                    }
                }
            } else if link.spec.leads() {
                let _ = link.out.send(ClusterMsg::End);
            }
        }
        self.jobs.clear();
        self.wake_workers();
        if let Some(guards) = self.guards.take() {
            for result in guards.join() {
                if let Err(e) = result {
                    tracing::warn!("a worker of a long-lived dataflow failed: {e}");
                }
            }
        }
        for d in &self.deliveries {
            d.abort();
        }
    }
}

/// How long a worker may park: briefly while an epoch is in flight (a capability dropped in
/// one step reaches the probe in a later one, and nothing else may wake the worker: parking
/// 100 ms then held 4 of 300 epochs for 100 ms), longer while the dataflow waits for one.
fn park_for(probe: &ProbeHandle<u64>, announced: &AtomicU64) -> Duration {
    if probe.less_equal(&announced.load(Ordering::Acquire)) {
        Duration::from_millis(1)
    } else {
        Duration::from_millis(100)
    }
}

/// Branch `i`'s mapper for an epoch, looked up in `mappers`.
fn branch_of(kind: &SinkMapper, i: usize, mappers: &Mappers) -> Branch {
    let at = {
        let mappers = mappers.clone();
        move |epoch: u64| -> Option<(SinkMapper, i64)> {
            let m = mappers.lock().ok()?;
            let (ms, now) = m.get(&epoch)?;
            Some((ms.get(i)?.clone(), *now))
        }
    };
    match kind {
        SinkMapper::Records(_) => Branch::Records(Arc::new(move |epoch| match at(epoch)? {
            (SinkMapper::Records(r), now) => Some((r, now)),
            _ => None,
        })),
        SinkMapper::Changes(_) => Branch::Changes(Arc::new(move |epoch| match at(epoch)? {
            (SinkMapper::Changes(c), now) => Some((c, now)),
            _ => None,
        })),
    }
}
