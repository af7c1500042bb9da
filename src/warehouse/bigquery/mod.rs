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
//! Authentication: a service account's JSON key (`credentials_file`): wharf signs a JWT with
//! its RSA key (RS256, `kid` = the key's id, `scope` = BigQuery, `aud` = Google's token
//! endpoint, as Google's client libraries send it), trades it at the key's `token_uri` for an access token (OAuth2's `jwt-bearer` grant) and
//! reuses that token until a minute before it expires; or an `access_token` (e.g. from `gcloud
//! auth print-access-token`) sent as is; or none (emulators). Whole tables are read with the
//! Storage Read API (gRPC, Arrow; [`storage`]) where its endpoint is set.
//! Tested against `bqemulator` (tests/bigquery.rs).

use std::sync::Arc;

use super::PartsOf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use wharf_operators::arrow::array::RecordBatch;
use wharf_operators::arrow::datatypes::SchemaRef;

mod answers;
mod auth;
pub mod config;
mod proto;
pub mod storage;

pub use auth::ServiceAccount;
pub(crate) use config::from_config;
pub use config::BigQueryConfig;

use answers::{
    arrow_schema, columns, conform, ErrorAnswer, ErrorProto, FieldSchema, Fields, QueryAnswer,
};

use super::sql::{Sql, SqlApi};
use super::{
    whole_read, ColumnInfo, EachBatch, PartRead, Select, SourceRef, TableSchema, WarehouseError,
};

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
    /// How requests are authorized.
    pub auth: BigQueryAuth,
    /// The Storage Read API's endpoint (gRPC), for reading tables; `None` reads through REST.
    pub storage_endpoint: Option<String>,
    /// Streams a Storage read session asks for.
    pub storage_streams: u32,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for BigQuerySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigQuerySettings")
            .field("endpoint", &super::http::shown_url(&self.endpoint))
            .field("project", &self.project)
            .field("dataset", &self.dataset)
            .field("auth", &self.auth)
            .finish()
    }
}

/// How BigQuery requests are authorized.
#[derive(Clone)]
pub enum BigQueryAuth {
    /// No `Authorization` header (emulators).
    None,
    /// A fixed OAuth2 access token.
    Token(String),
    /// A service account's key: tokens are obtained (and cached) by wharf.
    ServiceAccount(Arc<ServiceAccount>),
    /// A service account's key that cannot be used; every call fails with this reason.
    Invalid(String),
}

impl std::fmt::Debug for BigQueryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BigQueryAuth::None => f.write_str("None"),
            BigQueryAuth::Token(_) => f.write_str("Token(***)"),
            BigQueryAuth::ServiceAccount(sa) => write!(f, "ServiceAccount({})", sa.client_email),
            BigQueryAuth::Invalid(_) => f.write_str("Invalid"),
        }
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

