//! PostgreSQL types → Arrow.
//!
//! | PostgreSQL | Arrow |
//! |---|---|
//! | `boolean` | Boolean |
//! | `smallint`, `integer`, `bigint` | Int16, Int32, Int64 |
//! | `oid` | Int64 |
//! | `real`, `double precision` | Float32, Float64 |
//! | `numeric(p,s)` with p ≤ 38 | Decimal128(p, s) (exact) |
//! | `numeric` without a precision, or p > 38 | Float64 (about 15 significant digits) |
//! | `text`, `varchar`, `char`, `name` | Utf8 |
//! | `json`, `jsonb` | Utf8 holding the JSON text |
//! | `uuid` | Utf8 (`8-4-4-4-12` lower-case hex) |
//! | `bytea` | Binary (sent to Mixpanel as base64) |
//! | `date` | Date32 |
//! | `timestamp` | Timestamp(µs) |
//! | `timestamptz` | Timestamp(µs, UTC) |
//! | arrays of the types above | List (multi-dimensional arrays are flattened) |
//! | domains | as their base type |
//! | anything else (`time`, `interval`, `inet`, enums, ranges, …) | Utf8: the column is selected as `col::text` |
//!
//! Two decoders fill the same builders: the binary format (what snapshot reads receive) and
//! the text format (what logical decoding's `pgoutput` sends). `infinity` dates and
//! timestamps and `NaN` in a `numeric(p,s)` column cannot be represented and fail the read,
//! naming the column.

use std::sync::Arc;

use wharf_operators::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListArray, StringBuilder,
    TimestampMicrosecondBuilder,
};
use wharf_operators::arrow::buffer::{NullBuffer, OffsetBuffer};
use wharf_operators::arrow::datatypes::{DataType, Field, TimeUnit};

/// Days from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// How a column is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgKind {
    /// `boolean`
    Bool,
    /// `smallint`
    Int2,
    /// `integer`
    Int4,
    /// `bigint`
    Int8,
    /// `oid`
    Oid,
    /// `real`
    Float4,
    /// `double precision`
    Float8,
    /// `numeric(p,s)`, exact.
    Decimal(u8, i8),
    /// `numeric` without a usable precision, as a float.
    NumericFloat,
    /// Text types.
    Text,
    /// `json`
    Json,
    /// `jsonb`
    Jsonb,
    /// `uuid`
    Uuid,
    /// `bytea`
    Bytea,
    /// `date`
    Date,
    /// `timestamp`
    Timestamp,
    /// `timestamptz`
    TimestampTz,
    /// A one-dimensional view of an array of the element kind.
    Array(Box<PgKind>),
    /// Any other type: selected as `col::text`.
    AsText,
}

impl PgKind {
    /// The kind of a type oid (`typmod` is the column's type modifier, -1 if unknown;
    /// `element` the element type's oid for arrays).
    pub fn of(oid: u32, typmod: i32, element: Option<u32>) -> PgKind {
        match oid {
            16 => PgKind::Bool,
            21 => PgKind::Int2,
            23 => PgKind::Int4,
            20 => PgKind::Int8,
            26 => PgKind::Oid,
            700 => PgKind::Float4,
            701 => PgKind::Float8,
            1700 => {
                // typmod = ((precision << 16) | scale) + 4; scale is 11 bits, signed since 15.
                if typmod >= 4 {
                    let p = ((typmod - 4) >> 16) & 0xffff;
                    let s = (typmod - 4) & 0x7ff;
                    if (1..=38).contains(&p) && s <= p {
                        return PgKind::Decimal(p as u8, s as i8);
                    }
                }
                PgKind::NumericFloat
            }
            25 | 1043 | 1042 | 19 | 18 => PgKind::Text,
            114 => PgKind::Json,
            3802 => PgKind::Jsonb,
            2950 => PgKind::Uuid,
            17 => PgKind::Bytea,
            1082 => PgKind::Date,
            1114 => PgKind::Timestamp,
            1184 => PgKind::TimestampTz,
            _ => match element.map(|e| PgKind::of(e, typmod, None)) {
                Some(e) if e != PgKind::AsText => PgKind::Array(Box::new(e)),
                _ => PgKind::AsText,
            },
        }
    }

