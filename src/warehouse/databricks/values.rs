//! Databricks result columns → Arrow, by the manifest's column types.
//!
//! | manifest `type_name` (Databricks; DuckDB names as minilake reports them) | Arrow |
//! |---|---|
//! | BYTE, SHORT, INT, LONG (TINYINT … BIGINT, HUGEINT) | Int64 |
//! | FLOAT, DOUBLE (REAL) | Float64 |
//! | DECIMAL(p,s) | Decimal128(p, s) |
//! | BOOLEAN | Boolean |
//! | DATE | Date32 |
//! | TIMESTAMP (TIMESTAMP WITH TIME ZONE) | Timestamp(µs, UTC): Databricks' TIMESTAMP is an instant |
//! | TIMESTAMP_NTZ | Timestamp(µs) |
//! | STRING, ARRAY, MAP, STRUCT, BINARY, INTERVAL, anything else (VARCHAR, JSON, …) | Utf8, as the API renders it (complex types: JSON text on Databricks) |
//!
//! Values come as JSON (`JSON_ARRAY`: strings on Databricks; minilake also sends numbers and
//! booleans natively) or as Arrow (`ARROW_STREAM`: typed on Databricks; minilake sends
//! everything but integers, doubles and booleans as text, and all-NULL columns as the null
//! type). Both go through the same parsing, so either source gives the same Arrow.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use wharf_operators::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array,
    Float64Array, Int64Array, StringBuilder, TimestampMicrosecondArray,
};
use wharf_operators::arrow::compute::{cast_with_options, CastOptions};
use wharf_operators::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// A column of the result manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// e.g. `LONG`, `DECIMAL` (Databricks) or `BIGINT`, `DECIMAL(10,2)` (minilake).
    #[serde(default)]
    pub type_name: String,
    /// e.g. `bigint`, `decimal(10,2)`.
    #[serde(default)]
    pub type_text: String,
    /// DECIMAL precision (Databricks).
    #[serde(default)]
    pub type_precision: Option<u8>,
    /// DECIMAL scale (Databricks).
    #[serde(default)]
    pub type_scale: Option<i8>,
}

/// `(p, s)` of a `DECIMAL(p,s)` type text.
fn decimal_args(text: &str) -> Option<(u8, i8)> {
    let inner = text.split_once('(')?.1.trim_end_matches(')');
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

impl Column {
    /// The column's Arrow type.
    pub fn arrow_type(&self) -> DataType {
        let name = self.type_name.to_ascii_uppercase();
        let base = name.split('(').next().unwrap_or("").trim().to_string();
        match base.as_str() {
            "BYTE" | "SHORT" | "INT" | "LONG" | "TINYINT" | "SMALLINT" | "INTEGER" | "BIGINT"
            | "HUGEINT" | "UTINYINT" | "USMALLINT" | "UINTEGER" => DataType::Int64,
            "FLOAT" | "DOUBLE" | "REAL" => DataType::Float64,
            "DECIMAL" | "NUMERIC" => {
                let (p, s) = match (self.type_precision, self.type_scale) {
                    (Some(p), Some(s)) => (p, s),
                    _ => decimal_args(&self.type_name)
                        .or_else(|| decimal_args(&self.type_text))
                        .unwrap_or((38, 18)),
                };
                DataType::Decimal128(p.clamp(1, 38), s.clamp(0, 38))
            }
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "DATE" => DataType::Date32,
            "TIMESTAMP_NTZ" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "TIMESTAMP" | "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            _ => DataType::Utf8,
        }
    }
}

/// The Arrow schema of the manifest's columns.
pub fn schema(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.arrow_type(), true))
            .collect::<Vec<_>>(),
    ))
}

/// A value as text (JSON strings as they are, numbers and booleans printed).
fn text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.as_str().into()),
        other => Some(other.to_string().into()),
    }
}

