//! Changes ([`crate::change`], from the diff or a change stream) → destination records, per
//! table type.
//!
//! - Events ([`EventChanges`]): inserts and updates are (re)imported with the same
//!   deterministic `$insert_id`; Mixpanel cannot change or delete an imported event, so a
//!   delete, or an update that changed the event's name, distinct id or time, is recorded as an
//!   unapplied change (the run's change log) — the new version of such an update is still sent.
//! - User and group profiles ([`ProfileChanges`]): inserts and updates as `$set` of the row's
//!   non-NULL properties, plus, for updates, `$unset` of its NULL property columns (what became
//!   NULL since the last run is among them; unsetting an absent property is harmless); deletes
//!   as `$delete`.
//! - Lookup tables ([`LookupRows`]): every row as one CSV line, key first; deletes are implied by
//!   the replacement of the whole table.
//!
//! With an [`Envelope`] (change-capable destinations such as files and Kafka), every record is
//! a change envelope and nothing is unapplied: deletes carry no `after`.
//!
//! Every record carries its key and op
//! ([`EncodedRecords::key`](crate::record::EncodedRecords::key)), so a keyed destination (Kafka)
//! can partition by key whether it gets envelopes or Mixpanel payloads.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::Schema;
use serde_json::value::RawValue;

use crate::change::{ChangeMapper, ChangeOp, ChangeSet, RowChange};
use crate::columns::{find_column, MappingError};
use crate::encode::{write_json_str, write_value, ColumnEncoder};
use crate::envelope::Envelope;
use crate::mixpanel::events::EventMapper;
use crate::record::{MappedBatch, Reject};
use crate::RecordMapper;

/// Events in mirror mode.
pub struct EventChanges {
    mapper: Arc<EventMapper>,
    envelope: Option<Envelope>,
}

impl EventChanges {
    /// Wraps an event mapper whose key columns are the sync's primary key (so an updated row
    /// keeps its `$insert_id`, and records line up with their rows by key).
    pub fn new(mapper: Arc<EventMapper>, envelope: Option<Envelope>) -> Self {
        EventChanges { mapper, envelope }
    }
}

impl ChangeMapper for EventChanges {
    fn map_set(&self, changes: &ChangeSet, now_ms: i64) -> MappedBatch {
        let mut out = MappedBatch::default();
        match changes {
            ChangeSet::Deletes(keys) => {
                for k in keys {
                    if let Some(env) = &self.envelope {
                        let mut line = Vec::new();
                        env.write(&mut line, ChangeOp::Delete, k.as_bytes(), None, now_ms);
                        out.records
                            .push_keyed(&line, k.as_bytes(), ChangeOp::Delete);
                    } else {
                        out.unapplied.push(Reject {
                            key: k.clone(),
                            insert_id: None,
                            reason: "row deleted; Mixpanel's API cannot delete an imported event"
                                .into(),
                        });
                    }
                }
            }
            ChangeSet::Rows {
                batch,
                changes,
                keys,
                ..
            } => {
                let mapped = self.mapper.map_batch(batch, now_ms);
                out.rejects.extend(mapped.rejects);
                let mut records = mapped.records;
                // The records are the rows in order, less the rejected ones, keyed by the same
                // key text: walk both to give each record its row's op.
                let mut row = 0;
                for i in 0..records.len() {
                    let key = records.key(i).unwrap_or_default();
                    while row < keys.len() && keys[row].as_bytes() != key {
                        row += 1;
                    }
                    if let (Some(change), Some(op)) = (changes.get(row), records.ops.get_mut(i)) {
                        *op = change.op;
                    }
                    row += 1;
                }
                match &self.envelope {
                    Some(env) => records = env.wrap(&records, now_ms),
                    None => {
                        for (row, change) in changes.iter().enumerate() {
                            if change.identity_changed {
                                out.unapplied.push(Reject {
                                    key: keys[row].clone(),
                                    insert_id: None,
                                    reason: "the event's name, distinct id or time changed; the new version was imported, the old event stays in Mixpanel (its API cannot change or delete it)".into(),
                                });
                            }
                        }
                    }
                }
                out.records = records;
            }
        }
        out
    }
}