    /// Whether the column is selected as `col::text`.
    pub fn selected_as_text(&self) -> bool {
        matches!(self, PgKind::AsText)
    }

    /// The Arrow type of the column.
    pub fn arrow_type(&self) -> DataType {
        match self {
            PgKind::Bool => DataType::Boolean,
            PgKind::Int2 => DataType::Int16,
            PgKind::Int4 => DataType::Int32,
            PgKind::Int8 | PgKind::Oid => DataType::Int64,
            PgKind::Float4 => DataType::Float32,
            PgKind::Float8 | PgKind::NumericFloat => DataType::Float64,
            PgKind::Decimal(p, s) => DataType::Decimal128(*p, *s),
            PgKind::Text | PgKind::Json | PgKind::Jsonb | PgKind::Uuid | PgKind::AsText => {
                DataType::Utf8
            }
            PgKind::Bytea => DataType::Binary,
            PgKind::Date => DataType::Date32,
            PgKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgKind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgKind::Array(e) => DataType::List(Arc::new(Field::new("item", e.arrow_type(), true))),
        }
    }
}

/// Builds one Arrow column from PostgreSQL values.
pub enum ColumnBuilder {
    /// Boolean
    Bool(BooleanBuilder),
    /// Int16
    I16(Int16Builder),
    /// Int32
    I32(Int32Builder),
    /// Int64 (also `oid`)
    I64(Int64Builder, bool),
    /// Float32
    F32(Float32Builder),
    /// Float64 (also unconstrained numeric)
    F64(Float64Builder, bool),
    /// Decimal128 with its scale
    Dec(Decimal128Builder, i8),
    /// Utf8 with the kind (for jsonb and uuid binary forms)
    Str(StringBuilder, PgKind),
    /// Binary
    Bin(BinaryBuilder),
    /// Date32
    Date(Date32Builder),
    /// Timestamp(µs)
    Ts(TimestampMicrosecondBuilder, bool),
    /// List: element builder, offsets, validity, element type.
    List {
        /// Elements.
        values: Box<ColumnBuilder>,
        /// Offsets into `values`.
        offsets: Vec<i32>,
        /// Validity per list.
        valid: Vec<bool>,
        /// The element kind.
        element: PgKind,
    },
}

type DecodeResult = Result<(), String>;

fn be<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", raw.len()))
}

impl ColumnBuilder {
    /// A builder for `kind`.
    pub fn new(kind: &PgKind) -> ColumnBuilder {
        match kind {
            PgKind::Bool => ColumnBuilder::Bool(BooleanBuilder::new()),
            PgKind::Int2 => ColumnBuilder::I16(Int16Builder::new()),
            PgKind::Int4 => ColumnBuilder::I32(Int32Builder::new()),
            PgKind::Int8 => ColumnBuilder::I64(Int64Builder::new(), false),
            PgKind::Oid => ColumnBuilder::I64(Int64Builder::new(), true),
            PgKind::Float4 => ColumnBuilder::F32(Float32Builder::new()),
            PgKind::Float8 => ColumnBuilder::F64(Float64Builder::new(), false),
            PgKind::NumericFloat => ColumnBuilder::F64(Float64Builder::new(), true),
            PgKind::Decimal(p, s) => ColumnBuilder::Dec(
                Decimal128Builder::new().with_data_type(DataType::Decimal128(*p, *s)),
                *s,
            ),
            PgKind::Text | PgKind::Json | PgKind::Jsonb | PgKind::Uuid | PgKind::AsText => {
                ColumnBuilder::Str(StringBuilder::new(), kind.clone())
            }
            PgKind::Bytea => ColumnBuilder::Bin(BinaryBuilder::new()),
            PgKind::Date => ColumnBuilder::Date(Date32Builder::new()),
            PgKind::Timestamp => ColumnBuilder::Ts(TimestampMicrosecondBuilder::new(), false),
            PgKind::TimestampTz => ColumnBuilder::Ts(
                TimestampMicrosecondBuilder::new().with_timezone("UTC"),
                true,
            ),
            PgKind::Array(e) => ColumnBuilder::List {
                values: Box::new(ColumnBuilder::new(e)),
                offsets: vec![0],
                valid: Vec::new(),
                element: (**e).clone(),
            },
        }
    }

