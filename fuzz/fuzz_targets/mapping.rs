//! Arrow → Mixpanel record mapping: `EventMapper` (events, with the JSON properties column's
//! fast path and general path), the change mappers for profiles (`ProfileChanges`), lookup
//! tables (`LookupRows`) and change envelopes, on a batch built from the input: strings with
//! awkward content, integers and floats at their extremes (NaN, ±inf), timestamps of every
//! unit at the ends of their range, JSON text (valid, nearly valid, pretty-printed, with
//! duplicate or reserved keys), structs, lists, decimals, NULLs.
//!
//! Checked on every output: each record is one line of JSON with the documented shape and no
//! repeated key where the mapper promises none; each record key and reject key is JSON; every
//! row is accounted for; a row maps to the same record alone as inside its batch; a property
//! taken from the JSON column has the value serde_json reads there (floats within a few ulps);
//! wharf's lookup CSV lines read back with as many fields as the header.
#![no_main]

use std::sync::Arc;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use wharf_operators::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Date64Array, Decimal128Array,
    DictionaryArray, Float32Array, Float64Array, Int32Array, Int64Array, LargeStringArray,
    ListArray, RecordBatch, StringArray, StringViewArray, StructArray, Time64NanosecondArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray, UInt64Array,
};
use wharf_operators::arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema};
use wharf_operators::change::{ChangeMapper, ChangeOp, ChangeSet, RowChange};
use wharf_operators::envelope::{Envelope, EnvelopeRecords};
use wharf_operators::mixpanel::changes::{
    EventChanges, LookupRows, ProfileChanges, ProfileMapping, ProfileTarget,
};
use wharf_operators::mixpanel::events::{
    EpochUnit, EventMapper, EventMapping, EventName, MAX_PROPERTIES,
};
use wharf_operators::record::MappedBatch;
use wharf_operators::RecordMapper;

const RESERVED: [&str; 6] = [
    "time",
    "distinct_id",
    "$insert_id",
    "$device_id",
    "$warehouse_type",
    "$wharf_sync",
];

const NAMES: [&str; 12] = [
    "x",
    "time",
    "distinct_id",
    "$insert_id",
    "event",
    "props",
    "uid",
    "x",
    "é \"q\"\n",
    "",
    "$wharf_sync",
    "a\\b",
];

fn text(u: &mut Unstructured) -> Result<String> {
    const SAMPLES: [&str; 10] = [
        "",
        " ",
        "null",
        "Anonymous",
        "00000000-0000-0000-0000-000000000000",
        "\"quoted\" \\ back",
        "line\nbreak\r\t",
        "\u{0}\u{1f}\u{7f}",
        "東京 Zürich 😀",
        "-1",
    ];
    Ok(match u.int_in_range(0..=2u8)? {
        0 => u.choose(&SAMPLES)?.to_string(),
        _ => u.arbitrary()?,
    })
}

fn i64_value(u: &mut Unstructured) -> Result<i64> {
    Ok(match u.int_in_range(0..=6u8)? {
        0 => i64::MAX,
        1 => i64::MIN,
        2 => u.int_in_range(31_536_000..=4_102_444_800)?,
        3 => u.int_in_range(31_536_000_000..=4_102_444_800_000)?,
        _ => u.arbitrary()?,
    })
}

fn f64_value(u: &mut Unstructured) -> Result<f64> {
    Ok(match u.int_in_range(0..=6u8)? {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => f64::MIN_POSITIVE / 3.0,
        4 => -0.0,
        _ => u.arbitrary()?,
    })
}

fn nullable<T>(
    u: &mut Unstructured,
    rows: usize,
    mut f: impl FnMut(&mut Unstructured) -> Result<T>,
) -> Result<Vec<Option<T>>> {
    (0..rows)
        .map(|_| Ok(if u.ratio(1, 5)? { None } else { Some(f(u)?) }))
        .collect()
}

