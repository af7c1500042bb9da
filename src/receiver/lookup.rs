//! `PUT /lookup-tables/{id}?project_id=P`, after Mixpanel's `reference/replace-lookup-table`
//! and the OpenAPI spec: service-account auth (as `/import`), `Content-Type: text/csv`
//! (optionally gzip), RFC 4180 with a header row whose names are unique, the first column the
//! key (unique, not blank). The table is replaced whole or not at all; a 400 lists at most the
//! first 10 failed rows; more than 100 MB of CSV is a 413.
//!
//! Choices where the docs are silent or disagree:
//! - The 400 body follows the OpenAPI spec (`{"code":400,"error":…,"failed_records":[{"index",
//!   "message"}],"status":"Bad Request"}`); the prose page shows `"status":0` instead.
//! - `index` is the 0-based position of the data row (the header is not counted), like
//!   `/import`'s record index.
//! - Mixpanel only replaces tables created in its UI; this receiver has no UI, so any id that
//!   is a UUID (the documented format) is created by its first PUT, other ids are 404.
//! - The 100 replacements per 24 h limit is not enforced.
//!
//! Each table is stored as `<data_dir>/lookup-tables/<id>.json`, written to a temporary file
//! and renamed, so a replacement is atomic and survives a restart.

use axum::extract::Path as UrlPath;

use super::*;

const TABLES_DIR: &str = "lookup-tables";
/// Mixpanel reports at most this many failed rows.
const MAX_FAILED_ROWS: usize = 10;

/// A stored lookup table, as served at `GET /wharf/lookup-tables/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LookupTable {
    /// Column names; the first is the key.
    pub header: Vec<String>,
    /// Rows in the order received, each as long as the header.
    pub rows: Vec<Vec<String>>,
}

/// Why a CSV body is refused (400).
#[derive(Debug)]
struct Invalid {
    error: String,
    failed: Vec<Value>,
}

fn invalid(error: impl Into<String>) -> Invalid {
    Invalid {
        error: error.into(),
        failed: Vec::new(),
    }
}

/// `PUT /lookup-tables/{id}`.
pub(super) async fn replace(
    State(state): State<Arc<ReceiverState>>,
    UrlPath(id): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = read_body(body, state.config.max_lookup_table_bytes).await;
    answer(state, Endpoint::LookupTables, move |state, n| {
        let reply = evaluate(state, &id, query.as_deref().unwrap_or(""), &headers, body);
        let mut store = state.store();
        let stats = &mut store.endpoints.lookup_tables;
        stats.requests += 1;
        let handled = match reply {
            Ok(table) => match write_table(&state.config.data_dir, &id, &table, n) {
                Ok(()) => {
                    stats.tables_replaced += 1;
                    tracing::debug!(%id, rows = table.rows.len(), "lookup table replaced");
                    let ok = json!({"code": 200, "status": "OK"});
                    Handled::stored(json_response(StatusCode::OK, &ok))
                }
                Err(e) => {
                    stats.tables_rejected += 1;
                    tracing::error!(%id, error = %e, "could not store lookup table");
                    let message = "could not store the table";
                    Handled::failed(error_response(StatusCode::INTERNAL_SERVER_ERROR, message))
                }
            },
            Err(response) => {
                stats.tables_rejected += 1;
                Handled::stored(*response)
            }
        };
        store.save_stats();
        handled
    })
    .await
}

