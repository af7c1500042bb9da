//! PostgreSQL and Redshift (the same wire protocol), with tokio-postgres.
//!
//! - Reads run in one `READ ONLY, REPEATABLE READ` transaction (a consistent snapshot) and
//!   stream through a portal (a server-side cursor) [`FETCH_ROWS`] rows at a time, decoded
//!   from the binary format straight into Arrow builders ([`types`]); a table is never held
//!   whole in memory.
//! - Identifiers are always quoted; watermarks are integer literals (typed values, never user
//!   text) cast by the server; a configured query runs as written, wrapped as a subquery.
//! - The blocking API matches the other connectors: each call runs on a private
//!   current-thread tokio runtime, so it can be called from a blocking thread.
//! - Redshift (`type = "redshift"`) uses the same code. Differences: no logical decoding (mirror
//!   always diffs snapshots), no `jsonb`/`uuid`/array types (its `SUPER` and other types are
//!   read as text), read transactions are not declared `READ ONLY`, and session settings
//!   Redshift lacks are not sent. Redshift itself was not available to test against; the
//!   shared code is tested against PostgreSQL.
//!
//! Change capture through logical decoding lives in [`logical`].

pub mod config;
mod held;
pub mod logical;
mod parts;
mod stream;
mod tls;
pub mod types;
pub mod visibility;

pub(crate) use config::from_config;
pub use config::{PostgresConfig, SslModeConfig};

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use crate::warehouse::PartsOf;
use std::time::Duration;

use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::{FromSql, Kind, Type};
use tokio_postgres::{Client, IsolationLevel, NoTls, Socket};
use wharf_operators::arrow::array::RecordBatch;
use wharf_operators::arrow::datatypes::{Field, Schema, SchemaRef};
use wharf_operators::watermark::Watermark;

use self::types::{ColumnBuilder, PgKind};
pub use super::{quote_ident, quote_table};
use super::{
    ChangeSource, ColumnInfo, EachBatch, PartRead, Select, SourceRef, TableSchema, Warehouse,
    WarehouseError,
};

/// Rows per fetch from the server-side cursor, and per Arrow batch.
pub const FETCH_ROWS: i32 = 8192;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// PostgreSQL.
    Postgres,
    /// Amazon Redshift.
    Redshift,
}

/// libpq's `sslmode` values that wharf supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it (certificate not checked).
    Prefer,
    /// TLS required (certificate not checked, as in libpq).
    Require,
    /// TLS required, certificate and host name checked.
    VerifyFull,
}

/// Connection settings.
#[derive(Clone)]
pub struct PgSettings {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database.
    pub database: String,
    /// User.
    pub user: String,
    /// Password (never printed).
    pub password: Option<String>,
    /// TLS mode.
    pub sslmode: SslMode,
    /// PEM file of root certificates for `verify-full`.
    pub sslrootcert: Option<PathBuf>,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// PostgreSQL or Redshift.
    pub flavor: Flavor,
}

impl PgSettings {
    /// Settings for `user` on `host:port/database`: no password, `sslmode = prefer`, a 10 s
    /// connection timeout, PostgreSQL.
    pub fn new(host: &str, port: u16, database: &str, user: &str) -> Self {
        PgSettings {
            host: host.into(),
            port,
            database: database.into(),
            user: user.into(),
            password: None,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            connect_timeout: Duration::from_secs(10),
            flavor: Flavor::Postgres,
        }
    }
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("sslmode", &self.sslmode)
            .field("flavor", &self.flavor)
            .finish()
    }
}

/// A PostgreSQL or Redshift database.
#[derive(Debug, Clone)]
pub struct PostgresWarehouse {
    name: String,
    settings: Arc<PgSettings>,
    /// The connection kept for short statements ([`held`]).
    held: held::HeldConnection,
}

/// A column's raw bytes, whatever its type (decoded by [`ColumnBuilder`]).
struct RawValue<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawValue<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A source's columns as wharf reads them.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Column names.
    pub names: Vec<String>,
    /// How each is read.
    pub kinds: Vec<PgKind>,
    /// The Arrow schema of the batches.
    pub arrow: SchemaRef,
}

