//! A key range's state as differential-dataflow batches, and a run's deltas by differential's
//! own merge.
//!
//! A worker's `(key hash, fingerprint)` pairs of one bucket of the key space (see
//! [`super::classify::Buckets`]) become a differential `OrdValBatch` (key hash → fingerprint),
//! built with differential's [`Builder`] straight from pairs that are already sorted — the new
//! snapshot's sorted bucket, or the committed state's sorted part file — never pushed through
//! the merge batcher, which would sort them again. The committed pairs enter at time
//! [`BEFORE`] with diff −1, the snapshot's at [`NOW`] with diff +1; differential's batch merger,
//! compacting to `{NOW}`, adds the two: every pair in both cancels, and what is left is
//! `S(now) − S(before)` consolidated per key — only +1: inserted; +1 and −1 (two
//! fingerprints): updated; only −1: deleted. A key whose fingerprint is unchanged leaves
//! nothing, so only the changed keys reach the classification.

use differential_dataflow::trace::implementations::ord_neu::{OrdValBatch, VecOrdValBuilder};
use differential_dataflow::trace::implementations::spine_fueled::{Merger, SpineBatch};
use differential_dataflow::trace::implementations::Vector;
use differential_dataflow::trace::{Builder, Cursor, Navigable};
use timely::progress::Antichain;

/// One bucket of a key range: key hash → fingerprint, at a time, with a diff.
pub(super) type PairBatch = OrdValBatch<Vector<((u128, u128), u64, i64)>>;
type PairBuilder = VecOrdValBuilder<u128, u128, u64, i64>;

/// Time of the committed state's pairs.
pub(super) const BEFORE: u64 = 0;
/// Time of the snapshot's pairs.
pub(super) const NOW: u64 = 1;

/// Pairs pushed into a builder at a time.
const CHUNK: usize = 1024;

/// The batch of `pairs` (sorted by key, then fingerprint) at `time` with `diff`; `None` when
/// there are none. `len` is a capacity hint.
pub(super) fn build(
    pairs: impl IntoIterator<Item = (u128, u128)>,
    len: usize,
    time: u64,
    diff: i64,
) -> Option<PairBatch> {
    let mut builder = PairBuilder::with_capacity(len, len, 1);
    let mut chunk = Vec::with_capacity(CHUNK.min(len.max(1)));
    for pair in pairs {
        chunk.push((pair, time, diff));
        if chunk.len() == CHUNK {
            builder.push(&mut chunk);
            chunk.clear();
        }
    }
    builder.push(&mut chunk);
    builder.done()
}

/// How one key changed between two states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct KeyDelta {
    pub key: u128,
    /// Its fingerprint before (absent: not in the committed state).
    pub before: Option<u128>,
    /// Its fingerprint now (absent: not in the snapshot).
    pub now: Option<u128>,
}

/// The keys whose fingerprint differs between `before` (at [`BEFORE`], diff −1) and `now` (at
/// [`NOW`], diff +1), in key order: differential's merge of the two batches, compacted to
/// `{NOW}`.
pub(super) fn deltas(
    before: Option<PairBatch>,
    now: Option<PairBatch>,
    out: &mut impl FnMut(KeyDelta),
) {
    if let Some(delta) = delta_batch(before, now, NOW) {
        for_each_key(&delta, out);
    }
}

/// `now + before` (`before` built with diff −1), compacted to `{time}`: pairs in both cancel.
pub(super) fn delta_batch(
    before: Option<PairBatch>,
    now: Option<PairBatch>,
    time: u64,
) -> Option<PairBatch> {
    match (before, now) {
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => Some(one),
        (Some(before), Some(now)) => {
            let since = Antichain::from_elem(time);
            let mut merger = <PairBatch as SpineBatch>::Merger::new(&before, &now, since.borrow());
            let mut fuel = isize::MAX;
            merger.work(&before, &now, &mut fuel);
            merger.done()
        }
    }
}

/// Each key of `batch` with its fingerprints by the sign of their accumulated diffs.
pub(super) fn for_each_key(batch: &PairBatch, out: &mut impl FnMut(KeyDelta)) {
    let mut cursor = batch.cursor();
    while cursor.key_valid(batch) {
        let mut delta = KeyDelta {
            key: *cursor.key(batch),
            before: None,
            now: None,
        };
        while cursor.val_valid(batch) {
            let fp = *cursor.val(batch);
            let mut sum = 0i64;
            cursor.map_times(batch, |_, d| sum += *d);
            match sum.signum() {
                1 => delta.now = Some(fp),
                -1 => delta.before = Some(fp),
                _ => {}
            }
            cursor.step_val(batch);
        }
        if delta.before.is_some() || delta.now.is_some() {
            out(delta);
        }
        cursor.step_key(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(before: &[(u128, u128)], now: &[(u128, u128)]) -> Vec<KeyDelta> {
        let b = build(before.iter().copied(), before.len(), BEFORE, -1);
        let n = build(now.iter().copied(), now.len(), NOW, 1);
        let mut out = Vec::new();
        deltas(b, n, &mut |d| out.push(d));
        out
    }

    #[test]
    fn the_merge_leaves_only_changed_keys() {
        let before = [(1, 10), (2, 20), (4, 40)];
        let now = [(1, 10), (2, 21), (3, 30)];
        assert_eq!(
            run(&before, &now),
            vec![
                KeyDelta {
                    key: 2,
                    before: Some(20),
                    now: Some(21)
                },
                KeyDelta {
                    key: 3,
                    before: None,
                    now: Some(30)
                },
                KeyDelta {
                    key: 4,
                    before: Some(40),
                    now: None
                },
            ]
        );
        assert!(run(&before, &before).is_empty(), "nothing changed");
        assert_eq!(run(&[], &now).len(), 3, "all inserts");
        assert_eq!(run(&before, &[]).len(), 3, "all deletes");
        assert!(run(&[], &[]).is_empty());
    }
}
