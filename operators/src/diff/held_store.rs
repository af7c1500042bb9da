//! The held trace of a change-stream sync ([`super::held`]), kept on disk so that a new
//! dataflow (a restart, a retry, a reload) starts from what the destination holds instead of
//! from nothing.
//!
//! A sync's folder holds:
//! - `base`: a header (format, generation, what the pairs are of) and the held
//!   `(key hash, fingerprint)` pairs, sorted, 32 bytes each;
//! - `log-<generation>-w<worker>`: each worker's epochs, appended *before* the epoch's rows are
//!   sent: the epoch and its delta, `(key, fingerprint, ±1)`;
//! - `commits-<generation>`: the epochs that committed, appended after each commit.
//!
//! Opening it (once per dataflow, by its first worker) folds the logs into a new base: the
//! delta of an epoch that committed is added; the keys of an epoch that did not (it failed, or
//! the process stopped before its commit was noted) are dropped from the held state, because
//! the destination may or may not have what that epoch sent. A key the held state lacks is
//! always sent as the source says, so every loss of knowledge here costs at most a resend,
//! never a change. The new base gets the next generation, and only then are the old logs
//! removed: a stop in between leaves logs of an older generation, which are ignored.
//!
//! The logs grow with every epoch while a dataflow lives; once they outgrow the base (and
//! 64 MiB), [`HeldStore::wants_fold`] says so, and the sync starts its next run in a new
//! dataflow, which folds them.
//!
//! The pairs are of one hasher layout and one committed snapshot: when either differs (the
//! mapping changed, or a snapshot run committed since, after which the destination holds the
//! snapshot's rows), the held state starts empty.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::snapshot::owner;

const MAGIC: &[u8; 8] = b"WHHELD01";
/// Magic, then generation, layout, snapshot run and pair count.
const HEADER: usize = 8 + 4 * 8;
const PAIR: usize = 32;
const ENTRY: usize = 33;
/// Logs smaller than this are never worth a fold (`WHARF_HELD_FOLD_AFTER` bytes in tests).
const FOLD_AFTER: u64 = 64 << 20;

/// A held `(key hash, fingerprint)` pair.
pub type Pair = (u128, u128);

/// A logged change of the held state: `(key hash, fingerprint, ±1)`.
pub type Entry = (u128, u128, i8);

/// The on-disk held state of one change-stream sync.
pub struct HeldStore {
    dir: PathBuf,
    /// What the pairs are of: the hasher's layout and the committed snapshot's run.
    layout: u64,
    snapshot_run: u64,
    opened: OnceLock<Result<Opened, String>>,
    /// Bytes appended to the logs by this store's writers.
    logged: Arc<AtomicU64>,
    /// Logs smaller than this are never worth a fold.
    fold_after: u64,
}

struct Opened {
    generation: u64,
    /// The base's size in bytes.
    base_bytes: u64,
    /// The held pairs, sorted, until every worker took its own.
    pairs: Mutex<Option<Vec<Pair>>>,
    taken: Mutex<usize>,
}

/// Appends one worker's epochs to its log.
pub struct HeldWriter {
    path: PathBuf,
    file: File,
    logged: Arc<AtomicU64>,
}

impl HeldStore {
    /// The held state in `dir` of pairs made by the hasher with `layout` (see
    /// `RowHasher::layout_id`) after the snapshot committed by run `snapshot_run` (0: none).
    /// Nothing is read until a worker asks.
    pub fn new(dir: PathBuf, layout: u64, snapshot_run: u64) -> Self {
        HeldStore {
            dir,
            layout,
            snapshot_run,
            opened: OnceLock::new(),
            logged: Arc::default(),
            fold_after: std::env::var("WHARF_HELD_FOLD_AFTER")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(FOLD_AFTER),
        }
    }

