//! Classification: a worker's key range of the new snapshot, sorted, merged with the same range
//! of the committed state (and of pending parts of runs that did not commit) into inserts,
//! updates, deletes and duplicates.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::arranged;
use super::stash::Stash;
use super::{DiffCounts, DiffSpec};
use crate::change::{ChangeOp, RowChange};
use crate::snapshot::{
    identity_changed, key_texts_of, sorted_part_name, KeySet, PendingSnapshot, PreviousRange,
    RowHasher, SortedPartWriter,
};

/// What the classification sends to the workers holding the rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Verdict {
    Changed(u128, RowChange),
    /// The key appears more than once in the snapshot.
    Duplicate(u128),
    /// A deleted key's text (not broadcast).
    Deleted(String),
}

/// Key texts of stashed rows whose key hash is in `dups` (for the error message).
pub(super) fn duplicate_examples(
    stash: &mut Stash,
    hasher: &RowHasher,
    dups: &KeySet,
) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(mut it) = stash.drain() else {
        return out;
    };
    while let Some(Ok(batch)) = it.next_batch() {
        let hashes = hasher.key_hashes(&batch);
        let texts = hasher.key_texts(&batch);
        for (h, t) in hashes.iter().zip(texts) {
            if h.is_some_and(|h| dups.contains(&h)) && !out.contains(&t) {
                out.push(t);
                if out.len() >= 5 {
                    return out;
                }
            }
        }
    }
    out
}

/// Bits of the key hash that pick a [`Buckets`] bucket.
pub(super) const BUCKET_BITS: u32 = 12;

/// The [`Buckets`] bucket of a key hash.
fn bucket_of(key: u128) -> usize {
    (key >> (128 - BUCKET_BITS)) as usize
}

/// A worker's `(key hash, fingerprint)` pairs, put into buckets by the key hash's top bits as
/// they arrive: the buckets are in key order, and each is small enough (≈ rows / 4096) to sort
/// in cache — about twice as fast as sorting one vector of them all.
#[derive(Default)]
pub(super) struct Buckets(Vec<Vec<(u128, u128)>>, usize);

impl Buckets {
    /// Buckets for about `pairs` pairs in all the workers' ranges (the committed snapshot's
    /// size: a run's table is usually about as large). Each bucket is made that large when
    /// its first pair comes, so that it is not copied as it grows (with 10M rows, copies of
    /// growing buckets were ~12% of a snapshot diff's CPU).
    pub(super) fn expecting(pairs: u64) -> Self {
        let per_bucket = pairs >> BUCKET_BITS;
        Buckets(Vec::new(), (per_bucket + per_bucket / 16) as usize)
    }

    pub(super) fn push(&mut self, pair: (u128, u128)) {
        if self.0.is_empty() {
            self.0.resize_with(1 << BUCKET_BITS, Vec::new);
        }
        let bucket = &mut self.0[bucket_of(pair.0)];
        if bucket.capacity() == 0 {
            bucket.reserve(self.1);
        }
        bucket.push(pair);
    }

    /// Sorts each bucket; iterating the result's buckets in turn gives the pairs in key order.
    pub(super) fn sort(mut self) -> Vec<Vec<(u128, u128)>> {
        for b in &mut self.0 {
            b.sort_unstable_by_key(|p| p.0);
        }
        self.0
    }
}

