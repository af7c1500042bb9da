//! The warehouse response decoders: Snowflake (query answer JSON, Arrow result chunks, gzip),
//! Databricks (statement JSON with inline rows, Arrow result chunks), BigQuery (REST pages,
//! Storage Read API protobuf with Arrow IPC).
//!
//! Input: a mode byte, then
//! - 0: a Snowflake query answer;
//! - 1: a Snowflake `rowtype` (JSON), a NUL, a result chunk;
//! - 2: a Databricks statement answer, a NUL, an Arrow result chunk;
//! - 3: a BigQuery page, a NUL, then the Storage Read session answer and `ReadRows`
//!   messages, each as `[u16 BE length][bytes]`;
//! - 4 and up: structured: Arrow columns built from the input, written as an IPC stream
//!   (sometimes damaged, sometimes gzipped) and read by all three decoders, with column
//!   types chosen from the input.
//!
//! Every batch a decoder returns must be valid Arrow whose rows encode as JSON. A panic inside
//! arrow-rs' IPC reader is caught by wharf (an error for that response) and tolerated here;
//! any other panic is a crash.
#![no_main]

use std::io::Write;
use std::sync::Arc;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use wharf_operators::arrow::array::{
    new_null_array, Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, ListArray, RecordBatch,
    StringArray, StructArray, Time64NanosecondArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray,
};
use wharf_operators::arrow::buffer::NullBuffer;
use wharf_operators::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use wharf_operators::arrow::ipc::writer::StreamWriter;

fn check(batches: &[RecordBatch]) {
    for batch in batches {
        for c in batch.columns() {
            c.to_data()
                .validate_full()
                .expect("a decoder returned invalid Arrow");
        }
        for row in 0..batch.num_rows().min(64) {
            let json = wharf_operators::columns::row_json(batch, row);
            serde_json::from_str::<Value>(&json).expect("row_json is JSON");
        }
    }
}

fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

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

fn opt<T: for<'a> arbitrary::Arbitrary<'a>>(
    u: &mut Unstructured,
    rows: usize,
) -> Result<Vec<Option<T>>> {
    (0..rows).map(|_| u.arbitrary()).collect()
}

fn f64_value(u: &mut Unstructured) -> Result<Option<f64>> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => None,
        1 => Some(f64::NAN),
        2 => Some(f64::INFINITY),
        3 => Some(f64::NEG_INFINITY),
        4 => Some(f64::MAX),
        5 => Some(-0.0),
        _ => Some(u.arbitrary()?),
    })
}

fn i64_value(u: &mut Unstructured) -> Result<Option<i64>> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => None,
        1 => Some(i64::MAX),
        2 => Some(i64::MIN),
        3 => Some(u.int_in_range(-100_000_000_000i64..=4_102_444_800_000)?),
        _ => Some(u.arbitrary()?),
    })
}

