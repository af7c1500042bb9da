//! Snowflake's Arrow result encoding → plain Arrow.
//!
//! | Snowflake (`rowtype.type`) | on the wire | wharf's Arrow type |
//! |---|---|---|
//! | `fixed`, scale 0 | int8–int64 or decimal128(p,0) | Int64 (a value beyond 64 bits is an error) |
//! | `fixed`, scale s > 0 | integers holding value × 10^s, or decimal128(p,s) | Decimal128(p, s) |
//! | `real` | double | Float64 |
//! | `text` | utf8 | Utf8 |
//! | `variant`, `object`, `array` | utf8 (JSON text) | Utf8 (JSON text; use it as `properties_column` to flatten it) |
//! | `boolean` | bool | Boolean |
//! | `date` | date32 | Date32 |
//! | `time` | int64 in units of 10^-scale s | Time64(ns) |
//! | `timestamp_ntz` | int64 (10^-scale s) or struct{epoch s, fraction ns} | Timestamp(µs) |
//! | `timestamp_ltz`, `timestamp_tz` | the same, TZ with a `timezone` field (offset + 1440) | Timestamp(µs, UTC) (the instant; the original offset is not kept) |
//! | `binary` | binary | Binary |
//!
//! A timestamp is NULL when its struct is null or its `epoch` is null: Snowflake's encoding
//! (and fakesnow's) leaves the struct valid and puts the null in its non-nullable children,
//! which arrow-rs' IPC validation refuses, so the IPC stream is read without validation and
//! every column is validated here, after conversion.

use std::io::Read;
use std::sync::Arc;

use serde::Deserialize;
use wharf_operators::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Int64Array, RecordBatch, Time64NanosecondArray,
    TimestampMicrosecondArray,
};
use wharf_operators::arrow::compute::{cast_with_options, CastOptions};
use wharf_operators::arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
};

/// One column of a query answer's `rowtype`.
#[derive(Debug, Clone, Deserialize)]
pub struct RowType {
    /// Column name (as stored: unquoted names are upper case).
    pub name: String,
    /// `fixed`, `real`, `text`, `timestamp_ntz`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// NUMBER precision.
    #[serde(default)]
    pub precision: Option<u32>,
    /// NUMBER / TIME / TIMESTAMP scale.
    #[serde(default)]
    pub scale: Option<i32>,
    /// Whether NULLs are allowed.
    #[serde(default = "yes")]
    pub nullable: bool,
}

fn yes() -> bool {
    true
}

impl RowType {
    /// The type as Snowflake names it, e.g. `NUMBER(10,2)`.
    pub fn sql_type(&self) -> String {
        match self.kind.as_str() {
            "fixed" => format!(
                "NUMBER({},{})",
                self.precision.unwrap_or(38),
                self.scale.unwrap_or(0)
            ),
            k => k.to_uppercase(),
        }
    }

    fn scale(&self) -> i32 {
        self.scale.unwrap_or(0)
    }

    /// wharf's Arrow type for the column.
    pub fn arrow_type(&self) -> DataType {
        match self.kind.as_str() {
            "fixed" if self.scale() <= 0 => DataType::Int64,
            "fixed" => DataType::Decimal128(
                self.precision.unwrap_or(38).clamp(1, 38) as u8,
                self.scale().clamp(0, 38) as i8,
            ),
            "real" => DataType::Float64,
            "boolean" => DataType::Boolean,
            "date" => DataType::Date32,
            "time" => DataType::Time64(TimeUnit::Nanosecond),
            "timestamp_ntz" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "timestamp_ltz" | "timestamp_tz" => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            "binary" => DataType::Binary,
            _ => DataType::Utf8,
        }
    }
}