/// Classifies key range `index` of `peers`: sorts `pairs` (this run's rows in the range) by
/// key, reports duplicate keys (then stops: the run fails), else takes the differential delta of
/// each bucket against the previous snapshot's range ([`arranged::deltas`]) — a key only now
/// is an insert, in both with another fingerprint an update, only before a delete — and writes
/// the range's new sorted part as it goes.
pub(super) fn classify(
    pairs: Buckets,
    spec: &DiffSpec,
    index: usize,
    peers: usize,
    counts: &DiffCounts,
    out: &mut dyn FnMut(Verdict),
) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    let pairs = pairs.sort();
    let sorted = t0.elapsed();
    let mut dups: Vec<u128> = Vec::new();
    let mut last = None;
    for &(k, _) in pairs.iter().flatten() {
        if last == Some(k) && dups.len() < 10 && dups.last() != Some(&k) {
            dups.push(k);
            out(Verdict::Duplicate(k));
        }
        last = Some(k);
    }
    if !dups.is_empty() {
        return Ok(());
    }
    let state = |e: std::io::Error| format!("cannot write snapshot state: {e}");
    let path = spec.next_dir.join(sorted_part_name(index, peers));
    let mut writer =
        SortedPartWriter::create(&path, spec.hasher.fingerprint_version()).map_err(state)?;
    let previous = unreadable_state;
    if spec.is_first() {
        // Every row is an insert; the rows are emitted without a per-key verdict.
        let mut n = 0u64;
        for &(k, fp) in pairs.iter().flatten() {
            writer.push(k, fp).map_err(state)?;
            n += 1;
        }
        counts.inserts.fetch_add(n, Ordering::Relaxed);
    } else if !spec.pending.is_empty() {
        let deleted = merge_with_pending(&pairs, spec, index, peers, counts, &mut writer, out)?;
        send_deletes(spec, &deleted, out)?;
    } else {
        let mut prev = PreviousRange::open(&spec.previous, index, peers).map_err(previous)?;
        let mut head = prev.next_pair().map_err(previous)?;
        let (mut ins, mut upd) = (0u64, 0u64);
        let mut deleted = KeySet::default();
        let mut committed: Vec<(u128, u128)> = Vec::new();
        for bucket in 0..1usize << BUCKET_BITS {
            let now = pairs.get(bucket).map(Vec::as_slice).unwrap_or_default();
            for &(k, fp) in now {
                writer.push(k, fp).map_err(state)?;
            }
            // The committed pairs of the bucket, read in order from the sorted part.
            committed.clear();
            while let Some(pair) = head.filter(|p| bucket_of(p.0) == bucket) {
                committed.push(pair);
                head = prev.next_pair().map_err(previous)?;
            }
            let before = arranged::build(&committed, arranged::BEFORE, -1);
            let now = arranged::build(now, arranged::NOW, 1);
            arranged::deltas(before, now, &mut |d| {
                let change = match (d.before, d.now) {
                    (Some(ofp), Some(fp)) => {
                        upd += 1;
                        RowChange {
                            op: ChangeOp::Update,
                            identity_changed: identity_changed(ofp, fp),
                        }
                    }
                    (None, Some(_)) => {
                        ins += 1;
                        RowChange {
                            op: ChangeOp::Insert,
                            identity_changed: false,
                        }
                    }
                    _ => {
                        deleted.insert(d.key);
                        return;
                    }
                };
                out(Verdict::Changed(d.key, change));
            });
        }
        counts.inserts.fetch_add(ins, Ordering::Relaxed);
        counts.updates.fetch_add(upd, Ordering::Relaxed);
        counts
            .deletes
            .fetch_add(deleted.len() as u64, Ordering::Relaxed);
        send_deletes(spec, &deleted, out)?;
    }
    let path = writer.finish().map_err(state)?;
    tracing::debug!(
        range = index,
        rows = pairs.iter().map(Vec::len).sum::<usize>(),
        ?sorted,
        total = ?t0.elapsed(),
        "snapshot range classified"
    );
    if let Ok(mut parts) = counts.parts.lock() {
        parts.push(path);
    }
    Ok(())
}

/// Why a run stops when a snapshot state file cannot be read, and the way out.
pub(super) fn unreadable_state(e: impl std::fmt::Display) -> String {
    format!(
        "cannot read the last snapshot's state: {e}; `wharf reset` the sync to start it over \
         (its next run resends every row)"
    )
}

/// Deleted keys' texts (from the committed and pending snapshots' key-text parts) out as
/// verdicts, when deletes are sent.
pub(super) fn send_deletes(
    spec: &DiffSpec,
    deleted: &KeySet,
    out: &mut dyn FnMut(Verdict),
) -> Result<(), String> {
    if deleted.is_empty() || !spec.send_deletes {
        return Ok(());
    }
    let texts = key_texts_of(&spec.key_text_sources(), deleted).map_err(unreadable_state)?;
    for t in texts {
        out(Verdict::Deleted(t));
    }
    Ok(())
}

