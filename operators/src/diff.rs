//! Snapshot diffs on timely dataflow: the operator behind full and mirror syncs.
//!
//! Each run reads the whole table (a snapshot). Every keyed row becomes `(key hash,
//! fingerprint)`; the pairs are exchanged by key range (see [`owner`]), so each worker holds
//! one contiguous range of the key space. Once the snapshot is complete, a worker sorts its
//! range and, bucket by bucket, builds differential-dataflow batches of it and of the same
//! range of the last committed snapshot (kept sorted on disk, so built without re-sorting), and
//! differential's batch merger consolidates the snapshot at +1 against the committed state at
//! −1: `S(now) − S(before)`, per key — a key only now is an insert, in both with another
//! fingerprint an update, only before a delete (see [`arranged`]). The previous state is
//! streamed, never loaded whole, and the new sorted part is written as the buckets go.
//!
//! Only the compact pairs travel between workers. The rows themselves stay in the run's Arrow
//! batches, stashed per worker (in memory up to a budget, then spilled to an Arrow IPC file),
//! and the changed rows are picked out of them once the classification is complete. Deleted
//! keys' texts come from the previous snapshot's key-text parts. The run's new state — per
//! worker a sorted part of `(key hash, fingerprint)` and a part of key texts — is written as
//! the run goes; the caller makes it the committed state only when the run commits.

mod arranged;
mod classify;
mod epochs;
mod held;
mod held_store;
mod stash;

pub use epochs::DiffEpochs;
pub use held::{consolidate_changes, ReplayFree};
pub use held_store::HeldStore;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::{Broadcast, Filter};
use timely::dataflow::operators::Concat;
use timely::dataflow::Stream;

use crate::change::{ChangeMapper, ChangeOp, ChangeSet, RowChange};
use crate::dataflow::{mapper_for, ArrowBatch, MapperAt, RunControl};
use crate::record::{MappedBatch, Reject};
use crate::snapshot::{
    owner, part_kind, KeyMap, KeySet, KeyTextWriter, PartKind, PendingSnapshot, RowHasher,
};
use classify::{classify, duplicate_examples, Buckets, Verdict};
use epochs::{EpochWatch, Opened};
use stash::{Stash, StashIter};

/// Which rows a run emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Emit {
    /// Inserted and updated rows (and deletes).
    Changes,
    /// Every row (unchanged ones as updates), and deletes.
    All,
    /// Every row, but only if anything changed (lookup tables are replaced whole).
    AllIfChanged,
}

/// How one run's snapshot diff is set up.
#[derive(Debug, Clone)]
pub struct DiffSpec {
    /// Keys and fingerprints of rows.
    pub hasher: Arc<RowHasher>,
    /// The last committed snapshot's part files (empty on the first run).
    pub previous: Vec<PathBuf>,
    /// Snapshots of runs after it that did not commit but may have delivered changes: each
    /// key they cover may hold their value in the destination, so a key whose value differs
    /// between them, the committed snapshot and now is sent again (or deleted).
    pub pending: Vec<PendingSnapshot>,
    /// Directory for this run's new part files (`part-<worker>-of-<workers>.snap`,
    /// `keys-<worker>.snap`).
    pub next_dir: PathBuf,
    /// Directory for spilled batches.
    pub spill_dir: PathBuf,
    /// Bytes of Arrow batches a worker keeps in memory before spilling.
    pub memory_budget: usize,
    /// Which rows to emit.
    pub emit: Emit,
    /// Emit deleted keys (mirror); otherwise they are only counted (full).
    pub send_deletes: bool,
}

impl DiffSpec {
    /// Nothing was delivered before: every row is an insert.
    pub fn is_first(&self) -> bool {
        self.previous.is_empty() && self.pending.is_empty()
    }

