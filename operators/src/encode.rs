//! Arrow values → JSON bytes, written straight into an output buffer.
//!
//! This is the hot path of every sync (read → encode → send), so it avoids building
//! `serde_json::Value`s: top-level columns get a typed [`ColumnEncoder`] once per batch, and
//! nested values (lists, structs, maps) go through the generic [`write_value`].
//!
//! Encoding rules (shared by every table type and destination):
//! - integers and floats stay numbers; NaN and ±infinity have no JSON form and are treated as NULL;
//! - decimals are written as exact JSON numbers (`12.30`);
//! - timestamps become ISO-8601 UTC strings (`2024-05-01T12:00:00.250Z`); a timestamp without a
//!   time zone is read as UTC; dates become `YYYY-MM-DD`;
//! - binary values become base64 strings;
//! - lists become arrays, structs and maps become objects (map keys as strings);
//! - NULLs are omitted by the callers (inside arrays they are `null`).

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Date64Array, Decimal128Array,
    GenericBinaryArray, GenericStringArray, PrimitiveArray, StringViewArray,
};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Int8Type, TimeUnit, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use base64::Engine as _;

mod scalar;

pub use scalar::{civil_from_days, to_micros, write_iso_date, write_iso_micros, DateCache};
use scalar::{write_decimal, write_f64, write_int, write_iso_date_cached, write_iso_micros_cached};

/// Appends `s` as a JSON string literal (with quotes) to `out`.
#[inline]
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    loop {
        let i = start + crate::json::plain_len(&bytes[start..]);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else {
            break;
        };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
        }
        start = i + 1;
    }
    out.push(b'"');
}

/// The 16 bytes of `data` from where `part` starts, when `part` is a slice of `data` (the
/// same memory, so the same bytes: no comparison needed) of at most 16 bytes and `data` holds
/// 16 bytes from there.
#[inline]
pub(crate) fn window_16<'d>(data: &'d [u8], part: &[u8]) -> Option<&'d [u8; 16]> {
    let start = (part.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
    if part.len() > 16 || start > data.len() || data.len() - start < part.len() {
        return None;
    }
    data.get(start..start + 16)?.try_into().ok()
}

/// Appends `part`, a slice of `data` (a values buffer it was cut from), with one fixed-size
/// copy of 16 bytes when it is that short, instead of a `memcpy` call.
#[inline]
pub fn copy_from_buffer(out: &mut Vec<u8>, data: &[u8], part: &[u8]) {
    match window_16(data, part) {
        Some(chunk) => {
            let at = out.len();
            out.extend_from_slice(chunk);
            out.truncate(at + part.len());
        }
        None => out.extend_from_slice(part),
    }
}

/// Appends `name`, a slice of `data` (the values buffer it was cut from), as a JSON string
/// literal, as [`write_json_str`] does; a short plain one with one fixed-size copy.
#[inline]
pub fn write_json_str_from_buffer(out: &mut Vec<u8>, data: &[u8], name: &str) {
    match window_16(data, name.as_bytes()) {
        Some(chunk) if crate::json::plain_prefix_16(chunk, name.len()) => {
            out.push(b'"');
            let at = out.len();
            out.extend_from_slice(chunk);
            out.truncate(at + name.len());
            out.push(b'"');
        }
        _ => write_json_str(out, name),
    }
}

/// A short byte string (a property's `,"name":`, a fixed run of JSON) that is written with
/// one fixed-size copy, then cut to its length: no `memcpy` call for the few bytes it holds.
#[derive(Debug, Clone)]
pub struct Piece {
    /// The bytes, zero-padded to 64, when there are at most 64 of them.
    short: [u8; 64],
    bytes: Vec<u8>,
}

