//! The one connection a warehouse keeps between its short statements (change capture, probes,
//! `describe`), with the runtime that drives it: a continuous sync's polls neither reconnect
//! nor build a runtime each time (each new connection cost ~2–4 ms on 127.0.0.1, and a poll
//! cycle made six).
//!
//! - The connection is used by one caller at a time; a caller that finds it busy (another
//!   thread) opens a connection of its own, as every call did before.
//! - A kept connection that the server closed (restart, idle timeout) is noticed when a
//!   statement fails on it: the statement is tried once more on a new connection.
//! - Long reads (snapshots, append reads) keep their own connections and transactions.

use std::sync::Mutex;

use tokio::runtime::Runtime;
use tokio_postgres::Client;

use super::PostgresWarehouse;
use crate::warehouse::{Warehouse, WarehouseError};

/// The kept connection and the current-thread runtime its connection task runs on (polled
/// only while a statement runs, which is all a client-side connection needs).
#[derive(Default)]
pub(super) struct Held {
    runtime: Option<Runtime>,
    client: Option<Client>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("connected", &self.client.is_some())
            .finish()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.client = None;
        // Dropping a runtime where blocking is not allowed (an async task that held the last
        // reference to the warehouse) would panic; this never blocks.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A warehouse's kept connection, shared by its clones.
pub(super) type HeldConnection = std::sync::Arc<Mutex<Held>>;

impl PostgresWarehouse {
    /// Runs `f` on the kept session (UTC, ISO dates, hex bytea; see [`Self::connect`]).
    pub(super) fn on_held<T>(
        &self,
        f: impl AsyncFn(&Client) -> Result<T, WarehouseError>,
    ) -> Result<T, WarehouseError> {
        let Ok(mut held) = self.held.try_lock() else {
            // In use on another thread (or poisoned): a connection of this call's own.
            return self.block(async { f(&self.connect().await?).await });
        };
        let held = &mut *held;
        if held.runtime.is_none() {
            held.runtime = Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| WarehouseError::Open {
                        what: self.what(),
                        message: format!("cannot start a runtime: {e}"),
                    })?,
            );
        }
        let (Some(rt), slot) = (&held.runtime, &mut held.client) else {
            return self.block(async { f(&self.connect().await?).await });
        };
        rt.block_on(async {
            let kept = slot.take().filter(|c| !c.is_closed());
            let reused = kept.is_some();
            let client = match kept {
                Some(c) => c,
                None => self.connect().await?,
            };
            let result = f(&client).await;
            if !client.is_closed() {
                *slot = Some(client);
                return result;
            }
            match result {
                // The server closed a connection kept from before: once more on a new one.
                Err(_) if reused => {
                    let client = self.connect().await?;
                    let result = f(&client).await;
                    if !client.is_closed() {
                        *slot = Some(client);
                    }
                    result
                }
                result => result,
            }
        })
    }
}
