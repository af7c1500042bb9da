//! Event mapping: one warehouse row → one Mixpanel event, or a reject with its reason.
//!
//! The record has the shape Mixpanel's `/import` takes:
//! `{"event":…,"properties":{"time":ms,"distinct_id":…,"$device_id":…,"$warehouse_type":…,
//! "$wharf_sync":…,<columns>…,<JSON column keys>…,"$insert_id":…}}`.
//!
//! - `time` is milliseconds since the epoch (TIMESTAMP/TIMESTAMPTZ/DATE, or integer epoch
//!   seconds/milliseconds; naive timestamps are UTC).
//! - `distinct_id` is the user id as text; with no user id it is `$device:<device id>` when a
//!   device id is present (Mixpanel's simplified identity convention), else `""` (an event tied
//!   to no user).
//! - A JSON column is flattened into top-level properties; a key that names a table column or a
//!   reserved property is skipped (the table's column always wins, even when NULL).
//! - `$insert_id` is a 128-bit hash (32 hex characters) of the sync id and the row's key columns,
//!   or of the whole encoded row when no key is configured: identical across re-runs, so that
//!   Mixpanel deduplicates replays.

use std::collections::HashSet;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Schema};

use crate::columns::{check_type, find_column, is_id, is_text, is_time, MappingError};
use crate::encode::{
    copy_from_buffer, to_micros, write_json_str, write_json_str_from_buffer, write_key_json,
    write_value, ColumnEncoder, Piece,
};
use crate::record::{ChangeOp, MappedBatch, Reject};
use crate::RecordMapper;

mod json_keys;

/// Mixpanel rejects events older than this (1971-01-01T00:00:00Z) in milliseconds.
pub const MIN_TIME_MS: i64 = 31_536_000_000;
/// …and events more than this far in the future.
pub const MAX_FUTURE_MS: i64 = 3_600_000;
/// Mixpanel rejects events with more properties than this.
pub const MAX_PROPERTIES: usize = 255;
/// Mixpanel rejects events of this size or more.
pub const MAX_EVENT_BYTES: usize = 1_000_000;
/// `distinct_id` values Mixpanel treats as placeholders and rejects (compared case-insensitively).
pub const BANNED_DISTINCT_IDS: &[&str] = &[
    "anon",
    "anonymous",
    "nil",
    "none",
    "null",
    "undefined",
    "unknown",
    "0",
    "-1",
    "[]",
    "{}",
    "<nil>",
    "00000000-0000-0000-0000-000000000000",
];

/// Where the event name comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventName {
    /// The same name for every row.
    Static(String),
    /// The value of a column.
    Column(String),
}

/// How an integer time column is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EpochUnit {
    /// Values of at least 10^11 are milliseconds, smaller ones seconds.
    #[default]
    Auto,
    /// Seconds since the epoch.
    Seconds,
    /// Milliseconds since the epoch.
    Milliseconds,
}

/// What the user configured for an events table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMapping {
    /// The sync's name; part of every `$insert_id` and sent as `$wharf_sync`.
    pub sync_id: String,
    /// Sent as `$warehouse_type` (e.g. `duckdb`).
    pub warehouse_type: String,
    /// Event name.
    pub event_name: EventName,
    /// Column holding the event time.
    pub time_column: String,
    /// Unit of an integer time column.
    pub time_unit: EpochUnit,
    /// Column holding the user id, if any.
    pub user_id_column: Option<String>,
    /// Column holding the device id, if any.
    pub device_id_column: Option<String>,
    /// A JSON column whose keys become top-level properties.
    pub properties_column: Option<String>,
    /// Columns identifying a row; the `$insert_id` is derived from them. Empty: the whole row.
    pub key_columns: Vec<String>,
    /// Columns not sent as properties.
    pub exclude_columns: Vec<String>,
}

