//! `wharf.toml`: named warehouses and destinations, and the syncs between them.
//!
//! Loading is strict: unknown keys, missing keys and wrong types are errors that name the
//! file, the key path (`syncs[0].mapping.time_column`) and what is expected. Strings may
//! contain `${ENV_VAR}`, expanded at load time; an unset variable is an error naming the key
//! and the variable (never a value). Secrets are held in [`Secret`], which never prints.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::duration::Span;
use crate::schedule::ScheduleSetting;
use serde::Deserialize;

/// A configuration problem, located by file and key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    /// The configuration file.
    pub file: String,
    /// Key path, e.g. `syncs[0].mode`, or `(file)` for whole-file problems.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

/// A credential: deserialized from a string, never printed (Debug and Display show `***`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(v: impl Into<String>) -> Self {
        Secret(v.into())
    }
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where wharf keeps its state (watermarks, run history, rejects). Relative paths are
    /// relative to the config file's folder. Default `.wharf`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Named warehouses.
    #[serde(default)]
    pub warehouses: BTreeMap<String, WarehouseConfig>,
    /// Named destinations.
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationConfig>,
    /// The syncs.
    #[serde(default)]
    pub syncs: Vec<SyncConfig>,
    /// `wharf run`: the HTTP API, retries and shutdown.
    #[serde(default)]
    pub service: ServiceConfig,
    /// `wharf run`: the webhook called on failed runs and volume anomalies.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Folder of the config file (set at load; relative paths resolve against it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".wharf")
}

/// `[service]`: how `wharf run` serves and retries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Address of the HTTP API and web page (`127.0.0.1:8080` by default). Any address other
    /// than a loopback one needs `token`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer token the API requires (`Authorization: Bearer …`); required off loopback.
    pub token: Option<Secret>,
    /// Pause between the runs of a `continuous` sync (default `1s`).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: Span,
    /// First wait before retrying a failed run (default `5s`); it doubles on each failure.
    #[serde(default = "default_retry_initial")]
    pub retry_initial: Span,
    /// Longest wait between retries of a failed run (default `5m`).
    #[serde(default = "default_retry_max")]
    pub retry_max: Span,
    /// On SIGTERM/SIGINT, how long running runs may take to finish before they are cancelled
    /// (default `30s`).
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Span,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: default_listen(),
            token: None,
            poll_interval: default_poll_interval(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_poll_interval() -> Span {
    Span(Duration::from_secs(1))
}
fn default_retry_initial() -> Span {
    Span(Duration::from_secs(5))
}
fn default_retry_max() -> Span {
    Span(Duration::from_secs(300))
}
fn default_shutdown_timeout() -> Span {
    Span(Duration::from_secs(30))
}

/// `[alerts]`: a webhook for failed runs and volume anomalies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// URL that receives a JSON POST per alert (none: alerts are only logged).
    pub webhook_url: Option<Secret>,
    /// A run is anomalous when it has more rows than this multiple of the average of the
    /// sync's last `volume_window` successful runs (default 10; 0 turns the check off).
    #[serde(default = "default_volume_multiple")]
    pub volume_multiple: f64,
    /// Successful runs averaged (default 10).
    #[serde(default = "default_volume_window")]
    pub volume_window: usize,
    /// Successful runs needed before the check applies (default 3).
    #[serde(default = "default_volume_min_runs")]
    pub volume_min_runs: usize,
    /// `alert` (default): send the run and alert; `pause`: do not send it, pause the sync and
    /// alert (resume it with `POST /syncs/{name}/resume`).
    #[serde(default)]
    pub on_anomaly: AnomalyAction,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_url: None,
            volume_multiple: default_volume_multiple(),
            volume_window: default_volume_window(),
            volume_min_runs: default_volume_min_runs(),
            on_anomaly: AnomalyAction::Alert,
        }
    }
}

fn default_volume_multiple() -> f64 {
    10.0
}
fn default_volume_window() -> usize {
    10
}
fn default_volume_min_runs() -> usize {
    3
}

/// What a volume anomaly does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyAction {
    /// Send the run and alert.
    #[default]
    Alert,
    /// Do not send the run; pause the sync and alert.
    Pause,
}

/// A warehouse connection (chosen by its `type` key; see [`tagged`]).
#[derive(Debug, Clone)]
pub enum WarehouseConfig {
    /// An embedded DuckDB database file.
    Duckdb {
        /// The database file.
        path: PathBuf,
        /// DuckDB's `memory_limit` for wharf's reads (e.g. `"1GB"`); default 64MB. DuckDB
        /// keeps the file's blocks it has read in memory up to this limit, so without one the
        /// process grows with the table; queries that need more (the profile-history
        /// window) spill to `<file>.tmp`.
        memory_limit: Option<String>,
    },
    /// A PostgreSQL server.
    Postgres(PostgresConfig),
    /// An Amazon Redshift cluster (PostgreSQL's wire protocol).
    Redshift(PostgresConfig),
    /// A Snowflake account (its HTTP API).
    Snowflake(SnowflakeConfig),
    /// A Databricks SQL warehouse (the SQL Statement Execution API).
    Databricks(DatabricksConfig),
    /// Google BigQuery (its REST API).
    Bigquery(BigQueryConfig),
}

/// `type = "duckdb"`.
#[cfg(feature = "duckdb")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DuckdbFields {
    path: PathBuf,
    #[serde(default)]
    memory_limit: Option<String>,
}

