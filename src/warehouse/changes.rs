//! Mirror from a warehouse's own change output: Snowflake's `CHANGES` clause, Databricks'
//! Change Data Feed (`table_changes`) and BigQuery's `CHANGES` function.
//!
//! Each warehouse answers a query over a window of its history (between two positions: a
//! timestamp, or a Delta table version) with the table's columns plus metadata columns
//! naming each row's change. [`compact`] turns that output into what the rest of wharf reads
//! from any change stream: batches of the table's columns plus [`OP_COLUMN`], at most one
//! change per key, in the same form PostgreSQL's logical decoding produces.
//!
//! | Warehouse | Change column | Order | Values |
//! |---|---|---|---|
//! | Snowflake | `METADATA$ACTION` (+ `METADATA$ISUPDATE`, `METADATA$ROW_ID`) | none: the output is already net | `INSERT`, `DELETE`; an update is a `DELETE` of the old row and an `INSERT` of the new one |
//! | Databricks | `_change_type` (+ `_commit_version`, `_commit_timestamp`) | `_commit_version` | `insert`, `update_preimage`, `update_postimage`, `delete` |
//! | BigQuery | `_CHANGE_TYPE` (+ `_CHANGE_TIMESTAMP`) | `_CHANGE_TIMESTAMP` | `INSERT`, `UPDATE`, `DELETE` |
//!
//! Compaction per key, in change order (the same rules as PostgreSQL's): a delete then an
//! insert is an update (the row was replaced); an insert then an update is still an insert
//! (new to the destination); otherwise the later change wins, and a delete of a key whose
//! first change was an insert is marked as such ([`OP_DELETE_OF_NEW`]: the key did not exist
//! where the window starts). Update pre-images carry nothing
//! the post-image lacks and are skipped. Rows whose key is NULL are kept as they are, so the
//! run rejects them with its usual reason.

use std::collections::HashMap;
use std::sync::Arc;

use wharf_operators::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use wharf_operators::arrow::compute::{cast, concat_batches, take_record_batch};
use wharf_operators::arrow::datatypes::{DataType, Field, Schema};
use wharf_operators::arrow::util::display::{ArrayFormatter, FormatOptions};
use wharf_operators::change::ChangeOp;
#[cfg(doc)]
use wharf_operators::diff::OP_DELETE_OF_NEW;
use wharf_operators::diff::{op_text, OP_COLUMN};

/// Which warehouse's change output a batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeFormat {
    /// Snowflake's `CHANGES(INFORMATION => DEFAULT)` (and stream) output.
    Snowflake,
    /// Databricks' `table_changes(…)` (Delta Change Data Feed).
    Databricks,
    /// BigQuery's `CHANGES(TABLE …)`.
    BigQuery,
}

impl ChangeFormat {
    /// The metadata columns the warehouse adds to the table's own (matched ignoring case).
    pub fn metadata_columns(self) -> &'static [&'static str] {
        match self {
            ChangeFormat::Snowflake => &["METADATA$ACTION", "METADATA$ISUPDATE", "METADATA$ROW_ID"],
            ChangeFormat::Databricks => &["_change_type", "_commit_version", "_commit_timestamp"],
            ChangeFormat::BigQuery => &["_CHANGE_TYPE", "_CHANGE_TIMESTAMP"],
        }
    }

    /// The column holding each row's change.
    fn type_column(self) -> &'static str {
        self.metadata_columns()[0]
    }

    /// The column ordering the changes, if the output is not already net.
    fn order_column(self) -> Option<&'static str> {
        match self {
            ChangeFormat::Snowflake => None,
            ChangeFormat::Databricks => Some("_commit_version"),
            ChangeFormat::BigQuery => Some("_CHANGE_TIMESTAMP"),
        }
    }

    /// A row's change, its rank among changes of the same order value, or `None` to skip it.
    fn classify(self, value: &str) -> Result<Option<(ChangeOp, u8)>, String> {
        let v = value.to_ascii_lowercase();
        Ok(Some(match (self, v.as_str()) {
            // Net output: a replaced row's DELETE comes before its INSERT.
            (ChangeFormat::Snowflake, "delete") => (ChangeOp::Delete, 0),
            (ChangeFormat::Snowflake, "insert") => (ChangeOp::Insert, 1),
            (ChangeFormat::Databricks, "update_preimage") => return Ok(None),
            (ChangeFormat::Databricks, "insert") | (ChangeFormat::BigQuery, "insert") => {
                (ChangeOp::Insert, 0)
            }
            (ChangeFormat::Databricks, "update_postimage") | (ChangeFormat::BigQuery, "update") => {
                (ChangeOp::Update, 0)
            }
            (ChangeFormat::Databricks, "delete") | (ChangeFormat::BigQuery, "delete") => {
                (ChangeOp::Delete, 0)
            }
            _ => {
                return Err(format!(
                    "unknown change type `{value}` in {}",
                    self.type_column()
                ))
            }
        }))
    }
}

