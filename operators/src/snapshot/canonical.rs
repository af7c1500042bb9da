//! The canonical forms of values that fingerprints hash: the binary form of version 2 and
//! canonical JSON (sorted object keys, no whitespace) for JSON columns.

use std::collections::BTreeMap;

use crate::encode::{write_json_str, ColumnEncoder};

/// Writes `e`'s value at `row` in the binary canonical form (version 2, see the
/// [`snapshot`](super) module docs); false when it has none (NaN, ±infinity). `json` is
/// scratch space.
pub(super) fn write_binary(
    e: &ColumnEncoder<'_>,
    is_json: bool,
    row: usize,
    out: &mut Vec<u8>,
    json: &mut Vec<u8>,
) -> bool {
    fn int(out: &mut Vec<u8>, v: i64) {
        out.push(b'i');
        out.extend_from_slice(&v.to_le_bytes());
    }
    fn float(out: &mut Vec<u8>, v: f64) -> bool {
        if !v.is_finite() {
            return false;
        }
        out.push(b'f');
        out.extend_from_slice(&v.to_bits().to_le_bytes());
        true
    }
    fn tagged(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push(tag);
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    if is_json {
        if let Some(text) = e.text(row) {
            json.clear();
            canonical_json(&text, json);
            tagged(out, b'j', json);
            return true;
        }
    }
    match e {
        ColumnEncoder::I8(a) => int(out, a.value(row).into()),
        ColumnEncoder::I16(a) => int(out, a.value(row).into()),
        ColumnEncoder::I32(a) => int(out, a.value(row).into()),
        ColumnEncoder::I64(a) => int(out, a.value(row)),
        ColumnEncoder::U8(a) => int(out, a.value(row).into()),
        ColumnEncoder::U16(a) => int(out, a.value(row).into()),
        ColumnEncoder::U32(a) => int(out, a.value(row).into()),
        ColumnEncoder::U64(a) => match i64::try_from(a.value(row)) {
            Ok(v) => int(out, v),
            Err(_) => {
                out.push(b'u');
                out.extend_from_slice(&a.value(row).to_le_bytes());
            }
        },
        ColumnEncoder::F32(a) => return float(out, a.value(row).into()),
        ColumnEncoder::F64(a) => return float(out, a.value(row)),
        ColumnEncoder::Utf8(a) => tagged(out, b's', a.value(row).as_bytes()),
        ColumnEncoder::LargeUtf8(a) => tagged(out, b's', a.value(row).as_bytes()),
        ColumnEncoder::Utf8View(a) => tagged(out, b's', a.value(row).as_bytes()),
        ColumnEncoder::Bool(a) => {
            out.push(b'b');
            out.push(u8::from(a.value(row)));
        }
        other => {
            json.clear();
            if !other.write(row, json) {
                return false;
            }
            tagged(out, b't', json);
        }
    }
    true
}

/// Writes `text` as canonical JSON (sorted object keys, no whitespace) into `out`; text that
/// is not JSON is written as a JSON string.
pub fn canonical_json(text: &str, out: &mut Vec<u8>) {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => write_canonical(&v, out),
        Err(_) => write_json_str(out, text),
    }
}

fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push(b'{');
            for (n, (k, v)) in sorted.into_iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_json_str(out, k);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (n, v) in a.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_json_str(out, s),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}
