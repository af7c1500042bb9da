//! wharf's dataflow vocabulary: Arrow → record encoding, the change vocabulary, snapshot diffs,
//! and the timely operators every sync is wired from. No warehouse is known here; Mixpanel's
//! record shapes live in [`mixpanel`], the change envelope of files and Kafka in [`envelope`],
//! and everything else is independent of the destination.

pub mod change;
pub mod columns;
pub mod dataflow;
pub mod diff;
pub mod encode;
pub mod envelope;
pub mod json;
pub mod mixpanel;
pub mod record;
pub mod snapshot;
pub mod watermark;

pub use arrow;
pub use timely;

use arrow::array::RecordBatch;
use record::MappedBatch;

/// Turns Arrow rows into destination records (or rejects). Implemented per table type.
pub trait RecordMapper: Send + Sync {
    /// Maps every row of `batch`; `now_ms` is the wall clock used for "too far in the future".
    fn map_batch(&self, batch: &RecordBatch, now_ms: i64) -> MappedBatch;
}