/// Microseconds since the epoch of `2024-01-02 03:04:05.123456`, `2024-01-02T03:04:05Z`,
/// `…+02:00` (naive texts are UTC).
fn parse_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&s.replace(' ', "T")) {
        return Some(t.timestamp_micros());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = chrono::DateTime::parse_from_str(s, f) {
            return Some(t.timestamp_micros());
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// `12.34` → 1234 at scale 2 (exact, no float).
fn parse_decimal(s: &str, scale: i8) -> Option<i128> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    // One sign: `--5` and `+-5` are not numbers (and `--` before i128::MIN overflowed).
    if s.starts_with(['+', '-']) {
        return None;
    }
    if s.contains(['e', 'E']) {
        // Exponent notation: through f64 (rare; only emulators print it).
        let f: f64 = s.parse().ok()?;
        let v = (f * 10f64.powi(i32::from(scale))).round() as i128;
        return Some(if neg { -v } else { v });
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let scale = scale.max(0) as usize;
    let mut digits = String::with_capacity(int.len() + scale);
    digits.push_str(if int.is_empty() { "0" } else { int });
    let kept: String = frac.chars().take(scale).collect();
    digits.push_str(&kept);
    digits.extend(std::iter::repeat_n('0', scale - kept.len()));
    let v: i128 = digits.parse().ok()?;
    Some(if neg { -v } else { v })
}

/// Builds a column of type `ty` from `n` values read by `get(i)` (`None` = NULL). A value
/// that does not parse is an error naming it.
pub fn build<'a>(
    ty: &DataType,
    n: usize,
    get: impl Fn(usize) -> Option<std::borrow::Cow<'a, str>>,
) -> Result<ArrayRef, String> {
    // Each value parsed by `parse`, NULLs kept, into the array type `A`.
    fn column<'a, A: FromIterator<Option<V>>, V>(
        ty: &DataType,
        n: usize,
        get: &impl Fn(usize) -> Option<std::borrow::Cow<'a, str>>,
        parse: impl Fn(&str) -> Option<V>,
    ) -> Result<A, String> {
        (0..n)
            .map(|i| {
                get(i)
                    .map(|v| parse(&v).ok_or_else(|| format!("`{v}` is not a {ty}")))
                    .transpose()
            })
            .collect()
    }
    Ok(match ty {
        DataType::Int64 => Arc::new(column::<Int64Array, _>(ty, n, &get, |v| {
            v.trim().parse().ok()
        })?),
        DataType::Float64 => Arc::new(column::<Float64Array, _>(ty, n, &get, |v| {
            match v.trim() {
                "NaN" => Some(f64::NAN),
                "Infinity" => Some(f64::INFINITY),
                "-Infinity" => Some(f64::NEG_INFINITY),
                t => t.parse().ok(),
            }
        })?),
        DataType::Decimal128(p, s) => Arc::new(
            column::<Decimal128Array, _>(ty, n, &get, |v| parse_decimal(v, *s))?
                .with_precision_and_scale(*p, *s)
                .map_err(|e| e.to_string())?,
        ),
        DataType::Boolean => Arc::new(column::<BooleanArray, _>(ty, n, &get, |v| {
            match v.trim() {
                "true" | "True" | "TRUE" | "1" => Some(true),
                "false" | "False" | "FALSE" | "0" => Some(false),
                _ => None,
            }
        })?),
        DataType::Date32 => Arc::new(column::<Date32Array, _>(ty, n, &get, |v| {
            let d = chrono::NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d").ok()?;
            i32::try_from((d - chrono::NaiveDate::default()).num_days()).ok()
        })?),
        DataType::Timestamp(_, tz) => Arc::new(
            column::<TimestampMicrosecondArray, _>(ty, n, &get, parse_micros)?
                .with_timezone_opt(tz.clone()),
        ),
        _ => {
            let mut b = StringBuilder::with_capacity(n, n * 16);
            for i in 0..n {
                b.append_option(get(i));
            }
            Arc::new(b.finish())
        }
    })
}

/// Rows of a `JSON_ARRAY` result (`data_array`) as columns of `schema`.
pub fn from_json_rows(schema: &SchemaRef, rows: &[Vec<Value>]) -> Result<Vec<ArrayRef>, String> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(c, f)| {
            build(f.data_type(), rows.len(), |i| {
                rows.get(i).and_then(|r| r.get(c)).and_then(text)
            })
            .map_err(|e| format!("column {}: {e}", f.name()))
        })
        .collect()
}

