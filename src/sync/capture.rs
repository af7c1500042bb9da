//! How a run learns what to send: an append cursor, a snapshot diff or a change stream.

use super::error::SyncError;
use super::resolve::ResolvedSync;
use crate::config::{ChangeCapture, SyncMode};
use crate::state::StateStore;
use crate::warehouse::{ChangeSource, StreamStart};

/// How a run learns what to send.
pub(super) enum CaptureMode<'a> {
    /// Append, full, or mirror by snapshot diff.
    Snapshot,
    /// Mirror through the warehouse's change stream (PostgreSQL's logical decoding, a SQL
    /// change function): the first run (`start.snapshot_first`) diffs a snapshot and commits
    /// `start.position`; later runs read the changes after the committed position.
    Stream {
        source: Box<dyn ChangeSource + 'a>,
        start: StreamStart,
    },
}

impl CaptureMode<'_> {
    /// The change stream a later run reads (not the first run's snapshot).
    pub(super) fn streamed(&self) -> Option<&dyn ChangeSource> {
        match self {
            CaptureMode::Stream { source, start } if !start.snapshot_first => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Decides whether a mirror sync reads the warehouse's change stream, preparing what the
/// stream keeps for the sync (PostgreSQL: its slot and publication) when it does.
pub(super) fn capture_mode<'a>(
    resolved: &'a ResolvedSync,
    store: &StateStore,
) -> Result<CaptureMode<'a>, SyncError> {
    let sync = &resolved.sync;
    if sync.mode != SyncMode::Mirror || sync.change_capture == ChangeCapture::Snapshot {
        return Ok(CaptureMode::Snapshot);
    }
    let werr = |e| SyncError::Warehouse(sync.name.clone(), e);
    let unavailable =
        match resolved
            .warehouse
            .change_source(&sync.name, &resolved.source, &sync.key_columns())
        {
            Some(source) => match source.open(store.watermark(&sync.name)?).map_err(werr)? {
                Ok(start) => return Ok(CaptureMode::Stream { source, start }),
                Err(reason) => reason,
            },
            None => format!(
                "{} has no change stream wharf reads",
                resolved.warehouse_type
            ),
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
