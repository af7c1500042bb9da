//! NDJSON file (or stdout): exactly the records that would be sent. The dry-run destination.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use wharf_operators::record::EncodedRecords;
use wharf_pipelines::destination::{BoxFuture, Destination, DestinationError, SendOutcome};

enum Out {
    File(BufWriter<File>),
    Stdout(std::io::Stdout),
}

/// Appends records as NDJSON to a file, or writes them to stdout.
pub struct FileDestination {
    path: Option<PathBuf>,
    out: Mutex<Out>,
}

impl FileDestination {
    /// Opens `path` for appending (creating folders); `-` means stdout.
    pub fn open(path: &Path) -> Result<FileDestination, DestinationError> {
        if path == Path::new("-") {
            return Ok(FileDestination {
                path: None,
                out: Mutex::new(Out::Stdout(std::io::stdout())),
            });
        }
        let fail = |e: std::io::Error| DestinationError::Permanent {
            message: format!("cannot open {}: {e}", path.display()),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(fail)?;
        Ok(FileDestination {
            path: Some(path.to_path_buf()),
            out: Mutex::new(Out::File(BufWriter::with_capacity(1 << 20, file))),
        })
    }

    fn io_err(&self, e: std::io::Error) -> DestinationError {
        DestinationError::Permanent {
            message: format!("cannot write {}: {e}", self.describe()),
        }
    }
}

impl Destination for FileDestination {
    fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("file {}", p.display()),
            None => "stdout".into(),
        }
    }

    fn send<'a>(
        &'a self,
        records: &'a EncodedRecords,
    ) -> BoxFuture<'a, Result<SendOutcome, DestinationError>> {
        Box::pin(async move {
            let mut out = self.out.lock().map_err(|_| DestinationError::Permanent {
                message: "file writer poisoned by an earlier panic".into(),
            })?;
            let r = match &mut *out {
                Out::File(w) => w.write_all(&records.data),
                Out::Stdout(s) => s.lock().write_all(&records.data),
            };
            r.map_err(|e| self.io_err(e))?;
            Ok(SendOutcome {
                delivered: records.len(),
                rejects: Vec::new(),
            })
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), DestinationError>> {
        Box::pin(async move {
            let mut out = self.out.lock().map_err(|_| DestinationError::Permanent {
                message: "file writer poisoned by an earlier panic".into(),
            })?;
            match &mut *out {
                Out::File(w) => {
                    w.flush().map_err(|e| self.io_err(e))?;
                    w.get_ref().sync_data().map_err(|e| self.io_err(e))
                }
                Out::Stdout(s) => s.flush().map_err(|e| self.io_err(e)),
            }
        })
    }
}
