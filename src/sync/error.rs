//! Why a sync could not run or did not complete, and whether retrying can help.

use wharf_operators::columns::MappingError;
use wharf_pipelines::destination::DestinationError;

use crate::state::StateError;
use crate::warehouse::WarehouseError;

/// Why a sync could not run or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// No such sync in the config.
    #[error("no sync named `{0}` in the config; defined: {1}")]
    UnknownSync(String, String),
    /// Not implemented yet for this combination.
    #[error("sync `{sync}`: {what} is not supported yet")]
    Unsupported {
        /// The sync.
        sync: String,
        /// What.
        what: String,
    },
    /// The warehouse failed.
    #[error("sync `{0}`: {1}")]
    Warehouse(String, #[source] WarehouseError),
    /// The mapping does not fit the table.
    #[error("sync `{0}`: {1}")]
    Mapping(String, #[source] MappingError),
    /// The destination cannot be set up.
    #[error("sync `{0}`: destination `{1}`: {2}")]
    Destination(String, String, #[source] DestinationError),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The run was cancelled (e.g. at shutdown); nothing was committed, the next run resends it.
    #[error("sync `{sync}` run {run_id} cancelled, nothing committed: {reason}")]
    Cancelled {
        /// The sync.
        sync: String,
        /// The run.
        run_id: u64,
        /// Why.
        reason: String,
    },
    /// The run would send far more rows than usual and the sync is set to pause instead.
    #[error("sync `{sync}` run {run_id} not sent: {anomaly}")]
    Anomaly {
        /// The sync.
        sync: String,
        /// The run (recorded as CANCELLED).
        run_id: u64,
        /// What was found.
        anomaly: VolumeAnomaly,
    },
    /// A one-time sync that already loaded its table.
    #[error("sync `{sync}` is one_time and already loaded its table (run {run_id}, {at}); run `wharf reset {sync}` to load it again, or use mode = \"append\" for repeated loads")]
    AlreadyLoaded {
        /// The sync.
        sync: String,
        /// The run that loaded it.
        run_id: u64,
        /// When that run ended.
        at: String,
    },
    /// A snapshot state folder cannot be read.
    #[error("sync `{sync}`: the snapshot state in {path} cannot be read: {message}; `wharf reset {sync}` starts the sync over (the next run resends every row)")]
    UnreadableSnapshot {
        /// The sync.
        sync: String,
        /// The folder.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The run failed; nothing was committed, the next run resends it.
    #[error("sync `{sync}` run {run_id} failed, nothing committed: {reason}")]
    RunFailed {
        /// The sync.
        sync: String,
        /// The run.
        run_id: u64,
        /// Why.
        reason: String,
        /// Retrying cannot help (a destination refused the credentials or the request).
        permanent: bool,
    },
}

impl SyncError {
    /// Whether running the sync again as it is cannot succeed: bad credentials, a missing
    /// table or column, a mapping or config error, a destination that refused the run for
    /// good. The service stops retrying such a sync until its config is reloaded or a run is
    /// asked for; transient failures (connections, timeouts, overload) are retried.
    pub fn is_permanent(&self) -> bool {
        match self {
            SyncError::Warehouse(_, e) => !e.is_transient(),
            SyncError::Destination(_, _, e) => !e.is_transient(),
            SyncError::RunFailed { permanent, .. } => *permanent,
            SyncError::UnknownSync(..)
            | SyncError::Unsupported { .. }
            | SyncError::Mapping(..)
            | SyncError::UnreadableSnapshot { .. } => true,
            _ => false,
        }
    }
}

/// A run found anomalous by [`VolumeCheck`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VolumeAnomaly {
    /// Rows the run reads.
    pub rows: u64,
    /// The average of the recent successful runs.
    pub average: f64,
    /// The configured multiple.
    pub multiple: f64,
}

impl std::fmt::Display for VolumeAnomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "volume anomaly: {} rows, more than {} times the recent average of {:.0}",
            self.rows, self.multiple, self.average
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::SourceRef;

    #[test]
    fn failures_are_classified_permanent_or_transient() {
        let wh = |e| SyncError::Warehouse("s".into(), e);
        assert!(!wh(WarehouseError::Unavailable {
            what: "w".into(),
            message: "connection refused".into()
        })
        .is_permanent());
        assert!(wh(WarehouseError::MissingTable {
            source_ref: SourceRef::Table("t".into()),
            warehouse: "w".into()
        })
        .is_permanent());
        assert!(wh(WarehouseError::Open {
            what: "w".into(),
            message: "password authentication failed".into()
        })
        .is_permanent());
        let dest = |e| SyncError::Destination("s".into(), "mp".into(), e);
        assert!(dest(DestinationError::Permanent {
            message: "401".into()
        })
        .is_permanent());
        assert!(!dest(DestinationError::Transient {
            message: "503".into(),
            retry_after: None
        })
        .is_permanent());
        let failed = |permanent| SyncError::RunFailed {
            sync: "s".into(),
            run_id: 1,
            reason: "r".into(),
            permanent,
        };
        assert!(failed(true).is_permanent() && !failed(false).is_permanent());
    }
}
