//! Mixpanel destination and the Mixpanel-compatible receiver.
pub mod import;
pub mod receiver;
