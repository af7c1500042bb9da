//! A key range's state as differential-dataflow batches, and a run's deltas by differential's
//! own merge.
//!
//! A worker's `(key hash, fingerprint)` pairs of one bucket of the key space (see
//! [`super::classify::Buckets`]) become a differential `OrdValBatch` (key hash → fingerprint),
//! built straight from pairs that are already sorted — the new snapshot's sorted bucket, or the
//! committed state's sorted part file — never pushed through the merge batcher, which would
//! sort them again (see [`build`]). The committed pairs enter at time
//! [`BEFORE`] with diff −1, the snapshot's at [`NOW`] with diff +1; differential's batch merger,
//! compacting to `{NOW}`, adds the two: every pair in both cancels, and what is left is
//! `S(now) − S(before)` consolidated per key — only +1: inserted; +1 and −1 (two
//! fingerprints): updated; only −1: deleted. A key whose fingerprint is unchanged leaves
//! nothing, so only the changed keys reach the classification.

use differential_dataflow::trace::implementations::ord_neu::val_batch::OrdValStorage;
use differential_dataflow::trace::implementations::ord_neu::{
    OrdValBatch, Upds, Vals, VecOrdValBuilder,
};
use differential_dataflow::trace::implementations::spine_fueled::{Merger, SpineBatch};
use differential_dataflow::trace::implementations::{OffsetList, Vector};
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
/// there are none.
///
/// A state has one fingerprint per key, so its batch is one value and one `(time, diff)` per
/// key — differential's layout can then be written column by column (the keys, the
/// fingerprints, offsets 1, 2, 3… and the singleton-update encoding), about 6× faster than
/// pushing the pairs one by one through its `Builder`, which handles any input and is used
/// when keys repeat.
pub(super) fn build(pairs: &[(u128, u128)], time: u64, diff: i64) -> Option<PairBatch> {
    let n = pairs.len();
    if n == 0 {
        return None;
    }
    let distinct = pairs.windows(2).all(|w| w[0].0 < w[1].0);
    let Ok(len) = u32::try_from(n) else {
        return build_with_builder(pairs, time, diff);
    };
    if !distinct {
        return build_with_builder(pairs, time, diff);
    }
    let mut vals: Vals<OffsetList, Vec<u128>> = Vals {
        offs: OffsetList {
            zero_prefix: 1,
            smol: (1..=len).collect(),
            chonk: Vec::new(),
        },
        vals: Vec::with_capacity(n),
    };
    vals.vals.extend(pairs.iter().map(|p| p.1));
    // Offsets of each value's updates: the first holds the one stored `(time, diff)`, every
    // later one an empty range, which means "the same single update as before".
    let upds: Upds<OffsetList, Vec<u64>, Vec<i64>> = Upds {
        offs: OffsetList {
            zero_prefix: 1,
            smol: vec![1; n],
            chonk: Vec::new(),
        },
        times: vec![time],
        diffs: vec![diff],
    };
    let keys: Vec<u128> = pairs.iter().map(|p| p.0).collect();
    Some(PairBatch {
        storage: OrdValStorage { keys, vals, upds },
        updates: n,
    })
}

/// [`build`] through differential's `Builder`, for any sorted pairs.
fn build_with_builder(pairs: &[(u128, u128)], time: u64, diff: i64) -> Option<PairBatch> {
    let mut builder = PairBuilder::with_capacity(pairs.len(), pairs.len(), pairs.len());
    let mut chunk = Vec::with_capacity(CHUNK.min(pairs.len()));
    for part in pairs.chunks(CHUNK) {
        chunk.extend(part.iter().map(|&pair| (pair, time, diff)));
        builder.push(&mut chunk);
        chunk.clear();
    }
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
        let b = build(before, BEFORE, -1);
        let n = build(now, NOW, 1);
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

    #[test]
    fn the_column_wise_batch_is_the_builders() {
        let pairs: Vec<(u128, u128)> = (0..5000u128).map(|i| (i * 7, i ^ 0x55)).collect();
        let (a, b) = (
            build(&pairs, NOW, 1).unwrap(),
            build_with_builder(&pairs, NOW, 1).unwrap(),
        );
        let read = |batch: &PairBatch| {
            let mut out = Vec::new();
            let mut c = batch.cursor();
            while let Some(k) = c.get_key(batch).copied() {
                while let Some(v) = c.get_val(batch).copied() {
                    c.map_times(batch, |t, d| out.push((k, v, *t, *d)));
                    c.step_val(batch);
                }
                c.step_key(batch);
            }
            out
        };
        assert_eq!(read(&a), read(&b));
        assert_eq!(read(&a).len(), 5000);
        assert_eq!(a.updates, b.updates);
        // Repeated keys (not a state) go through the builder.
        let repeated = [(1, 1), (1, 2), (2, 2)];
        assert_eq!(read(&build(&repeated, NOW, 1).unwrap()).len(), 3);
    }
}
