//! What a run reads from its warehouse, as the readers of its epoch: a read the warehouse can
//! split ([`Warehouse::read_parts`]) is read by every worker at once, a part each.

use std::sync::{Arc, Mutex};

use wharf_operators::arrow::array::RecordBatch;
use wharf_operators::arrow::datatypes::DataType;
use wharf_operators::dataflow::StartReader;
use wharf_operators::watermark::{column_max, max_watermark, Watermark};
use wharf_pipelines::reader::{batches_reader, blocking_reader};

use super::error::SyncError;
use super::resolve::ResolvedSync;
#[cfg(doc)]
use crate::warehouse::Warehouse;
use crate::warehouse::{PartRead, PartsOf, SnapshotVisibility};

/// What a run reads.
pub(super) enum Read {
    /// A change stream's batches, already polled.
    Polled(Vec<RecordBatch>),
    /// The first snapshot of a change-captured table, through its stream (which says which
    /// transactions it saw, into `seen`): one reader.
    FirstCapture {
        seen: Arc<Mutex<Option<SnapshotVisibility>>>,
    },
    /// Nothing (a lookup table without new rows).
    Nothing,
    /// The whole table (full and mirror snapshots, a lookup table that is replaced).
    Snapshot,
    /// The rows whose append cursor is past `from` (and at most `upto`).
    After {
        cursor: (String, DataType),
        from: Option<Watermark>,
        upto: Option<Watermark>,
    },
}

/// The readers of `read`: `parts` at most (one per worker). The greatest value of the sync's
/// append cursor that any of them read goes into `watermark` before the input ends.
pub(super) fn epoch_readers(
    resolved: &ResolvedSync,
    read: Read,
    parts: usize,
    watermark: &Arc<Mutex<Option<Watermark>>>,
    runtime: &tokio::runtime::Handle,
) -> Result<Vec<StartReader>, SyncError> {
    let werr = |e| SyncError::Warehouse(resolved.sync.name.clone(), e);
    let (warehouse, source) = (resolved.warehouse.clone(), resolved.source.clone());
    let split = match read {
        Read::Polled(batches) => return Ok(vec![batches_reader(batches)]),
        Read::Nothing => return Ok(Vec::new()),
        Read::FirstCapture { seen } => {
            let (sync, key) = (resolved.sync.name.clone(), resolved.sync.key_columns());
            let reader = blocking_reader(runtime.clone(), move |send| {
                let result = match warehouse.change_source(&sync, &source, &key) {
                    Some(stream) => stream.read_first_snapshot(send).map(|v| {
                        if let (Some(v), Ok(mut s)) = (v, seen.lock()) {
                            *s = Some(v);
                        }
                    }),
                    None => warehouse.read_snapshot(&source, send),
                };
                result.map_err(|e| e.to_string())
            });
            return Ok(vec![reader]);
        }
        Read::Snapshot => warehouse.clone().read_parts(PartsOf {
            src: &source,
            filter: "",
            key: &resolved.sync.key_columns(),
            count: parts,
        }),
        Read::After { cursor, from, upto } => {
            let mut filter = warehouse.after_filter(&cursor.0, &cursor.1, from);
            if let Some(upto) = upto {
                filter = warehouse.upto_filter(&filter, &cursor.0, &cursor.1, upto);
            }
            warehouse.clone().read_parts(PartsOf {
                src: &source,
                filter: &filter,
                key: &resolved.sync.key_columns(),
                count: parts,
            })
        }
    };
    let cursor_idx = resolved
        .cursor
        .as_ref()
        .and_then(|c| resolved.schema.arrow.index_of(&c.0).ok());
    Ok(split
        .map_err(werr)?
        .into_iter()
        .map(|part| part_reader(part, cursor_idx, watermark.clone(), runtime))
        .collect())
}

/// A reader of one part, noting the greatest cursor value it read into `watermark`.
pub(super) fn part_reader(
    part: PartRead,
    cursor_idx: Option<usize>,
    watermark: Arc<Mutex<Option<Watermark>>>,
    runtime: &tokio::runtime::Handle,
) -> StartReader {
    blocking_reader(runtime.clone(), move |send| {
        let mut max = None;
        let mut send_max = |batch: RecordBatch| {
            if let Some(i) = cursor_idx {
                max = max_watermark(max, column_max(batch.column(i).as_ref()));
            }
            send(batch)
        };
        let result = part(&mut send_max);
        tracing::debug!(ok = result.is_ok(), watermark = ?max, "warehouse read finished");
        // Set before this part's input ends: the run reads it once the dataflow is done.
        if let Ok(mut w) = watermark.lock() {
            *w = max_watermark(*w, max);
        }
        result.map_err(|e| e.to_string())
    })
}