/// A compiled [`EventMapping`] for one table schema.
#[derive(Debug)]
pub struct EventMapper {
    mapping: EventMapping,
    n_columns: usize,
    time: usize,
    name: Option<usize>,
    user: Option<usize>,
    device: Option<usize>,
    json: Option<usize>,
    keys: Vec<usize>,
    /// (column index, pre-encoded `,"name":`)
    props: Vec<(usize, Piece)>,
    /// Names a JSON-column key may not take.
    taken: NameSet,
    /// `,"$warehouse_type":…,"$wharf_sync":…`.
    hidden: Piece,
    static_name: Option<Vec<u8>>,
    seed: u64,
    /// The last batch's bytes per record: sizes the next batch's buffer, which then need not
    /// grow (and be copied) while it is written.
    record_len: std::sync::atomic::AtomicUsize,
}

/// 128-bit row hash as 32 lowercase hex characters (a valid `$insert_id`).
pub fn insert_id_hex(seed: u64, bytes: &[u8]) -> [u8; 32] {
    let h = xxhash_rust::xxh3::xxh3_128_with_seed(bytes, seed);
    let mut out = [0u8; 32];
    for (pair, b) in out.chunks_exact_mut(2).zip(h.to_be_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[b as usize]);
    }
    out
}

/// Every byte's two lowercase hex digits: one lookup per byte, not one per digit.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [HEX[b >> 4], HEX[b & 0xf]];
        b += 1;
    }
    pairs
};