/// Checks a replacement request; the table to store, or the error answer.
fn evaluate(
    state: &ReceiverState,
    id: &str,
    query: &str,
    headers: &HeaderMap,
    body: Result<Vec<u8>, Reply>,
) -> Result<LookupTable, Box<Response>> {
    let refuse = |status: StatusCode, message: &str| Box::new(error_response(status, message));
    let config = &state.config;
    let Ok(params) = parse_pairs(query) else {
        return Err(refuse(StatusCode::BAD_REQUEST, "invalid query string"));
    };
    if !authorized(&config.auth, headers, param(&params, "project_id")) {
        tracing::debug!("rejected lookup table request: invalid credentials");
        return Err(refuse(StatusCode::UNAUTHORIZED, "Invalid credentials"));
    }
    if !is_uuid(id) {
        let message = format!("Lookup table with id '{id}' was not found.");
        return Err(refuse(StatusCode::NOT_FOUND, &message));
    }
    let limit = config.max_lookup_table_bytes;
    let body = body
        .and_then(|body| decode_content(headers, body, limit))
        .map_err(|reply| Box::new(reply.render(false)))?;
    if content_type(headers) != "text/csv" {
        let message = format!(
            "Content-Type must be text/csv, not {:?}",
            content_type(headers)
        );
        return Err(refuse(StatusCode::BAD_REQUEST, &message));
    }
    parse_table(&body).map_err(|bad| {
        let mut answer = json!({"code": 400, "error": bad.error, "status": "Bad Request"});
        if !bad.failed.is_empty() {
            answer["failed_records"] = Value::Array(bad.failed);
        }
        Box::new(json_response(StatusCode::BAD_REQUEST, &answer))
    })
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses and validates a whole table.
fn parse_table(body: &[u8]) -> Result<LookupTable, Invalid> {
    let text = std::str::from_utf8(body).map_err(|_| invalid("the CSV is not UTF-8"))?;
    let mut records = csv_records(text).map_err(|(record, message)| {
        if record == 0 {
            invalid(format!("invalid header row: {message}"))
        } else {
            row_failures(vec![
                json!({"index": record - 1, "message": format!("invalid row: {message}")}),
            ])
        }
    })?;
    if records.is_empty() {
        return Err(invalid("the CSV is empty; it needs a header row"));
    }
    let rows = records.split_off(1);
    let header = records.swap_remove(0);
    if header.len() < 2 {
        return Err(invalid(
            "a lookup table needs at least 2 columns: the key and one property",
        ));
    }
    let mut names = HashSet::new();
    for name in &header {
        if name.trim().is_empty() {
            return Err(invalid("header names must not be empty"));
        }
        if !names.insert(name.as_str()) {
            return Err(invalid(format!(
                "header names must be unique: {name:?} repeats"
            )));
        }
    }
    let mut keys: std::collections::HashMap<&str, usize> = Default::default();
    let mut failed = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let message = if row.len() != header.len() {
            Some(format!(
                "invalid row: wrong number of fields ({}, the header has {})",
                row.len(),
                header.len()
            ))
        } else if row[0].trim().is_empty() {
            Some("primary key is required and cannot be blank".to_string())
        } else {
            keys.insert(row[0].as_str(), index).map(|first| {
                format!("invalid row: row indexes {first} and {index} have the same primary key")
            })
        };
        if let Some(message) = message {
            if failed.len() < MAX_FAILED_ROWS {
                failed.push(json!({"index": index, "message": message}));
            }
        }
    }
    if !failed.is_empty() {
        return Err(row_failures(failed));
    }
    Ok(LookupTable { header, rows })
}

fn row_failures(failed: Vec<Value>) -> Invalid {
    Invalid {
        error: STRICT_FAILURE.into(),
        failed,
    }
}

/// Splits RFC 4180 text into records of fields: `,` separates fields, CRLF or LF ends a
/// record (the last line break is optional), a field in double quotes may hold commas, line
/// breaks and doubled quotes. On malformed quoting, the index of the record (header = 0) and
/// what is wrong; the rest of the text cannot be read reliably after that.
fn csv_records(text: &str) -> Result<Vec<Vec<String>>, (usize, String)> {
    let bytes = text.as_bytes();
    let (mut records, mut record, mut i) = (Vec::new(), Vec::new(), 0usize);
    if bytes.is_empty() {
        return Ok(records);
    }
    loop {
        let mut field = String::new();
        if bytes.get(i) == Some(&b'"') {
            i += 1;
            loop {
                let Some(quote) = text[i..].find('"').map(|at| i + at) else {
                    return Err((records.len(), "a quoted field is not closed".into()));
                };
                field.push_str(&text[i..quote]);
                if bytes.get(quote + 1) == Some(&b'"') {
                    field.push('"');
                    i = quote + 2;
                } else {
                    i = quote + 1;
                    break;
                }
            }
            if !matches!(bytes.get(i), None | Some(b',' | b'\r' | b'\n')) {
                return Err((records.len(), "text after a closing quote".into()));
            }
        } else {
            let start = i;
            while let Some(&b) = bytes.get(i) {
                match b {
                    b',' | b'\r' | b'\n' => break,
                    b'"' => return Err((records.len(), "a quote inside an unquoted field".into())),
                    _ => i += 1,
                }
            }
            field.push_str(&text[start..i]);
        }
        record.push(field);
        match bytes.get(i) {
            Some(b',') => {
                i += 1;
                continue;
            }
            Some(b'\r') if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            Some(b'\r') => return Err((records.len(), "a CR not followed by LF".into())),
            Some(_) => i += 1,
            None => {}
        }
        records.push(std::mem::take(&mut record));
        if i >= bytes.len() {
            return Ok(records);
        }
    }
}

