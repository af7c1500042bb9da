//! The append-mode cursor: the largest insert time seen in a run.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::encode::to_micros;

/// A position in an insert-time column, kept in the column's own domain so that the next
/// run's `WHERE insert_time > watermark` compares like with like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Watermark {
    /// An integer column (e.g. epoch seconds or a sequence number).
    Integer(i64),
    /// A TIMESTAMP / TIMESTAMPTZ column, as microseconds since the epoch (UTC).
    TimestampMicros(i64),
    /// A DATE column, as days since the epoch.
    Date(i32),
}

impl std::fmt::Display for Watermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Watermark::Integer(v) => write!(f, "{v}"),
            Watermark::TimestampMicros(us) => {
                let mut out = Vec::new();
                crate::encode::write_iso_micros(&mut out, *us);
                f.write_str(String::from_utf8_lossy(&out).trim_matches('"'))
            }
            Watermark::Date(d) => {
                let mut out = Vec::new();
                crate::encode::write_iso_date(&mut out, *d as i64);
                f.write_str(String::from_utf8_lossy(&out).trim_matches('"'))
            }
        }
    }
}

impl Watermark {
    /// A change stream's position that is a number (a PostgreSQL LSN, a Delta table version)
    /// as a watermark.
    pub fn from_position(position: u64) -> Watermark {
        Watermark::Integer(i64::try_from(position).unwrap_or(i64::MAX))
    }

    /// The number of a change stream's position ([`Watermark::from_position`]'s inverse);
    /// `None` for a time or a negative number.
    pub fn position(self) -> Option<u64> {
        match self {
            Watermark::Integer(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The position `window` earlier (a look-back for late rows); `None` for integer cursors,
    /// which have no unit of time. Dates step back by whole days, rounded up.
    pub fn earlier_by(self, window: std::time::Duration) -> Option<Watermark> {
        match self {
            Watermark::Integer(_) => None,
            Watermark::TimestampMicros(us) => {
                let back = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
                Some(Watermark::TimestampMicros(us.saturating_sub(back)))
            }
            Watermark::Date(d) => {
                let days = window.as_secs().div_ceil(86_400);
                Some(Watermark::Date(
                    d.saturating_sub(i32::try_from(days).unwrap_or(i32::MAX)),
                ))
            }
        }
    }
}

/// Whether a column of this type can serve as an append cursor.
pub fn is_cursor_type(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(_, _) | DataType::Date32) || t.is_integer()
}

/// The largest non-NULL value of `array` as a watermark; `None` when all values are NULL or the
/// type cannot be a cursor.
pub fn column_max(array: &dyn Array) -> Option<Watermark> {
    use arrow::compute::max;
    use arrow::datatypes as t;
    let ts = |unit: &TimeUnit| -> Option<i64> {
        Some(to_micros(
            match unit {
                TimeUnit::Second => max(array.as_primitive::<t::TimestampSecondType>())?,
                TimeUnit::Millisecond => max(array.as_primitive::<t::TimestampMillisecondType>())?,
                TimeUnit::Microsecond => max(array.as_primitive::<t::TimestampMicrosecondType>())?,
                TimeUnit::Nanosecond => max(array.as_primitive::<t::TimestampNanosecondType>())?,
            },
            *unit,
        ))
    };
    Some(match array.data_type() {
        DataType::Timestamp(unit, _) => Watermark::TimestampMicros(ts(unit)?),
        DataType::Date32 => Watermark::Date(max(array.as_primitive::<t::Date32Type>())?),
        DataType::Int8 => Watermark::Integer(max(array.as_primitive::<t::Int8Type>())? as i64),
        DataType::Int16 => Watermark::Integer(max(array.as_primitive::<t::Int16Type>())? as i64),
        DataType::Int32 => Watermark::Integer(max(array.as_primitive::<t::Int32Type>())? as i64),
        DataType::Int64 => Watermark::Integer(max(array.as_primitive::<t::Int64Type>())?),
        DataType::UInt8 => Watermark::Integer(max(array.as_primitive::<t::UInt8Type>())? as i64),
        DataType::UInt16 => Watermark::Integer(max(array.as_primitive::<t::UInt16Type>())? as i64),
        DataType::UInt32 => Watermark::Integer(max(array.as_primitive::<t::UInt32Type>())? as i64),
        DataType::UInt64 => {
            Watermark::Integer(i64::try_from(max(array.as_primitive::<t::UInt64Type>())?).ok()?)
        }
        _ => return None,
    })
}

/// The larger of two optional watermarks.
pub fn max_watermark(a: Option<Watermark>, b: Option<Watermark>) -> Option<Watermark> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMillisecondArray};

    #[test]
    fn max_of_columns() {
        let a = Int64Array::from(vec![Some(3), None, Some(9)]);
        assert_eq!(column_max(&a), Some(Watermark::Integer(9)));
        let t = TimestampMillisecondArray::from(vec![Some(1_000), Some(2_500)]);
        assert_eq!(column_max(&t), Some(Watermark::TimestampMicros(2_500_000)));
        let n = Int64Array::from(vec![None::<i64>]);
        assert_eq!(column_max(&n), None);
        assert_eq!(
            Watermark::TimestampMicros(2_500_000).to_string(),
            "1970-01-01T00:00:02.500Z"
        );
    }
}