impl EventMapper {
    /// Resolves the mapping against `schema`; unknown columns and unusable types are errors.
    pub fn new(mapping: EventMapping, schema: &Schema) -> Result<Self, MappingError> {
        let time = find_column(schema, &mapping.time_column, "time_column")?;
        check_type(
            schema,
            time,
            "time_column",
            "TIMESTAMP, TIMESTAMPTZ, DATE or an integer epoch",
            is_time,
        )?;
        let name = match &mapping.event_name {
            EventName::Column(c) => {
                let i = find_column(schema, c, "event_name_column")?;
                check_type(schema, i, "event_name_column", "a string", is_text)?;
                Some(i)
            }
            EventName::Static(_) => None,
        };
        let opt = |c: &Option<String>, role: &'static str| -> Result<Option<usize>, MappingError> {
            match c {
                Some(c) => {
                    let i = find_column(schema, c, role)?;
                    check_type(schema, i, role, "a string or an integer", is_id)?;
                    Ok(Some(i))
                }
                None => Ok(None),
            }
        };
        let user = opt(&mapping.user_id_column, "user_id_column")?;
        let device = opt(&mapping.device_id_column, "device_id_column")?;
        let json = match &mapping.properties_column {
            Some(c) => {
                let i = find_column(schema, c, "properties_column")?;
                check_type(
                    schema,
                    i,
                    "properties_column",
                    "JSON text, a struct or a map",
                    |t| is_text(t) || matches!(t, DataType::Struct(_) | DataType::Map(_, _)),
                )?;
                Some(i)
            }
            None => None,
        };
        let keys = mapping
            .key_columns
            .iter()
            .map(|c| find_column(schema, c, "key_columns"))
            .collect::<Result<Vec<_>, _>>()?;
        for c in &mapping.exclude_columns {
            find_column(schema, c, "exclude_columns")?;
        }
        let special: HashSet<usize> = [Some(time), name, user, device, json]
            .into_iter()
            .flatten()
            .collect();
        let mut taken: HashSet<String> = [
            "time",
            "distinct_id",
            "$insert_id",
            "$device_id",
            "$warehouse_type",
            "$wharf_sync",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut props = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if special.contains(&i) || mapping.exclude_columns.iter().any(|e| e == f.name()) {
                continue;
            }
            if !taken.insert(f.name().clone()) {
                // A column named like a reserved property would be a duplicate key.
                continue;
            }
            let mut prefix = b",".to_vec();
            write_json_str(&mut prefix, f.name());
            prefix.push(b':');
            props.push((i, Piece::new(prefix)));
        }
        let static_name = match &mapping.event_name {
            EventName::Static(s) => {
                let mut b = Vec::new();
                write_json_str(&mut b, s);
                Some(b)
            }
            EventName::Column(_) => None,
        };
        let mut hidden = b",\"$warehouse_type\":".to_vec();
        write_json_str(&mut hidden, &mapping.warehouse_type);
        hidden.extend_from_slice(b",\"$wharf_sync\":");
        write_json_str(&mut hidden, &mapping.sync_id);
        let seed = xxhash_rust::xxh3::xxh3_64(mapping.sync_id.as_bytes());
        Ok(EventMapper {
            n_columns: schema.fields().len(),
            mapping,
            time,
            name,
            user,
            device,
            json,
            keys,
            props,
            taken: NameSet::new(taken),
            hidden: Piece::new(hidden),
            static_name,
            seed,
            record_len: std::sync::atomic::AtomicUsize::new(256),
        })
    }

    /// The configuration this mapper was built from.
    pub fn mapping(&self) -> &EventMapping {
        &self.mapping
    }

    /// Names of the columns sent as properties, in order (for previews).
    pub fn property_columns<'s>(&self, schema: &'s Schema) -> Vec<&'s str> {
        self.props
            .iter()
            .map(|(i, _)| schema.field(*i).name().as_str())
            .collect()
    }

    fn time_ms(&self, enc: &ColumnEncoder<'_>, row: usize) -> Option<i64> {
        if enc.is_null(row) {
            return None;
        }
        Some(match enc {
            ColumnEncoder::Timestamp(_, values, unit, _) => {
                to_micros(values[row], *unit).div_euclid(1000)
            }
            ColumnEncoder::Date32(a, _) => (a.value(row) as i64) * 86_400_000,
            ColumnEncoder::Date64(a) => a.value(row),
            _ => {
                let v: i64 = enc.text(row)?.parse().ok()?;
                match self.mapping.time_unit {
                    EpochUnit::Seconds => v.saturating_mul(1000),
                    EpochUnit::Milliseconds => v,
                    EpochUnit::Auto if v.unsigned_abs() >= 100_000_000_000 => v,
                    EpochUnit::Auto => v.saturating_mul(1000),
                }
            }
        })
    }

    fn key_json(&self, encs: &[ColumnEncoder<'_>], row: usize, insert_id: &str) -> String {
        if self.keys.is_empty() {
            let mut s = String::from("{\"$insert_id\":\"");
            s.push_str(insert_id);
            s.push_str("\"}");
            return s;
        }
        let mut out = b"{".to_vec();
        for (n, &k) in self.keys.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_json_str(&mut out, &self.mapping.key_columns[n]);
            out.push(b':');
            if encs[k].is_null(row) || !encs[k].write(row, &mut out) {
                out.extend_from_slice(b"null");
            }
        }
        out.push(b'}');
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A set of names looked up by one xxh3 hash (open addressing, at most a quarter full): most
/// lookups of names not in it touch one empty slot and compare no text.
#[derive(Debug)]
struct NameSet {
    mask: usize,
    slots: Vec<Option<(u64, Box<str>)>>,
}

impl NameSet {
    fn new(names: impl IntoIterator<Item = String>) -> Self {
        let names: Vec<String> = names.into_iter().collect();
        let size = (names.len() * 4).next_power_of_two().max(8);
        let mut set = NameSet {
            mask: size - 1,
            slots: vec![None; size],
        };
        for name in names {
            let hash = xxhash_rust::xxh3::xxh3_64(name.as_bytes());
            let mut i = hash as usize & set.mask;
            while set.slots[i].is_some() {
                i = (i + 1) & set.mask;
            }
            set.slots[i] = Some((hash, name.into_boxed_str()));
        }
        set
    }

    fn contains(&self, name: &str) -> bool {
        let hash = xxhash_rust::xxh3::xxh3_64(name.as_bytes());
        let mut i = hash as usize & self.mask;
        loop {
            match &self.slots[i] {
                None => return false,
                Some((h, n)) if *h == hash && **n == *name => return true,
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }
}

fn banned(id: &str) -> bool {
    let t = id.trim();
    BANNED_DISTINCT_IDS
        .iter()
        .any(|b| b.eq_ignore_ascii_case(t))
}

impl RecordMapper for EventMapper {
    fn map_batch(&self, batch: &RecordBatch, now_ms: i64) -> MappedBatch {
        let mut out = MappedBatch::default();
        if batch.num_columns() != self.n_columns {
            // The connector changed the column list under us: reject rather than mis-map.
            for _ in 0..batch.num_rows() {
                out.rejects.push(Reject {
                    key: "null".into(),
                    insert_id: None,
                    reason: format!(
                        "batch has {} columns, the mapping was built for {}",
                        batch.num_columns(),
                        self.n_columns
                    ),
                });
            }
            return out;
        }
        let encs: Vec<ColumnEncoder<'_>> = batch.columns().iter().map(ColumnEncoder::new).collect();
        // Each column's null buffer when it holds a NULL (what `Array::is_null` reads), so
        // that a column without NULLs costs no test per row.
        let nulls: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| c.nulls().filter(|n| n.null_count() > 0))
            .collect();
        let rows = batch.num_rows();
        let buf = out.records.data.vec_mut();
        let record_len = self.record_len.load(std::sync::atomic::Ordering::Relaxed);
        buf.reserve(rows * (record_len + record_len / 8));
        let mut key_buf = Vec::new();
        let mut keys = Vec::with_capacity(rows * 16);
        let mut key_ends = Vec::with_capacity(rows);
        let mut json_buf = Vec::new();
        let mut members: Vec<(&str, &str)> = Vec::new();
        let mut key_order = json_keys::KeyOrder::default();
        for row in 0..rows {
            let start = buf.len();
            let mut reason: Option<String> = None;
            let mut count = 2; // time, distinct_id
            buf.extend_from_slice(b"{\"event\":");
            match (&self.static_name, self.name) {
                (Some(n), _) => buf.extend_from_slice(n),
                (None, Some(i)) => match buf.len() {
                    // More than the quotes of an empty name.
                    at if encs[i].write_text(row, buf) && buf.len() > at + 2 => {}
                    at => {
                        buf.truncate(at);
                        reason = Some(format!(
                            "event name column `{}` is NULL or empty",
                            batch.schema().field(i).name()
                        ));
                        buf.extend_from_slice(b"\"\"");
                    }
                },
                (None, None) => buf.extend_from_slice(b"\"\""),
            }
            buf.extend_from_slice(b",\"properties\":{\"time\":");
            match self.time_ms(&encs[self.time], row) {
                Some(ms) => {
                    if ms < MIN_TIME_MS {
                        reason.get_or_insert_with(|| {
                            format!("time {ms} ms is before 1971-01-01, which Mixpanel rejects")
                        });
                    } else if ms > now_ms + MAX_FUTURE_MS {
                        reason.get_or_insert_with(|| {
                            format!("time {ms} ms is more than 1 hour in the future")
                        });
                    }
                    buf.extend_from_slice(itoa::Buffer::new().format(ms).as_bytes());
                }
                None => {
                    reason.get_or_insert_with(|| {
                        format!("time column `{}` is NULL", self.mapping.time_column)
                    });
                    buf.extend_from_slice(b"null");
                }
            }
            buf.extend_from_slice(b",\"distinct_id\":");
            let distinct_at = buf.len();
            let user = self.user.and_then(|u| encs[u].text(row));
            let device = self.device.and_then(|d| encs[d].text(row));
            match (&user, &device) {
                (Some(u), _) => {
                    if banned(u) {
                        reason.get_or_insert_with(|| {
                            format!("user id {u:?} is a placeholder value Mixpanel rejects")
                        });
                    }
                    if let Some(i) = self.user {
                        encs[i].write_text(row, buf);
                    }
                }
                (None, Some(d)) => {
                    // `"$device:` and the id's JSON text without its opening quote.
                    buf.extend_from_slice(b"\"$device:");
                    let at = buf.len();
                    write_json_str(buf, d);
                    buf.remove(at);
                }
                (None, None) => buf.extend_from_slice(b"\"\""),
            }
            let distinct_end = buf.len();
            if let (Some(_), Some(i)) = (&device, self.device) {
                buf.extend_from_slice(b",\"$device_id\":");
                encs[i].write_text(row, buf);
                count += 1;
            }
            self.hidden.write(buf);
            count += 2;
            for (i, prefix) in &self.props {
                if nulls[*i].is_some_and(|n| n.is_null(row)) {
                    continue;
                }
                let e = &encs[*i];
                let mark = buf.len();
                prefix.write(buf);
                if e.write(row, buf) {
                    count += 1;
                } else {
                    buf.truncate(mark);
                }
            }
            if let Some(j) = self.json {
                let col = batch.column(j);
                if !col.is_null(row) {
                    let mut needs_tree = true;
                    // The text and the buffer it lies in (short names and values are copied
                    // from it 16 bytes at a time).
                    let (text, data): (_, &[u8]) = match &encs[j] {
                        ColumnEncoder::Utf8(a) => (Some(a.value(row)), a.value_data()),
                        ColumnEncoder::LargeUtf8(a) => (Some(a.value(row)), a.value_data()),
                        ColumnEncoder::Utf8View(a) => (Some(a.value(row)), &[]),
                        _ => (None, &[]),
                    };
                    // Fast path: copy the values' JSON text as it is, without building a tree.
                    // Keys with escapes, values spanning lines (pretty-printed JSON would
                    // break NDJSON framing) and anything the scanner leaves to serde_json
                    // take the general path below. Keys come out sorted, a repeated key's
                    // last value kept, as the general path's map does.
                    if let Some(t) = text {
                        members.clear();
                        let mut escaped_name = false;
                        let scanned = crate::json::object_members(t, |name, escaped, value| {
                            escaped_name |= escaped;
                            members.push((name, value));
                        });
                        let spans_lines = |saw_newline: bool| {
                            saw_newline && members.iter().any(|(_, v)| v.contains(['\n', '\r']))
                        };
                        let fits = scanned
                            .is_some_and(|saw_newline| !escaped_name && !spans_lines(saw_newline));
                        if fits {
                            let order = key_order.order(&members, data, |k| self.taken.contains(k));
                            for &(k, v) in order.iter().map(|&i| &members[i]) {
                                if v == "null" {
                                    continue;
                                }
                                buf.push(b',');
                                write_json_str_from_buffer(buf, data, k);
                                buf.push(b':');
                                copy_from_buffer(buf, data, v.as_bytes());
                                count += 1;
                            }
                            needs_tree = false;
                        }
                    }
                    let parsed = match text {
                        _ if !needs_tree => None,
                        Some(t) => Some(serde_json::from_str(t)),
                        None => {
                            json_buf.clear();
                            write_value(col.as_ref(), row, &mut json_buf);
                            Some(serde_json::from_slice(&json_buf))
                        }
                    };
                    match parsed {
                        None => {}
                        Some(Ok(serde_json::Value::Object(map))) => {
                            for (k, v) in map {
                                if v.is_null() || self.taken.contains(&k) {
                                    continue;
                                }
                                buf.push(b',');
                                write_json_str(buf, &k);
                                buf.push(b':');
                                // Writing a Value into a Vec cannot fail.
                                let _ = serde_json::to_writer(&mut *buf, &v);
                                count += 1;
                            }
                        }
                        Some(Ok(_)) => {
                            reason.get_or_insert_with(|| {
                                format!(
                                    "properties column `{}` is not a JSON object",
                                    batch.schema().field(j).name()
                                )
                            });
                        }
                        Some(Err(e)) => {
                            reason.get_or_insert_with(|| {
                                format!(
                                    "properties column `{}` is not valid JSON: {e}",
                                    batch.schema().field(j).name()
                                )
                            });
                        }
                    }
                }
            }
            // $insert_id: from the key columns, or from everything written so far.
            let id = if self.keys.is_empty() {
                insert_id_hex(self.seed, &buf[start..])
            } else {
                key_buf.clear();
                for &k in &self.keys {
                    if !encs[k].is_null(row) {
                        encs[k].write(row, &mut key_buf);
                    }
                    key_buf.push(0);
                }
                insert_id_hex(self.seed, &key_buf)
            };
            count += 1;
            if count > MAX_PROPERTIES {
                reason.get_or_insert_with(|| {
                    format!("{count} properties; Mixpanel accepts at most {MAX_PROPERTIES}")
                });
            }
            buf.extend_from_slice(b",\"$insert_id\":\"");
            buf.extend_from_slice(&id);
            buf.extend_from_slice(b"\"}}\n");
            if buf.len() - start >= MAX_EVENT_BYTES {
                reason.get_or_insert_with(|| {
                    format!(
                        "event is {} bytes; Mixpanel accepts events under 1 MB",
                        buf.len() - start
                    )
                });
            }
            match reason {
                None => {
                    out.records.ends.push(buf.len() as u32);
                    // The record's key: the primary key, else the distinct id.
                    let mark = keys.len();
                    if self.keys.is_empty() || !write_key_json(&encs, &self.keys, row, &mut keys) {
                        keys.truncate(mark);
                        keys.extend_from_slice(&buf[distinct_at..distinct_end]);
                    }
                    key_ends.push(keys.len() as u32);
                }
                Some(reason) => {
                    buf.truncate(start);
                    let id = String::from_utf8_lossy(&id).into_owned();
                    out.rejects.push(Reject {
                        key: self.key_json(&encs, row, &id),
                        insert_id: Some(id),
                        reason,
                    });
                }
            }
        }
        if let Some(len) = buf.len().checked_div(key_ends.len()) {
            self.record_len
                .store(len.max(64), std::sync::atomic::Ordering::Relaxed);
        }
        out.records.ops = vec![ChangeOp::Insert; key_ends.len()];
        out.records.keys = keys;
        out.records.key_ends = key_ends;
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::Field;

    use super::*;

    #[test]
    fn insert_ids_are_the_hashes_in_lowercase_hex() {
        for (seed, bytes) in [(0, &b""[..]), (7, b"row"), (u64::MAX, &[0xff; 300][..])] {
            let want = format!(
                "{:032x}",
                xxhash_rust::xxh3::xxh3_128_with_seed(bytes, seed)
            );
            assert_eq!(&insert_id_hex(seed, bytes)[..], want.as_bytes());
        }
    }

    /// Found by fuzzing (fuzz/fuzz_targets/mapping.rs): `i64::MIN` in an integer time column
    /// read with the automatic unit overflowed `abs` (a panic in debug builds).
    #[test]
    fn the_smallest_integer_time_is_rejected_not_a_panic() {
        let col: ArrayRef = Arc::new(Int64Array::from(vec![i64::MIN, i64::MAX, -100_000_000_000]));
        let schema = Schema::new(vec![Field::new("t", DataType::Int64, true)]);
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![col]).unwrap();
        let mapper = EventMapper::new(
            EventMapping {
                sync_id: "s".into(),
                warehouse_type: "w".into(),
                event_name: EventName::Static("e".into()),
                time_column: "t".into(),
                time_unit: EpochUnit::Auto,
                user_id_column: None,
                device_id_column: None,
                properties_column: None,
                key_columns: vec![],
                exclude_columns: vec![],
            },
            &schema,
        )
        .unwrap();
        let out = mapper.map_batch(&batch, 1_800_000_000_000);
        assert_eq!(out.records.len(), 0);
        assert_eq!(out.rejects.len(), 3);
        assert!(
            out.rejects[0].reason.contains("before 1971"),
            "{}",
            out.rejects[0].reason
        );
        assert!(
            out.rejects[1].reason.contains("future"),
            "{}",
            out.rejects[1].reason
        );
    }
}
