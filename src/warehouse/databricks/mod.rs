//! Databricks over the SQL Statement Execution API.
//!
//! - `POST /api/2.0/sql/statements` (bearer token) runs a statement on a SQL warehouse,
//!   waiting up to 30 s; a statement still `PENDING`/`RUNNING` is polled at
//!   `GET /api/2.0/sql/statements/{id}`. A failure is either an HTTP error
//!   (`{error_code, message}`) or the state `FAILED` with `status.error`.
//! - Small answers (counts, the schema) come `INLINE` as `JSON_ARRAY`; reads come as
//!   `ARROW_STREAM` with `EXTERNAL_LINKS`: each chunk's `external_link` is downloaded without
//!   the bearer token (it is a presigned URL; only its own `http_headers` are sent), and the
//!   next chunk is found by following `next_chunk_internal_link` (walking the manifest's chunk
//!   list would not work on every server).
//! - Columns are converted to the manifest's types by [`values`] (see there).
//!
//! Identifiers that are plain names are written as is; others are quoted with backticks.
//! Tested against `minilake` (tests/databricks.rs), whose SQL is DuckDB's, which answers every
//! statement at once (so polling is not exercised) and which does not check tokens.

pub mod config;
pub mod values;

pub(crate) use config::from_config;
pub use config::DatabricksConfig;

use std::sync::Arc;

use super::PartsOf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use wharf_operators::arrow::array::RecordBatch;
use wharf_operators::arrow::datatypes::SchemaRef;
use wharf_operators::watermark::Watermark;

use super::http::BaseUrl;
use super::sql::{Sql, SqlApi};
use super::{
    whole_read, ColumnInfo, EachBatch, PartRead, Select, SourceRef, TableSchema, WarehouseError,
};
use crate::secret::Secret;
use values::Column;

/// How to reach a Databricks SQL warehouse.
#[derive(Debug, Clone)]
pub struct DatabricksSettings {
    /// Workspace URL, e.g. `https://adb-123.4.azuredatabricks.net`.
    pub host: BaseUrl,
    /// Personal access or service-principal token (never logged).
    pub token: Secret,
    /// The SQL warehouse id.
    pub warehouse_id: String,
    /// Default catalog and schema of statements.
    pub catalog: Option<String>,
    /// Default schema.
    pub schema: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// A Databricks SQL warehouse.
#[derive(Debug, Clone)]
pub struct DatabricksWarehouse {
    name: String,
    settings: DatabricksSettings,
}

#[derive(Debug, Deserialize, Default)]
struct Statement {
    #[serde(default)]
    statement_id: Option<String>,
    #[serde(default)]
    status: Status,
    #[serde(default)]
    manifest: Option<Manifest>,
    #[serde(default)]
    result: Option<ResultData>,
}

#[derive(Debug, Deserialize, Default)]
struct Status {
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize, Default)]
struct ApiError {
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct Manifest {
    #[serde(default)]
    schema: ManifestSchema,
    /// Chunks of an `EXTERNAL_LINKS` result (each fetched by its index).
    #[serde(default)]
    total_chunk_count: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
struct ManifestSchema {
    #[serde(default)]
    columns: Vec<Column>,
}

#[derive(Debug, Deserialize, Default)]
struct ResultData {
    #[serde(default)]
    data_array: Option<Vec<Vec<Value>>>,
    #[serde(default)]
    external_links: Option<Vec<ExternalLink>>,
}

#[derive(Debug, Deserialize)]
struct ExternalLink {
    external_link: String,
    #[serde(default)]
    http_headers: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    next_chunk_internal_link: Option<String>,
}

/// A name as SQL: as is when plain, else in backticks.
fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("`{}`", name.replace('`', "``"))
    }
}

/// `catalog.schema.table` with each part as [`ident`].
fn table_name(t: &str) -> String {
    t.split('.').map(ident).collect::<Vec<_>>().join(".")
}

impl DatabricksWarehouse {
    /// A warehouse named `name` (for messages).
    pub fn new(name: impl Into<String>, settings: DatabricksSettings) -> Self {
        DatabricksWarehouse {
            name: name.into(),
            settings,
        }
    }

    fn client(&self) -> Result<reqwest::Client, WarehouseError> {
        super::http::client(&self.what(), self.settings.timeout)
    }

    fn query_err(src: &SourceRef, message: String) -> WarehouseError {
        WarehouseError::Query {
            source_ref: src.clone(),
            message,
            transient: false,
        }
    }

