//! A run's input: how a warehouse read (or batches already in hand) becomes the
//! [`StartReader`] of a run's source, off the timely workers.

use wharf_operators::arrow::array::RecordBatch;
use wharf_operators::dataflow::{SourceMessage, SourceSender, StartReader};

/// A read run on tokio's blocking pool (`handle`): `read` hands each batch to its callback,
/// which answers `false` once the run takes no more; an error it returns fails the run. The
/// run's input ends when `read` returns.
pub fn blocking_reader<F>(handle: tokio::runtime::Handle, read: F) -> StartReader
where
    F: FnOnce(&mut dyn FnMut(RecordBatch) -> bool) -> Result<(), String> + Send + 'static,
{
    Box::new(move |sender: SourceSender| {
        handle.spawn_blocking(move || feed(sender, read));
    })
}

/// Batches already in hand, sent from a thread of their own.
pub fn batches_reader(batches: Vec<RecordBatch>) -> StartReader {
    Box::new(move |sender: SourceSender| {
        std::thread::spawn(move || {
            feed(sender, move |send| {
                for batch in batches {
                    if !send(batch) {
                        break;
                    }
                }
                Ok(())
            })
        });
    })
}

/// Runs `read` into `sender`; dropping the sender at the end completes the input.
fn feed<F>(sender: SourceSender, read: F)
where
    F: FnOnce(&mut dyn FnMut(RecordBatch) -> bool) -> Result<(), String>,
{
    let result = read(&mut |batch| sender.send(SourceMessage::Batch(batch)).is_ok());
    if let Err(reason) = result {
        let _ = sender.send(SourceMessage::Failed(reason));
    }
}