/// Which kind of profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileTarget {
    /// A user profile (`/engage`), keyed by `$distinct_id`.
    User,
    /// A group profile (`/groups`) of this group key, keyed by `$group_id`.
    Group {
        /// The configured `$group_key` (e.g. `company_id`).
        group_key: String,
    },
}

/// What the user configured for a profile table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileMapping {
    /// User or group.
    pub target: ProfileTarget,
    /// The project token (`$token` of every update).
    pub token: String,
    /// The column holding the distinct id / group id (the primary key).
    pub id_column: String,
    /// A JSON column whose keys become properties (the table's columns win on a clash).
    pub properties_column: Option<String>,
    /// Columns not sent.
    pub exclude_columns: Vec<String>,
}

/// User and group profiles.
pub struct ProfileChanges {
    /// `{"$token":"…",` + `"$group_key":"…",` for groups.
    head: Vec<u8>,
    id_field: &'static [u8],
    is_user: bool,
    id: usize,
    json: Option<usize>,
    /// (column, pre-encoded `"name":`, name)
    props: Vec<(usize, Vec<u8>, String)>,
    envelope: Option<Envelope>,
}

impl ProfileChanges {
    /// Compiles `mapping` for `schema`.
    pub fn new(
        mapping: &ProfileMapping,
        schema: &Schema,
        envelope: Option<Envelope>,
    ) -> Result<Self, MappingError> {
        let find = |c: &str, role: &'static str| find_column(schema, c, role);
        let id = find(&mapping.id_column, "user_id_column / group id")?;
        let json = match &mapping.properties_column {
            Some(c) => Some(find(c, "properties_column")?),
            None => None,
        };
        for c in &mapping.exclude_columns {
            find(c, "exclude_columns")?;
        }
        let props = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, f)| {
                *i != id && Some(*i) != json && !mapping.exclude_columns.contains(f.name())
            })
            .map(|(i, f)| {
                let mut enc = Vec::new();
                write_json_str(&mut enc, f.name());
                enc.push(b':');
                (i, enc, f.name().clone())
            })
            .collect();
        let mut head = b"{\"$token\":".to_vec();
        write_json_str(&mut head, &mapping.token);
        head.push(b',');
        let (id_field, is_user): (&'static [u8], bool) = match &mapping.target {
            ProfileTarget::User => (b"\"$distinct_id\":", true),
            ProfileTarget::Group { group_key } => {
                head.extend_from_slice(b"\"$group_key\":");
                write_json_str(&mut head, group_key);
                head.push(b',');
                (b"\"$group_id\":", false)
            }
        };
        Ok(ProfileChanges {
            head,
            id_field,
            is_user,
            id,
            json,
            props,
            envelope,
        })
    }

    /// `{"$token":…,["$group_key":…,]"$distinct_id"|"$group_id":"<id>"` (no closing brace).
    fn start(&self, out: &mut Vec<u8>, id: &str) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(self.id_field);
        write_json_str(out, id);
    }

    /// [`Self::start`] of an update that must not move the profile's "last seen" time
    /// (`$ignore_time`, users only).
    fn start_update(&self, out: &mut Vec<u8>, id: &str) {
        self.start(out, id);
        if self.is_user {
            out.extend_from_slice(b",\"$ignore_time\":true");
        }
    }

    /// The `$set` object of a row into `out`; returns the NULL property names.
    fn write_set(
        &self,
        batch: &RecordBatch,
        encs: &[ColumnEncoder<'_>],
        row: usize,
        out: &mut Vec<u8>,
    ) -> Result<Vec<String>, String> {
        let mut nulls = Vec::new();
        out.push(b'{');
        let mut first = true;
        let mut names: Vec<&str> = Vec::new();
        for (i, enc, name) in &self.props {
            if encs[*i].is_null(row) {
                nulls.push(name.clone());
                continue;
            }
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(enc);
            if encs[*i].write(row, out) {
                first = false;
                names.push(name);
            } else {
                out.truncate(mark);
                nulls.push(name.clone());
            }
        }
        if let Some(j) = self.json {
            let col = batch.column(j);
            if !col.is_null(row) {
                let mut text = Vec::new();
                let s = match encs[j].text(row) {
                    Some(t) => t.into_owned(),
                    None => {
                        write_value(col.as_ref(), row, &mut text);
                        String::from_utf8_lossy(&text).into_owned()
                    }
                };
                let map: BTreeMap<&str, &RawValue> = serde_json::from_str(&s).map_err(|e| {
                    format!(
                        "properties column `{}` is not a JSON object: {e}",
                        batch.schema().field(j).name()
                    )
                })?;
                for (k, v) in map {
                    if v.get() == "null" || names.contains(&k) {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    write_json_str(out, k);
                    out.push(b':');
                    // A value spanning lines (pretty-printed JSON) would break the record's
                    // line (NDJSON for files and Kafka): a raw line break in JSON text can
                    // only be whitespace, so leaving the breaks out keeps the same JSON.
                    out.extend(v.get().bytes().filter(|&b| b != b'\n' && b != b'\r'));
                    first = false;
                }
            }
        }
        out.push(b'}');
        Ok(nulls)
    }
}

/// The id text of a key: a JSON string's contents, or the JSON text itself (numbers).
fn id_text(key: &str) -> String {
    serde_json::from_str::<String>(key).unwrap_or_else(|_| key.to_string())
}

impl ChangeMapper for ProfileChanges {
    fn map_set(&self, changes: &ChangeSet, now_ms: i64) -> MappedBatch {
        let mut out = MappedBatch::default();
        let mut line = Vec::with_capacity(512);
        match changes {
            ChangeSet::Deletes(keys) => {
                for k in keys {
                    line.clear();
                    if let Some(env) = &self.envelope {
                        env.write(&mut line, ChangeOp::Delete, k.as_bytes(), None, now_ms);
                    } else {
                        self.start(&mut line, &id_text(k));
                        line.extend_from_slice(b",\"$delete\":null");
                        if self.is_user {
                            line.extend_from_slice(b",\"$ignore_alias\":true");
                        }
                        line.push(b'}');
                    }
                    out.records
                        .push_keyed(&line, k.as_bytes(), ChangeOp::Delete);
                }
            }
            ChangeSet::Rows {
                batch,
                changes,
                keys,
                ..
            } => {
                let encs: Vec<ColumnEncoder<'_>> =
                    batch.columns().iter().map(ColumnEncoder::new).collect();
                let mut set = Vec::with_capacity(512);
                for (row, RowChange { op, .. }) in changes.iter().enumerate() {
                    set.clear();
                    let nulls = match self.write_set(batch, &encs, row, &mut set) {
                        Ok(n) => n,
                        Err(reason) => {
                            out.rejects.push(Reject {
                                key: keys[row].clone(),
                                insert_id: None,
                                reason,
                            });
                            continue;
                        }
                    };
                    let id = encs[self.id]
                        .text(row)
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    line.clear();
                    let key = keys[row].as_bytes();
                    if let Some(env) = &self.envelope {
                        env.write(&mut line, *op, key, Some(&set), now_ms);
                        out.records.push_keyed(&line, key, *op);
                        continue;
                    }
                    self.start_update(&mut line, &id);
                    line.extend_from_slice(b",\"$set\":");
                    line.extend_from_slice(&set);
                    line.push(b'}');
                    out.records.push_keyed(&line, key, *op);
                    if *op == ChangeOp::Update && !nulls.is_empty() {
                        line.clear();
                        self.start_update(&mut line, &id);
                        line.extend_from_slice(b",\"$unset\":[");
                        for (n, name) in nulls.iter().enumerate() {
                            if n > 0 {
                                line.push(b',');
                            }
                            write_json_str(&mut line, name);
                        }
                        line.extend_from_slice(b"]}");
                        out.records.push_keyed(&line, key, ChangeOp::Update);
                    }
                }
            }
        }
        out
    }
}

/// Lookup-table rows as RFC 4180 CSV lines, key column first.
pub struct LookupRows {
    /// Column order: key first, then the rest in table order.
    columns: Vec<usize>,
    header: Vec<String>,
}

impl LookupRows {
    /// Compiles the column order for `schema` with `key` first.
    pub fn new(schema: &Schema, key: &str, exclude: &[String]) -> Result<Self, MappingError> {
        let k = find_column(schema, key, "primary_key")?;
        let mut columns = vec![k];
        columns.extend(
            (0..schema.fields().len())
                .filter(|i| *i != k && !exclude.contains(schema.field(*i).name())),
        );
        let header = columns
            .iter()
            .map(|i| schema.field(*i).name().clone())
            .collect();
        Ok(LookupRows { columns, header })
    }

    /// The CSV header's column names.
    pub fn header(&self) -> &[String] {
        &self.header
    }
}

/// Appends `value` as one RFC 4180 field (quoted when it holds a comma, quote or line break).
pub fn write_csv_field(out: &mut Vec<u8>, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        for b in value.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(value.as_bytes());
    }
}

