//! One long-lived dataflow across processes: timely's own cluster mode. Every process runs
//! the same dataflow on its worker threads; process 0 decides each epoch (what it reads, its
//! run number) and commits it, the others follow.
//!
//! Beside the sync's dataflow each worker builds a small control dataflow: process 0
//! broadcasts each epoch's description ([`ClusterMsg::Epoch`], bytes the caller writes and
//! reads), and every other process answers once its part of the epoch is delivered and its
//! destinations flushed ([`ClusterMsg::Done`], with its counters or its failure). Process 0
//! commits an epoch only after the frontier passed it (every worker of every process holds
//! the epoch until its destinations acknowledged its records) and every other process
//! answered. Rows stay in the process that read them (see [`ClusterSpec::local_workers`]), so
//! each process's in-flight limit and counters are its own.
//!
//! A cluster cannot lose a process: timely's connections fail, the workers stop, and the
//! epoch fails in every process (nothing of it is committed). A rerun starts every process
//! again.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wharf_operators::diff::DiffCounts;
use wharf_operators::timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use wharf_operators::timely::communication::allocator::ProcessBuilder;
use wharf_operators::timely::communication::{AllocatorBuilder, Hooks};

use crate::run::RunOutcome;

pub mod hub;
pub use hub::{Hub, Start};

/// Where this process is in a cluster of processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    /// This process's number, from 0 (process 0 commits).
    pub process: usize,
    /// `host:port` of every process, in process order.
    pub addresses: Vec<String>,
    /// How long a process waits for the others to connect at the start.
    pub connect_within: Duration,
    /// In a service cluster, the process's [`Hub`] and which dataflow to join; `None`: this
    /// process listens on its address for this one dataflow.
    pub hub: Option<HubJoin>,
}

/// A dataflow of a service cluster: made through each process's [`Hub`].
#[derive(Clone)]
pub struct HubJoin {
    pub hub: Arc<Hub>,
    /// Process 0: the sync (each dataflow it starts is announced under a new tag); the
    /// others: the tag process 0 announced.
    pub dataflow: String,
    /// Process 0: what it says of its config (see [`Start::config_hash`]).
    pub config_hash: String,
}

impl std::fmt::Debug for HubJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubJoin")
            .field("dataflow", &self.dataflow)
            .finish()
    }
}

impl PartialEq for HubJoin {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.hub, &other.hub) && self.dataflow == other.dataflow
    }
}

impl Eq for HubJoin {}

/// Timely's connection handshake: each process sends its number as 8 bytes, big-endian.
fn send_number(stream: &mut TcpStream, n: usize) -> std::io::Result<()> {
    stream.write_all(&(n as u64).to_be_bytes())
}

fn read_number(stream: &mut TcpStream) -> std::io::Result<usize> {
    let mut bytes = [0u8; 8];
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.read_exact(&mut bytes)?;
    stream.set_read_timeout(None)?;
    Ok(u64::from_be_bytes(bytes) as usize)
}

impl ClusterSpec {
    /// The number of processes.
    pub fn processes(&self) -> usize {
        self.addresses.len()
    }

    /// Whether this process decides and commits the epochs.
    pub fn leads(&self) -> bool {
        self.process == 0
    }

    /// Connects this process to every other one as timely's own cluster start does (each
    /// process connects to those before it and accepts those after it), but quietly (timely's
    /// prints its progress on stdout) and within [`ClusterSpec::connect_within`]: sockets in
    /// process order, `None` for this process.
    fn connect(&self) -> Result<Vec<Option<TcpStream>>, String> {
        let me = self.process;
        let listen = &self.addresses[me];
        let listener = TcpListener::bind(listen)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|e| format!("process {me} cannot listen on {listen}: {e}"))?;
        let mut sockets: Vec<Option<TcpStream>> = self.addresses.iter().map(|_| None).collect();
        let deadline = Instant::now() + self.connect_within;
        let missing = |sockets: &[Option<TcpStream>]| {
            (0..sockets.len()).find(|i| *i != me && sockets[*i].is_none())
        };
        let mut logged = false;
        while let Some(waiting) = missing(&sockets) {
            for (i, address) in self.addresses.iter().enumerate().take(me) {
                if sockets[i].is_some() {
                    continue;
                }
                if let Ok(mut stream) = TcpStream::connect(address) {
                    let _ = stream.set_nodelay(true);
                    send_number(&mut stream, me)
                        .map_err(|e| format!("process {i} at {address}: {e}"))?;
                    sockets[i] = Some(stream);
                }
            }
            loop {
                match listener.accept() {
                    Ok((mut stream, from)) => {
                        stream
                            .set_nonblocking(false)
                            .map_err(|e| format!("a connection from {from}: {e}"))?;
                        let _ = stream.set_nodelay(true);
                        let n = read_number(&mut stream)
                            .map_err(|e| format!("a connection from {from}: {e}"))?;
                        if n <= me || n >= sockets.len() {
                            return Err(format!(
                                "a connection from {from} says it is process {n}: the \
                                 processes were not started with the same hostfile"
                            ));
                        }
                        sockets[n] = Some(stream);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("process {me} on {listen}: {e}")),
                }
            }
            if missing(&sockets).is_none() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "process {waiting} ({}) did not connect within {:?}: start every process \
                     with the same --processes and --hostfile, and let each reach the others' \
                     ports",
                    self.addresses[waiting], self.connect_within
                ));
            }
            if !logged {
                tracing::info!(process = me, waiting, "waiting for the cluster's processes");
                logged = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::info!(process = me, processes = sockets.len(), "cluster connected");
        Ok(sockets)
    }

    /// Timely's allocators for `threads` workers in this process, connected to the others
    /// (for timely's `execute_from`).
    pub(crate) fn allocators(
        &self,
        threads: usize,
    ) -> Result<(Vec<AllocatorBuilder>, Box<dyn std::any::Any + Send>), String> {
        let sockets = match &self.hub {
            None => self.connect()?,
            Some(join) if self.leads() => {
                let tag = join.hub.announce(&join.dataflow, &join.config_hash)?;
                join.hub.connect_tagged(&tag)?
            }
            Some(join) => join.hub.connect_tagged(&join.dataflow)?,
        };
        let hooks = Hooks::default();
        let threads = threads.max(1);
        let local =
            ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone());
        let (builders, guard) =
            initialize_networking_from_sockets(local, sockets, self.process, threads, hooks)
                .map_err(|e| format!("the cluster's connections: {e}"))?;
        Ok((
            builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
            Box::new(guard),
        ))
    }
}

