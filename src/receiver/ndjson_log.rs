//! The receiver's append-only NDJSON logs (the plain event log of earlier versions, the
//! profile update logs), read back at start.

use super::*;

/// Calls `each` for every JSON line of an append-only log (blank lines skipped; a missing
/// file is empty). A truncated last line (a crash mid-write) is cut off the file.
pub(super) fn scan_ndjson(path: &Path, mut each: impl FnMut(Value)) -> Result<(), ReceiverError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path)(e)),
    };
    let mut reader = BufReader::new(file);
    let (mut line, mut offset, mut line_no) = (Vec::new(), 0u64, 0usize);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(io_error(path))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        if line.last() != Some(&b'\n') {
            tracing::warn!(path = %path.display(), line = line_no, "dropping truncated last line");
            let file = OpenOptions::new().write(true).open(path);
            return file.and_then(|f| f.set_len(offset)).map_err(io_error(path));
        }
        offset += n as u64;
        if !line.trim_ascii().is_empty() {
            let corrupt = |e: serde_json::Error| ReceiverError::Corrupt {
                path: path.to_path_buf(),
                line: line_no,
                message: e.to_string(),
            };
            each(serde_json::from_slice(&line).map_err(corrupt)?);
        }
    }
}
