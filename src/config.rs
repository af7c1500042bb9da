//! `wharf.toml`: named warehouses and destinations, and the syncs between them.
//!
//! Loading is strict: unknown keys, missing keys and wrong types are errors that name the
//! file, the key path (`syncs[0].mapping.time_column`) and what is expected. Strings may
//! contain `${ENV_VAR}`, expanded at load time; an unset variable is an error naming the key
//! and the variable (never a value). Secrets are held in [`Secret`], which never prints.
//!
//! This file holds the top level; each connector's table and its checks sit beside the
//! connector (`warehouse/<kind>/config.rs`, `destination/<kind>/config.rs`), and a sync's
//! own in [`syncs`].

pub mod edit;
pub mod fields;
pub mod invalid;
pub mod secrets;
mod syncs;
pub(crate) mod tagged;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::destination::kafka::config::{KafkaConfig, KafkaPayload};
use crate::destination::mixpanel::config::MixpanelConfig;
use crate::duration::Span;
pub use crate::secret::Secret;
pub use crate::warehouse::registry::WarehouseConfig;
use invalid::Invalid;
pub use secrets::Secrets;
pub use syncs::{ChangeCapture, MappingConfig, SyncConfig, SyncMode, TableType, TimeUnitConfig};
use tagged::{tagged, tagged_fields, INNER_PATH};

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

/// Expands `${VAR}` in every string of `value` (the environment first, then the secrets
/// file); `path` locates errors.
fn expand_env(
    value: &mut toml::Value,
    path: &str,
    file: &str,
    secrets: &Secrets,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) if s.contains("${") => {
            *s = expand_str(s, secrets).map_err(|var| ConfigError {
                file: file.into(),
                key: path.into(),
                message: format!(
                    "environment variable `{var}` is not set (referenced as ${{{var}}}); set it, write the value, or store it in the secrets file beside the config"
                ),
            })?;
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                expand_env(v, &format!("{path}[{i}]"), file, secrets)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                expand_env(v, &p, file, secrets)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(s: &str, secrets: &Secrets) -> Result<String, String> {
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
            Err(_) => match secrets.get(var) {
                Some(v) => out.push_str(v),
                None => return Err(var.to_string()),
            },
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
        let mut config = Config::parse_with(&text, &file, &secrets::load(path)?)?;
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
        Config::parse_with(text, file, &Secrets::default())
    }

    /// [`Config::parse`], with `secrets` for the `${NAME}`s the environment does not set.
    pub fn parse_with(text: &str, file: &str, secrets: &Secrets) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            file: file.into(),
            key: "(syntax)".into(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let mut value = toml::Value::Table(table);
        expand_env(&mut value, "", file, secrets)?;
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
        let within = |table: String| {
            move |e: Invalid| {
                let key = if e.key.is_empty() {
                    table.clone()
                } else {
                    format!("{table}.{}", e.key)
                };
                err(key, e.message)
            }
        };
        for (name, w) in &self.warehouses {
            w.validate().map_err(within(format!("warehouses.{name}")))?;
        }
        for (name, d) in &self.destinations {
            match d {
                DestinationConfig::Mixpanel(m) => m.validate(),
                DestinationConfig::Kafka(k) => k.validate(),
                DestinationConfig::File { .. } => Ok(()),
            }
            .map_err(within(format!("destinations.{name}")))?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.syncs.iter().enumerate() {
            let key = |k: &str| format!("syncs[{i}].{k}");
            s.validate().map_err(within(format!("syncs[{i}]")))?;
            if !names.insert(&s.name) {
                return Err(err(key("name"), format!("`{}` is used twice", s.name)));
            }
            self.validate_references(s, &key)
                .map_err(|(k, message)| err(k, message))?;
        }
        Ok(())
    }

    /// The checks of sync `s` that name warehouses and destinations (`key` locates them).
    fn validate_references(
        &self,
        s: &SyncConfig,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(), (String, String)> {
        if !self.warehouses.contains_key(&s.warehouse) {
            return Err((
                key("warehouse"),
                format!(
                    "no warehouse named `{}`; defined: {}",
                    s.warehouse,
                    list(self.warehouses.keys())
                ),
            ));
        }
        for d in &s.destinations {
            if !self.destinations.contains_key(d) {
                return Err((
                    key("destinations"),
                    format!(
                        "no destination named `{d}`; defined: {}",
                        list(self.destinations.keys())
                    ),
                ));
            }
        }
        if s.change_capture == ChangeCapture::Logical
            && self
                .warehouses
                .get(&s.warehouse)
                .is_some_and(|w| !w.has_change_stream())
        {
            return Err((
                key("change_capture"),
                "`logical` needs a warehouse with a change stream (PostgreSQL, Snowflake, Databricks, BigQuery); use `auto` or `snapshot`".into(),
            ));
        }
        for d in &s.destinations {
            let (k, message) = match self.destinations.get(d) {
                Some(DestinationConfig::Kafka(k))
                    if s.table_type == TableType::Lookup && k.payload == KafkaPayload::Mixpanel =>
                {
                    (
                        format!("destinations.{d}.payload"),
                        format!("sync `{}` is a lookup table, whose Mixpanel payload is one CSV file, not records; use `payload = \"envelope\"`", s.name),
                    )
                }
                Some(DestinationConfig::Mixpanel(mp)) => match s.table_type {
                    TableType::Users | TableType::Groups if mp.project_token.is_none() => (
                        format!("destinations.{d}.project_token"),
                        format!("missing: sync `{}` sends profiles, and /engage and /groups identify the project by its token; set `project_token`", s.name),
                    ),
                    TableType::Lookup if mp.service_account.is_none() => (
                        format!("destinations.{d}.service_account"),
                        format!("missing: sync `{}` replaces a lookup table, which needs a service account and `project_id`", s.name),
                    ),
                    TableType::Lookup if s.mapping.lookup_table_id.is_none() => (
                        key("mapping.lookup_table_id"),
                        "missing: the id of the Mixpanel lookup table to replace".into(),
                    ),
                    _ => continue,
                },
                _ => continue,
            };
            return Err((k, message));
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