    /// Appends a NULL.
    pub fn push_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::I16(b) => b.append_null(),
            ColumnBuilder::I32(b) => b.append_null(),
            ColumnBuilder::I64(b, _) => b.append_null(),
            ColumnBuilder::F32(b) => b.append_null(),
            ColumnBuilder::F64(b, _) => b.append_null(),
            ColumnBuilder::Dec(b, _) => b.append_null(),
            ColumnBuilder::Str(b, _) => b.append_null(),
            ColumnBuilder::Bin(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Ts(b, _) => b.append_null(),
            ColumnBuilder::List { offsets, valid, .. } => {
                offsets.push(*offsets.last().unwrap_or(&0));
                valid.push(false);
            }
        }
    }

    /// Appends one list to a list column: `fill` pushes its elements into the element
    /// builder and says how many there were.
    fn push_list(
        &mut self,
        fill: impl FnOnce(&mut ColumnBuilder) -> Result<i32, String>,
    ) -> DecodeResult {
        if let ColumnBuilder::List {
            values,
            offsets,
            valid,
            ..
        } = self
        {
            let n = fill(values)?;
            offsets.push(offsets.last().unwrap_or(&0) + n);
            valid.push(true);
        }
        Ok(())
    }

    /// Appends a value in PostgreSQL's binary format (`None`: NULL).
    pub fn push_binary(&mut self, raw: Option<&[u8]>) -> DecodeResult {
        let Some(raw) = raw else {
            self.push_null();
            return Ok(());
        };
        match self {
            ColumnBuilder::Bool(b) => b.append_value(be::<1>(raw)?[0] != 0),
            ColumnBuilder::I16(b) => b.append_value(i16::from_be_bytes(be(raw)?)),
            ColumnBuilder::I32(b) => b.append_value(i32::from_be_bytes(be(raw)?)),
            ColumnBuilder::I64(b, true) => b.append_value(u32::from_be_bytes(be(raw)?) as i64),
            ColumnBuilder::I64(b, false) => b.append_value(i64::from_be_bytes(be(raw)?)),
            ColumnBuilder::F32(b) => b.append_value(f32::from_be_bytes(be(raw)?)),
            ColumnBuilder::F64(b, false) => b.append_value(f64::from_be_bytes(be(raw)?)),
            ColumnBuilder::F64(b, true) => b.append_value(numeric_binary(raw)?.to_f64()),
            ColumnBuilder::Dec(b, scale) => b.append_value(numeric_binary(raw)?.to_i128(*scale)?),
            ColumnBuilder::Str(b, PgKind::Jsonb) => match raw.split_first() {
                Some((1, text)) => b.append_value(utf8(text)?),
                _ => return Err("unknown jsonb binary version".into()),
            },
            ColumnBuilder::Str(b, PgKind::Uuid) => b.append_value(uuid_text(&be::<16>(raw)?)),
            ColumnBuilder::Str(b, _) => b.append_value(utf8(raw)?),
            ColumnBuilder::Bin(b) => b.append_value(raw),
            ColumnBuilder::Date(b) => {
                let d = i32::from_be_bytes(be(raw)?);
                if d == i32::MAX || d == i32::MIN {
                    return Err("an infinite date cannot be sent".into());
                }
                // No date PostgreSQL writes overflows here; damaged input could.
                let days = d
                    .checked_add(PG_EPOCH_DAYS)
                    .ok_or("a date out of range (past 5874897 AD)")?;
                b.append_value(days)
            }
            ColumnBuilder::Ts(b, _) => {
                let t = i64::from_be_bytes(be(raw)?);
                if t == i64::MAX || t == i64::MIN {
                    return Err("an infinite timestamp cannot be sent".into());
                }
                // PostgreSQL's last timestamps (late 294276 AD) are past what microseconds
                // since 1970 hold in 64 bits (found by fuzzing: it wrapped around).
                let micros = t
                    .checked_add(PG_EPOCH_MICROS)
                    .ok_or("a timestamp out of range (after 294247 AD)")?;
                b.append_value(micros)
            }
            ColumnBuilder::List { .. } => {
                self.push_list(|values| array_binary(raw, |elem| values.push_binary(elem)))?
            }
        }
        Ok(())
    }

    /// Appends a value in PostgreSQL's text format (`None`: NULL), as sent by logical
    /// decoding with `DateStyle = ISO`, `TimeZone = UTC`, `bytea_output = hex`.
    pub fn push_text(&mut self, text: Option<&str>) -> DecodeResult {
        let Some(t) = text else {
            self.push_null();
            return Ok(());
        };
        fn num<T: std::str::FromStr>(t: &str) -> Result<T, String> {
            t.parse().map_err(|_| format!("`{t}` is not a number"))
        }
        match self {
            ColumnBuilder::Bool(b) => b.append_value(match t {
                "t" | "true" => true,
                "f" | "false" => false,
                _ => return Err(format!("`{t}` is not a boolean")),
            }),
            ColumnBuilder::I16(b) => b.append_value(num(t)?),
            ColumnBuilder::I32(b) => b.append_value(num(t)?),
            ColumnBuilder::I64(b, _) => b.append_value(num(t)?),
            ColumnBuilder::F32(b) => b.append_value(num(t)?),
            ColumnBuilder::F64(b, _) => b.append_value(num(t)?),
            ColumnBuilder::Dec(b, scale) => b.append_value(decimal_text(t, *scale)?),
            ColumnBuilder::Str(b, _) => b.append_value(t),
            ColumnBuilder::Bin(b) => b.append_value(bytea_hex(t)?),
            ColumnBuilder::Date(b) => {
                let d = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                    .map_err(|_| format!("`{t}` is not a date this column can send"))?;
                b.append_value(
                    d.signed_duration_since(chrono::NaiveDate::default())
                        .num_days() as i32,
                )
            }
            ColumnBuilder::Ts(b, tz) => {
                let micros = if *tz {
                    chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z")
                        .map(|d| d.timestamp_micros())
                } else {
                    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
                        .map(|d| d.and_utc().timestamp_micros())
                }
                .map_err(|_| format!("`{t}` is not a timestamp this column can send"))?;
                b.append_value(micros)
            }
            ColumnBuilder::List { .. } => {
                self.push_list(|values| array_text(t, |elem| values.push_text(elem)))?
            }
        }
        Ok(())
    }

    /// The finished column.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::I16(b) => Arc::new(b.finish()),
            ColumnBuilder::I32(b) => Arc::new(b.finish()),
            ColumnBuilder::I64(b, _) => Arc::new(b.finish()),
            ColumnBuilder::F32(b) => Arc::new(b.finish()),
            ColumnBuilder::F64(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Dec(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Str(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Bin(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Ts(b, _) => Arc::new(b.finish()),
            ColumnBuilder::List {
                values,
                offsets,
                valid,
                element,
            } => {
                let field = Arc::new(Field::new("item", element.arrow_type(), true));
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let nulls = NullBuffer::from(std::mem::take(valid));
                let nulls = (nulls.null_count() > 0).then_some(nulls);
                Arc::new(ListArray::new(field, offsets, values.finish(), nulls))
            }
        }
    }
}

fn utf8(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw).map_err(|_| "text that is not UTF-8".to_string())
}

