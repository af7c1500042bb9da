//! Change-stream epochs consolidated per key, against an arrangement the dataflow holds.
//!
//! A long-lived dataflow of a change-stream sync keeps, per worker, a differential-dataflow
//! trace (a `Spine` of [`PairBatch`]es, key hash → fingerprint) of what it has sent for the keys
//! of its range. Each epoch's change rows are routed to the worker owning their key; once the
//! epoch is complete there, it is consolidated per key:
//! - only a key's last change of the epoch counts (the source's order);
//! - for a key whose last change is an insert or update, the epoch's `(key, fingerprint)` at
//!   +1 and the held one at −1 are merged by differential's batch merger
//!   ([`arranged::deltas`]): a fingerprint equal to the one sent before cancels, and the change
//!   is dropped;
//! - a delete is sent, except of a key inserted and deleted within the epoch
//!   ([`OP_DELETE_OF_NEW`]) that the dataflow does not hold, in an epoch known to replay
//!   nothing ([`ReplayFree`]): such a key was never in the destination. An epoch may replay
//!   changes that a run which did not commit delivered (a slot is advanced only on commit), so
//!   the insert may be there; then the delete is sent (deleting a key the destination lacks
//!   is harmless).
//!
//! The consolidated delta is then inserted into the trace at the epoch's time, and the trace
//! compacted to the next epoch, so differential's spine merges it into the held state.
//! A key the held state does not hold is sent as the source says. An epoch that fails spends
//! the dataflow, and the trace with it. With a [`HeldStore`] the trace outlives the dataflow:
//! each epoch's delta is logged before its rows are sent, and a new dataflow starts from the
//! store's pairs (see [`super::held_store`]: the keys of an epoch that did not commit are
//! dropped, so the held state never claims what the destination may lack). Without one it
//! starts empty.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{filter_record_batch, take_record_batch};
use differential_dataflow::trace::implementations::spine_fueled::Spine;
use differential_dataflow::trace::{Cursor, Description, Navigable, Span, Trace, TraceReader};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;
use timely::progress::Antichain;

use super::arranged::{self, PairBatch};
use super::held_store::{HeldStore, HeldWriter};
use super::{OP_COLUMN, OP_DELETE_OF_NEW};
use crate::dataflow::{ArrowBatch, RunControl};
use crate::snapshot::{owner, RowHasher};

/// Which epoch, if any, is known to replay nothing: no run delivered anything past the source
/// position it starts from (the last run before it committed). Set by the dataflow's owner
/// before the epoch's rows are read; epochs run one at a time.
#[derive(Clone, Default)]
pub struct ReplayFree(Arc<AtomicU64>);

impl ReplayFree {
    /// Says whether `epoch` (the next to run) replays nothing.
    pub fn set(&self, epoch: u64, replay_free: bool) {
        self.0
            .store(if replay_free { epoch } else { 0 }, Ordering::Release);
    }

    fn holds(&self, epoch: u64) -> bool {
        epoch != 0 && self.0.load(Ordering::Acquire) == epoch
    }
}

/// Consolidates the change batches of each epoch per key (see the module's text); batches keep
/// their columns, [`OP_COLUMN`] last.
pub fn consolidate_changes<'s>(
    stream: Stream<'s, u64, Vec<ArrowBatch>>,
    hasher: Arc<RowHasher>,
    replay_free: ReplayFree,
    store: Option<Arc<HeldStore>>,
    control: Arc<RunControl>,
) -> Stream<'s, u64, Vec<ArrowBatch>> {
    let peers = stream.scope().peers();
    let worker = stream.scope().index();
    let routed = {
        let (hasher, control) = (hasher.clone(), control.clone());
        stream.unary::<CapacityContainerBuilder<Vec<ArrowBatch>>, _, _, _>(
            Pipeline,
            "RouteChangesByKey",
            move |_cap, _info| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut session = output.session(&cap);
                        for b in data.drain(..) {
                            match split_by_owner(&b.batch, &hasher, peers) {
                                Ok(parts) => session.give_iterator(parts.into_iter()),
                                Err(e) => control.fail(e),
                            }
                        }
                    });
                }
            },
        )
    };
    routed.unary_frontier::<CapacityContainerBuilder<Vec<ArrowBatch>>, _, _, _>(
        Exchange::new(|b: &ArrowBatch| b.seq),
        "ConsolidateChanges",
        move |_cap, info| {
            let mut held: Spine<Rc<PairBatch>> = Spine::new(info, None, None);
            let mut log = store.map(|store| HeldLog {
                store,
                worker,
                writer: None,
            });
            if let Some(log) = &log {
                match log.store.initial(worker, peers) {
                    Ok(pairs) => import(&mut held, &pairs),
                    // Going on without it could hold what a destination lacks later.
                    Err(e) => control.fail(e),
                }
            }
            let mut epochs: BTreeMap<u64, (Capability<u64>, Vec<RecordBatch>)> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    // Messages under no capability make no claim; they cannot be placed.
                    let Some(held) = cap.retain_least(0) else {
                        control.fail("change rows arrived without an epoch");
                        return;
                    };
                    let entry = epochs
                        .entry(*held.time())
                        .or_insert_with(|| (held, Vec::new()));
                    for b in data.drain(..) {
                        // Held rows no longer hold the source back (the epoch must be read
                        // whole before it is consolidated); what is sent is admitted again.
                        control.settle(b.batch.num_rows());
                        entry.1.push(b.batch);
                    }
                });
                while let Some(epoch) = epochs.keys().next().copied() {
                    if frontier.less_equal(&epoch) {
                        break;
                    }
                    let Some((cap, batches)) = epochs.remove(&epoch) else {
                        break;
                    };
                    let replay_free = replay_free.holds(epoch);
                    let logged = log.as_mut();
                    match consolidate_epoch(epoch, batches, &hasher, replay_free, &mut held, logged)
                    {
                        Ok(kept) => {
                            control.admit(kept.iter().map(RecordBatch::num_rows).sum());
                            let mut session = output.session(&cap);
                            session.give_iterator(
                                kept.into_iter()
                                    .map(|batch| ArrowBatch { seq: epoch, batch }),
                            );
                        }
                        Err(e) => control.fail(e),
                    }
                }
            }
        },
    )
}

