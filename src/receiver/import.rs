//! `POST /import`: auth, body encodings (JSON, NDJSON, form, gzip), request limits and
//! strict per-event validation (`rules`), appending accepted events to the event log.

use super::*;

/// `POST /import`.
pub(super) async fn import(
    State(state): State<Arc<ReceiverState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = read_body(body, state.config.max_body_bytes).await;
    answer(state, Endpoint::Import, move |state, _| {
        let (mut batch, mut verbose) = (Batch::default(), false);
        let query = query.as_deref().unwrap_or("");
        let reply = evaluate_import(
            &state.config,
            query,
            &headers,
            body,
            &mut batch,
            &mut verbose,
        );
        // Compressed before the store's lock is taken: requests wait on that lock.
        let packed = batch.pack();
        match state.store().record(batch, packed) {
            Ok(()) => Handled::stored(reply.render(verbose)),
            Err(e) => {
                tracing::error!(error = %e, "could not append events");
                Handled::failed(error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "could not store events",
                ))
            }
        }
    })
    .await
}

/// The answer to an import request.
pub(super) enum Reply {
    Error(StatusCode, String),
    Imported {
        imported: usize,
        failed: Vec<Value>,
        strict: bool,
    },
}

impl Reply {
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::Error(StatusCode::BAD_REQUEST, message.into())
    }

    pub(super) fn too_large() -> Self {
        Self::Error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large".into(),
        )
    }

    /// Mixpanel's JSON shape, or `{"status":0|1,"error":…}` for form requests with `verbose=1`.
    pub(super) fn render(self, verbose: bool) -> Response {
        let (status, error) = match &self {
            Reply::Error(status, message) => (*status, Some(message.as_str())),
            Reply::Imported {
                failed,
                strict: true,
                ..
            } if !failed.is_empty() => (StatusCode::BAD_REQUEST, Some(STRICT_FAILURE)),
            Reply::Imported { .. } => (StatusCode::OK, None),
        };
        if verbose {
            return json_response(
                status,
                &json!({"status": u8::from(error.is_none()), "error": error}),
            );
        }
        match self {
            Reply::Error(status, message) => error_response(status, &message),
            Reply::Imported {
                imported, failed, ..
            } if status == StatusCode::BAD_REQUEST => {
                let body = json!({"code": 400, "error": STRICT_FAILURE, "failed_records": failed,
                    "num_records_imported": imported, "status": "Bad Request"});
                json_response(status, &body)
            }
            Reply::Imported { imported, .. } => {
                let body = json!({"code": 200, "num_records_imported": imported, "status": "OK"});
                json_response(status, &body)
            }
        }
    }
}

