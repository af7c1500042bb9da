//! BigQuery's Storage Read API (`google.cloud.bigquery.storage.v1.BigQueryRead`) over gRPC, in
//! Arrow: `CreateReadSession` for a table (with an optional row restriction, the append
//! cursor's `WHERE`), then `ReadRows` on each of the session's streams, read concurrently.
//!
//! gRPC here is HTTP/2 through reqwest (prior knowledge for `http://` endpoints such as the
//! emulator, ALPN for Google's): each message is length-prefixed, the status comes in the
//! trailers (or in the headers of a response without a body). The protobuf messages are
//! prost's ([`super::proto`]). Batches arrive as Arrow IPC messages: the session's schema
//! message, then one record-batch message per `ReadRowsResponse`.

use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use prost::Message as _;
use wharf_operators::arrow::array::RecordBatch;
use wharf_operators::arrow::buffer::Buffer;
use wharf_operators::arrow::ipc::reader::StreamDecoder;

use super::proto::{
    self, CreateReadSessionRequest, ReadRowsRequest, ReadRowsResponse, ReadSession,
    TableReadOptions,
};

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
#[derive(Debug, Clone)]
pub struct Session {
    /// Its streams' names.
    pub streams: Vec<String>,
    schema: Vec<u8>,
}

async fn create_session(
    client: &reqwest::Client,
    req: &ReadRequest<'_>,
) -> Result<Session, StorageError> {
    let msg = CreateReadSessionRequest {
        parent: format!("projects/{}", req.project),
        read_session: Some(ReadSession {
            data_format: proto::ARROW,
            table: req.table.clone(),
            read_options: (!req.row_restriction.is_empty()).then(|| TableReadOptions {
                row_restriction: req.row_restriction.clone(),
            }),
            ..ReadSession::default()
        }),
        max_stream_count: i32::try_from(req.max_streams).unwrap_or(i32::MAX),
    }
    .encode_to_vec();
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

/// The record batches of one `ReadRowsResponse` (none when it has none).
fn response_batches(
    decoder: &mut StreamDecoder,
    message: &[u8],
) -> Result<Vec<RecordBatch>, String> {
    let response = ReadRowsResponse::decode(message).map_err(|e| e.to_string())?;
    let Some(rb) = response.arrow_record_batch else {
        return Ok(Vec::new());
    };
    // prost already copied the message out of the frame: hand that copy to Arrow as it is.
    let mut bytes = rb.serialized_record_batch;
    bytes.truncate(without_eos(&bytes).len());
    let mut buf = Buffer::from(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let Some(b) = decode(decoder, &mut buf)? else {
            break;
        };
        out.push(b);
    }
    Ok(out)
}

/// The streams and the Arrow schema of a `ReadSession` message.
fn parse_session(answer: &[u8]) -> Result<Session, StorageError> {
    let session = ReadSession::decode(answer)
        .map_err(|e| StorageError::unreadable(format!("ReadSession: {e}")))?;
    Ok(Session {
        streams: session.streams.into_iter().map(|s| s.name).collect(),
        schema: session
            .arrow_schema
            .map(|s| s.serialized_schema)
            .unwrap_or_default(),
    })
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
        let msg = ReadRowsRequest {
            read_stream: stream.to_string(),
            offset,
        }
        .encode_to_vec();
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
                for b in response_batches(&mut decoder, &m).map_err(bad)? {
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
    let (client, session) = open(req).await?;
    read_streams(&client, req, &session, &session.streams, each).await
}

/// Opens a read session of `req`'s table: every stream of it reads one state of the table
/// (the session's snapshot), so its streams can be read apart, by several workers.
pub async fn open(req: &ReadRequest<'_>) -> Result<(reqwest::Client, Session), StorageError> {
    let client = client(req)?;
    let session = create_session(&client, req).await?;
    Ok((client, session))
}

/// A client of the Storage API at `req.endpoint` (HTTP/2).
pub fn client(req: &ReadRequest<'_>) -> Result<reqwest::Client, StorageError> {
    let mut builder = reqwest::Client::builder()
        .timeout(req.timeout)
        .http2_adaptive_window(true);
    if req.endpoint.starts_with("http://") {
        builder = builder.http2_prior_knowledge();
    }
    builder
        .build()
        .map_err(|e| StorageError::transport(e.to_string()))
}

/// Reads `streams` of `session` concurrently, handing each batch to `each` (false stops).
pub async fn read_streams(
    client: &reqwest::Client,
    req: &ReadRequest<'_>,
    session: &Session,
    streams: &[String],
    each: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), StorageError> {
    if streams.is_empty() {
        // An empty table: a session without streams.
        return Ok(());
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let readers: Vec<_> = streams
        .iter()
        .map(|s| {
            let tx = tx.clone();
            let schema = &session.schema;
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
        out.extend(response_batches(&mut decoder, m).map_err(bad)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_googles_field_numbers() {
        let table = "projects/p/datasets/d/tables/t";
        let msg = CreateReadSessionRequest {
            parent: "projects/p".into(),
            read_session: Some(ReadSession {
                data_format: proto::ARROW,
                table: table.into(),
                ..ReadSession::default()
            }),
            max_stream_count: 300,
        }
        .encode_to_vec();
        // parent (1), read_session (2) { data_format (3) = 2, table (6) }, max_stream_count (3)
        let mut want = vec![0x0a, 10];
        want.extend_from_slice(b"projects/p");
        want.extend_from_slice(&[0x12, 34, 0x18, 2, 0x32, 30]);
        want.extend_from_slice(table.as_bytes());
        want.extend_from_slice(&[0x18, 0xac, 0x02]);
        assert_eq!(msg, want);
        // ReadRowsResponse: row_count (6, not declared) skipped; arrow_record_batch (4) { (1) }
        let answer = [0x30, 7, 0x22, 5, 0x0a, 3, b'a', b'b', b'c'];
        let response = ReadRowsResponse::decode(&answer[..]).unwrap();
        assert_eq!(
            response.arrow_record_batch.unwrap().serialized_record_batch,
            b"abc"
        );
        assert!(
            ReadRowsResponse::decode(&[0x22, 0x05, 1][..]).is_err(),
            "truncated"
        );
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
