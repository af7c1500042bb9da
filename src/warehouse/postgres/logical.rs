//! Change capture through logical decoding, for continuous mirror syncs.
//!
//! Per sync, wharf keeps a publication for the table and a logical replication slot using
//! PostgreSQL's built-in `pgoutput` plugin (both named `wharf_<sync>`), and reads the slot
//! through SQL (`pg_logical_slot_peek_binary_changes`), so no replication connection or
//! extra plugin is needed.
//!
//! - **Position**: the slot's confirmed LSN. A poll *peeks* (reads without consuming); the
//!   slot is advanced past the poll's last transaction (`pg_replication_slot_advance`) only
//!   after the destination acknowledged every change of it. A crash in between replays the
//!   same changes on the next poll, which is harmless: every operation wharf sends is
//!   idempotent (upserts and deletes by key, events by a deterministic `$insert_id`).
//! - **Initial snapshot**: the slot is created first, then the table is read in full, and
//!   the read's MVCC snapshot (`pg_current_snapshot()`: xmin, xmax, in-progress xids) is kept
//!   with the committed state as a [`SnapshotVisibility`]. The slot then streams every
//!   transaction committed since its creation; those the snapshot already saw are skipped
//!   (by xid), so no change older than a value already sent is sent after it — also when the
//!   slot was created by an earlier, killed first run. Transactions committed after the
//!   snapshot (commit LSN at or past its insert position) are always streamed.
//! - **One poll**: at most `max_changes` changes (PostgreSQL rounds up to whole
//!   transactions, so a large transaction arrives in one poll). Changes are compacted per
//!   key (the last change of a key within a poll wins; a delete followed by an insert
//!   becomes an update), so the destination never sees two changes of one key in flight at
//!   once.
//! - **Row shape**: each poll becomes Arrow batches with the table's columns plus a last
//!   column [`OP_COLUMN`] (`insert`/`update`/`delete`, or `delete_new` for a key inserted and
//!   deleted within the poll, see
//!   [`OP_DELETE_OF_NEW`](wharf_operators::diff::OP_DELETE_OF_NEW)). Deletes carry only the key columns.
//! - **Requirements**: `wal_level = logical`; the table needs a replica identity that holds
//!   the sync's key columns (its primary key by default, or `REPLICA IDENTITY FULL`) —
//!   without one PostgreSQL would refuse the table's UPDATEs and DELETEs once it is published,
//!   so wharf does not publish it and mirror diffs snapshots instead. The user needs the
//!   `REPLICATION` attribute (or superuser) and the right to create publications.
//! - **Not captured**: `TRUNCATE` fails the poll with a message (a snapshot sync handles
//!   it). Values that an UPDATE left unchanged and that PostgreSQL stored out of line
//!   (TOAST, large values) are not in the change stream unless the table has
//!   `REPLICA IDENTITY FULL`; such a row is sent as an insert without those columns
//!   (profile properties keep their values; an event would be re-imported without them).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio_postgres::Client;
use wharf_operators::arrow::array::{ArrayRef, RecordBatch, StringArray};
use wharf_operators::arrow::datatypes::{DataType, Field, Schema};
use wharf_operators::watermark::Watermark;

pub use super::visibility::{format_lsn, parse_lsn, SnapshotVisibility};

use super::{quote_table, Layout, PostgresWarehouse};
use crate::warehouse::change_source::ChangePoll;
use crate::warehouse::{SourceRef, WarehouseError};

use wharf_operators::diff::op_text;
pub use wharf_operators::diff::OP_COLUMN;

/// A sync's slot and publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The replication slot.
    pub slot: String,
    /// The publication.
    pub publication: String,
    /// The table (`schema.table` or `table`).
    pub table: String,
}

impl Capture {
    /// The slot and publication names of sync `sync` on `table`: `wharf_<sync>` with
    /// characters PostgreSQL does not allow in slot names replaced by `_`.
    pub fn for_sync(sync: &str, table: &str) -> Capture {
        let mut name: String = format!("wharf_{sync}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        name.truncate(63);
        Capture {
            slot: name.clone(),
            publication: name,
            table: table.to_string(),
        }
    }
}

/// Where capture stands after [`PostgresWarehouse::start_capture`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureStart {
    /// The slot was created now (a snapshot must be taken).
    pub created: bool,
    /// The slot's confirmed position.
    pub lsn: u64,
}

impl PostgresWarehouse {
    fn capture_src(capture: &Capture) -> SourceRef {
        SourceRef::Table(capture.table.clone())
    }

