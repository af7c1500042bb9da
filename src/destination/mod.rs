//! Destinations: where a sync's records go. Each implements
//! [`wharf_pipelines::destination::Destination`].

pub mod file;
pub mod gzip;
pub mod kafka;
pub mod mixpanel;
