//! The change vocabulary: what a snapshot diff or a change stream hands to the mapping step
//! (a [`ChangeSet`] of changed rows or deleted keys), and the mapping step's trait.

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::record::{MappedBatch, Reject};

pub use crate::record::ChangeOp;

/// One changed row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowChange {
    /// Insert or update.
    pub op: ChangeOp,
    /// For events: the update changed the event's identity (name, distinct id or time).
    pub identity_changed: bool,
}

/// What the diff hands to the mapping step.
#[derive(Clone, Debug)]
pub enum ChangeSet {
    /// Inserted or updated rows (`batch`), with per row its change and key text; plus rows
    /// that could not be keyed.
    Rows {
        /// The changed rows.
        batch: RecordBatch,
        /// Per row of `batch`.
        changes: Vec<RowChange>,
        /// Per row of `batch`: the key's JSON text.
        keys: Vec<String>,
        /// Rows rejected before diffing (a NULL key column).
        rejects: Vec<Reject>,
    },
    /// Deleted keys, as JSON texts.
    Deletes(Vec<String>),
}

impl ChangeSet {
    /// Rows in this set (changed rows + rejects, or deletes).
    pub fn len(&self) -> usize {
        match self {
            ChangeSet::Rows {
                changes, rejects, ..
            } => changes.len() + rejects.len(),
            ChangeSet::Deletes(k) => k.len(),
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Turns a [`ChangeSet`] into records. Implemented per table type.
pub trait ChangeMapper: Send + Sync {
    /// Maps the changes; `now_ms` is the wall clock (for event time checks). The rows
    /// rejected before diffing come first among the rejects, then the mapper's own.
    fn map_changes(&self, changes: &ChangeSet, now_ms: i64) -> MappedBatch {
        let mut out = self.map_set(changes, now_ms);
        if let ChangeSet::Rows { rejects, .. } = changes {
            out.rejects.splice(0..0, rejects.iter().cloned());
        }
        out
    }

    /// The table type's records of `changes` (the set's own rejects are added by
    /// [`ChangeMapper::map_changes`]).
    fn map_set(&self, changes: &ChangeSet, now_ms: i64) -> MappedBatch;
}