/// A process's counts of a snapshot diff epoch, and the state files it wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffTally {
    /// Rows of the new snapshot it hashed.
    pub rows: u64,
    /// Inserted keys of its key ranges.
    pub inserts: u64,
    /// Updated keys.
    pub updates: u64,
    /// Deleted keys.
    pub deletes: u64,
    /// The new state's part files it wrote.
    pub parts: Vec<PathBuf>,
}

impl DiffTally {
    /// The tally of `counts`.
    pub fn of(counts: &DiffCounts) -> DiffTally {
        DiffTally {
            rows: counts.rows.load(Ordering::Relaxed),
            inserts: counts.inserts.load(Ordering::Relaxed),
            updates: counts.updates.load(Ordering::Relaxed),
            deletes: counts.deletes.load(Ordering::Relaxed),
            parts: counts.parts.lock().map(|p| p.clone()).unwrap_or_default(),
        }
    }

    /// Adds this tally to `counts` (process 0's, which it commits).
    pub fn add_to(&self, counts: &DiffCounts) {
        counts.rows.fetch_add(self.rows, Ordering::Relaxed);
        counts.inserts.fetch_add(self.inserts, Ordering::Relaxed);
        counts.updates.fetch_add(self.updates, Ordering::Relaxed);
        counts.deletes.fetch_add(self.deletes, Ordering::Relaxed);
        if let Ok(mut parts) = counts.parts.lock() {
            parts.extend(self.parts.iter().cloned());
        }
    }
}

/// What the control dataflow carries (every message goes to every process).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterMsg {
    /// From process 0: run `epoch` as `description` says (the caller's bytes).
    Epoch {
        /// The epoch.
        epoch: u64,
        /// What the epoch reads, for the caller of [`crate::live::LiveDataflow::next_epoch`].
        description: Vec<u8>,
    },
    /// From another process: its part of `epoch` was delivered and flushed.
    Done {
        /// The process answering.
        process: usize,
        /// The epoch.
        epoch: u64,
        /// Its counters.
        counts: RunOutcome,
        /// A snapshot diff's counts and state files.
        diff: Option<DiffTally>,
    },
    /// A process's dataflow failed: every process fails the epoch (nothing is committed).
    Failed {
        /// The process that failed.
        process: usize,
        /// Why.
        reason: String,
    },
    /// From process 0: the sync is done; the processes end the dataflow.
    End,
}

/// The `host:port` lines of a hostfile (timely's format: one line per process, in process
/// order; blank lines and `#` comments are skipped).
pub fn read_hostfile(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostfile_is_its_address_lines_in_order() {
        let text = "# cluster\n127.0.0.1:7001\n\n  10.0.0.2:7002  \n";
        assert_eq!(read_hostfile(text), vec!["127.0.0.1:7001", "10.0.0.2:7002"]);
    }

    #[test]
    fn a_process_answer_carries_its_counters_and_they_add_up() {
        let part = RunOutcome {
            rows_read: 7,
            delivered: 7,
            requests: 2,
            ..RunOutcome::default()
        };
        let done = ClusterMsg::Done {
            process: 1,
            epoch: 3,
            counts: part.clone(),
            diff: Some(DiffTally {
                rows: 3,
                parts: vec![PathBuf::from("s/run-3/part-1-of-2.snap")],
                ..DiffTally::default()
            }),
        };
        let text = serde_json::to_string(&done).unwrap_or_default();
        assert_eq!(serde_json::from_str::<ClusterMsg>(&text).ok(), Some(done));
        let mut all = RunOutcome {
            rows_read: 5,
            delivered: 4,
            rejected: 1,
            ..RunOutcome::default()
        };
        all.add(&part);
        assert_eq!((all.rows_read, all.delivered), (12, 11));
        assert_eq!((all.rejected, all.requests), (1, 2));
    }
}