impl<'de> Deserialize<'de> for WarehouseConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const TYPES: &[&str] = &[
            "duckdb",
            "postgres",
            "redshift",
            "snowflake",
            "databricks",
            "bigquery",
        ];
        let (kind, rest) = tagged::<D>(d, TYPES)?;
        Ok(match kind.as_str() {
            #[cfg(not(feature = "duckdb"))]
            "duckdb" => {
                let _ = rest;
                return Err(serde::de::Error::custom(
                    "this build of wharf has no DuckDB support; build with the `duckdb` feature",
                ));
            }
            #[cfg(feature = "duckdb")]
            "duckdb" => {
                let f: DuckdbFields = tagged_fields::<D, _>(rest)?;
                WarehouseConfig::Duckdb {
                    path: f.path,
                    memory_limit: f.memory_limit,
                }
            }
            "postgres" => WarehouseConfig::Postgres(tagged_fields::<D, _>(rest)?),
            "redshift" => WarehouseConfig::Redshift(tagged_fields::<D, _>(rest)?),
            "snowflake" => WarehouseConfig::Snowflake(tagged_fields::<D, _>(rest)?),
            "databricks" => WarehouseConfig::Databricks(tagged_fields::<D, _>(rest)?),
            _ => WarehouseConfig::Bigquery(tagged_fields::<D, _>(rest)?),
        })
    }
}

/// Marks the key path inside a `type`-tagged table in an error message
/// (`MARK path MARK message`): serde's tagged enums lose the path, so [`tagged_fields`] keeps
/// it and [`Config::parse`] joins it to the outer one.
const INNER_PATH: char = '\u{1f}';

/// Splits a `type`-tagged table into its type (one of `types`) and its other keys.
fn tagged<'de, D: serde::Deserializer<'de>>(
    d: D,
    types: &'static [&'static str],
) -> Result<(String, toml::Value), D::Error> {
    use serde::de::Error;
    let mut table = toml::Table::deserialize(d)?;
    let kind = match table.remove("type") {
        Some(toml::Value::String(k)) if types.contains(&k.as_str()) => k,
        Some(toml::Value::String(k)) => return Err(D::Error::unknown_variant(&k, types)),
        Some(_) => {
            return Err(D::Error::custom(format!(
                "`type` must be a string, one of {}",
                types.join(", ")
            )))
        }
        None => return Err(D::Error::missing_field("type")),
    };
    Ok((kind, toml::Value::Table(table)))
}

/// Deserializes the keys of a `type`-tagged table, keeping the key path of an error.
fn tagged_fields<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    rest: toml::Value,
) -> Result<T, D::Error> {
    use serde::de::Error;
    serde_path_to_error::deserialize(rest).map_err(|e| {
        let path = e.path().to_string();
        D::Error::custom(format!("{INNER_PATH}{path}{INNER_PATH}{}", e.into_inner()))
    })
}

/// `type = "bigquery"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigQueryConfig {
    /// The project queries run in.
    pub project: String,
    /// The dataset of unqualified table names.
    pub dataset: Option<String>,
    /// The datasets' location (e.g. `US`, `EU`).
    pub location: Option<String>,
    /// An OAuth2 access token (e.g. `${GOOGLE_ACCESS_TOKEN}`); never printed.
    pub access_token: Option<Secret>,
    /// A service account's JSON key file (relative to the config file): wharf signs in with
    /// it and renews its access token itself.
    pub credentials_file: Option<String>,
    /// The same key as JSON text (e.g. `${GOOGLE_CREDENTIALS}`); never printed.
    pub credentials: Option<Secret>,
    /// API endpoint (default `https://bigquery.googleapis.com`; an emulator's URL in tests).
    pub endpoint: Option<String>,
    /// The Storage Read API's endpoint (gRPC), which reads tables in Arrow, several streams at
    /// once (default `https://bigquerystorage.googleapis.com` with Google's `endpoint`, none
    /// with another `endpoint` unless set here).
    pub storage_endpoint: Option<String>,
    /// `false` reads everything through REST pages (default `true`).
    pub storage_read: Option<bool>,
    /// Streams a Storage read session asks for (default 4).
    pub storage_streams: Option<u32>,
    /// Per-request timeout (default `60s`).
    pub timeout: Option<Span>,
}

/// `type = "databricks"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabricksConfig {
    /// Workspace URL, e.g. `https://adb-1234567890123456.7.azuredatabricks.net`.
    pub host: String,
    /// Access token (e.g. `${DATABRICKS_TOKEN}`); never printed.
    pub token: Secret,
    /// The SQL warehouse's id.
    pub warehouse_id: String,
    /// Default catalog.
    pub catalog: Option<String>,
    /// Default schema.
    pub schema: Option<String>,
    /// Per-request timeout (default `60s`).
    pub timeout: Option<Span>,
}

/// `type = "snowflake"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnowflakeConfig {
    /// Account identifier, e.g. `myorg-myaccount`.
    pub account: String,
    /// Login name.
    pub user: String,
    /// Password (e.g. `${SNOWFLAKE_PASSWORD}`); never printed.
    pub password: Option<Secret>,
    /// Key-pair authentication: the user's unencrypted PKCS#8 RSA private key as PEM text
    /// (e.g. `${SNOWFLAKE_PRIVATE_KEY}`); never printed.
    pub private_key: Option<Secret>,
    /// Key-pair authentication with the key in a PEM file (relative to the config file).
    pub private_key_file: Option<String>,
    /// Database of the session.
    pub database: String,
    /// Schema (default `PUBLIC`).
    pub schema: Option<String>,
    /// Virtual warehouse.
    pub warehouse: Option<String>,
    /// Role.
    pub role: Option<String>,
    /// Base URL (default `https://<account>.snowflakecomputing.com`; an emulator's URL in tests).
    pub url: Option<String>,
    /// Per-request timeout (default `60s`).
    pub timeout: Option<Span>,
}

