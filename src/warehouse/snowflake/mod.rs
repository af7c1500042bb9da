//! Snowflake over its HTTP API: the protocol Snowflake's own connectors use.
//!
//! - `POST /session/v1/login-request` (user + password) gives a session token;
//! - `POST /queries/v1/query-request` with `Authorization: Snowflake Token="…"` runs one
//!   statement; the answer carries the column types (`rowtype`) and the first part of the
//!   result as a base64 Arrow IPC stream (`rowsetBase64`), further parts as result chunks
//!   (`chunks[].url`, fetched with `chunkHeaders` or the `qrmk` key, never with the session
//!   token); an answer with code 333334 is a query still running, polled at `getResultUrl`;
//! - Snowflake's Arrow encodings are turned into plain Arrow by [`arrow`] (see there).
//!
//! The first call logs in; later calls reuse that session (its token) until Snowflake refuses
//! it (a `390…` code: expired), then log in again once. Each call runs on a private
//! current-thread runtime. `wharf check` always logs in afresh. Transient HTTP failures (connection errors, timeouts, 429, 5xx) are retried three
//! times with a doubling pause. The password is only ever put in the login body. Key-pair
//! authentication sends instead a JWT signed with the user's RSA key ([`keypair_jwt`]).
//!
//! Tested against `fakesnow` (tests/snowflake.rs). What fakesnow does not exercise: password
//! checks (it accepts any), result chunks (it always answers in one rowset, so a read in
//! parts is one part there), asynchronous
//! queries (it ignores `asyncExec`), and the scaled-integer encodings of real Snowflake
//! (it sends int64 / decimal128): those paths follow Snowflake's documented protocol and are
//! covered by unit tests of the decoding only.

pub mod arrow;
pub mod config;
mod result;

pub(crate) use config::from_config;
pub use config::SnowflakeConfig;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use wharf_operators::arrow::datatypes::SchemaRef;

use super::http::BaseUrl;
use super::sql::{Sql, SqlApi};
use super::{ColumnInfo, EachBatch, PartRead, PartsOf, SourceRef, TableSchema, WarehouseError};
use crate::secret::Secret;
use arrow::RowType;