/// Two changes of one key in order, as one (see the module docs).
pub fn combine(before: ChangeOp, after: ChangeOp) -> ChangeOp {
    match (before, after) {
        (ChangeOp::Delete, ChangeOp::Insert) => ChangeOp::Update,
        (ChangeOp::Insert, ChangeOp::Update) => ChangeOp::Insert,
        (_, later) => later,
    }
}

/// The compacted changes of one window.
#[derive(Debug, Default)]
pub struct Compacted {
    /// The table's columns plus [`OP_COLUMN`]; one row per changed key.
    pub batches: Vec<RecordBatch>,
    /// Change rows read (before compaction).
    pub changes_read: usize,
}

fn column_index(schema: &Schema, name: &str) -> Option<usize> {
    schema
        .fields()
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(name))
}

/// Compacts `format`'s change output `batches` by `key` (see the module docs).
pub fn compact(
    batches: &[RecordBatch],
    format: ChangeFormat,
    key: &[String],
) -> Result<Compacted, String> {
    let Some(first) = batches.first() else {
        return Ok(Compacted::default());
    };
    let schema = first.schema();
    let all = concat_batches(&schema, batches).map_err(|e| e.to_string())?;
    let find = |name: &str| {
        column_index(&schema, name).ok_or_else(|| {
            format!(
                "the change output lacks the `{name}` column (its columns: {})",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    };
    let types = cast(all.column(find(format.type_column())?), &DataType::Utf8)
        .map_err(|e| e.to_string())?;
    let types = types.as_string::<i32>();
    let order: Option<ArrayRef> = match format.order_column() {
        Some(c) => {
            let col =
                cast(all.column(find(c)?), &DataType::Int64).map_err(|e| format!("{c}: {e}"))?;
            Some(col)
        }
        None => None,
    };
    let order = order
        .as_ref()
        .map(|o| o.as_primitive::<wharf_operators::arrow::datatypes::Int64Type>());
    let key_idx = key.iter().map(|k| find(k)).collect::<Result<Vec<_>, _>>()?;
    let options = FormatOptions::default();
    let formatters = key_idx
        .iter()
        .map(|i| ArrayFormatter::try_new(all.column(*i).as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;

    // (order, rank, row, op) in change order.
    let mut rows = Vec::with_capacity(all.num_rows());
    for row in 0..all.num_rows() {
        if !types.is_valid(row) {
            return Err(format!("a NULL change type in {}", format.type_column()));
        }
        if let Some((op, rank)) = format.classify(types.value(row))? {
            let at = order.map(|o| {
                if o.is_valid(row) {
                    o.value(row)
                } else {
                    i64::MIN
                }
            });
            rows.push((at.unwrap_or(0), rank, row, op));
        }
    }
    rows.sort_by_key(|(at, rank, row, _)| (*at, *rank, *row));

    let mut by_key: HashMap<Vec<Option<String>>, usize> = HashMap::new();
    // (row, compacted change, born: the key's first change in the window was an insert).
    let mut out: Vec<(usize, ChangeOp, bool)> = Vec::new();
    for (_, _, row, op) in rows {
        let k: Vec<Option<String>> = key_idx
            .iter()
            .zip(&formatters)
            .map(|(i, f)| {
                all.column(*i)
                    .is_valid(row)
                    .then(|| f.value(row).to_string())
            })
            .collect();
        if k.iter().any(Option::is_none) {
            // Rejected by the run with the usual reason.
            out.push((row, op, false));
            continue;
        }
        match by_key.get(&k) {
            Some(&i) => {
                let (_, before, born) = out[i];
                out[i] = (row, combine(before, op), born);
            }
            None => {
                by_key.insert(k, out.len());
                out.push((row, op, op == ChangeOp::Insert));
            }
        }
    }

    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|i| {
            !format
                .metadata_columns()
                .iter()
                .any(|m| schema.field(*i).name().eq_ignore_ascii_case(m))
        })
        .collect();
    let table = all.project(&keep).map_err(|e| e.to_string())?;
    let indices = wharf_operators::arrow::array::UInt32Array::from(
        out.iter().map(|(row, ..)| *row as u32).collect::<Vec<_>>(),
    );
    let picked = take_record_batch(&table, &indices).map_err(|e| e.to_string())?;
    let ops: ArrayRef = Arc::new(StringArray::from(
        out.iter()
            .map(|(_, op, born)| op_text(*op, *born))
            .collect::<Vec<_>>(),
    ));
    let mut fields: Vec<Field> = picked
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(OP_COLUMN, DataType::Utf8, false));
    let mut columns = picked.columns().to_vec();
    columns.push(ops);
    let batch =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())?;
    Ok(Compacted {
        batches: if batch.num_rows() > 0 {
            vec![batch]
        } else {
            Vec::new()
        },
        changes_read: all.num_rows(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_operators::arrow::array::{BooleanArray, Int64Array};

    fn ops_of(c: &Compacted) -> Vec<(i64, String, String)> {
        let b = &c.batches[0];
        let ids = b
            .column(0)
            .as_primitive::<wharf_operators::arrow::datatypes::Int64Type>();
        let names = b.column(1).as_string::<i32>();
        let ops = b.column(b.num_columns() - 1).as_string::<i32>();
        let mut v: Vec<_> = (0..b.num_rows())
            .map(|i| {
                (
                    ids.value(i),
                    names.value(i).to_string(),
                    ops.value(i).to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn snowflake_net_changes_pair_into_updates() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ID", DataType::Int64, true),
            Field::new("NAME", DataType::Utf8, true),
            Field::new("METADATA$ACTION", DataType::Utf8, true),
            Field::new("METADATA$ISUPDATE", DataType::Boolean, true),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 1, 3])),
                Arc::new(StringArray::from(vec!["new", "gone", "old", "added"])),
                Arc::new(StringArray::from(vec![
                    "INSERT", "DELETE", "DELETE", "INSERT",
                ])),
                Arc::new(BooleanArray::from(vec![true, false, true, false])),
            ],
        )
        .unwrap();
        let c = compact(&[b], ChangeFormat::Snowflake, &["ID".into()]).unwrap();
        assert_eq!(c.changes_read, 4);
        assert_eq!(
            c.batches[0].num_columns(),
            3,
            "metadata columns dropped, op added"
        );
        assert_eq!(
            ops_of(&c),
            vec![
                (1, "new".into(), "update".into()),
                (2, "gone".into(), "delete".into()),
                (3, "added".into(), "insert".into()),
            ]
        );
    }

    #[test]
    fn databricks_feed_folds_versions_in_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("_change_type", DataType::Utf8, true),
            Field::new("_commit_version", DataType::Int64, true),
        ]));
        // Out of order on purpose: the fold sorts by version.
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 1, 1, 2, 2, 3, 3])),
                Arc::new(StringArray::from(vec![
                    "v3", "v2-pre", "v1", "x", "x", "a", "b",
                ])),
                Arc::new(StringArray::from(vec![
                    "update_postimage",
                    "update_preimage",
                    "insert",
                    "insert",
                    "delete",
                    "delete",
                    "insert",
                ])),
                Arc::new(Int64Array::from(vec![3, 3, 2, 4, 5, 6, 7])),
            ],
        )
        .unwrap();
        let c = compact(&[b], ChangeFormat::Databricks, &["id".into()]).unwrap();
        assert_eq!(
            ops_of(&c),
            vec![
                (1, "v3".into(), "insert".into()),
                // Inserted, then deleted within the window: a delete of a new key.
                (2, "x".into(), "delete_new".into()),
                (3, "b".into(), "update".into()),
            ]
        );
    }

    #[test]
    fn unknown_change_types_fail_clearly() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("_CHANGE_TYPE", DataType::Utf8, true),
            Field::new("_CHANGE_TIMESTAMP", DataType::Int64, true),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(StringArray::from(vec!["MERGE"])),
                Arc::new(Int64Array::from(vec![1])),
            ],
        )
        .unwrap();
        let e = compact(&[b], ChangeFormat::BigQuery, &["id".into()]).unwrap_err();
        assert!(e.contains("MERGE"), "{e}");
        let e = compact(
            &[RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
                vec![Arc::new(Int64Array::from(vec![1]))],
            )
            .unwrap()],
            ChangeFormat::BigQuery,
            &["id".into()],
        )
        .unwrap_err();
        assert!(e.contains("_CHANGE_TYPE"), "{e}");
    }
}
