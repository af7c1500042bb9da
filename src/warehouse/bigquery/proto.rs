//! The messages of `google.cloud.bigquery.storage.v1` that wharf sends and reads, encoded and
//! decoded by prost: field numbers and types as in Google's `storage.proto`, `stream.proto`
//! and `arrow.proto`. Only the fields wharf uses are declared; prost skips the others.

/// `CreateReadSessionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateReadSessionRequest {
    /// `projects/{project}`: the project billed.
    #[prost(string, tag = "1")]
    pub parent: String,
    /// The session asked for.
    #[prost(message, optional, tag = "2")]
    pub read_session: Option<ReadSession>,
    /// Streams asked for (the server may give fewer).
    #[prost(int32, tag = "3")]
    pub max_stream_count: i32,
}

/// `ReadSession`: asked for (table, format, options), then answered (schema, streams).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadSession {
    /// `DataFormat`: [`ARROW`].
    #[prost(int32, tag = "3")]
    pub data_format: i32,
    /// The answer's Arrow schema.
    #[prost(message, optional, tag = "5")]
    pub arrow_schema: Option<ArrowSchema>,
    /// `projects/{p}/datasets/{d}/tables/{t}`.
    #[prost(string, tag = "6")]
    pub table: String,
    /// The row restriction.
    #[prost(message, optional, tag = "8")]
    pub read_options: Option<TableReadOptions>,
    /// The answer's streams.
    #[prost(message, repeated, tag = "10")]
    pub streams: Vec<ReadStream>,
}

/// `DataFormat.ARROW`.
pub const ARROW: i32 = 2;

/// `ReadSession.TableReadOptions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TableReadOptions {
    /// A SQL condition on the table's columns.
    #[prost(string, tag = "2")]
    pub row_restriction: String,
}

/// `ArrowSchema`: an Arrow IPC schema message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrowSchema {
    /// The IPC message.
    #[prost(bytes = "vec", tag = "1")]
    pub serialized_schema: Vec<u8>,
}

/// `ReadStream`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadStream {
    /// `projects/…/sessions/…/streams/…`.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `ReadRowsRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadRowsRequest {
    /// The stream's name.
    #[prost(string, tag = "1")]
    pub read_stream: String,
    /// The first row wanted (a resumed read starts where the last one stopped).
    #[prost(int64, tag = "2")]
    pub offset: i64,
}

/// `ReadRowsResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadRowsResponse {
    /// The rows, as one Arrow record batch.
    #[prost(message, optional, tag = "4")]
    pub arrow_record_batch: Option<ArrowRecordBatch>,
}

/// `ArrowRecordBatch`: an Arrow IPC record-batch message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrowRecordBatch {
    /// The IPC message.
    #[prost(bytes = "vec", tag = "1")]
    pub serialized_record_batch: Vec<u8>,
}