    /// About how many pairs the committed snapshot holds (from its sorted parts' sizes).
    fn previous_pairs(&self) -> u64 {
        self.previous
            .iter()
            .filter(|p| matches!(part_kind(p), Ok(PartKind::Sorted(_))))
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len() / 32)
            .sum()
    }

    /// Every part file a deleted key's text may be in: the committed state's, then the
    /// pending snapshots'.
    fn key_text_sources(&self) -> Vec<PathBuf> {
        let mut parts = self.previous.clone();
        for p in &self.pending {
            parts.extend(p.parts.iter().cloned());
        }
        parts
    }
}

/// Counts of one diff (shared by the workers).
#[derive(Debug, Default)]
pub struct DiffCounts {
    /// Inserted keys.
    pub inserts: std::sync::atomic::AtomicU64,
    /// Updated keys.
    pub updates: std::sync::atomic::AtomicU64,
    /// Deleted keys.
    pub deletes: std::sync::atomic::AtomicU64,
    /// Rows of the new snapshot (with a key).
    pub rows: std::sync::atomic::AtomicU64,
    /// The new state's part files, once written.
    pub parts: Mutex<Vec<PathBuf>>,
}

impl DiffCounts {
    /// Counts from zero again (the next epoch of a long-lived dataflow).
    pub fn reset(&self) {
        for c in [&self.inserts, &self.updates, &self.deletes, &self.rows] {
            c.store(0, Ordering::Relaxed);
        }
        if let Ok(mut parts) = self.parts.lock() {
            parts.clear();
        }
    }
}

/// The rows stashed per worker, per epoch: kept by `HashRows`, drained by `EmitChangedRows`.
type Stashes = Rc<RefCell<BTreeMap<u64, Stash>>>;