impl Layout {
    /// `SELECT` list: every column, those without a binary decoder cast to text.
    pub fn select_list(&self) -> String {
        self.names
            .iter()
            .zip(&self.kinds)
            .map(|(n, k)| {
                let q = quote_ident(n);
                if k.selected_as_text() {
                    format!("{q}::text AS {q}")
                } else {
                    q
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Fresh builders, one per column.
    pub fn builders(&self) -> Vec<ColumnBuilder> {
        self.kinds.iter().map(ColumnBuilder::new).collect()
    }

    /// Finishes `builders` into a batch.
    pub fn finish(
        &self,
        builders: &mut [ColumnBuilder],
    ) -> Result<RecordBatch, wharf_operators::arrow::error::ArrowError> {
        let columns = builders.iter_mut().map(|b| b.finish()).collect();
        RecordBatch::try_new(self.arrow.clone(), columns)
    }
}

/// How a `tokio_postgres` error is reported: its message (with the server's detail and hint)
/// and whether retrying may help.
pub fn describe_error(e: &tokio_postgres::Error) -> (String, bool) {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let mut m = format!("{} ({code})", db.message());
        if let Some(d) = db.detail() {
            m.push_str(&format!("; {d}"));
        }
        if let Some(h) = db.hint() {
            m.push_str(&format!("; hint: {h}"));
        }
        // Connection exceptions, serialization failures and deadlocks, insufficient
        // resources, operator intervention (shutdown), lock timeouts.
        let transient = code.starts_with("08")
            || code == "40001"
            || code == "40P01"
            || code.starts_with("53")
            || code.starts_with("57P")
            || code == "55P03";
        return (m, transient);
    }
    let mut m = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        m.push_str(&format!(": {s}"));
        source = s.source();
    }
    // No server error: the connection broke, timed out or could not be made.
    (m, true)
}

fn sql_state(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|d| d.code().code())
}

impl PostgresWarehouse {
    /// A warehouse named `name` (for messages).
    pub fn new(name: impl Into<String>, settings: PgSettings) -> Self {
        PostgresWarehouse {
            name: name.into(),
            settings: Arc::new(settings),
            held: Default::default(),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &PgSettings {
        &self.settings
    }

    /// Runs `f` to completion on a private runtime.
    pub fn block<T>(
        &self,
        f: impl Future<Output = Result<T, WarehouseError>>,
    ) -> Result<T, WarehouseError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| WarehouseError::Open {
                what: self.what(),
                message: format!("cannot start a runtime: {e}"),
            })?;
        rt.block_on(f)
    }

    /// Opens a session (UTC, ISO dates, hex bytea). Must run inside [`Self::block`].
    pub async fn connect(&self) -> Result<Client, WarehouseError> {
        let client = self.connect_bare().await?;
        // One statement for all settings (each SET would be a statement of its own).
        let session = match self.settings.flavor {
            Flavor::Postgres => {
                "SELECT set_config('TimeZone', 'UTC', false), set_config('DateStyle', 'ISO', false), \
                 set_config('bytea_output', 'hex', false), set_config('extra_float_digits', '3', false)"
            }
            Flavor::Redshift => "SET timezone = 'UTC'; SET datestyle = 'ISO'",
        };
        client
            .batch_execute(session)
            .await
            .map_err(|e| self.err(&SourceRef::Table(String::new()), e))?;
        Ok(client)
    }

