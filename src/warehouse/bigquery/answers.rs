//! BigQuery's REST answers (`jobs.query`, `getQueryResults` pages, error bodies) and their
//! rows as Arrow columns of the schema's types; Storage Read API batches made to conform to
//! the same schema.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use wharf_operators::arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondBuilder};
use wharf_operators::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::warehouse::databricks::values;

/// A Storage Read API batch with the columns and types the REST path gives (`schema`): columns
/// found by name, cast where the Arrow types differ (e.g. a time zone's spelling).
pub(super) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let i = batch
                .schema()
                .fields()
                .iter()
                .position(|g| g.name().eq_ignore_ascii_case(f.name()))
                .ok_or_else(|| format!("the Storage Read API sent no column `{}`", f.name()))?;
            let col = batch.column(i);
            if col.data_type() == f.data_type() {
                Ok(col.clone())
            } else {
                wharf_operators::arrow::compute::cast(col, f.data_type())
                    .map_err(|e| format!("column `{}`: {e}", f.name()))
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

#[derive(Debug, Deserialize, Clone)]
pub(super) struct FieldSchema {
    pub(super) name: String,
    #[serde(rename = "type", default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) mode: Option<String>,
    #[serde(default)]
    pub(super) fields: Vec<FieldSchema>,
}

impl FieldSchema {
    pub(super) fn repeated(&self) -> bool {
        self.mode.as_deref() == Some("REPEATED")
    }

    pub(super) fn arrow_type(&self) -> DataType {
        if self.repeated() {
            return DataType::Utf8;
        }
        match self.kind.as_str() {
            "INTEGER" | "INT64" => DataType::Int64,
            "FLOAT" | "FLOAT64" => DataType::Float64,
            "NUMERIC" => DataType::Decimal128(38, 9),
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "DATE" => DataType::Date32,
            "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            "DATETIME" => DataType::Timestamp(TimeUnit::Microsecond, None),
            _ => DataType::Utf8,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct Fields {
    #[serde(default)]
    pub(super) fields: Vec<FieldSchema>,
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct JobRef {
    #[serde(rename = "jobId", default)]
    pub(super) job_id: String,
    #[serde(default)]
    pub(super) location: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct QueryAnswer {
    #[serde(rename = "jobComplete", default)]
    pub(super) job_complete: bool,
    #[serde(rename = "jobReference", default)]
    pub(super) job: JobRef,
    #[serde(default)]
    pub(super) schema: Option<Fields>,
    #[serde(default)]
    pub(super) rows: Vec<Row>,
    #[serde(rename = "pageToken", default)]
    pub(super) page_token: Option<String>,
    #[serde(default)]
    pub(super) errors: Vec<ErrorProto>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Row {
    #[serde(default)]
    pub(super) f: Vec<Cell>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Cell {
    #[serde(default)]
    pub(super) v: Value,
}

#[derive(Debug, Deserialize, Default, Clone)]
pub(super) struct ErrorProto {
    #[serde(default)]
    pub(super) reason: Option<String>,
    #[serde(default)]
    pub(super) message: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ErrorAnswer {
    pub(super) error: ErrorBody,
}

#[derive(Debug, Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub(super) message: Option<String>,
    #[serde(default)]
    pub(super) errors: Vec<ErrorProto>,
}

/// A cell of a RECORD or REPEATED field as JSON.
pub(super) fn cell_json(v: &Value, field: &FieldSchema, in_array: bool) -> Value {
    if field.repeated() && !in_array {
        return match v {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| cell_json(&i["v"], field, true))
                    .collect(),
            ),
            _ => Value::Array(Vec::new()),
        };
    }
    match (field.kind.as_str(), v) {
        (_, Value::Null) => Value::Null,
        ("RECORD" | "STRUCT", Value::Object(o)) => {
            let cells = o.get("f").and_then(Value::as_array);
            let mut out = serde_json::Map::new();
            for (i, sub) in field.fields.iter().enumerate() {
                let cv = cells
                    .and_then(|c| c.get(i))
                    .map(|c| &c["v"])
                    .unwrap_or(&Value::Null);
                out.insert(sub.name.clone(), cell_json(cv, sub, false));
            }
            Value::Object(out)
        }
        ("INTEGER" | "INT64", Value::String(s)) => s
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| v.clone()),
        ("FLOAT" | "FLOAT64", Value::String(s)) => s
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .unwrap_or_else(|| v.clone()),
        ("BOOLEAN" | "BOOL", Value::String(s)) => Value::Bool(s == "true"),
        ("JSON", Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        _ => v.clone(),
    }
}

/// One page of rows as columns.
pub(super) fn columns(
    fields: &[FieldSchema],
    schema: &SchemaRef,
    rows: &[Row],
) -> Result<Vec<ArrayRef>, String> {
    fields
        .iter()
        .zip(schema.fields())
        .enumerate()
        .map(|(c, (field, f))| {
            let cell = |i: usize| rows.get(i).and_then(|r| r.f.get(c)).map(|c| &c.v);
            let ty = f.data_type();
            let result = if field.repeated() || matches!(field.kind.as_str(), "RECORD" | "STRUCT") {
                values::build(ty, rows.len(), |i| {
                    cell(i)
                        .filter(|v| !v.is_null() || field.repeated())
                        .map(|v| cell_json(v, field, false).to_string().into())
                })
            } else if field.kind == "TIMESTAMP" {
                // int64 microseconds (useInt64Timestamp) or float seconds.
                let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len());
                for i in 0..rows.len() {
                    match cell(i) {
                        Some(Value::String(s)) => {
                            let us = s.parse::<i64>().ok().or_else(|| {
                                s.parse::<f64>().ok().map(|f| (f * 1e6).round() as i64)
                            });
                            b.append_value(us.ok_or_else(|| format!("`{s}` is not a TIMESTAMP"))?);
                        }
                        _ => b.append_null(),
                    }
                }
                Ok(Arc::new(b.finish().with_timezone("UTC")) as ArrayRef)
            } else {
                values::build(ty, rows.len(), |i| match cell(i) {
                    Some(Value::String(s)) => Some(s.as_str().into()),
                    Some(Value::Null) | None => None,
                    Some(other) => Some(other.to_string().into()),
                })
            };
            result.map_err(|e| format!("column {}: {e}", field.name))
        })
        .collect()
}

pub(super) fn arrow_schema(fields: &[FieldSchema]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|f| Field::new(&f.name, f.arrow_type(), true))
            .collect::<Vec<_>>(),
    ))
}
