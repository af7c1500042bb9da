//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not a stable API).
//!
//! Each function feeds arbitrary input to one of wharf's parsers, most of which are private
//! to their modules: the wrappers here (and the `fuzz_*` functions next to the parsers, built
//! only with this feature) call them as the production code does. Errors the parsers report
//! for bad input are expected and returned or dropped; a panic is a bug. A few entry points
//! also assert properties that need private access (documented on them), which the fuzz
//! targets could not check from outside.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use wharf_operators::arrow::array::RecordBatch;

use crate::config::{Config, WarehouseConfig};
use crate::receiver;
use crate::warehouse::postgres::Layout;
use crate::warehouse::{bigquery, databricks, snowflake};
use crate::warehouse::{ChangePoll, SnapshotVisibility};

/// Parses `text` as a `wharf.toml` ([`Config::parse`]: TOML, `${VAR}` expansion, types and
/// validation) and, when it is valid, builds each warehouse's settings from it
/// ([`crate::warehouse::open`]; a BigQuery `credentials_file` is not read).
pub fn config(text: &str) -> Result<Config, String> {
    let config = Config::parse(text, "wharf.toml").map_err(|e| e.to_string())?;
    for (name, warehouse) in &config.warehouses {
        if matches!(warehouse, WarehouseConfig::Bigquery(b) if b.credentials_file.is_some()) {
            continue;
        }
        let _ = crate::warehouse::open(&config, name);
    }
    Ok(config)
}

/// Request headers from `(name, value)` pairs; pairs HTTP does not allow are left out.
pub fn headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// One `POST /import` of the Mixpanel test receiver: query string, headers and body through
/// auth, content decoding (gzip), the body shapes (JSON, NDJSON, form), the per-event rules
/// (fast path and `Value` path) and the answer. Asserts that every stored event is one JSON
/// line that passes the rules with the dedup key recorded for it.
pub fn receiver_import(query: &str, headers: &HeaderMap, body: Vec<u8>) {
    receiver::fuzz_import(query, headers, body);
}

/// One `POST /engage` (`groups`: `/groups`) of the test receiver: the body read, each update
/// validated and applied to profiles in memory, the answer rendered.
pub fn receiver_profiles(groups: bool, query: &str, headers: &HeaderMap, body: Vec<u8>) {
    receiver::fuzz_profiles(groups, query, headers, body);
}

/// A lookup table replacement's body (content decoding, RFC 4180 CSV, the table rules) and
/// its id.
pub fn receiver_lookup(id: &str, headers: &HeaderMap, body: Vec<u8>) {
    receiver::fuzz_lookup(id, headers, body);
}

/// The test receiver's CSV reader: records of fields, or the failing record and why.
pub fn lookup_csv(text: &str) -> Result<Vec<Vec<String>>, (usize, String)> {
    receiver::fuzz_csv_records(text)
}

/// Inflates a gzip request body (ISA-L when installed, else zlib-rs), producing at most
/// `limit` bytes. Asserts that what ISA-L inflates, zlib-rs inflates to the same bytes.
pub fn gunzip(data: &[u8], limit: usize) -> Option<Vec<u8>> {
    crate::destination::gzip::fuzz_gunzip(data, limit).ok()
}

/// A Snowflake query answer (JSON) with an inline Arrow result (`rowsetBase64`).
pub fn snowflake_answer(body: &[u8]) -> Result<Vec<RecordBatch>, String> {
    snowflake::fuzz_answer(body)
}

/// A Snowflake result chunk (gzipped or not) decoded for `rowtype` (the JSON of a query
/// answer's `rowtype` array).
pub fn snowflake_chunk(chunk: &[u8], rowtype: &str) -> Result<Vec<RecordBatch>, String> {
    let rowtype: Vec<snowflake::arrow::RowType> =
        serde_json::from_str(rowtype).map_err(|e| e.to_string())?;
    let bytes = snowflake::arrow::gunzip_if_needed(chunk)?;
    let schema = snowflake::arrow::schema(&rowtype);
    snowflake::arrow::decode(&bytes, &rowtype, &schema)
}

/// A Databricks statement answer (JSON, inline rows) and an `ARROW_STREAM` result chunk
/// read with the answer's manifest.
pub fn databricks_statement(body: &[u8], chunk: &[u8]) -> Result<Vec<RecordBatch>, String> {
    databricks::fuzz_statement(body, chunk)
}

/// A BigQuery REST page (JSON) and, when `storage` is not empty, a Storage Read API session
/// answer followed by `ReadRows` messages (protobuf with Arrow IPC), conformed to the page's
/// schema.
pub fn bigquery_page(body: &[u8], storage: &[&[u8]]) -> Result<Vec<RecordBatch>, String> {
    bigquery::fuzz_page(body, storage)
}

/// PostgreSQL logical decoding (`pgoutput`, protocol 1): `messages` folded into compacted
/// changes of a table laid out as `layout` with key columns `keys`, then made batches.
pub fn pg_logical(
    layout: &Layout,
    keys: &[String],
    seen: Option<SnapshotVisibility>,
    messages: &[&[u8]],
) -> Result<ChangePoll, String> {
    crate::warehouse::postgres::logical::fuzz_decode(layout, keys, seen, messages)
}

/// Whether this thread is inside an Arrow IPC read whose panics wharf catches and reports as
/// errors (`crate::warehouse::ipc_read`): a fuzz target's panic hook lets those panics unwind.
pub fn in_ipc_read() -> bool {
    crate::warehouse::IN_IPC_READ.with(|inside| inside.get())
}
