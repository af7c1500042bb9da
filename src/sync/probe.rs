//! The check a continuous sync makes before each run: one cheap statement that says whether
//! anything is new, so an idle poll costs the warehouse one query and records no run.
//!
//! - Append: `count(*)` of the rows past the read position (the watermark, less a look-back
//!   window). Idle when it is 0, or when neither it nor the read position changed since the
//!   last run started (a window is then re-read only when something in it changed, plus once
//!   after each run moved the watermark).
//! - A change stream: its own cheap check ([`ChangeSource::pending`]; PostgreSQL: whether the
//!   slot holds a change of the table).
//!
//! A probe is built from the last run's resolved sync and kept in its [`super::Session`]; a
//! probe that fails says "not idle", so the full run reports the error.

use std::sync::Arc;
use std::time::Duration;

use wharf_operators::arrow::datatypes::DataType;
use wharf_operators::watermark::Watermark;

use crate::state::StateStore;
#[cfg(doc)]
use crate::warehouse::ChangeSource;
use crate::warehouse::{SourceRef, Warehouse};

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probed {
    /// Nothing new: skip the run.
    Idle,
    /// Run; for an append sync, the rows the run will read (its count is the probe's).
    Busy(Option<u64>),
}

/// A sync's probe.
pub(super) enum Probe {
    Append(Box<AppendProbe>),
    Stream(Box<StreamProbe>),
}

/// A change-captured sync's probe: its stream is made again for each look (nothing is
/// reached until it is used).
pub(super) struct StreamProbe {
    warehouse: Arc<dyn Warehouse>,
    sync: String,
    source: SourceRef,
    key: Vec<String>,
}

/// An append sync's probe.
pub(super) struct AppendProbe {
    warehouse: Arc<dyn Warehouse>,
    source: SourceRef,
    cursor: (String, DataType),
    lookback: Option<Duration>,
    /// The read position and count the last run started from.
    last: Option<(Option<Watermark>, u64)>,
}

impl Probe {
    /// An append sync's probe.
    pub(super) fn append(
        warehouse: Arc<dyn Warehouse>,
        source: SourceRef,
        cursor: (String, DataType),
        lookback: Option<Duration>,
    ) -> Probe {
        Probe::Append(Box::new(AppendProbe {
            warehouse,
            source,
            cursor,
            lookback,
            last: None,
        }))
    }

    /// A change-captured sync's probe.
    pub(super) fn stream(
        warehouse: Arc<dyn Warehouse>,
        sync: &str,
        source: SourceRef,
        key: Vec<String>,
    ) -> Probe {
        Probe::Stream(Box::new(StreamProbe {
            warehouse,
            sync: sync.to_string(),
            source,
            key,
        }))
    }

    /// Looks; `store` holds the committed watermark of sync `name`.
    pub(super) fn look(&mut self, store: &StateStore, name: &str) -> Probed {
        match self {
            Probe::Append(p) => {
                let Ok(after) = store.watermark(name) else {
                    return Probed::Busy(None);
                };
                let from = read_position(after, p.lookback);
                match p
                    .warehouse
                    .count_after(&p.source, &p.cursor.0, &p.cursor.1, from)
                {
                    Ok(0) => Probed::Idle,
                    Ok(n) if p.last == Some((from, n)) => Probed::Idle,
                    Ok(n) => {
                        p.last = Some((from, n));
                        Probed::Busy(Some(n))
                    }
                    Err(e) => {
                        tracing::debug!(sync = name, error = %e, "probe failed; running");
                        Probed::Busy(None)
                    }
                }
            }
            Probe::Stream(p) => match p
                .warehouse
                .change_source(&p.sync, &p.source, &p.key)
                .map_or(Ok(true), |s| s.pending())
            {
                Ok(false) => Probed::Idle,
                Ok(true) => Probed::Busy(None),
                Err(e) => {
                    tracing::debug!(sync = name, error = %e, "probe failed; running");
                    Probed::Busy(None)
                }
            },
        }
    }
}

/// Where an append run starts reading: the watermark, less the look-back window.
pub(super) fn read_position(
    after: Option<Watermark>,
    lookback: Option<Duration>,
) -> Option<Watermark> {
    match (after, lookback) {
        // Integer cursors have no unit to look back by (refused when the sync resolves).
        (Some(w), Some(window)) => Some(w.earlier_by(window).unwrap_or(w)),
        _ => after,
    }
}
