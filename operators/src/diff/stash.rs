//! The run's Arrow batches, kept per worker until the classification says which rows changed:
//! in memory up to a budget, then spilled to an Arrow IPC file.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

/// A worker's stashed batches.
pub(super) enum Stash {
    Memory {
        batches: Vec<RecordBatch>,
        bytes: usize,
    },
    Spilled {
        writer: Option<Box<StreamWriter<BufWriter<File>>>>,
        path: PathBuf,
        schema: SchemaRef,
    },
}

impl Default for Stash {
    fn default() -> Self {
        Stash::Memory {
            batches: Vec::new(),
            bytes: 0,
        }
    }
}

impl Stash {
    pub(super) fn push(
        &mut self,
        batch: RecordBatch,
        budget: usize,
        dir: &Path,
        worker: usize,
    ) -> Result<(), String> {
        match self {
            Stash::Memory { batches, bytes } => {
                *bytes += batch.get_array_memory_size();
                batches.push(batch);
                if *bytes > budget {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                    let path = dir.join(format!("stash-{}-{worker}.arrow", std::process::id()));
                    let schema = batches[0].schema();
                    let file = File::create(&path)
                        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                    let mut w =
                        StreamWriter::try_new(BufWriter::with_capacity(1 << 20, file), &schema)
                            .map_err(|e| format!("cannot spill batches: {e}"))?;
                    for b in batches.drain(..) {
                        w.write(&b)
                            .map_err(|e| format!("cannot spill batches: {e}"))?;
                    }
                    *self = Stash::Spilled {
                        writer: Some(Box::new(w)),
                        path,
                        schema,
                    };
                }
                Ok(())
            }
            Stash::Spilled { writer, schema, .. } => {
                let w = writer
                    .as_mut()
                    .ok_or("batch stashed after the stash was read")?;
                let batch = if batch.schema() == *schema {
                    batch
                } else {
                    batch
                        .with_schema(schema.clone())
                        .map_err(|e| format!("batches of one snapshot differ in schema: {e}"))?
                };
                w.write(&batch)
                    .map_err(|e| format!("cannot spill batches: {e}"))
            }
        }
    }

    /// Turns the stash into an iterator over its batches.
    pub(super) fn drain(&mut self) -> Result<StashIter, String> {
        match std::mem::replace(
            self,
            Stash::Memory {
                batches: Vec::new(),
                bytes: 0,
            },
        ) {
            Stash::Memory { batches, .. } => Ok(StashIter::Memory(batches.into_iter())),
            Stash::Spilled { writer, path, .. } => {
                if let Some(mut w) = writer {
                    w.finish()
                        .map_err(|e| format!("cannot spill batches: {e}"))?;
                }
                let file = File::open(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                // The file is unlinked now and vanishes when the reader is dropped.
                let _ = std::fs::remove_file(&path);
                let reader = StreamReader::try_new(BufReader::with_capacity(1 << 20, file), None)
                    .map_err(|e| format!("cannot read spilled batches: {e}"))?;
                Ok(StashIter::Spilled(reader))
            }
        }
    }
}

pub(super) enum StashIter {
    Memory(std::vec::IntoIter<RecordBatch>),
    Spilled(StreamReader<BufReader<File>>),
}

impl StashIter {
    pub(super) fn next_batch(&mut self) -> Option<Result<RecordBatch, String>> {
        match self {
            StashIter::Memory(it) => it.next().map(Ok),
            StashIter::Spilled(r) => r
                .next()
                .map(|b| b.map_err(|e| format!("cannot read spilled batches: {e}"))),
        }
    }
}
