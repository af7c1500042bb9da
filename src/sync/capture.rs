//! How a run learns what to send: an append cursor, a snapshot diff or a change stream.

use wharf_operators::watermark::Watermark;

use super::error::SyncError;
use super::resolve::ResolvedSync;
use crate::config::{ChangeCapture, SyncMode};
use crate::state::StateStore;
use crate::warehouse::postgres::logical::Capture;
use crate::warehouse::postgres::PostgresWarehouse;
use crate::warehouse::SourceRef;

/// How a run learns what to send.
pub(super) enum CaptureMode {
    /// Append, full, or mirror by snapshot diff.
    Snapshot,
    /// Mirror through logical decoding: the first run (`initial` = the slot's position) diffs
    /// a snapshot, later runs read the slot.
    Logical {
        pg: PostgresWarehouse,
        capture: Capture,
        initial: Option<u64>,
    },
    /// Mirror through a warehouse's change function (Snowflake `CHANGES`, Databricks'
    /// Change Data Feed, BigQuery `CHANGES`): the first run (`from` = none) diffs a snapshot
    /// and commits `to`, the position read before the snapshot; later runs read the changes
    /// after the committed position up to `to` and commit `to`.
    Function {
        from: Option<Watermark>,
        to: Watermark,
    },
}

/// Decides whether a mirror sync reads the warehouse's change stream, creating its slot and
/// publication when it does.
pub(super) fn capture_mode(
    resolved: &ResolvedSync,
    store: &StateStore,
) -> Result<CaptureMode, SyncError> {
    let sync = &resolved.sync;
    if sync.mode != SyncMode::Mirror || sync.change_capture == ChangeCapture::Snapshot {
        return Ok(CaptureMode::Snapshot);
    }
    let werr = |e| SyncError::Warehouse(sync.name.clone(), e);
    let warehouse = &resolved.warehouse;
    let unavailable = match (warehouse.logical_decoding(), &resolved.source) {
        (Some(pg), SourceRef::Table(table)) => {
            let capture = Capture::for_sync(&sync.name, table);
            match pg
                .capture_unavailable(&capture, &sync.key_columns())
                .map_err(werr)?
            {
                None => {
                    let start = pg.start_capture(&capture).map_err(werr)?;
                    let committed = store.watermark(&sync.name)?;
                    let initial = (start.created || committed.is_none()).then_some(start.lsn);
                    return Ok(CaptureMode::Logical {
                        pg: pg.clone(),
                        capture,
                        initial,
                    });
                }
                Some(reason) => reason,
            }
        }
        (Some(_), SourceRef::Query(_)) => {
            "a query (or a history table's latest rows) has no change stream; name a table".into()
        }
        (None, src) => match warehouse.change_function() {
            Some(changes) => {
                let from = store.watermark(&sync.name)?;
                // A committed position means the function was read before; otherwise probe it.
                let start = match from {
                    Some(_) => Ok(changes.change_position(src).map_err(werr)?),
                    None => changes.change_start(src).map_err(werr)?,
                };
                match start {
                    Ok(to) => return Ok(CaptureMode::Function { from, to }),
                    Err(reason) => reason,
                }
            }
            None => format!(
                "{} has no change stream wharf reads",
                resolved.warehouse_type
            ),
        },
    };
    if sync.change_capture == ChangeCapture::Logical {
        return Err(SyncError::Unsupported {
            sync: sync.name.clone(),
            what: format!("change capture here: {unavailable}"),
        });
    }
    tracing::warn!(sync = %sync.name, reason = %unavailable, "mirror falls back to snapshot diffs");
    Ok(CaptureMode::Snapshot)
}

/// Changes read from a change stream per run, at most (rounded up to whole transactions).
pub const MAX_CHANGES_PER_POLL: usize = 100_000;
