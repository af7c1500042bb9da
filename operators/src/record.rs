//! What flows out of the mapping step: encoded records and rejected rows.

use serde::{Deserialize, Serialize};

mod bytes;

pub use bytes::RecordBytes;

/// What happened to a key between two snapshots (or what a record does to its key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChangeOp {
    /// A new key.
    Insert,
    /// A key whose values changed.
    Update,
    /// A key that is gone.
    Delete,
}

impl ChangeOp {
    /// `insert`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Insert => "insert",
            ChangeOp::Update => "update",
            ChangeOp::Delete => "delete",
        }
    }
}

/// Records already encoded as NDJSON: `data` holds the lines back to back (each ending in
/// `\n`), `ends[i]` is the end offset of record `i`. One allocation per batch, and a destination
/// can send a slice of it as an `application/x-ndjson` body without re-encoding.
///
/// Records may carry routing metadata for keyed destinations (Kafka): each record's key as
/// JSON text (the primary key's value, an array for composite keys; an event's `distinct_id`
/// when the table has no key) and its op. Either every record has metadata or none has.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedRecords {
    /// The NDJSON bytes: owned, or a range of a buffer shared with the records these were cut
    /// from ([`cut`](Self::cut)).
    pub data: RecordBytes,
    /// End offset (exclusive, after the newline) of each record.
    pub ends: Vec<u32>,
    /// The records' keys (JSON text) back to back; empty when the records carry none.
    #[serde(default)]
    pub keys: Vec<u8>,
    /// End offset of each record's key in `keys`; empty, or one per record.
    #[serde(default)]
    pub key_ends: Vec<u32>,
    /// Each record's op; empty, or one per record.
    #[serde(default)]
    pub ops: Vec<ChangeOp>,
}

impl EncodedRecords {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Total encoded bytes.
    pub fn byte_len(&self) -> usize {
        self.data.len()
    }

    /// Record `i` without its trailing newline.
    pub fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends[i] as usize;
        &self.data[start..end.saturating_sub(1).max(start)]
    }

    /// Iterates the records (without newlines).
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(move |i| self.record(i))
    }

    /// Whether the records carry keys and ops.
    pub fn is_keyed(&self) -> bool {
        !self.key_ends.is_empty()
    }

    /// Record `i`'s key as JSON text, if it has one.
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        let end = *self.key_ends.get(i)? as usize;
        let start = if i == 0 {
            0
        } else {
            self.key_ends[i - 1] as usize
        };
        (end > start).then(|| &self.keys[start..end])
    }

    /// Record `i`'s op (`insert` when the records carry none).
    pub fn op(&self, i: usize) -> ChangeOp {
        self.ops.get(i).copied().unwrap_or(ChangeOp::Insert)
    }

    /// Appends one record (`line` must not contain a newline) without metadata.
    pub fn push(&mut self, line: &[u8]) {
        let data = self.data.vec_mut();
        data.extend_from_slice(line);
        data.push(b'\n');
        self.ends.push(self.data.len() as u32);
        if self.is_keyed() {
            self.key_ends.push(self.keys.len() as u32);
            self.ops.push(ChangeOp::Insert);
        }
    }

    /// Appends one record with its key (JSON text; empty for none) and op.
    pub fn push_keyed(&mut self, line: &[u8], key: &[u8], op: ChangeOp) {
        // Records pushed without metadata so far get an empty key.
        while self.key_ends.len() < self.ends.len() {
            self.key_ends.push(self.keys.len() as u32);
            self.ops.push(ChangeOp::Insert);
        }
        let data = self.data.vec_mut();
        data.extend_from_slice(line);
        data.push(b'\n');
        self.ends.push(self.data.len() as u32);
        self.keys.extend_from_slice(key);
        self.key_ends.push(self.keys.len() as u32);
        self.ops.push(op);
    }

    /// Appends record `i` of `other`, with its metadata.
    pub fn push_from(&mut self, other: &EncodedRecords, i: usize) {
        if other.is_keyed() {
            self.push_keyed(
                other.record(i),
                other.key(i).unwrap_or_default(),
                other.op(i),
            );
        } else {
            self.push(other.record(i));
        }
    }

    /// Appends all records of `other`.
    pub fn extend_from(&mut self, other: &EncodedRecords) {
        self.extend_range(other, 0..other.len());
    }

    /// Appends records `range` of `other`, with their metadata, each part in one copy.
    pub fn extend_range(&mut self, other: &EncodedRecords, range: std::ops::Range<usize>) {
        if range.is_empty() {
            return;
        }
        let (start, end) = other.byte_range(&range);
        let base = self.data.len() as u32;
        self.data.extend_from_slice(&other.data[start..end]);
        self.extend_meta(other, range, start as u32, base);
    }

    /// Records `range` as records of their own: their bytes a range of the same buffer when
    /// `self`'s are shared ([`RecordBytes::share`]), no copy; else copied.
    pub fn cut(&self, range: std::ops::Range<usize>) -> EncodedRecords {
        let mut out = EncodedRecords::default();
        if range.is_empty() {
            return out;
        }
        let (start, end) = self.byte_range(&range);
        out.data = self.data.slice(start..end);
        out.extend_meta(self, range, start as u32, 0);
        out
    }

    /// Where the bytes of records `range` (not empty) start and end.
    fn byte_range(&self, range: &std::ops::Range<usize>) -> (usize, usize) {
        let start = match range.start {
            0 => 0,
            from => self.ends[from - 1] as usize,
        };
        (start, self.ends[range.end - 1] as usize)
    }

    /// Appends the ends, keys and ops of records `range` of `other`, whose bytes start at
    /// `start` there and at `base` here.
    fn extend_meta(
        &mut self,
        other: &EncodedRecords,
        range: std::ops::Range<usize>,
        start: u32,
        base: u32,
    ) {
        let (from, to) = (range.start, range.end);
        self.ends
            .extend(other.ends[from..to].iter().map(|e| e - start + base));
        if other.is_keyed() {
            // Records pushed without metadata so far get an empty key.
            while self.key_ends.len() + (to - from) < self.ends.len() {
                self.key_ends.push(self.keys.len() as u32);
                self.ops.push(ChangeOp::Insert);
            }
            let key_start = if from == 0 {
                0
            } else {
                other.key_ends[from - 1]
            };
            let key_base = self.keys.len() as u32;
            self.keys.extend_from_slice(
                &other.keys[key_start as usize..other.key_ends[to - 1] as usize],
            );
            self.key_ends.extend(
                other.key_ends[from..to]
                    .iter()
                    .map(|e| e - key_start + key_base),
            );
            self.ops.extend_from_slice(&other.ops[from..to]);
        } else if self.is_keyed() {
            let empty = self.keys.len() as u32;
            self.key_ends.resize(self.ends.len(), empty);
            self.ops.resize(self.ends.len(), ChangeOp::Insert);
        }
    }

    /// Splits into two halves by record count (used when a destination answers 413).
    pub fn split_in_half(&self) -> (EncodedRecords, EncodedRecords) {
        let mid = self.len() / 2;
        let mut a = EncodedRecords::default();
        let mut b = EncodedRecords::default();
        a.extend_range(self, 0..mid);
        b.extend_range(self, mid..self.len());
        (a, b)
    }

    /// The records as a JSON array body (`[r1,r2,…]`).
    pub fn to_json_array(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.push(b'[');
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(r);
        }
        out.push(b']');
        out
    }
}

