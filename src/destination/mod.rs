//! Destinations: where a sync's records go. Each implements
//! [`wharf_pipelines::destination::Destination`], and each kind builds and checks itself from
//! its config ([`DestinationConfig::build`], [`DestinationConfig::check`]) with its request
//! limits and retry policy beside it: adding a kind touches its own folder and the one `match`
//! of each method here.

pub mod file;
pub mod gzip;
pub mod kafka;
pub mod mixpanel;

use std::sync::Arc;

use wharf_operators::arrow::datatypes::Schema;
use wharf_operators::columns::MappingError;
use wharf_operators::dataflow::BatchLimits;
use wharf_pipelines::delivery::RetryPolicy;
use wharf_pipelines::destination::{Destination, DestinationError};

use crate::config::{Config, DestinationConfig, SyncConfig, TableType};
use crate::secret::Secret;

/// A destination ready for a run.
pub struct BuiltDestination {
    /// Its name in the config.
    pub name: String,
    /// The destination.
    pub destination: Arc<dyn Destination>,
    /// Its retry and concurrency policy.
    pub policy: RetryPolicy,
    /// Its request limits.
    pub limits: BatchLimits,
    /// It takes change envelopes rather than bare payloads.
    pub envelope: bool,
}

/// What building a destination for one sync needs.
pub struct BuildContext<'a> {
    /// The whole config (paths are relative to its file).
    pub config: &'a Config,
    /// The sync that writes to the destination.
    pub sync: &'a SyncConfig,
    /// The table's Arrow schema.
    pub schema: &'a Schema,
    /// The sync diffs snapshots or reads a change stream (its records are changes).
    pub changes: bool,
    /// The runtime a destination that connects (Kafka) connects on.
    pub runtime: &'a tokio::runtime::Handle,
}

/// Why a destination could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The destination refused or could not be reached.
    #[error(transparent)]
    Destination(#[from] DestinationError),
    /// The table does not fit what the destination needs (a lookup table's key column).
    #[error(transparent)]
    Mapping(#[from] MappingError),
}

impl DestinationConfig {
    /// Builds the destination `name` for `ctx`'s sync, connecting where it needs to.
    pub fn build(&self, name: &str, ctx: &BuildContext) -> Result<BuiltDestination, BuildError> {
        match self {
            DestinationConfig::Mixpanel(m) => mixpanel::build(m, name, ctx),
            DestinationConfig::File { path } => Ok(file::build(path, name, ctx)?),
            DestinationConfig::Kafka(k) => Ok(kafka::build(k, name, ctx)?),
        }
    }

    /// Checks that the destination can be reached with its credentials (for `wharf check`):
    /// a detail to print, or why not. Blocks for a few seconds at most.
    pub fn check(&self, runtime: &tokio::runtime::Runtime) -> Result<String, DestinationError> {
        match self {
            DestinationConfig::Mixpanel(m) => mixpanel::check(m, runtime),
            DestinationConfig::File { path } => Ok(format!(" (writes {path})")),
            DestinationConfig::Kafka(k) => {
                kafka::check_brokers(&k.brokers, &k.exposed_properties())
            }
        }
    }

    /// The Mixpanel project token that events carry, if the destination has one.
    pub fn project_token(&self) -> Option<&Secret> {
        match self {
            DestinationConfig::Mixpanel(m) => m.project_token.as_ref(),
            DestinationConfig::Kafka(k) => k.project_token.as_ref(),
            DestinationConfig::File { .. } => None,
        }
    }

    /// Whether it gets a keyed sync's rows as change envelopes (a file; Kafka unless it sends
    /// Mixpanel's payloads) rather than Mixpanel's record shapes.
    pub fn takes_rows(&self) -> bool {
        match self {
            DestinationConfig::Mixpanel(_) => false,
            DestinationConfig::Kafka(k) => k.payload == kafka::KafkaPayload::Envelope,
            DestinationConfig::File { .. } => true,
        }
    }
}

/// `template` with `{sync}`, `{table}` and `{table_type}` filled in for `sync`.
pub fn fill_template(template: &str, sync: &SyncConfig) -> String {
    template
        .replace("{sync}", &sync.name)
        .replace("{table}", sync.table.as_deref().unwrap_or("query"))
        .replace("{table_type}", table_type_name(sync.table_type))
}

/// `events`, `users`, `groups` or `lookup`.
pub fn table_type_name(t: TableType) -> &'static str {
    match t {
        TableType::Events => "events",
        TableType::Users => "users",
        TableType::Groups => "groups",
        TableType::Lookup => "lookup",
    }
}

/// Every destination kind with the console's form for it.
pub fn kinds() -> Vec<crate::config::fields::Kind> {
    use crate::config::fields::{Field, Kind};
    const FILE: &[Field] = &[Field::text(
        "path",
        "File",
        "NDJSON, relative to the config file",
    )];
    vec![
        Kind {
            kind: "mixpanel",
            label: "Mixpanel",
            fields: mixpanel::config::FIELDS,
        },
        Kind {
            kind: "kafka",
            label: "Kafka",
            fields: kafka::config::FIELDS,
        },
        Kind {
            kind: "file",
            label: "NDJSON file",
            fields: FILE,
        },
    ]
}