/// A JSON number's text in one of its spellings.
fn number(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => "-0".into(),
        1 => format!(
            "{}e{}",
            u.int_in_range(1..=9u8)?,
            u.int_in_range(-99..=99i8)?
        ),
        2 => format!(
            "{}.{}E+{}",
            u.arbitrary::<u16>()?,
            u.arbitrary::<u8>()?,
            u.int_in_range(0..=20u8)?
        ),
        3 => "1".repeat(u.int_in_range(1..=320usize)?),
        4 => format!("{}", u.arbitrary::<f64>()?)
            .replace("inf", "1e999")
            .replace("NaN", "0"),
        5 => format!("{}", u.arbitrary::<i64>()?),
        6 => format!("{}", u.arbitrary::<u64>()?),
        _ => format!("{}", u.arbitrary::<i32>()?),
    })
}

/// JSON text (an object most of the time) in awkward but mostly valid spellings.
fn json_text(u: &mut Unstructured, depth: u32) -> Result<String> {
    let ws = |u: &mut Unstructured| -> Result<&'static str> {
        Ok(*u.choose(&["", "", "", " ", "\n  ", "\t", "\r\n"])?)
    };
    let string = |u: &mut Unstructured| -> Result<String> {
        Ok(match u.int_in_range(0..=5u8)? {
            0 => format!(
                "\"{}\"",
                u.choose(&NAMES)?
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            ),
            1 => format!("\"{}\"", u.choose(&RESERVED)?),
            2 => "\"\\u00e9\\ud83d\\ude00\\/\"".to_string(),
            3 => "\"\\ud800\"".to_string(),
            _ => serde_json::to_string(&text(u)?).unwrap(),
        })
    };
    let kind = if depth == 0 {
        0
    } else {
        u.int_in_range(0..=7u8)?
    };
    Ok(match kind {
        0 | 1 => {
            let n = u.int_in_range(0..=6usize)?;
            let mut s = format!("{{{}", ws(u)?);
            for i in 0..n {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&string(u)?);
                s.push_str(ws(u)?);
                s.push(':');
                s.push_str(ws(u)?);
                s.push_str(&if depth < 3 {
                    json_text(u, depth + 1)?
                } else {
                    number(u)?
                });
                s.push_str(ws(u)?);
            }
            s.push('}');
            s
        }
        2 => {
            let n = u.int_in_range(0..=3usize)?;
            let items: Vec<String> = (0..n)
                .map(|_| {
                    if depth < 3 {
                        json_text(u, depth + 1)
                    } else {
                        number(u)
                    }
                })
                .collect::<Result<_>>()?;
            format!("[{}]", items.join(&format!(",{}", ws(u)?)))
        }
        3 => number(u)?,
        4 => string(u)?,
        5 => (*u.choose(&["null", "true", "false"])?).into(),
        6 => format!(
            "{}{}",
            "[".repeat(u.int_in_range(90..=130usize)?),
            "]".repeat(130)
        ),
        _ => u.arbitrary()?,
    })
}

fn props_text(u: &mut Unstructured) -> Result<String> {
    let mut s = json_text(u, 0)?;
    if u.ratio(1, 8)? {
        // A damaged copy: a byte dropped or duplicated.
        if !s.is_empty() {
            let at = u.choose_index(s.len())?;
            if s.is_char_boundary(at) && s.is_char_boundary(at + 1) {
                if u.arbitrary()? {
                    s.remove(at);
                } else {
                    let c = s.as_bytes()[at] as char;
                    s.insert(at, c);
                }
            }
        }
    }
    Ok(s)
}

