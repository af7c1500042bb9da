//! A query's answer read piece by piece (its first rowset, then each result chunk), by one
//! reader or dealt out to the parts of a read.

use std::collections::BTreeMap;
use std::sync::Arc;

use wharf_operators::arrow::datatypes::SchemaRef;

use super::arrow::{self, RowType};
use super::{Chunk, Session, SnowflakeWarehouse};
use crate::warehouse::sql::SqlApi;
use crate::warehouse::{
    whole_read, EachBatch, PartRead, PartsOf, Select, SourceRef, WarehouseError,
};

impl SnowflakeWarehouse {
    /// Runs `sql`: its answer's first rowset and the list of its result chunks, none fetched
    /// yet.
    pub(super) async fn result(
        &self,
        session: &mut Session,
        src: &SourceRef,
        sql: &str,
    ) -> Result<QueryResult, WarehouseError> {
        let mut data = self.query(session, src, sql).await?;
        let qerr = |message: String| query_error(src, message);
        if data.format.as_deref().is_some_and(|f| f != "arrow") {
            return Err(qerr(format!(
                "the answer is in `{}`, not Arrow; set the account's or user's PYTHON_CONNECTOR_QUERY_RESULT_FORMAT to ARROW",
                data.format.as_deref().unwrap_or("")
            )));
        }
        let rowset = match data.rowset_base64.take().filter(|s| !s.is_empty()) {
            Some(b64) => {
                use base64::Engine;
                Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(&b64)
                        .map_err(|e| qerr(format!("rowsetBase64 is not base64: {e}")))?,
                )
            }
            None => None,
        };
        // Result chunks: fetched with their own headers, never with the session token.
        let mut headers = std::mem::take(&mut data.chunk_headers);
        if headers.is_empty() {
            if let Some(key) = &data.qrmk {
                headers.insert(
                    "x-amz-server-side-encryption-customer-algorithm".into(),
                    "AES256".into(),
                );
                headers.insert(
                    "x-amz-server-side-encryption-customer-key".into(),
                    key.clone(),
                );
            }
        }
        Ok(QueryResult {
            src: src.clone(),
            schema: arrow::schema(&data.rowtype),
            rowtype: std::mem::take(&mut data.rowtype),
            rowset: std::sync::Mutex::new(rowset),
            chunks: std::mem::take(&mut data.chunks),
            headers,
        })
    }

    /// A read in `count` parts: the query runs once (one result, one state of the table),
    /// and the pieces of its answer (the first rowset, then each result chunk) are dealt out
    /// to the parts, each fetching its chunks on its own thread.
    pub(super) fn chunk_parts(
        self: Arc<Self>,
        of: PartsOf<'_>,
    ) -> Result<Vec<PartRead>, WarehouseError> {
        let (src, count) = (of.src, of.count);
        if count <= 1 {
            return Ok(vec![whole_read(self, src, of.filter)]);
        }
        let sql = Select::all(src, of.filter).sql(&Self::from_clause(src)?);
        let result = Arc::new(
            self.block(self.in_session(async |session| self.result(session, src, &sql).await))?,
        );
        Ok(deal(result.pieces(), count)
            .into_iter()
            .map(|mine| {
                let (wh, result) = (self.clone(), result.clone());
                let read: PartRead = Box::new(move |each| {
                    wh.block(async {
                        let client = wh.client()?;
                        for piece in mine {
                            if !result.emit_piece(&wh, &client, piece, each).await? {
                                break;
                            }
                        }
                        Ok(())
                    })
                });
                read
            })
            .collect())
    }
}

/// `pieces` dealt out to at most `count` parts, in turn: each piece in one part.
fn deal(pieces: usize, count: usize) -> Vec<Vec<usize>> {
    let parts = count.min(pieces).max(1);
    (0..parts)
        .map(|p| (p..pieces).step_by(parts).collect())
        .collect()
}

fn query_error(src: &SourceRef, message: String) -> WarehouseError {
    WarehouseError::Query {
        source_ref: src.clone(),
        message,
        transient: false,
    }
}

/// A query's answer, read piece by piece: piece 0 its first rowset (taken once), then one
/// piece per result chunk.
pub(super) struct QueryResult {
    src: SourceRef,
    rowtype: Vec<RowType>,
    pub(super) schema: SchemaRef,
    rowset: std::sync::Mutex<Option<Vec<u8>>>,
    chunks: Vec<Chunk>,
    /// The chunks' own headers (never the session token).
    headers: BTreeMap<String, String>,
}

impl QueryResult {
    /// The rowset and the chunks.
    pub(super) fn pieces(&self) -> usize {
        1 + self.chunks.len()
    }

    /// Fetches piece `n` and hands its batches to `each`; false when `each` stopped.
    pub(super) async fn emit_piece(
        &self,
        wh: &SnowflakeWarehouse,
        client: &reqwest::Client,
        n: usize,
        each: EachBatch<'_>,
    ) -> Result<bool, WarehouseError> {
        let qerr = |message: String| query_error(&self.src, message);
        let bytes = match n {
            0 => match self.rowset.lock().ok().and_then(|mut r| r.take()) {
                Some(bytes) => bytes,
                None => return Ok(true),
            },
            n => {
                let chunk = &self.chunks[n - 1];
                let resp = wh
                    .send(|| {
                        let mut r = client.get(&chunk.url);
                        for (k, v) in &self.headers {
                            r = r.header(k, v);
                        }
                        r
                    })
                    .await?;
                if !resp.status().is_success() {
                    return Err(qerr(format!("result chunk: HTTP {}", resp.status())));
                }
                let body = crate::warehouse::http::body(&wh.what(), resp).await?;
                arrow::gunzip_if_needed(&body).map_err(&qerr)?
            }
        };
        for batch in arrow::decode(&bytes, &self.rowtype, &self.schema).map_err(&qerr)? {
            if batch.num_rows() > 0 && !each(batch) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::deal;

    #[test]
    fn pieces_are_dealt_out_once_each_to_at_most_count_parts() {
        assert_eq!(deal(1, 4), vec![vec![0]]);
        assert_eq!(deal(5, 2), vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(deal(3, 3), vec![vec![0], vec![1], vec![2]]);
        for (pieces, count) in [(1, 1), (7, 3), (10, 16), (100, 7)] {
            let parts = deal(pieces, count);
            assert!(parts.len() <= count && parts.iter().all(|p| !p.is_empty()));
            let mut all: Vec<usize> = parts.concat();
            all.sort();
            assert_eq!(all, (0..pieces).collect::<Vec<_>>());
        }
    }
}