impl Piece {
    /// A piece holding `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        let mut short = [0u8; 64];
        if let Some(head) = short.get_mut(..bytes.len()) {
            head.copy_from_slice(&bytes);
        }
        Piece { short, bytes }
    }

    /// Appends the piece to `out`.
    #[inline]
    pub fn write(&self, out: &mut Vec<u8>) {
        let len = self.bytes.len();
        if len <= self.short.len() {
            let at = out.len();
            out.extend_from_slice(&self.short);
            out.truncate(at + len);
        } else {
            out.extend_from_slice(&self.bytes);
        }
    }
}

/// A top-level column, downcast once per batch, that writes one row's value as JSON.
pub enum ColumnEncoder<'a> {
    Bool(&'a BooleanArray),
    I8(&'a PrimitiveArray<Int8Type>),
    I16(&'a PrimitiveArray<Int16Type>),
    I32(&'a PrimitiveArray<Int32Type>),
    I64(&'a PrimitiveArray<Int64Type>),
    U8(&'a PrimitiveArray<UInt8Type>),
    U16(&'a PrimitiveArray<UInt16Type>),
    U32(&'a PrimitiveArray<UInt32Type>),
    U64(&'a PrimitiveArray<UInt64Type>),
    F32(&'a PrimitiveArray<Float32Type>),
    F64(&'a PrimitiveArray<Float64Type>),
    Utf8(&'a GenericStringArray<i32>),
    LargeUtf8(&'a GenericStringArray<i64>),
    Utf8View(&'a StringViewArray),
    Binary(&'a GenericBinaryArray<i32>),
    LargeBinary(&'a GenericBinaryArray<i64>),
    /// A timestamp array, its raw values (every unit's native type is `i64`), their unit and
    /// the last date written.
    Timestamp(&'a dyn Array, &'a [i64], TimeUnit, DateCache),
    Date32(&'a Date32Array, DateCache),
    Date64(&'a Date64Array),
    Decimal(&'a Decimal128Array, i8),
    /// Everything else: nested types (compiled once per batch), dictionaries, intervals….
    Nested(Box<NestedEncoder<'a>>),
}

impl<'a> ColumnEncoder<'a> {
    /// Picks the encoder for `array`.
    pub fn new(array: &'a ArrayRef) -> Self {
        let a = array.as_ref();
        match a.data_type() {
            DataType::Boolean => Self::Bool(a.as_boolean()),
            DataType::Int8 => Self::I8(a.as_primitive()),
            DataType::Int16 => Self::I16(a.as_primitive()),
            DataType::Int32 => Self::I32(a.as_primitive()),
            DataType::Int64 => Self::I64(a.as_primitive()),
            DataType::UInt8 => Self::U8(a.as_primitive()),
            DataType::UInt16 => Self::U16(a.as_primitive()),
            DataType::UInt32 => Self::U32(a.as_primitive()),
            DataType::UInt64 => Self::U64(a.as_primitive()),
            DataType::Float32 => Self::F32(a.as_primitive()),
            DataType::Float64 => Self::F64(a.as_primitive()),
            DataType::Utf8 => Self::Utf8(a.as_string()),
            DataType::LargeUtf8 => Self::LargeUtf8(a.as_string()),
            DataType::Utf8View => Self::Utf8View(a.as_string_view()),
            DataType::Binary => Self::Binary(a.as_binary()),
            DataType::LargeBinary => Self::LargeBinary(a.as_binary()),
            DataType::Timestamp(unit, _) => {
                Self::Timestamp(a, ts_values(a), *unit, DateCache::default())
            }
            DataType::Date32 => Self::Date32(a.as_primitive(), DateCache::default()),
            DataType::Date64 => Self::Date64(a.as_primitive()),
            DataType::Decimal128(_, scale) => Self::Decimal(a.as_primitive(), *scale),
            _ => Self::Nested(Box::new(NestedEncoder::new(array))),
        }
    }

    /// Whether the value at `row` is NULL.
    #[inline]
    pub fn is_null(&self, row: usize) -> bool {
        match self {
            Self::Bool(a) => a.is_null(row),
            Self::I8(a) => a.is_null(row),
            Self::I16(a) => a.is_null(row),
            Self::I32(a) => a.is_null(row),
            Self::I64(a) => a.is_null(row),
            Self::U8(a) => a.is_null(row),
            Self::U16(a) => a.is_null(row),
            Self::U32(a) => a.is_null(row),
            Self::U64(a) => a.is_null(row),
            Self::F32(a) => a.is_null(row),
            Self::F64(a) => a.is_null(row),
            Self::Utf8(a) => a.is_null(row),
            Self::LargeUtf8(a) => a.is_null(row),
            Self::Utf8View(a) => a.is_null(row),
            Self::Binary(a) => a.is_null(row),
            Self::LargeBinary(a) => a.is_null(row),
            Self::Timestamp(a, ..) => a.is_null(row),
            Self::Date32(a, _) => a.is_null(row),
            Self::Date64(a) => a.is_null(row),
            Self::Decimal(a, _) => a.is_null(row),
            Self::Nested(n) => n.is_null(row),
        }
    }

    /// Writes the non-NULL value at `row`; returns false (writing nothing) when the value has
    /// no JSON form (NaN, infinity) and must be treated as NULL.
    #[inline]
    pub fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        match self {
            Self::Bool(a) => out.extend_from_slice(if a.value(row) { b"true" } else { b"false" }),
            Self::I8(a) => write_int(out, a.value(row)),
            Self::I16(a) => write_int(out, a.value(row)),
            Self::I32(a) => write_int(out, a.value(row)),
            Self::I64(a) => write_int(out, a.value(row)),
            Self::U8(a) => write_int(out, a.value(row)),
            Self::U16(a) => write_int(out, a.value(row)),
            Self::U32(a) => write_int(out, a.value(row)),
            Self::U64(a) => write_int(out, a.value(row)),
            Self::F32(a) => return write_f64(out, a.value(row) as f64),
            Self::F64(a) => return write_f64(out, a.value(row)),
            Self::Utf8(a) => write_json_str_from_buffer(out, a.value_data(), a.value(row)),
            Self::LargeUtf8(a) => write_json_str_from_buffer(out, a.value_data(), a.value(row)),
            Self::Utf8View(a) => write_json_str(out, a.value(row)),
            Self::Binary(a) => write_base64(out, a.value(row)),
            Self::LargeBinary(a) => write_base64(out, a.value(row)),
            Self::Timestamp(_, values, unit, cache) => {
                write_iso_micros_cached(out, to_micros(values[row], *unit), cache)
            }
            Self::Date32(a, cache) => write_iso_date_cached(out, a.value(row) as i64, cache),
            Self::Date64(a) => write_iso_date(out, a.value(row).div_euclid(86_400_000)),
            Self::Decimal(a, scale) => write_decimal(out, a.value(row), *scale),
            Self::Nested(n) => return n.write(row, out),
        }
        true
    }

    /// The value as text, for keys and identifiers (`distinct_id`, event names); `None` for
    /// NULL or types without a natural text form (nested values).
    pub fn text(&self, row: usize) -> Option<std::borrow::Cow<'a, str>> {
        use std::borrow::Cow;
        if self.is_null(row) {
            return None;
        }
        Some(match self {
            Self::Utf8(a) => Cow::Borrowed(a.value(row)),
            Self::LargeUtf8(a) => Cow::Borrowed(a.value(row)),
            Self::Utf8View(a) => Cow::Borrowed(a.value(row)),
            Self::I8(a) => Cow::Owned(a.value(row).to_string()),
            Self::I16(a) => Cow::Owned(a.value(row).to_string()),
            Self::I32(a) => Cow::Owned(a.value(row).to_string()),
            Self::I64(a) => Cow::Owned(a.value(row).to_string()),
            Self::U8(a) => Cow::Owned(a.value(row).to_string()),
            Self::U16(a) => Cow::Owned(a.value(row).to_string()),
            Self::U32(a) => Cow::Owned(a.value(row).to_string()),
            Self::U64(a) => Cow::Owned(a.value(row).to_string()),
            Self::Nested(_) => return None,
            _ => {
                let mut buf = Vec::new();
                if !self.write(row, &mut buf) {
                    return None;
                }
                let s = String::from_utf8(buf).ok()?;
                Cow::Owned(s.trim_matches('"').to_string())
            }
        })
    }

    /// Writes the value's [`text`](Self::text) as a JSON string (an id, an event name); false
    /// for NULL and values without a text form, writing nothing.
    #[inline]
    pub fn write_text(&self, row: usize, out: &mut Vec<u8>) -> bool {
        match self {
            Self::Utf8(a) if !a.is_null(row) => {
                write_json_str_from_buffer(out, a.value_data(), a.value(row))
            }
            Self::LargeUtf8(a) if !a.is_null(row) => {
                write_json_str_from_buffer(out, a.value_data(), a.value(row))
            }
            _ => match self.text(row) {
                Some(t) => write_json_str(out, &t),
                None => return false,
            },
        }
        true
    }
}

/// A timestamp array's raw values, in the array's own unit (empty for another type).
fn ts_values(a: &dyn Array) -> &[i64] {
    use arrow::datatypes::{
        TimestampMicrosecondType as Us, TimestampMillisecondType as Ms,
        TimestampNanosecondType as Ns, TimestampSecondType as S,
    };
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => a.as_primitive::<S>().values(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => a.as_primitive::<Ms>().values(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => a.as_primitive::<Us>().values(),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => a.as_primitive::<Ns>().values(),
        _ => &[],
    }
}

fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    out.resize(
        start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
        0,
    );
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + n);
    out.push(b'"');
}

fn prim<T: ArrowPrimitiveType>(a: &dyn Array, row: usize) -> T::Native {
    a.as_primitive::<T>().value(row)
}

/// A nested column compiled once per batch: writing a row is offset arithmetic and the
/// leaves' typed writers, with the output of [`write_value`] (which would slice an array per
/// list value and rebuild an array per scalar).
pub struct NestedEncoder<'a> {
    array: &'a dyn Array,
    /// The array's null buffer when it holds a NULL (none to test otherwise).
    nulls: Option<&'a arrow::buffer::NullBuffer>,
    node: Node<'a>,
}

/// What a [`NestedEncoder`] writes.
enum Node<'a> {
    /// A scalar (the types [`ColumnEncoder`] writes directly).
    Leaf(ColumnEncoder<'a>),
    /// A list: each row is `values[offsets[row]..offsets[row + 1]]`.
    List {
        offsets: ListOffsets<'a>,
        values: Box<NestedEncoder<'a>>,
    },
    /// A fixed-size list.
    FixedList {
        array: &'a arrow::array::FixedSizeListArray,
        size: usize,
        values: Box<NestedEncoder<'a>>,
    },
    /// A struct: its fields' `"name":` prefixes and encoders (children are sliced with it).
    Struct {
        fields: Vec<(Piece, NestedEncoder<'a>)>,
    },
    /// Maps, dictionaries, times of day…: through [`write_value`].
    Other,
}

/// A list's value offsets (already adjusted to its slice).
enum ListOffsets<'a> {
    /// `List`.
    I32(&'a [i32]),
    /// `LargeList`.
    I64(&'a [i64]),
}

impl<'a> NestedEncoder<'a> {
    /// Compiles the encoder for `array` and its children.
    pub fn new(array: &'a ArrayRef) -> Self {
        let a = array.as_ref();
        let node = match a.data_type() {
            DataType::List(_) => {
                let list = a.as_list::<i32>();
                Node::List {
                    offsets: ListOffsets::I32(list.value_offsets()),
                    values: Box::new(Self::new(list.values())),
                }
            }
            DataType::LargeList(_) => {
                let list = a.as_list::<i64>();
                Node::List {
                    offsets: ListOffsets::I64(list.value_offsets()),
                    values: Box::new(Self::new(list.values())),
                }
            }
            DataType::FixedSizeList(_, size) => {
                let list = a.as_fixed_size_list();
                Node::FixedList {
                    array: list,
                    size: usize::try_from(*size).unwrap_or(0),
                    values: Box::new(Self::new(list.values())),
                }
            }
            DataType::Struct(fields) => {
                let columns = a.as_struct().columns();
                let fields = fields
                    .iter()
                    .zip(columns)
                    .map(|(field, column)| {
                        let mut prefix = Vec::with_capacity(field.name().len() + 3);
                        write_json_str(&mut prefix, field.name());
                        prefix.push(b':');
                        (Piece::new(prefix), Self::new(column))
                    })
                    .collect();
                Node::Struct { fields }
            }
            t if is_scalar(t) => Node::Leaf(ColumnEncoder::new(array)),
            _ => Node::Other,
        };
        NestedEncoder {
            array: a,
            // `Array::is_null` reads the same buffer.
            nulls: a.nulls().filter(|n| n.null_count() > 0),
            node,
        }
    }

    /// Whether the value at `row` is NULL (as `Array::is_null` says).
    #[inline]
    pub fn is_null(&self, row: usize) -> bool {
        self.nulls.is_some_and(|n| n.is_null(row))
    }

    /// Writes the value at `row` as [`write_value`] does (NULL as `null`); false when the
    /// value has no JSON form and nothing was written.
    pub fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        if let Node::Other = self.node {
            return write_value(self.array, row, out);
        }
        if self.is_null(row) {
            out.extend_from_slice(b"null");
            return true;
        }
        match &self.node {
            Node::Leaf(leaf) => return leaf.write(row, out),
            Node::List { offsets, values } => {
                let (start, end) = match offsets {
                    ListOffsets::I32(o) => (o[row] as usize, o[row + 1] as usize),
                    ListOffsets::I64(o) => (o[row] as usize, o[row + 1] as usize),
                };
                write_elements(values, start..end, out);
            }
            Node::FixedList {
                array,
                size,
                values,
            } => {
                let start = array.value_offset_at(row);
                write_elements(values, start..start + size, out);
            }
            Node::Struct { fields } => {
                out.push(b'{');
                let mut first = true;
                for (prefix, field) in fields {
                    if field.is_null(row) {
                        continue;
                    }
                    let mark = out.len();
                    if !first {
                        out.push(b',');
                    }
                    prefix.write(out);
                    if field.write(row, out) {
                        first = false;
                    } else {
                        out.truncate(mark);
                    }
                }
                out.push(b'}');
            }
            Node::Other => {}
        }
        true
    }
}

/// The types [`ColumnEncoder`] writes with a typed encoder of their own.
fn is_scalar(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::Timestamp(_, _)
            | DataType::Date32
            | DataType::Date64
            | DataType::Decimal128(_, _)
    )
}

/// A list's elements as a JSON array; an element without a JSON form is `null`.
fn write_elements(values: &NestedEncoder<'_>, range: std::ops::Range<usize>, out: &mut Vec<u8>) {
    out.push(b'[');
    for (n, i) in range.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        if !values.write(i, out) {
            out.extend_from_slice(b"null");
        }
    }
    out.push(b']');
}

/// Writes any Arrow value as JSON (the generic, slower path used for nested values); NULLs are
/// written as `null`. Returns false when the value has no JSON form (NaN) and nothing was written.
pub fn write_value(a: &dyn Array, row: usize, out: &mut Vec<u8>) -> bool {
    if a.is_null(row) {
        out.extend_from_slice(b"null");
        return true;
    }
    match a.data_type() {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            let values: ArrayRef = match a.data_type() {
                DataType::List(_) => a.as_list::<i32>().value(row),
                DataType::LargeList(_) => a.as_list::<i64>().value(row),
                _ => a.as_fixed_size_list().value(row),
            };
            out.push(b'[');
            for i in 0..values.len() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_value(values.as_ref(), i, out) {
                    out.extend_from_slice(b"null");
                }
            }
            out.push(b']');
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            out.push(b'{');
            let mut first = true;
            for (field, col) in fields.iter().zip(s.columns()) {
                if col.is_null(row) {
                    continue;
                }
                let mark = out.len();
                if !first {
                    out.push(b',');
                }
                write_json_str(out, field.name());
                out.push(b':');
                if write_value(col.as_ref(), row, out) {
                    first = false;
                } else {
                    out.truncate(mark);
                }
            }
            out.push(b'}');
        }
        DataType::Map(_, _) => {
            let m = a.as_map();
            let entries = m.value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            out.push(b'{');
            for i in 0..entries.len() {
                if i > 0 {
                    out.push(b',');
                }
                let key = ColumnEncoder::new(keys).text(i).unwrap_or_default();
                write_json_str(out, &key);
                out.push(b':');
                if !write_value(values.as_ref(), i, out) {
                    out.extend_from_slice(b"null");
                }
            }
            out.push(b'}');
        }
        DataType::Dictionary(_, _) => {
            let d = a.as_any_dictionary();
            let key = d.normalized_keys()[row];
            return write_value(d.values().as_ref(), key, out);
        }
        DataType::Float16 => {
            let v = prim::<arrow::datatypes::Float16Type>(a, row);
            return write_f64(out, v.to_f64());
        }
        DataType::Null => out.extend_from_slice(b"null"),
        t if is_scalar(t) => {
            // Same rules as the typed top-level path.
            let array = arrow::array::make_array(a.to_data());
            return ColumnEncoder::new(&array).write(row, out);
        }
        _ => {
            // Times of day, intervals, durations, big decimals…: their canonical text.
            let opts = arrow::util::display::FormatOptions::default();
            match arrow::util::display::ArrayFormatter::try_new(a, &opts) {
                Ok(f) => write_json_str(out, &f.value(row).to_string()),
                Err(_) => return false,
            }
        }
    }
    true
}

/// Writes the key of `row` as JSON text: the value of the one key column, or an array of the
/// values of a composite key. Returns false (leaving partial output) when a key value is NULL
/// or cannot be encoded.
pub fn write_key_json(
    encs: &[ColumnEncoder<'_>],
    keys: &[usize],
    row: usize,
    out: &mut Vec<u8>,
) -> bool {
    let composite = keys.len() > 1;
    if composite {
        out.push(b'[');
    }
    for (n, &k) in keys.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        if encs[k].is_null(row) || !encs[k].write(row, out) {
            return false;
        }
    }
    if composite {
        out.push(b']');
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_strings() {
        let mut out = Vec::new();
        write_json_str(&mut out, "a\"b\\c\nd\u{1}é😀");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\nd\\u0001é😀\""
        );
    }

    #[test]
    fn formats_dates_and_times() {
        let mut out = Vec::new();
        write_iso_micros(&mut out, 1_714_564_800_250_000);
        assert_eq!(out, b"\"2024-05-01T12:00:00.250Z\"");
        out.clear();
        write_iso_micros(&mut out, -1);
        assert_eq!(out, b"\"1969-12-31T23:59:59.999999Z\"");
        out.clear();
        write_iso_date(&mut out, 19_844);
        assert_eq!(out, b"\"2024-05-01\"");
    }

    #[test]
    fn dates_and_times_agree_with_chrono() {
        // Years 0..=9999 (chrono writes others with a sign), every fraction kind.
        let (lo, hi) = (-62_167_219_200_000_000_i64, 253_402_300_799_999_999_i64);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..20_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let mut micros = lo + (x % (hi - lo) as u64) as i64;
            match n % 3 {
                0 => micros -= micros.rem_euclid(1_000_000),
                1 => micros -= micros.rem_euclid(1_000),
                _ => {}
            }
            let mut out = Vec::new();
            write_iso_micros(&mut out, micros);
            let t = chrono::DateTime::from_timestamp_micros(micros).unwrap();
            let want = format!("\"{}Z\"", t.format("%Y-%m-%dT%H:%M:%S%.f"));
            assert_eq!(String::from_utf8(out).unwrap(), want, "{micros}");
            let mut out = Vec::new();
            write_iso_date(&mut out, micros.div_euclid(86_400_000_000));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("\"{}\"", t.format("%Y-%m-%d"))
            );
        }
    }

    #[test]
    fn formats_decimals() {
        let mut out = Vec::new();
        write_decimal(&mut out, -1230, 2);
        out.push(b' ');
        write_decimal(&mut out, 5, 3);
        out.push(b' ');
        write_decimal(&mut out, 7, -2);
        out.push(b' ');
        write_decimal(&mut out, i128::MIN, 38);
        out.push(b' ');
        write_decimal(&mut out, -(1i128 << 70), 4);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-12.30 0.005 700 -1.70141183460469231731687303715884105728 \
             -118059162071741130.3424"
        );
    }

    /// Found by fuzzing (fuzz/fuzz_targets/mapping.rs): zero in a negative-scale decimal
    /// column was written `000`, which is not JSON.
    #[test]
    fn zero_with_a_negative_scale_is_json() {
        for (v, scale, want) in [(0, -3, "0"), (0, 0, "0"), (0, 2, "0.00"), (-4, -3, "-4000")] {
            let mut out = Vec::new();
            write_decimal(&mut out, v, scale);
            assert_eq!(String::from_utf8(out).unwrap(), want);
            let a: ArrayRef = std::sync::Arc::new(
                Decimal128Array::from(vec![v])
                    .with_precision_and_scale(10, scale)
                    .unwrap(),
            );
            let mut out = Vec::new();
            assert!(ColumnEncoder::new(&a).write(0, &mut out));
            serde_json::from_slice::<serde_json::Value>(&out).unwrap();
        }
    }

    /// The compiled nested encoder writes exactly what the generic path writes, for lists,
    /// large and fixed-size lists, structs (NULL fields, NULL structs, NaN), lists of structs,
    /// maps, and sliced arrays.
    #[test]
    fn nested_encoder_equals_write_value() {
        use arrow::array::{
            FixedSizeListBuilder, Float64Builder, Int64Builder, LargeListBuilder, ListBuilder,
            MapBuilder, StringBuilder, StructArray,
        };
        use arrow::datatypes::{Field, Fields};
        use std::sync::Arc;

        let mut strings = ListBuilder::new(StringBuilder::new());
        strings.append_value([Some("a"), None, Some("q\"uote")]);
        strings.append_null();
        strings.append_value(Vec::<Option<&str>>::new());
        strings.append_value([Some("z")]);
        let strings: ArrayRef = Arc::new(strings.finish());

        let mut ints = LargeListBuilder::new(Int64Builder::new());
        ints.append_value([Some(1), Some(-2)]);
        ints.append_value([None]);
        ints.append_null();
        ints.append_value([Some(i64::MAX)]);
        let ints: ArrayRef = Arc::new(ints.finish());

        let mut floats = FixedSizeListBuilder::new(Float64Builder::new(), 2);
        for (pair, valid) in [
            ([1.5, f64::NAN], true),
            ([0.0, 0.0], false),
            ([2.0, 3.0], true),
            ([-1.0, 1e300], true),
        ] {
            floats.values().append_slice(&pair);
            floats.append(valid);
        }
        let floats: ArrayRef = Arc::new(floats.finish());

        let names: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![
            Some("n1"),
            None,
            Some("n3"),
            Some("n4"),
        ]));
        let fields = Fields::from(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("tags", strings.data_type().clone(), true),
            Field::new("pair", floats.data_type().clone(), true),
        ]);
        let nulls = arrow::buffer::NullBuffer::from(vec![true, true, false, true]);
        let structs: ArrayRef = Arc::new(StructArray::new(
            fields.clone(),
            vec![names, strings.clone(), floats.clone()],
            Some(nulls),
        ));
        // A list of structs: [s0, s1], [], [s2, s3].
        let offsets = arrow::buffer::OffsetBuffer::new(vec![0i32, 2, 2, 4].into());
        let list_of_structs: ArrayRef = Arc::new(arrow::array::ListArray::new(
            Arc::new(Field::new("item", DataType::Struct(fields), true)),
            offsets,
            structs.clone(),
            None,
        ));
        let mut map = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
        map.keys().append_value("k");
        map.values().append_value(7);
        map.append(true).unwrap();
        map.append(false).unwrap();
        map.append(true).unwrap();
        map.keys().append_value("j");
        map.values().append_null();
        map.append(true).unwrap();
        let map: ArrayRef = Arc::new(map.finish());

        for array in [strings, ints, floats, structs, list_of_structs, map] {
            for candidate in [array.clone(), array.slice(1, array.len() - 1)] {
                let encoder = NestedEncoder::new(&candidate);
                for row in 0..candidate.len() {
                    let (mut compiled, mut generic) = (Vec::new(), Vec::new());
                    let a = encoder.write(row, &mut compiled);
                    let b = write_value(candidate.as_ref(), row, &mut generic);
                    assert_eq!(
                        (a, String::from_utf8_lossy(&compiled)),
                        (b, String::from_utf8_lossy(&generic)),
                        "{} row {row}",
                        candidate.data_type()
                    );
                }
            }
        }
    }

    proptest::proptest! {
        /// The 16-byte copies (string columns, a JSON column's names and values) write what
        /// serde_json writes, for strings with and without bytes to escape, of every length
        /// around 16, wherever they lie in the values buffer (its end included).
        #[test]
        fn short_string_copies_agree_with_serde_json(
            parts in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(
                    vec!['a', 'Z', ' ', '"', '\\', '\n', '\u{1f}', '\u{7f}', 'é', '東', '/']
                ), 0..20),
                1..6,
            ),
        ) {
            let strings: Vec<String> = parts.iter().map(|p| p.iter().collect()).collect();
            let array: ArrayRef = std::sync::Arc::new(arrow::array::StringArray::from(strings.clone()));
            let enc = ColumnEncoder::new(&array);
            let data = array.as_string::<i32>().value_data();
            for (row, s) in strings.iter().enumerate() {
                let want = serde_json::to_string(s).unwrap();
                let mut out = b"x".to_vec();
                enc.write(row, &mut out);
                proptest::prop_assert_eq!(&out[1..], want.as_bytes());
                let mut out = Vec::new();
                proptest::prop_assert!(enc.write_text(row, &mut out));
                proptest::prop_assert_eq!(&out[..], want.as_bytes());
                let value = array.as_string::<i32>().value(row);
                let mut out = Vec::new();
                write_json_str_from_buffer(&mut out, data, value);
                proptest::prop_assert_eq!(&out[..], want.as_bytes());
                let mut out = Vec::new();
                copy_from_buffer(&mut out, data, value.as_bytes());
                proptest::prop_assert_eq!(&out[..], s.as_bytes());
            }
            // A slice of another buffer is copied as it is, not read from `data`.
            let mut out = Vec::new();
            copy_from_buffer(&mut out, data, b"elsewhere");
            proptest::prop_assert_eq!(&out[..], b"elsewhere");
        }
    }

    #[test]
    fn pieces_of_every_length_are_written_whole() {
        for len in [0, 1, 31, 63, 64, 65, 200] {
            let bytes: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut out = b"head".to_vec();
            Piece::new(bytes.clone()).write(&mut out);
            assert_eq!(&out[4..], &bytes[..], "{len}");
        }
    }
}
