//! `wharf run` across processes (`--processes P --process I --hostfile F`).
//!
//! Process 0 is the service: scheduler, API, page, state store and commits. Each of its syncs
//! runs as one long-lived dataflow across every process, as `wharf sync` does across
//! processes, made through each process's [`Hub`] (one port per process for all syncs):
//! process 0 announces each dataflow when it starts it; the other processes (this module's
//! [`follow`]) join it, read and deliver their parts of each epoch, and leave when process 0
//! drops it (a reload, a failed run). A process that is gone fails the runs of every sync
//! until it is back: the next retry announces a new dataflow, which the restarted process
//! joins. Every process must load the same config file: each compares a hash of its file
//! with process 0's and refuses a dataflow when they differ.

use std::path::Path;
use std::sync::Arc;

use wharf_pipelines::cluster::{ClusterSpec, Hub, HubJoin, Start};

use super::ServiceError;
use crate::config::Config;
use crate::sync::SyncOptions;

/// The hash every process compares to know it loaded the same config: of the file's bytes.
pub fn file_hash(path: &Path) -> String {
    std::fs::read(path)
        .map(|text| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&text)))
        .unwrap_or_default()
}

fn hub_of(spec: &ClusterSpec) -> Result<Arc<Hub>, ServiceError> {
    Hub::bind(spec.process, spec.addresses.clone(), spec.connect_within)
        .map_err(ServiceError::Cluster)
}

/// Process 0's side of a service cluster.
pub struct Leader {
    spec: ClusterSpec,
    hub: Arc<Hub>,
}

impl Leader {
    /// Listens on process 0's address for the other processes.
    pub fn bind(spec: ClusterSpec) -> Result<Leader, ServiceError> {
        let hub = hub_of(&spec)?;
        Ok(Leader { spec, hub })
    }

    /// The cluster a run of `sync` uses: a dataflow started for it is announced to the
    /// other processes with `config_hash`.
    pub(super) fn for_sync(&self, sync: &str, config_hash: &str) -> ClusterSpec {
        ClusterSpec {
            hub: Some(HubJoin {
                hub: self.hub.clone(),
                dataflow: sync.to_string(),
                config_hash: config_hash.to_string(),
            }),
            ..self.spec.clone()
        }
    }
}

/// A process other than 0 of a service cluster: joins every dataflow process 0 announces,
/// each on a thread of its own, for as long as the process runs.
pub fn follow(
    config_path: &Path,
    spec: ClusterSpec,
    runtime: Arc<tokio::runtime::Runtime>,
) -> Result<(), ServiceError> {
    let hub = hub_of(&spec)?;
    let starts = hub.follow_announcements().map_err(ServiceError::Cluster)?;
    for start in starts {
        let config = match load_same(config_path, &start) {
            Ok(config) => config,
            Err(reason) => {
                tracing::error!(process = spec.process, dataflow = %start.tag, "{reason}");
                hub.refuse(&start.tag, &reason);
                continue;
            }
        };
        let options = SyncOptions {
            workers: super::WORKERS,
            progress: false,
            cluster: Some(ClusterSpec {
                hub: Some(HubJoin {
                    hub: hub.clone(),
                    dataflow: start.tag.clone(),
                    config_hash: start.config_hash.clone(),
                }),
                ..spec.clone()
            }),
            ..SyncOptions::default()
        };
        let (hub, runtime, process) = (hub.clone(), runtime.clone(), spec.process);
        let spawned = std::thread::Builder::new()
            .name(format!("wharf-follow-{}", start.sync()))
            .spawn(move || {
                let sync = start.sync();
                tracing::info!(process, sync, dataflow = %start.tag, "joined the sync's dataflow");
                match crate::sync::follow(&config, sync, &options, &runtime) {
                    Ok(epochs) => {
                        tracing::info!(process, sync, epochs, "the sync's dataflow ended")
                    }
                    Err(e) => {
                        tracing::warn!(process, sync, "the sync's dataflow failed: {e}");
                        // Process 0 is told at once when this process never joined.
                        hub.refuse(&start.tag, &e.to_string());
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a thread for a sync: {e}");
        }
    }
    Ok(())
}

/// This process's config, when its file is the one process 0 loaded.
fn load_same(config_path: &Path, start: &Start) -> Result<Config, String> {
    if file_hash(config_path) != start.config_hash {
        return Err(format!(
            "its config file {} is not the one process 0 loaded: give every process the same \
             file (and reload process 0, SIGHUP, after changing it)",
            config_path.display()
        ));
    }
    Config::load(config_path).map_err(|e| format!("its config does not load: {e}"))
}