    /// The failure in an error answer, as a [`WarehouseError`].
    fn failure(&self, src: &SourceRef, status: u16, e: &ApiError) -> WarehouseError {
        let code = e.error_code.clone().unwrap_or_default();
        let message = e.message.clone().unwrap_or_default();
        let missing = message.contains("TABLE_OR_VIEW_NOT_FOUND")
            || (message.contains("Table with name") && message.contains("does not exist"));
        if missing && matches!(src, SourceRef::Table(_)) {
            return WarehouseError::MissingTable {
                source_ref: src.clone(),
                warehouse: self.what(),
            };
        }
        if status == 401
            || status == 403
            || code == "PERMISSION_DENIED"
            || code == "UNAUTHENTICATED"
        {
            return WarehouseError::Open {
                what: self.what(),
                message: format!("refused (HTTP {status} {code}): {message}"),
            };
        }
        Self::query_err(src, format!("{code}: {message}"))
    }

    async fn parse(
        &self,
        src: &SourceRef,
        resp: reqwest::Response,
    ) -> Result<Statement, WarehouseError> {
        let status = resp.status().as_u16();
        let body = super::http::body(&self.what(), resp).await?;
        if !(200..300).contains(&status) {
            let e: ApiError = serde_json::from_slice(&body).unwrap_or(ApiError {
                error_code: None,
                message: Some(String::from_utf8_lossy(&body[..body.len().min(300)]).into()),
            });
            return Err(self.failure(src, status, &e));
        }
        serde_json::from_slice(&body)
            .map_err(|e| Self::query_err(src, format!("unexpected answer: {e}")))
    }

    /// Runs `sql` to completion.
    async fn execute(
        &self,
        client: &reqwest::Client,
        src: &SourceRef,
        sql: &str,
        arrow: bool,
    ) -> Result<Statement, WarehouseError> {
        let s = &self.settings;
        let mut body = json!({
            "warehouse_id": s.warehouse_id,
            "statement": sql,
            "wait_timeout": "30s",
            "on_wait_timeout": "CONTINUE",
            "format": if arrow { "ARROW_STREAM" } else { "JSON_ARRAY" },
            "disposition": if arrow { "EXTERNAL_LINKS" } else { "INLINE" },
        });
        if let Some(c) = &s.catalog {
            body["catalog"] = json!(c);
        }
        if let Some(sc) = &s.schema {
            body["schema"] = json!(sc);
        }
        let body = body.to_string();
        let url = format!("{}/api/2.0/sql/statements", s.host.as_str());
        let resp = super::http::send(&self.what(), || {
            client
                .post(&url)
                .bearer_auth(s.token.expose())
                .header("content-type", "application/json")
                .body(body.clone())
        })
        .await?;
        let mut st = self.parse(src, resp).await?;
        let mut polls = 0u32;
        while matches!(st.status.state.as_str(), "PENDING" | "RUNNING") {
            let Some(id) = st.statement_id.clone() else {
                break;
            };
            tokio::time::sleep(Duration::from_millis(if polls < 10 { 200 } else { 1000 })).await;
            polls += 1;
            let url = format!("{}/api/2.0/sql/statements/{id}", s.host.as_str());
            let resp = super::http::send(&self.what(), || {
                client.get(&url).bearer_auth(s.token.expose())
            })
            .await?;
            st = self.parse(src, resp).await?;
        }
        match st.status.state.as_str() {
            "SUCCEEDED" => Ok(st),
            state => Err(match &st.status.error {
                Some(e) => self.failure(src, 200, e),
                None => Self::query_err(src, format!("the statement ended {state}")),
            }),
        }
    }

    /// Runs `sql` and hands each result batch, as Arrow of the manifest's types, to `each`.
    async fn stream(
        &self,
        src: &SourceRef,
        sql: &str,
        each: EachBatch<'_>,
    ) -> Result<(), WarehouseError> {
        let client = self.client()?;
        let st = self.execute(&client, src, sql, true).await?;
        let columns = st.manifest.map(|m| m.schema.columns).unwrap_or_default();
        let schema = values::schema(&columns);
        let mut links = st.result.and_then(|r| r.external_links).unwrap_or_default();
        loop {
            let mut next = None;
            for link in &links {
                if !self.download(&client, src, link, &schema, each).await? {
                    return Ok(());
                }
                next = link.next_chunk_internal_link.clone();
            }
            let Some(path) = next else {
                return Ok(());
            };
            links = self.chunk_links(&client, src, &path).await?;
        }
    }