/// An extra column of some type the warehouses send.
fn extra(u: &mut Unstructured, rows: usize) -> Result<ArrayRef> {
    Ok(match u.int_in_range(0..=15u8)? {
        0 => Arc::new(Int64Array::from(nullable(u, rows, i64_value)?)),
        1 => Arc::new(Float64Array::from(nullable(u, rows, f64_value)?)),
        2 => Arc::new(Float32Array::from(nullable(u, rows, |u| {
            Ok(f64_value(u)? as f32)
        })?)),
        3 => Arc::new(StringArray::from(nullable(u, rows, text)?)),
        4 => Arc::new(BooleanArray::from(nullable(u, rows, |u| u.arbitrary())?)),
        5 => Arc::new(BinaryArray::from(
            nullable(u, rows, |u| u.arbitrary::<Vec<u8>>())?
                .iter()
                .map(|v| v.as_deref())
                .collect::<Vec<_>>(),
        )),
        6 => {
            let p = u.int_in_range(1..=38u8)?;
            let s = u.int_in_range(-5..=38i8)?;
            let a = Decimal128Array::from(nullable(u, rows, |u| {
                Ok(match u.int_in_range(0..=3u8)? {
                    0 => 0,
                    1 => i128::MIN,
                    2 => i128::MAX,
                    _ => u.arbitrary::<i64>()? as i128,
                })
            })?);
            match a.with_precision_and_scale(p, s) {
                Ok(a) => Arc::new(a),
                Err(_) => Arc::new(Int64Array::from(vec![0; rows])),
            }
        }
        7 => Arc::new(Date32Array::from(nullable(u, rows, |u| u.arbitrary())?)),
        8 => Arc::new(Date64Array::from(nullable(u, rows, i64_value)?)),
        9 => Arc::new(Time64NanosecondArray::from(nullable(u, rows, i64_value)?)),
        10 => Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(nullable(
            u,
            rows,
            |u| {
                let n = u.int_in_range(0..=3usize)?;
                (0..n)
                    .map(|_| {
                        Ok(if u.arbitrary()? {
                            Some(i64_value(u)?)
                        } else {
                            None
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            },
        )?)),
        11 => {
            let a: ArrayRef = Arc::new(Int64Array::from(nullable(u, rows, i64_value)?));
            let b: ArrayRef = Arc::new(StringArray::from(nullable(u, rows, text)?));
            Arc::new(StructArray::from(vec![
                (
                    Arc::new(Field::new(*u.choose(&NAMES)?, DataType::Int64, true)),
                    a,
                ),
                (
                    Arc::new(Field::new(*u.choose(&NAMES)?, DataType::Utf8, true)),
                    b,
                ),
            ]))
        }
        12 => {
            let keys = Int32Array::from(nullable(u, rows, |u| u.int_in_range(0..=2i32))?);
            let values = StringArray::from(vec!["a", "b\"", "c\n"]);
            Arc::new(DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)).unwrap())
        }
        13 => Arc::new(UInt64Array::from(nullable(u, rows, |u| u.arbitrary())?)),
        14 => Arc::new(StringViewArray::from(nullable(u, rows, text)?)),
        _ => Arc::new(LargeStringArray::from(nullable(u, rows, text)?)),
    })
}

/// The time column in one of the types the mapper accepts (or one it refuses).
fn time_column(u: &mut Unstructured, rows: usize) -> Result<ArrayRef> {
    let v = nullable(u, rows, i64_value)?;
    let tz = u.arbitrary::<bool>()?.then_some("UTC");
    Ok(match u.int_in_range(0..=8u8)? {
        0 => Arc::new(TimestampSecondArray::from(v).with_timezone_opt(tz)),
        1 => Arc::new(TimestampMillisecondArray::from(v).with_timezone_opt(tz)),
        2 => Arc::new(TimestampMicrosecondArray::from(v).with_timezone_opt(tz)),
        3 => Arc::new(TimestampNanosecondArray::from(v).with_timezone_opt(tz)),
        4 => Arc::new(Date32Array::from(nullable(u, rows, |u| u.arbitrary())?)),
        5 => Arc::new(Date64Array::from(v)),
        6 => Arc::new(UInt64Array::from(nullable(u, rows, |u| u.arbitrary())?)),
        7 => Arc::new(StringArray::from(nullable(u, rows, text)?)),
        _ => Arc::new(Int64Array::from(v)),
    })
}

/// A JSON object's members in order (`None`: not an object).
fn members(text: &str) -> Option<Vec<(String, Box<RawValue>)>> {
    struct Ordered;
    impl<'de> serde::de::Visitor<'de> for Ordered {
        type Value = Vec<(String, Box<RawValue>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    use serde::Deserializer;
    let mut de = serde_json::Deserializer::from_str(text);
    let m = de.deserialize_map(Ordered).ok()?;
    de.end().ok()?;
    Some(m)
}

fn no_repeats(members: &[(String, Box<RawValue>)], what: &str) {
    let mut seen = std::collections::HashSet::new();
    for (k, _) in members {
        assert!(seen.insert(k.as_str()), "{what}: key {k:?} repeated");
    }
}

/// JSON values equal, floats within a few ulps: serde_json's default float parsing (without
/// its `float_roundtrip` feature) may read a long number and its shortest spelling one ulp
/// apart, and the general path writes floats in their shortest spelling.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// Checks an event mapper's output for `rows` rows; returns the properties per record.
fn check_events(out: &MappedBatch, rows: usize, mapping: &EventMapping) -> Vec<Map<String, Value>> {
    let r = &out.records;
    assert_eq!(
        r.len() + out.rejects.len(),
        rows,
        "every row is a record or a reject"
    );
    assert_eq!(r.key_ends.len(), r.len());
    let mut all = Vec::new();
    for i in 0..r.len() {
        let end = r.ends[i] as usize;
        assert_eq!(r.data[end - 1], b'\n');
        let record = r.record(i);
        assert!(
            !record.contains(&b'\n'),
            "a record spans lines: {:?}",
            String::from_utf8_lossy(record)
        );
        assert!(record.len() < 1_000_000);
        let text = std::str::from_utf8(record).expect("a record is UTF-8");
        let top = members(text).unwrap_or_else(|| panic!("a record is a JSON object: {text:?}"));
        no_repeats(&top, "record");
        assert_eq!(top.len(), 2, "{text}");
        assert_eq!(top[0].0, "event");
        assert_eq!(top[1].0, "properties");
        let event: Value = serde_json::from_str(top[0].1.get()).unwrap();
        assert!(event.is_string());
        let props = members(top[1].1.get()).expect("properties is an object");
        no_repeats(&props, "properties");
        assert!(props.len() <= MAX_PROPERTIES, "{} properties", props.len());
        let props: Map<String, Value> = props
            .into_iter()
            .map(|(k, v)| (k, serde_json::from_str(v.get()).unwrap()))
            .collect();
        assert!(props["time"].is_i64(), "{text}");
        assert!(props["distinct_id"].is_string());
        assert_eq!(
            props["$warehouse_type"],
            Value::from(mapping.warehouse_type.clone())
        );
        assert_eq!(props["$wharf_sync"], Value::from(mapping.sync_id.clone()));
        let id = props["$insert_id"].as_str().unwrap();
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        let key = r.key(i).expect("an event record has a key");
        assert!(
            is_json(key),
            "record key {:?}",
            String::from_utf8_lossy(key)
        );
        all.push(props);
    }
    for reject in &out.rejects {
        assert!(
            is_json(reject.key.as_bytes()),
            "reject key {:?}",
            reject.key
        );
        if let Some(id) = &reject.insert_id {
            assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
    all
}

fn check_records(out: &MappedBatch, what: &str) {
    let r = &out.records;
    for i in 0..r.len() {
        let record = r.record(i);
        assert!(!record.contains(&b'\n'), "{what}: a record spans lines");
        let text = std::str::from_utf8(record).expect("UTF-8");
        let top = members(text).unwrap_or_else(|| panic!("{what}: not a JSON object: {text:?}"));
        no_repeats(&top, what);
        if let Some(key) = r.key(i) {
            assert!(is_json(key), "{what}: record key");
        }
    }
    for reject in &out.rejects {
        assert!(
            is_json(reject.key.as_bytes()),
            "{what}: reject key {:?}",
            reject.key
        );
    }
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let rows = u.int_in_range(0..=6usize)?;
    let now_ms = u.int_in_range(0..=4_102_444_800_000i64)?;

    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut add = |name: &str, col: ArrayRef| {
        fields.push(Field::new(name, col.data_type().clone(), true));
        columns.push(col);
    };
    add(
        "name",
        Arc::new(StringArray::from(nullable(&mut u, rows, text)?)),
    );
    if u.arbitrary()? {
        add(
            "uid",
            Arc::new(Int64Array::from(nullable(&mut u, rows, i64_value)?)),
        );
    } else {
        add(
            "uid",
            Arc::new(StringArray::from(nullable(&mut u, rows, text)?)),
        );
    }
    add(
        "dev",
        Arc::new(StringArray::from(nullable(&mut u, rows, text)?)),
    );
    add("ts", time_column(&mut u, rows)?);
    let props: Vec<Option<String>> = nullable(&mut u, rows, props_text)?;
    let props_is_text = match u.int_in_range(0..=3u8)? {
        0 => {
            add("props", Arc::new(LargeStringArray::from(props.clone())));
            true
        }
        1 => {
            add("props", Arc::new(StringViewArray::from(props.clone())));
            true
        }
        2 => {
            add("props", extra(&mut u, rows)?);
            false
        }
        _ => {
            add("props", Arc::new(StringArray::from(props.clone())));
            true
        }
    };
    for _ in 0..u.int_in_range(0..=3usize)? {
        let name = if u.arbitrary()? {
            u.choose(&NAMES)?.to_string()
        } else {
            u.arbitrary::<String>()?
        };
        add(&name, extra(&mut u, rows)?);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("a batch");
    let column_names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();

    let pick = |u: &mut Unstructured| -> Result<String> {
        Ok(if u.ratio(1, 10)? {
            "missing".into()
        } else {
            u.choose(&column_names)?.clone()
        })
    };
    let key_columns = (0..u.int_in_range(0..=2usize)?)
        .map(|_| pick(&mut u))
        .collect::<Result<Vec<_>>>()?;
    let exclude_columns = (0..u.int_in_range(0..=2usize)?)
        .map(|_| pick(&mut u))
        .collect::<Result<Vec<_>>>()?;
    let mapping = EventMapping {
        sync_id: text(&mut u)?,
        warehouse_type: text(&mut u)?,
        event_name: if u.arbitrary()? {
            EventName::Column("name".into())
        } else {
            EventName::Static(text(&mut u)?)
        },
        time_column: "ts".into(),
        time_unit: *u.choose(&[EpochUnit::Auto, EpochUnit::Seconds, EpochUnit::Milliseconds])?,
        user_id_column: u.arbitrary::<bool>()?.then(|| "uid".into()),
        device_id_column: u.arbitrary::<bool>()?.then(|| "dev".into()),
        properties_column: u.arbitrary::<bool>()?.then(|| "props".into()),
        key_columns: key_columns.clone(),
        exclude_columns: exclude_columns.clone(),
    };

    if let Ok(mapper) = EventMapper::new(mapping.clone(), &schema) {
        let out = mapper.map_batch(&batch, now_ms);
        let all = check_events(&out, rows, &mapping);

        // Row by row: the same records and rejects as in the batch.
        let mut records = Vec::new();
        let mut rejects = Vec::new();
        let mut accepted_rows = Vec::new();
        for row in 0..rows {
            let one = mapper.map_batch(&batch.slice(row, 1), now_ms);
            check_events(&one, 1, &mapping);
            if one.records.len() == 1 {
                records.push(one.records.record(0).to_vec());
                accepted_rows.push(row);
            }
            rejects.extend(one.rejects);
        }
        let batch_records: Vec<Vec<u8>> = out.records.iter().map(<[u8]>::to_vec).collect();
        assert_eq!(batch_records, records, "a row maps alone as in its batch");
        assert_eq!(out.rejects, rejects);

        // Properties from the JSON text column: what serde_json reads there.
        if mapping.properties_column.is_some() && props_is_text {
            for (props_out, &row) in all.iter().zip(&accepted_rows) {
                let Some(text) = &props[row] else { continue };
                let parsed: Map<String, Value> = serde_json::from_str(text).unwrap_or_else(|e| {
                    panic!("accepted a row whose JSON column is not an object ({e}): {text:?}")
                });
                // serde_json's `Value` reads an object naming its raw value marker differently
                // from a map (`json::RAW_VALUE_TOKEN`); the mapper follows `Value` there.
                if serde_json::from_str::<Value>(text).ok() != Some(Value::Object(parsed.clone())) {
                    continue;
                }
                let is_column = |k: &str| column_names.iter().any(|c| c == k);
                let reserved = |k: &str| RESERVED.contains(&k);
                for (k, v) in &parsed {
                    if v.is_null() || is_column(k) || reserved(k) {
                        continue;
                    }
                    let out = props_out.get(k);
                    assert!(
                        out.is_some_and(|o| same(o, v)),
                        "property {k:?} of {text:?}: {out:?}, want {v:?}"
                    );
                }
                for (k, v) in props_out {
                    if is_column(k) || reserved(k) {
                        continue;
                    }
                    let want = parsed.get(k);
                    assert!(
                        want.is_some_and(|w| same(v, w)),
                        "property {k:?} not from {text:?}: {v:?}, want {want:?}"
                    );
                }
            }
        }

        // The same mapper behind change envelopes (files, Kafka) and as event changes.
        let envelope = Envelope::new(&mapping.sync_id, "table", "events", 7);
        let enveloped =
            EnvelopeRecords::new(Arc::new(mapper), envelope.clone()).map_batch(&batch, now_ms);
        check_records(&enveloped, "envelope");
    }

    // Changes: per row an op and the key's JSON text.
    let changes: Vec<RowChange> = (0..rows)
        .map(|_| {
            Ok(RowChange {
                op: if u.arbitrary()? {
                    ChangeOp::Insert
                } else {
                    ChangeOp::Update
                },
                identity_changed: u.arbitrary()?,
            })
        })
        .collect::<Result<_>>()?;
    let keys: Vec<String> = (0..rows)
        .map(|r| serde_json::to_string(&format!("k{r}")).unwrap())
        .collect();
    let set = ChangeSet::Rows {
        batch: batch.clone(),
        changes,
        keys: keys.clone(),
        rejects: Vec::new(),
    };
    let deletes = ChangeSet::Deletes(keys);
    let envelope = u
        .arbitrary::<bool>()?
        .then(|| Envelope::new(&mapping.sync_id, "t\"able", "user_profiles", u64::MAX));

    if let Ok(mapper) = EventMapper::new(mapping.clone(), &schema) {
        let changes = EventChanges::new(Arc::new(mapper), envelope.clone());
        check_records(&changes.map_changes(&set, now_ms), "event changes");
        check_records(&changes.map_changes(&deletes, now_ms), "event deletes");
    }

    let profile = ProfileMapping {
        target: if u.arbitrary()? {
            ProfileTarget::User
        } else {
            ProfileTarget::Group {
                group_key: text(&mut u)?,
            }
        },
        token: text(&mut u)?,
        id_column: pick(&mut u)?,
        properties_column: u.arbitrary::<bool>()?.then(|| "props".into()),
        exclude_columns: exclude_columns.clone(),
    };
    if let Ok(mapper) = ProfileChanges::new(&profile, &schema, envelope) {
        let out = mapper.map_changes(&set, now_ms);
        check_records(&out, "profiles");
        // A $set names each property once unless the table repeats a column name.
        let unique_columns = {
            let mut s = std::collections::HashSet::new();
            column_names.iter().all(|c| s.insert(c))
        };
        for record in out.records.iter() {
            let top = members(std::str::from_utf8(record).unwrap()).unwrap();
            for (k, v) in &top {
                if k == "$set" && unique_columns {
                    no_repeats(&members(v.get()).expect("$set is an object"), "$set");
                }
            }
        }
        check_records(&mapper.map_changes(&deletes, now_ms), "profile deletes");
    }

    if let Ok(lookup) = LookupRows::new(&schema, &pick(&mut u)?, &exclude_columns) {
        let out = lookup.map_changes(&set, now_ms);
        assert_eq!(out.records.len(), rows);
        let width = lookup.header().len();
        for line in out.records.iter() {
            let line = std::str::from_utf8(line).expect("CSV lines are UTF-8");
            if width > 1 {
                let read = wharf::fuzzing::lookup_csv(line).expect("a lookup line reads back");
                assert_eq!(read.len(), 1, "{line:?}");
                assert_eq!(read[0].len(), width, "{line:?}");
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
