//! The state store: watermarks and run history, in an embedded redb file
//! (`<state_dir>/state.redb`).
//!
//! [`StateStore::commit_run`] is the one place a run becomes committed: the new watermark and
//! the SUCCEEDED run record are written in one transaction, and callers invoke it only after
//! the destination acknowledged every record of the run.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use wharf_operators::watermark::Watermark;

const WATERMARKS: TableDefinition<&str, &str> = TableDefinition::new("watermarks");
const RUNS: TableDefinition<(&str, u64), &str> = TableDefinition::new("runs");
/// sync → JSON [`SnapshotState`]: the last committed snapshot of a full/mirror sync.
const SNAPSHOTS: TableDefinition<&str, &str> = TableDefinition::new("snapshots");
/// sync → why it was paused (`wharf run` does not start its runs until it is resumed).
const PAUSED: TableDefinition<&str, &str> = TableDefinition::new("paused");
/// sync → the last run id when it was reset: runs up to it belong to the time before.
const RESETS: TableDefinition<&str, u64> = TableDefinition::new("resets");
/// Run records kept per sync.
pub const MAX_RUNS_PER_SYNC: usize = 100;

/// The state store failed.
#[derive(Debug, thiserror::Error)]
#[error("state store {path}: {message}")]
pub struct StateError {
    /// The store's file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// A run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Started, not finished (or the process died).
    Running,
    /// Every record delivered or rejected; the watermark committed.
    Succeeded,
    /// Failed; nothing committed.
    Failed,
    /// Stopped on request; nothing committed.
    Cancelled,
}

/// One run in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Increasing per sync.
    pub run_id: u64,
    /// The sync.
    pub sync: String,
    /// The sync mode.
    pub mode: String,
    /// Status.
    pub status: RunStatus,
    /// Start, ISO-8601 UTC.
    pub started_at: String,
    /// End, ISO-8601 UTC.
    pub ended_at: Option<String>,
    /// Rows read from the warehouse.
    pub rows_read: u64,
    /// Records delivered.
    pub delivered: u64,
    /// Rows rejected (see the rejects file).
    pub rejected: u64,
    /// Uncompressed bytes delivered.
    pub bytes_sent: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// Watermark before the run.
    pub watermark_before: Option<Watermark>,
    /// Watermark after the run (committed when SUCCEEDED).
    pub watermark_after: Option<Watermark>,
    /// Full/mirror: keys inserted.
    #[serde(default)]
    pub inserted: u64,
    /// Full/mirror: keys updated.
    #[serde(default)]
    pub updated: u64,
    /// Full/mirror: keys deleted.
    #[serde(default)]
    pub deleted: u64,
    /// Changes the destination cannot apply (see the change log).
    #[serde(default)]
    pub unapplied: u64,
}

/// The committed snapshot of a full/mirror sync: the run that wrote it and its part files
/// (relative to the state directory), each holding `(key hash, fingerprint, key)` per row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotState {
    /// The run that wrote it.
    pub run_id: u64,
    /// Rows in it.
    pub rows: u64,
    /// Part files, relative to the state directory.
    pub parts: Vec<PathBuf>,
    /// With PostgreSQL change capture: which transactions the snapshot saw, so the change
    /// stream skips them (absent in states written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<crate::warehouse::SnapshotVisibility>,
}

/// The embedded state store.
pub struct StateStore {
    db: Database,
    path: PathBuf,
}