/// The Arrow schema of a `rowtype`.
pub fn schema(rowtype: &[RowType]) -> SchemaRef {
    Arc::new(Schema::new(
        rowtype
            .iter()
            .map(|r| Field::new(&r.name, r.arrow_type(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Decodes one Arrow IPC stream of a result into batches of `schema`.
pub fn decode(
    bytes: &[u8],
    rowtype: &[RowType],
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, String> {
    let reader = crate::warehouse::ipc_read(|| {
        wharf_operators::arrow::ipc::reader::StreamReader::try_new(
            std::io::Cursor::new(bytes),
            None,
        )
    })?
    .map_err(|e| format!("not an Arrow stream: {e}"))?;
    // SAFETY: validation is skipped only to admit Snowflake's NULL timestamps (nulls in
    // non-nullable struct children); `convert` validates every array it passes on
    // (`validate_full`) or builds a new one from validated parts, before any value is read.
    let mut reader = unsafe { reader.with_skip_validation(true) };
    let mut out = Vec::new();
    while let Some(batch) = crate::warehouse::ipc_read(|| reader.next())? {
        let batch = batch.map_err(|e| format!("bad Arrow batch: {e}"))?;
        if batch.num_columns() != rowtype.len() {
            return Err(format!(
                "{} columns in the data, {} in the rowtype",
                batch.num_columns(),
                rowtype.len()
            ));
        }
        let columns = batch
            .columns()
            .iter()
            .zip(rowtype)
            .map(|(c, r)| convert(c, r).map_err(|e| format!("column {}: {e}", r.name)))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn checked(a: &ArrayRef) -> Result<(), String> {
    a.to_data().validate_full().map_err(|e| e.to_string())
}

fn strict() -> CastOptions<'static> {
    CastOptions {
        safe: false,
        ..Default::default()
    }
}

fn pow10(n: i32) -> i64 {
    10i64.pow(n.unsigned_abs().min(18))
}

/// Rescales integers in units of 10^-`from` to units of 10^-`to`.
fn rescale(v: i64, from: i32, to: i32) -> i64 {
    if to >= from {
        v.saturating_mul(pow10(to - from))
    } else {
        v / pow10(from - to)
    }
}

/// One column to its [`RowType::arrow_type`].
fn convert(col: &ArrayRef, rt: &RowType) -> Result<ArrayRef, String> {
    let target = rt.arrow_type();
    match (&target, col.data_type()) {
        (DataType::Timestamp(_, tz), DataType::Struct(_)) => {
            let s = col.as_struct();
            let epoch = s
                .column_by_name("epoch")
                .ok_or("timestamp struct without `epoch`")?;
            checked(epoch)?;
            let epoch =
                cast_with_options(epoch, &DataType::Int64, &strict()).map_err(|e| e.to_string())?;
            let epoch = epoch.as_primitive::<Int64Type>();
            let fraction = match s.column_by_name("fraction") {
                Some(f) => {
                    checked(f)?;
                    Some(
                        cast_with_options(f, &DataType::Int32, &strict())
                            .map_err(|e| e.to_string())?,
                    )
                }
                None => None,
            };
            let fraction = fraction.as_ref().map(|f| f.as_primitive::<Int32Type>());
            let values: TimestampMicrosecondArray = (0..s.len())
                .map(|i| {
                    if s.is_null(i) || epoch.is_null(i) {
                        return None;
                    }
                    let ns = fraction
                        .filter(|f| !f.is_null(i))
                        .map(|f| i64::from(f.value(i)))
                        .unwrap_or(0);
                    Some(
                        epoch
                            .value(i)
                            .saturating_mul(1_000_000)
                            .saturating_add(ns / 1000),
                    )
                })
                .collect();
            Ok(Arc::new(values.with_timezone_opt(tz.clone())))
        }
        (DataType::Timestamp(_, tz), t) if t.is_integer() => {
            checked(col)?;
            let v = ints(col)?;
            let scale = rt.scale.unwrap_or(9);
            let out: TimestampMicrosecondArray =
                v.iter().map(|x| x.map(|x| rescale(x, scale, 6))).collect();
            Ok(Arc::new(out.with_timezone_opt(tz.clone())))
        }
        (DataType::Time64(_), t) if t.is_integer() => {
            checked(col)?;
            let v = ints(col)?;
            let scale = rt.scale.unwrap_or(9);
            let out: Time64NanosecondArray =
                v.iter().map(|x| x.map(|x| rescale(x, scale, 9))).collect();
            Ok(Arc::new(out))
        }
        (DataType::Decimal128(p, s), t) if t.is_integer() => {
            // Real Snowflake: the integer is the value × 10^scale.
            checked(col)?;
            let v = ints(col)?;
            let out = v
                .iter()
                .map(|x| x.map(i128::from))
                .collect::<Decimal128Array>()
                .with_precision_and_scale(*p, *s)
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(out))
        }
        (target, t) if target == t => {
            checked(col)?;
            Ok(col.clone())
        }
        (target, _) => {
            checked(col)?;
            cast_with_options(col, target, &strict()).map_err(|e| e.to_string())
        }
    }
}

fn ints(col: &ArrayRef) -> Result<Int64Array, String> {
    let c = cast_with_options(col, &DataType::Int64, &strict()).map_err(|e| e.to_string())?;
    Ok(c.as_primitive::<Int64Type>().clone())
}

/// Result chunks may come gzip-compressed.
pub fn gunzip_if_needed(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| format!("bad gzip chunk: {e}"))?;
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_operators::arrow::array::{Int32Array, StructArray};
    use wharf_operators::arrow::buffer::NullBuffer;
    use wharf_operators::arrow::ipc::writer::StreamWriter;

    fn rt(kind: &str, precision: Option<u32>, scale: Option<i32>) -> RowType {
        RowType {
            name: "C".into(),
            kind: kind.into(),
            precision,
            scale,
            nullable: true,
        }
    }

    fn ipc(col: ArrayRef) -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "C",
            col.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![col]).unwrap();
        let mut out = Vec::new();
        let mut w = StreamWriter::try_new(&mut out, &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        out
    }

    fn one(col: ArrayRef, r: RowType) -> ArrayRef {
        let rows = [r];
        let batches = decode(&ipc(col), &rows, &schema(&rows)).unwrap();
        batches[0].column(0).clone()
    }

    #[test]
    fn real_snowflake_scaled_integers() {
        // NUMBER(10,2) as value × 100 in an int32.
        let d = one(
            Arc::new(Int32Array::from(vec![Some(1234), None, Some(-5)])),
            rt("fixed", Some(10), Some(2)),
        );
        let d = d.as_primitive::<wharf_operators::arrow::datatypes::Decimal128Type>();
        assert_eq!(d.value_as_string(0), "12.34");
        assert!(d.is_null(1));
        assert_eq!(d.value_as_string(2), "-0.05");
        // TIMESTAMP_NTZ(3) as milliseconds in an int64.
        let t = one(
            Arc::new(Int64Array::from(vec![Some(1_704_164_645_123)])),
            rt("timestamp_ntz", None, Some(3)),
        );
        assert_eq!(
            t.as_primitive::<wharf_operators::arrow::datatypes::TimestampMicrosecondType>()
                .value(0),
            1_704_164_645_123_000
        );
        // TIME(9) as nanoseconds.
        let t = one(
            Arc::new(Int64Array::from(vec![Some(45_296_789_000_000)])),
            rt("time", None, Some(9)),
        );
        assert_eq!(
            t.as_primitive::<wharf_operators::arrow::datatypes::Time64NanosecondType>()
                .value(0),
            45_296_789_000_000
        );
    }

    #[test]
    fn timestamp_structs_with_nulls_in_their_children() {
        // Snowflake's layout: a valid struct, the NULL in the non-nullable children.
        let fields = vec![
            Field::new("epoch", DataType::Int64, false),
            Field::new("fraction", DataType::Int32, false),
        ];
        let epoch: ArrayRef = Arc::new(Int64Array::from(vec![Some(1_704_164_645), None]));
        let fraction: ArrayRef = Arc::new(Int32Array::from(vec![Some(123_456_000), None]));
        let s = unsafe {
            StructArray::new_unchecked(fields.into(), vec![epoch, fraction], None::<NullBuffer>)
        };
        let t = one(Arc::new(s), rt("timestamp_ltz", None, Some(9)));
        assert_eq!(
            t.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        let t = t.as_primitive::<wharf_operators::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(t.value(0), 1_704_164_645_123_456);
        assert!(t.is_null(1));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/warehouse_responses.rs): an epoch at the end of
    /// the range plus its fraction overflowed (a panic in debug builds); it saturates.
    #[test]
    fn timestamp_structs_at_the_ends_of_the_range_saturate() {
        let fields = vec![
            Field::new("epoch", DataType::Int64, false),
            Field::new("fraction", DataType::Int32, false),
        ];
        let epoch: ArrayRef = Arc::new(Int64Array::from(vec![i64::MAX, i64::MIN]));
        let fraction: ArrayRef = Arc::new(Int32Array::from(vec![999_999_999, -999_999_999]));
        let s = StructArray::new(fields.into(), vec![epoch, fraction], None);
        let t = one(Arc::new(s), rt("timestamp_ntz", None, Some(9)));
        let t = t.as_primitive::<wharf_operators::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!((t.value(0), t.value(1)), (i64::MAX, i64::MIN));
    }

    #[test]
    fn wide_integers_are_an_error_not_a_wrong_value() {
        let big = Decimal128Array::from(vec![Some(i128::from(i64::MAX) * 10)])
            .with_precision_and_scale(38, 0)
            .unwrap();
        let rows = [rt("fixed", Some(38), Some(0))];
        let e = decode(&ipc(Arc::new(big)), &rows, &schema(&rows)).unwrap_err();
        assert!(e.contains("column C"), "{e}");
    }
}