    /// Why change capture cannot run for `capture` with `keys` (`None`: it can).
    pub fn capture_unavailable(
        &self,
        capture: &Capture,
        keys: &[String],
    ) -> Result<Option<String>, WarehouseError> {
        if self.settings.flavor != super::Flavor::Postgres {
            return Ok(Some("Redshift has no logical decoding".into()));
        }
        let src = Self::capture_src(capture);
        self.on_held(async |c: &Client| {
            let level: String = c
                .query_one("SHOW wal_level", &[])
                .await
                .map_err(|e| self.err(&src, e))?
                .get(0);
            if level != "logical" {
                return Ok(Some(format!(
                    "the server's wal_level is `{level}`; change capture needs `logical` \
                     (ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)"
                )));
            }
            let row = c
                .query_one(
                    "SELECT c.relreplident::text, coalesce((SELECT array_agg(a.attname::text) \
                     FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a \
                     ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                     WHERE i.indrelid = c.oid AND \
                     (i.indisreplident OR (c.relreplident = 'd' AND i.indisprimary))), '{}') \
                     FROM pg_catalog.pg_class c WHERE c.oid = $1::text::regclass",
                    &[&quote_table(&capture.table)],
                )
                .await
                .map_err(|e| self.err(&src, e))?;
            let ident: String = row.get(0);
            let ident_cols: Vec<String> = row.get(1);
            if ident == "f" {
                return Ok(None);
            }
            if ident == "n" || ident_cols.is_empty() {
                return Ok(Some(format!(
                    "table `{}` has no replica identity (no primary key); publishing it would \
                     make PostgreSQL refuse its UPDATEs and DELETEs (add a primary key or \
                     ALTER TABLE … REPLICA IDENTITY FULL)",
                    capture.table
                )));
            }
            if let Some(k) = keys.iter().find(|k| !ident_cols.contains(k)) {
                return Ok(Some(format!(
                    "key column `{k}` is not in the table's replica identity ({}); deletes \
                     would not carry it (use the primary key as `primary_key`, or ALTER TABLE \
                     … REPLICA IDENTITY FULL)",
                    ident_cols.join(", ")
                )));
            }
            Ok(None)
        })
    }