/// An Arrow column of `rows` values of a type the warehouses send.
fn column(u: &mut Unstructured, rows: usize) -> Result<ArrayRef> {
    let ints = |u: &mut Unstructured| -> Result<Vec<Option<i64>>> {
        (0..rows).map(|_| i64_value(u)).collect()
    };
    Ok(match u.int_in_range(0..=17u8)? {
        0 => Arc::new(Int64Array::from(ints(u)?)),
        1 => Arc::new(Int32Array::from(opt::<i32>(u, rows)?)),
        2 => Arc::new(Int16Array::from(opt::<i16>(u, rows)?)),
        3 => Arc::new(Int8Array::from(opt::<i8>(u, rows)?)),
        4 => Arc::new(Float64Array::from(
            (0..rows)
                .map(|_| f64_value(u))
                .collect::<Result<Vec<_>>>()?,
        )),
        5 => Arc::new(StringArray::from(opt::<String>(u, rows)?)),
        6 => Arc::new(BooleanArray::from(opt::<bool>(u, rows)?)),
        7 => Arc::new(Date32Array::from(opt::<i32>(u, rows)?)),
        8 => {
            let p = u.int_in_range(1..=38u8)?;
            let s = u.int_in_range(-10..=38i8)?;
            let values = opt::<i128>(u, rows)?;
            match Decimal128Array::from(values).with_precision_and_scale(p, s) {
                Ok(a) => Arc::new(a),
                Err(_) => Arc::new(Int64Array::from(ints(u)?)),
            }
        }
        9 => {
            // Snowflake's timestamp struct: the NULLs may sit in its non-nullable children.
            let fields = vec![
                Field::new("epoch", DataType::Int64, false),
                Field::new("fraction", DataType::Int32, false),
            ];
            let epoch: ArrayRef = Arc::new(Int64Array::from(ints(u)?));
            let fraction: ArrayRef = Arc::new(Int32Array::from(opt::<i32>(u, rows)?));
            let nulls = if u.arbitrary()? {
                Some(NullBuffer::from(
                    (0..rows)
                        .map(|_| u.arbitrary())
                        .collect::<Result<Vec<bool>>>()?,
                ))
            } else {
                None
            };
            Arc::new(unsafe {
                StructArray::new_unchecked(fields.into(), vec![epoch, fraction], nulls)
            })
        }
        10 => Arc::new(BinaryArray::from(
            opt::<Vec<u8>>(u, rows)?
                .iter()
                .map(|v| v.as_deref())
                .collect::<Vec<_>>(),
        )),
        11 => new_null_array(&DataType::Null, rows),
        12 => {
            let v = ints(u)?;
            let tz = u.arbitrary::<bool>()?.then(|| "UTC");
            match u.int_in_range(0..=3u8)? {
                0 => Arc::new(TimestampSecondArray::from(v).with_timezone_opt(tz)),
                1 => Arc::new(TimestampMillisecondArray::from(v).with_timezone_opt(tz)),
                2 => Arc::new(TimestampMicrosecondArray::from(v).with_timezone_opt(tz)),
                _ => Arc::new(TimestampNanosecondArray::from(v).with_timezone_opt(tz)),
            }
        }
        13 => Arc::new(Time64NanosecondArray::from(ints(u)?)),
        14 => {
            let lists: Vec<Option<Vec<Option<i64>>>> = (0..rows)
                .map(|_| {
                    Ok(if u.arbitrary()? {
                        let n = u.int_in_range(0..=4usize)?;
                        Some((0..n).map(|_| i64_value(u)).collect::<Result<Vec<_>>>()?)
                    } else {
                        None
                    })
                })
                .collect::<Result<_>>()?;
            Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(lists))
        }
        15 => {
            // Text as minilake sends it for typed columns: numbers, dates, timestamps.
            let samples = [
                "12.5",
                "-0",
                "1e400",
                "--5",
                "+-1",
                "9223372036854775808",
                "2024-02-30",
                "2024-01-02 03:04:05.123456",
                "2024-01-02T03:04:05+02:00",
                "true",
                "NaN",
                "Infinity",
                "-170141183460469231731687303715884105728",
                "0.1e-5",
                "",
            ];
            let v: Vec<Option<String>> = (0..rows)
                .map(|_| {
                    Ok(match u.int_in_range(0..=2u8)? {
                        0 => None,
                        1 => Some(u.choose(&samples)?.to_string()),
                        _ => Some(u.arbitrary()?),
                    })
                })
                .collect::<Result<_>>()?;
            Arc::new(StringArray::from(v))
        }
        16 => Arc::new(Float64Array::from(
            (0..rows)
                .map(|_| f64_value(u))
                .collect::<Result<Vec<_>>>()?,
        )),
        _ => Arc::new(Int64Array::from(ints(u)?)),
    })
}

const SNOWFLAKE_KINDS: [&str; 13] = [
    "fixed",
    "real",
    "text",
    "boolean",
    "date",
    "time",
    "timestamp_ntz",
    "timestamp_ltz",
    "timestamp_tz",
    "binary",
    "variant",
    "object",
    "array",
];

const DATABRICKS_TYPES: [&str; 16] = [
    "LONG",
    "INT",
    "DOUBLE",
    "DECIMAL",
    "DECIMAL(10,2)",
    "DECIMAL(38,38)",
    "DECIMAL(5,10)",
    "BOOLEAN",
    "DATE",
    "TIMESTAMP",
    "TIMESTAMP_NTZ",
    "STRING",
    "BINARY",
    "ARRAY",
    "HUGEINT",
    "decimal(3,-2)",
];

const BIGQUERY_TYPES: [&str; 11] = [
    "INTEGER",
    "FLOAT",
    "NUMERIC",
    "BOOLEAN",
    "DATE",
    "TIMESTAMP",
    "DATETIME",
    "STRING",
    "JSON",
    "RECORD",
    "BYTES",
];

fn ipc(schema: &Arc<Schema>, batch: Option<&RecordBatch>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, schema).ok()?;
    if let Some(b) = batch {
        w.write(b).ok()?;
    }
    w.finish().ok()?;
    drop(w);
    Some(out)
}

/// A length-delimited protobuf field (the wire format, written here so that the decoder is
/// not checked against itself).
fn protobuf_bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
    let varint = |out: &mut Vec<u8>, mut n: u64| loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    };
    varint(out, u64::from(field) << 3 | 2);
    varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