/// An `ARROW_STREAM` column as the manifest's type.
pub fn from_arrow(col: &ArrayRef, ty: &DataType) -> Result<ArrayRef, String> {
    if col.data_type() == ty {
        return Ok(col.clone());
    }
    match col.data_type() {
        DataType::Null => Ok(new_null_array(ty, col.len())),
        DataType::Utf8 if ty != &DataType::Utf8 => {
            let s = col.as_string::<i32>();
            build(ty, s.len(), |i| {
                (!s.is_null(i)).then(|| std::borrow::Cow::Borrowed(s.value(i)))
            })
        }
        _ => cast_with_options(
            col,
            ty,
            &CastOptions {
                safe: false,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(type_name: &str, text: &str) -> Column {
        Column {
            name: "c".into(),
            type_name: type_name.into(),
            type_text: text.into(),
            type_precision: None,
            type_scale: None,
        }
    }

    #[test]
    fn both_type_vocabularies_map_to_arrow() {
        assert_eq!(col("LONG", "bigint").arrow_type(), DataType::Int64);
        assert_eq!(col("BIGINT", "BIGINT").arrow_type(), DataType::Int64);
        assert_eq!(
            col("DECIMAL", "decimal(10,2)").arrow_type(),
            DataType::Decimal128(10, 2)
        );
        assert_eq!(
            col("DECIMAL(12,3)", "DECIMAL(12,3)").arrow_type(),
            DataType::Decimal128(12, 3)
        );
        assert_eq!(
            col("TIMESTAMP", "timestamp").arrow_type(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            col("TIMESTAMP_NTZ", "timestamp_ntz").arrow_type(),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(col("ARRAY", "array<int>").arrow_type(), DataType::Utf8);
    }

    /// Found by review while fuzzing (fuzz/fuzz_targets/warehouse_responses.rs, seed
    /// `databricks-decimal-signs`): a doubled sign was read as a number, and `--` before
    /// i128::MIN (or a huge exponent) overflowed the negation.
    #[test]
    fn decimals_take_one_sign() {
        for text in [
            "--5",
            "+-5",
            "-+5",
            "--170141183460469231731687303715884105728",
            "--1e300",
        ] {
            assert_eq!(parse_decimal(text, 0), None, "{text}");
        }
        assert_eq!(parse_decimal("+5", 1), Some(50));
        assert_eq!(parse_decimal(" -5 ", 0), Some(-5));
        assert_eq!(parse_decimal("-1e2", 0), Some(-100));
    }

    #[test]
    fn values_parse_from_text_or_json() {
        assert_eq!(parse_decimal("12.34", 2), Some(1234));
        assert_eq!(parse_decimal("-0.5", 3), Some(-500));
        assert_eq!(parse_decimal("7", 2), Some(700));
        assert_eq!(parse_decimal("1E-9", 9), Some(1));
        assert_eq!(
            parse_micros("2024-01-02 03:04:05.123456"),
            Some(1_704_164_645_123_456)
        );
        assert_eq!(
            parse_micros("2024-01-02T03:04:05Z"),
            Some(1_704_164_645_000_000)
        );
        assert_eq!(
            parse_micros("2024-01-02 05:04:05+02:00"),
            Some(1_704_164_645_000_000)
        );
        let rows = vec![
            vec![Value::from("5"), Value::from(1.5), Value::from(true)],
            vec![Value::from(6), Value::Null, Value::from("false")],
        ];
        let s = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Float64, true),
            Field::new("c", DataType::Boolean, true),
        ]));
        let cols = from_json_rows(&s, &rows).unwrap();
        assert_eq!(
            cols[0]
                .as_primitive::<wharf_operators::arrow::datatypes::Int64Type>()
                .values(),
            &[5, 6]
        );
        assert!(cols[1].is_null(1));
        assert!(!cols[2].as_boolean().value(1));
        let e =
            from_json_rows(&s, &[vec![Value::from("x"), Value::Null, Value::Null]]).unwrap_err();
        assert!(e.contains("column a") && e.contains("`x`"), "{e}");
    }
}
