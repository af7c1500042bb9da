//! Mixpanel destinations (the Mixpanel-compatible receiver that tests them is `crate::receiver`,
//! independent of this code).
//!
//! - [`import`]: events to `/import`.
//! - [`engage`]: user profiles to `/engage`, group profiles to `/groups`.
//! - [`lookup`]: lookup tables, replaced whole by `PUT /lookup-tables/{id}`.
//! - [`client`]: the HTTP pieces they share (host, auth header, answer classification).
pub mod client;
pub mod engage;
pub mod import;
pub mod lookup;