/// A worker's end of the [`HeldStore`]: its log, opened at its first delta.
struct HeldLog {
    store: Arc<HeldStore>,
    worker: usize,
    writer: Option<HeldWriter>,
}

impl HeldLog {
    /// Logs `epoch`'s delta (durably, before any of its rows is sent).
    fn append(&mut self, epoch: u64, delta: &PairBatch) -> Result<(), String> {
        let mut entries = Vec::new();
        arranged::for_each_key(delta, &mut |kd| {
            if let Some(fp) = kd.before {
                entries.push((kd.key, fp, -1));
            }
            if let Some(fp) = kd.now {
                entries.push((kd.key, fp, 1));
            }
        });
        let writer = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(self.store.writer(self.worker)?),
        };
        writer.append(epoch, &entries)
    }
}

/// The store's pairs into the empty trace `held`, at time 0; the trace compacts to 1.
fn import(held: &mut Spine<Rc<PairBatch>>, pairs: &[(u128, u128)]) {
    let upper = Antichain::from_elem(1);
    let desc = Description::new(
        Antichain::from_elem(0),
        upper.clone(),
        Antichain::from_elem(0),
    );
    held.insert(Span::new(desc, arranged::build(pairs, 0, 1).map(Rc::new)));
    held.set_logical_compaction(upper.borrow());
    held.set_physical_compaction(upper.borrow());
}

/// The rows of `batch` per worker owning their key (rows without a key go to worker 0, which
/// rejects them later), each part tagged with its worker in `seq`; order is kept.
fn split_by_owner(
    batch: &RecordBatch,
    hasher: &RowHasher,
    peers: usize,
) -> Result<Vec<ArrowBatch>, String> {
    if peers == 1 {
        return Ok(vec![ArrowBatch {
            seq: 0,
            batch: batch.clone(),
        }]);
    }
    let rows = data_columns(batch)?;
    let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); peers];
    for (row, key) in hasher.key_hashes(&rows).into_iter().enumerate() {
        rows_of[key.map(|k| owner(k, peers)).unwrap_or(0)].push(row as u32);
    }
    rows_of
        .into_iter()
        .enumerate()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(worker, rows)| {
            take_record_batch(batch, &UInt32Array::from(rows))
                .map(|batch| ArrowBatch {
                    seq: worker as u64,
                    batch,
                })
                .map_err(|e| format!("cannot route change rows: {e}"))
        })
        .collect()
}

/// A change batch without its [`OP_COLUMN`].
fn data_columns(batch: &RecordBatch) -> Result<RecordBatch, String> {
    let n = batch.num_columns();
    match batch.schema().fields().last() {
        Some(f) if f.name() == OP_COLUMN => batch
            .project(&(0..n - 1).collect::<Vec<_>>())
            .map_err(|e| e.to_string()),
        _ => Err(format!("a change batch lacks its `{OP_COLUMN}` column")),
    }
}

/// One key's change; once consolidated, its last change within the epoch.
struct KeyChanges {
    key: u128,
    /// Where its last change is: (batch, row).
    last: (usize, usize),
    /// Its last change is a delete.
    deleted_last: bool,
    /// ... of a key inserted within the source's window ([`OP_DELETE_OF_NEW`]).
    new_key: bool,
    /// The fingerprint of its last change (not of a delete).
    fp: u128,
}

