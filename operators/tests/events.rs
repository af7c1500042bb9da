//! Event mapping: pure tests on hand-built Arrow batches.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use serde_json::{json, Value};
use wharf_operators::columns::MappingError;
use wharf_operators::mixpanel::events::{EpochUnit, EventMapper, EventMapping, EventName};
use wharf_operators::RecordMapper;

const NOW: i64 = 1_800_000_000_000;

fn mapping(time: &str) -> EventMapping {
    EventMapping {
        sync_id: "sync-a".into(),
        warehouse_type: "duckdb".into(),
        event_name: EventName::Static("Thing Happened".into()),
        time_column: time.into(),
        time_unit: EpochUnit::Auto,
        user_id_column: None,
        device_id_column: None,
        properties_column: None,
        key_columns: vec![],
        exclude_columns: vec![],
    }
}

fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        cols.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

fn records(m: &EventMapper, b: &RecordBatch) -> (Vec<Value>, Vec<String>) {
    let out = m.map_batch(b, NOW);
    let recs = out
        .records
        .iter()
        .map(|r| serde_json::from_slice(r).unwrap())
        .collect();
    (recs, out.rejects.into_iter().map(|r| r.reason).collect())
}

#[test]
fn every_time_representation_becomes_milliseconds() {
    let cases: Vec<(ArrayRef, EpochUnit, i64)> = vec![
        (
            Arc::new(TimestampMillisecondArray::from(vec![1_700_000_000_123])),
            EpochUnit::Auto,
            1_700_000_000_123,
        ),
        (
            Arc::new(
                TimestampNanosecondArray::from(vec![1_700_000_000_123_456_789])
                    .with_timezone("UTC"),
            ),
            EpochUnit::Auto,
            1_700_000_000_123,
        ),
        (
            Arc::new(Date32Array::from(vec![19_844])),
            EpochUnit::Auto,
            1_714_521_600_000,
        ),
        (
            Arc::new(Int64Array::from(vec![1_700_000_000])),
            EpochUnit::Auto,
            1_700_000_000_000,
        ),
        (
            Arc::new(Int64Array::from(vec![1_700_000_000_123])),
            EpochUnit::Auto,
            1_700_000_000_123,
        ),
        (
            Arc::new(Int32Array::from(vec![1_700_000_000])),
            EpochUnit::Seconds,
            1_700_000_000_000,
        ),
        (
            Arc::new(Int64Array::from(vec![1_700_000_000_000])),
            EpochUnit::Milliseconds,
            1_700_000_000_000,
        ),
    ];
    for (array, unit, expected) in cases {
        let b = batch(vec![("t", array)]);
        let mut mp = mapping("t");
        mp.time_unit = unit;
        let m = EventMapper::new(mp, &b.schema()).unwrap();
        let (recs, rejects) = records(&m, &b);
        assert!(rejects.is_empty(), "{rejects:?}");
        assert_eq!(
            recs[0]["properties"]["time"],
            json!(expected),
            "{:?}",
            b.column(0).data_type()
        );
        assert_eq!(recs[0]["event"], "Thing Happened");
    }
}