/// Now as ISO-8601 UTC.
pub fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Creates the store at `path` whole or not at all. redb writes its magic number last, so a
/// process killed while `Database::create` initialised a new file would leave a file that no
/// later run could open; instead the new store is initialised under a name of this process's
/// own and linked into place once complete (a link, not a rename: another process that
/// created the store meanwhile keeps its file). Leftovers of processes killed while creating
/// are removed.
fn create_whole(dir: &Path, path: &Path) -> Result<(), String> {
    let mine = std::process::id();
    let prefix = "state.redb.";
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|n| n.strip_suffix(".new"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let alive = pid != mine && Path::new(&format!("/proc/{pid}")).exists();
            if !alive {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let tmp = dir.join(format!("{prefix}{mine}.new"));
    let db = Database::create(&tmp).map_err(|e| e.to_string())?;
    drop(db);
    let linked = match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    let _ = std::fs::remove_file(&tmp);
    linked?;
    // The link itself is durable only once the folder is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| e.to_string())
}

impl StateStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        let path = dir.join("state.redb");
        let err = |m: String| StateError {
            path: path.display().to_string(),
            message: m,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create folder: {e}")))?;
        if !path.exists() {
            create_whole(dir, &path).map_err(|e| err(format!("cannot create it: {e}")))?;
        }
        let db = Database::create(&path).map_err(|e| {
            use redb::DatabaseError as E;
            match e {
                // Held by another wharf process: say which case it is.
                E::DatabaseAlreadyOpen => err(e.to_string()),
                _ => err(format!(
                    "{e}: the state store is damaged; restore it from a backup, or move it away \
                     and `wharf reset` each sync (their next runs start over and resend every row)"
                )),
            }
        })?;
        let store = StateStore { db, path };
        // Create the tables so that readers never meet a missing table.
        store.write(|txn| {
            txn.open_table(WATERMARKS)?;
            txn.open_table(RUNS)?;
            txn.open_table(SNAPSHOTS)?;
            txn.open_table(PAUSED)?;
            txn.open_table(RESETS)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        StateError {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        f(&txn).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// The committed watermark of `sync`.
    pub fn watermark(&self, sync: &str) -> Result<Option<Watermark>, StateError> {
        self.json(WATERMARKS, sync)
    }

    /// `sync`'s text in `table`, if it has one.
    fn text(
        &self,
        table: TableDefinition<&str, &str>,
        sync: &str,
    ) -> Result<Option<String>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(table).map_err(|e| self.err(e))?;
        Ok(table
            .get(sync)
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_string()))
    }

    /// `sync`'s JSON value in `table`, read back, if it has one.
    fn json<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &str>,
        sync: &str,
    ) -> Result<Option<T>, StateError> {
        self.text(table, sync)?
            .map(|v| serde_json::from_str(&v).map_err(|e| self.err(e)))
            .transpose()
    }

    /// Moves `sync`'s committed change position without recording a run: an idle poll of a
    /// change function found nothing up to `position`, so nothing before it needs reading
    /// again (and the position stays inside the warehouse's history retention).
    pub fn advance_watermark(&self, sync: &str, position: Watermark) -> Result<(), StateError> {
        let wm = serde_json::to_string(&position).map_err(|e| self.err(e))?;
        self.write(|txn| {
            txn.open_table(WATERMARKS)?.insert(sync, wm.as_str())?;
            Ok(())
        })
    }

    /// Forgets what `sync` has sent: its watermark (or change position) and its committed
    /// snapshot state, so its next run starts over (history and pause are kept). Returns
    /// whether there was anything to forget.
    pub fn reset(&self, sync: &str) -> Result<bool, StateError> {
        let mut had = false;
        let last = self.runs(sync, 1)?.first().map(|r| r.run_id).unwrap_or(0);
        let succeeded_since = self.runs(sync, MAX_RUNS_PER_SYNC)?.iter().any(|r| {
            r.status == RunStatus::Succeeded && r.run_id > self.reset_point(sync).unwrap_or(0)
        });
        self.write(|txn| {
            had |= txn.open_table(WATERMARKS)?.remove(sync)?.is_some();
            had |= txn.open_table(SNAPSHOTS)?.remove(sync)?.is_some();
            txn.open_table(RESETS)?.insert(sync, last)?;
            Ok(())
        })?;
        Ok(had || succeeded_since)
    }

    /// The last run id of `sync` when it was last reset (0: never): earlier runs belong to the
    /// time before (a one-time sync's load among them).
    pub fn reset_point(&self, sync: &str) -> Result<u64, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(RESETS).map_err(|e| self.err(e))?;
        Ok(table
            .get(sync)
            .map_err(|e| self.err(e))?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Records a new RUNNING run and returns it.
    pub fn begin_run(
        &self,
        sync: &str,
        mode: &str,
        watermark_before: Option<Watermark>,
    ) -> Result<RunRecord, StateError> {
        // The store is held by one process at a time, so a RUNNING run seen here belongs to a
        // process that stopped mid-run: record that it failed (nothing of it was committed).
        let recent = self.runs(sync, 10)?;
        for stale in recent.iter().filter(|r| r.status == RunStatus::Running) {
            self.end_run_uncommitted(
                stale.clone(),
                RunStatus::Failed,
                Some("interrupted: the process stopped before the run committed; its rows are sent again".into()),
            )?;
        }
        let last = recent.first().map(|r| r.run_id).unwrap_or(0);
        let record = RunRecord {
            run_id: last + 1,
            sync: sync.into(),
            mode: mode.into(),
            status: RunStatus::Running,
            started_at: now_iso(),
            ended_at: None,
            rows_read: 0,
            delivered: 0,
            rejected: 0,
            bytes_sent: 0,
            inserted: 0,
            updated: 0,
            deleted: 0,
            unapplied: 0,
            error: None,
            watermark_before,
            watermark_after: None,
        };
        self.put_run(&record, None)?;
        Ok(record)
    }

    fn put_run(&self, record: &RunRecord, watermark: Option<Watermark>) -> Result<(), StateError> {
        self.put_run_with(record, watermark, None)
    }

    /// Writes the run record, and the watermark and snapshot if given, in one transaction.
    fn put_run_with(
        &self,
        record: &RunRecord,
        watermark: Option<Watermark>,
        snapshot: Option<&SnapshotState>,
    ) -> Result<(), StateError> {
        let json = serde_json::to_string(record).map_err(|e| self.err(e))?;
        let snap = snapshot
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| self.err(e))?;
        let wm = watermark
            .map(|w| serde_json::to_string(&w))
            .transpose()
            .map_err(|e| self.err(e))?;
        self.write(|txn| {
            let mut runs = txn.open_table(RUNS)?;
            runs.insert((record.sync.as_str(), record.run_id), json.as_str())?;
            // Keep the history bounded.
            let floor = record.run_id.saturating_sub(MAX_RUNS_PER_SYNC as u64);
            if floor > 0 {
                runs.retain_in(
                    (record.sync.as_str(), 0)..(record.sync.as_str(), floor),
                    |_, _| false,
                )?;
            }
            if let Some(wm) = &wm {
                txn.open_table(WATERMARKS)?
                    .insert(record.sync.as_str(), wm.as_str())?;
            }
            if let Some(snap) = &snap {
                txn.open_table(SNAPSHOTS)?
                    .insert(record.sync.as_str(), snap.as_str())?;
            }
            Ok(())
        })
    }

    /// Commits a run: its watermark and its SUCCEEDED record, atomically. Call only after
    /// the destination acknowledged every record of the run.
    pub fn commit_run(
        &self,
        mut record: RunRecord,
        watermark_after: Option<Watermark>,
        snapshot: Option<&SnapshotState>,
    ) -> Result<RunRecord, StateError> {
        record.status = RunStatus::Succeeded;
        record.ended_at = Some(now_iso());
        record.watermark_after = watermark_after.or(record.watermark_before);
        self.put_run_with(&record, record.watermark_after, snapshot)?;
        Ok(record)
    }

    /// The committed snapshot of `sync`, if any.
    pub fn snapshot(&self, sync: &str) -> Result<Option<SnapshotState>, StateError> {
        self.json(SNAPSHOTS, sync)
    }

    /// Marks a run FAILED (or CANCELLED); its watermark is not committed.
    pub fn end_run_uncommitted(
        &self,
        mut record: RunRecord,
        status: RunStatus,
        error: Option<String>,
    ) -> Result<RunRecord, StateError> {
        record.status = status;
        record.ended_at = Some(now_iso());
        record.error = error;
        self.put_run(&record, None)?;
        Ok(record)
    }

    /// Pauses `sync` (with a reason) or resumes it (`None`); kept across restarts.
    pub fn set_paused(&self, sync: &str, reason: Option<&str>) -> Result<(), StateError> {
        self.write(|txn| {
            let mut t = txn.open_table(PAUSED)?;
            match reason {
                Some(r) => {
                    t.insert(sync, r)?;
                }
                None => {
                    t.remove(sync)?;
                }
            }
            Ok(())
        })
    }

    /// Why `sync` is paused, if it is.
    pub fn paused(&self, sync: &str) -> Result<Option<String>, StateError> {
        self.text(PAUSED, sync)
    }

    /// The latest `limit` runs of `sync`, newest first.
    pub fn runs(&self, sync: &str, limit: usize) -> Result<Vec<RunRecord>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(RUNS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in table
            .range((sync, 0)..=(sync, u64::MAX))
            .map_err(|e| self.err(e))?
            .rev()
        {
            let (_, v) = item.map_err(|e| self.err(e))?;
            out.push(serde_json::from_str(v.value()).map_err(|e| self.err(e))?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_whose_creation_was_killed_is_created_again_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // What a process killed inside `Database::create` leaves: a file without redb's magic
        // number, under the creating process's own name.
        let left = dir.path().join(format!("state.redb.{}.new", u32::MAX - 1));
        std::fs::write(&left, vec![0u8; 4096]).unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert!(!left.exists(), "the leftover is removed");
        let run = store.begin_run("s", "append", None).unwrap();
        store
            .commit_run(run, Some(Watermark::Integer(1)), None)
            .unwrap();
        drop(store);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["state.redb".to_string()]);
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.watermark("s").unwrap(), Some(Watermark::Integer(1)));
        drop(store);

        // A store that exists but is not whole is never silently replaced.
        std::fs::write(dir.path().join("state.redb"), vec![0u8; 4096]).unwrap();
        let e = StateStore::open(dir.path()).err().expect("refused");
        assert!(e.to_string().contains("damaged"), "{e}");
    }

    #[test]
    fn commit_stores_watermark_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.watermark("s").unwrap(), None);
        let run = store.begin_run("s", "append", None).unwrap();
        assert_eq!(run.run_id, 1);
        store
            .commit_run(run, Some(Watermark::Integer(7)), None)
            .unwrap();
        let run = store
            .begin_run("s", "append", Some(Watermark::Integer(7)))
            .unwrap();
        store
            .end_run_uncommitted(run, RunStatus::Failed, Some("boom".into()))
            .unwrap();
        drop(store);
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.watermark("s").unwrap(), Some(Watermark::Integer(7)));
        let runs = store.runs("s", 10).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].status, RunStatus::Failed);
        assert_eq!(runs[1].status, RunStatus::Succeeded);
        store.set_paused("s", Some("by hand")).unwrap();
        drop(store);
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.paused("s").unwrap().as_deref(), Some("by hand"));
        store.set_paused("s", None).unwrap();
        assert_eq!(store.paused("s").unwrap(), None);
    }
}