    /// Opens a session with the server's own settings: enough for statements whose answers do
    /// not depend on them (counts, positions, probes).
    pub async fn connect_bare(&self) -> Result<Client, WarehouseError> {
        let s = &self.settings;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&s.host)
            .port(s.port)
            .dbname(&s.database)
            .user(&s.user)
            .application_name("wharf")
            .connect_timeout(s.connect_timeout);
        if let Some(p) = &s.password {
            cfg.password(p);
        }
        let tls = |r: Result<rustls::ClientConfig, String>| {
            r.map(tls::MakeRustls::new)
                .map_err(|message| WarehouseError::Open {
                    what: self.what(),
                    message: format!("TLS set-up failed: {message}"),
                })
        };
        let opened = match s.sslmode {
            SslMode::Disable => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                open(&cfg, NoTls).await
            }
            SslMode::Prefer | SslMode::Require => {
                cfg.ssl_mode(if s.sslmode == SslMode::Prefer {
                    tokio_postgres::config::SslMode::Prefer
                } else {
                    tokio_postgres::config::SslMode::Require
                });
                open(&cfg, tls(tls::unverified())?).await
            }
            SslMode::VerifyFull => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
                open(&cfg, tls(tls::verified(s.sslrootcert.as_deref()))?).await
            }
        };
        let client = opened.map_err(|e| {
            let (message, transient) = describe_error(&e);
            // Authentication and unknown databases are configuration problems.
            let permanent = matches!(sql_state(&e), Some(c) if c.starts_with("28") || c == "3D000");
            WarehouseError::not_opened(self.what(), message, transient && !permanent)
        })?;
        Ok(client)
    }

    /// Maps a query error.
    pub fn err(&self, src: &SourceRef, e: tokio_postgres::Error) -> WarehouseError {
        if sql_state(&e) == Some("42P01") {
            return WarehouseError::MissingTable {
                source_ref: src.clone(),
                warehouse: self.what(),
            };
        }
        let (message, transient) = describe_error(&e);
        WarehouseError::Query {
            source_ref: src.clone(),
            message,
            transient,
        }
    }

    fn from_clause(src: &SourceRef) -> String {
        match src {
            SourceRef::Table(t) => quote_table(t),
            SourceRef::Query(q) => format!("({}) AS wharf_source", q.trim().trim_end_matches(';')),
        }
    }

    /// The server's `wal_level` (`logical` is needed for change capture).
    pub fn wal_level(&self) -> Result<String, WarehouseError> {
        self.on_held(async |c: &Client| {
            let row = c
                .query_one("SHOW wal_level", &[])
                .await
                .map_err(|e| self.err(&SourceRef::Table(String::new()), e))?;
            Ok(row.get::<_, String>(0))
        })
    }

    /// How `src`'s columns are read.
    pub async fn layout(&self, client: &Client, src: &SourceRef) -> Result<Layout, WarehouseError> {
        let sql = format!("SELECT * FROM {} LIMIT 0", Self::from_clause(src));
        let stmt = client.prepare(&sql).await.map_err(|e| self.err(src, e))?;
        let typmods = self.numeric_typmods(client, src, &stmt).await?;
        let mut names = Vec::new();
        let mut kinds = Vec::new();
        for c in stmt.columns() {
            let ty = match c.type_().kind() {
                Kind::Domain(base) => base.clone(),
                _ => c.type_().clone(),
            };
            let element = match ty.kind() {
                Kind::Array(e) => Some(match e.kind() {
                    Kind::Domain(base) => base.oid(),
                    _ => e.oid(),
                }),
                _ => None,
            };
            let kind = match ty.kind() {
                Kind::Simple | Kind::Array(_) => {
                    let typmod = match (c.table_oid(), c.column_id()) {
                        (Some(t), Some(n)) => typmods.get(&(t, n)).copied().unwrap_or(-1),
                        _ => -1,
                    };
                    PgKind::of(ty.oid(), typmod, element)
                }
                _ => PgKind::AsText,
            };
            names.push(c.name().to_string());
            kinds.push(kind);
        }
        let fields: Vec<Field> = names
            .iter()
            .zip(&kinds)
            .map(|(n, k)| Field::new(n, k.arrow_type(), true))
            .collect();
        Ok(Layout {
            names,
            kinds,
            arrow: Arc::new(Schema::new(fields)),
        })
    }

    /// Type modifiers (`numeric(p,s)`) of the statement's `numeric` columns that come straight
    /// from a table, by (table oid, column number); computed columns have none.
    async fn numeric_typmods(
        &self,
        client: &Client,
        src: &SourceRef,
        stmt: &tokio_postgres::Statement,
    ) -> Result<std::collections::HashMap<(u32, i16), i32>, WarehouseError> {
        let tables: Vec<u32> = stmt
            .columns()
            .iter()
            .filter(|c| matches!(c.type_().oid(), 1700 | 1231))
            .filter_map(|c| c.table_oid())
            .collect();
        if tables.is_empty() {
            return Ok(Default::default());
        }
        let rows = client
            .query(
                "SELECT a.attrelid, a.attnum, a.atttypmod FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = ANY($1) AND a.attnum > 0",
                &[&tables],
            )
            .await
            .map_err(|e| self.err(src, e))?;
        Ok(rows
            .iter()
            .map(|r| ((r.get::<_, u32>(0), r.get::<_, i16>(1)), r.get::<_, i32>(2)))
            .collect())
    }

    fn count_sql(&self, src: &SourceRef, sql: &str) -> Result<u64, WarehouseError> {
        self.on_held(async |client: &Client| {
            let row = client
                .query_one(sql, &[])
                .await
                .map_err(|e| self.err(src, e))?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        })
    }

    /// Streams the whole of `src` (PostgreSQL only) and says which transactions the read saw,
    /// so that a change stream started before it can skip them.
    pub fn read_snapshot_seen(
        &self,
        src: &SourceRef,
        each: impl FnMut(RecordBatch) -> bool,
    ) -> Result<visibility::SnapshotVisibility, WarehouseError> {
        self.stream_in(src, "", None, true, None, each)?
            .ok_or_else(|| WarehouseError::Query {
                source_ref: src.clone(),
                message: "the server did not describe its snapshot".into(),
                transient: false,
            })
    }

    fn stream(
        &self,
        src: &SourceRef,
        clause: &str,
        limit: Option<usize>,
        each: EachBatch<'_>,
    ) -> Result<(), WarehouseError> {
        self.stream_in(src, clause, limit, false, None, each)
            .map(|_| ())
    }

    /// [`Self::stream`] in one `REPEATABLE READ` transaction; with `seen`, the transaction's
    /// snapshot and the WAL insert position are read first (the first statement takes the
    /// snapshot) and returned; with `snapshot`, the transaction imports that exported
    /// snapshot first (a part of a read, [`parts`]).
    fn stream_in(
        &self,
        src: &SourceRef,
        clause: &str,
        limit: Option<usize>,
        seen: bool,
        snapshot: Option<parts::Exported>,
        mut each: impl FnMut(RecordBatch) -> bool,
    ) -> Result<Option<visibility::SnapshotVisibility>, WarehouseError> {
        self.block(async {
            let mut client = self.connect().await?;
            let layout = self.layout(&client, src).await?;
            let limit = limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default();
            let sql = format!(
                "SELECT {} FROM {} {clause}{limit}",
                layout.select_list(),
                Self::from_clause(src)
            );
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(self.settings.flavor == Flavor::Postgres)
                .start()
                .await
                .map_err(|e| self.err(src, e))?;
            if let Some(snapshot) = snapshot {
                // The identifier was checked (hex digits and dashes) when it was exported.
                tx.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{}'", snapshot.id))
                    .await
                    .map_err(|e| self.err(src, e))?;
                drop(snapshot.hold);
            }
            let visibility = if seen {
                let row = tx
                    .query_one(
                        "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text",
                        &[],
                    )
                    .await
                    .map_err(|e| self.err(src, e))?;
                let (snapshot, lsn): (String, String) = (row.get(0), row.get(1));
                Some(
                    visibility::SnapshotVisibility::parse(&snapshot, &lsn).ok_or_else(|| {
                        WarehouseError::Query {
                            source_ref: src.clone(),
                            message: format!("unexpected snapshot `{snapshot}` at `{lsn}`"),
                            transient: false,
                        }
                    })?,
                )
            } else {
                None
            };
            let stmt = tx.prepare(&sql).await.map_err(|e| self.err(src, e))?;
            let portal = tx.bind(&stmt, &[]).await.map_err(|e| self.err(src, e))?;
            let mut builders = layout.builders();
            loop {
                let rows = tx
                    .query_portal(&portal, FETCH_ROWS)
                    .await
                    .map_err(|e| self.err(src, e))?;
                let done = rows.len() < FETCH_ROWS as usize;
                for row in &rows {
                    for (i, b) in builders.iter_mut().enumerate() {
                        let raw: RawValue<'_> = row.try_get(i).map_err(|e| self.err(src, e))?;
                        b.push_binary(raw.0).map_err(|m| WarehouseError::Query {
                            source_ref: src.clone(),
                            message: format!("column `{}`: {m}", layout.names[i]),
                            transient: false,
                        })?;
                    }
                }
                if !rows.is_empty() {
                    let batch =
                        layout
                            .finish(&mut builders)
                            .map_err(|e| WarehouseError::Query {
                                source_ref: src.clone(),
                                message: e.to_string(),
                                transient: false,
                            })?;
                    if !each(batch) {
                        return Ok(visibility);
                    }
                }
                if done {
                    break;
                }
            }
            tx.commit().await.map_err(|e| self.err(src, e))?;
            Ok(visibility)
        })
    }
}