#[test]
fn insert_ids_are_deterministic_and_depend_on_sync_and_key() {
    let b = batch(vec![
        (
            "t",
            Arc::new(Int64Array::from(vec![1_700_000_000, 1_700_000_000])),
        ),
        ("k", Arc::new(StringArray::from(vec!["a", "b"]))),
        ("v", Arc::new(Int64Array::from(vec![1, 1]))),
    ]);
    let ids = |mp: EventMapping| -> Vec<String> {
        let m = EventMapper::new(mp, &b.schema()).unwrap();
        records(&m, &b)
            .0
            .iter()
            .map(|r| r["properties"]["$insert_id"].as_str().unwrap().to_string())
            .collect()
    };
    let whole_row = ids(mapping("t"));
    assert_eq!(whole_row, ids(mapping("t")), "stable across runs");
    assert_ne!(whole_row[0], whole_row[1]);
    for id in &whole_row {
        assert!(id.len() <= 36 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
    let mut keyed = mapping("t");
    keyed.key_columns = vec!["k".into()];
    let by_key = ids(keyed.clone());
    assert_ne!(by_key, whole_row);
    let mut other_sync = keyed;
    other_sync.sync_id = "sync-b".into();
    assert_ne!(ids(other_sync), by_key, "the sync id is part of the hash");
}

#[test]
fn json_column_is_flattened_and_table_columns_win() {
    let b = batch(vec![
        ("t", Arc::new(Int64Array::from(vec![1_700_000_000]))),
        ("color", Arc::new(StringArray::from(vec!["red"]))),
        (
            "props",
            Arc::new(StringArray::from(vec![
                r#"{"color":"blue","size":3,"time":1,"deep":{"a":[1]}}"#,
            ])),
        ),
        ("uid", Arc::new(Int64Array::from(vec![42]))),
    ]);
    let mut mp = mapping("t");
    mp.properties_column = Some("props".into());
    mp.user_id_column = Some("uid".into());
    let m = EventMapper::new(mp, &b.schema()).unwrap();
    let (recs, rejects) = records(&m, &b);
    assert!(rejects.is_empty());
    let p = &recs[0]["properties"];
    assert_eq!(p["color"], "red");
    assert_eq!(p["size"], 3);
    assert_eq!(
        p["time"], 1_700_000_000_000i64,
        "reserved names are not overwritten"
    );
    assert_eq!(p["deep"], json!({"a": [1]}));
    assert_eq!(p["distinct_id"], "42", "integer user ids become strings");
    assert!(p.get("props").is_none() && p.get("uid").is_none());
}

#[test]
fn rows_mixpanel_would_reject_are_rejected_with_reasons() {
    let many: Vec<(String, ArrayRef)> = (0..260)
        .map(|i| {
            (
                format!("c{i}"),
                Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
            )
        })
        .collect();
    let mut cols: Vec<(&str, ArrayRef)> = vec![
        (
            "t",
            Arc::new(Int64Array::from(vec![1_700_000_000, 1_700_000_000])),
        ),
        (
            "uid",
            Arc::new(StringArray::from(vec!["ok-user", "  UNDEFINED "])),
        ),
    ];
    cols.extend(many.iter().map(|(n, a)| (n.as_str(), a.clone())));
    let b = batch(cols);
    let mut mp = mapping("t");
    mp.user_id_column = Some("uid".into());
    let m = EventMapper::new(mp, &b.schema()).unwrap();
    let (recs, rejects) = records(&m, &b);
    assert!(recs.is_empty());
    assert!(
        rejects[0].contains("properties; Mixpanel accepts at most 255"),
        "{rejects:?}"
    );
    assert!(rejects[1].contains("placeholder"), "{rejects:?}");
}

#[test]
fn unknown_and_mistyped_columns_are_errors() {
    let b = batch(vec![(
        "t",
        Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
    )]);
    let err = EventMapper::new(mapping("nope"), &b.schema()).unwrap_err();
    assert!(matches!(err, MappingError::UnknownColumn { .. }));
    assert!(err.to_string().contains("its columns are: t"));
    let err = EventMapper::new(mapping("t"), &b.schema()).unwrap_err();
    assert!(matches!(err, MappingError::WrongType { .. }), "{err}");
    assert_eq!(
        b.schema().field(0).data_type(),
        &DataType::Utf8,
        "a string time column is refused, not guessed"
    );
}

#[test]
fn json_column_edge_cases_keep_records_on_one_line() {
    let b = batch(vec![
        (
            "t",
            Arc::new(Int64Array::from(vec![1_700_000_000, 1_700_000_000])) as ArrayRef,
        ),
        (
            "props",
            Arc::new(StringArray::from(vec![
                "{\n  \"pretty\": {\n    \"a\": 1\n  },\n  \"n\": null\n}",
                r#"{"esc\"aped": "v\n", "b": [1, 2]}"#,
            ])),
        ),
    ]);
    let mut mp = mapping("t");
    mp.properties_column = Some("props".into());
    let m = EventMapper::new(mp, &b.schema()).unwrap();
    let out = m.map_batch(&b, NOW);
    assert_eq!(
        out.records.data.iter().filter(|&&c| c == b'\n').count(),
        2,
        "one line each"
    );
    let (recs, rejects) = records(&m, &b);
    assert!(rejects.is_empty());
    assert_eq!(recs[0]["properties"]["pretty"], json!({"a": 1}));
    assert!(recs[0]["properties"].get("n").is_none());
    assert_eq!(recs[1]["properties"]["esc\"aped"], "v\n");
    assert_eq!(recs[1]["properties"]["b"], json!([1, 2]));
}

#[test]
fn records_carry_their_key_and_envelopes_wrap_them() {
    use wharf_operators::envelope::{Envelope, EnvelopeRecords};
    use wharf_operators::record::ChangeOp;
    let b = batch(vec![
        (
            "t",
            Arc::new(Int64Array::from(vec![
                Some(1_700_000_000),
                None,
                Some(1_700_000_001),
            ])) as ArrayRef,
        ),
        (
            "user",
            Arc::new(StringArray::from(vec!["u\"1", "u2", "u3"])) as ArrayRef,
        ),
        (
            "id",
            Arc::new(Int64Array::from(vec![10, 11, 12])) as ArrayRef,
        ),
    ]);
    // No primary key: each record is keyed by its distinct_id (JSON text).
    let m = EventMapper::new(
        EventMapping {
            user_id_column: Some("user".into()),
            ..mapping("t")
        },
        &b.schema(),
    )
    .unwrap();
    let out = m.map_batch(&b, NOW);
    assert_eq!(out.records.len(), 2, "the NULL time is rejected");
    assert_eq!(out.records.key(0), Some(&br#""u\"1""#[..]));
    assert_eq!(out.records.key(1), Some(&br#""u3""#[..]));
    assert_eq!(out.records.op(1), ChangeOp::Insert);
    // With a primary key, the key is its value.
    let keyed = Arc::new(
        EventMapper::new(
            EventMapping {
                user_id_column: Some("user".into()),
                key_columns: vec!["id".into()],
                ..mapping("t")
            },
            &b.schema(),
        )
        .unwrap(),
    );
    let out = keyed.map_batch(&b, NOW);
    assert_eq!(out.records.key(1), Some(&b"12"[..]));
    // A 413 split keeps every record's key.
    let (x, y) = out.records.split_in_half();
    assert_eq!((x.key(0), y.key(0)), (Some(&b"10"[..]), Some(&b"12"[..])));

    let wrapped = EnvelopeRecords::new(keyed, Envelope::new("s", "events_table", "events", 7));
    let out = wrapped.map_batch(&b, NOW);
    let env: Value = serde_json::from_slice(out.records.record(1)).unwrap();
    assert_eq!(env["op"], "insert");
    assert_eq!(env["key"], 12);
    assert_eq!(env["after"]["properties"]["distinct_id"], "u3");
    assert_eq!(
        (
            env["sync"].clone(),
            env["table"].clone(),
            env["table_type"].clone()
        ),
        (json!("s"), json!("events_table"), json!("events"))
    );
    assert_eq!(
        (env["run"].clone(), env["ts"].clone()),
        (json!(7), json!(NOW))
    );
    assert_eq!(out.records.key(1), Some(&b"12"[..]));
    assert_eq!(out.rejects.len(), 1);
}
