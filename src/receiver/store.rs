//! What the receiver keeps under its data directory: the `/import` event log, the profile
//! update logs (see `profile_state`), and the counters of every endpoint (`stats.json`).
//! Counts that the logs can give (accepted events and updates) are recounted from them at
//! start, so a crash between a log append and the stats write loses nothing.
//!
//! The event log, `events.ndjson.gz`, is NDJSON as a series of gzip members, one per request
//! (`zcat` reads it): a gzipped NDJSON body whose every line was accepted is appended as it
//! came, anything else as the accepted lines gzipped here. Writing the events uncompressed
//! (530 MB per million demo events) made the page cache the receiver's largest cost at 10M
//! events. A log of an earlier version (`events.ndjson`, plain NDJSON) is still read, before
//! the new one.

use super::gzip::gzip;
use super::ndjson_log::scan_ndjson;
use super::profile_state::ProfileState;
use super::*;

/// The dedup keys seen, xxh3-128 hashes already: the set uses their low 64 bits as they are.
type DedupKeys = HashSet<u128, std::hash::BuildHasherDefault<LowBits>>;

/// A `Hasher` for keys that are already hashes.
#[derive(Default)]
struct LowBits(u64);

impl std::hash::Hasher for LowBits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = bytes
            .iter()
            .fold(self.0, |h, &b| h.rotate_left(8) ^ u64::from(b));
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }
}

const EVENTS_FILE: &str = "events.ndjson.gz";
/// The plain NDJSON event log of earlier versions: read, no longer written.
const LEGACY_EVENTS_FILE: &str = "events.ndjson";
const STATS_FILE: &str = "stats.json";

/// The event log plus counters, the dedup set (128-bit key hashes) and the profiles.
pub(super) struct Store {
    dir: PathBuf,
    stats_path: PathBuf,
    file: File,
    /// Dedup keys (already xxh3 hashes: hashed again by their own bits, not SipHash).
    unique: DedupKeys,
    pub(super) stats: ReceiverStats,
    pub(super) endpoints: EndpointStats,
    pub(super) empty_distinct_ids: u64,
    pub(super) profiles: ProfileState,
}

/// The effect of one `/import` request on the store.
#[derive(Default)]
pub(super) struct Batch {
    /// The accepted events' texts, one line each.
    pub(super) lines: Vec<u8>,
    /// The same lines as one or more gzip members: the client's gzip body when that is exactly
    /// what it held, else [`Batch::pack`] makes it.
    pub(super) gzipped: Option<Vec<u8>>,
    /// Their dedup keys.
    pub(super) keys: Vec<u128>,
    pub(super) rejected: u64,
    pub(super) empty_distinct_ids: u64,
}

/// `stats.json`: `/import`'s counters at the top level (as before other endpoints existed),
/// the other endpoints' under their names.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub(super) struct SavedStats {
    #[serde(flatten)]
    pub(super) import: ReceiverStats,
    #[serde(flatten)]
    pub(super) endpoints: EndpointStats,
}

impl Batch {
    /// Gzips the accepted lines for the event log, unless the client's body already is that.
    pub(super) fn pack(&mut self) -> io::Result<()> {
        if self.gzipped.is_none() && !self.lines.is_empty() {
            self.gzipped = Some(gzip(&self.lines)?);
        }
        Ok(())
    }

    /// Adds an accepted event's text (it has no newline); its key goes in `keys`.
    pub(super) fn accept(&mut self, line: &[u8]) {
        self.lines.extend_from_slice(line);
        self.lines.push(b'\n');
    }
}