fn uuid_text(b: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// A decoded `numeric`: base-10000 digits and the weight of the first.
struct Numeric {
    digits: Vec<i16>,
    weight: i16,
    negative: bool,
    special: Option<&'static str>,
}

fn numeric_binary(raw: &[u8]) -> Result<Numeric, String> {
    let word = |i: usize| -> Result<[u8; 2], String> {
        raw.get(i..i + 2)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| "truncated numeric".to_string())
    };
    let ndigits = i16::from_be_bytes(word(0)?).max(0) as usize;
    let weight = i16::from_be_bytes(word(2)?);
    let sign = u16::from_be_bytes(word(4)?);
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(i16::from_be_bytes(word(8 + 2 * i)?));
    }
    let special = match sign {
        0x0000 | 0x4000 => None,
        0xC000 => Some("NaN"),
        0xD000 => Some("Infinity"),
        _ => Some("-Infinity"),
    };
    Ok(Numeric {
        digits,
        weight,
        negative: sign == 0x4000,
        special,
    })
}

impl Numeric {
    fn to_f64(&self) -> f64 {
        match self.special {
            Some("NaN") => return f64::NAN,
            Some("Infinity") => return f64::INFINITY,
            Some(_) => return f64::NEG_INFINITY,
            None => {}
        }
        // Through decimal text, so the result is the correctly rounded double.
        let mut text = String::with_capacity(8 + 4 * self.digits.len());
        if self.negative {
            text.push('-');
        }
        text.push_str("0.");
        for d in &self.digits {
            text.push_str(&format!("{d:04}"));
        }
        let exp = 4 * (self.weight as i32 + 1);
        text.push_str(&format!("e{exp}"));
        text.parse().unwrap_or(f64::NAN)
    }