async fn open<T>(cfg: &tokio_postgres::Config, tls: T) -> Result<Client, tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = cfg.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

impl Warehouse for PostgresWarehouse {
    /// What it is, for messages (no password).
    fn what(&self) -> String {
        let s = &self.settings;
        let kind = match s.flavor {
            Flavor::Postgres => "PostgreSQL",
            Flavor::Redshift => "Redshift",
        };
        format!(
            "{kind} warehouse `{}` ({}@{}:{}/{})",
            self.name, s.user, s.host, s.port, s.database
        )
    }

    /// Connects once (the health check).
    fn check(&self) -> Result<(), WarehouseError> {
        self.block(async { self.connect().await.map(|_| ()) })
    }

    /// Columns, types, declared primary key and Arrow schema of `src`.
    fn describe(&self, src: &SourceRef) -> Result<TableSchema, WarehouseError> {
        self.on_held(async |client: &Client| {
            let layout = self.layout(client, src).await?;
            let mut columns: Vec<ColumnInfo> = layout
                .names
                .iter()
                .zip(layout.arrow.fields())
                .map(|(n, f)| ColumnInfo {
                    name: n.clone(),
                    sql_type: f.data_type().to_string(),
                    nullable: true,
                })
                .collect();
            let mut primary_key = Vec::new();
            if let SourceRef::Table(t) = src {
                let table = quote_table(t);
                let rows = client
                    .query(
                        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                         NOT a.attnotnull FROM pg_catalog.pg_attribute a \
                         WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 \
                         AND NOT a.attisdropped",
                        &[&table],
                    )
                    .await
                    .map_err(|e| self.err(src, e))?;
                for r in rows {
                    let name: String = r.get(0);
                    if let Some(c) = columns.iter_mut().find(|c| c.name == name) {
                        c.sql_type = r.get(1);
                        c.nullable = r.get(2);
                    }
                }
                let rows = client
                    .query(
                        "SELECT a.attname::text FROM pg_catalog.pg_index i \
                         JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid \
                         AND a.attnum = ANY(i.indkey) \
                         WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
                         ORDER BY array_position(i.indkey::int2[], a.attnum)",
                        &[&table],
                    )
                    .await
                    .map_err(|e| self.err(src, e))?;
                primary_key = rows.iter().map(|r| r.get(0)).collect();
            }
            Ok(TableSchema {
                columns,
                primary_key,
                arrow: layout.arrow,
            })
        })
    }

