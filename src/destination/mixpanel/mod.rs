//! Mixpanel destinations and the Mixpanel-compatible receiver.
//!
//! - [`import`]: events to `/import`.
//! - [`engage`]: user profiles to `/engage`, group profiles to `/groups`.
//! - [`lookup`]: lookup tables, replaced whole by `PUT /lookup-tables/{id}`.
//! - [`client`]: the HTTP pieces they share (host, auth header, answer classification).
//! - [`receiver`]: a local server that enforces Mixpanel's documented rules, for tests and
//!   dry runs.
pub mod client;
pub mod engage;
pub mod import;
pub mod lookup;
pub mod receiver;
