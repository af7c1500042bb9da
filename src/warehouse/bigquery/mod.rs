//! BigQuery over its REST API: `jobs.query` and `jobs.getQueryResults` pages.
//!
//! A query runs with `POST …/projects/{project}/queries` (standard SQL, timestamps as int64
//! microseconds); a job not complete within the call is polled; rows come in pages of
//! 50,000 (`pageToken`). Errors come as HTTP errors (`{"error": {code, message, errors}}`) or,
//! on some servers, as a 200 answer with `errors`: both are reported. Rows are `{"f": [{"v"}]}`
//! cells, converted by the schema's field types:
//!
//! | BigQuery | Arrow |
//! |---|---|
//! | INTEGER / INT64 | Int64 |
//! | FLOAT / FLOAT64 | Float64 |
//! | NUMERIC | Decimal128(38, 9) |
//! | BOOLEAN / BOOL | Boolean |
//! | DATE | Date32 |
//! | TIMESTAMP | Timestamp(µs, UTC) |
//! | DATETIME | Timestamp(µs) |
//! | STRING, BYTES (base64), TIME, JSON, BIGNUMERIC, GEOGRAPHY, INTERVAL | Utf8 |
//! | RECORD / STRUCT, REPEATED fields | Utf8 holding JSON (objects by field name, arrays) |
//!
//! Authentication: `access_token` (an OAuth2 token, e.g. from `gcloud auth
//! print-access-token`) sent as a bearer token, or none (emulators). Not in this version:
//! service-account JWT sign-in and the Storage Read API (gRPC, Arrow) for large snapshots.
//! Tested against `bqemulator` (tests/bigquery.rs).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use wharf_operators::arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondBuilder};
use wharf_operators::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use wharf_operators::watermark::Watermark;

use super::databricks::values;
use super::{ColumnInfo, SourceRef, TableSchema, WarehouseError};

