//! [`ChangeSource`]: the one way in to a table's change stream, whichever kind the warehouse
//! keeps: PostgreSQL's logical decoding (a replication slot and a publication per sync,
//! `postgres/stream.rs`) or a SQL change function (Snowflake `CHANGES`, Databricks' Change
//! Data Feed, BigQuery `CHANGES`: [`FunctionStream`] over any [`ChangeFunction`]).
//!
//! A mirror sync opens the stream with its committed position ([`ChangeSource::open`]): its
//! first run diffs a snapshot (read by [`ChangeSource::read_first_snapshot`], so the stream's
//! later changes apply after it) and commits the position the stream had before it; each later
//! run polls the changes after the committed position and commits where they end. A stream
//! that keeps the sync's position itself (a slot) is told once a run committed
//! ([`ChangeSource::confirm`]), and only then lets go of what the run read.

use wharf_operators::arrow::array::RecordBatch;
use wharf_operators::watermark::Watermark;

use super::changes::Compacted;
use super::postgres::visibility::SnapshotVisibility;
use super::{EachBatch, SourceRef, Warehouse, WarehouseError};

/// Where a sync's change stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    /// The sync has no position in the stream yet: this run diffs a snapshot and commits
    /// `position`.
    pub snapshot_first: bool,
    /// Where the stream stands for the sync: its committed position, or (with
    /// `snapshot_first`) the position taken before the snapshot.
    pub position: Watermark,
}

/// One poll's changes.
#[derive(Debug, Clone, Default)]
pub struct ChangePoll {
    /// The changes, compacted per key, as batches with the table's columns and
    /// [`super::changes::OP_COLUMN`] last.
    pub batches: Vec<RecordBatch>,
    /// Changes read (before compaction).
    pub changes_read: usize,
    /// Where the stream stands after these changes: the position the run commits (and
    /// confirms to a stream that keeps it). `None` when the poll read nothing that moves it.
    pub end: Option<Watermark>,
    /// Changes skipped because the sync's first snapshot already held them.
    pub changes_skipped: usize,
    /// The poll stopped at its change limit: more changes may be waiting.
    pub capped: bool,
}

impl From<Compacted> for ChangePoll {
    fn from(c: Compacted) -> Self {
        ChangePoll {
            batches: c.batches,
            changes_read: c.changes_read,
            ..ChangePoll::default()
        }
    }
}

/// A table's change stream as one sync reads it. Made by [`Warehouse::change_source`].
pub trait ChangeSource {
    /// Opens the stream for a sync whose committed position is `committed`, preparing what
    /// the stream keeps for it (a slot); `Ok(Err(reason))` when it cannot be read (the sync
    /// then diffs snapshots, or fails when it asked for change capture).
    fn open(
        &self,
        committed: Option<Watermark>,
    ) -> Result<Result<StreamStart, String>, WarehouseError>;

    /// Reads the sync's first snapshot so that the stream's later changes apply after it;
    /// says which transactions it saw where the stream needs that to skip them.
    fn read_first_snapshot(
        &self,
        each: EachBatch<'_>,
    ) -> Result<Option<SnapshotVisibility>, WarehouseError>;

    /// Reads (without consuming) the changes after `from` up to `upto` (`None`: up to now),
    /// about `max_changes` at most; `seen` is what the first snapshot saw.
    fn poll(
        &self,
        from: Watermark,
        upto: Option<Watermark>,
        max_changes: usize,
        seen: Option<&SnapshotVisibility>,
    ) -> Result<ChangePoll, WarehouseError>;

    /// The stream's position now (how far a backlog reaches).
    fn position(&self) -> Result<Watermark, WarehouseError>;

    /// Whether something may be waiting: one cheap statement before a continuous poll
    /// (`true` where the stream has none).
    fn pending(&self) -> Result<bool, WarehouseError> {
        Ok(true)
    }

    /// Whether the stream keeps the sync's position itself (a slot), to be told with
    /// [`ChangeSource::confirm`] once a run committed.
    fn keeps_position(&self) -> bool {
        false
    }