/// One state a key may have in the destination: the committed snapshot's range, or a pending
/// snapshot's (which says nothing about keys outside the ranges it completed).
pub(super) struct Baseline<'a> {
    range: PreviousRange,
    head: Option<(u128, u128)>,
    pending: Option<&'a PendingSnapshot>,
}

impl Baseline<'_> {
    /// This baseline's fingerprint of `key` (`Some(None)`: absent from it; `None`: it says
    /// nothing), after skipping its keys below `key` into `deleted`.
    pub(super) fn at(
        &mut self,
        key: u128,
        deleted: &mut KeySet,
    ) -> std::io::Result<Option<Option<u128>>> {
        while let Some((k, _)) = self.head.filter(|h| h.0 < key) {
            deleted.insert(k);
            self.head = self.range.next_pair()?;
        }
        match self.head {
            Some((k, fp)) if k == key => {
                self.head = self.range.next_pair()?;
                Ok(Some(Some(fp)))
            }
            _ if self.pending.is_some_and(|p| !p.covers(key)) => Ok(None),
            _ => Ok(Some(None)),
        }
    }
}

/// The merge of [`classify`] when runs after the committed snapshot did not commit: a key is
/// unchanged only if the committed snapshot and every pending snapshot that covers it hold
/// its current fingerprint; otherwise it is sent — an insert if the committed snapshot lacks
/// it, else an update; a key that any of them holds and the table no longer does is deleted. So whatever an
/// uncommitted run may have sent is corrected (or deleted) by this run. Returns the deleted
/// keys (counted here).
pub(super) fn merge_with_pending(
    pairs: &[Vec<(u128, u128)>],
    spec: &DiffSpec,
    index: usize,
    peers: usize,
    counts: &DiffCounts,
    writer: &mut SortedPartWriter,
    out: &mut dyn FnMut(Verdict),
) -> Result<KeySet, String> {
    let previous = unreadable_state;
    let state = |e: std::io::Error| format!("cannot write snapshot state: {e}");
    let mut baselines = Vec::with_capacity(1 + spec.pending.len());
    let committed = std::iter::once((&spec.previous, None));
    let pending = spec.pending.iter().map(|p| (&p.parts, Some(p)));
    for (parts, pending) in committed.chain(pending) {
        let mut range = PreviousRange::open(parts, index, peers).map_err(previous)?;
        let head = range.next_pair().map_err(previous)?;
        baselines.push(Baseline {
            range,
            head,
            pending,
        });
    }
    let (mut ins, mut upd) = (0u64, 0u64);
    let mut deleted = KeySet::default();
    let mut states: Vec<u128> = Vec::with_capacity(baselines.len());
    for &(k, fp) in pairs.iter().flatten() {
        writer.push(k, fp).map_err(state)?;
        states.clear();
        let mut absent = 0;
        let mut committed = false;
        for (i, b) in baselines.iter_mut().enumerate() {
            match b.at(k, &mut deleted).map_err(previous)? {
                Some(Some(old)) => {
                    committed |= i == 0;
                    states.push(old);
                }
                Some(None) => absent += 1,
                None => {}
            }
        }
        if absent == 0 && states.iter().all(|&old| old == fp) {
            continue;
        }
        // New to the committed state: an insert (a pending run may have sent it already,
        // which the destination takes as the same upsert); else an update.
        let change = if committed {
            upd += 1;
            RowChange {
                op: ChangeOp::Update,
                identity_changed: states.iter().any(|&old| identity_changed(old, fp)),
            }
        } else {
            ins += 1;
            RowChange {
                op: ChangeOp::Insert,
                identity_changed: false,
            }
        };
        out(Verdict::Changed(k, change));
    }
    for b in &mut baselines {
        while let Some((k, _)) = b.head {
            deleted.insert(k);
            b.head = b.range.next_pair().map_err(previous)?;
        }
    }
    counts.inserts.fetch_add(ins, Ordering::Relaxed);
    counts.updates.fetch_add(upd, Ordering::Relaxed);
    counts
        .deletes
        .fetch_add(deleted.len() as u64, Ordering::Relaxed);
    Ok(deleted)
}