fn table_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(TABLES_DIR).join(format!("{id}.json"))
}

/// Writes `table` under a temporary name unique to request `n`, then renames it into place.
fn write_table(dir: &Path, id: &str, table: &LookupTable, n: u64) -> io::Result<()> {
    let path = table_path(dir, id);
    fs::create_dir_all(dir.join(TABLES_DIR))?;
    let tmp = dir.join(TABLES_DIR).join(format!(".{id}.{n}.tmp"));
    let bytes = serde_json::to_vec(table).map_err(io::Error::other)?;
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, &path)
}

/// The stored table `id`, if any.
pub(super) fn read_table(dir: &Path, id: &str) -> Result<Option<LookupTable>, ReceiverError> {
    if !is_uuid(id) {
        return Ok(None);
    }
    let path = table_path(dir, id);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ReceiverError::Corrupt {
            path,
            line: 1,
            message: e.to_string(),
        })
}

/// `GET /wharf/lookup-tables/{id}`.
pub(super) async fn show(
    State(state): State<Arc<ReceiverState>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    match read_table(&state.config.data_dir, &id) {
        Ok(Some(table)) => json_response(StatusCode::OK, &json!(table)),
        Ok(None) => error_response(StatusCode::NOT_FOUND, "no such lookup table"),
        Err(e) => {
            tracing::error!(error = %e, "could not read lookup table");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not read the table",
            )
        }
    }
}

/// Fuzzing entry point (`wharf::fuzzing::receiver_lookup`): a lookup table replacement's body
/// (content decoding, then [`parse_table`]) and whether the id is a UUID, without a server.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_lookup(id: &str, headers: &HeaderMap, body: Vec<u8>) {
    let _ = is_uuid(id);
    let Ok(body) = decode_content(headers, body, 1 << 20) else {
        return;
    };
    if let Ok(table) = parse_table(&body) {
        assert!(table.header.len() >= 2);
        assert!(table.rows.iter().all(|row| row.len() == table.header.len()));
    }
}

/// Fuzzing entry point (`wharf::fuzzing::lookup_csv`): the receiver's RFC 4180 reader
/// ([`csv_records`]) on `text`.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_csv_records(text: &str) -> Result<Vec<Vec<String>>, (usize, String)> {
    csv_records(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Result<Vec<Vec<String>>, (usize, String)> {
        csv_records(text)
    }

    #[test]
    fn rfc4180_records() {
        let want = vec![
            vec!["id", "name"],
            vec!["1", "a,b"],
            vec!["2", "say \"hi\"\r\nbye"],
        ];
        let got = rows("id,name\r\n1,\"a,b\"\r\n2,\"say \"\"hi\"\"\r\nbye\"\r\n").unwrap();
        assert_eq!(got, want);
        assert_eq!(rows("id,name\n1,x").unwrap().len(), 2);
        assert_eq!(rows("a,\n").unwrap(), vec![vec!["a", ""]]);
        assert_eq!(rows("a,b\n\n").unwrap(), vec![vec!["a", "b"], vec![""]]);
        assert!(rows("").unwrap().is_empty());
        assert_eq!(rows("id,x\n1,\"open\n").unwrap_err().0, 1);
        assert_eq!(rows("id,x\n1,a\"b\n").unwrap_err().0, 1);
        assert_eq!(rows("id,x\n1,\"a\"b\n").unwrap_err().0, 1);
        assert_eq!(rows("id,x\r1,a").unwrap_err().0, 0);
    }

    #[test]
    fn table_rules() {
        let ok = parse_table(b"k,v\n1,a\n2,\n").unwrap();
        assert_eq!(ok.rows, vec![vec!["1", "a"], vec!["2", ""]]);
        let bad = parse_table(b"k,v\n1,a\n1,b\n,c\n3\n").err().unwrap();
        let messages: Vec<_> = bad.failed.iter().map(|f| f["index"].clone()).collect();
        assert_eq!(messages, vec![json!(1), json!(2), json!(3)]);
        assert!(parse_table(b"k,k\n1,2\n").is_err());
        assert!(parse_table(b"k\n1\n").is_err());
        let many: String = std::iter::once("k,v\n".to_string())
            .chain((0..20).map(|_| "x\n".to_string()))
            .collect();
        assert_eq!(parse_table(many.as_bytes()).err().unwrap().failed.len(), 10);
        assert!(is_uuid("55b4fb2b-e8de-466c-930f-8b36640b9b5e"));
        assert!(!is_uuid("../etc/passwd"));
    }
}