/// How to reach BigQuery.
#[derive(Clone)]
pub struct BigQuerySettings {
    /// `https://bigquery.googleapis.com`, or an emulator's URL.
    pub endpoint: String,
    /// The project queries run in (and bill to).
    pub project: String,
    /// The dataset of unqualified table names.
    pub dataset: Option<String>,
    /// The location of the dataset (e.g. `US`, `EU`).
    pub location: Option<String>,
    /// An OAuth2 access token (never logged), or none.
    pub access_token: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for BigQuerySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigQuerySettings")
            .field("endpoint", &self.endpoint)
            .field("project", &self.project)
            .field("dataset", &self.dataset)
            .field("access_token", &self.access_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A BigQuery project.
#[derive(Debug, Clone)]
pub struct BigQueryWarehouse {
    name: String,
    settings: BigQuerySettings,
}

/// Rows per page.
const PAGE_ROWS: u32 = 50_000;

#[derive(Debug, Deserialize, Clone)]
struct FieldSchema {
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    fields: Vec<FieldSchema>,
}

impl FieldSchema {
    fn repeated(&self) -> bool {
        self.mode.as_deref() == Some("REPEATED")
    }

    fn arrow_type(&self) -> DataType {
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
struct Fields {
    #[serde(default)]
    fields: Vec<FieldSchema>,
}

#[derive(Debug, Deserialize, Default)]
struct JobRef {
    #[serde(rename = "jobId", default)]
    job_id: String,
    #[serde(default)]
    location: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct QueryAnswer {
    #[serde(rename = "jobComplete", default)]
    job_complete: bool,
    #[serde(rename = "jobReference", default)]
    job: JobRef,
    #[serde(default)]
    schema: Option<Fields>,
    #[serde(default)]
    rows: Vec<Row>,
    #[serde(rename = "pageToken", default)]
    page_token: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorProto>,
}

#[derive(Debug, Deserialize)]
struct Row {
    #[serde(default)]
    f: Vec<Cell>,
}

#[derive(Debug, Deserialize)]
struct Cell {
    #[serde(default)]
    v: Value,
}

#[derive(Debug, Deserialize, Default, Clone)]
struct ErrorProto {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorProto>,
}

/// A cell of a RECORD or REPEATED field as JSON.
fn cell_json(v: &Value, field: &FieldSchema, in_array: bool) -> Value {
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
fn columns(
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

fn arrow_schema(fields: &[FieldSchema]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|f| Field::new(&f.name, f.arrow_type(), true))
            .collect::<Vec<_>>(),
    ))
}

impl BigQueryWarehouse {
    /// A warehouse named `name` (for messages).
    pub fn new(name: impl Into<String>, settings: BigQuerySettings) -> Self {
        BigQueryWarehouse {
            name: name.into(),
            settings,
        }
    }

    fn what(&self) -> String {
        format!(
            "BigQuery warehouse `{}` (project {}, {})",
            self.name, self.settings.project, self.settings.endpoint
        )
    }

    fn query_err(src: &SourceRef, message: String) -> WarehouseError {
        WarehouseError::Query {
            source_ref: src.clone(),
            message,
            transient: false,
        }
    }

    fn failure(
        &self,
        src: &SourceRef,
        status: u16,
        message: &str,
        errors: &[ErrorProto],
    ) -> WarehouseError {
        let reason = errors
            .first()
            .and_then(|e| e.reason.clone())
            .unwrap_or_default();
        let message = if message.is_empty() {
            errors
                .first()
                .and_then(|e| e.message.clone())
                .unwrap_or_default()
        } else {
            message.to_string()
        };
        if reason == "notFound" && message.contains("Table") && matches!(src, SourceRef::Table(_)) {
            return WarehouseError::MissingTable {
                source_ref: src.clone(),
                warehouse: self.what(),
            };
        }
        if status == 401 || status == 403 {
            return WarehouseError::Open {
                what: self.what(),
                message: format!("refused (HTTP {status} {reason}): {message}"),
            };
        }
        Self::query_err(src, format!("{reason}: {message}"))
    }

    async fn call(
        &self,
        src: &SourceRef,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<QueryAnswer, WarehouseError> {
        let token = self.settings.access_token.clone();
        let resp = super::http::send(&self.what(), || {
            let r = build();
            match &token {
                Some(t) => r.bearer_auth(t),
                None => r,
            }
        })
        .await?;
        let status = resp.status().as_u16();
        let body = super::http::body(&self.what(), resp).await?;
        if !(200..300).contains(&status) {
            let (message, errors) = match serde_json::from_slice::<ErrorAnswer>(&body) {
                Ok(e) => (e.error.message.unwrap_or_default(), e.error.errors),
                Err(_) => (
                    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                    Vec::new(),
                ),
            };
            return Err(self.failure(src, status, &message, &errors));
        }
        let answer: QueryAnswer = serde_json::from_slice(&body)
            .map_err(|e| Self::query_err(src, format!("unexpected answer: {e}")))?;
        if !answer.errors.is_empty() {
            return Err(self.failure(src, status, "", &answer.errors));
        }
        Ok(answer)
    }

    /// Runs `sql` and hands each page, as Arrow, to `each`; returns the schema.
    async fn stream(
        &self,
        src: &SourceRef,
        sql: &str,
        max_rows: Option<u32>,
        mut each: impl FnMut(RecordBatch) -> bool,
    ) -> Result<SchemaRef, WarehouseError> {
        let s = &self.settings;
        let client = reqwest::Client::builder()
            .timeout(s.timeout)
            .build()
            .map_err(|e| WarehouseError::Unavailable {
                what: self.what(),
                message: e.to_string(),
            })?;
        let base = format!("{}/bigquery/v2/projects/{}/queries", s.endpoint, s.project);
        let mut body = json!({
            "query": sql,
            "useLegacySql": false,
            "maxResults": max_rows.unwrap_or(PAGE_ROWS),
            "timeoutMs": 30_000,
            "formatOptions": {"useInt64Timestamp": true},
        });
        if let Some(l) = &s.location {
            body["location"] = json!(l);
        }
        let body = body.to_string();
        let mut answer = self
            .call(src, || {
                client
                    .post(&base)
                    .header("content-type", "application/json")
                    .body(body.clone())
            })
            .await?;
        let job = answer.job.job_id.clone();
        let location = answer.job.location.clone().or_else(|| s.location.clone());
        let page = |token: Option<&str>, max: u32| {
            let mut url = format!(
                "{base}/{job}?maxResults={max}&timeoutMs=30000&formatOptions.useInt64Timestamp=true"
            );
            if let Some(l) = &location {
                url.push_str(&format!("&location={l}"));
            }
            if let Some(t) = token {
                url.push_str(&format!("&pageToken={t}"));
            }
            url
        };
        while !answer.job_complete {
            let url = page(None, 0);
            answer = self.call(src, || client.get(&url)).await?;
            if answer.job_complete {
                // The first page, now that the job is done.
                let url = page(None, max_rows.unwrap_or(PAGE_ROWS));
                answer = self.call(src, || client.get(&url)).await?;
            }
        }
        let fields = answer.schema.take().map(|f| f.fields).unwrap_or_default();
        let schema = arrow_schema(&fields);
        let mut sent = 0u64;
        loop {
            if !answer.rows.is_empty() {
                sent += answer.rows.len() as u64;
                let cols =
                    columns(&fields, &schema, &answer.rows).map_err(|e| Self::query_err(src, e))?;
                let batch = RecordBatch::try_new(schema.clone(), cols)
                    .map_err(|e| Self::query_err(src, e.to_string()))?;
                if !each(batch) {
                    break;
                }
            }
            let done = max_rows.is_some_and(|m| sent >= u64::from(m));
            match answer.page_token.take() {
                Some(t) if !done => {
                    let url = page(Some(&t), PAGE_ROWS);
                    answer = self.call(src, || client.get(&url)).await?;
                }
                _ => break,
            }
        }
        Ok(schema)
    }

    fn block<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, WarehouseError>>,
    ) -> Result<T, WarehouseError> {
        super::http::block_on(&self.what(), f)
    }

    /// `` `project.dataset.table` ``: unqualified names get the configured dataset.
    fn table_sql(&self, src: &SourceRef) -> String {
        match src {
            SourceRef::Table(t) => {
                let parts = t.split('.').count();
                let full = match (&self.settings.dataset, parts) {
                    (Some(d), 1) => format!("{}.{d}.{t}", self.settings.project),
                    (_, 2) => format!("{}.{t}", self.settings.project),
                    _ => t.clone(),
                };
                format!("`{}`", full.replace('`', ""))
            }
            SourceRef::Query(q) => format!("({}) AS wharf_source", q.trim().trim_end_matches(';')),
        }
    }

    fn ident(name: &str) -> String {
        format!("`{}`", name.replace('`', ""))
    }

    /// Runs `SELECT 1` (the health check).
    pub fn check(&self) -> Result<(), WarehouseError> {
        let src = SourceRef::Query("SELECT 1".into());
        self.block(self.stream(&src, "SELECT 1", Some(1), |_| true))
            .map(|_| ())
    }

    /// Columns and Arrow schema of `src`.
    pub fn describe(&self, src: &SourceRef) -> Result<TableSchema, WarehouseError> {
        let sql = format!("SELECT * FROM {} LIMIT 0", self.table_sql(src));
        let schema = self.block(self.stream(src, &sql, Some(0), |_| true))?;
        Ok(TableSchema {
            columns: schema
                .fields()
                .iter()
                .map(|f| ColumnInfo {
                    name: f.name().clone(),
                    sql_type: f.data_type().to_string(),
                    nullable: true,
                })
                .collect(),
            primary_key: Vec::new(),
            arrow: schema,
        })
    }

    /// `src` reduced to the latest row per `key` by `order`.
    pub fn latest_per_key(&self, src: &SourceRef, key: &[String], order: &str) -> SourceRef {
        let key: Vec<String> = key.iter().map(|k| Self::ident(k)).collect();
        super::latest_per_key_sql(&self.table_sql(src), &key, &Self::ident(order))
    }

    fn after_clause(cursor: &str, cursor_type: &DataType, after: Option<Watermark>) -> String {
        super::after_clause(
            &Self::ident(cursor),
            cursor_type,
            after,
            &super::Literals {
                timestamp: |t, instant| {
                    if instant {
                        format!("TIMESTAMP '{t}+00'")
                    } else {
                        format!("DATETIME '{t}'")
                    }
                },
                date: |d| format!("DATE '{d}'"),
            },
        )
    }

    fn scalar(&self, src: &SourceRef, sql: &str) -> Result<u64, WarehouseError> {
        let mut n = 0;
        self.block(self.stream(src, sql, Some(1), |b| {
            if b.num_rows() > 0 {
                n = super::snowflake::arrow::first_u64(b.column(0).as_ref()).unwrap_or(0);
            }
            false
        }))?;
        Ok(n)
    }

    /// Rows of `src`.
    pub fn count(&self, src: &SourceRef) -> Result<u64, WarehouseError> {
        self.scalar(
            src,
            &format!("SELECT COUNT(*) FROM {}", self.table_sql(src)),
        )
    }

    /// Rows an append run would read.
    pub fn count_after(
        &self,
        src: &SourceRef,
        cursor: &str,
        cursor_type: &DataType,
        after: Option<Watermark>,
    ) -> Result<u64, WarehouseError> {
        self.scalar(
            src,
            &format!(
                "SELECT COUNT(*) FROM {} {}",
                self.table_sql(src),
                Self::after_clause(cursor, cursor_type, after)
            ),
        )
    }

    /// Streams the rows whose `cursor` is past `after`.
    pub fn read_after(
        &self,
        src: &SourceRef,
        cursor: &str,
        cursor_type: &DataType,
        after: Option<Watermark>,
        each: impl FnMut(RecordBatch) -> bool,
    ) -> Result<(), WarehouseError> {
        let sql = format!(
            "SELECT * FROM {} {}",
            self.table_sql(src),
            Self::after_clause(cursor, cursor_type, after)
        );
        self.block(self.stream(src, &sql, None, each)).map(|_| ())
    }

    /// Streams the whole of `src`.
    pub fn read_snapshot(
        &self,
        src: &SourceRef,
        each: impl FnMut(RecordBatch) -> bool,
    ) -> Result<(), WarehouseError> {
        let sql = format!("SELECT * FROM {}", self.table_sql(src));
        self.block(self.stream(src, &sql, None, each)).map(|_| ())
    }

    /// The first `limit` rows of `src`.
    pub fn preview(
        &self,
        src: &SourceRef,
        limit: usize,
    ) -> Result<Vec<RecordBatch>, WarehouseError> {
        let sql = format!("SELECT * FROM {} LIMIT {limit}", self.table_sql(src));
        let mut out = Vec::new();
        self.block(self.stream(src, &sql, Some(limit as u32), |b| {
            out.push(b);
            true
        }))?;
        Ok(out)
    }
}
