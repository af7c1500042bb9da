//! PostgreSQL's logical decoding as a [`ChangeSource`]: a sync's slot and publication
//! ([`Capture`]), its first snapshot read with the transactions it saw, polls peeked from the
//! slot, and the slot moved only once a run committed.

use wharf_operators::watermark::Watermark;

use super::logical::Capture;
use super::visibility::SnapshotVisibility;
use super::{Flavor, PostgresWarehouse};
use crate::warehouse::change_source::{ChangePoll, ChangeSource, StreamStart};
use crate::warehouse::{EachBatch, SourceRef, WarehouseError};

/// A sync's change stream on PostgreSQL (`capture`: none for a query, which has none).
pub(super) struct SlotStream<'a> {
    pub(super) pg: &'a PostgresWarehouse,
    pub(super) capture: Option<Capture>,
    pub(super) key: Vec<String>,
}

impl SlotStream<'_> {
    /// The sync's slot and publication, or the error of a stream a query cannot have.
    fn capture(&self) -> Result<&Capture, WarehouseError> {
        self.capture.as_ref().ok_or_else(|| WarehouseError::Query {
            source_ref: SourceRef::Query(String::new()),
            message: NO_TABLE.into(),
            transient: false,
        })
    }
}

/// Why a sync of a query has no change stream.
const NO_TABLE: &str =
    "a query (or a history table's latest rows) has no change stream; name a table";

/// A stream position that must be an LSN.
fn lsn(position: Watermark) -> Result<u64, WarehouseError> {
    position.position().ok_or_else(|| WarehouseError::Query {
        source_ref: SourceRef::Query(String::new()),
        message: format!("{position:?} is not a position of a replication slot"),
        transient: false,
    })
}

impl ChangeSource for SlotStream<'_> {
    fn open(
        &self,
        committed: Option<Watermark>,
    ) -> Result<Result<StreamStart, String>, WarehouseError> {
        let Some(capture) = &self.capture else {
            return Ok(Err(NO_TABLE.into()));
        };
        if let Some(reason) = self.pg.capture_unavailable(capture, &self.key)? {
            return Ok(Err(reason));
        }
        let start = self.pg.start_capture(capture)?;
        Ok(Ok(StreamStart {
            // A slot created now (also after a reset) starts with a snapshot.
            snapshot_first: start.created || committed.is_none(),
            position: Watermark::from_position(start.lsn),
        }))
    }

    fn read_first_snapshot(
        &self,
        each: EachBatch<'_>,
    ) -> Result<Option<SnapshotVisibility>, WarehouseError> {
        let src = SourceRef::Table(self.capture()?.table.clone());
        self.pg.read_snapshot_seen(&src, each).map(Some)
    }

    fn poll(
        &self,
        _from: Watermark,
        upto: Option<Watermark>,
        max_changes: usize,
        seen: Option<&SnapshotVisibility>,
    ) -> Result<ChangePoll, WarehouseError> {
        // The slot holds the sync's position: a poll starts where it was last confirmed.
        let upto = upto.map(lsn).transpose()?;
        self.pg
            .poll_capture(self.capture()?, &self.key, max_changes, upto, seen)
    }

    fn position(&self) -> Result<Watermark, WarehouseError> {
        self.pg
            .current_lsn(self.capture()?)
            .map(Watermark::from_position)
    }

    fn pending(&self) -> Result<bool, WarehouseError> {
        self.pg.capture_pending(self.capture()?)
    }

    fn keeps_position(&self) -> bool {
        true
    }

    fn confirm(&self, position: Watermark) -> Result<(), WarehouseError> {
        self.pg.confirm_capture(self.capture()?, lsn(position)?)
    }

    fn exists(&self) -> Result<bool, WarehouseError> {
        match &self.capture {
            Some(capture) => self.pg.capture_exists(capture),
            None => Ok(false),
        }
    }

    fn remove(&self) -> Result<Option<String>, WarehouseError> {
        let Some(capture) = &self.capture else {
            return Ok(None);
        };
        if !self.pg.capture_exists(capture)? {
            return Ok(None);
        }
        self.pg.drop_capture(capture)?;
        Ok(Some("the replication slot and publication".into()))
    }
}

impl PostgresWarehouse {
    /// What `wharf check` says of mirror syncs on this server.
    pub(super) fn capture_note(&self) -> String {
        if self.settings().flavor != Flavor::Postgres {
            return String::new();
        }
        match self.wal_level() {
            Ok(level) if level == "logical" => {
                " (wal_level = logical: mirror syncs use change capture)".to_string()
            }
            Ok(level) => format!(
                " (wal_level = {level}: mirror syncs diff snapshots; for change capture \
                 run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL)"
            ),
            Err(_) => String::new(),
        }
    }
}