/// Checks auth, decodes and validates the body, filling `batch` with its effect.
/// `verbose` is set once the request asked for the verbose answer shape.
fn evaluate_import(
    config: &ReceiverConfig,
    query: &str,
    headers: &HeaderMap,
    body: Result<Vec<u8>, Reply>,
    batch: &mut Batch,
    verbose: &mut bool,
) -> Reply {
    let Ok(params) = parse_pairs(query) else {
        return Reply::bad_request("invalid query string");
    };
    if !authorized(&config.auth, headers, param(&params, "project_id")) {
        tracing::debug!("rejected /import request: invalid credentials");
        return Reply::Error(StatusCode::UNAUTHORIZED, "Invalid credentials".into());
    }
    let decoded =
        body.and_then(|body| decode_content_keeping(headers, body, config.max_body_bytes));
    let (body, gzipped) = match decoded {
        Ok(decoded) => decoded,
        Err(reply) => return reply,
    };
    *verbose = param(&params, "verbose") == Some("1");
    let mut strict = param(&params, "strict") == Some("1");
    let records = match content_type(headers).as_str() {
        "application/json" => raw_json_records(&body),
        "application/x-ndjson" => ndjson_records(&body),
        "application/x-www-form-urlencoded" => std::str::from_utf8(&body)
            .map_err(|_| "form body is not UTF-8".to_string())
            .and_then(parse_pairs)
            .and_then(|form| {
                *verbose |= param(&form, "verbose") == Some("1");
                strict |= param(&form, "strict") == Some("1");
                form_records(param(&form, "data"), owned_json_records)
            }),
        other => Err(format!("unsupported Content-Type {other:?}")),
    };
    let records = match records {
        Ok(records) => records,
        Err(message) => return Reply::bad_request(message),
    };
    let max = config.max_records_per_request;
    if records.len() > max {
        batch.rejected = records.len() as u64;
        let message = format!(
            "too many events in one request: {} (max {max})",
            records.len()
        );
        return Reply::bad_request(message);
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64);
    let mut failed = Vec::new();
    let mut accepted: Vec<Cow<[u8]>> = Vec::with_capacity(records.len());
    batch.keys.reserve(records.len());
    for (index, text) in records.texts.iter().enumerate() {
        // Stored as sent, one line per event (a pretty-printed record is written compactly).
        let multiline = records.lines.is_none() && text.bytes().any(|b| b == b'\n' || b == b'\r');
        let fast = if multiline {
            None
        } else {
            accept_fast(text, now_ms)
        };
        let (line, checked) = match fast {
            Some(accepted) => (Cow::Borrowed(text.as_bytes()), Ok(accepted)),
            None => {
                let record = match serde_json::from_str::<Value>(text) {
                    Ok(record) => record,
                    Err(e) => match &records.lines {
                        // An NDJSON line that is not JSON fails the whole request.
                        Some(lines) => {
                            *batch = Batch::default();
                            return Reply::bad_request(format!(
                                "line {} is not JSON: {e}",
                                lines[index]
                            ));
                        }
                        // Already parsed once; a value too deep to build is not an object.
                        None => Value::Null,
                    },
                };
                let line = if multiline {
                    Cow::Owned(serde_json::to_vec(&record).unwrap_or_default())
                } else {
                    Cow::Borrowed(text.as_bytes())
                };
                let checked = validate(&record, line.len(), now_ms);
                (line, checked.map_err(|f| (f, record)))
            }
        };
        match checked {
            Ok((key, blank_distinct_id)) => {
                if blank_distinct_id {
                    tracing::debug!(index, "accepted event with an empty distinct_id");
                    batch.empty_distinct_ids += 1;
                }
                accepted.push(line);
                batch.keys.push(key);
            }
            Err((failure, record)) => {
                batch.rejected += 1;
                let insert_id = record
                    .pointer("/properties/$insert_id")
                    .and_then(Value::as_str);
                failed.push(
                    json!({"index": index, "$insert_id": insert_id.unwrap_or(""),
                    "field": failure.field, "message": failure.message}),
                );
            }
        }
    }
    // An NDJSON body whose every line was accepted as it stands (no blank lines, no `\r` or
    // spaces trimmed: the lines and their newlines add up to the whole body) is stored as
    // it came: gzipped as the client sent it when it ends with a newline (the next member
    // must start a new line), else without copying it line by line.
    let lines_len: usize = accepted.iter().map(|line| line.len() + 1).sum();
    let verbatim = records.lines.is_some()
        && !accepted.is_empty()
        && accepted.len() == records.len()
        && (lines_len == body.len() || lines_len == body.len() + 1);
    if verbatim {
        let mut body = body;
        if body.last() == Some(&b'\n') {
            batch.gzipped = gzipped;
        } else {
            body.push(b'\n');
        }
        batch.lines = body;
    } else {
        batch.lines.reserve(lines_len);
        for line in &accepted {
            batch.accept(line);
        }
    }
    let (imported, rejected) = (batch.keys.len(), failed.len());
    tracing::debug!(imported, rejected, strict, "import");
    Reply::Imported {
        imported,
        failed,
        strict,
    }
}

/// Fuzzing entry point (`wharf::fuzzing::receiver_import`): one `/import` request through
/// [`evaluate_import`] and its answer, without a server or a data directory. Checks that
/// what it accepted is what a restart would count: every stored line is one JSON event that
/// passes [`validate`] with the key recorded for it ([`stored_key`] reads the same).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_import(query: &str, headers: &HeaderMap, body: Vec<u8>) {
    let config = ReceiverConfig::new("/nonexistent", ReceiverAuth::AnyCredentials);
    let (mut batch, mut verbose) = (Batch::default(), false);
    let reply = evaluate_import(&config, query, headers, Ok(body), &mut batch, &mut verbose);
    let _ = reply.render(verbose);
    let lines: Vec<&[u8]> = batch
        .lines
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        batch.keys.len(),
        "one stored line per accepted event"
    );
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64);
    for (line, key) in lines.iter().zip(&batch.keys) {
        let event: Value = serde_json::from_slice(line).expect("a stored event is JSON");
        let checked = validate(&event, line.len(), now_ms).map(|(k, _)| k);
        assert_eq!(
            checked.ok(),
            Some(*key),
            "a stored event passes with its key"
        );
        assert_eq!(stored_key(&event).map(|(k, _)| k), Some(*key));
    }
    if let Some(gzipped) = &batch.gzipped {
        let inflated = super::gzip::gunzip(gzipped, usize::MAX >> 1);
        assert_eq!(
            inflated.ok().as_ref(),
            Some(&batch.lines),
            "kept gzip is the lines"
        );
    }
}