/// The snapshot diff of each epoch announced in `epochs`: rows in, changes out. Counts go to
/// `counts` (the epoch's: epochs run one after another). With `local` (the workers of each
/// process of a cluster), rows are stashed in the process that read them (only their keys and
/// fingerprints go to the worker that owns their key range): each process emits, and counts
/// in flight, the changed rows it read.
pub fn snapshot_diff<'s>(
    rows: Stream<'s, u64, Vec<ArrowBatch>>,
    epochs: DiffEpochs,
    counts: Arc<DiffCounts>,
    control: Arc<RunControl>,
    local: Option<usize>,
) -> Stream<'s, u64, Vec<ChangeSet>> {
    let scope = rows.scope();
    let (index, peers) = (scope.index(), scope.peers());
    let (first, count) = crate::dataflow::spread(&scope, local);
    let stashes: Stashes = Rc::default();

    // 1. Hash every row, stash the batch, write the rows' key texts; emit (key, fp).
    let cur = {
        let (epochs, counts, control, stashes) = (
            epochs.clone(),
            counts.clone(),
            control.clone(),
            stashes.clone(),
        );
        rows.unary_frontier::<CapacityContainerBuilder<Vec<(u128, u128)>>, _, _, _>(
            Exchange::new(move |b: &ArrowBatch| first + b.seq % count),
            "HashRows",
            move |cap, _info| {
                let mut watch = EpochWatch::new(cap, epochs);
                // Per open epoch its capability (held until this worker's key-text part is
                // finished, so that no range is classified — and no change leaves — before
                // every key text of the run is on disk: a later run may need them to delete
                // what this one sent), its setup and its key-text writer.
                let mut open: BTreeMap<u64, (Opened, Option<KeyTextWriter>)> = BTreeMap::new();
                let start = move |o: Opened, control: &RunControl, stashes: &Stashes| {
                    let path = o.spec.next_dir.join(format!("keys-{index}.snap"));
                    let writer = KeyTextWriter::create(&path)
                        .map_err(|e| {
                            control.fail(format!(
                                "cannot write snapshot state {}: {e}",
                                path.display()
                            ))
                        })
                        .ok();
                    stashes.borrow_mut().insert(o.epoch, Stash::default());
                    (o.epoch, (o, writer))
                };
                move |(input, frontier), output| {
                    for o in watch.reached(frontier) {
                        let (e, state) = start(o, &control, &stashes);
                        open.insert(e, state);
                    }
                    input.for_each(|cap, data| {
                        let Some(&epoch) = cap.least() else { return };
                        if let Some(o) = watch.open(epoch) {
                            let (e, state) = start(o, &control, &stashes);
                            open.insert(e, state);
                        }
                        let Some((o, writer)) = open.get_mut(&epoch) else {
                            control.fail(format!("rows of epoch {epoch}, which was not announced"));
                            return;
                        };
                        let mut session = output.session(&o.cap);
                        for b in data.drain(..) {
                            let hashed = o.spec.hasher.hash_batch(&b.batch);
                            let rows = b.batch.num_rows();
                            let mut keyed = 0u64;
                            for (i, id) in hashed.ids.iter().enumerate() {
                                let Some(id) = id else { continue };
                                keyed += 1;
                                session.give((id.key, id.fp));
                                if let Some(w) = writer.as_mut() {
                                    if let Err(e) = w.push(hashed.key(i)) {
                                        control.fail(format!("cannot write snapshot state: {e}"));
                                        *writer = None;
                                    }
                                }
                            }
                            counts.rows.fetch_add(keyed, Ordering::Relaxed);
                            let pushed = match stashes.borrow_mut().get_mut(&epoch) {
                                Some(stash) => stash.push(
                                    b.batch,
                                    o.spec.memory_budget,
                                    &o.spec.spill_dir,
                                    index,
                                ),
                                None => Err("no stash for the epoch".to_string()),
                            };
                            if let Err(e) = pushed {
                                control.fail(e);
                            }
                            // Stashed rows no longer hold the source back; what is emitted later
                            // is admitted again.
                            control.settle(rows);
                        }
                    });
                    // Epochs the frontier passed: finish their key-text parts; dropping their
                    // capabilities lets the classification start.
                    while let Some(entry) = open.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (_, writer) = entry.remove();
                        if let Some(w) = writer {
                            match w.finish() {
                                Ok(p) => {
                                    if let Ok(mut parts) = counts.parts.lock() {
                                        parts.push(p);
                                    }
                                }
                                Err(e) => control.fail(format!("cannot write snapshot state: {e}")),
                            }
                        }
                    }
                }
            },
        )
    };

    // 2. Per key range: sort the range's pairs, find duplicate keys, take the delta against
    //    the previous snapshot's range (insert / update / delete) and write the new sorted part.
    let verdicts = {
        let (epochs, counts, control) = (epochs.clone(), counts.clone(), control.clone());
        cur.unary_frontier::<CapacityContainerBuilder<Vec<Verdict>>, _, _, _>(
            Exchange::new(move |p: &(u128, u128)| owner(p.0, peers) as u64),
            "ClassifyChanges",
            move |cap, _info| {
                let mut watch = EpochWatch::new(cap, epochs);
                let mut open: BTreeMap<u64, (Opened, Buckets)> = BTreeMap::new();
                move |(input, frontier), output| {
                    for o in watch.reached(frontier) {
                        let buckets = Buckets::expecting(o.spec.previous_pairs());
                        open.insert(o.epoch, (o, buckets));
                    }
                    input.for_each(|cap, data| {
                        let Some(&epoch) = cap.least() else { return };
                        if let Some(o) = watch.open(epoch) {
                            let buckets = Buckets::expecting(o.spec.previous_pairs());
                            open.insert(epoch, (o, buckets));
                        }
                        let Some((_, pairs)) = open.get_mut(&epoch) else {
                            control
                                .fail(format!("pairs of epoch {epoch}, which was not announced"));
                            return;
                        };
                        for p in data.drain(..) {
                            pairs.push(p);
                        }
                    });
                    while let Some(entry) = open.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (o, pairs) = entry.remove();
                        let mut session = output.session(&o.cap);
                        if let Err(e) = classify(pairs, &o.spec, index, peers, &counts, &mut |v| {
                            session.give(v)
                        }) {
                            control.fail(e);
                        }
                    }
                }
            },
        )
    };

    // 4. Deletes leave from the worker that classified them.
    let deletes = {
        let control = control.clone();
        verdicts
            .clone()
            .unary::<CapacityContainerBuilder<Vec<ChangeSet>>, _, _, _>(
                Pipeline,
                "EmitDeletes",
                move |_cap, _info| {
                    move |input, output| {
                        input.for_each(|cap, data| {
                            let mut keys: Vec<String> = Vec::new();
                            let mut session = output.session(&cap);
                            for v in data.drain(..) {
                                if let Verdict::Deleted(k) = v {
                                    keys.push(k);
                                    if keys.len() >= DELETE_CHUNK {
                                        control.admit(keys.len());
                                        session.give(ChangeSet::Deletes(std::mem::take(&mut keys)));
                                    }
                                }
                            }
                            if !keys.is_empty() {
                                control.admit(keys.len());
                                session.give(ChangeSet::Deletes(keys));
                            }
                        });
                    }
                },
            )
    };

    // 5. Every worker learns every changed key and picks its changed rows out of its stash.
    let changed = verdicts
        .filter(|v| !matches!(v, Verdict::Deleted(_)))
        .broadcast();
    let rows = {
        let worker = scope.worker().clone();
        changed.unary_frontier::<CapacityContainerBuilder<Vec<ChangeSet>>, _, _, _>(
            Pipeline,
            "EmitChangedRows",
            move |cap, info| {
                let activator = worker.activator_for(info.address.clone());
                let mut watch = EpochWatch::new(cap, epochs);
                let mut open: BTreeMap<u64, Emitting> = BTreeMap::new();
                move |(input, frontier), output| {
                    for o in watch.reached(frontier) {
                        open.insert(o.epoch, Emitting::new(o));
                    }
                    input.for_each(|cap, data| {
                        let Some(&epoch) = cap.least() else { return };
                        if let Some(o) = watch.open(epoch) {
                            open.insert(epoch, Emitting::new(o));
                        }
                        let Some(e) = open.get_mut(&epoch) else {
                            control
                                .fail(format!("changes of epoch {epoch}, which was not announced"));
                            return;
                        };
                        for v in data.drain(..) {
                            match v {
                                Verdict::Changed(k, c) => {
                                    e.changed.insert(k, c);
                                }
                                Verdict::Duplicate(k) => {
                                    e.dups.insert(k);
                                }
                                Verdict::Deleted(_) => {}
                            }
                        }
                    });
                    while let Some(mut entry) = open.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let epoch = *entry.key();
                        let done = entry
                            .get_mut()
                            .emit(epoch, &stashes, &counts, &control, &activator, output);
                        if !done {
                            // Out of room: resumed when the sinks make some.
                            break;
                        }
                        entry.remove();
                        stashes.borrow_mut().remove(&epoch);
                    }
                }
            },
        )
    };
    rows.concat(deletes)
}