impl BigQueryWarehouse {
    /// A warehouse named `name` (for messages).
    pub fn new(name: impl Into<String>, settings: BigQuerySettings) -> Self {
        BigQueryWarehouse {
            name: name.into(),
            settings,
        }
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

    /// The bearer token requests carry, if any.
    async fn bearer(&self) -> Result<Option<String>, WarehouseError> {
        Ok(match &self.settings.auth {
            BigQueryAuth::None => None,
            BigQueryAuth::Token(t) => Some(t.clone()),
            BigQueryAuth::ServiceAccount(sa) => Some(sa.access_token(&self.what()).await?),
            BigQueryAuth::Invalid(reason) => {
                return Err(WarehouseError::Open {
                    what: self.what(),
                    message: format!("the service account key: {reason}"),
                })
            }
        })
    }

    /// Sends an authorized request; the body of a 2xx answer, else the error it reports.
    async fn request(
        &self,
        src: &SourceRef,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, WarehouseError> {
        let token = self.bearer().await?;
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
        Ok(body)
    }

    async fn call(
        &self,
        src: &SourceRef,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<QueryAnswer, WarehouseError> {
        let body = self.request(src, build).await?;
        let answer: QueryAnswer = serde_json::from_slice(&body)
            .map_err(|e| Self::query_err(src, format!("unexpected answer: {e}")))?;
        if !answer.errors.is_empty() {
            return Err(self.failure(src, 200, "", &answer.errors));
        }
        Ok(answer)
    }

    /// `(project, dataset, table)` of a table name (unqualified names get the configured
    /// dataset), if it names one.
    fn table_parts(&self, t: &str) -> Option<(String, String, String)> {
        let parts: Vec<&str> = t.split('.').map(|p| p.trim_matches('`')).collect();
        match (parts.as_slice(), &self.settings.dataset) {
            ([table], Some(d)) => {
                Some((self.settings.project.clone(), d.clone(), table.to_string()))
            }
            ([dataset, table], _) => Some((
                self.settings.project.clone(),
                dataset.to_string(),
                table.to_string(),
            )),
            ([project, dataset, table], _) => {
                Some((project.to_string(), dataset.to_string(), table.to_string()))
            }
            _ => None,
        }
    }

    /// The Storage Read API's plan for `src`: the table's path and the Arrow schema wharf
    /// gives its rows, or `None` when the REST API reads it (no Storage endpoint, a query, or a
    /// column type whose REST text form the Storage API's Arrow does not match).
    async fn storage_plan(
        &self,
        src: &SourceRef,
    ) -> Result<Option<(String, SchemaRef)>, WarehouseError> {
        let (Some(_), SourceRef::Table(t)) = (&self.settings.storage_endpoint, src) else {
            return Ok(None);
        };
        let Some((project, dataset, table)) = self.table_parts(t) else {
            return Ok(None);
        };
        let s = &self.settings;
        let client = super::http::client(&self.what(), s.timeout)?;
        let url = format!(
            "{}/bigquery/v2/projects/{project}/datasets/{dataset}/tables/{table}",
            s.endpoint
        );
        let body = self.request(src, || client.get(&url)).await?;
        #[derive(Deserialize)]
        struct TableAnswer {
            #[serde(default)]
            schema: Option<Fields>,
        }
        let answer: TableAnswer = serde_json::from_slice(&body)
            .map_err(|e| Self::query_err(src, format!("unexpected table answer: {e}")))?;
        let fields = answer.schema.map(|f| f.fields).unwrap_or_default();
        let plain = |f: &FieldSchema| {
            !f.repeated()
                && matches!(
                    f.kind.as_str(),
                    "INTEGER"
                        | "INT64"
                        | "FLOAT"
                        | "FLOAT64"
                        | "NUMERIC"
                        | "BOOLEAN"
                        | "BOOL"
                        | "DATE"
                        | "TIMESTAMP"
                        | "DATETIME"
                        | "STRING"
                )
        };
        if fields.is_empty() || !fields.iter().all(plain) {
            return Ok(None);
        }
        Ok(Some((
            format!("projects/{project}/datasets/{dataset}/tables/{table}"),
            arrow_schema(&fields),
        )))
    }

    /// The rows of `src` matching `condition` (`WHERE …`, or empty): through the Storage Read
    /// API when it can read them, else (or when it refuses the session: the Read Session User
    /// role is missing) through REST pages.
    async fn read_table(
        &self,
        src: &SourceRef,
        condition: &str,
        each: EachBatch<'_>,
    ) -> Result<(), WarehouseError> {
        if let Some((table, schema)) = self.storage_plan(src).await? {
            let restriction = condition.trim_start_matches("WHERE ").to_string();
            let mut rows = 0u64;
            let result = self
                .storage_read(src, table, &schema, restriction, &mut |b| {
                    rows += b.num_rows() as u64;
                    each(b)
                })
                .await;
            match result {
                Err(e @ WarehouseError::Open { .. }) if rows == 0 => tracing::warn!(
                    warehouse = %self.what(),
                    error = %e,
                    "the Storage Read API refused the read session; reading through REST pages \
                     (grant roles/bigquery.readSessionUser to use it)"
                ),
                other => return other,
            }
        }
        let sql = format!("SELECT * FROM {} {condition}", self.table_sql(src));
        self.stream(src, &sql, None, each).await.map(|_| ())
    }

    /// Reads `table` through the Storage Read API, rows matching `restriction` (a condition,
    /// or empty), as batches of `schema`.
    async fn storage_read(
        &self,
        src: &SourceRef,
        table: String,
        schema: &SchemaRef,
        restriction: String,
        each: EachBatch<'_>,
    ) -> Result<(), WarehouseError> {
        let (client, session) = self
            .storage_session(src, table.clone(), restriction.clone(), 1)
            .await?;
        self.storage_streams(
            src,
            (table, restriction),
            Some(&client),
            &session,
            &session.streams,
            schema,
            each,
        )
        .await
    }

    /// The request of a read of `table` (rows matching `restriction`) in `streams` streams.
    async fn storage_request<'a>(
        &'a self,
        endpoint: &'a str,
        table: String,
        restriction: String,
        streams: u32,
    ) -> Result<storage::ReadRequest<'a>, WarehouseError> {
        let s = &self.settings;
        Ok(storage::ReadRequest {
            endpoint,
            project: &s.project,
            table,
            row_restriction: restriction,
            max_streams: s.storage_streams.max(streams).max(1),
            token: self.bearer().await?,
            timeout: s.timeout,
        })
    }

    /// Opens a read session of `table` with at least `streams` streams asked for.
    async fn storage_session(
        &self,
        src: &SourceRef,
        table: String,
        restriction: String,
        streams: u32,
    ) -> Result<(reqwest::Client, storage::Session), WarehouseError> {
        let endpoint = self.settings.storage_endpoint.clone().unwrap_or_default();
        let req = self
            .storage_request(&endpoint, table, restriction, streams)
            .await?;
        storage::open(&req)
            .await
            .map_err(|e| self.storage_err(src, e))
    }

    /// Reads `streams` of `session` (of `table`, rows matching `restriction`) as batches of
    /// `schema`.
    #[allow(clippy::too_many_arguments)]
    async fn storage_streams(
        &self,
        src: &SourceRef,
        (table, restriction): (String, String),
        client: Option<&reqwest::Client>,
        session: &storage::Session,
        streams: &[String],
        schema: &SchemaRef,
        each: EachBatch<'_>,
    ) -> Result<(), WarehouseError> {
        let endpoint = self.settings.storage_endpoint.clone().unwrap_or_default();
        let req = self
            .storage_request(&endpoint, table, restriction, 1)
            .await?;
        // A part reads on a runtime of its own: its own client (connections are the runtime's).
        let own;
        let client = match client {
            Some(c) => c,
            None => {
                own = storage::client(&req).map_err(|e| self.storage_err(src, e))?;
                &own
            }
        };
        let mut failed = None;
        let result =
            storage::read_streams(client, &req, session, streams, &mut |batch| match conform(
                &batch, schema,
            ) {
                Ok(b) => each(b),
                Err(e) => {
                    failed = Some(e);
                    false
                }
            })
            .await;
        if let Some(e) = failed {
            return Err(Self::query_err(src, e));
        }
        result.map_err(|e| self.storage_err(src, e))
    }

    fn storage_err(&self, src: &SourceRef, e: storage::StorageError) -> WarehouseError {
        match e.code {
            Some(5) if matches!(src, SourceRef::Table(_)) => WarehouseError::MissingTable {
                source_ref: src.clone(),
                warehouse: self.what(),
            },
            Some(7 | 16) => WarehouseError::Open {
                what: self.what(),
                message: format!("Storage Read API refused: {e}"),
            },
            _ if e.transient() => WarehouseError::Unavailable {
                what: self.what(),
                message: format!("Storage Read API: {e}"),
            },
            _ => Self::query_err(src, format!("Storage Read API: {e}")),
        }
    }

    /// A read in `count` parts: one read session (one state of the table), its streams dealt
    /// out to the parts; each part reads its streams on its own thread. A read the Storage
    /// API cannot make (a query, REST-only types, no Storage endpoint, a refused session) is
    /// one part.
    fn storage_parts(
        self: Arc<Self>,
        src: &SourceRef,
        filter: &str,
        count: usize,
    ) -> Result<Vec<PartRead>, WarehouseError> {
        let whole = |wh: Arc<Self>| Ok(vec![whole_read(wh, src, filter)]);
        if count <= 1 {
            return whole(self);
        }
        let Some((table, schema)) = self.block(self.storage_plan(src))? else {
            return whole(self);
        };
        let restriction = filter.trim_start_matches("WHERE ").to_string();
        let streams = u32::try_from(count).unwrap_or(u32::MAX);
        let session = match self.block(async {
            self.storage_session(src, table.clone(), restriction.clone(), streams)
                .await
                .map(|(_, session)| session)
        }) {
            Ok(session) => session,
            Err(WarehouseError::Open { .. }) => return whole(self),
            Err(e) => return Err(e),
        };
        let parts = count.min(session.streams.len()).max(1);
        let mut dealt: Vec<Vec<String>> = vec![Vec::new(); parts];
        for (i, stream) in session.streams.iter().enumerate() {
            dealt[i % parts].push(stream.clone());
        }
        Ok(dealt
            .into_iter()
            .map(|streams| {
                let (wh, src, schema) = (self.clone(), src.clone(), schema.clone());
                let (session, what) = (session.clone(), (table.clone(), restriction.clone()));
                let read: PartRead = Box::new(move |each| {
                    wh.block(
                        wh.storage_streams(&src, what, None, &session, &streams, &schema, each),
                    )
                });
                read
            })
            .collect())
    }

    /// Runs `sql` and hands each page, as Arrow, to `each`; returns the schema.
    async fn stream(
        &self,
        src: &SourceRef,
        sql: &str,
        max_rows: Option<u32>,
        each: EachBatch<'_>,
    ) -> Result<SchemaRef, WarehouseError> {
        let s = &self.settings;
        let client = super::http::client(&self.what(), s.timeout)?;
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
}

impl SqlApi for BigQueryWarehouse {
    fn what(&self) -> String {
        format!(
            "BigQuery warehouse `{}` (project {}, {})",
            self.name,
            self.settings.project,
            super::http::shown_url(&self.settings.endpoint)
        )
    }

    /// Runs `SELECT 1` (the health check).
    fn check(&self) -> Result<(), WarehouseError> {
        let src = SourceRef::Query("SELECT 1".into());
        self.block(self.stream(&src, "SELECT 1", Some(1), &mut |_| true))
            .map(|_| ())
    }

    /// Columns and Arrow schema of `src`.
    fn describe(&self, src: &SourceRef) -> Result<TableSchema, WarehouseError> {
        let sql = format!("SELECT * FROM {} LIMIT 0", self.table_sql(src));
        let schema = self.block(self.stream(src, &sql, Some(0), &mut |_| true))?;
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

    fn source_sql(&self, src: &SourceRef) -> Result<String, WarehouseError> {
        Ok(self.table_sql(src))
    }

    fn tables_query(&self) -> Option<String> {
        let dataset = format!(
            "{}.{}",
            self.settings.project,
            self.settings.dataset.as_deref()?
        );
        let from = format!("`{}`.INFORMATION_SCHEMA.TABLES", dataset.replace('`', ""));
        Some(format!(
            "SELECT table_schema, table_name FROM {from} ORDER BY 1, 2"
        ))
    }

    fn quote(&self, name: &str) -> String {
        Self::ident(name)
    }

    const LITERALS: super::Literals = super::Literals {
        instant: ("TIMESTAMP '", "+00'"),
        naive: ("DATETIME '", "'"),
        date: ("DATE '", "'"),
    };

    fn run(&self, sql: Sql<'_>, each: EachBatch<'_>) -> Result<(), WarehouseError> {
        let Sql { src, sql, limit } = sql;
        let max = limit.map(|l| u32::try_from(l).unwrap_or(u32::MAX));
        self.block(self.stream(src, sql, max, each)).map(|_| ())
    }

    /// In parts: the streams of one Storage read session dealt out to them.
    fn read_parts(self: Arc<Self>, of: PartsOf<'_>) -> Result<Vec<PartRead>, WarehouseError> {
        self.storage_parts(of.src, of.filter, of.count)
    }

    /// Through the Storage Read API (the filter's condition as its row restriction) when it
    /// can read `src`, else REST pages; a limited read (a preview) by a query.
    fn select(&self, query: Select, each: EachBatch<'_>) -> Result<(), WarehouseError> {
        match query.limit {
            None => self.block(self.read_table(query.source, query.filter, each)),
            Some(_) => {
                let sql = query.sql(&self.table_sql(query.source));
                self.run(Sql::new(query.source, &sql, query.limit), each)
            }
        }
    }

    fn change_format(&self) -> Option<super::changes::ChangeFormat> {
        Some(super::changes::ChangeFormat::BigQuery)
    }

    /// Eleven minutes ago: `CHANGES` refuses an end less than ten minutes in the past, so a
    /// BigQuery mirror runs that far behind the table.
    fn position_sql(&self, _table: &str) -> Option<String> {
        Some("SELECT UNIX_MICROS(CURRENT_TIMESTAMP()) - 660000000".into())
    }

    /// The change history from `from` to `to` (both included: a change at the boundary is
    /// read twice rather than missed, and reapplying it changes nothing).
    fn changes_sql(&self, table: &str, from: i64, to: i64) -> Option<String> {
        Some(format!(
            "SELECT * FROM CHANGES(TABLE {}, TIMESTAMP_MICROS({from}), TIMESTAMP_MICROS({to}))",
            self.table_sql(&SourceRef::Table(table.to_string()))
        ))
    }

    fn changes_hint(&self, table: &str) -> String {
        format!(
            "turn the change history on with `ALTER TABLE {} SET OPTIONS (enable_change_history = TRUE)`",
            self.table_sql(&SourceRef::Table(table.to_string()))
        )
    }
}

/// Fuzzing entry point (`wharf::fuzzing::bigquery_page`): a `jobs.query` /
/// `getQueryResults` page as [`BigQueryWarehouse::stream`] reads it (an error answer too),
/// its rows as columns of its schema, and Storage Read API batches (`storage` bytes: the
/// session answer and `ReadRows` messages, see [`storage::fuzz_read`]) made to conform to it.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_page(body: &[u8], storage: &[&[u8]]) -> Result<Vec<RecordBatch>, String> {
    let _ = serde_json::from_slice::<ErrorAnswer>(body);
    let answer: QueryAnswer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let fields = answer.schema.map(|f| f.fields).unwrap_or_default();
    let schema = arrow_schema(&fields);
    let mut out = Vec::new();
    if !answer.rows.is_empty() {
        let cols = columns(&fields, &schema, &answer.rows)?;
        out.push(RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())?);
    }
    if let Some((session, messages)) = storage.split_first() {
        for batch in storage::fuzz_read(session, messages).map_err(|e| e.to_string())? {
            out.push(conform(&batch, &schema)?);
        }
    }
    Ok(out)
}
