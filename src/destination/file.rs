//! NDJSON file (or stdout): exactly the records that would be sent. The dry-run destination.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wharf_operators::dataflow::BatchLimits;
use wharf_operators::record::EncodedRecords;
use wharf_pipelines::delivery::RetryPolicy;
use wharf_pipelines::destination::{
    BoxFuture, Destination, DestinationError, SendOutcome, Sending,
};

use super::{BuildContext, BuiltDestination};

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
            .read(true)
            .append(true)
            .open(path)
            .map_err(fail)?;
        let cut = cut_torn_line(&file).map_err(fail)?;
        if cut > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = cut,
                "removed the unfinished last line a stopped run left (its run did not commit: \
                 it is sent again)"
            );
        }
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

/// Cuts an unfinished last line off `file` (a run killed while writing leaves one; appending
/// to it would glue the next record onto it). Returns the bytes cut.
fn cut_torn_line(file: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        file.set_len(end)?;
    }
    Ok(len - end)
}

impl Destination for FileDestination {
    fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("file {}", p.display()),
            None => "stdout".into(),
        }
    }

    fn send<'a>(&'a self, records: &'a EncodedRecords) -> Sending<'a> {
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

/// Builds the file destination `name` (`path` relative to the config file; `-` is stdout):
/// one request at a time, up to 8192 records or 8 MB each.
pub fn build(
    path: &str,
    name: &str,
    ctx: &BuildContext,
) -> Result<BuiltDestination, DestinationError> {
    let p = if path == "-" {
        PathBuf::from("-")
    } else {
        ctx.config.resolve(Path::new(path))
    };
    Ok(BuiltDestination {
        name: name.to_string(),
        destination: Arc::new(FileDestination::open(&p)?),
        policy: RetryPolicy {
            concurrency: 1,
            ..RetryPolicy::default()
        },
        limits: BatchLimits {
            max_records: 8192,
            max_bytes: 8 << 20,
        },
        // Syncs of changes write them with their ops; append syncs what would be sent.
        envelope: ctx.changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_last_line_is_cut_and_whole_lines_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        for (content, kept) in [
            ("", ""),
            ("{\"a\":1}\n", "{\"a\":1}\n"),
            ("{\"a\":1}\n{\"b\":", "{\"a\":1}\n"),
            ("{\"b\":", ""),
        ] {
            std::fs::write(&path, content).unwrap();
            let d = FileDestination::open(&path).unwrap();
            drop(d);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), kept);
        }
        // A torn line longer than one read chunk.
        let long = format!("{{\"x\":1}}\n{}", "y".repeat(200_000));
        std::fs::write(&path, long).unwrap();
        drop(FileDestination::open(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"x\":1}\n");
    }
}
