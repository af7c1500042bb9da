//! A read split into parts that the workers of a run read at once, all inside one snapshot:
//! a coordinating transaction exports its snapshot (`pg_export_snapshot`), each part's
//! transaction imports it (`SET TRANSACTION SNAPSHOT`) before its first query, and the
//! coordinator ends once every part imported it (or gave up). So every part sees the table as
//! it was at one moment, and a run's watermark (the greatest cursor value any part read) never
//! passes a row another part could not see.
//!
//! A table is split by ranges of its pages (`ctid` ranges: PostgreSQL 14+ scans only the
//! pages of a range); a query by the `hashtext` of the key. Redshift reads whole.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio_postgres::IsolationLevel;

use super::{quote_table, Flavor, PostgresWarehouse};
use crate::warehouse::PartsOf;
use crate::warehouse::{
    hash_conditions, range_conditions, whole_read, PartRead, SourceRef, WarehouseError,
};

/// How long the coordinator keeps its snapshot for parts that have not imported it yet.
const HOLD_SNAPSHOT: Duration = Duration::from_secs(120);

/// A part's hold on the exported snapshot: dropped once the part imported it (or will not),
/// and the coordinator ends when none is left.
pub(super) struct SnapshotHold(Arc<(Mutex<usize>, Condvar)>);

impl Drop for SnapshotHold {
    fn drop(&mut self) {
        let (left, changed) = &*self.0;
        if let Ok(mut n) = left.lock() {
            *n = n.saturating_sub(1);
            changed.notify_all();
        }
    }
}

/// An exported snapshot: its identifier, and the part's hold on it.
pub(super) struct Exported {
    pub id: String,
    pub hold: SnapshotHold,
}

impl PostgresWarehouse {
    /// See the module's text.
    pub(super) fn parts(self: Arc<Self>, of: PartsOf<'_>) -> Result<Vec<PartRead>, WarehouseError> {
        let PartsOf {
            src,
            filter,
            key,
            count,
        } = of;
        if count <= 1 || self.settings.flavor != Flavor::Postgres {
            return Ok(vec![whole_read(self, src, filter)]);
        }
        let conditions: Vec<String> = match src {
            SourceRef::Table(t) => {
                let pages = self.pages(src, t)?;
                range_conditions(pages, count, |lo, hi| match hi {
                    None => format!("ctid >= '({lo},0)'::tid"),
                    Some(hi) => format!("ctid >= '({lo},0)'::tid AND ctid < '({hi},0)'::tid"),
                })
            }
            SourceRef::Query(_) => hash_conditions(self.as_ref(), key, count),
        };
        if conditions.len() <= 1 {
            return Ok(vec![whole_read(self, src, filter)]);
        }
        let (id, holds) = self.export_snapshot(src, conditions.len())?;
        Ok(conditions
            .into_iter()
            .zip(holds)
            .map(|(condition, hold)| {
                let clause = match filter {
                    "" => format!("WHERE {condition}"),
                    f => format!("{f} AND ({condition})"),
                };
                let (pg, src, id) = (self.clone(), src.clone(), id.clone());
                let read: PartRead = Box::new(move |each| {
                    let snapshot = Exported { id, hold };
                    pg.stream_in(&src, &clause, None, false, Some(snapshot), each)
                        .map(|_| ())
                });
                read
            })
            .collect())
    }

    /// The table's size in pages (at least 1).
    fn pages(&self, src: &SourceRef, table: &str) -> Result<u64, WarehouseError> {
        self.on_held(async |c| {
            let row = c
                .query_one(
                    "SELECT (pg_relation_size($1::text::regclass) \
                     / current_setting('block_size')::bigint)::bigint",
                    &[&quote_table(table)],
                )
                .await
                .map_err(|e| self.err(src, e))?;
            Ok(row.get::<_, i64>(0).max(1) as u64)
        })
    }

    /// Exports a snapshot from a transaction held on a thread of its own until `parts` parts
    /// imported it (or dropped their hold), [`HOLD_SNAPSHOT`] at most.
    fn export_snapshot(
        &self,
        src: &SourceRef,
        parts: usize,
    ) -> Result<(String, Vec<SnapshotHold>), WarehouseError> {
        let left = Arc::new((Mutex::new(parts), Condvar::new()));
        let (id_tx, id_rx) = std::sync::mpsc::sync_channel(1);
        let (pg, waiting, what) = (self.clone(), left.clone(), src.clone());
        std::thread::spawn(move || {
            let result = pg.block(async {
                let mut client = pg.connect().await?;
                let tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await
                    .map_err(|e| pg.err(&what, e))?;
                let id: String = tx
                    .query_one("SELECT pg_export_snapshot()", &[])
                    .await
                    .map_err(|e| pg.err(&what, e))?
                    .get(0);
                let _ = id_tx.send(Ok(id));
                // Held open (nothing else runs on this thread) while parts import it.
                let (n, changed) = &*waiting;
                if let Ok(n) = n.lock() {
                    let _ = changed.wait_timeout_while(n, HOLD_SNAPSHOT, |n| *n > 0);
                }
                tx.commit().await.map_err(|e| pg.err(&what, e))
            });
            if let Err(e) = result {
                let _ = id_tx.send(Err(e));
            }
        });
        let id = id_rx
            .recv_timeout(self.settings.connect_timeout + Duration::from_secs(30))
            .map_err(|_| WarehouseError::Query {
                source_ref: src.clone(),
                message: "no snapshot was exported for the read's parts".into(),
                transient: true,
            })??;
        // An identifier is hex digits and dashes; anything else is not put into SQL.
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(WarehouseError::Query {
                source_ref: src.clone(),
                message: format!("unexpected snapshot identifier `{id}`"),
                transient: false,
            });
        }
        Ok((id, (0..parts).map(|_| SnapshotHold(left.clone())).collect()))
    }
}