/// One epoch of `EmitChangedRows`: the changed keys it learnt, then the stash being filtered.
struct Emitting {
    opened: Opened,
    changed: KeyMap<RowChange>,
    dups: KeySet,
    iter: Option<StashIter>,
}

impl Emitting {
    fn new(opened: Opened) -> Self {
        Emitting {
            opened,
            changed: KeyMap::default(),
            dups: KeySet::default(),
            iter: None,
        }
    }

    /// Emits the epoch's changed rows (all of them, for resends), picked out of its stash;
    /// false when the sinks have no room left (the operator is activated again once they do).
    fn emit(
        &mut self,
        epoch: u64,
        stashes: &Stashes,
        counts: &DiffCounts,
        control: &RunControl,
        activator: &timely::scheduling::Activator,
        output: &mut timely::dataflow::operators::generic::OutputBuilderSession<
            '_,
            u64,
            CapacityContainerBuilder<Vec<ChangeSet>>,
        >,
    ) -> bool {
        let spec = self.opened.spec.clone();
        let first = spec.is_first();
        if self.iter.is_none() {
            let mut stashes = stashes.borrow_mut();
            let Some(stash) = stashes.get_mut(&epoch) else {
                // No rows on this worker, or nothing to emit.
                return true;
            };
            if !self.dups.is_empty() {
                let examples = duplicate_examples(stash, &spec.hasher, &self.dups);
                if !examples.is_empty() {
                    control.fail(format!(
                        "the snapshot has duplicate primary key values, e.g. {}; fix `primary_key` (it must be unique) or deduplicate the rows in a `query`",
                        examples.join(", ")
                    ));
                }
                return true;
            }
            let nothing_changed =
                !first && self.changed.is_empty() && counts.deletes.load(Ordering::Relaxed) == 0;
            if spec.emit == Emit::Changes && self.changed.is_empty() && !first
                || spec.emit == Emit::AllIfChanged && nothing_changed
            {
                return true;
            }
            match stash.drain() {
                Ok(it) => self.iter = Some(it),
                Err(e) => {
                    control.fail(e);
                    return true;
                }
            }
        }
        let Some(it) = self.iter.as_mut() else {
            return true;
        };
        let mut session = output.session(&self.opened.cap);
        loop {
            if !control.has_room_or_retry(activator) {
                return false;
            }
            match it.next_batch() {
                None => return true,
                Some(Err(e)) => {
                    control.fail(e);
                    return true;
                }
                Some(Ok(batch)) => {
                    if let Some(set) = pick_rows(&batch, &spec, &self.changed, first) {
                        control.admit(set.len());
                        session.give(set);
                    }
                }
            }
        }
    }
}

