//! The rejects file: one NDJSON line per row that was not sent, with the reason.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use wharf_operators::dataflow::RejectSink;
use wharf_operators::encode::write_json_str;
use wharf_operators::record::Reject;

/// Appends rejects of one run to a file.
pub struct RejectsFile {
    path: PathBuf,
    prefix: Vec<u8>,
    out: Mutex<Option<BufWriter<File>>>,
}

impl RejectsFile {
    /// Rejects of run `run_id` of `sync` go to `path` (opened on the first reject).
    pub fn new(path: &Path, sync: &str, run_id: u64) -> RejectsFile {
        let mut prefix = b"{\"sync\":".to_vec();
        write_json_str(&mut prefix, sync);
        prefix.extend_from_slice(format!(",\"run_id\":{run_id},\"at\":").as_bytes());
        RejectsFile {
            path: path.to_path_buf(),
            prefix,
            out: Mutex::new(None),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the written rejects durable (before a run commits).
    pub fn flush(&self) -> std::io::Result<()> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| std::io::Error::other("rejects writer poisoned"))?;
        if let Some(w) = out.as_mut() {
            w.flush()?;
            w.get_ref().sync_data()?;
        }
        Ok(())
    }
}

impl RejectSink for RejectsFile {
    fn record(&self, rejects: &[Reject]) -> Result<(), String> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| "rejects writer poisoned".to_string())?;
        if out.is_none() {
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
            *out = Some(BufWriter::new(f));
        }
        let Some(w) = out.as_mut() else {
            return Err("rejects file not open".into());
        };
        let at = crate::state::now_iso();
        let mut line = Vec::with_capacity(256);
        for r in rejects {
            line.clear();
            line.extend_from_slice(&self.prefix);
            write_json_str(&mut line, &at);
            line.extend_from_slice(b",\"key\":");
            // The key is JSON already (an object of key columns).
            if serde_json::from_str::<serde_json::Value>(&r.key).is_ok() {
                line.extend_from_slice(r.key.as_bytes());
            } else {
                write_json_str(&mut line, &r.key);
            }
            if let Some(id) = &r.insert_id {
                line.extend_from_slice(b",\"$insert_id\":");
                write_json_str(&mut line, id);
            }
            line.extend_from_slice(b",\"reason\":");
            write_json_str(&mut line, &r.reason);
            line.extend_from_slice(b"}\n");
            w.write_all(&line)
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
        }
        Ok(())
    }
}

/// A run's two logs: rejected rows, and changes the destination cannot apply (the change log,
/// e.g. deleted events, which Mixpanel cannot delete).
pub struct RunLogs {
    /// Rejected rows.
    pub rejects: RejectsFile,
    /// Unapplied changes.
    pub changes: RejectsFile,
}

impl RunLogs {
    /// Makes both durable.
    pub fn flush(&self) -> std::io::Result<()> {
        self.rejects.flush()?;
        self.changes.flush()
    }
}

impl RejectSink for RunLogs {
    fn record(&self, rejects: &[Reject]) -> Result<(), String> {
        self.rejects.record(rejects)
    }

    fn record_unapplied(&self, changes: &[Reject]) -> Result<(), String> {
        self.changes.record(changes)
    }
}