impl WarehouseConfig {
    /// The warehouse kind, as sent in `$warehouse_type`.
    pub fn kind(&self) -> &'static str {
        match self {
            WarehouseConfig::Duckdb { .. } => "duckdb",
            WarehouseConfig::Postgres(_) => "postgres",
            WarehouseConfig::Redshift(_) => "redshift",
            WarehouseConfig::Snowflake(_) => "snowflake",
            WarehouseConfig::Databricks(_) => "databricks",
            WarehouseConfig::Bigquery(_) => "bigquery",
        }
    }
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslModeConfig {
    /// No TLS.
    Disable,
    /// TLS if the server offers it; the certificate is not checked.
    #[default]
    Prefer,
    /// TLS; the certificate is not checked (as in libpq).
    Require,
    /// TLS; the certificate chain and the host name are checked.
    VerifyFull,
}

/// A PostgreSQL or Redshift connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Host name or address.
    pub host: String,
    /// Port (default 5432; 5439 for Redshift).
    pub port: Option<u16>,
    /// Database.
    pub database: String,
    /// User.
    pub user: String,
    /// Password; use `${ENV_VAR}` to keep it out of the file.
    pub password: Option<Secret>,
    /// `disable`, `prefer` (default), `require` or `verify-full`.
    #[serde(default)]
    pub sslmode: SslModeConfig,
    /// PEM root certificates for `verify-full` (default: the system's).
    pub sslrootcert: Option<PathBuf>,
    /// Connection timeout (default `10s`).
    pub connect_timeout: Option<Span>,
}

/// How a mirror sync learns of changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeCapture {
    /// The warehouse's own change stream where it has one (PostgreSQL with
    /// `wal_level = logical`; Snowflake, Databricks and BigQuery tables with their change
    /// output on), else snapshot diffs (stated in the logs).
    #[default]
    Auto,
    /// The warehouse's change stream, or an error saying why it cannot be used.
    Logical,
    /// Always diff snapshots.
    Snapshot,
}

/// Mixpanel data residency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// `api.mixpanel.com`
    #[default]
    Us,
    /// `api-eu.mixpanel.com`
    Eu,
    /// `api-in.mixpanel.com`
    In,
}

/// A Mixpanel service account (basic auth).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccount {
    /// The service account's username.
    pub username: String,
    /// Its secret.
    pub secret: Secret,
}

/// A Mixpanel project.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixpanelConfig {
    /// The project id (required with a service account).
    pub project_id: Option<String>,
    /// Service-account authentication.
    pub service_account: Option<ServiceAccount>,
    /// The project token: authenticates `/import` when no service account is set, and is the
    /// `$token` of every profile update (required for user and group profiles).
    pub project_token: Option<Secret>,
    /// Data residency: `us` (default), `eu` or `in`.
    #[serde(default)]
    pub region: Region,
    /// Overrides the host, e.g. `http://127.0.0.1:8080` for the local receiver.
    pub api_host: Option<String>,
    /// Requests in flight at once (default 10; shrinks on 429s and timeouts, grows back).
    pub concurrency: Option<usize>,
    /// Group-profile updates per `/groups` request (default 200, at most 2000).
    pub groups_batch_size: Option<usize>,
    /// Cap on records sent per second (default: none).
    pub max_records_per_second: Option<f64>,
    /// Cap on uncompressed megabytes (10^6 bytes) sent per minute; 0 disables it. Default:
    /// 1500 (below Mixpanel's 2 GB/min per project) for Mixpanel's hosts, none with `api_host`.
    pub max_mb_per_minute: Option<f64>,
    /// Per-request timeout, e.g. `60s` (default 120 s).
    pub timeout: Option<Span>,
    /// First retry backoff, e.g. `2s` (default 2 s, doubling up to `max_backoff`).
    pub initial_backoff: Option<Span>,
    /// Largest retry backoff (default 60 s).
    pub max_backoff: Option<Span>,
    /// Give up on a request after retrying this long (default 30m); the run then fails and
    /// commits nothing.
    pub give_up_after: Option<Span>,
}

/// A destination (chosen by its `type` key).
#[derive(Debug, Clone)]
pub enum DestinationConfig {
    /// Mixpanel's ingestion API.
    Mixpanel(Box<MixpanelConfig>),
    /// NDJSON of exactly what would be sent; `path = "-"` is stdout.
    File {
        /// The file (appended to), or `-`.
        path: String,
    },
    /// Kafka topics.
    Kafka(Box<KafkaConfig>),
}

/// `type = "file"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFields {
    path: String,
}

impl<'de> Deserialize<'de> for DestinationConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (kind, rest) = tagged::<D>(d, &["mixpanel", "file", "kafka"])?;
        Ok(match kind.as_str() {
            "mixpanel" => DestinationConfig::Mixpanel(Box::new(tagged_fields::<D, _>(rest)?)),
            "file" => DestinationConfig::File {
                path: tagged_fields::<D, FileFields>(rest)?.path,
            },
            _ => DestinationConfig::Kafka(Box::new(tagged_fields::<D, _>(rest)?)),
        })
    }
}