    /// Lets the stream release the changes before `position`: a committed run delivered them.
    fn confirm(&self, _position: Watermark) -> Result<(), WarehouseError> {
        Ok(())
    }

    /// Whether the stream holds anything for the sync (its slot exists).
    fn exists(&self) -> Result<bool, WarehouseError> {
        Ok(true)
    }

    /// Removes what the stream keeps for the sync (`wharf reset`), saying what it removed.
    fn remove(&self) -> Result<Option<String>, WarehouseError> {
        Ok(None)
    }
}

/// A warehouse's change output read by a SQL change function: stateless windows between two
/// positions of the table (a time or a table version).
pub trait ChangeFunction {
    /// The current position of the change output of `src` when it can be read (probed), else
    /// why not (a table without change tracking, a query, an emulator without the function).
    fn change_start(&self, src: &SourceRef) -> Result<Result<Watermark, String>, WarehouseError>;

    /// The current position of the change output of `src`.
    fn change_position(&self, src: &SourceRef) -> Result<Watermark, WarehouseError>;

    /// The changes of the window, compacted by its key.
    fn read_changes(&self, window: &ChangeWindow<'_>) -> Result<Compacted, WarehouseError>;
}

/// What [`ChangeFunction::read_changes`] reads: the changes of `src` after `from` up to `to`,
/// to be compacted by `key`.
#[derive(Debug, Clone, Copy)]
pub struct ChangeWindow<'a> {
    /// The table.
    pub src: &'a SourceRef,
    /// The sync's key columns.
    pub key: &'a [String],
    /// The position already read.
    pub from: Watermark,
    /// The position to read up to.
    pub to: Watermark,
}

/// The [`ChangeSource`] of a SQL change function: nothing is kept per sync, the committed
/// position is the start of the next window.
pub struct FunctionStream<'a> {
    warehouse: &'a dyn Warehouse,
    changes: &'a dyn ChangeFunction,
    src: SourceRef,
    key: Vec<String>,
}

impl<'a> FunctionStream<'a> {
    /// The change output of `src` (keyed by `key`) in `warehouse`, read through `changes`.
    pub fn new(
        warehouse: &'a dyn Warehouse,
        changes: &'a dyn ChangeFunction,
        src: &SourceRef,
        key: &[String],
    ) -> Self {
        FunctionStream {
            warehouse,
            changes,
            src: src.clone(),
            key: key.to_vec(),
        }
    }
}

impl ChangeSource for FunctionStream<'_> {
    fn open(
        &self,
        committed: Option<Watermark>,
    ) -> Result<Result<StreamStart, String>, WarehouseError> {
        // A committed position means the function was read before (each poll reads up to
        // the position then); otherwise probe it.
        Ok(match committed {
            Some(position) => Ok(StreamStart {
                snapshot_first: false,
                position,
            }),
            None => self
                .changes
                .change_start(&self.src)?
                .map(|position| StreamStart {
                    snapshot_first: true,
                    position,
                }),
        })
    }

    fn read_first_snapshot(
        &self,
        each: EachBatch<'_>,
    ) -> Result<Option<SnapshotVisibility>, WarehouseError> {
        self.warehouse.read_snapshot(&self.src, each).map(|_| None)
    }

    fn poll(
        &self,
        from: Watermark,
        upto: Option<Watermark>,
        _max_changes: usize,
        _seen: Option<&SnapshotVisibility>,
    ) -> Result<ChangePoll, WarehouseError> {
        let to = match upto {
            Some(to) => to,
            None => self.changes.change_position(&self.src)?,
        };
        let window = ChangeWindow {
            src: &self.src,
            key: &self.key,
            from,
            to,
        };
        let mut poll = ChangePoll::from(self.changes.read_changes(&window)?);
        poll.end = Some(to);
        Ok(poll)
    }

    fn position(&self) -> Result<Watermark, WarehouseError> {
        self.changes.change_position(&self.src)
    }
}
