//! The change envelope that change-capable destinations (files, Kafka) get instead of
//! Mixpanel's record shapes.

use std::sync::Arc;

use arrow::array::RecordBatch;

use crate::change::ChangeOp;
use crate::encode::write_json_str;
use crate::record::{EncodedRecords, MappedBatch};
use crate::RecordMapper;

/// The change envelope sent to change-capable destinations (files, Kafka): one JSON object
/// per change,
/// `{"op":"insert|update|delete","key":<key>,"after":<record>,"sync":…,"table":…,
/// "table_type":…,"run":<run id>,"ts":<ms>}`. `key` is the primary key's value (an array for
/// a composite key; for events without one, the `distinct_id`), `after` the row as the
/// destination's record (absent for deletes), `ts` the run's clock in ms since the epoch.
/// There is no `before`: neither a snapshot diff (which keeps fingerprints, not rows) nor
/// PostgreSQL's logical decoding without `REPLICA IDENTITY FULL` knows the old values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// `,"sync":…,"table":…,"table_type":…,"run":N,"ts":` pre-encoded.
    tail: Vec<u8>,
}

impl Envelope {
    /// The envelope of run `run` of sync `sync` reading `table` (its name or `query`).
    pub fn new(sync: &str, table: &str, table_type: &str, run: u64) -> Self {
        let mut tail = b",\"sync\":".to_vec();
        write_json_str(&mut tail, sync);
        tail.extend_from_slice(b",\"table\":");
        write_json_str(&mut tail, table);
        tail.extend_from_slice(b",\"table_type\":");
        write_json_str(&mut tail, table_type);
        tail.extend_from_slice(b",\"run\":");
        tail.extend_from_slice(itoa::Buffer::new().format(run).as_bytes());
        tail.extend_from_slice(b",\"ts\":");
        Envelope { tail }
    }

    /// Writes one envelope into `out`.
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        op: ChangeOp,
        key: &[u8],
        after: Option<&[u8]>,
        ts_ms: i64,
    ) {
        out.extend_from_slice(b"{\"op\":\"");
        out.extend_from_slice(op.as_str().as_bytes());
        out.extend_from_slice(b"\",\"key\":");
        out.extend_from_slice(if key.is_empty() { b"null" } else { key });
        if let Some(r) = after {
            out.extend_from_slice(b",\"after\":");
            out.extend_from_slice(r);
        }
        out.extend_from_slice(&self.tail);
        out.extend_from_slice(itoa::Buffer::new().format(ts_ms).as_bytes());
        out.push(b'}');
    }

    /// Wraps every record of `records` (which must carry keys and ops) in an envelope.
    pub fn wrap(&self, records: &EncodedRecords, ts_ms: i64) -> EncodedRecords {
        let mut out = EncodedRecords::default();
        let mut line = Vec::with_capacity(512);
        for i in 0..records.len() {
            line.clear();
            let key = records.key(i).unwrap_or_default();
            let op = records.op(i);
            let after = (op != ChangeOp::Delete).then(|| records.record(i));
            self.write(&mut line, op, key, after, ts_ms);
            out.push_keyed(&line, key, op);
        }
        out
    }
}

/// A [`RecordMapper`] whose records are wrapped in change envelopes (append syncs into a
/// change-capable destination: every row is an `insert`).
pub struct EnvelopeRecords {
    inner: Arc<dyn RecordMapper>,
    envelope: Envelope,
}

impl EnvelopeRecords {
    /// Wraps `inner`'s records (which must carry keys) in `envelope`.
    pub fn new(inner: Arc<dyn RecordMapper>, envelope: Envelope) -> Self {
        EnvelopeRecords { inner, envelope }
    }
}

impl RecordMapper for EnvelopeRecords {
    fn map_batch(&self, batch: &RecordBatch, now_ms: i64) -> MappedBatch {
        let mut mapped = self.inner.map_batch(batch, now_ms);
        mapped.records = self.envelope.wrap(&mapped.records, now_ms);
        mapped
    }
}