/// What a Kafka record's value holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaPayload {
    /// The change envelope `{op, key, after, sync, table, table_type, run, ts}`.
    #[default]
    Envelope,
    /// Exactly the Mixpanel payload (an `/import` event, an `/engage` or `/groups` update), for
    /// consumers that forward it to Mixpanel.
    Mixpanel,
}

/// Kafka's producer compression codecs (built into this librdkafka: no zstd).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaCompression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4 (the default: cheapest per byte saved).
    #[default]
    Lz4,
}

impl KafkaCompression {
    /// librdkafka's `compression.codec` value.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaCompression::None => "none",
            KafkaCompression::Gzip => "gzip",
            KafkaCompression::Snappy => "snappy",
            KafkaCompression::Lz4 => "lz4",
        }
    }
}

/// A Kafka cluster and the topic a sync's changes go to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, e.g. `127.0.0.1:9092` (comma-separated).
    pub brokers: String,
    /// Topic name template; `{sync}`, `{table}` and `{table_type}` are replaced. Default
    /// `wharf.{sync}`.
    #[serde(default = "default_kafka_topic")]
    pub topic: String,
    /// What record values hold: `envelope` (default) or `mixpanel`.
    #[serde(default)]
    pub payload: KafkaPayload,
    /// `none`, `gzip`, `snappy` or `lz4` (default).
    #[serde(default)]
    pub compression: KafkaCompression,
    /// Partitions of a topic wharf creates (default 3). Existing topics are left as they are.
    pub partitions: Option<i32>,
    /// Replication factor of a topic wharf creates (default 1).
    pub replication_factor: Option<i32>,
    /// Each run's records and its position are written in one Kafka transaction; a sync
    /// resumes from the last committed position (default false: idempotent producer,
    /// at-least-once).
    #[serde(default)]
    pub exactly_once: bool,
    /// Topic of the positions with `exactly_once` (one partition, compacted); `{sync}` is
    /// replaced. Default `wharf.progress.{sync}`.
    pub progress_topic: Option<String>,
    /// The producer's `transactional.id` with `exactly_once`; `{sync}` is replaced. Default
    /// `wharf-{sync}`. Two processes must never share one.
    pub transactional_id: Option<String>,
    /// How long a record may wait for the broker before the request fails and is retried,
    /// e.g. `30s` (default). librdkafka retries inside this time.
    pub delivery_timeout: Option<Span>,
    /// How long the producer waits to fill a batch, e.g. `5ms` (default).
    pub linger: Option<Span>,
    /// Requests in flight at once (default 4).
    pub concurrency: Option<usize>,
    /// Cap on records produced per second (default: none), e.g. to spare a shared cluster
    /// during a backfill.
    pub max_records_per_second: Option<f64>,
    /// Give up on a request after retrying this long (default 30m); the run then fails and
    /// commits nothing.
    pub give_up_after: Option<Span>,
    /// Send the `wharf-sync` and `wharf-op` headers (default true; false sends about 30%
    /// more records per second).
    #[serde(default = "yes")]
    pub headers: bool,
    /// With `payload = "mixpanel"`: the `$token` of profile updates (as Mixpanel needs it).
    pub project_token: Option<Secret>,
    /// More librdkafka settings, e.g. `{ "batch.size" = "1000000" }`. Values are never
    /// logged (they may hold credentials).
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
}

impl KafkaConfig {
    /// The extra librdkafka settings with their values, for the one place that hands them
    /// to librdkafka.
    pub fn exposed_properties(&self) -> BTreeMap<String, String> {
        self.properties
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect()
    }
}

fn yes() -> bool {
    true
}

fn default_kafka_topic() -> String {
    "wharf.{sync}".into()
}

/// Mixpanel's table types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableType {
    /// Events (`/import`).
    Events,
    /// User profiles (`/engage`).
    Users,
    /// Group profiles (`/groups`).
    Groups,
    /// Lookup tables.
    Lookup,
}

/// How rows are selected each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Rows whose insert time is past the last run's maximum.
    Append,
    /// The whole table each run, upserted.
    Full,
    /// Inserts, updates and deletes.
    Mirror,
    /// One snapshot, once.
    OneTime,
}

/// Unit of an integer time column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnitConfig {
    /// ≥ 10^11 → milliseconds, else seconds.
    #[default]
    Auto,
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Milliseconds,
}

/// How columns map to Mixpanel's fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// A static event name for every row…
    pub event_name: Option<String>,
    /// …or the column holding it.
    pub event_name_column: Option<String>,
    /// The event time column.
    pub time_column: Option<String>,
    /// Unit of an integer time column.
    #[serde(default)]
    pub time_unit: TimeUnitConfig,
    /// The user id column (sent as `distinct_id`).
    pub user_id_column: Option<String>,
    /// The device id column (sent as `$device_id`).
    pub device_id_column: Option<String>,
    /// A JSON column flattened into properties.
    pub properties_column: Option<String>,
    /// Append cursor column (default: `time_column`).
    pub insert_time_column: Option<String>,
    /// Columns identifying a row (for `$insert_id`); default: the whole row.
    #[serde(default)]
    pub key_columns: Vec<String>,
    /// Columns not sent.
    #[serde(default)]
    pub exclude_columns: Vec<String>,
    /// Group profiles: the group key (`$group_key`, e.g. `company_id`).
    pub group_key: Option<String>,
    /// Group profiles: the column holding the group id (`$group_id`).
    pub group_id_column: Option<String>,
    /// Lookup tables: the Mixpanel lookup table id to replace.
    pub lookup_table_id: Option<String>,
    /// User profiles from an SCD type 2 history table: the column holding each row's start
    /// time. Each run sends, per user, only the row with the latest start time (the profile's
    /// current state).
    pub history_start_column: Option<String>,
}

