//! wharf keeps warehouse tables continuously loaded into Mixpanel (or files, later Kafka).
//!
//! `src/` holds what knows the outside world: configuration, warehouse connectors,
//! destinations, the state store and the CLI. Dataflow construction lives in
//! `wharf-pipelines`, operators in `wharf-operators`.

pub mod config;
#[cfg(feature = "duckdb")]
pub mod demo;
pub mod destination;
pub mod duration;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod progress;
pub mod receiver;
pub mod rejects;
pub mod schedule;
pub mod secret;
pub mod service;
pub mod size;
pub mod state;
pub mod sync;
pub mod warehouse;