const DELETE_CHUNK: usize = 2000;

/// Maps change sets into records on the worker that holds them.
/// A changed row may become several records (a profile's `$set` and `$unset`); the extra
/// ones are admitted here, so in-flight accounting stays per record downstream. With `copy`
/// (a second destination of a fan-out) every record is admitted.
pub fn map_changes<'s>(
    stream: Stream<'s, u64, Vec<ChangeSet>>,
    mapper_at: MapperAt<dyn ChangeMapper>,
    control: Arc<RunControl>,
    copy: bool,
) -> Stream<'s, u64, Vec<MappedBatch>> {
    stream.unary(Pipeline, "MapChanges", move |_cap, _info| {
        move |input, output| {
            input.for_each(|cap, data| {
                let Some((mapper, now_ms)) = mapper_for(&mapper_at, cap.least(), &control) else {
                    return;
                };
                output.session(&cap).give_iterator(data.drain(..).map(|c| {
                    let mapped = mapper.map_changes(&c, now_ms);
                    let settles = mapped.records.len() + mapped.settled_without_request();
                    let admitted = if copy { 0 } else { c.len() };
                    control.admit(settles.saturating_sub(admitted));
                    mapped
                }));
            });
        }
    })
}

/// Name of the last column of a change-stream batch: each row's change (`insert`, `update`
/// or `delete`). Sources with a change stream of their own (e.g. logical decoding) send such
/// batches; a delete row needs only its key columns.
pub const OP_COLUMN: &str = "wharf_op";

/// An [`OP_COLUMN`] value: a delete of a key whose first change in the source's window was an
/// insert, so the key did not exist where the window starts. Read as a delete; an epoch known
/// to replay nothing drops it when the dataflow never sent the key (see [`consolidate_changes`]).
pub const OP_DELETE_OF_NEW: &str = "delete_new";

/// The [`OP_COLUMN`] value of a key's compacted change `op`, `born` when the key's first change
/// in the window was an insert.
pub fn op_text(op: ChangeOp, born: bool) -> &'static str {
    match op {
        ChangeOp::Delete if born => OP_DELETE_OF_NEW,
        op => op.as_str(),
    }
}