/// One sync.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Unique name; part of every `$insert_id`.
    pub name: String,
    /// Name of a `[warehouses.*]` entry.
    pub warehouse: String,
    /// The table (`schema.table` allowed)…
    pub table: Option<String>,
    /// …or a SQL query.
    pub query: Option<String>,
    /// `events`, `users`, `groups` or `lookup`.
    pub table_type: TableType,
    /// `append`, `full`, `mirror` or `one_time`.
    pub mode: SyncMode,
    /// Names of `[destinations.*]` entries.
    pub destinations: Vec<String>,
    /// Under `wharf run`: `hourly` (default: every table stays in sync once it is configured),
    /// `daily`, `weekly`, `manual`, `continuous`, an interval such as `30s`, `15m`, `1h`
    /// (on the wall clock), or a cron expression in UTC such as `*/15 * * * *` (see
    /// [`crate::schedule`]).
    #[serde(default = "default_schedule")]
    pub schedule: ScheduleSetting,
    /// Under `wharf run`: each scheduled run starts up to this much later, at random
    /// (e.g. `30s`), so that syncs sharing a schedule do not all start at once.
    pub jitter: Option<Span>,
    /// Append: each run also re-reads the rows whose insert time lies within this window
    /// before the watermark (e.g. `2h`), so rows that arrive late with an older insert time
    /// are still sent; rows re-read are sent again (same `$insert_id`: deduplicated).
    /// Needs a TIMESTAMP or DATE insert-time column.
    pub lookback: Option<Span>,
    /// Column mapping.
    #[serde(default)]
    pub mapping: MappingConfig,
    /// Where rejected rows go (default `<state_dir>/rejects/<name>.ndjson`).
    pub rejects_path: Option<PathBuf>,
    /// Columns identifying a row (composite allowed) for `full` and `mirror`; default: the
    /// table's declared primary key.
    /// Defaults: `mapping.user_id_column` for users, `mapping.group_id_column` for groups.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Full/mirror: send every row each run instead of only the changed ones.
    #[serde(default)]
    pub resend_all: bool,
    /// Mirror: `auto` (default), `logical` or `snapshot` — see [`ChangeCapture`].
    #[serde(default)]
    pub change_capture: ChangeCapture,
    /// Full/mirror: when a key occurs in several rows, keep the one with the greatest value of
    /// this column (e.g. `updated_at`) instead of failing the run.
    pub dedupe_by: Option<String>,
}

