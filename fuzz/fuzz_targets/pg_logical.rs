//! PostgreSQL logical decoding (`pgoutput` messages → compacted changes → Arrow batches), and
//! the column decoders it and snapshot reads use (PostgreSQL's text and binary formats).
//!
//! Input: `[columns][kind per column][flags]([xmin u32][xmax u32][lsn u64] if flags & 4)`,
//! then the messages, each as `[u16 BE length][bytes]` (the `data` of one row of
//! `pg_logical_slot_peek_binary_changes`). With `flags & 8` the values go to the column
//! builders instead (binary, or text with `flags & 16`).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use wharf::warehouse::postgres::logical::SnapshotVisibility;
use wharf::warehouse::postgres::types::{ColumnBuilder, PgKind};
use wharf::warehouse::postgres::Layout;
use wharf_operators::arrow::array::{Array, AsArray, RecordBatch};
use wharf_operators::arrow::datatypes::{Field, Schema};

fn kind(code: u8) -> PgKind {
    const KINDS: usize = 21;
    match code as usize % KINDS {
        0 => PgKind::Int4,
        1 => PgKind::Int8,
        2 => PgKind::Text,
        3 => PgKind::Bool,
        4 => PgKind::Int2,
        5 => PgKind::Float4,
        6 => PgKind::Float8,
        7 => PgKind::Decimal(10, 2),
        8 => PgKind::Decimal(38, 0),
        9 => PgKind::NumericFloat,
        10 => PgKind::Json,
        11 => PgKind::Jsonb,
        12 => PgKind::Uuid,
        13 => PgKind::Bytea,
        14 => PgKind::Date,
        15 => PgKind::Timestamp,
        16 => PgKind::TimestampTz,
        17 => PgKind::Array(Box::new(PgKind::Int4)),
        18 => PgKind::Array(Box::new(PgKind::Text)),
        19 => PgKind::AsText,
        _ => PgKind::Oid,
    }
}

/// Splits `[u16 BE length][bytes]…`; a short last piece is taken as it is.
fn pieces(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let (piece, tail) = rest.split_at(len.min(rest.len()));
        out.push(piece);
        data = tail;
    }
    out
}

/// Every row of `batch` encodes as a JSON object (what the mapping step relies on).
fn check_json(batch: &RecordBatch) {
    for row in 0..batch.num_rows().min(64) {
        let json = wharf_operators::columns::row_json(batch, row);
        serde_json::from_str::<serde_json::Value>(&json).expect("row_json is JSON");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = 1 + usize::from(n % 6);
    if rest.len() < n + 1 {
        return;
    }
    let (codes, rest) = rest.split_at(n);
    let (&flags, mut rest) = rest.split_first().unwrap();
    let kinds: Vec<PgKind> = codes.iter().map(|&c| kind(c)).collect();

    if flags & 8 != 0 {
        // The column builders on their own.
        let mut builders: Vec<ColumnBuilder> = kinds.iter().map(ColumnBuilder::new).collect();
        let values = pieces(rest);
        let mut rows = 0;
        'rows: for row in values.chunks(n) {
            if row.len() < n {
                break;
            }
            // A row is appended only when every column took its value (as the readers do:
            // an error ends the read).
            let mut trial: Vec<ColumnBuilder> = kinds.iter().map(ColumnBuilder::new).collect();
            for (b, v) in trial.iter_mut().zip(row) {
                let v = (!v.is_empty()).then_some(*v);
                let ok = if flags & 16 != 0 {
                    let text = v.map(String::from_utf8_lossy);
                    b.push_text(text.as_deref()).is_ok()
                } else {
                    b.push_binary(v).is_ok()
                };
                if !ok {
                    continue 'rows;
                }
            }
            for (b, v) in builders.iter_mut().zip(row) {
                let v = (!v.is_empty()).then_some(*v);
                if flags & 16 != 0 {
                    let text = v.map(String::from_utf8_lossy);
                    b.push_text(text.as_deref()).unwrap();
                } else {
                    b.push_binary(v).unwrap();
                }
            }
            rows += 1;
        }
        let columns: Vec<_> = builders.iter_mut().map(ColumnBuilder::finish).collect();
        let fields: Vec<Field> = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| Field::new(format!("c{i}"), k.arrow_type(), true))
            .collect();
        for c in &columns {
            assert_eq!(c.len(), rows);
            c.to_data().validate_full().expect("a valid column");
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .expect("columns of the layout's types");
        check_json(&batch);
        return;
    }

    let seen = if flags & 4 != 0 {
        if rest.len() < 16 {
            return;
        }
        let (s, tail) = rest.split_at(16);
        rest = tail;
        let xmin = u64::from(u32::from_be_bytes(s[0..4].try_into().unwrap()));
        let xmax = u64::from(u32::from_be_bytes(s[4..8].try_into().unwrap()));
        let lsn = u64::from_be_bytes(s[8..16].try_into().unwrap());
        Some(SnapshotVisibility {
            xmin,
            xmax,
            xip: vec![xmin + 1],
            lsn,
        })
    } else {
        None
    };
    let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let layout = Layout {
        arrow: Arc::new(Schema::new(
            names
                .iter()
                .zip(&kinds)
                .map(|(name, k)| Field::new(name, k.arrow_type(), true))
                .collect::<Vec<_>>(),
        )),
        names: names.clone(),
        kinds,
    };
    let keys = &names[..usize::from(flags & 3).min(n)];
    let messages = pieces(rest);
    if let Ok(poll) = wharf::fuzzing::pg_logical(&layout, keys, seen, &messages) {
        let mut rows = 0;
        for batch in &poll.batches {
            rows += batch.num_rows();
            assert_eq!(batch.num_columns(), n + 1);
            let ops = batch.column(n).as_string::<i32>();
            for op in ops.iter() {
                // `delete_new`: a key inserted and deleted within the poll.
                assert!(
                    matches!(op, Some("insert" | "update" | "delete" | "delete_new")),
                    "{op:?}"
                );
            }
            check_json(batch);
        }
        // Compaction never adds changes.
        assert!(rows <= poll.changes_read);
        // A key-changing UPDATE is read as a delete and an insert.
        assert!(poll.changes_read + poll.changes_skipped <= 2 * messages.len());
    }
});
