//! What flows out of the mapping step: encoded records and rejected rows.

use serde::{Deserialize, Serialize};

/// Records already encoded as NDJSON: `data` holds the lines back to back (each ending in
/// `\n`), `ends[i]` is the end offset of record `i`. One allocation per batch, and a destination
/// can send a slice of it as an `application/x-ndjson` body without re-encoding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedRecords {
    /// The NDJSON bytes.
    pub data: Vec<u8>,
    /// End offset (exclusive, after the newline) of each record.
    pub ends: Vec<u32>,
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

    /// Appends one record (`line` must not contain a newline).
    pub fn push(&mut self, line: &[u8]) {
        self.data.extend_from_slice(line);
        self.data.push(b'\n');
        self.ends.push(self.data.len() as u32);
    }

    /// Appends all records of `other`.
    pub fn extend_from(&mut self, other: &EncodedRecords) {
        let base = self.data.len() as u32;
        self.data.extend_from_slice(&other.data);
        self.ends.extend(other.ends.iter().map(|e| e + base));
    }

    /// Splits into two halves by record count (used when a destination answers 413).
    pub fn split_in_half(&self) -> (EncodedRecords, EncodedRecords) {
        let mid = self.len() / 2;
        let mut a = EncodedRecords::default();
        let mut b = EncodedRecords::default();
        for (i, r) in self.iter().enumerate() {
            if i < mid {
                a.push(r)
            } else {
                b.push(r)
            }
        }
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