impl SyncConfig {
    /// The primary key: configured, or the table type's id column.
    pub fn key_columns(&self) -> Vec<String> {
        if !self.primary_key.is_empty() {
            return self.primary_key.clone();
        }
        let m = &self.mapping;
        match self.table_type {
            TableType::Users => m.user_id_column.iter().cloned().collect(),
            TableType::Groups => m.group_id_column.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Whether runs diff snapshots (full, mirror; one-time for non-event tables).
    pub fn diffs_snapshots(&self) -> bool {
        match self.mode {
            SyncMode::Full | SyncMode::Mirror => true,
            SyncMode::OneTime => self.table_type != TableType::Events,
            SyncMode::Append => false,
        }
    }
}

fn default_schedule() -> ScheduleSetting {
    ScheduleSetting::parse("hourly").expect("`hourly` is a schedule")
}

/// Expands `${VAR}` in every string of `value`; `path` locates errors.
fn expand_env(value: &mut toml::Value, path: &str, file: &str) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) if s.contains("${") => {
            *s = expand_str(s).map_err(|var| ConfigError {
                file: file.into(),
                key: path.into(),
                message: format!(
                    "environment variable `{var}` is not set (referenced as ${{{var}}}); set it or write the value"
                ),
            })?;
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                expand_env(v, &format!("{path}[{i}]"), file)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                expand_env(v, &p, file)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return Ok(out);
        };
        let var = &after[..end];
        match std::env::var(var) {
            Ok(v) => out.push_str(&v),
            Err(_) => return Err(var.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Config {
    /// Reads, expands and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            message: format!("cannot read: {e}; create one with `wharf init`"),
        })?;
        let mut config = Config::parse(&text, &file)?;
        config.base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(config)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            file: file.into(),
            key: "(syntax)".into(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let mut value = toml::Value::Table(table);
        expand_env(&mut value, "", file)?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let mut key = e.path().to_string();
            // serde's messages can quote the offending value; keep them only when no secret
            // could be involved (values of other keys never reach this message).
            let mut message = e.into_inner().to_string();
            // An error inside a `type`-tagged table carries its own key path.
            if let Some((inner, rest)) = message
                .strip_prefix(INNER_PATH)
                .and_then(|m| m.split_once(INNER_PATH))
            {
                if inner != "." {
                    key = format!("{key}.{inner}");
                }
                message = rest.to_string();
            }
            ConfigError {
                file: file.into(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message,
            }
        })?;
        config.validate(file)?;
        Ok(config)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: String, message: String| ConfigError {
            file: file.into(),
            key,
            message,
        };
        if self.service.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(err(
                "service.listen".into(),
                format!(
                    "`{}` is not an address and port; write e.g. `127.0.0.1:8080`",
                    self.service.listen
                ),
            ));
        }
        if !(self.alerts.volume_multiple >= 0.0 && self.alerts.volume_multiple.is_finite()) {
            return Err(err(
                "alerts.volume_multiple".into(),
                "must be a positive number (0 turns the volume check off)".into(),
            ));
        }
        if self.alerts.volume_window == 0 {
            return Err(err(
                "alerts.volume_window".into(),
                "must be at least 1".into(),
            ));
        }
        for (name, w) in &self.warehouses {
            if let WarehouseConfig::Bigquery(b) = w {
                let key = format!("warehouses.{name}");
                let ways = [
                    b.access_token.is_some(),
                    b.credentials_file.is_some(),
                    b.credentials.is_some(),
                ];
                match ways.iter().filter(|w| **w).count() {
                    0 if b.endpoint.is_none() => {
                        return Err(err(
                            format!("{key}.credentials_file"),
                            "missing: set `credentials_file` (a service account's JSON key), `credentials` or `access_token` (only an emulator's `endpoint` needs none)".into(),
                        ))
                    }
                    0 | 1 => {}
                    _ => {
                        return Err(err(
                            format!("{key}.credentials_file"),
                            "set one of `credentials_file`, `credentials` and `access_token`, not several".into(),
                        ))
                    }
                }
            }
            if let WarehouseConfig::Databricks(d) = w {
                let key = format!("warehouses.{name}");
                if !(d.host.starts_with("https://") || d.host.starts_with("http://")) {
                    return Err(err(
                        format!("{key}.host"),
                        format!("`{}`: write the workspace URL, e.g. `https://adb-123.4.azuredatabricks.net`", d.host),
                    ));
                }
            }
            if let WarehouseConfig::Snowflake(sf) = w {
                let key = format!("warehouses.{name}");
                let ways = [
                    sf.password.is_some(),
                    sf.private_key.is_some(),
                    sf.private_key_file.is_some(),
                ];
                match ways.iter().filter(|w| **w).count() {
                    0 => {
                        return Err(err(
                            format!("{key}.password"),
                            "missing: set `password` (e.g. \"${SNOWFLAKE_PASSWORD}\"), or `private_key_file` / `private_key` for key-pair authentication".into(),
                        ))
                    }
                    1 => {}
                    _ => {
                        return Err(err(
                            format!("{key}.private_key"),
                            "set one of `password`, `private_key` and `private_key_file`, not several".into(),
                        ))
                    }
                }
                if sf.account.is_empty()
                    || !sf
                        .account
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(err(
                        format!("{key}.account"),
                        format!(
                            "`{}`: an account identifier holds letters, digits, `-`, `_` and `.`",
                            sf.account
                        ),
                    ));
                }
            }
            if let WarehouseConfig::Postgres(p) | WarehouseConfig::Redshift(p) = w {
                if p.sslrootcert.is_some() && p.sslmode != SslModeConfig::VerifyFull {
                    return Err(err(
                        format!("warehouses.{name}.sslrootcert"),
                        "only used with `sslmode = \"verify-full\"`; set that or remove it".into(),
                    ));
                }
            }
        }
        for (name, d) in &self.destinations {
            if let DestinationConfig::Kafka(k) = d {
                let key = format!("destinations.{name}");
                if k.brokers.trim().is_empty() {
                    return Err(err(
                        format!("{key}.brokers"),
                        "empty: name at least one broker, e.g. `127.0.0.1:9092`".into(),
                    ));
                }
                if k.partitions.is_some_and(|p| p < 1) {
                    return Err(err(
                        format!("{key}.partitions"),
                        "must be at least 1".into(),
                    ));
                }
                if k.replication_factor.is_some_and(|p| p < 1) {
                    return Err(err(
                        format!("{key}.replication_factor"),
                        "must be at least 1".into(),
                    ));
                }
                for reserved in [
                    "bootstrap.servers",
                    "transactional.id",
                    "enable.idempotence",
                    "compression.codec",
                    "compression.type",
                ] {
                    if k.properties.contains_key(reserved) {
                        return Err(err(
                            format!("{key}.properties.{reserved}"),
                            "set by wharf from the destination's own keys; remove it".into(),
                        ));
                    }
                }
            }
            if let DestinationConfig::Mixpanel(m) = d {
                let key = format!("destinations.{name}");
                match (&m.service_account, &m.project_token) {
                    (None, None) => {
                        return Err(err(
                            key,
                            "set `service_account = { username, secret }` with `project_id`, or `project_token`".into(),
                        ))
                    }
                    (Some(_), _) if m.project_id.is_none() => {
                        return Err(err(
                            format!("{key}.project_id"),
                            "missing: a service account needs the project id".into(),
                        ))
                    }
                    _ => {}
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.syncs.iter().enumerate() {
            let key = |k: &str| format!("syncs[{i}].{k}");
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(err(
                    key("name"),
                    format!("`{}`: use letters, digits, `_` and `-`", s.name),
                ));
            }
            if !names.insert(&s.name) {
                return Err(err(key("name"), format!("`{}` is used twice", s.name)));
            }
            if !self.warehouses.contains_key(&s.warehouse) {
                return Err(err(
                    key("warehouse"),
                    format!(
                        "no warehouse named `{}`; defined: {}",
                        s.warehouse,
                        list(self.warehouses.keys())
                    ),
                ));
            }
            if s.destinations.is_empty() {
                return Err(err(
                    key("destinations"),
                    "name at least one destination".into(),
                ));
            }
            for d in &s.destinations {
                if !self.destinations.contains_key(d) {
                    return Err(err(
                        key("destinations"),
                        format!(
                            "no destination named `{d}`; defined: {}",
                            list(self.destinations.keys())
                        ),
                    ));
                }
            }
            match (&s.table, &s.query) {
                (None, None) => {
                    return Err(err(key("table"), "missing: set `table` or `query`".into()))
                }
                (Some(_), Some(_)) => {
                    return Err(err(
                        key("query"),
                        "set either `table` or `query`, not both".into(),
                    ))
                }
                _ => {}
            }
            if s.lookback.is_some() && s.mode != SyncMode::Append {
                return Err(err(
                    key("lookback"),
                    "only append syncs have a watermark to look back from; remove it or use mode = \"append\"".into(),
                ));
            }
            if s.table_type == TableType::Events {
                let m = &s.mapping;
                if m.time_column.is_none() {
                    return Err(err(
                        key("mapping.time_column"),
                        "missing: events need the column holding the event time".into(),
                    ));
                }
                match (&m.event_name, &m.event_name_column) {
                    (None, None) => {
                        return Err(err(
                            key("mapping.event_name"),
                            "missing: set `event_name` (static) or `event_name_column`".into(),
                        ))
                    }
                    (Some(_), Some(_)) => {
                        return Err(err(
                            key("mapping.event_name"),
                            "set either `event_name` or `event_name_column`, not both".into(),
                        ))
                    }
                    _ => {}
                }
                if s.mode == SyncMode::Full {
                    return Err(err(
                        key("mode"),
                        "`full` is not for events (Mixpanel cannot upsert events); use `append` or `mirror`".into(),
                    ));
                }
            }
            let m = &s.mapping;
            match s.table_type {
                TableType::Users if m.user_id_column.is_none() => {
                    return Err(err(
                        key("mapping.user_id_column"),
                        "missing: user profiles need the column holding the distinct id".into(),
                    ))
                }
                TableType::Groups if m.group_key.is_none() => {
                    return Err(err(
                        key("mapping.group_key"),
                        "missing: group profiles need the group key (e.g. `company_id`)".into(),
                    ))
                }
                TableType::Groups if m.group_id_column.is_none() => {
                    return Err(err(
                        key("mapping.group_id_column"),
                        "missing: group profiles need the column holding the group id".into(),
                    ))
                }
                TableType::Events | TableType::Groups | TableType::Lookup
                    if m.history_start_column.is_some() =>
                {
                    return Err(err(
                        key("mapping.history_start_column"),
                        "only user profiles (table_type = \"users\") have a history variant".into(),
                    ))
                }
                TableType::Lookup if s.primary_key.len() != 1 => {
                    return Err(err(
                        key("primary_key"),
                        "lookup tables need exactly one key column, e.g. `primary_key = [\"id\"]`"
                            .into(),
                    ))
                }
                TableType::Users | TableType::Groups | TableType::Lookup
                    if s.mode == SyncMode::Append && s.mapping.insert_time_column.is_none() =>
                {
                    return Err(err(
                        key("mapping.insert_time_column"),
                        "missing: an append sync of profiles or a lookup table reads the rows past this column's watermark (or use mode = \"full\" or \"mirror\")"
                            .into(),
                    ))
                }
                _ => {}
            }
            if s.dedupe_by.is_some() && !s.diffs_snapshots() {
                return Err(err(
                    key("dedupe_by"),
                    "only full and mirror syncs (and one_time profiles) are keyed; remove it"
                        .into(),
                ));
            }
            if s.change_capture != ChangeCapture::Auto && s.mode != SyncMode::Mirror {
                return Err(err(
                    key("change_capture"),
                    "only mirror syncs capture changes; remove it or use `mode = \"mirror\"`"
                        .into(),
                ));
            }
            if s.change_capture == ChangeCapture::Logical
                && !matches!(
                    self.warehouses.get(&s.warehouse),
                    Some(
                        WarehouseConfig::Postgres(_)
                            | WarehouseConfig::Snowflake(_)
                            | WarehouseConfig::Databricks(_)
                            | WarehouseConfig::Bigquery(_)
                    )
                )
            {
                return Err(err(
                    key("change_capture"),
                    "`logical` needs a warehouse with a change stream (PostgreSQL, Snowflake, Databricks, BigQuery); use `auto` or `snapshot`".into(),
                ));
            }
            // Full and mirror syncs without a key use the table's declared primary key; one
            // that declares none is refused when the sync is resolved (`wharf check` says so).
            if matches!(s.table_type, TableType::Users | TableType::Groups)
                && s.key_columns().len() != 1
            {
                return Err(err(
                    key("primary_key"),
                    "profiles are keyed by their id column alone".into(),
                ));
            }
            for d in &s.destinations {
                if let Some(DestinationConfig::Kafka(k)) = self.destinations.get(d) {
                    if s.table_type == TableType::Lookup && k.payload == KafkaPayload::Mixpanel {
                        return Err(err(
                            format!("destinations.{d}.payload"),
                            format!("sync `{}` is a lookup table, whose Mixpanel payload is one CSV file, not records; use `payload = \"envelope\"`", s.name),
                        ));
                    }
                }
                let Some(DestinationConfig::Mixpanel(mp)) = self.destinations.get(d) else {
                    continue;
                };
                match s.table_type {
                    TableType::Users | TableType::Groups if mp.project_token.is_none() => {
                        return Err(err(
                            format!("destinations.{d}.project_token"),
                            format!("missing: sync `{}` sends profiles, and /engage and /groups identify the project by its token; set `project_token`", s.name),
                        ))
                    }
                    TableType::Lookup if mp.service_account.is_none() => {
                        return Err(err(
                            format!("destinations.{d}.service_account"),
                            format!("missing: sync `{}` replaces a lookup table, which needs a service account and `project_id`", s.name),
                        ))
                    }
                    TableType::Lookup if m.lookup_table_id.is_none() => {
                        return Err(err(
                            key("mapping.lookup_table_id"),
                            "missing: the id of the Mixpanel lookup table to replace".into(),
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// A sync by name.
    pub fn sync(&self, name: &str) -> Option<&SyncConfig> {
        self.syncs.iter().find(|s| s.name == name)
    }

    /// Resolves a path from the config against the config file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The state directory, resolved.
    pub fn state_dir(&self) -> PathBuf {
        self.resolve(&self.state_dir)
    }
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<_> = names.map(|n| format!("`{n}`")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[warehouses.w]
type = "duckdb"
path = "x.duckdb"
[destinations.f]
type = "file"
path = "-"
[[syncs]]
name = "s"
warehouse = "w"
table = "events"
table_type = "events"
mode = "append"
destinations = ["f"]
[syncs.mapping]
event_name = "E"
time_column = "ts"
"#;

    /// Without the `duckdb` feature (the fuzz targets' build), a DuckDB warehouse is a config
    /// error that says what is missing.
    #[cfg(not(feature = "duckdb"))]
    #[test]
    fn duckdb_warehouses_need_the_duckdb_feature() {
        let e = Config::parse(OK, "wharf.toml").unwrap_err();
        assert_eq!(e.key, "warehouses.w");
        assert!(e.message.contains("no DuckDB support"), "{}", e.message);
        assert!(e.message.contains("`duckdb` feature"), "{}", e.message);
    }

    #[test]
    fn parses_a_good_file() {
        let c = Config::parse(OK, "wharf.toml").unwrap();
        assert_eq!(c.syncs[0].mapping.time_column.as_deref(), Some("ts"));
        assert_eq!(c.syncs[0].schedule, "hourly", "the default schedule");
    }

    #[test]
    fn lookback_is_a_duration_of_append_syncs() {
        let with = |extra: &str| OK.replace("mode = \"append\"", extra);
        let c = Config::parse(&with("mode = \"append\"\nlookback = \"2h\""), "w.toml").unwrap();
        assert_eq!(c.syncs[0].lookback, Some(Span(Duration::from_secs(7200))));
        let e =
            Config::parse(&with("mode = \"append\"\nlookback = \"soon\""), "w.toml").unwrap_err();
        assert_eq!(e.key, "syncs[0].lookback", "{e}");
        let e = Config::parse(&with("mode = \"full\"\nlookback = \"2h\""), "w.toml").unwrap_err();
        assert_eq!(e.key, "syncs[0].lookback", "{e}");
        assert!(e.message.contains("only append syncs"), "{e}");
    }

    #[test]
    fn names_unknown_and_mistyped_keys() {
        let e = Config::parse(
            &OK.replace("table = \"events\"", "tabel = \"events\""),
            "w.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "syncs[0].tabel");
        assert!(e.message.contains("unknown field `tabel`"), "{e}");
        let e = Config::parse(&OK.replace("mode = \"append\"", "mode = 3"), "w.toml").unwrap_err();
        assert_eq!(e.key, "syncs[0].mode", "{e}");
        let e = Config::parse(&OK.replace("event_name = \"E\"", ""), "w.toml").unwrap_err();
        assert_eq!(e.key, "syncs[0].mapping.event_name", "{e}");
    }

    #[test]
    fn service_and_schedule_keys_are_checked() {
        let bad = |extra: &str| Config::parse(&format!("{extra}\n{OK}"), "w.toml").unwrap_err();
        let e = bad("[service]\nlisten = \"localhost\"");
        assert_eq!(e.key, "service.listen", "{e}");
        let e = bad("[service]\nretry_max = \"soon\"");
        assert_eq!(e.key, "service.retry_max", "{e}");
        let e = bad("[service]\nport = 1");
        assert!(e.message.contains("unknown field `port`"), "{e}");
        let e = bad("[alerts]\non_anomaly = \"panic\"");
        assert_eq!(e.key, "alerts.on_anomaly", "{e}");
        let e = bad("[alerts]\nvolume_window = 0");
        assert_eq!(e.key, "alerts.volume_window", "{e}");
        let e = Config::parse(
            &OK.replace(
                "mode = \"append\"",
                "mode = \"append\"\nschedule = \"every hour\"",
            ),
            "w.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "syncs[0].schedule", "{e}");
        assert!(e.message.contains("cron expression"), "{e}");
        let c = Config::parse(
            &OK.replace(
                "mode = \"append\"",
                "mode = \"append\"\nschedule = \"0 */6 * * *\"\njitter = \"1m\"",
            ),
            "w.toml",
        )
        .unwrap();
        assert_eq!(c.syncs[0].jitter, Some(Span(Duration::from_secs(60))));
        assert_eq!(c.service.listen, "127.0.0.1:8080");
        // The webhook URL is a secret.
        let c = Config::parse(
            &format!("[alerts]\nwebhook_url = \"https://hooks.example/T0KEN\"\n{OK}"),
            "w.toml",
        )
        .unwrap();
        assert!(!format!("{:?}", c.alerts).contains("T0KEN"));
    }

    #[test]
    fn expands_env_and_reports_unset_vars() {
        let text = OK.replace("path = \"-\"", "path = \"${WHARF_TEST_UNSET_VAR_X}\"");
        let e = Config::parse(&text, "w.toml").unwrap_err();
        assert_eq!(e.key, "destinations.f.path");
        assert!(e.message.contains("WHARF_TEST_UNSET_VAR_X"));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
    }
}
