//! `wharf preview` and the console's preview: the records a sync would send (sent nowhere),
//! and what the next run of a full or mirror sync would send.

use wharf_operators::diff::{DiffSpec, Emit};
use wharf_operators::watermark::Watermark;
use wharf_pipelines::reader::blocking_reader;

use super::capture::MAX_CHANGES_PER_POLL;
use super::error::SyncError;
use super::recovery::{committed_parts, pending_snapshots};
use super::resolve::ResolvedSync;
use crate::config::{ChangeCapture, Config, SyncMode};
use crate::state::StateStore;
use crate::warehouse::SnapshotVisibility;
use crate::warehouse::SourceRef;

/// What the next run of a full/mirror sync would send, found by a dry run of the diff against
/// the committed snapshot (nothing is sent or committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangePreview {
    /// Rows in the table (with a key).
    pub rows: u64,
    /// Keys that would be inserted.
    pub inserts: u64,
    /// Keys that would be updated.
    pub updates: u64,
    /// Keys that would be deleted.
    pub deletes: u64,
}

/// Dry-runs the diff of a snapshot sync (`store`: the state store when the caller holds it
/// open, as the service does; else it is opened here).
pub fn preview_changes(
    config: &Config,
    resolved: &ResolvedSync,
    workers: usize,
    runtime: &tokio::runtime::Runtime,
    store: Option<&StateStore>,
) -> Result<ChangePreview, SyncError> {
    let name = &resolved.sync.name;
    let Some(hasher) = &resolved.hasher else {
        return Err(SyncError::Unsupported {
            sync: name.clone(),
            what: "a change preview for an append sync".into(),
        });
    };
    let (committed, position) = match store {
        Some(store) => (store.snapshot(name)?, store.watermark(name)?),
        None => {
            let store = StateStore::open(&config.state_dir())?;
            (store.snapshot(name)?, store.watermark(name)?)
        }
    };
    if let Some(p) = preview_captured(
        resolved,
        position,
        committed.as_ref().and_then(|c| c.seen.as_ref()),
    )? {
        return Ok(p);
    }
    let state_dir = config.state_dir();
    let scratch = state_dir
        .join("tmp")
        .join(format!("preview-{}", std::process::id()));
    let spec = DiffSpec {
        hasher: hasher.clone(),
        previous: committed_parts(committed.as_ref(), &state_dir),
        pending: pending_snapshots(
            name,
            &state_dir.join("snapshots").join(name),
            committed.as_ref(),
            false,
        )?,
        next_dir: scratch.clone(),
        spill_dir: scratch.clone(),
        memory_budget: 64 << 20,
        emit: Emit::Changes,
        send_deletes: false,
    };
    let (warehouse, source) = (resolved.warehouse.clone(), resolved.source.clone());
    let reader = blocking_reader(runtime.handle().clone(), move |send| {
        warehouse
            .read_snapshot(&source, send)
            .map_err(|e| e.to_string())
    });
    let result = wharf_pipelines::diff_run::diff_run(workers.max(1), reader, spec, false);
    let _ = std::fs::remove_dir_all(&scratch);
    let (_, counts) = result.map_err(|reason| SyncError::RunFailed {
        permanent: false,
        sync: name.clone(),
        run_id: 0,
        reason: format!("dry run: {reason}"),
    })?;
    use std::sync::atomic::Ordering::Relaxed;
    Ok(ChangePreview {
        rows: counts.rows.load(Relaxed),
        inserts: counts.inserts.load(Relaxed),
        updates: counts.updates.load(Relaxed),
        deletes: counts.deletes.load(Relaxed),
    })
}

