//! BigQuery's Storage Read API (`google.cloud.bigquery.storage.v1.BigQueryRead`) over gRPC, in
//! Arrow: `CreateReadSession` for a table (with an optional row restriction, the append
//! cursor's `WHERE`), then `ReadRows` on each of the session's streams, read concurrently.
//!
//! gRPC here is HTTP/2 through reqwest (prior knowledge for `http://` endpoints such as the
//! emulator, ALPN for Google's): each message is length-prefixed, the status comes in the
//! trailers (or in the headers of a response without a body). The few protobuf messages are
//! encoded and decoded by hand ([`pb`]): field numbers as in Google's `storage.proto`,
//! `stream.proto` and `arrow.proto` (v1). Batches arrive as Arrow IPC messages: the session's
//! schema message, then one record-batch message per `ReadRowsResponse`.

use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use wharf_operators::arrow::array::RecordBatch;
use wharf_operators::arrow::buffer::Buffer;
use wharf_operators::arrow::ipc::reader::StreamDecoder;

/// Where and how to read.
pub struct ReadRequest<'a> {
    /// `http(s)://host[:port]` of the Storage API.
    pub endpoint: &'a str,
    /// The project billed (`projects/{project}`).
    pub project: &'a str,
    /// `projects/{p}/datasets/{d}/tables/{t}`.
    pub table: String,
    /// A SQL `WHERE` condition on the table's columns, or empty.
    pub row_restriction: String,
    /// Streams asked for (the server may give fewer).
    pub max_streams: u32,
    /// A bearer token, if any.
    pub token: Option<String>,
    /// Per-call timeout.
    pub timeout: std::time::Duration,
}

/// A Storage API failure: the gRPC status (or transport failure) and its message.
#[derive(Debug)]
pub struct StorageError {
    /// gRPC status code (`None` for a transport failure).
    pub code: Option<u32>,
    /// What went wrong.
    pub message: String,
    /// An answer wharf cannot read (retrying would not help).
    pub unreadable: bool,
}

impl StorageError {
    fn transport(message: impl Into<String>) -> Self {
        StorageError {
            code: None,
            message: message.into(),
            unreadable: false,
        }
    }

    fn unreadable(message: impl Into<String>) -> Self {
        StorageError {
            unreadable: true,
            ..StorageError::transport(message)
        }
    }

    /// Worth retrying: transport failures, UNAVAILABLE (14), RESOURCE_EXHAUSTED (8),
    /// DEADLINE_EXCEEDED (4), INTERNAL (13), ABORTED (10).
    pub fn transient(&self) -> bool {
        !self.unreadable && matches!(self.code, None | Some(4 | 8 | 10 | 13 | 14))
    }
}

/// `bytes` without a trailing end-of-stream marker (some servers write each message as a whole
/// IPC stream), so a schema message does not end the decoder's stream.
fn without_eos(bytes: &[u8]) -> &[u8] {
    const EOS: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    bytes.strip_suffix(&EOS[..]).unwrap_or(bytes)
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(c) => write!(f, "gRPC status {c} ({}): {}", code_name(c), self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

fn code_name(c: u32) -> &'static str {
    match c {
        3 => "INVALID_ARGUMENT",
        5 => "NOT_FOUND",
        7 => "PERMISSION_DENIED",
        16 => "UNAUTHENTICATED",
        12 => "UNIMPLEMENTED",
        14 => "UNAVAILABLE",
        8 => "RESOURCE_EXHAUSTED",
        _ => "error",
    }
}

const SERVICE: &str = "google.cloud.bigquery.storage.v1.BigQueryRead";

/// The minimal protobuf wire format the two calls need.
pub mod pb {
    /// Appends a varint.
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field (string, bytes, message).
    pub fn bytes_field(out: &mut Vec<u8>, field: u32, v: &[u8]) {
        varint(out, (u64::from(field) << 3) | 2);
        varint(out, v.len() as u64);
        out.extend_from_slice(v);
    }

    /// A varint field (int32, int64, enum); zero is left out, as proto3 does.
    pub fn int_field(out: &mut Vec<u8>, field: u32, v: i64) {
        if v != 0 {
            varint(out, u64::from(field) << 3);
            varint(out, v as u64);
        }
    }

    /// A decoded field's value.
    #[derive(Debug, PartialEq)]
    pub enum Value<'a> {
        /// Wire type 0.
        Int(u64),
        /// Wire type 2.
        Bytes(&'a [u8]),
        /// Wire types 1 and 5 (skipped).
        Fixed,
    }

    fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *buf.get(*pos).ok_or("truncated varint")?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    /// The fields of a message, in order.
    pub fn fields(buf: &[u8]) -> Result<Vec<(u32, Value<'_>)>, String> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < buf.len() {
            let tag = read_varint(buf, &mut pos)?;
            let field = (tag >> 3) as u32;
            let value = match tag & 7 {
                0 => Value::Int(read_varint(buf, &mut pos)?),
                2 => {
                    let len = read_varint(buf, &mut pos)? as usize;
                    let end = pos.checked_add(len).filter(|e| *e <= buf.len());
                    let end = end.ok_or("truncated field")?;
                    let v = &buf[pos..end];
                    pos = end;
                    Value::Bytes(v)
                }
                1 => {
                    pos += 8;
                    Value::Fixed
                }
                5 => {
                    pos += 4;
                    Value::Fixed
                }
                t => return Err(format!("unsupported wire type {t}")),
            };
            out.push((field, value));
        }
        if pos > buf.len() {
            return Err("truncated fixed field".into());
        }
        Ok(out)
    }

    /// The first length-delimited field `field` of `buf`.
    pub fn get_bytes(buf: &[u8], field: u32) -> Result<Option<&[u8]>, String> {
        Ok(fields(buf)?.into_iter().find_map(|(f, v)| match v {
            Value::Bytes(b) if f == field => Some(b),
            _ => None,
        }))
    }
}

