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

use serde::{Deserialize, Serialize};
use wharf_operators::timely;

use crate::run::RunOutcome;

/// Where this process is in a cluster of processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    /// This process's number, from 0 (process 0 commits).
    pub process: usize,
    /// `host:port` of every process, in process order.
    pub addresses: Vec<String>,
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

    /// Timely's configuration for `threads` workers in each process.
    pub fn timely(&self, threads: usize) -> timely::CommunicationConfig {
        timely::CommunicationConfig::Cluster {
            threads: threads.max(1),
            process: self.process,
            addresses: self.addresses.clone(),
            report: false,
            zerocopy: false,
        }
    }
}

/// The counters of one process's part of an epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartCounts {
    /// Rows read.
    pub rows_read: u64,
    /// Records acknowledged.
    pub delivered: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// Uncompressed bytes delivered.
    pub bytes_sent: u64,
    /// Requests sent.
    pub requests: u64,
    /// Retries.
    pub retries: u64,
}

impl PartCounts {
    /// The counters of `outcome`.
    pub fn of(outcome: &RunOutcome) -> PartCounts {
        PartCounts {
            rows_read: outcome.rows_read,
            delivered: outcome.delivered,
            rejected: outcome.rejected,
            bytes_sent: outcome.bytes_sent,
            requests: outcome.requests,
            retries: outcome.retries,
        }
    }

    /// Adds these counters to `outcome`'s.
    pub fn add_to(&self, outcome: &mut RunOutcome) {
        outcome.rows_read += self.rows_read;
        outcome.delivered += self.delivered;
        outcome.rejected += self.rejected;
        outcome.bytes_sent += self.bytes_sent;
        outcome.requests += self.requests;
        outcome.retries += self.retries;
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
        counts: PartCounts,
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
    fn counts_add_up_into_an_outcome() {
        let mut outcome = RunOutcome {
            rows_read: 5,
            delivered: 4,
            rejected: 1,
            ..RunOutcome::default()
        };
        let part = PartCounts {
            rows_read: 7,
            delivered: 7,
            requests: 2,
            ..PartCounts::default()
        };
        part.add_to(&mut outcome);
        assert_eq!((outcome.rows_read, outcome.delivered), (12, 11));
        assert_eq!((outcome.rejected, outcome.requests), (1, 2));
        assert_eq!(PartCounts::of(&outcome).rows_read, 12);
    }
}