    /// Creates the publication and the slot if they do not exist yet.
    pub fn start_capture(&self, capture: &Capture) -> Result<CaptureStart, WarehouseError> {
        let src = Self::capture_src(capture);
        self.on_held(async |c: &Client| {
            let err = |e| self.err(&src, e);
            let exists = c
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
                    &[&capture.publication],
                )
                .await
                .map_err(err)?;
            if exists.is_none() {
                c.batch_execute(&format!(
                    "CREATE PUBLICATION {} FOR TABLE {}",
                    super::quote_ident(&capture.publication),
                    quote_table(&capture.table)
                ))
                .await
                .map_err(err)?;
                tracing::info!(publication = %capture.publication, table = %capture.table, "publication created");
            }
            let slot = c
                .query_opt(
                    "SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots \
                     WHERE slot_name = $1",
                    &[&capture.slot],
                )
                .await
                .map_err(err)?;
            let (created, lsn) = match slot {
                Some(row) => (false, row.get::<_, Option<String>>(0)),
                None => {
                    let row = c
                        .query_one(
                            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                            &[&capture.slot],
                        )
                        .await
                        .map_err(err)?;
                    tracing::info!(slot = %capture.slot, "replication slot created");
                    (true, row.get::<_, Option<String>>(0))
                }
            };
            Ok(CaptureStart {
                created,
                lsn: lsn.as_deref().and_then(parse_lsn).unwrap_or(0),
            })
        })
    }

    /// Whether the slot exists.
    pub fn capture_exists(&self, capture: &Capture) -> Result<bool, WarehouseError> {
        let src = Self::capture_src(capture);
        self.on_held(async |c: &Client| {
            let row = c
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                    &[&capture.slot],
                )
                .await
                .map_err(|e| self.err(&src, e))?;
            Ok(row.is_some())
        })
    }

    /// Drops the slot and the publication (when a sync is removed; tests).
    pub fn drop_capture(&self, capture: &Capture) -> Result<(), WarehouseError> {
        let src = Self::capture_src(capture);
        self.on_held(async |c: &Client| {
            c.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = $1",
                &[&capture.slot],
            )
            .await
            .map_err(|e| self.err(&src, e))?;
            c.batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {}",
                super::quote_ident(&capture.publication)
            ))
            .await
            .map_err(|e| self.err(&src, e))?;
            Ok(())
        })
    }

    /// Moves the slot to `lsn` (after the changes before it were delivered).
    pub fn confirm_capture(&self, capture: &Capture, lsn: u64) -> Result<(), WarehouseError> {
        let src = Self::capture_src(capture);
        self.on_held(async |c: &Client| {
            c.execute(
                "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                &[&capture.slot, &format_lsn(lsn)],
            )
            .await
            .map_err(|e| self.err(&src, e))?;
            Ok(())
        })
    }

    /// Whether the slot holds anything for the sync's publication (a transaction that
    /// changed the table): one cheap statement, for continuous syncs to skip idle polls.
    pub fn capture_pending(&self, capture: &Capture) -> Result<bool, WarehouseError> {
        let src = Self::capture_src(capture);
        self.on_held(async |c: &Client| {
            let row = c
                .query_one(
                    "SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, 1, \
                     'proto_version', '1', 'publication_names', $2)",
                    &[&capture.slot, &capture.publication],
                )
                .await
                .map_err(|e| self.err(&src, e))?;
            Ok(row.get::<_, i64>(0) > 0)
        })
    }

    /// The WAL insert position now: a poll up to it reads every change committed so far.
    pub fn current_lsn(&self, capture: &Capture) -> Result<u64, WarehouseError> {
        let src = Self::capture_src(capture);
        self.on_held(async |c: &Client| {
            let row = c
                .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await
                .map_err(|e| self.err(&src, e))?;
            let lsn: String = row.get(0);
            parse_lsn(&lsn).ok_or_else(|| WarehouseError::Query {
                source_ref: src.clone(),
                message: format!("unexpected LSN `{lsn}`"),
                transient: false,
            })
        })
    }

    /// Reads (without consuming) up to about `max_changes` changes of the table, of
    /// transactions committed before `upto` (all when `None`); those `seen` by the first
    /// snapshot are skipped.
    pub fn poll_capture(
        &self,
        capture: &Capture,
        keys: &[String],
        max_changes: usize,
        upto: Option<u64>,
        seen: Option<&SnapshotVisibility>,
    ) -> Result<ChangePoll, WarehouseError> {
        let src = Self::capture_src(capture);
        let max_changes = max_changes.clamp(1, i32::MAX as usize);
        self.on_held(async |c: &Client| {
            let layout = self.layout(c, &src).await?;
            let upto = upto.map(format_lsn);
            let rows = c
                .query(
                    "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, \
                     $3::int, 'proto_version', '1', 'publication_names', $4)",
                    &[
                        &capture.slot,
                        &upto,
                        &(max_changes as i32),
                        &capture.publication,
                    ],
                )
                .await
                .map_err(|e| self.err(&src, e))?;
            let bad = |message: String| WarehouseError::Query {
                source_ref: src.clone(),
                message,
                transient: false,
            };
            let mut decoder = Decoder::new(&layout, keys, seen.cloned()).map_err(bad)?;
            for row in &rows {
                let data: &[u8] = row.get(0);
                decoder.message(data).map_err(bad)?;
            }
            let mut poll = decoder.finish(&layout).map_err(bad)?;
            // PostgreSQL counts every row of the stream (Begin, Relation, Commit too) against
            // the limit and finishes the transaction it is in.
            poll.capped = rows.len() >= max_changes;
            Ok(poll)
        })
    }
}

/// A decoded row change: the op and per column its text (`None`: NULL or not sent).
struct Change {
    op: wharf_operators::change::ChangeOp,
    values: Vec<Option<String>>,
    /// The key's first change in this poll was an insert (it did not exist where it starts).
    born: bool,
}

/// Folds `pgoutput` messages into compacted changes.
struct Decoder {
    names: Vec<String>,
    key_idx: Vec<usize>,
    /// Relations described so far (the captured table; column names checked).
    relations: HashSet<u32>,
    /// Key text → index in `changes`.
    by_key: HashMap<Vec<Option<String>>, usize>,
    changes: Vec<Change>,
    read: usize,
    end_lsn: Option<u64>,
    /// Inside a transaction (a Begin without its Commit yet).
    pending_end: bool,
    /// The first snapshot's visibility, while the stream may still hold what it saw.
    seen: Option<SnapshotVisibility>,
    /// The current transaction was seen by the first snapshot: its changes are skipped.
    skipping: bool,
    skipped: usize,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .data
            .get(self.pos..self.pos + n)
            .ok_or_else(|| "truncated logical decoding message".to_string())?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().unwrap_or([0; 2]),
        ))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn cstr(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos.min(self.data.len())..];
        let end = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| "unterminated string in logical decoding message".to_string())?;
        self.pos += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
    /// A TupleData: per column `Some(Some(text))`, `Some(None)` (NULL) or `None` (unchanged
    /// out-of-line value, not sent).
    fn tuple(&mut self) -> Result<Vec<Option<Option<String>>>, String> {
        let n = self.u16()? as usize;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' => Some(None),
                b'u' => None,
                b't' => {
                    let len = self.u32()? as usize;
                    let bytes = self.take(len)?;
                    Some(Some(
                        std::str::from_utf8(bytes)
                            .map_err(|_| "a value that is not UTF-8".to_string())?
                            .to_string(),
                    ))
                }
                other => return Err(format!("unknown tuple value kind `{}`", other as char)),
            });
        }
        Ok(out)
    }
}