/// The response messages of one gRPC call, as they arrive.
struct Messages {
    url: String,
    body: reqwest::Body,
    buf: BytesMut,
    done: bool,
}

impl Messages {
    /// The next message; `None` once the call ended with status OK.
    async fn next(&mut self) -> Result<Option<Bytes>, StorageError> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() >= 5 + len {
                    if self.buf[0] != 0 {
                        return Err(StorageError::unreadable(
                            "a compressed gRPC message (not asked for)",
                        ));
                    }
                    self.buf.advance(5);
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
            }
            if self.done {
                return Ok(None);
            }
            let frame = std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await;
            let Some(frame) = frame else {
                return Err(StorageError::transport(format!(
                    "{}: the stream ended without a gRPC status",
                    self.url
                )));
            };
            let frame = frame.map_err(|e| {
                StorageError::transport(format!("{}: {}", self.url, e.without_url()))
            })?;
            match frame.into_data() {
                Ok(data) => self.buf.extend_from_slice(&data),
                Err(frame) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        if let Some(status) = grpc_status(trailers)? {
                            return Err(status);
                        }
                        self.done = true;
                    }
                }
            }
        }
    }
}

/// Starts one gRPC call with `message`; its answers come from [`Messages::next`].
async fn call(
    client: &reqwest::Client,
    req: &ReadRequest<'_>,
    method: &str,
    routing: &str,
    message: &[u8],
) -> Result<Messages, StorageError> {
    let mut body = Vec::with_capacity(message.len() + 5);
    body.push(0);
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    let url = format!("{}/{SERVICE}/{method}", req.endpoint.trim_end_matches('/'));
    let mut r = client
        .post(&url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-goog-request-params", routing)
        .body(body);
    if let Some(t) = &req.token {
        r = r.bearer_auth(t);
    }
    let resp = r
        .send()
        .await
        .map_err(|e| StorageError::transport(format!("{url}: {}", e.without_url())))?;
    if !resp.status().is_success() {
        return Err(StorageError::transport(format!(
            "{url}: HTTP {}",
            resp.status()
        )));
    }
    // A response without messages carries its status in the headers.
    let trailers_only = grpc_status(resp.headers())?;
    if let Some(status) = trailers_only {
        return Err(status);
    }
    let done = resp.headers().contains_key("grpc-status");
    Ok(Messages {
        url,
        body: http::Response::from(resp).into_body(),
        buf: BytesMut::new(),
        done,
    })
}

/// `Some(error)` for a non-zero `grpc-status`, `None` for 0 or no status.
fn grpc_status(headers: &http::HeaderMap) -> Result<Option<StorageError>, StorageError> {
    let Some(code) = headers.get("grpc-status") else {
        return Ok(None);
    };
    let code: u32 = code
        .to_str()
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| StorageError::transport("an unreadable grpc-status"))?;
    if code == 0 {
        return Ok(None);
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Ok(Some(StorageError {
        code: Some(code),
        message,
        unreadable: false,
    }))
}

/// gRPC percent-encodes `grpc-message`.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=b` with `b` percent-encoded (the routing header).
fn routing(key: &str, value: &str) -> String {
    let mut out = format!("{key}=");
    for c in value.bytes() {
        if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// The session a `CreateReadSession` answered: its streams and Arrow schema message.
struct Session {
    streams: Vec<String>,
    schema: Vec<u8>,
}

async fn create_session(
    client: &reqwest::Client,
    req: &ReadRequest<'_>,
) -> Result<Session, StorageError> {
    // ReadSession { data_format = ARROW (3), table (6), read_options (8) { row_restriction (2) } }
    let mut session = Vec::new();
    pb::int_field(&mut session, 3, 2);
    pb::bytes_field(&mut session, 6, req.table.as_bytes());
    if !req.row_restriction.is_empty() {
        let mut options = Vec::new();
        pb::bytes_field(&mut options, 2, req.row_restriction.as_bytes());
        pb::bytes_field(&mut session, 8, &options);
    }
    // CreateReadSessionRequest { parent (1), read_session (2), max_stream_count (3) }
    let mut msg = Vec::new();
    pb::bytes_field(&mut msg, 1, format!("projects/{}", req.project).as_bytes());
    pb::bytes_field(&mut msg, 2, &session);
    pb::int_field(&mut msg, 3, i64::from(req.max_streams));
    let answer = call(
        client,
        req,
        "CreateReadSession",
        &routing("read_session.table", &req.table),
        &msg,
    )
    .await?
    .next()
    .await?
    .ok_or_else(|| StorageError::transport("CreateReadSession answered nothing"))?;
    parse_session(&answer)
}

/// The next batch of `buf` by `decoder` ([`crate::warehouse::ipc_read`]: a damaged message is
/// an error, not a panic).
fn decode(decoder: &mut StreamDecoder, buf: &mut Buffer) -> Result<Option<RecordBatch>, String> {
    crate::warehouse::ipc_read(|| decoder.decode(buf))?.map_err(|e| e.to_string())
}

/// The streams and the Arrow schema of a `ReadSession` message.
fn parse_session(answer: &[u8]) -> Result<Session, StorageError> {
    let bad = |e: String| StorageError::unreadable(format!("ReadSession: {e}"));
    let mut out = Session {
        streams: Vec::new(),
        schema: Vec::new(),
    };
    for (field, value) in pb::fields(answer).map_err(bad)? {
        match (field, value) {
            // arrow_schema (5) { serialized_schema (1) }
            (5, pb::Value::Bytes(b)) => {
                out.schema = pb::get_bytes(b, 1)
                    .map_err(bad)?
                    .unwrap_or_default()
                    .to_vec();
            }
            // streams (10) { name (1) }
            (10, pb::Value::Bytes(b)) => {
                if let Some(name) = pb::get_bytes(b, 1).map_err(bad)? {
                    out.streams.push(String::from_utf8_lossy(name).into_owned());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Reads one stream, decoding its batches into `tx`; a transient failure mid-stream resumes
/// at the row offset reached (three times at most).
async fn read_stream(
    client: &reqwest::Client,
    req: &ReadRequest<'_>,
    stream: &str,
    schema: &[u8],
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch, StorageError>>,
) -> Result<(), StorageError> {
    let bad = |e: String| StorageError::unreadable(format!("ReadRows: {e}"));
    let mut offset = 0i64;
    let mut retries = 0;
    loop {
        // ReadRowsRequest { read_stream (1), offset (2) }
        let mut msg = Vec::new();
        pb::bytes_field(&mut msg, 1, stream.as_bytes());
        pb::int_field(&mut msg, 2, offset);
        // Every call starts with the session's schema message.
        let mut decoder = StreamDecoder::new();
        decode(
            &mut decoder,
            &mut Buffer::from(without_eos(schema).to_vec()),
        )
        .map_err(|e| bad(format!("the session's Arrow schema: {e}")))?;
        let result: Result<(), StorageError> = async {
            let mut messages = call(
                client,
                req,
                "ReadRows",
                &routing("read_stream", stream),
                &msg,
            )
            .await?;
            while let Some(m) = messages.next().await? {
                // ReadRowsResponse { arrow_record_batch (4) { serialized_record_batch (1) } }
                let Some(rb) = pb::get_bytes(&m, 4).map_err(bad)? else {
                    continue;
                };
                let Some(bytes) = pb::get_bytes(rb, 1).map_err(bad)? else {
                    continue;
                };
                let mut buf = Buffer::from(without_eos(bytes).to_vec());
                while !buf.is_empty() {
                    let Some(b) = decode(&mut decoder, &mut buf).map_err(bad)? else {
                        break;
                    };
                    offset += b.num_rows() as i64;
                    if tx.send(Ok(b)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(())
        }
        .await;
        match result {
            Err(e) if e.transient() && retries < 3 => {
                retries += 1;
                tracing::warn!(stream, offset, error = %e, "BigQuery read stream failed; resuming");
                tokio::time::sleep(std::time::Duration::from_millis(250 << retries)).await;
            }
            other => return other,
        }
    }
}

/// Reads `req`'s table through a read session, handing each batch to `each` (false stops).
pub async fn read(
    req: &ReadRequest<'_>,
    each: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), StorageError> {
    let mut builder = reqwest::Client::builder()
        .timeout(req.timeout)
        .http2_adaptive_window(true);
    if req.endpoint.starts_with("http://") {
        builder = builder.http2_prior_knowledge();
    }
    let client = builder
        .build()
        .map_err(|e| StorageError::transport(e.to_string()))?;
    let session = create_session(&client, req).await?;
    if session.streams.is_empty() {
        // An empty table: a session without streams.
        return Ok(());
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let readers: Vec<_> = session
        .streams
        .iter()
        .map(|s| {
            let tx = tx.clone();
            let (client, schema) = (&client, &session.schema);
            async move {
                if let Err(e) = read_stream(client, req, s, schema, &tx).await {
                    let _ = tx.send(Err(e)).await;
                }
            }
        })
        .collect();
    drop(tx);
    let all = futures_join_all(readers.into_iter());
    // Owns the receiver: once it stops (`each` said so, or an error), the readers' sends
    // fail and they end.
    let consume = async {
        let mut rx = rx;
        while let Some(item) = rx.recv().await {
            if !each(item?) {
                return Ok::<(), StorageError>(());
            }
        }
        Ok(())
    };
    let (_, result) = tokio::join!(all, consume);
    result
}

/// Awaits every future of `it` concurrently (tokio has no `join_all`).
async fn futures_join_all<F: std::future::Future<Output = ()>>(it: impl Iterator<Item = F>) {
    let mut set: Vec<Pin<Box<F>>> = it.map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// Fuzzing entry point (`wharf::fuzzing::bigquery_page`): a `CreateReadSession` answer
/// ([`parse_session`]), then `ReadRows` messages decoded as [`read_stream`] decodes them
/// (one decoder, started with the session's schema message).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_read(
    session: &[u8],
    messages: &[&[u8]],
) -> Result<Vec<RecordBatch>, StorageError> {
    let bad = |e: String| StorageError::unreadable(format!("ReadRows: {e}"));
    let session = parse_session(session)?;
    let mut decoder = StreamDecoder::new();
    decode(
        &mut decoder,
        &mut Buffer::from(without_eos(&session.schema).to_vec()),
    )
    .map_err(|e| bad(format!("the session's Arrow schema: {e}")))?;
    let mut out = Vec::new();
    for m in messages {
        let Some(rb) = pb::get_bytes(m, 4).map_err(bad)? else {
            continue;
        };
        let Some(bytes) = pb::get_bytes(rb, 1).map_err(bad)? else {
            continue;
        };
        let mut buf = Buffer::from(without_eos(bytes).to_vec());
        while !buf.is_empty() {
            let Some(b) = decode(&mut decoder, &mut buf).map_err(bad)? else {
                break;
            };
            out.push(b);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_round_trip_of_a_session_request() {
        let mut inner = Vec::new();
        pb::int_field(&mut inner, 3, 2);
        pb::bytes_field(&mut inner, 6, b"projects/p/datasets/d/tables/t");
        let mut msg = Vec::new();
        pb::bytes_field(&mut msg, 1, b"projects/p");
        pb::bytes_field(&mut msg, 2, &inner);
        pb::int_field(&mut msg, 3, 300);
        let f = pb::fields(&msg).unwrap();
        assert_eq!(f[0], (1, pb::Value::Bytes(b"projects/p")));
        assert_eq!(f[2], (3, pb::Value::Int(300)));
        assert_eq!(
            pb::get_bytes(pb::get_bytes(&msg, 2).unwrap().unwrap(), 6).unwrap(),
            Some(&b"projects/p/datasets/d/tables/t"[..])
        );
        assert!(pb::fields(&[0x0a, 0x05, 1]).is_err(), "truncated");
    }

    #[test]
    fn grpc_messages_and_routing_are_escaped_as_grpc_does() {
        assert_eq!(percent_decode("Table%20not%20found"), "Table not found");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(
            routing("read_session.table", "projects/p/datasets/d/tables/t"),
            "read_session.table=projects%2Fp%2Fdatasets%2Fd%2Ftables%2Ft"
        );
    }
}