    fn opened(&self) -> Result<&Opened, String> {
        self.opened
            .get_or_init(|| {
                let (generation, pairs) = fold(&self.dir, self.layout, self.snapshot_run)
                    .map_err(|e| format!("held state in {}: {e}", self.dir.display()))?;
                Ok(Opened {
                    generation,
                    base_bytes: (pairs.len() * PAIR) as u64,
                    pairs: Mutex::new(Some(pairs)),
                    taken: Mutex::new(0),
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The held pairs of the keys `worker` of `peers` owns, sorted (opening the store).
    pub fn initial(&self, worker: usize, peers: usize) -> Result<Vec<Pair>, String> {
        let opened = self.opened()?;
        let mine = {
            let pairs = opened.pairs.lock().map_err(|e| e.to_string())?;
            pairs
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter(|(k, _)| owner(*k, peers) == worker)
                .copied()
                .collect()
        };
        // Once every worker took its own, the whole is no longer needed.
        let mut taken = opened.taken.lock().map_err(|e| e.to_string())?;
        *taken += 1;
        if *taken >= peers {
            if let Ok(mut pairs) = opened.pairs.lock() {
                *pairs = None;
            }
        }
        Ok(mine)
    }

    /// `worker`'s log (opening the store).
    pub fn writer(&self, worker: usize) -> Result<HeldWriter, String> {
        let generation = self.opened()?.generation;
        let path = self.dir.join(format!("log-{generation}-w{worker}"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(HeldWriter {
            path,
            file,
            logged: self.logged.clone(),
        })
    }

    /// Whether the logs outgrew the base (and 64 MiB): the next dataflow should fold them.
    pub fn wants_fold(&self) -> bool {
        let Some(Ok(opened)) = self.opened.get() else {
            return false;
        };
        self.logged.load(Ordering::Relaxed) > opened.base_bytes.max(self.fold_after)
    }

    /// Notes that `epoch` committed. Nothing to do if this store was never opened (its
    /// dataflow logged nothing). Not noting it is safe: the epoch's keys are then dropped
    /// from the held state at the next open.
    pub fn committed(&self, epoch: u64) -> Result<(), String> {
        let Some(Ok(opened)) = self.opened.get() else {
            return Ok(());
        };
        let path = self.dir.join(format!("commits-{}", opened.generation));
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&epoch.to_le_bytes()))
            .map_err(|e| format!("cannot note the commit in {}: {e}", path.display()))
    }
}

impl HeldWriter {
    /// Appends `epoch`'s delta and makes it durable; call before any of its rows is sent.
    pub fn append(&mut self, epoch: u64, delta: &[Entry]) -> Result<(), String> {
        if delta.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(12 + delta.len() * ENTRY);
        buf.extend_from_slice(&epoch.to_le_bytes());
        buf.extend_from_slice(&(delta.len() as u32).to_le_bytes());
        for (key, fp, diff) in delta {
            buf.extend_from_slice(&key.to_le_bytes());
            buf.extend_from_slice(&fp.to_le_bytes());
            buf.push(*diff as u8);
        }
        self.file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        self.logged.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Files of the folder: (base, logs and commits by generation).
fn files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The generation a log or commits file belongs to.
fn generation_of(name: &str) -> Option<u64> {
    let rest = name
        .strip_prefix("log-")
        .or_else(|| name.strip_prefix("commits-"))?;
    rest.split('-').next()?.parse().ok()
}

/// Reads the base: (generation, pairs) if it is of `layout` and `snapshot_run`; otherwise
/// its generation and no pairs.
fn read_base(
    path: &Path,
    layout: u64,
    snapshot_run: u64,
) -> Result<(u64, Vec<Pair>, bool), String> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(f) => BufReader::new(f)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, Vec::new(), false)),
        Err(e) => return Err(e.to_string()),
    };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC || (bytes.len() - HEADER) % PAIR != 0 {
        return Err(
            "the base file is not one wharf wrote; remove the folder (the next \
                    changes of each key are then sent as they are)"
                .into(),
        );
    }
    let word =
        |i: usize| u64::from_le_bytes(bytes[8 + 8 * i..16 + 8 * i].try_into().unwrap_or_default());
    let generation = word(0);
    if word(3) as usize != (bytes.len() - HEADER) / PAIR {
        return Err(
            "the base file is cut short; remove the folder (the next changes of each \
                    key are then sent as they are)"
                .into(),
        );
    }
    if word(1) != layout || word(2) != snapshot_run {
        return Ok((generation, Vec::new(), false));
    }
    let pairs = bytes[HEADER..]
        .chunks_exact(PAIR)
        .map(|c| (u128_at(c, 0), u128_at(c, 16)))
        .collect();
    Ok((generation, pairs, true))
}

fn u128_at(bytes: &[u8], at: usize) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[at..at + 16]);
    u128::from_le_bytes(b)
}

/// The records of a log, in order; a torn last record (the process stopped while writing
/// it, before any of its rows was sent) is left out.
fn read_log(path: &Path) -> Result<Vec<(u64, Vec<Entry>)>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 12 {
        let epoch = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let n = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap_or_default()) as usize;
        let end = at + 12 + n * ENTRY;
        if bytes.len() < end {
            break;
        }
        let entries = bytes[at + 12..end]
            .chunks_exact(ENTRY)
            .map(|c| (u128_at(c, 0), u128_at(c, 16), c[32] as i8))
            .collect();
        out.push((epoch, entries));
        at = end;
    }
    Ok(out)
}