/// How to reach and log in to a Snowflake account.
#[derive(Debug, Clone)]
pub struct SnowflakeSettings {
    /// `https://<account>.snowflakecomputing.com`, or the emulator's URL.
    pub base_url: BaseUrl,
    /// The account identifier.
    pub account: String,
    /// The login name.
    pub user: String,
    /// How the user signs in (never logged).
    pub auth: SnowflakeAuth,
    /// Database, schema, warehouse and role of the session.
    pub database: String,
    /// Schema (default `PUBLIC`).
    pub schema: String,
    /// Virtual warehouse.
    pub warehouse: Option<String>,
    /// Role.
    pub role: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// How a Snowflake user signs in.
#[derive(Debug, Clone)]
pub enum SnowflakeAuth {
    /// User and password.
    Password(Secret),
    /// Key-pair authentication: a JWT signed with the user's RSA private key (PEM text),
    /// whose public key was set on the user (`ALTER USER … SET RSA_PUBLIC_KEY`).
    KeyPair(Secret),
    /// Key-pair authentication with the key read from this PEM file at each login.
    KeyPairFile(std::path::PathBuf),
}

/// Snowflake's account name as it appears in a key-pair JWT: upper case, without the region
/// or cloud parts of a locator (`xy12345.us-east-2.aws` → `XY12345`); a `.global` account keeps
/// only what precedes its first `-`. This is what Snowflake's own connectors send.
fn jwt_account(account: &str) -> String {
    let upper = account.to_ascii_uppercase();
    if upper.contains(".GLOBAL") {
        upper.split('-').next().unwrap_or_default().to_string()
    } else {
        upper.split('.').next().unwrap_or_default().to_string()
    }
}

/// The key-pair JWT for `account`/`user`: `iss` = `ACCOUNT.USER.SHA256:<base64 of the SHA-256
/// of the public key's DER>`, `sub` = `ACCOUNT.USER`, valid for two minutes (it is used once,
/// at login).
pub fn keypair_jwt(
    account: &str,
    user: &str,
    key: &super::jwt::RsaKey,
    now: i64,
) -> Result<String, String> {
    use base64::Engine;
    let qualified = format!("{}.{}", jwt_account(account), user.to_ascii_uppercase());
    let fingerprint =
        base64::engine::general_purpose::STANDARD.encode(super::jwt::sha256(&key.public_key_der()));
    key.sign(
        &json!({
            "iss": format!("{qualified}.SHA256:{fingerprint}"),
            "sub": qualified,
            "iat": now,
            "exp": now + 120,
        }),
        None,
    )
}

/// A Snowflake warehouse.
#[derive(Debug, Clone)]
pub struct SnowflakeWarehouse {
    name: String,
    settings: SnowflakeSettings,
    /// The last session's token and statement sequence, reused by later calls (a login per
    /// call costs a round trip and, with key pairs, a signature) until Snowflake refuses it.
    cached: std::sync::Arc<std::sync::Mutex<Option<(String, u64)>>>,
}

/// A logged-in session.
struct Session {
    client: reqwest::Client,
    token: String,
    sequence: u64,
}

/// The parts of a query answer wharf reads.
#[derive(Debug, Deserialize, Default)]
struct QueryData {
    #[serde(default)]
    rowtype: Vec<RowType>,
    #[serde(rename = "rowsetBase64", default)]
    rowset_base64: Option<String>,
    #[serde(default)]
    chunks: Vec<Chunk>,
    #[serde(rename = "chunkHeaders", default)]
    chunk_headers: BTreeMap<String, String>,
    #[serde(default)]
    qrmk: Option<String>,
    #[serde(rename = "getResultUrl", default)]
    get_result_url: Option<String>,
    #[serde(rename = "queryResultFormat", default)]
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Chunk {
    url: String,
}

#[derive(Debug, Deserialize)]
struct Answer {
    /// Kept as raw JSON: a result's rowset can be tens of megabytes, parsed once, into
    /// [`QueryData`].
    #[serde(default)]
    data: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    success: bool,
}

/// Snowflake's code for "the query is still running".
const QUERY_IN_PROGRESS: &str = "333334";
const QUERY_IN_PROGRESS_ASYNC: &str = "333333";
/// Snowflake's code for a missing object.
const OBJECT_DOES_NOT_EXIST: &str = "002003";

fn request_id() -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        fastrand::u16(..),
        fastrand::u64(..1 << 48)
    )
}

impl SnowflakeWarehouse {
    /// A warehouse named `name` (for messages).
    pub fn new(name: impl Into<String>, settings: SnowflakeSettings) -> Self {
        SnowflakeWarehouse {
            name: name.into(),
            settings,
            cached: Default::default(),
        }
    }

    fn unavailable(&self, message: impl Into<String>) -> WarehouseError {
        WarehouseError::Unavailable {
            what: self.what(),
            message: message.into(),
        }
    }

    /// `base_url` + `path` with `query` parameters.
    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<reqwest::Url, WarehouseError> {
        reqwest::Url::parse_with_params(
            &format!("{}{path}", self.settings.base_url.as_str()),
            query,
        )
        .map_err(|e| WarehouseError::Open {
            what: self.what(),
            message: format!("bad url: {e}"),
        })
    }