    fn to_i128(&self, scale: i8) -> Result<i128, String> {
        if let Some(s) = self.special {
            return Err(format!("{s} cannot be stored in an exact numeric column"));
        }
        let overflow = || "a numeric value too large for 38 digits".to_string();
        let mut acc: i128 = 0;
        for d in &self.digits {
            acc = acc
                .checked_mul(10_000)
                .and_then(|a| a.checked_add(*d as i128))
                .ok_or_else(overflow)?;
        }
        // acc × 10^(4 × (weight − ndigits + 1)) is the value; scale it by 10^scale.
        let exp = 4 * (self.weight as i32 - self.digits.len() as i32 + 1) + scale as i32;
        if exp >= 0 {
            acc = 10i128
                .checked_pow(exp as u32)
                .and_then(|p| acc.checked_mul(p))
                .ok_or_else(overflow)?;
        } else {
            acc /= 10i128.checked_pow((-exp) as u32).ok_or_else(overflow)?;
        }
        Ok(if self.negative { -acc } else { acc })
    }
}

fn decimal_text(t: &str, scale: i8) -> Result<i128, String> {
    let bad = || format!("`{t}` is not a number this column can send");
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let scale = scale.max(0) as usize;
    let mut acc: i128 = 0;
    let frac_digits = frac.chars().chain(std::iter::repeat('0')).take(scale);
    for c in int.chars().chain(frac_digits) {
        let d = c.to_digit(10).ok_or_else(bad)?;
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_add(d as i128))
            .ok_or_else(bad)?;
    }
    Ok(if negative { -acc } else { acc })
}

fn bytea_hex(t: &str) -> Result<Vec<u8>, String> {
    let hex = t
        .strip_prefix("\\x")
        .ok_or_else(|| "bytea not in hex format (set bytea_output = hex)".to_string())?;
    (0..hex.len() / 2)
        .map(|i| {
            u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or(""), 16)
                .map_err(|_| "bad hex in bytea".to_string())
        })
        .collect()
}