impl Store {
    pub(super) fn open(dir: &Path) -> Result<Self, ReceiverError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let events_path = dir.join(EVENTS_FILE);
        let stats_path = dir.join(STATS_FILE);
        let (mut unique, mut accepted, mut empty_distinct_ids) = (DedupKeys::default(), 0, 0);
        scan_events(dir, |event| {
            accepted += 1;
            if let Some((key, blank_distinct_id)) = stored_key(&event) {
                unique.insert(key);
                empty_distinct_ids += u64::from(blank_distinct_id);
            }
        })?;
        let saved: SavedStats = match fs::read(&stats_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %stats_path.display(), error = %e, "ignoring unreadable stats file");
                SavedStats::default()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => SavedStats::default(),
            Err(e) => return Err(io_error(&stats_path)(e)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&events_path)
            .map_err(io_error(&events_path))?;
        let stats = ReceiverStats {
            requests: saved.import.requests,
            events_received: accepted + saved.import.events_rejected,
            events_accepted: accepted,
            events_rejected: saved.import.events_rejected,
            unique_events: unique.len() as u64,
        };
        let profiles = ProfileState::open(dir)?;
        let mut endpoints = saved.endpoints;
        for (counts, logged) in [
            (
                &mut endpoints.engage,
                profiles.logged_updates(ProfileKind::Users),
            ),
            (
                &mut endpoints.groups,
                profiles.logged_updates(ProfileKind::Groups),
            ),
        ] {
            counts.updates_accepted = logged;
            counts.updates_received = logged + counts.updates_rejected;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            stats_path,
            file,
            unique,
            stats,
            endpoints,
            empty_distinct_ids,
            profiles,
        })
    }

    /// Counts a request to `endpoint` that stored nothing (an injected failure).
    pub(super) fn count_request(&mut self, endpoint: Endpoint) {
        match endpoint {
            Endpoint::Import => self.stats.requests += 1,
            Endpoint::Engage => self.endpoints.engage.requests += 1,
            Endpoint::Groups => self.endpoints.groups.requests += 1,
            Endpoint::LookupTables => self.endpoints.lookup_tables.requests += 1,
        }
    }

    /// Counts one `/import` request and appends its accepted events (`packed` by
    /// [`Batch::pack`], or why that failed) in a single write.
    pub(super) fn record(&mut self, batch: Batch, packed: io::Result<()>) -> io::Result<()> {
        self.stats.requests += 1;
        let total = batch.keys.len() as u64 + batch.rejected;
        self.stats.events_received += total;
        let written = packed.and_then(|()| match &batch.gzipped {
            Some(member) => self.append(member),
            None => Ok(()),
        });
        if written.is_ok() {
            self.stats.events_accepted += batch.keys.len() as u64;
            self.stats.events_rejected += batch.rejected;
            self.unique.extend(batch.keys.iter().copied());
            self.stats.unique_events = self.unique.len() as u64;
            self.empty_distinct_ids += batch.empty_distinct_ids;
        } else {
            self.stats.events_rejected += total;
        }
        self.save_stats();
        written
    }

    /// Appends one gzip member to the event log; a write that fails part way is cut off
    /// again, so that later members do not follow a broken one.
    fn append(&mut self, member: &[u8]) -> io::Result<()> {
        let before = self.file.metadata()?.len();
        self.file.write_all(member).inspect_err(|_| {
            if let Err(e) = self.file.set_len(before) {
                tracing::error!(error = %e, "could not cut a failed write off the event log");
            }
        })
    }

    /// Calls `each` for every stored event, in arrival order.
    pub(super) fn events(&self, each: impl FnMut(Value)) -> Result<(), ReceiverError> {
        scan_events(&self.dir, each)
    }

    /// The counters as served at `/wharf/stats` and saved in `stats.json`.
    pub(super) fn saved_stats(&self) -> SavedStats {
        SavedStats {
            import: self.stats,
            endpoints: self.endpoints,
        }
    }

    /// Writes `stats.json` (atomically); a failure is only logged.
    pub(super) fn save_stats(&self) {
        let tmp = self.stats_path.with_extension("json.tmp");
        let written = serde_json::to_vec(&self.saved_stats())
            .map_err(io::Error::other)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, &self.stats_path));
        if let Err(e) = written {
            tracing::warn!(path = %self.stats_path.display(), error = %e, "could not save stats");
        }
    }
}

/// Calls `each` for every event of the event logs under `dir`: the legacy plain log, then the
/// gzip one.
fn scan_events(dir: &Path, mut each: impl FnMut(Value)) -> Result<(), ReceiverError> {
    scan_ndjson(&dir.join(LEGACY_EVENTS_FILE), &mut each)?;
    scan_gzip_ndjson(&dir.join(EVENTS_FILE), each)
}

/// A `BufRead` that counts the bytes consumed from it.
struct Counted<R> {
    inner: R,
    consumed: u64,
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.consumed += amt as u64;
        self.inner.consume(amt);
    }
}

/// Calls `each` for every JSON line of an append-only log of gzip members (blank lines
/// skipped; a missing file is empty). Each member is read whole before any of its lines is
/// passed on, so a member cut short by a crash mid-write counts for nothing: it is cut off
/// the file.
fn scan_gzip_ndjson(path: &Path, mut each: impl FnMut(Value)) -> Result<(), ReceiverError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path)(e)),
    };
    let mut reader = Counted {
        inner: BufReader::new(file),
        consumed: 0,
    };
    let (mut text, mut line_no) = (Vec::new(), 0usize);
    while !reader.fill_buf().map_err(io_error(path))?.is_empty() {
        let start = reader.consumed;
        text.clear();
        let read = flate2::bufread::GzDecoder::new(&mut reader).read_to_end(&mut text);
        if let Err(e) = read {
            // Only the last member can be cut short by a crash; anything else is damage.
            if e.kind() != io::ErrorKind::UnexpectedEof {
                return Err(ReceiverError::Corrupt {
                    path: path.to_path_buf(),
                    line: line_no + 1,
                    message: format!("gzip member at byte {start}: {e}"),
                });
            }
            tracing::warn!(path = %path.display(), offset = start, "dropping truncated last gzip member");
            let file = OpenOptions::new().write(true).open(path);
            return file.and_then(|f| f.set_len(start)).map_err(io_error(path));
        }
        for line in text.split(|&b| b == b'\n') {
            line_no += 1;
            if line.trim_ascii().is_empty() {
                continue;
            }
            let event = serde_json::from_slice(line).map_err(|e| ReceiverError::Corrupt {
                path: path.to_path_buf(),
                line: line_no,
                message: e.to_string(),
            })?;
            each(event);
        }
        // The newline that ends a member's text is not the start of another line.
        line_no -= usize::from(text.last() == Some(&b'\n'));
    }
    Ok(())
}