/// Folds the folder into a new base (see the module's text) and returns its generation and
/// pairs.
fn fold(dir: &Path, layout: u64, snapshot_run: u64) -> Result<(u64, Vec<Pair>), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create it: {e}"))?;
    let (generation, base, fits) = read_base(&dir.join("base"), layout, snapshot_run)?;
    let listed = files(dir).map_err(|e| e.to_string())?;
    let current: Vec<&(String, PathBuf)> = listed
        .iter()
        .filter(|(name, _)| generation_of(name) == Some(generation))
        .collect();
    if fits && current.is_empty() {
        // Nothing happened since the base was written: keep it and its generation.
        remove_stale(&listed, generation);
        return Ok((generation, base));
    }
    let mut committed = HashSet::new();
    let mut records = Vec::new();
    if fits {
        for (name, path) in &current {
            if name.starts_with("commits-") {
                let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                committed.extend(
                    bytes
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())),
                );
            } else {
                records.extend(read_log(path)?);
            }
        }
    }
    let mut diffs: Vec<(Pair, i64)> = Vec::new();
    let mut unknown: Vec<u128> = Vec::new();
    for (epoch, entries) in records {
        if committed.contains(&epoch) {
            diffs.extend(entries.iter().map(|(k, fp, d)| ((*k, *fp), i64::from(*d))));
        } else {
            unknown.extend(entries.iter().map(|(k, _, _)| *k));
        }
    }
    differential_dataflow::consolidation::consolidate(&mut diffs);
    unknown.sort_unstable();
    unknown.dedup();
    let pairs = if fits {
        merge(&base, &diffs, &unknown)
    } else {
        Vec::new()
    };
    let next = generation + 1;
    write_base(dir, next, layout, snapshot_run, &pairs)?;
    remove_stale(&listed, next);
    Ok((next, pairs))
}

/// `base` (+1 each) and `diffs` added, pairs above 0 kept, keys in `unknown` dropped; all
/// three sorted.
fn merge(base: &[Pair], diffs: &[(Pair, i64)], unknown: &[u128]) -> Vec<Pair> {
    let mut out = Vec::with_capacity(base.len() + diffs.len());
    let (mut b, mut d) = (base.iter().peekable(), diffs.iter().peekable());
    loop {
        let (pair, count) = match (b.peek(), d.peek()) {
            (None, None) => break,
            (Some(&&p), None) => {
                b.next();
                (p, 1)
            }
            (None, Some(&&(p, n))) => {
                d.next();
                (p, n)
            }
            (Some(&&p), Some(&&(q, n))) => {
                if p < q {
                    b.next();
                    (p, 1)
                } else if q < p {
                    d.next();
                    (q, n)
                } else {
                    b.next();
                    d.next();
                    (p, 1 + n)
                }
            }
        };
        if count > 0 && unknown.binary_search(&pair.0).is_err() {
            out.push(pair);
        }
    }
    out
}

