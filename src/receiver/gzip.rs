//! The receiver's gzip, on flate2 alone. Deliberately not the sender's `destination::gzip`
//! (ISA-L with a zlib-rs fallback): a receiver that inflated with the sender's code could not
//! catch the sender's gzip mistakes.

use std::io::{Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

/// Why a body could not be inflated.
#[derive(Debug)]
pub(super) enum Inflate {
    /// Not gzip, or damaged (flate2's message).
    Invalid(String),
    /// More than the limit once inflated.
    TooLarge,
}

/// Inflates every member of `body`; refuses to produce more than `limit` bytes.
pub(super) fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, Inflate> {
    let mut inflated = Vec::new();
    let bounded = (limit as u64).saturating_add(1);
    if let Err(e) = MultiGzDecoder::new(body)
        .take(bounded)
        .read_to_end(&mut inflated)
    {
        return Err(Inflate::Invalid(e.to_string()));
    }
    if inflated.len() > limit {
        return Err(Inflate::TooLarge);
    }
    Ok(inflated)
}

/// One gzip member of `data` (fast level: the event log is rewritten often, read rarely).
pub(super) fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data)?;
    encoder.finish()
}