/// Walks a binary array, calling `each` per element (flattened); returns the count.
fn array_binary(
    raw: &[u8],
    mut each: impl FnMut(Option<&[u8]>) -> DecodeResult,
) -> Result<i32, String> {
    let int = |i: usize| -> Result<i32, String> {
        raw.get(i..i + 4)
            .and_then(|s| s.try_into().ok())
            .map(i32::from_be_bytes)
            .ok_or_else(|| "truncated array".to_string())
    };
    let ndim = int(0)?.max(0) as usize;
    let mut count: i64 = if ndim == 0 { 0 } else { 1 };
    for d in 0..ndim {
        // Dimensions whose product passes i64 cannot be a real array (nor fit the data).
        count = count
            .checked_mul(int(12 + 8 * d)?.max(0) as i64)
            .ok_or_else(|| "array too large".to_string())?;
    }
    let mut pos = 12 + 8 * ndim;
    for _ in 0..count {
        let len = int(pos)?;
        pos += 4;
        if len < 0 {
            each(None)?;
        } else {
            let end = pos + len as usize;
            each(Some(
                raw.get(pos..end)
                    .ok_or_else(|| "truncated array".to_string())?,
            ))?;
            pos = end;
        }
    }
    i32::try_from(count).map_err(|_| "array too large".to_string())
}