    /// Runs `f` on a private runtime (warehouse calls come from plain threads).
    fn block<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, WarehouseError>>,
    ) -> Result<T, WarehouseError> {
        super::http::block_on(&self.what(), f)
    }

    /// Sends a request built by `build`, retrying transient failures.
    async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, WarehouseError> {
        super::http::send(&self.what(), build).await
    }

    async fn json(&self, resp: reqwest::Response) -> Result<Answer, WarehouseError> {
        let status = resp.status();
        let body = super::http::body(&self.what(), resp).await?;
        serde_json::from_slice::<Answer>(&body).map_err(|_| {
            self.unavailable(format!(
                "HTTP {status}: not a Snowflake answer: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })
    }

    async fn login(&self) -> Result<Session, WarehouseError> {
        let s = &self.settings;
        let client = self.client()?;
        let mut query = vec![
            ("request_id", request_id()),
            ("databaseName", s.database.clone()),
            ("schemaName", s.schema.clone()),
        ];
        if let Some(w) = &s.warehouse {
            query.push(("warehouse", w.clone()));
        }
        if let Some(r) = &s.role {
            query.push(("roleName", r.clone()));
        }
        let mut data = json!({
            "CLIENT_APP_ID": "wharf",
            "CLIENT_APP_VERSION": env!("CARGO_PKG_VERSION"),
            "ACCOUNT_NAME": s.account,
            "LOGIN_NAME": s.user,
            "SESSION_PARAMETERS": {"TIMEZONE": "UTC"},
        });
        let pem = match &s.auth {
            SnowflakeAuth::Password(p) => {
                data["PASSWORD"] = Value::from(p.expose());
                None
            }
            SnowflakeAuth::KeyPair(pem) => Some(pem.expose().to_string()),
            SnowflakeAuth::KeyPairFile(path) => Some(std::fs::read_to_string(path).map_err(
                |e| WarehouseError::Open {
                    what: self.what(),
                    message: format!("cannot read the private key file {}: {e}", path.display()),
                },
            )?),
        };
        if let Some(pem) = pem {
            let bad_key = |message: String| WarehouseError::Open {
                what: self.what(),
                message: format!("key-pair sign-in: {message}"),
            };
            let key = super::jwt::RsaKey::from_pem(&pem).map_err(bad_key)?;
            let token =
                keypair_jwt(&s.account, &s.user, &key, super::jwt::now_secs()).map_err(bad_key)?;
            data["AUTHENTICATOR"] = Value::from("SNOWFLAKE_JWT");
            data["TOKEN"] = Value::from(token);
        }
        let body = serde_json::to_vec(&json!({ "data": data }))
            .map_err(|e| self.unavailable(e.to_string()))?;
        let url = self.url("/session/v1/login-request", &query)?;
        let resp = self
            .send(|| {
                client
                    .post(url.clone())
                    .header("accept", "application/snowflake")
                    .header("content-type", "application/json")
                    .body(body.clone())
            })
            .await?;
        let answer = self.json(resp).await?;
        let data: Option<Value> = answer
            .data
            .as_ref()
            .and_then(|d| serde_json::from_str(d.get()).ok());
        let token = data
            .as_ref()
            .and_then(|d| d.get("token"))
            .and_then(Value::as_str)
            .filter(|_| answer.success);
        match token {
            Some(t) => Ok(Session {
                client,
                token: t.to_string(),
                sequence: 0,
            }),
            None => Err(WarehouseError::Open {
                what: self.what(),
                message: format!(
                    "login refused ({}): {}",
                    answer.code.as_deref().unwrap_or("no code"),
                    answer.message.as_deref().unwrap_or("no message")
                ),
            }),
        }
    }

    async fn logout(&self, session: &Session) {
        let Ok(url) = self.url("/session", &[("delete", "true".into())]) else {
            return;
        };
        let _ = session
            .client
            .post(url)
            .header(
                "authorization",
                format!("Snowflake Token=\"{}\"", session.token),
            )
            .send()
            .await;
    }

    /// Runs `sql`; waits for a query still running.
    async fn query(
        &self,
        session: &mut Session,
        src: &SourceRef,
        sql: &str,
    ) -> Result<QueryData, WarehouseError> {
        session.sequence += 1;
        let url = self.url("/queries/v1/query-request", &[("requestId", request_id())])?;
        let auth = format!("Snowflake Token=\"{}\"", session.token);
        let body = serde_json::to_vec(
            &json!({"sqlText": sql, "asyncExec": false, "sequenceId": session.sequence}),
        )
        .map_err(|e| self.unavailable(e.to_string()))?;
        let client = session.client.clone();
        let resp = self
            .send(|| {
                client
                    .post(url.clone())
                    .header("authorization", &auth)
                    .header("accept", "application/snowflake")
                    .header("content-type", "application/json")
                    .body(body.clone())
            })
            .await?;
        let mut answer = self.json(resp).await?;
        let mut polls = 0u32;
        while matches!(
            answer.code.as_deref(),
            Some(QUERY_IN_PROGRESS | QUERY_IN_PROGRESS_ASYNC)
        ) {
            let data: QueryData = answer
                .data
                .as_ref()
                .and_then(|d| serde_json::from_str(d.get()).ok())
                .unwrap_or_default();
            let Some(path) = data.get_result_url else {
                break;
            };
            tokio::time::sleep(Duration::from_millis(if polls < 10 { 200 } else { 1000 })).await;
            polls += 1;
            let poll = format!("{}{path}", self.settings.base_url.as_str());
            let resp = self
                .send(|| {
                    client
                        .get(&poll)
                        .header("authorization", &auth)
                        .header("accept", "application/snowflake")
                })
                .await?;
            answer = self.json(resp).await?;
        }
        if !answer.success {
            let code = answer.code.unwrap_or_default();
            let message = answer.message.unwrap_or_default();
            return Err(
                if code == OBJECT_DOES_NOT_EXIST && matches!(src, SourceRef::Table(_)) {
                    WarehouseError::MissingTable {
                        source_ref: src.clone(),
                        warehouse: self.what(),
                    }
                } else if code.starts_with("390") {
                    WarehouseError::Open {
                        what: self.what(),
                        message: format!("session refused ({code}): {message}"),
                    }
                } else {
                    WarehouseError::Query {
                        source_ref: src.clone(),
                        message: format!("{code}: {message}"),
                        transient: false,
                    }
                },
            );
        }
        let data = answer.data.as_ref().map(|d| d.get()).unwrap_or("{}");
        serde_json::from_str(data).map_err(|e| WarehouseError::Query {
            source_ref: src.clone(),
            message: format!("unexpected answer: {e}"),
            transient: false,
        })
    }

    /// Runs `sql` and hands each result batch, as plain Arrow, to `each` (false stops).
    async fn stream(
        &self,
        src: &SourceRef,
        sql: &str,
        each: EachBatch<'_>,
    ) -> Result<SchemaRef, WarehouseError> {
        self.in_session(async |session| self.stream_in(session, src, sql, each).await)
            .await
    }

    /// Runs `f` in the cached session (or a new one); if Snowflake refuses a cached session
    /// (expired; refused before any row), signs in again and runs `f` once more.
    async fn in_session<T>(
        &self,
        mut f: impl AsyncFnMut(&mut Session) -> Result<T, WarehouseError>,
    ) -> Result<T, WarehouseError> {
        let (mut session, reused) = self.session().await?;
        let mut result = f(&mut session).await;
        if reused && matches!(result, Err(WarehouseError::Open { .. })) {
            session = self.login().await?;
            result = f(&mut session).await;
        }
        self.keep(&session, &result);
        result
    }

    /// The cached session (`true`), or a new login (`false`).
    async fn session(&self) -> Result<(Session, bool), WarehouseError> {
        let cached = self.cached.lock().ok().and_then(|c| c.clone());
        match cached {
            Some((token, sequence)) => Ok((
                Session {
                    client: self.client()?,
                    token,
                    sequence,
                },
                true,
            )),
            None => Ok((self.login().await?, false)),
        }
    }

    /// Caches `session` for the next call, unless Snowflake refused it.
    fn keep<T>(&self, session: &Session, result: &Result<T, WarehouseError>) {
        if let Ok(mut c) = self.cached.lock() {
            *c = match result {
                Err(WarehouseError::Open { .. }) => None,
                _ => Some((session.token.clone(), session.sequence)),
            };
        }
    }

    fn client(&self) -> Result<reqwest::Client, WarehouseError> {
        super::http::client(&self.what(), self.settings.timeout)
    }

    async fn stream_in(
        &self,
        session: &mut Session,
        src: &SourceRef,
        sql: &str,
        each: EachBatch<'_>,
    ) -> Result<SchemaRef, WarehouseError> {
        let result = self.result(session, src, sql).await?;
        let pieces = result.pieces();
        for piece in 0..pieces {
            if !result
                .emit_piece(self, &session.client, piece, each)
                .await?
            {
                break;
            }
        }
        Ok(result.schema.clone())
    }

    /// The table reference as SQL: the name as written (Snowflake folds unquoted names to
    /// upper case), after checking it holds only identifier characters.
    fn from_clause(src: &SourceRef) -> Result<String, WarehouseError> {
        match src {
            SourceRef::Table(t) => {
                if t.is_empty()
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.$\"".contains(c))
                {
                    return Err(WarehouseError::Query {
                        source_ref: src.clone(),
                        message: "a Snowflake table name may hold letters, digits, `_`, `$`, `.` and double quotes only".into(),
                        transient: false,
                    });
                }
                Ok(t.clone())
            }
            SourceRef::Query(q) => Ok(format!(
                "({}) AS wharf_source",
                q.trim().trim_end_matches(';')
            )),
        }
    }

    /// The declared primary key of table `src` (`SHOW PRIMARY KEYS IN TABLE`, in key order);
    /// empty if it has none or it cannot be read (discovery is best effort).
    fn primary_key(&self, src: &SourceRef) -> Vec<String> {
        use wharf_operators::arrow::array::{Array, AsArray};
        let Ok(table) = Self::from_clause(src) else {
            return Vec::new();
        };
        let mut keys: Vec<(i64, String)> = Vec::new();
        let sql = format!("SHOW PRIMARY KEYS IN TABLE {table}");
        let result = self.block(self.stream(src, &sql, &mut |b| {
            let schema = b.schema();
            let column = |name: &str| {
                schema
                    .fields()
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(name))
            };
            let (Some(c), Some(q)) = (column("column_name"), column("key_sequence")) else {
                return false;
            };
            let Some(names) = b.column(c).as_string_opt::<i32>() else {
                return false;
            };
            let Ok(seqs) = wharf_operators::arrow::compute::cast(
                b.column(q),
                &wharf_operators::arrow::datatypes::DataType::Int64,
            ) else {
                return false;
            };
            let seqs = seqs.as_primitive::<wharf_operators::arrow::datatypes::Int64Type>();
            for row in 0..b.num_rows() {
                if names.is_valid(row) {
                    keys.push((seqs.value(row), names.value(row).to_string()));
                }
            }
            true
        }));
        if let Err(e) = result {
            tracing::debug!(warehouse = %self.what(), error = %e, "primary key not discovered");
            return Vec::new();
        }
        keys.sort();
        keys.into_iter().map(|(_, k)| k).collect()
    }
}

impl SqlApi for SnowflakeWarehouse {
    /// In parts: the pieces of one query's answer dealt out to them.
    fn read_parts(self: Arc<Self>, of: PartsOf<'_>) -> Result<Vec<PartRead>, WarehouseError> {
        self.chunk_parts(of)
    }

    fn what(&self) -> String {
        format!(
            "Snowflake warehouse `{}` (account {}, {})",
            self.name,
            self.settings.account,
            self.settings.base_url.shown()
        )
    }

    /// Logs in once (the health check).
    fn check(&self) -> Result<(), WarehouseError> {
        self.block(async {
            let s = self.login().await?;
            self.logout(&s).await;
            Ok(())
        })
    }

    /// Columns and Arrow schema of `src` (Snowflake's `rowtype` of `SELECT * … LIMIT 0`).
    fn describe(&self, src: &SourceRef) -> Result<TableSchema, WarehouseError> {
        let sql = format!("SELECT * FROM {} LIMIT 0", Self::from_clause(src)?);
        let rowtype =
            self.block(self.in_session(async |session| self.query(session, src, &sql).await))?;
        let primary_key = match src {
            SourceRef::Table(_) => self.primary_key(src),
            SourceRef::Query(_) => Vec::new(),
        };
        Ok(TableSchema {
            columns: rowtype
                .rowtype
                .iter()
                .map(|r| ColumnInfo {
                    name: r.name.clone(),
                    sql_type: r.sql_type(),
                    nullable: r.nullable,
                })
                .collect(),
            primary_key,
            arrow: arrow::schema(&rowtype.rowtype),
        })
    }

    fn source_sql(&self, src: &SourceRef) -> Result<String, WarehouseError> {
        Self::from_clause(src)
    }

    fn quote(&self, name: &str) -> String {
        super::quote_ident(name)
    }

    const LITERALS: super::Literals = super::Literals {
        instant: ("'", " +00:00'::TIMESTAMP_TZ"),
        naive: ("'", "'::TIMESTAMP_NTZ"),
        date: ("'", "'::DATE"),
    };

    fn run(&self, sql: Sql<'_>, each: EachBatch<'_>) -> Result<(), WarehouseError> {
        let Sql { src, sql, .. } = sql;
        self.block(self.stream(src, sql, each)).map(|_| ())
    }

    fn change_format(&self) -> Option<super::changes::ChangeFormat> {
        Some(super::changes::ChangeFormat::Snowflake)
    }

    fn position_sql(&self, _table: &str) -> Option<String> {
        Some("SELECT DATE_PART(EPOCH_MICROSECOND, CURRENT_TIMESTAMP())".into())
    }

    /// Net changes between the table's states at `from` and at `to` (epoch microseconds):
    /// the `CHANGES` clause, Snowflake's stream without a stream object.
    fn changes_sql(&self, table: &str, from: i64, to: i64) -> Option<String> {
        let t = Self::from_clause(&SourceRef::Table(table.to_string())).ok()?;
        Some(format!(
            "SELECT * FROM {t} CHANGES(INFORMATION => DEFAULT) AT(TIMESTAMP => TO_TIMESTAMP_LTZ({from}, 6)) END(TIMESTAMP => TO_TIMESTAMP_LTZ({to}, 6))"
        ))
    }

    fn changes_hint(&self, table: &str) -> String {
        format!("turn change tracking on with `ALTER TABLE {table} SET CHANGE_TRACKING = TRUE`")
    }
}

/// Fuzzing entry point (`wharf::fuzzing::snowflake_answer`): a query answer's body read as
/// [`SnowflakeWarehouse::query`] reads it ([`Answer`], then its `data` as [`QueryData`]), and
/// an inline `rowsetBase64` result decoded as `stream_in` decodes it.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_answer(
    body: &[u8],
) -> Result<Vec<wharf_operators::arrow::array::RecordBatch>, String> {
    use base64::Engine;
    let answer: Answer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let data = answer.data.as_ref().map(|d| d.get()).unwrap_or("{}");
    let data: QueryData = serde_json::from_str(data).map_err(|e| e.to_string())?;
    let schema = arrow::schema(&data.rowtype);
    let Some(b64) = data.rowset_base64.filter(|s| !s.is_empty()) else {
        return Ok(Vec::new());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .map_err(|e| e.to_string())?;
    arrow::decode(&bytes, &data.rowtype, &schema)
}