/// Turns change-stream batches (see [`OP_COLUMN`]) into change sets, counting the changes in
/// `counts`. The source has compacted them so a key changes at most once per run; rows with a
/// NULL key become rejects. A batch whose last column is not a valid op column fails the run.
pub fn stream_changes<'s>(
    stream: Stream<'s, u64, Vec<ArrowBatch>>,
    hasher: Arc<RowHasher>,
    counts: Arc<DiffCounts>,
    control: Arc<RunControl>,
) -> Stream<'s, u64, Vec<ChangeSet>> {
    flat_map_named(stream, "StreamChanges", move |b: ArrowBatch| {
        split_changes(&b.batch, &hasher, &counts).unwrap_or_else(|reason| {
            control.fail(reason);
            Vec::new()
        })
    })
}

/// A stateless operator named `name`: every input becomes the outputs `logic` returns for it
/// (timely's `flat_map`, under a name of its own in the dataflow's logs).
fn flat_map_named<'s, I, R>(
    stream: Stream<'s, u64, Vec<I>>,
    name: &str,
    mut logic: impl FnMut(I) -> R + 'static,
) -> Stream<'s, u64, Vec<R::Item>>
where
    I: 'static,
    R: IntoIterator,
    R::Item: 'static,
{
    stream.unary(Pipeline, name, move |_cap, _info| {
        move |input, output| {
            input.for_each(|cap, data| {
                output
                    .session(&cap)
                    .give_iterator(data.drain(..).flat_map(&mut logic));
            });
        }
    })
}