/// Consolidates one epoch's change batches against `held`, inserts the epoch's delta into it,
/// and returns the batches of the rows to send.
fn consolidate_epoch(
    epoch: u64,
    batches: Vec<RecordBatch>,
    hasher: &RowHasher,
    replay_free: bool,
    held: &mut Spine<Rc<PairBatch>>,
    log: Option<&mut HeldLog>,
) -> Result<Vec<RecordBatch>, String> {
    // Every keyed change, numbered in the source's order.
    let mut changes: Vec<(usize, KeyChanges)> = Vec::new();
    let mut keep: Vec<Vec<bool>> = Vec::with_capacity(batches.len());
    let mut seq = 0usize;
    for (b, batch) in batches.iter().enumerate() {
        let ops = batch
            .column(batch.num_columns() - 1)
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("a change batch lacks its `{OP_COLUMN}` column"))?;
        let hashed = hasher.hash_batch(&data_columns(batch)?);
        let mut mask = vec![false; batch.num_rows()];
        for (row, id) in hashed.ids.iter().enumerate() {
            let Some(id) = id else {
                // No key: rejected downstream, with its reason.
                mask[row] = true;
                continue;
            };
            let op = ops.is_valid(row).then(|| ops.value(row));
            let change = KeyChanges {
                key: id.key,
                last: (b, row),
                deleted_last: matches!(op, Some("delete" | OP_DELETE_OF_NEW)),
                new_key: op == Some(OP_DELETE_OF_NEW),
                fp: id.fp,
            };
            changes.push((seq, change));
            seq += 1;
        }
        keep.push(mask);
    }
    changes.sort_unstable_by_key(|(seq, c)| (c.key, *seq));
    let mut keys: Vec<KeyChanges> = Vec::new();
    for (_, change) in changes.drain(..) {
        match keys.last_mut() {
            // A later change of the same key replaces the earlier.
            Some(k) if k.key == change.key => *k = change,
            _ => keys.push(change),
        }
    }
    drop(changes);

    // The held fingerprints of the touched keys, and the epoch's.
    let before = held_fingerprints(held, epoch, &keys);
    let now: Vec<(u128, u128)> = keys
        .iter()
        .filter(|k| !k.deleted_last)
        .map(|k| (k.key, k.fp))
        .collect();
    let before = arranged::build(&before, epoch, -1);
    let now = arranged::build(&now, epoch, 1);
    let delta = arranged::delta_batch(before, now, epoch);

    // Which last changes are sent: an insert or update only if the delta holds its key; a
    // delete unless its key was new in the window, the dataflow never sent it (the delta does
    // not hold it) and the epoch replays nothing.
    let mut changed = Vec::new();
    if let Some(d) = &delta {
        arranged::for_each_key(d, &mut |kd| changed.push(kd.key));
    }
    let mut changed = changed.into_iter().peekable();
    for k in &keys {
        while changed.next_if(|c| *c < k.key).is_some() {}
        let in_delta = changed.next_if(|c| *c == k.key).is_some();
        let never_there = k.new_key && replay_free && !in_delta;
        if (k.deleted_last && !never_there) || in_delta {
            keep[k.last.0][k.last.1] = true;
        }
    }

    if let (Some(log), Some(d)) = (log, &delta) {
        log.append(epoch, d)?;
    }

    // The epoch's delta into the held trace, which compacts to the next epoch.
    let mut lower = Antichain::new();
    held.read_upper(&mut lower);
    let next = Antichain::from_elem(epoch + 1);
    let desc = Description::new(lower, next.clone(), Antichain::from_elem(0));
    held.insert(Span::new(desc, delta.map(Rc::new)));
    held.set_logical_compaction(next.borrow());
    held.set_physical_compaction(next.borrow());

    let mut out = Vec::with_capacity(batches.len());
    for (batch, mask) in batches.iter().zip(keep) {
        let kept = mask.iter().filter(|k| **k).count();
        if kept == mask.len() {
            out.push(batch.clone());
        } else if kept > 0 {
            out.push(
                filter_record_batch(batch, &BooleanArray::from(mask))
                    .map_err(|e| format!("cannot select change rows: {e}"))?,
            );
        }
    }
    Ok(out)
}

/// The fingerprints `held` holds (accumulated diff above 0) for `keys` (sorted), in key order.
fn held_fingerprints(
    held: &mut Spine<Rc<PairBatch>>,
    epoch: u64,
    keys: &[KeyChanges],
) -> Vec<(u128, u128)> {
    let upper = Antichain::from_elem(epoch);
    let mut found: Vec<((u128, u128), i64)> = Vec::new();
    for batch in held.batches_through(upper.borrow()).unwrap_or_default() {
        let batch: &PairBatch = &batch;
        let mut cursor = batch.cursor();
        for k in keys {
            cursor.seek_key(batch, &k.key);
            if cursor.get_key(batch) != Some(&k.key) {
                continue;
            }
            while let Some(fp) = cursor.get_val(batch) {
                let mut sum = 0i64;
                cursor.map_times(batch, |_, d| sum += *d);
                found.push(((k.key, *fp), sum));
                cursor.step_val(batch);
            }
        }
    }
    differential_dataflow::consolidation::consolidate(&mut found);
    found
        .into_iter()
        .filter(|(_, sum)| *sum > 0)
        .map(|(pair, _)| pair)
        .collect()
}