impl Decoder {
    fn new(
        layout: &Layout,
        keys: &[String],
        seen: Option<SnapshotVisibility>,
    ) -> Result<Decoder, String> {
        let key_idx = keys
            .iter()
            .map(|k| {
                layout
                    .names
                    .iter()
                    .position(|n| n == k)
                    .ok_or_else(|| format!("key column `{k}` is not in the table"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Decoder {
            names: layout.names.clone(),
            key_idx,
            relations: HashSet::new(),
            by_key: HashMap::new(),
            changes: Vec::new(),
            read: 0,
            end_lsn: None,
            pending_end: false,
            seen,
            skipping: false,
            skipped: 0,
        })
    }

    fn message(&mut self, data: &[u8]) -> Result<(), String> {
        use wharf_operators::change::ChangeOp;
        let mut r = Reader { data, pos: 0 };
        let kind = r.u8()?;
        if self.skipping && matches!(kind, b'I' | b'U' | b'D' | b'T') {
            self.skipped += 1;
            return Ok(());
        }
        match kind {
            b'B' => {
                let commit_lsn = r.u64()?;
                let _commit_time = r.u64()?;
                let xid = r.u32()?;
                self.pending_end = true;
                self.skipping = self.seen.as_ref().is_some_and(|s| s.sees(xid, commit_lsn));
            }
            b'C' => {
                let _flags = r.u8()?;
                let _commit_lsn = r.u64()?;
                self.end_lsn = Some(r.u64()?);
                self.pending_end = false;
                self.skipping = false;
            }
            b'R' => {
                let id = r.u32()?;
                let _namespace = r.cstr()?;
                let _name = r.cstr()?;
                let _ident = r.u8()?;
                let n = r.u16()? as usize;
                let mut names = Vec::with_capacity(n);
                for _ in 0..n {
                    let _flags = r.u8()?;
                    names.push(r.cstr()?);
                    let _type = r.u32()?;
                    let _typmod = r.u32()?;
                }
                if names != self.names {
                    return Err(format!(
                        "the table's columns changed while it was captured (now: {}; when the \
                         sync started: {}); run the sync again",
                        names.join(", "),
                        self.names.join(", ")
                    ));
                }
                self.relations.insert(id);
            }
            b'I' => {
                let id = r.u32()?;
                self.known(id)?;
                if r.u8()? != b'N' {
                    return Err("malformed INSERT message".into());
                }
                let new = r.tuple()?;
                self.push(ChangeOp::Insert, new, None)?;
            }
            b'U' => {
                let id = r.u32()?;
                self.known(id)?;
                let mut kind = r.u8()?;
                let mut old = None;
                if kind == b'K' || kind == b'O' {
                    old = Some(r.tuple()?);
                    kind = r.u8()?;
                }
                if kind != b'N' {
                    return Err("malformed UPDATE message".into());
                }
                let new = r.tuple()?;
                // A key change is a delete of the old key and an insert of the new one.
                if let Some(old) = &old {
                    let old_key: Vec<Option<String>> = self
                        .key_idx
                        .iter()
                        .map(|i| old.get(*i).cloned().flatten().flatten())
                        .collect();
                    let new_key: Vec<Option<String>> = self
                        .key_idx
                        .iter()
                        .map(|i| new.get(*i).cloned().flatten().flatten())
                        .collect();
                    if old_key != new_key && old_key.iter().all(Option::is_some) {
                        self.push(ChangeOp::Delete, old.clone(), None)?;
                        return self.push(ChangeOp::Insert, new, None);
                    }
                }
                self.push(ChangeOp::Update, new, old)?;
            }
            b'D' => {
                let id = r.u32()?;
                self.known(id)?;
                let kind = r.u8()?;
                if kind != b'K' && kind != b'O' {
                    return Err("malformed DELETE message".into());
                }
                let old = r.tuple()?;
                self.push(ChangeOp::Delete, old, None)?;
            }
            b'T' => {
                return Err(
                    "the table was TRUNCATEd; change capture cannot express that — drop the \
                     sync's slot (it is recreated with a fresh snapshot) or use a snapshot sync"
                        .into(),
                )
            }
            // Type, origin and logical messages carry nothing for a table sync.
            _ => {}
        }
        Ok(())
    }

    fn known(&self, id: u32) -> Result<(), String> {
        if self.relations.contains(&id) {
            Ok(())
        } else {
            Err(format!(
                "a change of relation {id} arrived before its description"
            ))
        }
    }

    fn push(
        &mut self,
        op: wharf_operators::change::ChangeOp,
        tuple: Vec<Option<Option<String>>>,
        old: Option<Vec<Option<Option<String>>>>,
    ) -> Result<(), String> {
        use wharf_operators::change::ChangeOp;
        self.read += 1;
        let mut partial = false;
        // Before a partial update is read as an insert below: that key did exist.
        let born = op == ChangeOp::Insert;
        let values: Vec<Option<String>> = (0..self.names.len())
            .map(|i| match tuple.get(i) {
                Some(Some(v)) => v.clone(),
                // Not sent (unchanged out-of-line value): the old row has it with FULL.
                _ => match old.as_ref().and_then(|o| o.get(i)) {
                    Some(Some(v)) => v.clone(),
                    _ => {
                        partial = true;
                        None
                    }
                },
            })
            .collect();
        let op = if partial && op == ChangeOp::Update {
            ChangeOp::Insert
        } else {
            op
        };
        let key: Vec<Option<String>> = self.key_idx.iter().map(|i| values[*i].clone()).collect();
        let change = Change { op, values, born };
        match self.by_key.get(&key) {
            Some(&i) => {
                let before = self.changes[i].op;
                let mut change = change;
                change.born = self.changes[i].born;
                // Deleted then inserted: an update (it replaces the old values). Inserted then
                // updated: still new to the destination.
                match (before, change.op) {
                    (ChangeOp::Delete, ChangeOp::Insert) if !partial => {
                        change.op = ChangeOp::Update
                    }
                    (ChangeOp::Insert, ChangeOp::Update) => change.op = ChangeOp::Insert,
                    _ => {}
                }
                self.changes[i] = change;
            }
            None => {
                self.by_key.insert(key, self.changes.len());
                self.changes.push(change);
            }
        }
        Ok(())
    }

    fn finish(self, layout: &Layout) -> Result<ChangePoll, String> {
        use wharf_operators::change::ChangeOp;
        if self.pending_end {
            // pg_logical_slot_peek returns whole transactions; a cut one is a server bug.
            return Err("the change stream ended inside a transaction".into());
        }
        let mut fields: Vec<Field> = layout
            .arrow
            .fields()
            .iter()
            .map(|f| (**f).clone())
            .collect();
        fields.push(Field::new(OP_COLUMN, DataType::Utf8, false));
        let schema = Arc::new(Schema::new(fields));
        let mut batches = Vec::new();
        for chunk in self.changes.chunks(super::FETCH_ROWS as usize) {
            let mut builders = layout.builders();
            for c in chunk {
                for (i, b) in builders.iter_mut().enumerate() {
                    let v = if c.op == ChangeOp::Delete && !self.key_idx.contains(&i) {
                        None
                    } else {
                        c.values[i].as_deref()
                    };
                    b.push_text(v)
                        .map_err(|m| format!("column `{}`: {m}", self.names[i]))?;
                }
            }
            let mut columns: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
            columns.push(Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|c| op_text(c.op, c.born)),
            )));
            batches.push(RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?);
        }
        Ok(ChangePoll {
            batches,
            changes_read: self.read,
            end: self.end_lsn.map(Watermark::from_position),
            changes_skipped: self.skipped,
            capped: false,
        })
    }
}

/// Fuzzing entry point (`wharf::fuzzing::pg_logical`): `messages` (the `data` of
/// `pg_logical_slot_peek_binary_changes` rows) through a [`Decoder`] for `layout` and `keys`,
/// then [`Decoder::finish`].
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_decode(
    layout: &Layout,
    keys: &[String],
    seen: Option<SnapshotVisibility>,
    messages: &[&[u8]],
) -> Result<ChangePoll, String> {
    let mut decoder = Decoder::new(layout, keys, seen)?;
    for m in messages {
        decoder.message(m)?;
    }
    decoder.finish(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_named_after_their_sync() {
        assert_eq!(Capture::for_sync("My-Sync", "t").slot, "wharf_my_sync");
    }
}