/// Writes the base of `generation` (a temporary file, then renamed over the old one).
fn write_base(
    dir: &Path,
    generation: u64,
    layout: u64,
    snapshot_run: u64,
    pairs: &[Pair],
) -> Result<(), String> {
    let tmp = dir.join("base.new");
    let path = dir.join("base");
    let write = || -> std::io::Result<()> {
        let mut w = BufWriter::new(File::create(&tmp)?);
        w.write_all(MAGIC)?;
        for word in [generation, layout, snapshot_run, pairs.len() as u64] {
            w.write_all(&word.to_le_bytes())?;
        }
        for (k, fp) in pairs {
            w.write_all(&k.to_le_bytes())?;
            w.write_all(&fp.to_le_bytes())?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Removes the logs and commits of generations other than `keep`.
fn remove_stale(listed: &[(String, PathBuf)], keep: u64) {
    for (name, path) in listed {
        if generation_of(name).is_some_and(|g| g != keep) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> HeldStore {
        HeldStore::new(dir.to_path_buf(), 7, 1)
    }

    /// A store in a new folder holding `(1, 10)` from committed epoch 2, not yet folded.
    fn one_committed() -> (tempfile::TempDir, HeldStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut w = s.writer(0).unwrap();
        w.append(2, &[(1, 10, 1)]).unwrap();
        s.committed(2).unwrap();
        (dir, s)
    }

    #[test]
    fn committed_epochs_are_kept_and_the_keys_of_others_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert!(s.initial(0, 1).unwrap().is_empty());
        let mut w = s.writer(0).unwrap();
        w.append(5, &[(1, 10, 1), (2, 20, 1), (3, 30, 1)]).unwrap();
        s.committed(5).unwrap();
        // Epoch 6 changes key 1 and deletes key 2, then fails: both become unknown.
        w.append(6, &[(1, 10, -1), (1, 11, 1), (2, 20, -1)])
            .unwrap();
        drop(w);

        let s = store(dir.path());
        assert_eq!(s.initial(0, 1).unwrap(), vec![(3, 30)]);
        let mut w = s.writer(0).unwrap();
        w.append(7, &[(3, 30, -1), (3, 31, 1), (4, 40, 1)]).unwrap();
        s.committed(7).unwrap();
        drop(w);

        // Two workers each get the keys they own.
        let s = store(dir.path());
        let mut all = s.initial(0, 2).unwrap();
        all.extend(s.initial(1, 2).unwrap());
        all.sort_unstable();
        assert_eq!(all, vec![(3, 31), (4, 40)]);
        // No log since: the base is kept as it is.
        let s = store(dir.path());
        assert_eq!(s.initial(0, 1).unwrap(), vec![(3, 31), (4, 40)]);
        // Logs worth a fold: more than the base and 64 MiB.
        let mut w = s.writer(0).unwrap();
        let many: Vec<Entry> = (0..1u128 << 16).map(|k| (k << 64, 1, 1)).collect();
        // 2,162,700 bytes an epoch: 31 stay under 64 MiB, 32 do not.
        for epoch in 0..32 {
            assert!(!s.wants_fold(), "epoch {epoch}");
            w.append(100 + epoch, &many).unwrap();
        }
        assert!(s.wants_fold());
    }

    #[test]
    fn another_layout_or_snapshot_starts_empty() {
        let (dir, _) = one_committed();
        assert_eq!(store(dir.path()).initial(0, 1).unwrap(), vec![(1, 10)]);
        let other = HeldStore::new(dir.path().to_path_buf(), 8, 1);
        assert!(other.initial(0, 1).unwrap().is_empty());
        let resnapshotted = HeldStore::new(dir.path().to_path_buf(), 7, 9);
        assert!(resnapshotted.initial(0, 1).unwrap().is_empty());
    }

    #[test]
    fn a_torn_record_is_left_out_and_old_generations_ignored() {
        let (dir, _) = one_committed();
        let log = dir.path().join("log-1-w0");
        // A record cut short, as by a stop while writing it.
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&3u64.to_le_bytes()).unwrap();
        f.write_all(&2u32.to_le_bytes()).unwrap();
        f.write_all(&[0u8; 40]).unwrap();
        drop(f);
        // A copy of the log as if the stop came after the new base, before the removal.
        let old = std::fs::read(&log).unwrap();
        assert_eq!(store(dir.path()).initial(0, 1).unwrap(), vec![(1, 10)]);
        assert!(!log.exists());
        std::fs::write(&log, old).unwrap();
        std::fs::write(dir.path().join("commits-1"), 2u64.to_le_bytes()).unwrap();
        assert_eq!(store(dir.path()).initial(0, 1).unwrap(), vec![(1, 10)]);
    }
}
