//! Mixpanel's record shapes: rows as `/import` events ([`events`]), and changes as events,
//! `/engage` and `/groups` profile updates and lookup-table CSV lines ([`changes`]).

pub mod changes;
pub mod events;