/// The preview of a mirror sync that reads a change stream: what its slot holds now (peeked,
/// not consumed). `None` when the sync does not (yet) read one.
pub(super) fn preview_captured(
    resolved: &ResolvedSync,
    position: Option<Watermark>,
    seen: Option<&SnapshotVisibility>,
) -> Result<Option<ChangePreview>, SyncError> {
    let sync = &resolved.sync;
    let (SourceRef::Table(_), SyncMode::Mirror, Some(position)) =
        (&resolved.source, sync.mode, position)
    else {
        return Ok(None);
    };
    if sync.change_capture == ChangeCapture::Snapshot {
        return Ok(None);
    }
    let werr = |e| SyncError::Warehouse(sync.name.clone(), e);
    let key = sync.key_columns();
    let Some(stream) = resolved
        .warehouse
        .change_source(&sync.name, &resolved.source, &key)
    else {
        return Ok(None);
    };
    if !stream.exists().map_err(werr)? {
        return Ok(None);
    }
    // Up to the stream's position now: what the next run would read.
    let batches = stream
        .poll(position, None, MAX_CHANGES_PER_POLL, seen)
        .map_err(werr)?
        .batches;
    let mut preview = ChangePreview {
        rows: resolved.warehouse.count(&resolved.source).map_err(werr)?,
        inserts: 0,
        updates: 0,
        deletes: 0,
    };
    for b in &batches {
        use wharf_operators::arrow::array::AsArray;
        let Some(ops) = b.columns().last().and_then(|c| c.as_string_opt::<i32>()) else {
            continue;
        };
        for op in ops.iter().flatten() {
            match op {
                "insert" => preview.inserts += 1,
                "update" => preview.updates += 1,
                _ => preview.deletes += 1,
            }
        }
    }
    Ok(Some(preview))
}

/// What a sync would send, found without sending or committing anything.
#[derive(Debug, Clone, Default)]
pub struct RecordPreview {
    /// The first records as they would be sent (JSON text), for a full or mirror sync those
    /// of its rows as new rows.
    pub records: Vec<Vec<u8>>,
    /// The first rows' rejects, with their reasons.
    pub rejects: Vec<wharf_operators::record::Reject>,
    /// For a full or mirror sync: what its next run would send.
    pub changes: Option<ChangePreview>,
}

/// The records the first `limit` rows of `resolved` map to (to its first destination), and
/// for a full or mirror sync the counts of its next run.
pub fn preview_records(
    config: &Config,
    resolved: &ResolvedSync,
    limit: usize,
    runtime: &tokio::runtime::Runtime,
    store: Option<&StateStore>,
) -> Result<RecordPreview, SyncError> {
    use wharf_operators::change::{ChangeOp, ChangeSet, RowChange};
    use wharf_operators::RecordMapper;
    let name = &resolved.sync.name;
    let now = chrono::Utc::now().timestamp_millis();
    let batches = resolved
        .warehouse
        .preview(&resolved.source, limit)
        .map_err(|e| SyncError::Warehouse(name.clone(), e))?;
    let mut out = RecordPreview::default();
    let mut take = |m: wharf_operators::record::MappedBatch| {
        out.records.extend(m.records.iter().map(|r| r.to_vec()));
        out.rejects.extend(m.rejects);
    };
    if let Some(hasher) = &resolved.hasher {
        let Some(destination) = resolved.sync.destinations.first() else {
            return Ok(out);
        };
        let mapper = super::change_mapper(config, resolved, destination, None)?;
        for b in &batches {
            let set = ChangeSet::Rows {
                batch: b.clone(),
                changes: vec![
                    RowChange {
                        op: ChangeOp::Insert,
                        identity_changed: false
                    };
                    b.num_rows()
                ],
                keys: hasher.key_texts(b),
                rejects: Vec::new(),
            };
            take(mapper.map_changes(&set, now));
        }
        out.changes = Some(preview_changes(config, resolved, 1, runtime, store)?);
    } else if let Some(events) = &resolved.events {
        for b in &batches {
            take(events.map_batch(b, now));
        }
    }
    out.records.truncate(limit);
    out.rejects.truncate(limit);
    Ok(out)
}