/// Walks a text array (`{a,"b c",NULL}`, nested braces flattened), calling `each` per
/// element; returns the count.
fn array_text(t: &str, mut each: impl FnMut(Option<&str>) -> DecodeResult) -> Result<i32, String> {
    // An optional dimension prefix such as `[0:2]=` precedes the braces.
    let body = match t.find('=') {
        Some(i) if t.starts_with('[') => &t[i + 1..],
        _ => t,
    };
    let mut count = 0;
    let mut chars = body.chars().peekable();
    let mut item = String::new();
    let (mut quoted, mut in_item) = (false, false);
    let mut emit = |item: &mut String, quoted: bool, count: &mut i32| -> DecodeResult {
        *count += 1;
        let r = if !quoted && item.eq_ignore_ascii_case("NULL") {
            each(None)
        } else {
            each(Some(item))
        };
        item.clear();
        r
    };
    while let Some(c) = chars.next() {
        match c {
            '{' => {}
            '}' | ',' => {
                if in_item {
                    emit(&mut item, quoted, &mut count)?;
                }
                in_item = false;
                quoted = false;
            }
            '"' => {
                in_item = true;
                quoted = true;
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => item.extend(chars.next()),
                        '"' => break,
                        other => item.push(other),
                    }
                }
            }
            c if c.is_whitespace() && !in_item => {}
            c => {
                in_item = true;
                item.push(c);
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_operators::arrow::array::{Array, AsArray};
    use wharf_operators::arrow::datatypes::Int32Type;

    /// Found by fuzzing (fuzz/fuzz_targets/pg_logical.rs): dimensions whose product overflows
    /// i64 panicked (debug) or wrapped (release) instead of being refused.
    #[test]
    fn binary_array_dimensions_that_overflow_are_an_error() {
        let mut raw = Vec::new();
        raw.extend_from_slice(&3i32.to_be_bytes()); // ndim
        raw.extend_from_slice(&0i32.to_be_bytes()); // has nulls
        raw.extend_from_slice(&23u32.to_be_bytes()); // element oid
        for _ in 0..3 {
            raw.extend_from_slice(&i32::MAX.to_be_bytes()); // size
            raw.extend_from_slice(&1i32.to_be_bytes()); // lower bound
        }
        let mut b = ColumnBuilder::new(&PgKind::Array(Box::new(PgKind::Int4)));
        assert_eq!(
            b.push_binary(Some(&raw)),
            Err("array too large".to_string())
        );
    }

    /// Found by fuzzing: PostgreSQL's last timestamps (294276 AD) wrapped around when moved
    /// to the Unix epoch (release) or panicked (debug); dates out of range likewise.
    #[test]
    fn timestamps_and_dates_past_the_epoch_shift_are_an_error() {
        // PostgreSQL's END_TIMESTAMP less one microsecond, in microseconds since 2000.
        let last = 9_223_371_331_199_999_999i64.to_be_bytes();
        let mut ts = ColumnBuilder::new(&PgKind::Timestamp);
        assert_eq!(
            ts.push_binary(Some(&last)),
            Err("a timestamp out of range (after 294247 AD)".to_string())
        );
        assert_eq!(ts.push_binary(Some(&0i64.to_be_bytes())), Ok(()));
        let mut date = ColumnBuilder::new(&PgKind::Date);
        assert!(date
            .push_binary(Some(&(i32::MAX - 1).to_be_bytes()))
            .is_err());
        // 5874897-12-31, PostgreSQL's last date, fits.
        assert_eq!(
            date.push_binary(Some(&2_144_931_949i32.to_be_bytes())),
            Ok(())
        );
    }

    #[test]
    fn numerics_decode_exactly() {
        // 12345.678 = digits [1, 2345, 6780], weight 1, dscale 3
        let raw = [0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c];
        let n = numeric_binary(&raw).unwrap();
        assert_eq!(n.to_i128(3).unwrap(), 12_345_678);
        assert_eq!(n.to_i128(5).unwrap(), 1_234_567_800);
        assert!((n.to_f64() - 12345.678).abs() < 1e-9);
        assert_eq!(decimal_text("-12.5", 3).unwrap(), -12_500);
        assert_eq!(decimal_text("7", 2).unwrap(), 700);
        assert!(decimal_text("abc", 2).is_err());
    }

    #[test]
    fn text_arrays_parse_quotes_nulls_and_nesting() {
        let mut got = Vec::new();
        let n = array_text(r#"{a,"b c","q\"x",NULL,"NULL"}"#, |e| {
            got.push(e.map(str::to_string));
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 5);
        assert_eq!(
            got,
            vec![
                Some("a".into()),
                Some("b c".into()),
                Some("q\"x".into()),
                None,
                Some("NULL".into())
            ]
        );
        let mut b = ColumnBuilder::new(&PgKind::Array(Box::new(PgKind::Int4)));
        b.push_text(Some("{{1,2},{3,4}}")).unwrap();
        b.push_text(None).unwrap();
        b.push_text(Some("{}")).unwrap();
        let a = b.finish();
        let l = a.as_list::<i32>();
        assert_eq!(l.len(), 3);
        assert!(l.is_null(1));
        assert_eq!(
            l.value(0).as_primitive::<Int32Type>().values(),
            &[1, 2, 3, 4]
        );
        assert_eq!(l.value(2).len(), 0);
    }

    #[test]
    fn kinds_follow_the_documented_mapping() {
        // numeric(10,2): typmod = (10 << 16 | 2) + 4
        assert_eq!(
            PgKind::of(1700, (10 << 16 | 2) + 4, None),
            PgKind::Decimal(10, 2)
        );
        assert_eq!(PgKind::of(1700, -1, None), PgKind::NumericFloat);
        assert_eq!(PgKind::of(1186, -1, None), PgKind::AsText); // interval
        assert_eq!(
            PgKind::of(1007, -1, Some(23)),
            PgKind::Array(Box::new(PgKind::Int4))
        );
        assert_eq!(PgKind::of(1187, -1, Some(1186)), PgKind::AsText); // interval[]
        let mut ts = ColumnBuilder::new(&PgKind::TimestampTz);
        ts.push_text(Some("2024-01-02 03:04:05.5+00")).unwrap();
        ts.push_text(Some("2024-01-02 05:04:05+02")).unwrap();
        let a = ts.finish();
        let p = a.as_primitive::<wharf_operators::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(p.value(0), 1_704_164_645_500_000);
        assert_eq!(p.value(1), 1_704_164_645_000_000);
        assert_eq!(bytea_hex("\\x00ff10").unwrap(), vec![0, 255, 16]);
        assert_eq!(
            uuid_text(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8]),
            "12345678-9abc-def0-0102-030405060708"
        );
    }
}
