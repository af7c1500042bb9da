//! Mapping Arrow → Mixpanel event JSON, rows per second (criterion).
//!
//! `cargo bench --bench mapping`

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wharf_operators::mixpanel::events::EventMapper;
use wharf_operators::RecordMapper;

#[path = "common/demo_mapping.rs"]
mod demo_mapping;

const ROWS: usize = 8192;

fn batch() -> RecordBatch {
    let n = ROWS as i64;
    let names = ["Sign Up", "Page View", "Search", "Add to Cart", "Purchase"];
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Int64, false),
        Field::new("event_name", DataType::Utf8, false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("device_id", DataType::Utf8, true),
        Field::new("properties", DataType::Utf8, true),
        Field::new("plan", DataType::Utf8, true),
        Field::new("items", DataType::Int64, true),
        Field::new("is_mobile", DataType::Boolean, true),
        Field::new("session_seconds", DataType::Float64, true),
        Field::new("city", DataType::Utf8, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..n)),
        Arc::new(StringArray::from_iter_values(
            (0..ROWS).map(|i| names[i % names.len()]),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                (0..n).map(|i| 1_714_564_800_000_000 + i * 1_000_000),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter(
            (0..ROWS).map(|i| (i % 10 != 0).then(|| format!("user_{}", i % 5000))),
        )),
        Arc::new(StringArray::from_iter_values(
            (0..ROWS).map(|i| format!("dev-{}", i % 20000)),
        )),
        Arc::new(StringArray::from_iter_values((0..ROWS).map(|i| {
            format!(
                r#"{{"browser":"Chrome","screen":{{"w":1280,"h":720}},"experiment":"exp-{}"}}"#,
                i % 5
            )
        }))),
        Arc::new(StringArray::from_iter_values(
            (0..ROWS).map(|i| ["free", "pro", "enterprise"][i % 3]),
        )),
        Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 9))),
        Arc::new(BooleanArray::from_iter((0..ROWS).map(|i| Some(i % 2 == 0)))),
        Arc::new(Float64Array::from_iter_values(
            (0..ROWS).map(|i| (i % 36000) as f64 / 100.0),
        )),
        Arc::new(StringArray::from_iter_values(
            (0..ROWS).map(|i| ["Zürich", "São Paulo", "東京", "Kraków"][i % 4]),
        )),
    ];
    RecordBatch::try_new(schema, cols).expect("batch")
}

fn mapper(batch: &RecordBatch, with_json: bool) -> EventMapper {
    EventMapper::new(
        demo_mapping::demo_event_mapping("bench", with_json),
        &batch.schema(),
    )
    .expect("mapper")
}

fn bench_mapping(c: &mut Criterion) {
    let b = batch();
    let now = 1_800_000_000_000;
    let mut group = c.benchmark_group("map_events");
    group.throughput(Throughput::Elements(ROWS as u64));
    let plain = mapper(&b, false);
    group.bench_function("10_columns", |bench| {
        bench.iter(|| plain.map_batch(&b, now))
    });
    let json = mapper(&b, true);
    group.bench_function("10_columns_plus_json_column", |bench| {
        bench.iter(|| json.map_batch(&b, now))
    });
    group.finish();
}

criterion_group!(benches, bench_mapping);
criterion_main!(benches);
