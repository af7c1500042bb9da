//! Mixpanel destinations (the Mixpanel-compatible receiver that tests them is `crate::receiver`,
//! independent of this code).
//!
//! - [`import`]: events to `/import`.
//! - [`engage`]: user profiles to `/engage`, group profiles to `/groups`.
//! - [`lookup`]: lookup tables, replaced whole by `PUT /lookup-tables/{id}`.
//! - [`client`]: the HTTP pieces they share (host, auth header, answer classification).
pub mod client;
pub mod config;
pub mod engage;
pub mod import;
pub mod lookup;

use std::sync::Arc;
use std::time::Duration;

use wharf_operators::dataflow::BatchLimits;
use wharf_operators::mixpanel::changes::LookupRows;
use wharf_pipelines::delivery::RetryPolicy;
use wharf_pipelines::destination::{Destination, DestinationError};
use wharf_pipelines::governor::RateCap;

use super::{BuildContext, BuildError, BuiltDestination};
use crate::config::TableType;
use crate::duration::Span;
pub use config::{MixpanelConfig, Region, ServiceAccount};
use engage::{MixpanelProfiles, ProfileEndpoint, ENGAGE_LIMITS, GROUPS_LIMITS};
use import::{MixpanelImport, IMPORT_LIMITS};
use lookup::MixpanelLookupTable;

/// Builds the Mixpanel destination `name` for `ctx`'s sync: the endpoint its table type
/// takes (`/import`, `/engage`, `/groups`, a lookup table) with that endpoint's request
/// limits; retries back off as configured, and Mixpanel's own hosts are held below their
/// 2 GB/min limit.
pub fn build(
    m: &MixpanelConfig,
    name: &str,
    ctx: &BuildContext,
) -> Result<BuiltDestination, BuildError> {
    let sync = ctx.sync;
    let d = |v: Option<Span>, default: Duration| v.map_or(default, Span::get);
    let defaults = RetryPolicy::default();
    let policy = RetryPolicy {
        initial_backoff: d(m.initial_backoff, defaults.initial_backoff),
        max_backoff: d(m.max_backoff, defaults.max_backoff),
        max_jitter: defaults
            .max_jitter
            .min(d(m.initial_backoff, defaults.max_jitter)),
        give_up_after: d(m.give_up_after, defaults.give_up_after),
        concurrency: m.concurrency.unwrap_or(defaults.concurrency).max(1),
        rate: RateCap {
            records_per_second: m.max_records_per_second.filter(|r| *r > 0.0),
            // Mixpanel's own hosts get a default below their 2 GB/min limit; a custom
            // api_host (the local receiver, a proxy) is capped only when configured.
            bytes_per_minute: m
                .max_mb_per_minute
                .or(m.api_host.is_none().then_some(1500.0))
                .map(|mb| mb * 1e6)
                .filter(|b| *b > 0.0),
        },
    };
    let timeout = d(m.timeout, Duration::from_secs(120));
    let (destination, limits): (Arc<dyn Destination>, BatchLimits) = match sync.table_type {
        TableType::Events => (Arc::new(MixpanelImport::new(m, timeout)?), IMPORT_LIMITS),
        TableType::Users => (
            Arc::new(MixpanelProfiles::new(m, ProfileEndpoint::Users, timeout)?),
            ENGAGE_LIMITS,
        ),
        TableType::Groups => (
            Arc::new(MixpanelProfiles::new(m, ProfileEndpoint::Groups, timeout)?),
            BatchLimits {
                max_records: m
                    .groups_batch_size
                    .unwrap_or(GROUPS_LIMITS.max_records)
                    .clamp(1, 2000),
                ..GROUPS_LIMITS
            },
        ),
        TableType::Lookup => {
            let key = sync.key_columns().first().cloned().unwrap_or_default();
            let rows = LookupRows::new(ctx.schema, &key, &sync.mapping.exclude_columns)?;
            let id = sync.mapping.lookup_table_id.clone().unwrap_or_default();
            (
                Arc::new(MixpanelLookupTable::new(m, &id, rows.header(), timeout)?),
                BatchLimits {
                    max_records: 8192,
                    max_bytes: 8 << 20,
                },
            )
        }
    };
    Ok(BuiltDestination {
        name: name.to_string(),
        destination,
        policy,
        limits,
        envelope: false,
    })
}

/// Sends an empty `/import` request with the project's credentials (for `wharf check`):
/// `" (gzip: …)"`, or why Mixpanel refused.
pub fn check(
    m: &MixpanelConfig,
    runtime: &tokio::runtime::Runtime,
) -> Result<String, DestinationError> {
    let client = MixpanelImport::new(m, Duration::from_secs(15))?;
    runtime.block_on(client.check())?;
    Ok(format!(" (gzip: {})", super::gzip::backend().describe()))
}
