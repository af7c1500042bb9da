//! Kafka's `[destinations.<name>]` table (`type = "kafka"`): its keys and their checks.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::invalid::Invalid;
use crate::duration::Span;
use crate::secret::Secret;

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

impl KafkaConfig {
    /// Refuses an empty broker list, impossible topic settings, and librdkafka properties
    /// that wharf sets itself.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.brokers.trim().is_empty() {
            return Err(Invalid::new(
                "brokers",
                "empty: name at least one broker, e.g. `127.0.0.1:9092`",
            ));
        }
        if self.partitions.is_some_and(|p| p < 1) {
            return Err(Invalid::new("partitions", "must be at least 1"));
        }
        if self.replication_factor.is_some_and(|p| p < 1) {
            return Err(Invalid::new("replication_factor", "must be at least 1"));
        }
        for reserved in RESERVED {
            if self.properties.contains_key(*reserved) {
                return Err(Invalid::new(
                    format!("properties.{reserved}"),
                    "set by wharf from the destination's own keys; remove it",
                ));
            }
        }
        Ok(())
    }
}

/// librdkafka settings wharf derives from the destination's own keys.
const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "transactional.id",
    "enable.idempotence",
    "compression.codec",
    "compression.type",
];

/// The console's form of a Kafka destination.
pub const FIELDS: &[crate::config::fields::Field] = {
    use crate::config::fields::Field;
    &[
        Field::text("brokers", "Brokers", "host:port, comma-separated"),
        Field::text("topic", "Topic", "default wharf.{sync}").optional(),
        Field::text("exactly_once", "Exactly once", "Kafka transactions")
            .optional()
            .boolean(),
    ]
};