impl ChangeMapper for LookupRows {
    fn map_set(&self, changes: &ChangeSet, _now_ms: i64) -> MappedBatch {
        let mut out = MappedBatch::default();
        let ChangeSet::Rows { batch, .. } = changes else {
            // A lookup table is replaced whole: deleted keys are simply not in it.
            out.dropped = changes.len();
            return out;
        };
        let encs: Vec<ColumnEncoder<'_>> = batch.columns().iter().map(ColumnEncoder::new).collect();
        let mut line = Vec::with_capacity(256);
        let mut json = Vec::new();
        for row in 0..batch.num_rows() {
            line.clear();
            for (n, &c) in self.columns.iter().enumerate() {
                if n > 0 {
                    line.push(b',');
                }
                match encs[c].text(row) {
                    Some(t) => write_csv_field(&mut line, &t),
                    None if !encs[c].is_null(row) => {
                        json.clear();
                        if encs[c].write(row, &mut json) {
                            write_csv_field(&mut line, &String::from_utf8_lossy(&json));
                        }
                    }
                    None => {}
                }
            }
            // CSV lines may hold line breaks inside quotes; records are framed by offsets.
            out.records.push(&line);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{DataType, Field};

    use super::*;

    /// Found by fuzzing (fuzz/fuzz_targets/mapping.rs): a pretty-printed value in the JSON
    /// properties column was copied with its line breaks, splitting the profile's record (an
    /// NDJSON line for files and Kafka) in two.
    #[test]
    fn profile_records_stay_on_one_line() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("props", DataType::Utf8, true),
        ]);
        let id: ArrayRef = Arc::new(StringArray::from(vec!["u1"]));
        let props: ArrayRef = Arc::new(StringArray::from(vec![
            "{\n  \"a\": [\r\n    1,\n    \"x\\ny\"\n  ],\n  \"b\": {\"c\":\n true}\n}",
        ]));
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![id, props]).unwrap();
        let set = ChangeSet::Rows {
            batch,
            changes: vec![RowChange {
                op: ChangeOp::Insert,
                identity_changed: false,
            }],
            keys: vec!["\"u1\"".into()],
            rejects: vec![],
        };
        let mapping = ProfileMapping {
            target: ProfileTarget::User,
            token: "t".into(),
            id_column: "id".into(),
            properties_column: Some("props".into()),
            exclude_columns: vec![],
        };
        for envelope in [None, Some(Envelope::new("s", "t", "user_profiles", 1))] {
            let out = ProfileChanges::new(&mapping, &schema, envelope)
                .unwrap()
                .map_changes(&set, 0);
            assert_eq!(out.records.len(), 1);
            let record = out.records.record(0);
            assert!(!record.contains(&b'\n') && !record.contains(&b'\r'));
            let v: serde_json::Value = serde_json::from_slice(record).unwrap();
            let set = v.get("$set").or_else(|| v.get("after")).unwrap();
            assert_eq!(set["a"], serde_json::json!([1, "x\ny"]));
            assert_eq!(set["b"], serde_json::json!({"c": true}));
        }
    }
}