fn structured(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let n = u.int_in_range(1..=4usize)?;
    let rows = u.int_in_range(0..=8usize)?;
    let columns: Vec<ArrayRef> = (0..n)
        .map(|_| column(&mut u, rows))
        .collect::<Result<_>>()?;
    let fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("C{i}"), c.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let Ok(batch) = RecordBatch::try_new(schema.clone(), columns) else {
        return Ok(());
    };
    let (Some(head), Some(mut full)) = (ipc(&schema, None), ipc(&schema, Some(&batch))) else {
        return Ok(());
    };
    // Damage: a few bytes overwritten.
    let damaged = u.arbitrary::<bool>()?;
    if damaged {
        for _ in 0..u.int_in_range(1..=4u8)? {
            let at = u.choose_index(full.len())?;
            full[at] = u.arbitrary()?;
        }
    }

    // Snowflake: a rowtype from the input, the chunk maybe gzipped.
    let rowtype: Vec<Value> = (0..n)
        .map(|i| {
            Ok(json!({
                "name": format!("C{i}"),
                "type": u.choose(&SNOWFLAKE_KINDS)?,
                "precision": u.int_in_range(0..=40u32)?,
                "scale": u.int_in_range(-3..=40i32)?,
                "nullable": true,
            }))
        })
        .collect::<Result<_>>()?;
    let chunk = if u.arbitrary()? {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&full).unwrap();
        enc.finish().unwrap()
    } else {
        full.clone()
    };
    let rowtype_json = Value::Array(rowtype).to_string();
    if let Ok(batches) = wharf::fuzzing::snowflake_chunk(&chunk, &rowtype_json) {
        check(&batches);
    }

    // Databricks: a manifest from the input.
    let manifest: Vec<Value> = (0..n)
        .map(|i| Ok(json!({"name": format!("C{i}"), "type_name": u.choose(&DATABRICKS_TYPES)?})))
        .collect::<Result<_>>()?;
    let statement = json!({
        "status": {"state": "SUCCEEDED"},
        "manifest": {"schema": {"columns": manifest}},
    });
    if let Ok(batches) =
        wharf::fuzzing::databricks_statement(statement.to_string().as_bytes(), &full)
    {
        check(&batches);
    }

    // BigQuery: the schema message in the session, the batch in a ReadRows message; the
    // REST schema (the types `conform` casts to) from the input.
    let schema_len = head.len().saturating_sub(8);
    let end = full.len().saturating_sub(8).max(schema_len.min(full.len()));
    let (schema_msg, batch_msg) = (
        &full[..schema_len.min(full.len())],
        &full[schema_len.min(full.len())..end],
    );
    let mut inner = Vec::new();
    protobuf_bytes(&mut inner, 1, schema_msg);
    let mut session = Vec::new();
    protobuf_bytes(&mut session, 5, &inner);
    let mut stream = Vec::new();
    protobuf_bytes(
        &mut stream,
        1,
        b"projects/p/locations/l/sessions/s/streams/0",
    );
    protobuf_bytes(&mut session, 10, &stream);
    let mut rb = Vec::new();
    protobuf_bytes(&mut rb, 1, batch_msg);
    let mut message = Vec::new();
    protobuf_bytes(&mut message, 4, &rb);
    let bq_fields: Vec<Value> = (0..n)
        .map(|i| Ok(json!({"name": format!("c{i}"), "type": u.choose(&BIGQUERY_TYPES)?})))
        .collect::<Result<_>>()?;
    let page = json!({"jobComplete": true, "schema": {"fields": bq_fields}});
    if let Ok(batches) =
        wharf::fuzzing::bigquery_page(page.to_string().as_bytes(), &[&session, &message])
    {
        check(&batches);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    // arrow-rs' IPC reader panics on some damaged streams; wharf catches those panics around
    // each reader step and reports an error. libfuzzer-sys' panic hook aborts on every panic:
    // let the ones inside those reader steps unwind to wharf's catch instead.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !wharf::fuzzing::in_ipc_read() {
                abort(info);
            }
        }));
    });
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            if let Ok(b) = wharf::fuzzing::snowflake_answer(rest) {
                check(&b);
            }
        }
        1 => {
            let (rowtype, chunk) = split_nul(rest);
            if let Ok(b) = wharf::fuzzing::snowflake_chunk(chunk, &String::from_utf8_lossy(rowtype))
            {
                check(&b);
            }
        }
        2 => {
            let (body, chunk) = split_nul(rest);
            if let Ok(b) = wharf::fuzzing::databricks_statement(body, chunk) {
                check(&b);
            }
        }
        3 => {
            let (body, storage) = split_nul(rest);
            if let Ok(b) = wharf::fuzzing::bigquery_page(body, &pieces(storage)) {
                check(&b);
            }
        }
        _ => {
            let _ = structured(rest);
        }
    }
});