/// A row that is not sent, with the reason. Written to the sync's rejects file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// The row's key as JSON text: the key columns' values, or the row hash when no key is set.
    pub key: String,
    /// The `$insert_id` the row had (or would have had), when known.
    pub insert_id: Option<String>,
    /// Why it was not sent, in words a user can act on.
    pub reason: String,
}

/// The output of mapping one Arrow batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedBatch {
    /// Records to send.
    pub records: EncodedRecords,
    /// Rows that would be rejected by the destination, with reasons.
    pub rejects: Vec<Reject>,
    /// Changes the destination cannot apply (e.g. deleting a Mixpanel event), with reasons;
    /// recorded in the run's change log.
    #[serde(default)]
    pub unapplied: Vec<Reject>,
    /// Rows accounted for without any record (e.g. deletes for a lookup table, which is
    /// replaced whole).
    #[serde(default)]
    pub dropped: usize,
}

impl MappedBatch {
    /// Source rows this batch accounts for (sent + rejected), when each row makes one record.
    pub fn rows(&self) -> usize {
        self.records.len() + self.rejects.len()
    }

    /// Rows settled without a request: rejected, unapplied or dropped.
    pub fn settled_without_request(&self) -> usize {
        self.rejects.len() + self.unapplied.len() + self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_by_one(into: &mut EncodedRecords, from: &EncodedRecords, range: std::ops::Range<usize>) {
        for i in range {
            into.push_from(from, i);
        }
    }

    /// Copying a range at once gives what copying its records one by one gives, keyed or not,
    /// into empty, plain or keyed buffers.
    #[test]
    fn extend_range_equals_record_by_record() {
        let mut plain = EncodedRecords::default();
        let mut keyed = EncodedRecords::default();
        for i in 0..6 {
            plain.push(format!("{{\"p\":{i}}}").as_bytes());
            let key = if i == 2 {
                String::new()
            } else {
                format!("{i}")
            };
            keyed.push_keyed(
                format!("{{\"k\":{i}}}").as_bytes(),
                key.as_bytes(),
                ChangeOp::Update,
            );
        }
        for source in [&plain, &keyed] {
            for start in [EncodedRecords::default(), plain.clone(), keyed.clone()] {
                for range in [0..0, 0..6, 1..4, 5..6] {
                    let (mut bulk, mut each) = (start.clone(), start.clone());
                    bulk.extend_range(source, range.clone());
                    one_by_one(&mut each, source, range.clone());
                    assert_eq!(bulk, each, "{range:?}");
                }
            }
        }
        let (a, b) = keyed.split_in_half();
        assert_eq!((a.len(), b.len()), (3, 3));
        assert_eq!(b.key(0), Some(&b"3"[..]));
        assert_eq!(a.key(2), None);
        // A cut is what copying the range into nothing gives, from shared bytes or owned ones;
        // from shared ones it copies no byte, and cuts of cuts agree too.
        for source in [plain, keyed] {
            let mut shared = source.clone();
            shared.data.share();
            for range in [0..0, 0..6, 1..4, 5..6] {
                let mut copied = EncodedRecords::default();
                copied.extend_range(&source, range.clone());
                assert_eq!(source.cut(range.clone()), copied, "{range:?}");
                let cut = shared.cut(range.clone());
                assert_eq!(cut, copied, "{range:?}");
                assert_eq!(cut.data.is_shared(), !range.is_empty());
                if cut.len() > 2 {
                    let mut inner = EncodedRecords::default();
                    inner.extend_range(&copied, 1..cut.len() - 1);
                    assert_eq!(cut.cut(1..cut.len() - 1), inner);
                }
            }
        }
    }
}