/// One change-stream batch as change sets (every row lands in exactly one set).
pub fn split_changes(
    batch: &RecordBatch,
    hasher: &RowHasher,
    counts: &DiffCounts,
) -> Result<Vec<ChangeSet>, String> {
    use arrow::array::{Array, AsArray};
    let n = batch.num_columns();
    let ops = match batch.schema().fields().last() {
        Some(f) if f.name() == OP_COLUMN => batch.column(n - 1).as_string_opt::<i32>(),
        _ => None,
    }
    .ok_or_else(|| format!("a change batch lacks its `{OP_COLUMN}` column"))?;
    let rows = batch
        .project(&(0..n - 1).collect::<Vec<_>>())
        .map_err(|e| e.to_string())?;
    let keys = hasher.key_texts(&rows);
    let mut mask = Vec::with_capacity(rows.num_rows());
    let (mut changes, mut row_keys, mut rejects, mut deletes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (row, key) in keys.into_iter().enumerate() {
        let op = match ops.is_valid(row).then(|| ops.value(row)) {
            Some("insert") => ChangeOp::Insert,
            Some("update") => ChangeOp::Update,
            Some("delete" | OP_DELETE_OF_NEW) => ChangeOp::Delete,
            other => return Err(format!("unknown change `{other:?}` in a change batch")),
        };
        mask.push(false);
        if key.is_empty() {
            rejects.push(Reject {
                key: crate::columns::row_json(&rows, row),
                insert_id: None,
                reason: format!(
                    "a primary key column ({}) is NULL",
                    hasher.key_names().join(", ")
                ),
            });
            continue;
        }
        let counter = match op {
            ChangeOp::Insert => &counts.inserts,
            ChangeOp::Update => &counts.updates,
            ChangeOp::Delete => &counts.deletes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if op == ChangeOp::Delete {
            deletes.push(key);
            continue;
        }
        mask[row] = true;
        changes.push(RowChange {
            op,
            identity_changed: false,
        });
        row_keys.push(key);
    }
    counts
        .rows
        .fetch_add(changes.len() as u64, Ordering::Relaxed);
    let mut out = Vec::new();
    if !changes.is_empty() || !rejects.is_empty() {
        let picked =
            filter_record_batch(&rows, &BooleanArray::from(mask)).map_err(|e| e.to_string())?;
        out.push(ChangeSet::Rows {
            batch: picked,
            changes,
            keys: row_keys,
            rejects,
        });
    }
    if !deletes.is_empty() {
        out.push(ChangeSet::Deletes(deletes));
    }
    Ok(out)
}

/// The rows of `batch` to emit, with their changes; rows without a key become rejects.
fn pick_rows(
    batch: &RecordBatch,
    spec: &DiffSpec,
    changed: &KeyMap<RowChange>,
    first: bool,
) -> Option<ChangeSet> {
    let hashes = spec.hasher.key_hashes(batch);
    let mut rejects = Vec::new();
    let mut changes = Vec::new();
    let mask: BooleanArray = hashes
        .iter()
        .enumerate()
        .map(|(row, h)| {
            let Some(h) = h else {
                rejects.push(Reject {
                    key: crate::columns::row_json(batch, row),
                    insert_id: None,
                    reason: format!(
                        "a primary key column ({}) is NULL",
                        spec.hasher.key_names().join(", ")
                    ),
                });
                return Some(false);
            };
            let change = match (changed.get(h), spec.emit) {
                _ if first => RowChange {
                    op: ChangeOp::Insert,
                    identity_changed: false,
                },
                (Some(c), _) => *c,
                (None, Emit::Changes) => return Some(false),
                (None, _) => RowChange {
                    op: ChangeOp::Update,
                    identity_changed: false,
                },
            };
            changes.push(change);
            Some(true)
        })
        .collect();
    if changes.is_empty() && rejects.is_empty() {
        return None;
    }
    let picked = match filter_record_batch(batch, &mask) {
        Ok(b) => b,
        Err(e) => {
            // Cannot happen for a mask of the batch's length; reject rather than lose rows.
            rejects.extend((0..changes.len()).map(|_| Reject {
                key: "null".into(),
                insert_id: None,
                reason: format!("cannot select changed rows: {e}"),
            }));
            return Some(ChangeSet::Rows {
                batch: batch.slice(0, 0),
                changes: Vec::new(),
                keys: Vec::new(),
                rejects,
            });
        }
    };
    let keys = spec.hasher.key_texts(&picked);
    Some(ChangeSet::Rows {
        batch: picked,
        changes,
        keys,
        rejects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn change_batches_split_into_rows_deletes_and_rejects() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
            Field::new(OP_COLUMN, DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), Some(2), Some(3), None])),
            Arc::new(StringArray::from(vec![
                Some("a"),
                None,
                Some("c"),
                Some("x"),
            ])),
            Arc::new(StringArray::from(vec![
                "insert", "delete", "update", "insert",
            ])),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let data = Schema::new(schema.fields()[..2].to_vec());
        let hasher = RowHasher::new(&data, &["id".to_string()], &[], &[]).unwrap();
        let counts = DiffCounts::default();
        let sets = split_changes(&batch, &hasher, &counts).unwrap();
        assert_eq!(sets.len(), 2);
        let ChangeSet::Rows {
            batch,
            changes,
            keys,
            rejects,
        } = &sets[0]
        else {
            panic!("rows first")
        };
        assert_eq!(batch.num_columns(), 2, "the op column is dropped");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(
            changes.iter().map(|c| c.op).collect::<Vec<_>>(),
            vec![ChangeOp::Insert, ChangeOp::Update]
        );
        assert_eq!(keys, &vec!["1".to_string(), "3".to_string()]);
        assert_eq!(rejects.len(), 1, "a NULL key is rejected");
        assert!(matches!(&sets[1], ChangeSet::Deletes(k) if k == &vec!["2".to_string()]));
        assert_eq!(counts.inserts.load(Ordering::Relaxed), 1);
        assert_eq!(counts.updates.load(Ordering::Relaxed), 1);
        assert_eq!(counts.deletes.load(Ordering::Relaxed), 1);
        let no_op = batch.project(&[0, 1]).unwrap();
        assert!(split_changes(&no_op, &hasher, &counts).is_err());
    }
}