    fn source_item(&self, src: &SourceRef) -> Result<String, WarehouseError> {
        Ok(Self::from_clause(src))
    }

    /// The watermark as an integer expression of the cursor's type (exact for every value).
    fn literal(&self, after: Watermark, zone: bool) -> String {
        match after {
            Watermark::Integer(v) => format!("({v})::bigint"),
            Watermark::TimestampMicros(us) => {
                let epoch = if zone { "timestamptz" } else { "timestamp" };
                format!("'epoch'::{epoch} + ({us})::bigint * interval '1 microsecond'")
            }
            Watermark::Date(d) => format!("DATE '1970-01-01' + ({d})::integer"),
        }
    }

    /// Parts inside one exported snapshot (`parts.rs`): a table by page ranges, a query by
    /// the key's hash; Redshift reads whole.
    fn read_parts(self: Arc<Self>, of: PartsOf<'_>) -> Result<Vec<PartRead>, WarehouseError> {
        self.parts(of)
    }

    /// PostgreSQL's `hashtext` of the key's row text (NULLs included), made non-negative;
    /// none on Redshift, which has no `hashtext` (its reads stay whole).
    fn key_hash(&self, columns: &[String]) -> Option<String> {
        match self.settings.flavor {
            Flavor::Postgres => Some(format!(
                "(hashtext(ROW({})::text)::bigint + 2147483648)",
                columns.join(", ")
            )),
            Flavor::Redshift => None,
        }
    }

    fn select(&self, query: Select, each: EachBatch<'_>) -> Result<(), WarehouseError> {
        self.stream(query.source, query.filter, query.limit, each)
    }

    fn count_where(&self, src: &SourceRef, filter: &str) -> Result<u64, WarehouseError> {
        let sql = format!("SELECT count(*) FROM {} {filter}", Self::from_clause(src));
        self.count_sql(src, &sql)
    }

    /// No `QUALIFY` in PostgreSQL: a ranked subquery, its rank column left out.
    fn latest_per_key(
        &self,
        src: &SourceRef,
        schema: &TableSchema,
        key: &[String],
        order: &str,
    ) -> SourceRef {
        let cols = schema
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        SourceRef::Query(format!(
            "SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {} ORDER BY {} DESC) \
             AS wharf_rank FROM {}) AS wharf_latest WHERE wharf_rank = 1",
            key.iter()
                .map(|k| quote_ident(k))
                .collect::<Vec<_>>()
                .join(", "),
            quote_ident(order),
            Self::from_clause(src),
        ))
    }

    /// Logical decoding; Redshift included: its stream says itself that it has none.
    fn change_source<'a>(
        &'a self,
        sync: &str,
        src: &SourceRef,
        key: &[String],
    ) -> Option<Box<dyn ChangeSource + 'a>> {
        let capture = match src {
            SourceRef::Table(table) => Some(logical::Capture::for_sync(sync, table)),
            SourceRef::Query(_) => None,
        };
        Some(Box::new(stream::SlotStream {
            pg: self,
            capture,
            key: key.to_vec(),
        }))
    }

    fn change_capture_note(&self) -> String {
        self.capture_note()
    }
}
