//! Finding a sync's configured columns in a table's schema, with errors that name the
//! setting and the table's columns; a row as plain JSON for previews and rejects.

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Schema};

use crate::encode::{write_json_str, write_value};

/// The mapping cannot be applied to this table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    /// A configured column is not in the table.
    #[error("column `{column}` (configured as {role}) is not in the table; its columns are: {available}")]
    UnknownColumn {
        /// The missing column.
        column: String,
        /// Which setting named it.
        role: &'static str,
        /// The table's columns, comma-separated.
        available: String,
    },
    /// A configured column has a type that cannot serve its role.
    #[error("column `{column}` (configured as {role}) has type {found}; expected {expected}")]
    WrongType {
        /// The column.
        column: String,
        /// Which setting named it.
        role: &'static str,
        /// Its Arrow type.
        found: String,
        /// What would work.
        expected: &'static str,
    },
}

/// The index of `column` in `schema`, or an error naming the setting (`role`) and the
/// table's columns.
pub fn find_column(
    schema: &Schema,
    column: &str,
    role: &'static str,
) -> Result<usize, MappingError> {
    schema
        .index_of(column)
        .map_err(|_| MappingError::UnknownColumn {
            column: column.to_string(),
            role,
            available: schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

pub(crate) fn check_type(
    schema: &Schema,
    idx: usize,
    role: &'static str,
    expected: &'static str,
    ok: impl Fn(&DataType) -> bool,
) -> Result<(), MappingError> {
    let field = schema.field(idx);
    if ok(field.data_type()) {
        Ok(())
    } else {
        Err(MappingError::WrongType {
            column: field.name().clone(),
            role,
            found: field.data_type().to_string(),
            expected,
        })
    }
}

pub(crate) fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

pub(crate) fn is_id(t: &DataType) -> bool {
    is_text(t) || t.is_integer()
}

pub(crate) fn is_time(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    ) || t.is_integer()
}

/// A row as a plain JSON object of all its non-NULL columns (for previews and rejects).
pub fn row_json(batch: &RecordBatch, row: usize) -> String {
    let mut out = b"{".to_vec();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if c.is_null(row) {
            continue;
        }
        let mark = out.len();
        if out.len() > 1 {
            out.push(b',');
        }
        write_json_str(&mut out, f.name());
        out.push(b':');
        if !write_value(c.as_ref(), row, &mut out) {
            out.truncate(mark);
        }
    }
    out.push(b'}');
    String::from_utf8_lossy(&out).into_owned()
}