    /// Downloads one result chunk's presigned link and hands its batches to `each`; false when
    /// `each` said stop.
    async fn download(
        &self,
        client: &reqwest::Client,
        src: &SourceRef,
        link: &ExternalLink,
        schema: &SchemaRef,
        each: EachBatch<'_>,
    ) -> Result<bool, WarehouseError> {
        let qerr = |m: String| Self::query_err(src, m);
        // A presigned URL: only its own headers, never the bearer token.
        let resp = super::http::send(&self.what(), || {
            let mut r = client.get(&link.external_link);
            for (k, v) in link.http_headers.iter().flatten() {
                r = r.header(k, v);
            }
            r
        })
        .await?;
        if !resp.status().is_success() {
            return Err(qerr(format!("result chunk: HTTP {}", resp.status())));
        }
        let bytes = super::http::body(&self.what(), resp).await?;
        for batch in decode(&bytes, schema).map_err(&qerr)? {
            if batch.num_rows() > 0 && !each(batch) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The external links of the chunk at `path` (`/api/2.0/sql/statements/{id}/result/chunks/{n}`).
    async fn chunk_links(
        &self,
        client: &reqwest::Client,
        src: &SourceRef,
        path: &str,
    ) -> Result<Vec<ExternalLink>, WarehouseError> {
        let qerr = |m: String| Self::query_err(src, m);
        let url = format!("{}{path}", self.settings.host.as_str());
        let resp = super::http::send(&self.what(), || {
            client.get(&url).bearer_auth(self.settings.token.expose())
        })
        .await?;
        let status = resp.status().as_u16();
        let body = super::http::body(&self.what(), resp).await?;
        if !(200..300).contains(&status) {
            return Err(qerr(format!(
                "result chunk: HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )));
        }
        let chunk: ResultData = serde_json::from_slice(&body)
            .map_err(|e| qerr(format!("unexpected chunk answer: {e}")))?;
        Ok(chunk.external_links.unwrap_or_default())
    }

    /// A read in `count` parts: the statement runs once (one result, one state of the table),
    /// and its result chunks are dealt out to the parts, each fetching its chunks by index on
    /// its own thread.
    fn chunk_parts(self: Arc<Self>, of: PartsOf<'_>) -> Result<Vec<PartRead>, WarehouseError> {
        let (src, count) = (of.src, of.count);
        if count <= 1 {
            return Ok(vec![whole_read(self, src, of.filter)]);
        }
        let sql = Select::all(src, of.filter).sql(&self.source_sql(src)?);
        let st = super::http::block_on(&self.what(), async {
            let client = self.client()?;
            self.execute(&client, src, &sql, true).await
        })?;
        let id = st
            .statement_id
            .clone()
            .ok_or_else(|| Self::query_err(src, "the statement has no id".into()))?;
        let manifest = st.manifest.unwrap_or_default();
        let chunks = manifest.total_chunk_count.unwrap_or(1).max(1);
        let schema = values::schema(&manifest.schema.columns);
        let parts = (count as u64).min(chunks) as usize;
        Ok((0..parts)
            .map(|p| {
                let (wh, src, schema, id) = (self.clone(), src.clone(), schema.clone(), id.clone());
                let mine: Vec<u64> = (p as u64..chunks).step_by(parts).collect();
                let read: PartRead = Box::new(move |each| {
                    super::http::block_on(&wh.what(), async {
                        let client = wh.client()?;
                        for n in mine {
                            let path = format!("/api/2.0/sql/statements/{id}/result/chunks/{n}");
                            for link in wh.chunk_links(&client, &src, &path).await? {
                                if !wh.download(&client, &src, &link, &schema, each).await? {
                                    return Ok(());
                                }
                            }
                        }
                        Ok(())
                    })
                });
                read
            })
            .collect())
    }

    /// Runs a small `sql` inline (JSON) and returns its manifest and rows.
    fn inline(
        &self,
        src: &SourceRef,
        sql: &str,
    ) -> Result<(Vec<Column>, Vec<Vec<Value>>), WarehouseError> {
        super::http::block_on(&self.what(), async {
            let client = self.client()?;
            let st = self.execute(&client, src, sql, false).await?;
            Ok((
                st.manifest.map(|m| m.schema.columns).unwrap_or_default(),
                st.result.and_then(|r| r.data_array).unwrap_or_default(),
            ))
        })
    }

    fn from_clause(src: &SourceRef) -> String {
        match src {
            SourceRef::Table(t) => table_name(t),
            SourceRef::Query(q) => format!("({}) AS wharf_source", q.trim().trim_end_matches(';')),
        }
    }
}

impl SqlApi for DatabricksWarehouse {
    /// In parts: the result chunks of one statement dealt out to them.
    fn read_parts(self: Arc<Self>, of: PartsOf<'_>) -> Result<Vec<PartRead>, WarehouseError> {
        self.chunk_parts(of)
    }

    fn what(&self) -> String {
        format!(
            "Databricks warehouse `{}` ({}, SQL warehouse {})",
            self.name,
            self.settings.host.shown(),
            self.settings.warehouse_id
        )
    }

    /// Runs `SELECT 1` (the health check).
    fn check(&self) -> Result<(), WarehouseError> {
        self.inline(&SourceRef::Query("SELECT 1".into()), "SELECT 1")
            .map(|_| ())
    }

    /// Columns and Arrow schema of `src` (the manifest of `SELECT * … LIMIT 0`).
    fn describe(&self, src: &SourceRef) -> Result<TableSchema, WarehouseError> {
        let (columns, _) = self.inline(
            src,
            &format!("SELECT * FROM {} LIMIT 0", Self::from_clause(src)),
        )?;
        Ok(TableSchema {
            columns: columns
                .iter()
                .map(|c| ColumnInfo {
                    name: c.name.clone(),
                    sql_type: if c.type_text.is_empty() {
                        c.type_name.clone()
                    } else {
                        c.type_text.clone()
                    },
                    nullable: true,
                })
                .collect(),
            primary_key: Vec::new(),
            arrow: values::schema(&columns),
        })
    }

    fn source_sql(&self, src: &SourceRef) -> Result<String, WarehouseError> {
        Ok(Self::from_clause(src))
    }

    fn quote(&self, name: &str) -> String {
        ident(name)
    }

    const LITERALS: super::Literals = super::Literals {
        instant: ("TIMESTAMP '", "+00:00'"),
        naive: ("TIMESTAMP '", "'"),
        date: ("DATE '", "'"),
    };

    fn run(&self, sql: Sql<'_>, each: EachBatch<'_>) -> Result<(), WarehouseError> {
        let Sql { src, sql, .. } = sql;
        super::http::block_on(&self.what(), self.stream(src, sql, each))
    }

    /// Small answers come inline, as JSON.
    fn scalar(&self, src: &SourceRef, sql: &str) -> Result<Option<i64>, WarehouseError> {
        let (_, rows) = self.inline(src, sql)?;
        Ok(match rows.first().and_then(|r| r.first()) {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        })
    }

    fn change_format(&self) -> Option<super::changes::ChangeFormat> {
        Some(super::changes::ChangeFormat::Databricks)
    }

    /// The table's latest Delta version (the first column of its history's newest entry).
    fn position_sql(&self, table: &str) -> Option<String> {
        Some(format!("DESCRIBE HISTORY {} LIMIT 1", table_name(table)))
    }

    fn position_watermark(&self, v: i64) -> Watermark {
        Watermark::Integer(v)
    }

    /// The Change Data Feed of versions `from + 1` to `to`.
    fn changes_sql(&self, table: &str, from: i64, to: i64) -> Option<String> {
        Some(format!(
            "SELECT * FROM table_changes('{}', {}, {to})",
            table.replace('\'', "''"),
            from + 1
        ))
    }

    fn changes_hint(&self, table: &str) -> String {
        format!(
            "turn the Change Data Feed on with `ALTER TABLE {} SET TBLPROPERTIES (delta.enableChangeDataFeed = true)`",
            table_name(table)
        )
    }
}

/// One chunk (an Arrow IPC stream) as batches of `schema`.
fn decode(bytes: &[u8], schema: &SchemaRef) -> Result<Vec<RecordBatch>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut reader = super::ipc_read(|| {
        wharf_operators::arrow::ipc::reader::StreamReader::try_new(
            std::io::Cursor::new(bytes),
            None,
        )
    })?
    .map_err(|e| format!("not an Arrow stream: {e}"))?;
    let mut out = Vec::new();
    while let Some(batch) = super::ipc_read(|| reader.next())? {
        let batch = batch.map_err(|e| format!("bad Arrow batch: {e}"))?;
        if batch.num_columns() != schema.fields().len() {
            return Err(format!(
                "{} columns in the chunk, {} in the manifest",
                batch.num_columns(),
                schema.fields().len()
            ));
        }
        let cols = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                values::from_arrow(c, f.data_type())
                    .map_err(|e| format!("column {}: {e}", f.name()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Fuzzing entry point (`wharf::fuzzing::databricks_statement`): a statement answer's body
/// as [`DatabricksWarehouse::parse`] reads it, its inline `data_array` rows as columns of the
/// manifest's types ([`values::from_json_rows`]), and `chunk` (an `ARROW_STREAM` result
/// chunk) by [`decode`].
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_statement(body: &[u8], chunk: &[u8]) -> Result<Vec<RecordBatch>, String> {
    let _ = serde_json::from_slice::<ApiError>(body);
    let st: Statement = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let columns = st.manifest.map(|m| m.schema.columns).unwrap_or_default();
    let schema = values::schema(&columns);
    let mut out = Vec::new();
    let rows = st.result.and_then(|r| r.data_array).unwrap_or_default();
    if !columns.is_empty() {
        let cols = values::from_json_rows(&schema, &rows)?;
        out.push(RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())?);
    }
    out.extend(decode(chunk, &schema)?);
    Ok(out)
}
